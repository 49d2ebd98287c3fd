//! The certificate routes of contract section 12 over the `certs` crate: `GET /v1/keys` (the
//! server's public key as a JWK), `GET /v1/persons/{id}/certificate` (a person's record signed as
//! an `HC1:` text, or its QR code with `?format=svg`) and `POST /v1/verify` (offline-style
//! verification against the server's own keys).
//!
//! The signing key, issuer and validity are set once on the [`App`] with
//! [`App::with_certificates`]; the binary loads the key at start ([`load_signing_key`]: the
//! operator's `--signing-key` file, else `signing-key.pem` in the data directory, created 0600 on
//! first start). A certificate read is audited (subject: the person) before it is answered, like
//! every other person read. The claims are the person's record now: the health pass colour, every
//! dose, every one-person positive or negative result and every recovered case.
//!
//! Signing (~70 µs) and verifying a certificate a QR code can carry (~120 µs, nearly all of it
//! the ECDSA verification) run on the tokio worker that read the request: handing them to the
//! blocking pool cost more than they do on 2 cores (a thread woken and the worker woken back
//! for every request). The QR code's SVG, and a longer `hc1` (up to the body limit, decoded
//! before it can be refused), go to the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::body::Req;
use bytes::Bytes;
use certs::{
    Certificate, HealthClaims, InvalidReason, KeyError, KeyOrigin, PublicKey, Recovery, SigningKey,
    TestKind, TestOutcome, TestResult, Vaccination, Verdict,
};
use health::{Health, SampleKind};
use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::StatusCode;
use serde::Serialize;

use crate::app::App;
use crate::body::{body_format, read_body};
use crate::handlers::{audit_entry, audited, blocking, json, raw, Answer, Ctx};
use crate::problem::ApiError;
use crate::routes::query_param;

/// The largest `--certificate-days`.
pub const MAX_CERTIFICATE_DAYS: u32 = 3650;
/// The longest `--issuer`, in bytes.
pub const MAX_ISSUER_BYTES: usize = 64;
/// The longest text a QR code holds at error correction level Q in alphanumeric mode (version 40).
pub const QR_MAX_CHARS: usize = 2420;

/// Why certificate settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificatesError {
    #[error("--certificate-days must be in 1..={MAX_CERTIFICATE_DAYS}, got {0}")]
    Days(u32),
    #[error("the issuer must be 1-{MAX_ISSUER_BYTES} bytes of text without control characters")]
    Issuer,
    #[error("this server's certificate settings are already set")]
    AlreadySet,
}

/// Where the signing key came from (for the start-up log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The operator's `--signing-key` file.
    Flag(PathBuf),
    /// The data directory's key file, from an earlier start.
    Loaded(PathBuf),
    /// The data directory's key file, created now.
    Created(PathBuf),
}

impl KeySource {
    /// The key file.
    pub fn path(&self) -> &Path {
        match self {
            KeySource::Flag(p) | KeySource::Loaded(p) | KeySource::Created(p) => p,
        }
    }

    /// `flag`, `loaded` or `created`.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeySource::Flag(_) => "flag",
            KeySource::Loaded(_) => "loaded",
            KeySource::Created(_) => "created",
        }
    }
}

/// The signing key of `--signing-key FILE` (PKCS#8 PEM) when given, else the data directory's
/// key file, created (mode 0600) on first start. `data_dir` must exist.
pub fn load_signing_key(
    flag: Option<&Path>,
    data_dir: &Path,
) -> Result<(SigningKey, KeySource), KeyError> {
    if let Some(path) = flag {
        return Ok((
            SigningKey::from_pem_file(path)?,
            KeySource::Flag(path.to_owned()),
        ));
    }
    let path = data_dir.join(certs::KEY_FILE_NAME);
    let (key, origin) = SigningKey::load_or_create(data_dir)?;
    let source = match origin {
        KeyOrigin::Loaded => KeySource::Loaded(path),
        KeyOrigin::Created => KeySource::Created(path),
    };
    Ok((key, source))
}

