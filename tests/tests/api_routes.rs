//! Every route of contract section 6 over real HTTP: happy paths, error paths, problem+json
//! bodies, 400/404/405/413/415, defaults, audit entries and metrics.
#![allow(clippy::unwrap_used)]

mod api_support;

use api_support::*;
use bytes::Bytes;
use serde_json::{json, Value};

#[tokio::test]
async fn healthz_answers_ok() {
    let s = Server::start().await;
    let r = s.get("/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_answers_ready_on_a_single_server() {
    let s = Server::start().await;
    let r = s.get("/readyz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ready"}));
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    let s = Server::start().await;
    // `/` is the portal (contract section 13); other unknown paths stay problem+json 404s.
    for path in [
        "/v1",
        "/v1/stats/",
        "/venue/V1/nope",
        "/assets/site.css",
        "/v1/venues//occupancy",
        "/v2/scans",
        "/nope?x=1",
    ] {
        s.get(path).await.assert_problem(404);
    }
    let r = s.send("DELETE", "/v1/scans", None, &[], Bytes::new()).await;
    r.assert_problem(405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = s.get("/v1/trace").await;
    r.assert_problem(405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = s.post("/v1/stats", &json!({})).await;
    r.assert_problem(405);
    assert_eq!(r.header("allow"), Some("GET"));
    let r = s
        .send("PUT", "/v1/venues/V1", None, &[], Bytes::new())
        .await;
    assert_eq!(r.header("allow"), Some("GET"));
}

#[tokio::test]
async fn venues_register_read_update_and_refuse_invalid_batches_whole() {
    let s = Server::start().await;
    let r = s
        .post(
            "/v1/venues",
            &json!({"id": "V1", "name": "Market 3", "future_field": [1]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"registered": 1}));
    let v = s.get("/v1/venues/V1").await;
    assert_eq!(v.status, 200);
    assert_eq!(
        v.json(),
        json!({"id": "V1", "name": "Market 3", "province": null, "default_stay_s": 7200, "present": 0})
    );

    let r = s
        .post(
            "/v1/venues",
            &json!([
                {"id": "V1", "name": "Market 3 (renamed)", "province": "Soc Trang", "default_stay_s": 1800},
                {"id": "V2", "name": "School"}
            ]),
        )
        .await;
    assert_eq!(r.json(), json!({"registered": 2}));
    let v = s.get("/v1/venues/V1").await.json();
    assert_eq!(v["name"], "Market 3 (renamed)");
    assert_eq!(v["province"], "Soc Trang");
    assert_eq!(v["default_stay_s"], 1800);

    for bad in [
        json!([{"id": "V3", "name": "ok"}, {"id": "bad/id", "name": "x"}]),
        json!([{"id": "V3", "name": "ok"}, {"id": "V4", "name": "x", "default_stay_s": 0}]),
        json!([{"id": "V3", "name": "ok"}, {"id": "V4", "name": "x", "default_stay_s": 86401}]),
        json!([{"id": "V3", "name": "ok"}, {"id": "V4", "name": "x", "default_stay_s": 1.5}]),
        json!([{"id": "V3", "name": "ok"}, {"id": "V4"}]),
        json!([{"id": "V3", "name": "ok"}, {"id": 4, "name": "x"}]),
        json!([{"id": "V3", "name": "ok"}, 7]),
        json!([{"id": "V3", "name": ""}]),
        json!("V3"),
    ] {
        s.post("/v1/venues", &bad).await.assert_problem(400);
    }
    s.get("/v1/venues/V3").await.assert_problem(404);
    let r = s
        .send(
            "POST",
            "/v1/venues",
            None,
            &[],
            Bytes::from_static(b"{not json"),
        )
        .await;
    r.assert_problem(400);
    let r = s
        .send(
            "POST",
            "/v1/venues",
            None,
            &[("content-type", "application/x-ndjson")],
            Bytes::from_static(b"{\"id\":\"V3\",\"name\":\"x\"}"),
        )
        .await;
    r.assert_problem(415);
    s.get("/v1/venues/NOPE").await.assert_problem(404);
    s.get("/v1/venues/has%20space").await.assert_problem(404);
}

#[tokio::test]
async fn scans_in_every_framing_with_per_item_reasons() {
    let s = Server::start().await;
    s.venues(&["V1", "V2"]).await;

    // One object, no Content-Type: JSON is assumed; a missing ts is the server's now.
    let r = s
        .send(
            "POST",
            "/v1/scans",
            None,
            &[],
            json!({"person": "p1", "venue": "V1"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"accepted": 1, "rejected": []}));
    // (The default window ends at now, and only visits with start < to are listed.)
    let visits = s
        .get(&format!("/v1/persons/p1/visits?to={}", T0 + 1))
        .await
        .json();
    assert_eq!(visits["visits"][0]["start"], T0);

    // An array with every reason, in order.
    let batch = json!([
        scan("p2", "V1", T0 - 60, "in"),
        {"person": "p2", "venue": "NOPE", "ts": T0},
        {"person": 42, "venue": "V1", "ts": T0},
        {"person": "p2", "venue": "bad/venue", "ts": T0},
        {"person": "p2", "venue": "V1", "ts": T0, "action": "sideways"},
        {"person": "p2", "venue": "V1", "ts": 1.5},
        {"person": "p2", "venue": "V1", "ts": "1800000000"},
        {"person": "p2", "venue": "V1", "ts": T0 - 22 * 86_400},
        {"person": "p2", "venue": "V1", "ts": T0 + 301},
        {"person": "p3", "venue": "V2", "ts": T0 + 300, "action": "out", "unknown": {"x": 1}},
    ]);
    let r = s.scans(&batch).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"accepted": 2, "rejected": [
            {"index": 1, "reason": "unknown_venue"},
            {"index": 2, "reason": "invalid_person"},
            {"index": 3, "reason": "invalid_venue"},
            {"index": 4, "reason": "invalid_action"},
            {"index": 5, "reason": "invalid_ts"},
            {"index": 6, "reason": "invalid_ts"},
            {"index": 7, "reason": "too_old"},
            {"index": 8, "reason": "in_future"},
        ]})
    );

    // NDJSON, with blank lines and CRLF.
    let nd = format!(
        "{}\r\n\n{}\n{{\"person\":\"p4\",\"venue\":\"V2\",\"ts\":99999999999999999999}}\n",
        scan("p4", "V1", T0 - 100, "in"),
        scan("p4", "V1", T0 - 50, "out")
    );
    let r = s
        .send(
            "POST",
            "/v1/scans",
            None,
            &[("content-type", "application/x-ndjson; charset=utf-8")],
            nd,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"accepted": 2, "rejected": [{"index": 2, "reason": "invalid_ts"}]})
    );
    let r = s.scans(&json!([])).await;
    assert_eq!(r.json(), json!({"accepted": 0, "rejected": []}));
    assert_eq!(s.get("/v1/stats").await.json()["scans"], 5);
}

