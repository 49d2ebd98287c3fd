//! Who may call what (contract section 8): the tokens file, bearer-token authentication and the
//! role checks of each route.
//!
//! The tokens file holds SHA-256 digests only. A presented token is hashed once and compared with
//! every listed digest in constant time (no early exit, no hash-map probe keyed by the secret), so
//! response timing says nothing about how close a guess was. Without a tokens file the server is
//! in open mode: every request acts as the principal `open` with every right; `main` refuses to
//! listen outside loopback in that mode.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::problem::ApiError;

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Posts scans (scanner gateways).
    Scanner,
    /// Reads venues, occupancy, visits; runs traces.
    Epidemiologist,
    /// Reads `/metrics` and `/v1/stats`.
    Metrics,
    /// Reads its own venues (the `venues` list of its token).
    Venue,
    /// v2: takes samples at a sampling site.
    Sampler,
    /// v2: enters test results.
    Lab,
    /// v2: records vaccine doses.
    Vaccinator,
    /// v2: the citizen app's backend, which has already authenticated the person it asks about.
    App,
}

impl Role {
    /// Every role, for tests and docs.
    pub const ALL: [Role; 9] = [
        Role::Admin,
        Role::Scanner,
        Role::Epidemiologist,
        Role::Metrics,
        Role::Venue,
        Role::Sampler,
        Role::Lab,
        Role::Vaccinator,
        Role::App,
    ];

    /// The tokens-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Scanner => "scanner",
            Role::Epidemiologist => "epidemiologist",
            Role::Metrics => "metrics",
            Role::Venue => "venue",
            Role::Sampler => "sampler",
            Role::Lab => "lab",
            Role::Vaccinator => "vaccinator",
            Role::App => "app",
        }
    }
}

/// Who is calling: a token of the tokens file, or the open-mode principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (shown in the audit log); `open` in open mode.
    pub name: Arc<str>,
    /// `None` in open mode, where every route is allowed.
    pub role: Option<Role>,
    /// Venues a `venue` token owns.
    pub venues: HashSet<String>,
}

impl Principal {
    /// The principal of open mode.
    pub fn open() -> Principal {
        Principal {
            name: Arc::from("open"),
            role: None,
            venues: HashSet::new(),
        }
    }
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// No token needed (`/healthz`).
    Anyone,
    /// Tokens of these roles.
    Roles(&'static [Role]),
    /// Tokens of these roles, and `venue` tokens that own the venue in the path.
    VenueOwnerOr(&'static [Role]),
}

impl Who {
    /// Checks `principal` against this rule; `venue` is the route's venue id, if any.
    pub fn check(self, principal: &Principal, venue: Option<&str>) -> Result<(), ApiError> {
        let Some(role) = principal.role else {
            return Ok(());
        };
        let allowed = match self {
            Who::Anyone => true,
            Who::Roles(roles) => roles.contains(&role),
            Who::VenueOwnerOr(roles) => {
                roles.contains(&role)
                    || (role == Role::Venue && venue.is_some_and(|v| principal.venues.contains(v)))
            }
        };
        if allowed {
            Ok(())
        } else if role == Role::Venue && matches!(self, Who::VenueOwnerOr(_)) {
            Err(ApiError::Forbidden(format!(
                "token '{}' does not own this venue",
                principal.name
            )))
        } else {
            Err(ApiError::Forbidden(format!(
                "token '{}' has role '{}', which may not use this route",
                principal.name,
                role.as_str()
            )))
        }
    }
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Access {
    /// No tokens file: everyone is `open` and may do everything (loopback only).
    Open,
    /// Bearer tokens from a tokens file.
    Tokens(TokenSet),
}

impl Access {
    /// Authenticates a request from its `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Arc<Principal>, ApiError> {
        match self {
            Access::Open => Ok(Arc::new(Principal::open())),
            Access::Tokens(set) => {
                let header = authorization.ok_or_else(|| {
                    ApiError::Unauthorized("this route needs an Authorization: Bearer token".into())
                })?;
                let token = bearer_token(header).ok_or_else(|| {
                    ApiError::Unauthorized(
                        "the Authorization header must be 'Bearer <token>'".into(),
                    )
                })?;
                set.lookup(token)
                    .ok_or_else(|| ApiError::Unauthorized("unknown bearer token".into()))
            }
        }
    }

    /// True in open mode.
    pub fn is_open(&self) -> bool {
        matches!(self, Access::Open)
    }
}

fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let header = header.trim_ascii();
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The tokens of a tokens file, by digest.
#[derive(Debug, Clone)]
pub struct TokenSet {
    tokens: Vec<([u8; 32], Arc<Principal>)>,
}

/// Why a tokens file was refused. The server does not start with it.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tokens file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    sha256: String,
    #[serde(default)]
    venues: Option<Vec<String>>,
}

impl TokenSet {
    /// Reads and checks a tokens file.
    pub fn load(path: &Path) -> Result<TokenSet, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_owned(),
            source,
        })?;
        TokenSet::parse(&text).map_err(|message| TokensError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses tokens-file text. Refuses unknown keys, bad digests, duplicate names or digests,
    /// `venue` tokens without venues and `venues` on other roles: a mistake in this file must stop
    /// the server, not silently grant or deny access.
    pub fn parse(text: &str) -> Result<TokenSet, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.tokens.is_empty() {
            return Err("no [[tokens]] entries: nobody could use the server".into());
        }
        let mut names = HashSet::new();
        let mut digests = HashSet::new();
        let mut tokens = Vec::with_capacity(file.tokens.len());
        for (i, t) in file.tokens.into_iter().enumerate() {
            let at = format!("token {} ('{}')", i + 1, t.name);
            if t.name.is_empty() || t.name.len() > 128 {
                return Err(format!("{at}: name must be 1-128 bytes"));
            }
            if !names.insert(t.name.clone()) {
                return Err(format!("{at}: duplicate name"));
            }
            let digest = parse_digest(&t.sha256).ok_or_else(|| {
                format!("{at}: sha256 must be 64 hex digits (the SHA-256 of the token)")
            })?;
            if !digests.insert(digest) {
                return Err(format!("{at}: duplicate sha256 (two names for one token)"));
            }
            let venues: HashSet<String> = match (t.role, t.venues) {
                (Role::Venue, Some(v)) if !v.is_empty() => {
                    if let Some(bad) = v.iter().find(|v| !engine::is_valid_venue_id(v)) {
                        return Err(format!("{at}: '{bad}' is not a valid venue id"));
                    }
                    v.into_iter().collect()
                }
                (Role::Venue, _) => {
                    return Err(format!("{at}: role 'venue' needs a non-empty venues list"))
                }
                (_, Some(_)) => {
                    return Err(format!("{at}: only role 'venue' may have a venues list"))
                }
                (_, None) => HashSet::new(),
            };
            tokens.push((
                digest,
                Arc::new(Principal {
                    name: Arc::from(t.name),
                    role: Some(t.role),
                    venues,
                }),
            ));
        }
        Ok(TokenSet { tokens })
    }

    /// The principal of a presented token, comparing its digest with every entry in constant time.
    pub fn lookup(&self, token: &[u8]) -> Option<Arc<Principal>> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        for (d, p) in &self.tokens {
            if ct_eq(d, &digest) {
                found = Some(p);
            }
        }
        found.cloned()
    }

    /// How many tokens the file lists.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Never true for a loaded file (an empty one is refused).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Hex SHA-256 of a token, as the tokens file wants it.
