//! The route table: every method, path pattern and access rule the server answers, in one `pub`
//! list ([`ROUTES`]) that the dispatcher, the metrics labels and the OpenAPI test all read.
//!
//! Matching is by path segments; `{id}` matches one non-empty, percent-decoded segment. A path
//! that matches no pattern is 404 (metrics label `route="unmatched"`), a path that matches with
//! another method is 405 with `Allow`.

use crate::access::{Role, Who};

/// Which handler serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteId {
    Healthz,
    Readyz,
    Metrics,
    RegisterVenues,
    Venue,
    VenueOccupancy,
    VenueEvents,
    TopOccupancy,
    Scans,
    RecordVaccinations,
    PersonVisits,
    PersonVaccinations,
    Trace,
    Stats,
    Audit,
    Keys,
    PersonCertificate,
    Verify,
    RegisterCase,
    ListCases,
    Case,
    PatchCase,
    CaseContacts,
    PersonStatus,
    TierEvents,
    ExposureSites,
    RegisterSample,
    Sample,
    SampleResult,
    PersonResults,
    Declarations,
    Followups,
    PersonPass,
    RegisterAreas,
    Areas,
    Summary,
    PublishNotice,
    Notices,
}

/// How a route is served in cluster mode (docs/cluster.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterPath {
    /// By the node itself: scans and venues published to the stream, visits, occupancy and
    /// traces asked of the shards, stateless routes answered here.
    Node,
    /// A read of the health domain (or of the live venue feed), answered from this node's
    /// replica of it, which follows the whole stream; `503` until the replica has caught up.
    HealthRead,
    /// A change to the health domain: published to the stream as a command, applied by every
    /// node's replica in stream order, answered with this node's outcome.
    HealthWrite,
}

impl RouteId {
    /// How the route is served in cluster mode.
    pub fn cluster_path(self) -> ClusterPath {
        use RouteId::*;
        match self {
            Healthz | Metrics | RegisterVenues | Venue | VenueOccupancy | TopOccupancy | Scans
            | PersonVisits | Trace | Stats | Keys | Verify => ClusterPath::Node,
            RecordVaccinations | RegisterCase | PatchCase | RegisterSample | SampleResult
            | Declarations | RegisterAreas | PublishNotice => ClusterPath::HealthWrite,
            // Ready means every route answers here: in cluster mode, once the replica of the
            // health domain has caught up, exactly as the health domain's reads. The audit log
            // holds the changes the replica derives from the stream's commands.
            Readyz | Audit | VenueEvents | PersonVaccinations | PersonCertificate | ListCases
            | Case | CaseContacts | PersonStatus | TierEvents | ExposureSites | Sample
            | PersonResults | Followups | PersonPass | Areas | Summary | Notices => {
                ClusterPath::HealthRead
            }
        }
    }
}

/// One routed method and path pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// `GET`, `POST` or `PATCH`.
    pub method: &'static str,
    /// The path pattern, as in the contract and OpenAPI (`/v1/venues/{id}`). Also the `route`
    /// label of the HTTP metrics and the `action` of audit entries.
    pub pattern: &'static str,
    /// Who may call it.
    pub who: Who,
    /// The handler.
    pub id: RouteId,
}

const ADMIN: &[Role] = &[Role::Admin];
const EPI_ADMIN: &[Role] = &[Role::Epidemiologist, Role::Admin];
const SCANNER_ADMIN: &[Role] = &[Role::Scanner, Role::Admin];
const METRICS_ADMIN: &[Role] = &[Role::Metrics, Role::Admin];
const CERTIFICATE_READERS: &[Role] = &[Role::App, Role::Admin];
const EPI_ADMIN_APP: &[Role] = &[Role::Epidemiologist, Role::Admin, Role::App];
const SAMPLER_ADMIN: &[Role] = &[Role::Sampler, Role::Admin];
const LAB_ADMIN: &[Role] = &[Role::Lab, Role::Admin];
const SAMPLE_READERS: &[Role] = &[Role::Sampler, Role::Lab, Role::Epidemiologist, Role::Admin];
const APP_ADMIN: &[Role] = &[Role::App, Role::Admin];
const PASS_READERS: &[Role] = &[Role::Scanner, Role::Venue, Role::App, Role::Admin];