/// `--issuer`: 1–[`MAX_ISSUER_BYTES`] bytes of text without control characters.
pub fn parse_issuer(issuer: &str) -> Result<String, CertificatesError> {
    if issuer.is_empty() || issuer.len() > MAX_ISSUER_BYTES || issuer.chars().any(char::is_control)
    {
        return Err(CertificatesError::Issuer);
    }
    Ok(issuer.to_owned())
}

/// The signing key, issuer and validity of this server's certificates.
pub(crate) struct Certificates {
    key: SigningKey,
    /// The keys `POST /v1/verify` accepts: the server's own.
    verifying: Arc<[PublicKey]>,
    issuer: String,
    days: u32,
    /// The answer of `GET /v1/keys`, made once.
    keys_body: Bytes,
}

#[derive(Serialize)]
struct KeysOut<'a> {
    keys: Vec<&'a certs::Jwk>,
}

impl Certificates {
    fn new(key: SigningKey, issuer: String, days: u32) -> Result<Certificates, CertificatesError> {
        if !(1..=MAX_CERTIFICATE_DAYS).contains(&days) {
            return Err(CertificatesError::Days(days));
        }
        let issuer = parse_issuer(&issuer)?;
        let jwk = key.public_key().jwk();
        // A JWK is strings only: encoding cannot fail.
        let keys_body = serde_json::to_vec(&KeysOut { keys: vec![&jwk] }).unwrap_or_default();
        Ok(Certificates {
            verifying: Arc::from([key.public_key().clone()]),
            key,
            issuer,
            days,
            keys_body: Bytes::from(keys_body),
        })
    }
}

impl App {
    /// Sets the key the server signs certificates with, their issuer (`--issuer`) and how many
    /// days they are valid (`--certificate-days`, 1..=3650). Once per app. Without it
    /// `GET /v1/persons/{id}/certificate` answers `500`, `GET /v1/keys` an empty list, and
    /// `POST /v1/verify` knows no key (`unknown_kid`).
    pub fn with_certificates(
        self,
        key: SigningKey,
        issuer: impl Into<String>,
        days: u32,
    ) -> Result<App, CertificatesError> {
        let certificates = Certificates::new(key, issuer.into(), days)?;
        self.inner
            .certificates
            .set(certificates)
            .map_err(|_| CertificatesError::AlreadySet)?;
        Ok(self)
    }

    /// The `kid` of the signing key, once set.
    pub fn signing_kid(&self) -> Option<&str> {
        self.inner.certificates.get().map(|c| c.key.kid())
    }

    /// ES256 over `message` with the server's key, and that key's `kid`, once set (the venue
    /// posters' QR payloads, `web`).
    pub(crate) fn sign_with_server_key(&self, message: &[u8]) -> Option<(&str, [u8; 64])> {
        self.inner
            .certificates
            .get()
            .map(|c| (c.key.kid(), c.key.sign(message)))
    }
}

fn not_configured() -> ApiError {
    ApiError::Internal("this server has no signing key configured".into())
}

pub(crate) fn keys(app: &App) -> Answer {
    let body = match app.inner.certificates.get() {
        Some(c) => c.keys_body.clone(),
        None => Bytes::from_static(b"{\"keys\":[]}"),
    };
    Ok(raw(StatusCode::OK, "application/json", body))
}