pub fn token_digest_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Equality whose running time does not depend on where the inputs differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file() -> String {
        format!(
            r#"
[[tokens]]
name = "soc-trang-cdc"          # shown in the audit log
role = "epidemiologist"
sha256 = "{}"

[[tokens]]
name = "market-3-owner"
role = "venue"
venues = ["ST-MARKET-3"]
sha256 = "{}"
"#,
            token_digest_hex("epi-secret"),
            token_digest_hex("owner-secret").to_uppercase()
        )
    }

    #[test]
    fn the_contract_example_parses_and_authenticates() {
        let set = TokenSet::parse(&file()).unwrap();
        assert_eq!(set.len(), 2);
        let access = Access::Tokens(set);
        let p = access.authenticate(Some(b"Bearer epi-secret")).unwrap();
        assert_eq!(&*p.name, "soc-trang-cdc");
        assert_eq!(p.role, Some(Role::Epidemiologist));
        let p = access
            .authenticate(Some(b"bearer   owner-secret "))
            .unwrap();
        assert_eq!(p.role, Some(Role::Venue));
        assert!(p.venues.contains("ST-MARKET-3"));
        for bad in [
            None,
            Some(&b"Bearer nope"[..]),
            Some(b"Basic epi-secret"),
            Some(b"Bearer"),
            Some(b"Bearerepi-secret"),
            Some(b""),
        ] {
            assert!(matches!(
                access.authenticate(bad),
                Err(ApiError::Unauthorized(_))
            ));
        }
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let d = token_digest_hex("x");
        let cases = [
            ("not toml at all [".to_string(), ""),
            (String::new(), "no [[tokens]]"),
            (
                format!("[[tokens]]\nname='a'\nrole='root'\nsha256='{d}'"),
                "unknown variant",
            ),
            (
                "[[tokens]]\nname='a'\nrole='admin'\nsha256='abc'".into(),
                "64 hex",
            ),
            (
                format!("[[tokens]]\nname='a'\nrole='venue'\nsha256='{d}'"),
                "venues list",
            ),
            (
                format!("[[tokens]]\nname='a'\nrole='admin'\nvenues=['V']\nsha256='{d}'"),
                "only role 'venue'",
            ),
            (
                format!("[[tokens]]\nname='a'\nrole='admin'\nsha256='{d}'\nsha265='x'"),
                "unknown field",
            ),
            (
                format!(
                    "[[tokens]]\nname='a'\nrole='admin'\nsha256='{d}'\n[[tokens]]\nname='b'\nrole='metrics'\nsha256='{d}'"
                ),
                "duplicate sha256",
            ),
            (
                format!(
                    "[[tokens]]\nname='a'\nrole='admin'\nsha256='{d}'\n[[tokens]]\nname='a'\nrole='metrics'\nsha256='{}'",
                    token_digest_hex("y")
                ),
                "duplicate name",
            ),
        ];
        for (text, want) in cases {
            let err = TokenSet::parse(&text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn roles_and_venue_ownership() {
        let set = TokenSet::parse(&file()).unwrap();
        let owner = set.lookup(b"owner-secret").unwrap();
        let epi = set.lookup(b"epi-secret").unwrap();
        let venue_rule = Who::VenueOwnerOr(&[Role::Epidemiologist, Role::Admin]);
        assert!(venue_rule.check(&owner, Some("ST-MARKET-3")).is_ok());
        assert!(matches!(
            venue_rule.check(&owner, Some("OTHER")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(venue_rule.check(&epi, Some("OTHER")).is_ok());
        let admin_only = Who::Roles(&[Role::Admin]);
        assert!(matches!(
            admin_only.check(&epi, None),
            Err(ApiError::Forbidden(_))
        ));
        assert!(admin_only.check(&Principal::open(), None).is_ok());
        assert!(Who::Anyone.check(&owner, None).is_ok());
    }

    #[test]
    fn constant_time_compare_is_equality() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(ct_eq(&a, &b));
        b[31] ^= 1;
        assert!(!ct_eq(&a, &b));
    }
}
