//! Contract section 10 over HTTP: cases (registration, retries, 409s, transitions), their
//! standing traces (contacts in the shape of `POST /v1/trace`, kept current by late scans),
//! person status, tier events (lapses included), public exposure sites, audit and metrics.
#![allow(clippy::unwrap_used)]

mod api_support;

use std::time::{Duration, Instant};

use api_support::*;
use checkin_tests::http::Response;
use serde_json::{json, Value};

const DAY: i64 = 86_400;

/// A server with venues `V1` (stay 7200) and `V2`, and three people who met at `V1`:
/// `case` 1 h from T0-3h, `f1` overlapping 45 min, and `f2` who met `f1` at `V2` afterwards.
async fn outbreak_server(tokens: bool) -> Server {
    let s = if tokens {
        Server::start_with_tokens().await
    } else {
        Server::start().await
    };
    s.venues(&["V1", "V2"]).await;
    let r = s
        .scans(&json!([
            scan("case", "V1", T0 - 3 * 3600, "in"),
            scan("case", "V1", T0 - 2 * 3600, "out"),
            scan("f1", "V1", T0 - 3 * 3600 + 900, "in"),
            scan("f1", "V1", T0 - 2 * 3600 + 600, "out"),
            scan("f1", "V2", T0 - 3600, "in"),
            scan("f1", "V2", T0 - 1800, "out"),
            scan("f2", "V2", T0 - 3600, "in"),
            scan("f2", "V2", T0 - 1800, "out"),
        ]))
        .await;
    assert_eq!(r.json()["accepted"], 8, "{}", r.text());
    s
}

async fn register(s: &Server, body: Value) -> Response {
    s.post_as("/v1/cases", EPI, &body).await
}