#[tokio::test]
async fn malformed_scan_bodies_store_nothing() {
    let s = Server::start().await;
    s.venues(&["V1"]).await;
    let good = scan("p1", "V1", T0, "in");
    type Case<'a> = (Vec<(&'a str, &'a str)>, String, u16);
    let cases: Vec<Case> = vec![
        (vec![], "not json".into(), 400),
        (vec![], String::new(), 400),
        (vec![], format!("[{good}, 3]"), 400),
        (vec![], format!("[{good}, [1]]"), 400),
        (vec![], format!("[{good}"), 400),
        (vec![], format!("{good}\n{good}"), 400),
        (vec![], "42".into(), 400),
        (
            vec![("content-type", "application/x-ndjson")],
            format!("{good}\n[1]\n"),
            400,
        ),
        (
            vec![("content-type", "application/x-ndjson")],
            format!("{good}\n{{\"person\""),
            400,
        ),
        (vec![("content-type", "text/plain")], good.to_string(), 415),
        (
            vec![("content-type", "application/xml")],
            good.to_string(),
            415,
        ),
        (
            vec![("content-type", "application/x-www-form-urlencoded")],
            good.to_string(),
            415,
        ),
    ];
    for (headers, body, status) in cases {
        let r = s
            .send("POST", "/v1/scans", None, &headers, body.clone())
            .await;
        r.assert_problem(status);
    }
    assert_eq!(s.get("/v1/stats").await.json()["scans"], 0);
}

