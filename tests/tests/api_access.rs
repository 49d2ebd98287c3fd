//! Contract section 8: every role against every route (200, 401 or 403), venue ownership, the
//! audit `who`, tokens-file errors and the open-mode loopback rule.
#![allow(clippy::unwrap_used)]

mod api_support;

use api_support::*;
use bytes::Bytes;
use serde_json::json;

/// The callers of the matrix, in column order.
const CALLERS: [Option<&str>; 11] = [
    None,
    Some("not-a-known-token"),
    Some(ADMIN),
    Some(SCANNER),
    Some(EPI),
    Some(METRICS),
    Some(OWNER),
    Some(SAMPLER),
    Some(LAB),
    Some(VACCINATOR),
    Some(APP),
];

struct Case {
    method: &'static str,
    path: &'static str,
    /// The route pattern it exercises (to check the matrix covers the table).
    pattern: &'static str,
    body: Option<serde_json::Value>,
    /// Expected status for each caller of [`CALLERS`].
    want: [u16; 11],
}

fn matrix() -> Vec<Case> {
    let venue_v1 = [401, 401, 200, 403, 200, 403, 200, 403, 403, 403, 403];
    let venue_v2 = [401, 401, 200, 403, 200, 403, 403, 403, 403, 403, 403];
    let epi_admin = [401, 401, 200, 403, 200, 403, 403, 403, 403, 403, 403];
    vec![
        Case {
            method: "GET",
            path: "/healthz",
            pattern: "/healthz",
            body: None,
            want: [200; 11],
        },
        Case {
            method: "GET",
            path: "/readyz",
            pattern: "/readyz",
            body: None,
            want: [200; 11],
        },
        Case {
            method: "GET",
            path: "/metrics",
            pattern: "/metrics",
            body: None,
            want: [401, 401, 200, 403, 403, 200, 403, 403, 403, 403, 403],
        },
        Case {
            method: "POST",
            path: "/v1/venues",
            pattern: "/v1/venues",
            body: Some(json!({"id": "V3", "name": "Clinic"})),
            want: [401, 401, 200, 403, 403, 403, 403, 403, 403, 403, 403],
        },
        Case {
            method: "GET",
            path: "/v1/venues/V1",
            pattern: "/v1/venues/{id}",
            body: None,
            want: venue_v1,
        },
        Case {
            method: "GET",
            path: "/v1/venues/V2",
            pattern: "/v1/venues/{id}",
            body: None,
            want: venue_v2,
        },
        Case {
            method: "GET",
            path: "/v1/venues/V1/occupancy",
            pattern: "/v1/venues/{id}/occupancy",
            body: None,
            want: venue_v1,
        },
        Case {
            method: "GET",
            path: "/v1/venues/V2/occupancy",
            pattern: "/v1/venues/{id}/occupancy",
            body: None,
            want: venue_v2,
        },
        Case {
            method: "GET",
            path: "/v1/venues/V1/events",
            pattern: "/v1/venues/{id}/events",
            body: None,
            want: venue_v1,
        },
        Case {
            method: "GET",
            path: "/v1/venues/V2/events",
            pattern: "/v1/venues/{id}/events",
            body: None,
            want: venue_v2,
        },
        Case {
            method: "GET",
            path: "/v1/occupancy?top=5",
            pattern: "/v1/occupancy",
            body: None,
            want: [401, 401, 200, 403, 200, 403, 403, 403, 403, 403, 403],
        },
        Case {
            method: "POST",
            path: "/v1/scans",
            pattern: "/v1/scans",
            body: Some(json!([scan("p9", "V1", T0, "in")])),
            want: [401, 401, 200, 200, 403, 403, 403, 403, 403, 403, 403],
        },
        Case {
            method: "GET",
            path: "/v1/persons/p1/visits",
            pattern: "/v1/persons/{id}/visits",
            body: None,
            want: [401, 401, 200, 403, 200, 403, 403, 403, 403, 403, 403],
        },
        // The admin records the dose; the vaccinator's identical retry is accepted too.
        Case {
            method: "POST",
            path: "/v1/vaccinations",
            pattern: "/v1/vaccinations",
            body: Some(
                json!({"person": "p1", "dose": 1, "vaccine": "EU/1/20/1528", "administered_at": T0 - 60}),
            ),
            want: [401, 401, 200, 403, 403, 403, 403, 403, 403, 200, 403],
        },
        Case {
            method: "GET",
            path: "/v1/persons/p1/vaccinations",
            pattern: "/v1/persons/{id}/vaccinations",
            body: None,
            want: [401, 401, 200, 403, 200, 403, 403, 403, 403, 403, 200],
        },
        Case {
            method: "POST",
            path: "/v1/trace",
            pattern: "/v1/trace",
            body: Some(json!({"person": "p1"})),
            want: [401, 401, 200, 403, 200, 403, 403, 403, 403, 403, 403],
        },
        Case {
            method: "GET",
            path: "/v1/stats",
            pattern: "/v1/stats",
            body: None,
            want: [401, 401, 200, 403, 403, 200, 403, 403, 403, 403, 403],
        },
        Case {
            method: "GET",
            path: "/v1/audit?since=0",
            pattern: "/v1/audit",
            body: None,
            want: [401, 401, 200, 403, 403, 403, 403, 403, 403, 403, 403],
        },
        Case {
            method: "GET",
            path: "/v1/keys",
            pattern: "/v1/keys",
            body: None,
            want: [200; 11],
        },
        Case {
            method: "GET",
            path: "/v1/persons/p1/certificate",
            pattern: "/v1/persons/{id}/certificate",
            body: None,
            want: [401, 401, 200, 403, 403, 403, 403, 403, 403, 403, 200],
        },
        Case {
            method: "POST",
            path: "/v1/verify",
            pattern: "/v1/verify",
            body: Some(json!({"hc1": "HC1:not a certificate"})),
            want: [200; 11],
        },
        // The admin registers the case; the epidemiologist's identical retry is 200.
        Case {
            method: "POST",
            path: "/v1/cases",
            pattern: "/v1/cases",
            body: Some(json!({"id": "K1", "person": "p1", "sampled_at": T0 - 60})),
            want: [401, 401, 201, 403, 200, 403, 403, 403, 403, 403, 403],
        },
        Case {
            method: "GET",
            path: "/v1/cases",
            pattern: "/v1/cases",
            body: None,
            want: epi_admin,
        },
        Case {
            method: "GET",
            path: "/v1/cases/K1",
            pattern: "/v1/cases/{id}",
            body: None,
            want: epi_admin,
        },
        Case {
            method: "GET",
            path: "/v1/cases/K1/contacts",
            pattern: "/v1/cases/{id}/contacts",
            body: None,
            want: epi_admin,
        },
        Case {
            method: "GET",
            path: "/v1/persons/p1/status",
            pattern: "/v1/persons/{id}/status",
            body: None,
            want: [401, 401, 200, 403, 200, 403, 403, 403, 403, 403, 200],
        },
        Case {
            method: "GET",
            path: "/v1/tiers/events",
            pattern: "/v1/tiers/events",
            body: None,
            want: epi_admin,
        },
        Case {
            method: "GET",
            path: "/v1/exposure-sites",
            pattern: "/v1/exposure-sites",
            body: None,
            want: [200; 11],
        },
        // The admin registers the sample; the sampler's identical retry is 200.
        Case {
            method: "POST",
            path: "/v1/samples",
            pattern: "/v1/samples",
            body: Some(json!({"id": "S1", "kind": "pcr", "persons": ["p1"]})),
            want: [401, 401, 201, 403, 403, 403, 403, 200, 403, 403, 403],
        },
        Case {
            method: "GET",
            path: "/v1/samples/S1",
            pattern: "/v1/samples/{id}",
            body: None,
            want: [401, 401, 200, 403, 200, 403, 403, 200, 200, 403, 403],
        },
        Case {
            method: "POST",
            path: "/v1/samples/S1/result",
            pattern: "/v1/samples/{id}/result",
            body: Some(json!({"result": "negative"})),
            want: [401, 401, 200, 403, 403, 403, 403, 403, 200, 403, 403],
        },
        Case {
            method: "GET",
            path: "/v1/persons/p1/results",
            pattern: "/v1/persons/{id}/results",
            body: None,
            want: [401, 401, 200, 403, 200, 403, 403, 403, 403, 403, 200],
        },
        Case {
            method: "POST",
            path: "/v1/declarations",
            pattern: "/v1/declarations",
            body: Some(json!({"person": "p1", "symptoms": [], "exposure": false})),
            want: [401, 401, 201, 403, 403, 403, 403, 403, 403, 403, 201],
        },
        Case {
            method: "GET",
            path: "/v1/followups",
            pattern: "/v1/followups",
            body: None,
            want: epi_admin,
        },
        // Gates: scanners, any venue token and the app read a pass.
        Case {
            method: "GET",
            path: "/v1/persons/p1/pass",
            pattern: "/v1/persons/{id}/pass",
            body: None,
            want: [401, 401, 200, 200, 403, 403, 200, 403, 403, 403, 200],
        },
        Case {
            method: "POST",
            path: "/v1/areas",
            pattern: "/v1/areas",
            body: Some(json!({"id": "A1", "name": "Area 1", "population": 1000})),
            want: [401, 401, 200, 403, 403, 403, 403, 403, 403, 403, 403],
        },
        Case {
            method: "GET",
            path: "/v1/areas",
            pattern: "/v1/areas",
            body: None,
            want: [200; 11],
        },
        Case {
            method: "GET",
            path: "/v1/summary",
            pattern: "/v1/summary",
            body: None,
            want: [200; 11],
        },
        Case {
            method: "POST",
            path: "/v1/notices",
            pattern: "/v1/notices",
            body: Some(json!({"kind": "news", "title": "Tin", "body": "Nội dung"})),
            want: [401, 401, 201, 403, 403, 403, 403, 403, 403, 403, 403],
        },
        Case {
            method: "GET",
            path: "/v1/notices",
            pattern: "/v1/notices",
            body: None,
            want: [200; 11],
        },
        // Recovering twice: the second is a retry of the same change (200).
        Case {
            method: "PATCH",
            path: "/v1/cases/K1",
            pattern: "/v1/cases/{id}",
            body: Some(json!({"status": "recovered"})),
            want: epi_admin,
        },
    ]
}