async fn patch(s: &Server, id: &str, body: Value) -> Response {
    s.send(
        "PATCH",
        &format!("/v1/cases/{id}"),
        Some(EPI),
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

/// Polls a person's status until `pred` holds (the contract's freshness bound is 5 s).
async fn status_until(s: &Server, person: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = s.get_as(&format!("/v1/persons/{person}/status"), EPI).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        if pred(&v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn registering_a_case_answers_the_case_and_its_contacts() {
    let s = outbreak_server(false).await;
    let r = register(
        &s,
        json!({"person": "case", "sampled_at": T0 - 600, "note": "from the district hospital"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let c = r.json();
    assert_eq!(
        c,
        json!({
            "id": "case-1", "person": "case", "status": "active", "source": "manual",
            "sampled_at": T0 - 600, "onset": null, "isolated_at": T0,
            "registered_at": T0, "recovered_at": null, "area": null,
            "note": "from the district hospital",
            "from": T0 - 600 - 2 * DAY, "to": T0, "f1": 1, "f2": 1
        })
    );
    // The standing trace is the section-5 trace over the case window with the policy's rules.
    let contacts = s.get_as("/v1/cases/case-1/contacts", EPI).await;
    assert_eq!(contacts.status, 200);
    let trace = s
        .post_as(
            "/v1/trace",
            EPI,
            &json!({"person": "case", "from": T0 - 600 - 2 * DAY, "to": T0, "depth": 2}),
        )
        .await;
    assert_eq!(contacts.json(), trace.json());
    let t = contacts.json();
    assert_eq!(t["f1"][0]["person"], "f1");
    assert_eq!(t["f1"][0]["exposure_s"], 2700);
    assert_eq!(t["f1"][0]["last_contact"], T0 - 2 * 3600);
    assert_eq!(t["f2"][0]["person"], "f2");
    assert_eq!(t["f2"][0]["via"], "f1");
    // GET answers the same case.
    let got = s.get_as("/v1/cases/case-1", EPI).await;
    assert_eq!(got.json(), c);
}

#[tokio::test]
async fn retries_and_conflicts() {
    let s = outbreak_server(false).await;
    let body = json!({"id": "K-1", "person": "case", "sampled_at": T0 - 600, "onset": T0 - 9000});
    let first = register(&s, body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text());
    // Same id, same fields: 200 with the same case (even a minute later).
    s.clock.advance(60);
    let again = register(&s, body.clone()).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), first.json());
    // Same id, other fields: 409.
    let other = register(
        &s,
        json!({"id": "K-1", "person": "case", "sampled_at": T0 - 601, "onset": T0 - 9000}),
    )
    .await;
    other.assert_problem(409);
    // The isolation time defaulted to the registration time: a retry naming that same time is
    // the same case, one naming another time is not.
    let named = register(
        &s,
        json!({"id": "K-1", "person": "case", "sampled_at": T0 - 600, "onset": T0 - 9000, "isolated_at": T0}),
    )
    .await;
    assert_eq!(named.status, 200);
    let moved = register(
        &s,
        json!({"id": "K-1", "person": "case", "sampled_at": T0 - 600, "onset": T0 - 9000, "isolated_at": T0 - 1}),
    )
    .await;
    moved.assert_problem(409);
    // Another case for a person with an active case: 409 naming the active case.
    let second = register(&s, json!({"person": "case", "sampled_at": T0 - 60})).await;
    let p = second.assert_problem(409);
    assert!(p["detail"].as_str().unwrap().contains("K-1"), "{p}");
    // Once recovered, the person may get a new case.
    assert_eq!(
        patch(&s, "K-1", json!({"status": "recovered"}))
            .await
            .status,
        200
    );
    let third = register(&s, json!({"person": "case", "sampled_at": T0 - 60})).await;
    assert_eq!(third.status, 201, "{}", third.text());
    assert_eq!(third.json()["id"], "case-1");
}

#[tokio::test]
async fn bad_registrations_are_400_and_store_nothing() {
    let s = outbreak_server(false).await;
    for body in [
        json!({"sampled_at": T0}),
        json!({"person": "case"}),
        json!({"person": 42, "sampled_at": T0}),
        json!({"person": "has space", "sampled_at": T0}),
        json!({"person": "case", "sampled_at": "yesterday"}),
        json!({"person": "case", "sampled_at": T0 as f64 + 0.5}),
        json!({"person": "case", "sampled_at": T0 - 22 * DAY}),
        json!({"person": "case", "sampled_at": T0 + 301}),
        json!({"person": "case", "sampled_at": T0, "onset": T0 + 301}),
        json!({"person": "case", "sampled_at": T0, "isolated_at": T0 - 30 * DAY}),
        json!({"person": "case", "sampled_at": T0, "id": "bad/id"}),
        json!({"person": "case", "sampled_at": T0, "id": "x".repeat(81)}),
        json!({"person": "case", "sampled_at": T0, "area": "no area!"}),
        json!({"person": "case", "sampled_at": T0, "note": "n".repeat(2001)}),
        json!([{"person": "case", "sampled_at": T0}]),
    ] {
        let r = register(&s, body.clone()).await;
        let p = r.assert_problem(400);
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{body}");
    }
    let r = s
        .send(
            "POST",
            "/v1/cases",
            Some(EPI),
            &[("content-type", "application/x-www-form-urlencoded")],
            "person=case",
        )
        .await;
    r.assert_problem(415);
    let r = s
        .send("POST", "/v1/cases", Some(EPI), &[], "{not json")
        .await;
    r.assert_problem(400);
    // Unknown fields are ignored.
    let r = register(&s, json!({"person": "case", "sampled_at": T0, "ward": 7})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let list = s.get_as("/v1/cases", EPI).await.json();
    assert_eq!(list["cases"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn listing_filters_by_status_and_since() {
    let s = outbreak_server(false).await;
    assert_eq!(
        register(&s, json!({"id": "B", "person": "case", "sampled_at": T0}))
            .await
            .status,
        201
    );
    s.clock.advance(100);
    assert_eq!(
        register(&s, json!({"id": "A", "person": "f1", "sampled_at": T0}))
            .await
            .status,
        201
    );
    assert_eq!(
        register(&s, json!({"id": "C", "person": "f2", "sampled_at": T0}))
            .await
            .status,
        201
    );
    assert_eq!(
        patch(&s, "C", json!({"status": "discarded"})).await.status,
        200
    );
    let ids = |v: Value| -> Vec<String> {
        v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    // Ascending by registered_at, then id.
    assert_eq!(
        ids(s.get_as("/v1/cases", EPI).await.json()),
        ["B", "A", "C"]
    );
    assert_eq!(
        ids(s.get_as("/v1/cases?status=active", EPI).await.json()),
        ["B", "A"]
    );
    assert_eq!(
        ids(s.get_as("/v1/cases?status=discarded", EPI).await.json()),
        ["C"]
    );
    assert!(ids(s.get_as("/v1/cases?status=recovered", EPI).await.json()).is_empty());
    let since = format!("/v1/cases?since={}", T0 + 100);
    assert_eq!(ids(s.get_as(&since, EPI).await.json()), ["A", "C"]);
    s.get_as("/v1/cases?status=cured", EPI)
        .await
        .assert_problem(400);
    s.get_as("/v1/cases?since=soon", EPI)
        .await
        .assert_problem(400);
    s.get_as("/v1/cases/nope", EPI).await.assert_problem(404);
    s.get_as("/v1/cases/nope/contacts", EPI)
        .await
        .assert_problem(404);
}

#[tokio::test]
async fn transitions_follow_the_contract() {
    let s = outbreak_server(false).await;
    assert_eq!(
        register(
            &s,
            json!({"id": "K", "person": "case", "sampled_at": T0 - 600})
        )
        .await
        .status,
        201
    );
    // Bad input.
    patch(&s, "K", json!({"status": "cured"}))
        .await
        .assert_problem(400);
    patch(&s, "K", json!({"at": T0})).await.assert_problem(400);
    patch(&s, "K", json!({"status": "recovered", "at": T0 - 601}))
        .await
        .assert_problem(400);
    patch(&s, "nope", json!({"status": "recovered"}))
        .await
        .assert_problem(404);
    // active -> active is not a change the contract allows.
    patch(&s, "K", json!({"status": "active"}))
        .await
        .assert_problem(409);
    // active -> recovered at a given time; the same again is a retry.
    s.clock.advance(3600);
    let r = patch(&s, "K", json!({"status": "recovered", "at": T0 + 60})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "recovered");
    assert_eq!(r.json()["recovered_at"], T0 + 60);
    let again = patch(&s, "K", json!({"status": "recovered"})).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), r.json());
    patch(&s, "K", json!({"status": "recovered", "at": T0 + 61}))
        .await
        .assert_problem(409);
    patch(&s, "K", json!({"status": "active"}))
        .await
        .assert_problem(409);
    // A recovered case still counts for its contacts.
    let f1 = status_until(&s, "f1", |_| true).await;
    assert_eq!(f1["tier"], "F1");
    assert_eq!(
        s.get_as("/v1/persons/case/status", EPI).await.json()["tier"],
        "none"
    );
    // recovered -> discarded: the contacts stop counting at once.
    let d = patch(&s, "K", json!({"status": "discarded"})).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.json()["status"], "discarded");
    assert_eq!(
        (d.json()["f1"].clone(), d.json()["f2"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(
        s.get_as("/v1/persons/f1/status", EPI).await.json()["tier"],
        "none"
    );
    let contacts = s.get_as("/v1/cases/K/contacts", EPI).await.json();
    assert_eq!(contacts["f1"], json!([]));
    assert_eq!(
        patch(&s, "K", json!({"status": "discarded"})).await.status,
        200
    );
    patch(&s, "K", json!({"status": "recovered"}))
        .await
        .assert_problem(409);
    // Default `at` is now.
    assert_eq!(
        register(&s, json!({"id": "L", "person": "f2", "sampled_at": T0}))
            .await
            .status,
        201
    );
    let r = patch(&s, "L", json!({"status": "recovered"})).await;
    assert_eq!(r.json()["recovered_at"], T0 + 3600);
}

#[tokio::test]
async fn tiers_follow_the_rules_and_lapse() {
    let s = outbreak_server(false).await;
    let none = s.get_as("/v1/persons/nobody/status", EPI).await;
    assert_eq!(
        none.json(),
        json!({"person": "nobody", "tier": "none", "since": null, "until": null, "cases": []})
    );
    assert_eq!(
        register(
            &s,
            json!({"id": "K", "person": "case", "sampled_at": T0 - 600, "onset": T0 - 4 * 3600})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        s.get_as("/v1/persons/case/status", EPI).await.json(),
        json!({"person": "case", "tier": "F0", "since": T0 - 4 * 3600, "until": null, "cases": ["K"]})
    );
    let f1 = s.get_as("/v1/persons/f1/status", EPI).await.json();
    assert_eq!(
        f1,
        json!({"person": "f1", "tier": "F1", "since": T0 - 3 * 3600 + 900,
               "until": T0 - 2 * 3600 + 14 * DAY, "cases": ["K"]})
    );
    let f2 = s.get_as("/v1/persons/f2/status", EPI).await.json();
    assert_eq!(
        f2,
        json!({"person": "f2", "tier": "F2", "since": T0 - 3600,
               "until": T0 - 1800 + 7 * DAY, "cases": ["K"]})
    );
    // F2 lapses at its `until`.
    s.clock.set(T0 - 1800 + 7 * DAY);
    assert_eq!(
        s.get_as("/v1/persons/f2/status", EPI).await.json()["tier"],
        "none"
    );
    assert_eq!(
        s.get_as("/v1/persons/f1/status", EPI).await.json()["tier"],
        "F1"
    );
    s.clock.set(T0 - 2 * 3600 + 14 * DAY);
    assert_eq!(
        s.get_as("/v1/persons/f1/status", EPI).await.json()["tier"],
        "none"
    );
    // The case person stays F0 while the case is active.
    assert_eq!(
        s.get_as("/v1/persons/case/status", EPI).await.json()["tier"],
        "F0"
    );
}

#[tokio::test]
async fn a_late_upload_changes_tiers_within_the_freshness_bound() {
    let s = outbreak_server(false).await;
    assert_eq!(
        register(
            &s,
            json!({"id": "K", "person": "case", "sampled_at": T0 - 600})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        s.get_as("/v1/persons/late/status", EPI).await.json()["tier"],
        "none"
    );
    // An offline phone uploads the day's scans: it was at V1 with the case.
    let r = s
        .scans(&json!([
            scan("late", "V1", T0 - 3 * 3600, "in"),
            scan("late", "V1", T0 - 2 * 3600, "out"),
            scan("late2", "V2", T0 - 7000, "in"),
            scan("late", "V2", T0 - 7000, "in"),
        ]))
        .await;
    assert_eq!(r.json()["accepted"], 4);
    let v = status_until(&s, "late", |v| v["tier"] == "F1").await;
    assert_eq!(v["tier"], "F1", "{v}");
    assert_eq!(v["until"], T0 - 2 * 3600 + 14 * DAY);
    let v = status_until(&s, "late2", |v| v["tier"] == "F2").await;
    assert_eq!(v["tier"], "F2", "{v}");
    // The case's own late scan moves it from V1 to V2 a minute after it arrived (its V1
    // check-out is then ignored): f1 no longer shared V1 with it, but `late` and `late2` now
    // share V2 with it, and f1 met `late` at V1: f1 becomes F2 via `late`.
    let r = s
        .scans(&json!([scan("case", "V2", T0 - 3 * 3600 + 60, "in")]))
        .await;
    assert_eq!(r.json()["accepted"], 1);
    let v = status_until(&s, "f1", |v| v["tier"] == "F2").await;
    assert_eq!(v["tier"], "F2", "{v}");
    let v = status_until(&s, "late2", |v| v["tier"] == "F1").await;
    assert_eq!(v["tier"], "F1", "{v}");
    let case = s.get_as("/v1/cases/K", EPI).await.json();
    let contacts = s.get_as("/v1/cases/K/contacts", EPI).await.json();
    assert_eq!(case["f1"], contacts["f1"].as_array().unwrap().len());
    let trace = s
        .post_as(
            "/v1/trace",
            EPI,
            &json!({"person": "case", "from": case["from"], "to": case["to"]}),
        )
        .await;
    assert_eq!(contacts, trace.json());
}

#[tokio::test]
async fn tier_events_include_changes_and_lapses() {
    let s = outbreak_server(false).await;
    let mut feed = Stream::open(s.addr, "/v1/tiers/events", &[]).await;
    assert_eq!(feed.status, 200);
    assert_eq!(
        feed.headers.get("content-type").unwrap(),
        "text/event-stream"
    );
    assert!(feed.wait_for(": connected", Duration::from_secs(5)).await);
    assert_eq!(
        register(
            &s,
            json!({"id": "K", "person": "case", "sampled_at": T0 - 600})
        )
        .await
        .status,
        201
    );
    assert!(
        feed.wait_for("\"person\":\"f2\"", Duration::from_secs(5))
            .await,
        "{}",
        feed.buf
    );
    let events = feed.events();
    let tiers: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["person"].as_str().unwrap().into(),
                e["tier"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(tiers.contains(&("case".into(), "F0".into())), "{tiers:?}");
    assert!(tiers.contains(&("f1".into(), "F1".into())), "{tiers:?}");
    assert!(tiers.contains(&("f2".into(), "F2".into())), "{tiers:?}");
    let f1 = events.iter().find(|e| e["person"] == "f1").unwrap();
    assert_eq!(f1["until"], T0 - 2 * 3600 + 14 * DAY);
    assert_eq!(f1["cases"], json!(["K"]));
    assert!(feed.buf.contains("id: "));
    // A lapse is told (the contract allows 60 s; the server checks every second).
    s.clock.set(T0 - 1800 + 7 * DAY);
    assert!(
        feed.wait_for(
            "{\"person\":\"f2\",\"tier\":\"none\"",
            Duration::from_secs(10)
        )
        .await,
        "{}",
        feed.buf
    );
    // A discard is told at once.
    assert_eq!(
        patch(&s, "K", json!({"status": "discarded"})).await.status,
        200
    );
    assert!(
        feed.wait_for(
            "{\"person\":\"f1\",\"tier\":\"none\"",
            Duration::from_secs(5)
        )
        .await,
        "{}",
        feed.buf
    );
    assert!(
        feed.wait_for(
            "{\"person\":\"case\",\"tier\":\"none\"",
            Duration::from_secs(5)
        )
        .await,
        "{}",
        feed.buf
    );
}

#[tokio::test]
async fn exposure_sites_are_public_coarse_and_merged() {
    let s = outbreak_server(true).await;
    let empty = s.get("/v1/exposure-sites").await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json(), json!({"sites": []}));
    // The case was at V1 [T0-3h, T0-2h) and, briefly, at V2 twice 10 minutes apart.
    let r = s
        .scans(&json!([
            scan("case", "V2", T0 - 3000, "in"),
            scan("case", "V2", T0 - 2950, "out"),
            scan("case", "V2", T0 - 2400, "in"),
            scan("case", "V2", T0 - 2300, "out"),
        ]))
        .await;
    assert_eq!(r.json()["accepted"], 4);
    assert_eq!(
        register(
            &s,
            json!({"id": "K", "person": "case", "sampled_at": T0 - 600})
        )
        .await
        .status,
        201
    );
    let sites = s.get("/v1/exposure-sites").await.json();
    let floor = |t: i64| t.div_euclid(900) * 900;
    let ceil = |t: i64| -((-t).div_euclid(900)) * 900;
    assert_eq!(
        sites,
        json!({"sites": [
            {"venue": "V2", "name": "Venue V2", "province": "Soc Trang",
             "start": floor(T0 - 3000), "end": ceil(T0 - 2300)},
            {"venue": "V1", "name": "Venue V1", "province": "Soc Trang",
             "start": floor(T0 - 3 * 3600), "end": ceil(T0 - 2 * 3600)},
        ]})
    );
    assert!(
        !sites.to_string().contains("case"),
        "no person id is published"
    );
    let later = format!("/v1/exposure-sites?since={}", ceil(T0 - 2 * 3600));
    assert_eq!(
        s.get(&later).await.json()["sites"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    s.get("/v1/exposure-sites?since=x")
        .await
        .assert_problem(400);
    // A discarded case publishes nothing.
    let r = s
        .send(
            "PATCH",
            "/v1/cases/K",
            Some(ADMIN),
            &[("content-type", "application/json")],
            json!({"status": "discarded"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        s.get("/v1/exposure-sites").await.json(),
        json!({"sites": []})
    );
}

#[tokio::test]
async fn case_changes_and_reads_are_audited() {
    let s = outbreak_server(true).await;
    assert_eq!(
        register(
            &s,
            json!({"id": "K", "person": "case", "sampled_at": T0 - 600})
        )
        .await
        .status,
        201
    );
    // An identical retry changes nothing and is not a change entry.
    assert_eq!(
        register(
            &s,
            json!({"id": "K", "person": "case", "sampled_at": T0 - 600})
        )
        .await
        .status,
        200
    );
    assert_eq!(s.get_as("/v1/cases/K/contacts", EPI).await.status, 200);
    assert_eq!(s.get_as("/v1/persons/f1/status", APP).await.status, 200);
    assert_eq!(
        patch(&s, "K", json!({"status": "recovered"})).await.status,
        200
    );
    let audit = s.get_as("/v1/audit?since=0", ADMIN).await.json();
    let entries: Vec<(String, String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["who"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
                e["subject"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("cdc".into(), "/v1/cases".into(), "case".into()),
            (
                "cdc".into(),
                "/v1/cases/{id}/contacts".into(),
                "case".into()
            ),
            (
                "citizen-app".into(),
                "/v1/persons/{id}/status".into(),
                "f1".into()
            ),
            ("cdc".into(), "/v1/cases/{id}".into(), "case".into()),
        ]
    );
}

#[tokio::test]
async fn metrics_count_cases_tiers_and_rederivations() {
    let s = outbreak_server(true).await;
    assert_eq!(
        register(
            &s,
            json!({"id": "K", "person": "case", "sampled_at": T0 - 600})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        register(
            &s,
            json!({"id": "J", "person": "other", "sampled_at": T0 - 600})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        patch(&s, "J", json!({"status": "discarded"})).await.status,
        200
    );
    s.scans(&json!([scan("late", "V1", T0 - 3 * 3600, "in")]))
        .await;
    status_until(&s, "late", |v| v["tier"] == "F1").await;
    assert_eq!(s.get_as("/v1/persons/late/status", APP).await.status, 200);
    let text = s.get_as("/metrics", METRICS).await.text();
    for line in [
        "checkin_cases{status=\"active\"} 1",
        "checkin_cases{status=\"discarded\"} 1",
        "checkin_cases{status=\"recovered\"} 0",
        "checkin_persons_by_tier{tier=\"F0\"} 1",
        "checkin_persons_by_tier{tier=\"F1\"} 2",
        "checkin_persons_by_tier{tier=\"F2\"} 1",
        "checkin_status_reads_total{tier=\"F1\"}",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    let rederived: u64 = text
        .lines()
        .find(|l| l.starts_with("checkin_standing_trace_rederivations_total{cause=\"scans\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(rederived >= 1, "{text}");
    assert!(text.contains("checkin_standing_trace_update_seconds_count"));
}

/// A client that closes its connection right after sending a change does not leave the change
/// made without its audit entry: every case stored has its entry (the handler runs to its end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_client_went_away_is_still_audited() {
    use tokio::io::AsyncWriteExt as _;
    let s = outbreak_server(false).await;
    let people = 40;
    for i in 0..people {
        let body = json!({"id": format!("gone-{i}"), "person": format!("gone-{i}"), "sampled_at": T0 - 3600})
            .to_string();
        let head = format!(
            "POST /v1/cases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(body.as_bytes()).await.unwrap();
        drop(c); // gone before any answer
    }
    // Let whatever was taken finish.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (stored, audited) = loop {
        let cases = s.get("/v1/cases").await.json();
        let stored: Vec<String> = cases["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["person"].as_str().map(str::to_string))
            .filter(|p| p.starts_with("gone-"))
            .collect();
        let audit = s.get("/v1/audit?since=0").await.json();
        let mut audited: Vec<String> = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "/v1/cases")
            .filter_map(|e| e["subject"].as_str().map(str::to_string))
            .filter(|p| p.starts_with("gone-"))
            .collect();
        audited.sort();
        let mut stored = stored;
        stored.sort();
        if stored == audited || Instant::now() > deadline {
            break (stored, audited);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !stored.is_empty(),
        "no change was taken at all: the test shows nothing"
    );
    assert_eq!(stored, audited, "cases stored without their audit entry");
}

/// Identical status changes at once are one change: one audit entry, whichever request made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_status_changes_at_once_are_audited_once() {
    let s = outbreak_server(false).await;
    let cases = 20;
    for i in 0..cases {
        let r = s
            .post("/v1/cases", &json!({"id": format!("twice-{i}"), "person": format!("twice-{i}"), "sampled_at": T0 - 3600}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    for i in 0..cases {
        let id = format!("twice-{i}");
        let body = json!({"status": "recovered", "at": T0 - 60});
        let (a, b, c) = tokio::join!(
            patch(&s, &id, body.clone()),
            patch(&s, &id, body.clone()),
            patch(&s, &id, body.clone())
        );
        let answers = [a, b, c];
        for r in &answers {
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    let audit = s.get("/v1/audit?since=0").await.json();
    for i in 0..cases {
        let person = format!("twice-{i}");
        let entries = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "/v1/cases/{id}" && e["subject"] == person.as_str())
            .count();
        assert_eq!(entries, 1, "{person}: {entries} entries for one change");
    }
}