#[tokio::test]
async fn too_many_scans_is_413_and_stores_nothing() {
    let s = Server::start().await;
    s.venues(&["V1"]).await;
    let line = scan("p1", "V1", T0, "in").to_string();
    let body = vec![line.as_str(); api::MAX_SCANS + 1].join("\n");
    let r = s
        .send(
            "POST",
            "/v1/scans",
            None,
            &[("content-type", "application/x-ndjson")],
            body,
        )
        .await;
    r.assert_problem(413);
    let arr = format!("[{}]", vec![line.as_str(); api::MAX_SCANS + 1].join(","));
    s.send("POST", "/v1/scans", None, &[], arr)
        .await
        .assert_problem(413);
    assert_eq!(s.get("/v1/stats").await.json()["scans"], 0);

    // Exactly the limit is fine (distinct persons, so all are stored).
    let body: Vec<String> = (0..api::MAX_SCANS)
        .map(|i| format!("{{\"person\":\"p{i}\",\"venue\":\"V1\",\"ts\":{T0}}}"))
        .collect();
    let r = s
        .send(
            "POST",
            "/v1/scans",
            None,
            &[("content-type", "application/x-ndjson")],
            body.join("\n"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], api::MAX_SCANS);
}

#[tokio::test]
async fn occupancy_of_one_venue_and_top_venues() {
    let s = Server::start().await;
    s.venues(&["V1", "V2", "V3"]).await;
    let r = s
        .scans(&json!([
            scan("a", "V1", T0 - 600, "in"),
            scan("b", "V1", T0 - 500, "in"),
            scan("c", "V2", T0 - 400, "in"),
            scan("d", "V3", T0 - 400, "in"),
            scan("d", "V3", T0 - 100, "out"),
        ]))
        .await;
    assert_eq!(r.json()["accepted"], 5);
    let r = s.get("/v1/venues/V1/occupancy").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"venue": "V1", "present": 2, "as_of": T0}));
    assert_eq!(s.get("/v1/venues/V1").await.json()["present"], 2);
    s.get("/v1/venues/NOPE/occupancy").await.assert_problem(404);

    let top = s.get("/v1/occupancy").await;
    assert_eq!(top.status, 200);
    assert_eq!(
        top.json(),
        json!({"venues": [
            {"venue": "V1", "present": 2},
            {"venue": "V2", "present": 1},
            {"venue": "V3", "present": 0},
        ]})
    );
    assert_eq!(
        s.get("/v1/occupancy?top=1").await.json(),
        json!({"venues": [{"venue": "V1", "present": 2}]})
    );
    assert_eq!(s.get("/v1/occupancy?top=1000").await.status, 200);
    for bad in ["abc", "-1", "1001", "1.5", ""] {
        s.get(&format!("/v1/occupancy?top={bad}"))
            .await
            .assert_problem(400);
    }
}