#[tokio::test]
async fn every_role_against_every_route() {
    let s = Server::start_with_tokens().await;
    s.venues(&["V1", "V2"]).await;
    s.scans(&json!([scan("p1", "V1", T0 - 60, "in")])).await;

    let cases = matrix();
    for route in api::ROUTES {
        assert!(
            cases
                .iter()
                .any(|c| c.method == route.method && c.pattern == route.pattern),
            "the matrix misses {} {}",
            route.method,
            route.pattern
        );
    }
    for case in &cases {
        for (caller, want) in CALLERS.iter().zip(case.want) {
            let status = if case.path.ends_with("/events") {
                Stream::open_as(s.addr, case.path, *caller, &[])
                    .await
                    .status
            } else {
                let body = case.body.as_ref().map_or(String::new(), |b| b.to_string());
                let r = s.send(case.method, case.path, *caller, &[], body).await;
                if r.status >= 400 {
                    r.assert_problem(r.status);
                }
                if r.status == 401 {
                    assert!(r.header("www-authenticate").is_some());
                }
                r.status
            };
            assert_eq!(
                status, want,
                "{} {} as {:?}",
                case.method, case.path, caller
            );
        }
    }
}

/// The poster's QR code (`/venue/{id}/poster.svg`, contract section 13) is the venue owner's and
/// the admins': another owner's venue, registered or not, is `403`, as on the API's venue routes.
#[tokio::test]
async fn the_poster_qr_code_is_for_its_owner_and_admins_only() {
    let s = Server::start_with_tokens().await;
    s.venues(&["V1", "V2"]).await;
    let cases: [(&str, [u16; 11]); 3] = [
        (
            "V1",
            [401, 401, 200, 403, 403, 403, 200, 403, 403, 403, 403],
        ),
        (
            "V2",
            [401, 401, 200, 403, 403, 403, 403, 403, 403, 403, 403],
        ),
        // not registered: only an admin learns that
        (
            "V9",
            [401, 401, 404, 403, 403, 403, 403, 403, 403, 403, 403],
        ),
    ];
    for (venue, want) in cases {
        let path = format!("/venue/{venue}/poster.svg");
        for (caller, want) in CALLERS.iter().zip(want) {
            let r = s.send("GET", &path, *caller, &[], String::new()).await;
            assert_eq!(r.status, want, "{path} as {caller:?}");
            if want == 200 {
                assert_eq!(r.header("content-type"), Some("image/svg+xml"));
            } else {
                r.assert_problem(want);
            }
        }
    }
}