/// The claims of `person`'s record now.
fn claims_of(health: &Health, person: &str) -> HealthClaims {
    let pass = match health.pass(person).color {
        health::PassColor::Green => certs::PassColor::Green,
        health::PassColor::Yellow => certs::PassColor::Yellow,
        health::PassColor::Red => certs::PassColor::Red,
    };
    let vaccinations = health
        .doses(person)
        .into_iter()
        .map(|d| Vaccination {
            dose_number: u32::from(d.dose),
            product: d.vaccine,
            administered_at: d.administered_at,
        })
        .collect();
    let tests = health
        .definite_results(person)
        .into_iter()
        .map(|(kind, collected_at, positive)| TestResult {
            kind: match kind {
                SampleKind::Pcr => TestKind::Pcr,
                SampleKind::Antigen => TestKind::Antigen,
            },
            collected_at,
            outcome: if positive {
                TestOutcome::Positive
            } else {
                TestOutcome::Negative
            },
        })
        .collect();
    let mut recoveries: Vec<Recovery> = health
        .recoveries(person)
        .into_iter()
        .map(|(sampled_at, recovered_at)| Recovery {
            sampled_at,
            recovered_at,
        })
        .collect();
    recoveries.sort_by_key(|r| (r.sampled_at, r.recovered_at));
    HealthClaims {
        person: person.to_owned(),
        pass,
        vaccinations,
        tests,
        recoveries,
    }
}

/// A signed certificate, and its QR code when asked for.
struct Signed {
    hc1: String,
    issued: i64,
    expires: i64,
    svg: Option<Result<String, certs::QrError>>,
}

/// Signs `person`'s record now.
fn sign(app: &App, person: &str, svg: bool) -> Result<Signed, ApiError> {
    let c = app.inner.certificates.get().ok_or_else(not_configured)?;
    let claims = claims_of(app.health(), person);
    let cert = Certificate::new(c.issuer.clone(), app.engine().now(), c.days, claims);
    let hc1 = certs::issue(&c.key, &cert).map_err(|e| {
        tracing::error!(error = %e, "could not sign a certificate");
        ApiError::Internal(format!("could not sign the certificate: {e}"))
    })?;
    app.inner.metrics.observe_certificate_issued();
    let svg = svg.then(|| certs::qr_svg(&hc1));
    Ok(Signed {
        hc1,
        issued: cert.issued,
        expires: cert.expires,
        svg,
    })
}

#[derive(Serialize)]
struct CertificateOut<'a> {
    person: &'a str,
    hc1: &'a str,
    issued: i64,
    expires: i64,
}

pub(crate) async fn certificate(app: &App, ctx: &Ctx) -> Answer {
    let svg = match query_param(&ctx.query, "format") {
        None | Some("" | "json") => false,
        Some("svg") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "query parameter 'format' must be json or svg, got '{}'",
                other.escape_debug()
            )))
        }
    };
    let person = ctx.param.clone();
    if !engine::is_valid_person_id(&person) {
        return Err(ApiError::NotFound(format!(
            "'{}' is not a person id (1-64 bytes of [A-Za-z0-9._:+-])",
            person.escape_debug()
        )));
    }
    if app.inner.certificates.get().is_none() {
        return Err(not_configured());
    }
    let entry = audit_entry(app.engine(), ctx, &person);
    let signer = app.clone();
    let signed = audited(app.engine(), entry, !svg, move || {
        sign(&signer, &person, svg)
    })
    .await??;
    let mut resp = match signed.svg {
        None => json(
            StatusCode::OK,
            &CertificateOut {
                person: &ctx.param,
                hc1: &signed.hc1,
                issued: signed.issued,
                expires: signed.expires,
            },
        )?,
        Some(Ok(svg)) => raw(StatusCode::OK, "image/svg+xml", Bytes::from(svg)),
        Some(Err(e)) => {
            return Err(ApiError::Internal(format!(
                "this person's certificate is {} characters, more than a QR code holds at error \
                 correction level Q ({QR_MAX_CHARS}); ask without ?format=svg for its hc1 text \
                 ({e})",
                signed.hc1.len()
            )))
        }
    };
    // A personal health record: no shared cache may keep it.
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[derive(Serialize)]
#[serde(untagged)]
enum VerifyOut {
    Valid {
        valid: bool,
        kid: String,
        issuer: String,
        issued: i64,
        expires: i64,
        claims: serde_json::Value,
    },
    Invalid {
        valid: bool,
        reason: &'static str,
    },
}