#[tokio::test]
async fn person_visits_with_window_defaults_and_audit() {
    let s = Server::start().await;
    s.venues(&["V1", "V2"]).await;
    s.scans(&json!([
        scan("p+1", "V1", T0 - 20 * 86_400, "in"),
        scan("p+1", "V1", T0 - 20 * 86_400 + 60, "out"),
        scan("p+1", "V1", T0 - 7200, "in"),
        scan("p+1", "V2", T0 - 3600, "in"),
        scan("p+1", "V2", T0 - 1800, "out"),
    ]))
    .await;
    // Default window: the last 14 days.
    let r = s.get("/v1/persons/p+1/visits").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"person": "p+1", "visits": [
            {"venue": "V1", "start": T0 - 7200, "end": T0 - 3600},
            {"venue": "V2", "start": T0 - 3600, "end": T0 - 1800},
        ]})
    );
    // Percent-encoded ids and explicit windows.
    let all = s
        .get(&format!(
            "/v1/persons/p%2B1/visits?from={}",
            T0 - 30 * 86_400
        ))
        .await
        .json();
    assert_eq!(all["visits"].as_array().unwrap().len(), 3);
    let early = s
        .get(&format!("/v1/persons/p+1/visits?from=0&to={}", T0 - 86_400))
        .await
        .json();
    assert_eq!(early["visits"].as_array().unwrap().len(), 1);

    s.get("/v1/persons/nobody/visits").await.assert_problem(404);
    s.get("/v1/persons/p+1/visits?from=abc")
        .await
        .assert_problem(400);
    s.get(&format!("/v1/persons/p+1/visits?from={}&to={}", T0, T0 - 1))
        .await
        .assert_problem(400);

    // Every lookup, also of an unknown person, is audited before the answer.
    let audit = s.get("/v1/audit?since=0").await;
    assert_eq!(audit.status, 200);
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    let subjects: Vec<&str> = entries
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, vec!["p+1", "p+1", "p+1", "nobody"]);
    for e in &entries {
        assert_eq!(e["who"], "open");
        assert_eq!(e["action"], "/v1/persons/{id}/visits");
        assert_eq!(e["ts"], T0);
    }
}

/// p1 is the case; p2 met p1 at V1 for 2000 s (F1); p3 met p2 at V2 for 900 s (F2 via p2).
async fn trace_fixture(s: &Server) {
    s.venues(&["V1", "V2"]).await;
    let r = s
        .scans(&json!([
            scan("p1", "V1", T0 - 3600, "in"),
            scan("p2", "V1", T0 - 3000, "in"),
            scan("p2", "V1", T0 - 1000, "out"),
            scan("p2", "V2", T0 - 900, "in"),
            scan("p2", "V2", T0, "out"),
            scan("p3", "V2", T0 - 1800, "in"),
            scan("p3", "V2", T0, "out"),
        ]))
        .await;
    assert_eq!(r.json()["accepted"], 7);
}