/// With tokens, the venue page and the poster page are shells whose scripts ask the API with
/// the caller's token: the page itself answers alike for a registered venue and an unknown one,
/// so that it does not tell anyone which venue ids exist (the API tells the roles that may know).
#[tokio::test]
async fn with_tokens_the_venue_pages_do_not_tell_whether_a_venue_exists() {
    let s = Server::start_with_tokens().await;
    s.venues(&["V1"]).await;
    for page in ["", "/poster"] {
        let known = s.get(&format!("/venue/V1{page}")).await;
        let unknown = s.get(&format!("/venue/V9{page}")).await;
        assert_eq!(known.status, 200, "/venue/V1{page}");
        assert_eq!(unknown.status, 200, "/venue/V9{page}");
        // the same page but for the id itself
        assert_eq!(
            known.text().replace("V1", "V9"),
            unknown.text(),
            "/venue/V1{page} and /venue/V9{page}"
        );
    }
}

#[tokio::test]
async fn malformed_authorization_headers_are_401() {
    let s = Server::start_with_tokens().await;
    for value in [
        "Basic YWRtaW46YWRtaW4=",
        "Bearer",
        "Bearer ",
        "admin-token",
        "Token admin-token",
    ] {
        let r = s
            .send(
                "GET",
                "/v1/stats",
                None,
                &[("authorization", value)],
                Bytes::new(),
            )
            .await;
        r.assert_problem(401);
    }
    let r = s
        .send(
            "GET",
            "/v1/stats",
            None,
            &[("authorization", "bearer admin-token")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn audit_names_the_token() {
    let s = Server::start_with_tokens().await;
    s.venues(&["V1"]).await;
    s.scans(&json!([scan("p1", "V1", T0 - 60, "in")])).await;
    assert_eq!(s.get_as("/v1/persons/p1/visits", EPI).await.status, 200);
    assert_eq!(
        s.post_as("/v1/trace", ADMIN, &json!({"person": "p1", "depth": 1}))
            .await
            .status,
        200
    );
    // Refused lookups are not audited: nobody was looked up.
    assert_eq!(s.get_as("/v1/persons/p1/visits", SCANNER).await.status, 403);
    let entries = s.get_as("/v1/audit", ADMIN).await.json()["entries"].clone();
    assert_eq!(
        entries,
        json!([
            {"ts": T0, "who": "cdc", "action": "/v1/persons/{id}/visits", "subject": "p1"},
            {"ts": T0, "who": "root", "action": "/v1/trace", "subject": "p1"},
        ])
    );
}

#[tokio::test]
async fn a_bad_tokens_file_stops_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.toml");
    std::fs::write(
        &path,
        "[[tokens]]\nname = \"x\"\nrole = \"superuser\"\nsha256 = \"00\"\n",
    )
    .unwrap();
    let err = api::TokenSet::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("tokens.toml") && err.contains("superuser"),
        "{err}"
    );
    let err = api::TokenSet::load(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read tokens file"), "{err}");
    std::fs::write(&path, tokens_toml()).unwrap();
    assert_eq!(api::TokenSet::load(&path).unwrap().len(), 9);
}

#[tokio::test]
async fn open_mode_refuses_addresses_outside_loopback() {
    use api::cli::{resolve_listen, ListenError};
    assert!(resolve_listen("127.0.0.1:8080", true).is_ok());
    assert!(resolve_listen("localhost:8080", true).is_ok());
    assert!(matches!(
        resolve_listen("0.0.0.0:8080", true),
        Err(ListenError::OpenModeNotLoopback(_))
    ));
    assert!(matches!(
        resolve_listen("[::]:8080", true),
        Err(ListenError::OpenModeNotLoopback(_))
    ));
    assert!(resolve_listen("0.0.0.0:8080", false).is_ok());
}