pub(crate) async fn verify(app: &App, req: Req) -> Answer {
    body_format(req.headers(), false)?;
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, app.body_timeouts()).await?;
    // Decoded by hand: a derived struct would also take `["HC1:…"]`, which is no `{"hc1"}`.
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    let hc1 = match value {
        serde_json::Value::Object(mut fields) => match fields.remove("hc1") {
            Some(serde_json::Value::String(hc1)) => hc1,
            Some(_) => return Err(ApiError::BadRequest("'hc1' must be a string".into())),
            None => return Err(ApiError::BadRequest("the body has no 'hc1'".into())),
        },
        _ => {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object {\"hc1\": \"HC1:…\"}".into(),
            ))
        }
    };
    let keys: Arc<[PublicKey]> = match app.inner.certificates.get() {
        Some(c) => Arc::clone(&c.verifying),
        None => Arc::from([]),
    };
    let now = app.engine().now();
    let verdict = if hc1.len() <= QR_MAX_CHARS {
        certs::verify(&hc1, &keys, now)
    } else {
        blocking(move || certs::verify(&hc1, &keys, now)).await?
    };
    app.inner.metrics.observe_verification(verdict.reason());
    let out = match verdict {
        Verdict::Valid(v) => VerifyOut::Valid {
            valid: true,
            kid: v.kid,
            issuer: v.issuer,
            issued: v.issued,
            expires: v.expires,
            claims: v.claims,
        },
        Verdict::Invalid(reason) => VerifyOut::Invalid {
            valid: false,
            reason: InvalidReason::reason_code(reason),
        },
    };
    json(StatusCode::OK, &out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let key = || SigningKey::generate().unwrap();
        assert!(Certificates::new(key(), "VN".into(), 1).is_ok());
        assert!(Certificates::new(key(), "VN".into(), MAX_CERTIFICATE_DAYS).is_ok());
        assert_eq!(
            Certificates::new(key(), "VN".into(), 0).err(),
            Some(CertificatesError::Days(0))
        );
        assert_eq!(
            Certificates::new(key(), "VN".into(), 3651).err(),
            Some(CertificatesError::Days(3651))
        );
        for bad in ["", "V\nN", &"x".repeat(65)] {
            assert_eq!(
                Certificates::new(key(), bad.into(), 365).err(),
                Some(CertificatesError::Issuer)
            );
        }
    }

    #[test]
    fn the_keys_answer_is_the_jwk() {
        let key = SigningKey::generate().unwrap();
        let jwk = key.public_key().jwk();
        let c = Certificates::new(key, "VN".into(), 365).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&c.keys_body).unwrap();
        assert_eq!(v, serde_json::json!({"keys": [jwk]}));
    }

    #[test]
    fn the_qr_limit_is_level_q_version_40() {
        let fits = format!("HC1:{}", "A".repeat(QR_MAX_CHARS - 4));
        assert!(certs::qr_svg(&fits).is_ok());
        let too_long = format!("HC1:{}", "A".repeat(QR_MAX_CHARS - 3));
        assert!(certs::qr_svg(&too_long).is_err());
    }

    #[test]
    fn a_key_is_created_once_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (a, source) = load_signing_key(None, dir.path()).unwrap();
        assert_eq!(
            source,
            KeySource::Created(dir.path().join("signing-key.pem"))
        );
        let (b, source) = load_signing_key(None, dir.path()).unwrap();
        assert_eq!(source.as_str(), "loaded");
        assert_eq!(a.kid(), b.kid());
        let (c, source) = load_signing_key(Some(source.path()), dir.path()).unwrap();
        assert_eq!(source.as_str(), "flag");
        assert_eq!(c.kid(), a.kid());
        assert!(load_signing_key(Some(&dir.path().join("missing.pem")), dir.path()).is_err());
    }
}