#[tokio::test]
async fn trace_finds_f1_and_f2_and_is_audited() {
    let s = Server::start().await;
    trace_fixture(&s).await;
    let r = s
        .post("/v1/trace", &json!({"person": "p1", "extra": true}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({
            "case": "p1",
            "from": T0 - 14 * 86_400,
            "to": T0,
            "min_overlap_s": 900,
            "min_stay_s": 0,
            "linger_s": 0,
            "visits": [{"venue": "V1", "start": T0 - 3600, "end": T0}],
            "f1": [{"person": "p2", "exposure_s": 2000, "first_contact": T0 - 3000,
                    "last_contact": T0 - 1000, "venues": ["V1"]}],
            "f2": [{"person": "p3", "via": "p2", "exposure_s": 900, "first_contact": T0 - 900,
                    "last_contact": T0}],
        })
    );
    let d1 = s
        .post(
            "/v1/trace",
            &json!({"person": "p1", "depth": 1, "min_overlap_s": 0, "from": T0 - 3600, "to": T0}),
        )
        .await
        .json();
    assert_eq!(d1["f2"], json!([]));
    assert_eq!(d1["min_overlap_s"], 0);
    assert_eq!(d1["f1"][0]["person"], "p2");
    let high = s
        .post("/v1/trace", &json!({"person": "p1", "min_overlap_s": 2001}))
        .await
        .json();
    assert_eq!(high["f1"], json!([]));

    for bad in [
        json!({"person": "p1", "depth": 3}),
        json!({"person": "p1", "depth": 0}),
        json!({"person": "p1", "depth": "2"}),
        json!({"person": "p1", "from": T0, "to": T0 - 1}),
        json!({"person": "p1", "min_overlap_s": -1}),
        json!({"person": "p1", "from": 1.5}),
        json!({"person": 1}),
        json!({"depth": 1}),
        json!({"person": "bad person"}),
        json!([{"person": "p1"}]),
    ] {
        s.post("/v1/trace", &bad).await.assert_problem(400);
    }
    s.send("POST", "/v1/trace", None, &[], Bytes::from_static(b"{"))
        .await
        .assert_problem(400);
    s.send(
        "POST",
        "/v1/trace",
        None,
        &[("content-type", "text/csv")],
        Bytes::from_static(b"person\np1"),
    )
    .await
    .assert_problem(415);
    s.post("/v1/trace", &json!({"person": "nobody"}))
        .await
        .assert_problem(404);

    let entries = s.get("/v1/audit").await.json()["entries"].clone();
    let got: Vec<(String, String)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = ["p1", "p1", "p1", "nobody"]
        .iter()
        .map(|p| ("/v1/trace".to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn stats_and_audit_since() {
    let s = Server::start().await;
    trace_fixture(&s).await;
    let st = s.get("/v1/stats").await;
    assert_eq!(st.status, 200);
    let v = st.json();
    assert_eq!(v["scans"], 7);
    assert_eq!(v["venues"], 2);
    assert_eq!(v["persons"], 3);
    assert!(v["log_bytes"].as_u64().unwrap() > 0);

    s.post("/v1/trace", &json!({"person": "p1"})).await;
    s.clock.advance(100);
    s.get("/v1/persons/p2/visits").await;
    let all = s.get("/v1/audit?since=0").await.json();
    assert_eq!(all["entries"].as_array().unwrap().len(), 2);
    let later = s.get(&format!("/v1/audit?since={}", T0 + 1)).await.json();
    assert_eq!(
        later,
        json!({"entries": [{"ts": T0 + 100, "who": "open", "action": "/v1/persons/{id}/visits", "subject": "p2"}]})
    );
    s.get("/v1/audit?since=yesterday").await.assert_problem(400);
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let s = Server::start().await;
    s.venues(&["V1"]).await;
    let before = s.get("/metrics").await;
    assert_eq!(before.status, 200);
    assert!(before
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let before = before.text();
    s.scans(&json!([
        scan("p1", "V1", T0 - 60, "in"),
        scan("p1", "V1", T0 - 30, "out"),
        scan("p2", "V1", T0 - 30, "in"),
        scan("p3", "NOPE", T0, "in"),
        {"person": "p3", "venue": "V1", "ts": 0.5},
    ]))
    .await;
    s.get("/v1/venues/some-raw-id/occupancy").await;
    s.get("/no/such/route").await;
    s.post("/v1/trace", &json!({"person": "p1", "depth": 1}))
        .await;
    let after = s.get("/metrics").await.text();

    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    assert_eq!(delta("checkin_scans_accepted_total{action=\"in\"}"), 2.0);
    assert_eq!(delta("checkin_scans_accepted_total{action=\"out\"}"), 1.0);
    assert_eq!(
        delta("checkin_scans_rejected_total{reason=\"unknown_venue\"}"),
        1.0
    );
    assert_eq!(
        delta("checkin_scans_rejected_total{reason=\"invalid_ts\"}"),
        1.0
    );
    assert_eq!(
        delta("checkin_http_requests_total{method=\"POST\",route=\"/v1/scans\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "checkin_http_requests_total{method=\"GET\",route=\"/v1/venues/{id}/occupancy\",status=\"404\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "checkin_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
        ),
        1.0
    );
    assert!(!after.contains("some-raw-id") && !after.contains("/no/such/route"));
    assert_eq!(metric(&after, "checkin_scans_stored"), 3.0);
    assert_eq!(metric(&after, "checkin_venues"), 1.0);
    assert_eq!(metric(&after, "checkin_persons"), 2.0);
    assert_eq!(metric(&after, "checkin_visitors_present"), 1.0);
    assert!(metric(&after, "checkin_log_bytes") > 0.0);
    assert_eq!(
        metric(&after, "checkin_trace_duration_seconds_count{depth=\"1\"}"),
        1.0
    );
    assert!(
        metric(
            &after,
            "checkin_http_request_duration_seconds_count{route=\"/v1/scans\"}"
        ) >= 1.0
    );
    assert!(after.contains("process_resident_memory_bytes"));
    assert!(!after.contains("p1") && !after.contains("\"V1\""));
    check_exposition(&after);
}

#[tokio::test]
async fn group_commits_are_timed_in_fsync_mode() {
    let s = Server::start_with(Opts {
        fsync: true,
        ..Opts::default()
    })
    .await;
    s.venues(&["V1"]).await;
    s.scans(&json!([scan("p1", "V1", T0, "in")])).await;
    let text = s.get("/metrics").await.text();
    assert!(metric(&text, "checkin_log_sync_duration_seconds_count") >= 1.0);
}

/// Contract section 7: the metrics are "listed in `docs/`": every family the server exports is
/// in the table of docs/api.md.
#[tokio::test]
async fn every_metric_family_is_listed_in_the_docs() {
    let s = Server::start().await;
    let text = s.get("/metrics").await.text();
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("checkin_"))
        .collect();
    assert!(families.len() >= 30, "{families:?}");
    let missing: Vec<&&str> = families
        .iter()
        .filter(|name| !docs.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/api.md: {missing:?}");
}

/// Parses the text exposition: every sample line is `name{labels} value` with a declared TYPE.
fn check_exposition(text: &str) {
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let name = it.next().unwrap();
            let kind = it.next().unwrap();
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind));
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
        let name = series.split('{').next().unwrap();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| typed.contains(*b)))
            .unwrap_or(name);
        assert!(typed.contains(base), "no TYPE for {name}");
        if let Some(labels) = series.split_once('{').map(|(_, l)| l) {
            assert!(labels.ends_with('}'), "{line}");
        }
    }
}

#[tokio::test]
async fn promtool_accepts_the_exposition_when_installed() {
    let Ok(out) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        eprintln!("promtool not installed: skipped (apt-get install prometheus)");
        return;
    };
    assert!(out.status.success());
    let s = Server::start().await;
    s.venues(&["V1"]).await;
    s.scans(&json!([scan("p1", "V1", T0, "in")])).await;
    s.post("/v1/trace", &json!({"person": "p1"})).await;
    let text = s.get("/metrics").await.text();
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    use http_body_util::{BodyExt, Full};
    let s = Server::start().await;
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for _ in 0..20 {
        let req = hyper::Request::get("/healthz")
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "ok");
    }
}