/// Every route the server answers (contract section 6).
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        method: "GET",
        pattern: "/healthz",
        who: Who::Anyone,
        id: RouteId::Healthz,
    },
    RouteSpec {
        method: "GET",
        pattern: "/readyz",
        who: Who::Anyone,
        id: RouteId::Readyz,
    },
    RouteSpec {
        method: "GET",
        pattern: "/metrics",
        who: Who::Roles(METRICS_ADMIN),
        id: RouteId::Metrics,
    },
    RouteSpec {
        method: "POST",
        pattern: "/v1/venues",
        who: Who::Roles(ADMIN),
        id: RouteId::RegisterVenues,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/venues/{id}",
        who: Who::VenueOwnerOr(EPI_ADMIN),
        id: RouteId::Venue,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/venues/{id}/occupancy",
        who: Who::VenueOwnerOr(EPI_ADMIN),
        id: RouteId::VenueOccupancy,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/venues/{id}/events",
        who: Who::VenueOwnerOr(EPI_ADMIN),
        id: RouteId::VenueEvents,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/occupancy",
        who: Who::Roles(EPI_ADMIN),
        id: RouteId::TopOccupancy,
    },
    RouteSpec {
        method: "POST",
        pattern: "/v1/scans",
        who: Who::Roles(SCANNER_ADMIN),
        id: RouteId::Scans,
    },
    RouteSpec {
        method: "POST",
        pattern: "/v1/vaccinations",
        who: Who::Roles(&[Role::Vaccinator, Role::Admin]),
        id: RouteId::RecordVaccinations,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/persons/{id}/visits",
        who: Who::Roles(EPI_ADMIN),
        id: RouteId::PersonVisits,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/persons/{id}/vaccinations",
        who: Who::Roles(EPI_ADMIN_APP),
        id: RouteId::PersonVaccinations,
    },
    RouteSpec {
        method: "POST",
        pattern: "/v1/trace",
        who: Who::Roles(EPI_ADMIN),
        id: RouteId::Trace,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/stats",
        who: Who::Roles(METRICS_ADMIN),
        id: RouteId::Stats,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/audit",
        who: Who::Roles(ADMIN),
        id: RouteId::Audit,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/keys",
        who: Who::Anyone,
        id: RouteId::Keys,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/persons/{id}/certificate",
        who: Who::Roles(CERTIFICATE_READERS),
        id: RouteId::PersonCertificate,
    },
    RouteSpec {
        method: "POST",
        pattern: "/v1/verify",
        who: Who::Anyone,
        id: RouteId::Verify,
    },
    RouteSpec {
        method: "POST",
        pattern: "/v1/cases",
        who: Who::Roles(EPI_ADMIN),
        id: RouteId::RegisterCase,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/cases",
        who: Who::Roles(EPI_ADMIN),
        id: RouteId::ListCases,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/cases/{id}",
        who: Who::Roles(EPI_ADMIN),
        id: RouteId::Case,
    },
    RouteSpec {
        method: "PATCH",
        pattern: "/v1/cases/{id}",
        who: Who::Roles(EPI_ADMIN),
        id: RouteId::PatchCase,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/cases/{id}/contacts",
        who: Who::Roles(EPI_ADMIN),
        id: RouteId::CaseContacts,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/persons/{id}/status",
        who: Who::Roles(EPI_ADMIN_APP),
        id: RouteId::PersonStatus,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/tiers/events",
        who: Who::Roles(EPI_ADMIN),
        id: RouteId::TierEvents,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/exposure-sites",
        who: Who::Anyone,
        id: RouteId::ExposureSites,
    },
    RouteSpec {
        method: "POST",
        pattern: "/v1/samples",
        who: Who::Roles(SAMPLER_ADMIN),
        id: RouteId::RegisterSample,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/samples/{id}",
        who: Who::Roles(SAMPLE_READERS),
        id: RouteId::Sample,
    },
    RouteSpec {
        method: "POST",
        pattern: "/v1/samples/{id}/result",
        who: Who::Roles(LAB_ADMIN),
        id: RouteId::SampleResult,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/persons/{id}/results",
        who: Who::Roles(EPI_ADMIN_APP),
        id: RouteId::PersonResults,
    },
    RouteSpec {
        method: "POST",
        pattern: "/v1/declarations",
        who: Who::Roles(APP_ADMIN),
        id: RouteId::Declarations,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/followups",
        who: Who::Roles(EPI_ADMIN),
        id: RouteId::Followups,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/persons/{id}/pass",
        who: Who::Roles(PASS_READERS),
        id: RouteId::PersonPass,
    },
    RouteSpec {
        method: "POST",
        pattern: "/v1/areas",
        who: Who::Roles(ADMIN),
        id: RouteId::RegisterAreas,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/areas",
        who: Who::Anyone,
        id: RouteId::Areas,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/summary",
        who: Who::Anyone,
        id: RouteId::Summary,
    },
    RouteSpec {
        method: "POST",
        pattern: "/v1/notices",
        who: Who::Roles(ADMIN),
        id: RouteId::PublishNotice,
    },
    RouteSpec {
        method: "GET",
        pattern: "/v1/notices",
        who: Who::Anyone,
        id: RouteId::Notices,
    },
];