/// Every PromQL expression of docs/grafana/checkin.json, with the dashboard variables resolved.
fn dashboard_exprs() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/checkin.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().replace("$instance", ".*"));
        }
    }
    out
}

#[tokio::test]
async fn the_dashboard_queries_only_exported_metrics() {
    let s = Server::start().await;
    s.venues(&["V1"]).await;
    s.scans(&json!([scan("p1", "V1", T0, "in")])).await;
    s.post("/v1/trace", &json!({"person": "p1"})).await;
    let text = s.get("/metrics").await.text();
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10);
    for expr in &exprs {
        let names: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("checkin_") || w.starts_with("process_"))
            .collect();
        assert!(!names.is_empty(), "{expr}");
        for name in names {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "the dashboard queries {name}, which /metrics does not export"
            );
        }
    }
    for family in [
        "checkin_scans_accepted_total",
        "checkin_scans_rejected_total",
        "checkin_http_request_duration_seconds_bucket",
        "checkin_visitors_present",
        "checkin_log_bytes",
        "checkin_log_sync_duration_seconds_bucket",
        "checkin_trace_duration_seconds_bucket",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(family)),
            "the dashboard has no panel on {family}"
        );
    }
}

#[test]
fn promtool_parses_the_dashboard_queries_when_installed() {
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("promtool not installed: skipped (apt-get install prometheus)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<Value> = dashboard_exprs()
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"record": format!("dashboard:q{i}"), "expr": e}))
        .collect();
    // JSON is YAML: promtool reads it as a rules file.
    let file = dir.path().join("rules.yml");
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