/// The metrics label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// What the table says about a request path and method.
#[derive(Debug, PartialEq, Eq)]
pub enum Match {
    /// A route, and its `{id}` segment if it has one.
    Found(&'static RouteSpec, Option<String>),
    /// The path exists with other methods: the pattern (for metrics) and the `Allow` value.
    WrongMethod(&'static str, String),
    /// No route has this path.
    NotFound,
}

/// Looks a request up in [`ROUTES`].
pub fn find(method: &str, path: &str) -> Match {
    let mut allow: Vec<&str> = Vec::new();
    let mut pattern = None;
    for spec in ROUTES {
        let Some(param) = match_pattern(spec.pattern, path) else {
            continue;
        };
        if spec.method == method {
            return Match::Found(spec, param);
        }
        pattern.get_or_insert(spec.pattern);
        if !allow.contains(&spec.method) {
            allow.push(spec.method);
        }
    }
    match pattern {
        Some(p) => Match::WrongMethod(p, allow.join(", ")),
        None => Match::NotFound,
    }
}

/// `Some(param)` if `path` matches `pattern` (`param` is the decoded `{id}` segment, if any).
///
/// Compared byte by byte, so a request is turned away by most patterns at their first differing
/// byte (every request is tried against the patterns before its own, in table order), and the
/// `{id}` segment, a non-empty run of bytes up to the next `/`, is decoded only once the whole
/// pattern matched.
fn match_pattern(pattern: &str, path: &str) -> Option<Option<String>> {
    let (pat, p) = (pattern.as_bytes(), path.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut raw = None;
    while let Some(&c) = pat.get(i) {
        if c == b'{' {
            let close = i + pat.get(i..)?.iter().position(|&b| b == b'}')?;
            let end = p
                .get(j..)?
                .iter()
                .position(|&b| b == b'/')
                .map_or(p.len(), |k| j + k);
            if end == j {
                return None;
            }
            raw = Some(path.get(j..end)?);
            i = close + 1;
            j = end;
        } else {
            if p.get(j) != Some(&c) {
                return None;
            }
            i += 1;
            j += 1;
        }
    }
    if j != p.len() {
        return None;
    }
    match raw {
        Some(s) => Some(Some(percent_decode(s, false)?)),
        None => Some(None),
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`, for query strings). Malformed
/// escapes are kept literally; `None` if the result is not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    if !s.bytes().any(|b| b == b'%' || (plus_is_space && b == b'+')) {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The decoded `name=value` pairs of a query string (later duplicates win when looked up with
/// [`query_param`]).
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// The last value of a query parameter.
pub fn query_param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_change_of_the_health_domain_goes_through_the_stream() {
        // Cluster mode: a route that changes state either has its own path to the stream
        // (scans, venues) or computes without storing (trace, verify); every other change is a
        // health command, applied by every node's replica. A read is never a command.
        for r in ROUTES {
            let path = r.id.cluster_path();
            let own_path = matches!(
                r.id,
                RouteId::Scans | RouteId::RegisterVenues | RouteId::Trace | RouteId::Verify
            );
            if r.method == "GET" {
                assert_ne!(path, ClusterPath::HealthWrite, "{} {}", r.method, r.pattern);
            } else if own_path {
                assert_eq!(path, ClusterPath::Node, "{} {}", r.method, r.pattern);
            } else {
                assert_eq!(path, ClusterPath::HealthWrite, "{} {}", r.method, r.pattern);
            }
        }
    }

    #[test]
    fn routes_match_by_segment() {
        let Match::Found(spec, param) = find("GET", "/v1/venues/ST%3AM-3/occupancy") else {
            panic!("no match");
        };
        assert_eq!(spec.id, RouteId::VenueOccupancy);
        assert_eq!(param.as_deref(), Some("ST:M-3"));
        assert!(
            matches!(find("GET", "/v1/stats"), Match::Found(s, None) if s.id == RouteId::Stats)
        );
        assert_eq!(find("GET", "/v1/stats/"), Match::NotFound);
        let Match::Found(spec, param) = find("GET", "/v1/persons/p%2B1/pass") else {
            panic!("no match");
        };
        assert_eq!(spec.id, RouteId::PersonPass);
        assert_eq!(param.as_deref(), Some("p+1"));
        // An id that decodes to no UTF-8 matches no route, whatever follows it.
        assert_eq!(find("GET", "/v1/persons/%ff/pass"), Match::NotFound);
        assert_eq!(find("GET", "/v1/persons/p1/pass/"), Match::NotFound);
        assert_eq!(find("GET", "/v1/persons/p1/passes"), Match::NotFound);
        assert_eq!(find("GET", "/v1/persons//pass"), Match::NotFound);
        assert_eq!(find("GET", "/v1/persons/p1"), Match::NotFound);
        assert_eq!(find("GET", "/v1/stat"), Match::NotFound);
        assert_eq!(find("GET", ""), Match::NotFound);
        assert!(matches!(
            find("GET", "/v1/venues/V%C3%A9"),
            Match::Found(s, Some(ref id)) if s.id == RouteId::Venue && id == "V\u{e9}"
        ));
        // Every pattern matches itself with a plain id, and only its own route.
        for spec in ROUTES {
            let path = spec.pattern.replace("{id}", "x-1");
            match find(spec.method, &path) {
                Match::Found(found, param) => {
                    assert_eq!(found.pattern, spec.pattern);
                    assert_eq!(param.is_some(), spec.pattern.contains("{id}"));
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        assert_eq!(find("GET", "/v1/venues//occupancy"), Match::NotFound);
        assert_eq!(find("GET", "/nope"), Match::NotFound);
        assert_eq!(
            find("DELETE", "/v1/venues"),
            Match::WrongMethod("/v1/venues", "POST".into())
        );
        assert_eq!(
            find("POST", "/v1/venues/x"),
            Match::WrongMethod("/v1/venues/{id}", "GET".into())
        );
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(a.method != b.method || a.pattern != b.pattern);
            }
        }
    }

    #[test]
    fn queries_decode() {
        let q = parse_query(Some("top=5&x&from=1%2B2&to=a+b&top=7"));
        assert_eq!(query_param(&q, "top"), Some("7"));
        assert_eq!(query_param(&q, "from"), Some("1+2"));
        assert_eq!(query_param(&q, "to"), Some("a b"));
        assert_eq!(query_param(&q, "x"), Some(""));
        assert_eq!(query_param(&q, "y"), None);
        assert_eq!(percent_decode("100%", false).as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz", false).as_deref(), Some("%zz"));
        assert_eq!(percent_decode("%ff", false), None);
    }
}
