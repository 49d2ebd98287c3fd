//! Contract sections 11 and 12 over HTTP (all but vaccinations and certificates, which have
//! suites of their own): samples and results, person results, declarations and follow-ups, the
//! health pass, areas with risk levels, the summary and notices; their shapes, errors, audit
//! entries and metrics.
#![allow(clippy::unwrap_used)]

mod api_support;

use std::time::Duration;

use api::ServerOptions;
use api_support::*;
use checkin_tests::http::Response;
use serde_json::{json, Value};

const DAY: i64 = 86_400;

async fn post(s: &Server, path: &str, token: &str, body: Value) -> Response {
    s.post_as(path, token, &body).await
}

#[tokio::test]
async fn samples_results_and_the_case_a_positive_registers() {
    let s = Server::start_with_tokens().await;
    s.venues(&["SITE", "V1"]).await;
    s.scans(&json!([
        scan("p1", "V1", T0 - 5000, "in"),
        scan("p2", "V1", T0 - 5000, "in"),
    ]))
    .await;
    let r = post(&s, "/v1/samples", SAMPLER, json!({"id": "T-1", "kind": "pcr", "persons": ["p1"], "site": "SITE", "collected_at": T0 - 600})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"id": "T-1", "kind": "pcr", "persons": ["p1"], "pooled": false,
               "collected_at": T0 - 600, "site": "SITE", "result": "pending", "resulted_at": null})
    );
    // Retry 200, other fields 409, bad input 400.
    let r = post(
        &s,
        "/v1/samples",
        SAMPLER,
        json!({"id": "T-1", "kind": "pcr", "persons": ["p1"], "site": "SITE"}),
    )
    .await;
    assert_eq!(r.status, 200);
    post(
        &s,
        "/v1/samples",
        SAMPLER,
        json!({"id": "T-1", "kind": "antigen", "persons": ["p1"], "site": "SITE"}),
    )
    .await
    .assert_problem(409);
    for bad in [
        json!({"id": "T-2", "kind": "blood", "persons": ["p1"]}),
        json!({"id": "T-2", "kind": "pcr", "persons": []}),
        json!({"id": "T-2", "kind": "pcr", "persons": ["p1", "p1"]}),
        json!({"id": "T-2", "kind": "pcr", "persons": (0..11).map(|i| format!("p{i}")).collect::<Vec<_>>()}),
        json!({"id": "T-2", "kind": "pcr", "persons": ["p1"], "site": "NOWHERE"}),
        json!({"id": "T-2", "kind": "pcr", "persons": [1]}),
        json!({"id": "T/2", "kind": "pcr", "persons": ["p1"]}),
        json!({"kind": "pcr", "persons": ["p1"]}),
    ] {
        post(&s, "/v1/samples", SAMPLER, bad)
            .await
            .assert_problem(400);
    }
    s.get_as("/v1/samples/T-2", LAB).await.assert_problem(404);
    // The lab enters a positive: a case for p1, p2 becomes F1.
    post(
        &s,
        "/v1/samples/T-1/result",
        LAB,
        json!({"result": "maybe"}),
    )
    .await
    .assert_problem(400);
    post(
        &s,
        "/v1/samples/T-1/result",
        LAB,
        json!({"result": "positive", "resulted_at": T0 - 601}),
    )
    .await
    .assert_problem(400);
    post(
        &s,
        "/v1/samples/NOPE/result",
        LAB,
        json!({"result": "positive"}),
    )
    .await
    .assert_problem(404);
    let r = post(
        &s,
        "/v1/samples/T-1/result",
        LAB,
        json!({"result": "positive"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "positive");
    assert_eq!(r.json()["resulted_at"], T0);
    let case = s.get_as("/v1/cases/sample:T-1", EPI).await.json();
    assert_eq!(case["source"], "sample:T-1");
    assert_eq!(case["sampled_at"], T0 - 600);
    assert_eq!(case["isolated_at"], T0);
    assert_eq!(
        s.get_as("/v1/persons/p2/status", EPI).await.json()["tier"],
        "F1"
    );
    // Results of the person.
    let r = s.get_as("/v1/persons/p1/results", APP).await;
    assert_eq!(
        r.json(),
        json!({"person": "p1", "results": [{"sample": "T-1", "kind": "pcr", "collected_at": T0 - 600,
               "site": "SITE", "pooled": false, "result": "positive", "resulted_at": T0}]})
    );
    assert_eq!(
        s.get_as("/v1/persons/nobody/results", APP).await.json(),
        json!({"person": "nobody", "results": []})
    );
    // A correction discards the case; the contact is no longer F1.
    let r = post(
        &s,
        "/v1/samples/T-1/result",
        LAB,
        json!({"result": "negative"}),
    )
    .await;
    assert_eq!(r.json()["result"], "negative");
    assert_eq!(
        s.get_as("/v1/cases/sample:T-1", EPI).await.json()["status"],
        "discarded"
    );
    assert_eq!(
        s.get_as("/v1/persons/p2/status", EPI).await.json()["tier"],
        "none"
    );
    // Pooled: every member pool_positive.
    let r = post(
        &s,
        "/v1/samples",
        SAMPLER,
        json!({"id": "POOL", "kind": "antigen", "persons": ["a", "b"]}),
    )
    .await;
    assert_eq!(r.json()["pooled"], true);
    post(
        &s,
        "/v1/samples/POOL/result",
        LAB,
        json!({"result": "positive"}),
    )
    .await;
    assert_eq!(
        s.get_as("/v1/persons/b/results", EPI).await.json()["results"][0]["result"],
        "pool_positive"
    );
    let pass = s.get_as("/v1/persons/b/pass", SCANNER).await.json();
    assert_eq!(
        pass,
        json!({"person": "b", "color": "red", "basis": "pool_positive", "as_of": T0})
    );
    // A sample read shows its members' results: audited once per member.
    let r = s.get_as("/v1/samples/POOL", LAB).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Audit: each member of a changed result, then the results, sample and pass reads.
    let audit = s.get_as("/v1/audit?since=0", ADMIN).await.json();
    let actions: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["subject"].as_str().unwrap().into(),
            )
        })
        .collect();
    for want in [
        ("/v1/samples/{id}/result", "p1"),
        ("/v1/persons/{id}/results", "p1"),
        ("/v1/samples/{id}/result", "a"),
        ("/v1/samples/{id}/result", "b"),
        ("/v1/persons/{id}/pass", "b"),
        ("/v1/samples/{id}", "a"),
        ("/v1/samples/{id}", "b"),
    ] {
        assert!(
            actions.contains(&(want.0.to_string(), want.1.to_string())),
            "missing {want:?} in {actions:?}"
        );
    }
    let text = s.get_as("/metrics", METRICS).await.text();
    for line in [
        "checkin_samples_registered_total 2",
        "checkin_results_entered_total{result=\"positive\"} 2",
        "checkin_results_entered_total{result=\"negative\"} 1",
        "checkin_passes_served_total{color=\"red\"} 1",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
}

#[tokio::test]
async fn declarations_and_followups() {
    let s = Server::start_with_tokens().await;
    let r = post(
        &s,
        "/v1/declarations",
        APP,
        json!({"person": "d1", "symptoms": ["fever", "cough"], "exposure": true,
               "travel": [{"from": "Sóc Trăng", "to": "Cần Thơ", "date": "2026-11-30"}]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let d = r.json();
    assert!(d["id"].as_str().unwrap().starts_with('D'));
    assert_eq!(d["ts"], T0);
    assert_eq!(d["travel"][0]["to"], "Cần Thơ");
    for bad in [
        json!({"person": "d1", "symptoms": ["headache"], "exposure": false}),
        json!({"person": "d1", "symptoms": [], "exposure": "yes"}),
        json!({"person": "d1", "symptoms": []}),
        json!({"person": "d1", "symptoms": [], "exposure": false, "travel": [{"from": "A", "to": "B", "date": "30/11/2026"}]}),
        json!({"person": "d1", "symptoms": [], "exposure": false, "ts": T0 + 301}),
    ] {
        post(&s, "/v1/declarations", APP, bad)
            .await
            .assert_problem(400);
    }
    post(
        &s,
        "/v1/declarations",
        APP,
        json!({"person": "d2", "symptoms": ["fatigue"], "exposure": false}),
    )
    .await;
    let f = s.get_as("/v1/followups", EPI).await.json();
    assert_eq!(
        f,
        json!({"persons": [{"person": "d1", "tier": "none", "symptoms": ["fever", "cough"], "last_declared": T0}]})
    );
}

#[tokio::test]
async fn the_pass_answers_a_colour_and_nothing_else() {
    let s = Server::start_with_tokens().await;
    let p = s.get_as("/v1/persons/x/pass", OWNER).await;
    assert_eq!(p.status, 200);
    assert_eq!(
        p.json(),
        json!({"person": "x", "color": "red", "basis": "no_record", "as_of": T0})
    );
    s.venues(&["SITE"]).await;
    post(
        &s,
        "/v1/samples",
        SAMPLER,
        json!({"id": "N", "kind": "antigen", "persons": ["x"], "collected_at": T0 - 3600}),
    )
    .await;
    post(
        &s,
        "/v1/samples/N/result",
        LAB,
        json!({"result": "negative"}),
    )
    .await;
    let p = s.get_as("/v1/persons/x/pass", APP).await.json();
    assert_eq!(
        (p["color"].clone(), p["basis"].clone()),
        (json!("yellow"), json!("negative_test"))
    );
    // 72 hours later the test no longer counts.
    s.clock.set(T0 - 3600 + 72 * 3600 + 1);
    assert_eq!(
        s.get_as("/v1/persons/x/pass", APP).await.json()["basis"],
        "no_record"
    );
}

#[tokio::test]
async fn areas_levels_and_the_summary() {
    let s = Server::start_with_tokens().await;
    let r = post(
        &s,
        "/v1/areas",
        ADMIN,
        json!([
            {"id": "ST-1", "name": "Phường 1", "population": 10000, "parent": "ST"},
            {"id": "ST", "name": "Sóc Trăng", "population": 1_200_000},
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"registered": 2}));
    for bad in [
        json!({"id": "X", "name": "X", "population": 0}),
        json!({"id": "X", "name": "X", "population": 10, "parent": "NOPE"}),
        json!({"id": "ST", "name": "Sóc Trăng", "population": 10, "parent": "ST-1"}),
        json!({"id": "X", "name": "X", "population": "many"}),
        json!([{"id": "Y", "name": "Y", "population": 1}, {"id": "bad id", "name": "Z", "population": 1}]),
    ] {
        post(&s, "/v1/areas", ADMIN, bad).await.assert_problem(400);
    }
    // Y was in the rejected request: not registered.
    let areas = s.get("/v1/areas").await.json();
    let ids: Vec<&str> = areas["areas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ST", "ST-1"]);
    // Two cases in ST-1 this week: 20 per 100k there (level 2, +1 for coverage under 70 %).
    for (i, person) in ["c1", "c2"].iter().enumerate() {
        let r = post(&s, "/v1/cases", EPI, json!({"id": format!("K{i}"), "person": person, "sampled_at": T0 - 3600, "area": "ST-1"})).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    post(
        &s,
        "/v1/cases",
        EPI,
        json!({"person": "c3", "sampled_at": T0, "area": "NOPE"}),
    )
    .await
    .assert_problem(400);
    let areas = s.get("/v1/areas").await.json();
    assert_eq!(areas["as_of"], T0);
    let st1 = &areas["areas"][1];
    assert_eq!(st1["cases_7d"], 2);
    assert_eq!(st1["rate_per_100k"], 20.0);
    assert_eq!(st1["dose1_coverage"], 0.0);
    assert_eq!(st1["level"], 3);
    assert_eq!(
        areas["areas"][0]["cases_7d"], 2,
        "cases below an area count for it"
    );
    assert_eq!(areas["areas"][0]["parent"], Value::Null);
    let sum = s.get("/v1/summary").await.json();
    assert_eq!(sum["as_of"], T0);
    assert_eq!(sum["cases_active"], 2);
    assert_eq!(sum["cases_new_24h"], 2);
    assert_eq!(sum["cases_7d"], 2);
    for key in [
        "f1",
        "f2",
        "present",
        "scans_24h",
        "samples_24h",
        "positive_24h",
        "dose1",
        "fully_vaccinated",
    ] {
        assert!(sum[key].is_u64(), "{key} in {sum}");
    }
    // Eight days later the cases are outside the week.
    s.clock.set(T0 + 8 * DAY);
    assert_eq!(s.get("/v1/areas").await.json()["areas"][1]["cases_7d"], 0);
    assert_eq!(s.get("/v1/summary").await.json()["cases_7d"], 0);
}

#[tokio::test]
async fn notices_are_published_and_listed_newest_first() {
    let s = Server::start_with_tokens().await;
    let r = post(&s, "/v1/notices", ADMIN, json!({"kind": "directive", "title": "Chỉ thị 16", "body": "Hạn chế tụ tập <b>không</b> quá 2 người."})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let first = r.json();
    assert_eq!(first["published_at"], T0);
    assert_eq!(first["kind"], "directive");
    let later = post(
        &s,
        "/v1/notices",
        ADMIN,
        json!({"kind": "news", "title": "Sắp tới", "body": "", "published_at": T0 + 60}),
    )
    .await
    .json();
    post(
        &s,
        "/v1/notices",
        ADMIN,
        json!({"kind": "rumour", "title": "x", "body": "y"}),
    )
    .await
    .assert_problem(400);
    post(
        &s,
        "/v1/notices",
        ADMIN,
        json!({"kind": "news", "title": "", "body": "y"}),
    )
    .await
    .assert_problem(400);
    let list = s.get("/v1/notices").await.json();
    assert_eq!(
        list["notices"].as_array().unwrap().len(),
        1,
        "not yet published"
    );
    assert_eq!(
        list["notices"][0]["body"], first["body"],
        "bodies are plain text, kept as sent"
    );
    s.clock.set(T0 + 60);
    let list = s.get("/v1/notices").await.json();
    assert_eq!(list["notices"][0]["id"], later["id"]);
    assert_eq!(list["notices"][1]["id"], first["id"]);
}

/// A client cannot take the id of the case a sample registers: `sample:Y` for another person
/// would keep Y's positive from registering its case, and Y's correction would discard the
/// other person's case.
#[tokio::test]
async fn a_case_id_of_the_sample_kind_is_the_servers() {
    let s = Server::start_with_tokens().await;
    s.venues(&["SITE"]).await;
    post(
        &s,
        "/v1/cases",
        EPI,
        json!({"id": "sample:Y", "person": "c", "sampled_at": T0 - 3600}),
    )
    .await
    .assert_problem(400);
    let r = post(&s, "/v1/samples", SAMPLER, json!({"id": "Y", "kind": "pcr", "persons": ["d"], "site": "SITE", "collected_at": T0 - 600})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = post(
        &s,
        "/v1/samples/Y/result",
        LAB,
        json!({"result": "positive"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let case = s.get_as("/v1/cases/sample:Y", EPI).await;
    assert_eq!(case.status, 200, "{}", case.text());
    assert_eq!(case.json()["person"], "d");
}

/// A single server purges expired samples on the first look of a new day, not only at start: a
/// server that runs on does not keep a sample past its 180 days.
#[tokio::test]
async fn a_running_server_purges_expired_samples_on_a_new_day() {
    let s = Server::start_with(Opts {
        tokens: true,
        options: ServerOptions {
            purge_check_every: Duration::from_millis(50),
            ..ServerOptions::default()
        },
        ..Opts::default()
    })
    .await;
    s.venues(&["SITE"]).await;
    let r = post(&s, "/v1/samples", SAMPLER, json!({"id": "OLD", "kind": "pcr", "persons": ["p"], "site": "SITE", "collected_at": T0 - 600})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(s.get_as("/v1/samples/OLD", SAMPLER).await.status, 200);
    s.clock.advance(181 * 86_400);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.get_as("/v1/samples/OLD", SAMPLER).await;
        if r.status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still served 10 s after it expired: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST` with an `Idempotency-Key` header, as `token`.
async fn post_keyed(s: &Server, path: &str, token: &str, key: &str, body: &Value) -> Response {
    s.send(
        "POST",
        path,
        Some(token),
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn a_declaration_or_notice_sent_again_with_its_idempotency_key_is_stored_once() {
    let s = Server::start_with_tokens().await;
    let decl = json!({"person": "k1", "symptoms": ["fever"], "exposure": false});
    let key = "8e03978e-40d5-43e8-bc93-6894a57f9324";
    let first = post_keyed(&s, "/v1/declarations", APP, key, &decl).await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(first.header("idempotent-replayed"), None);
    let stored = first.json();
    // The retry (bare or as the draft's quoted string) gets the same declaration back.
    for sent in [key.to_string(), format!("\"{key}\"")] {
        let again = post_keyed(&s, "/v1/declarations", APP, &sent, &decl).await;
        assert_eq!(again.status, 200, "{}", again.text());
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.json(), stored);
    }
    // The same key with another request is refused and stores nothing.
    let other = json!({"person": "k1", "symptoms": ["cough"], "exposure": false});
    post_keyed(&s, "/v1/declarations", APP, key, &other)
        .await
        .assert_problem(409);
    // Keys are the caller's own: another token's same key is another request.
    let admin = post_keyed(&s, "/v1/declarations", ADMIN, key, &decl).await;
    assert_eq!(admin.status, 201, "{}", admin.text());
    assert_ne!(admin.json()["id"], stored["id"]);
    // Without a key every request is a declaration of its own, as before.
    for _ in 0..2 {
        assert_eq!(
            post(&s, "/v1/declarations", APP, decl.clone()).await.status,
            201
        );
    }
    for bad in ["", "\"\"", &"x".repeat(256), "has space"] {
        post_keyed(&s, "/v1/declarations", APP, bad, &decl)
            .await
            .assert_problem(400);
    }
    let stored_total = s.get_as("/metrics", ADMIN).await.text();
    assert!(
        stored_total.contains("checkin_declarations_total 4"),
        "the retries are not counted as declarations:\n{stored_total}"
    );

    let notice = json!({"kind": "news", "title": "Testing sites open", "body": "All week."});
    let n = post_keyed(&s, "/v1/notices", ADMIN, "notice-1", &notice).await;
    assert_eq!(n.status, 201, "{}", n.text());
    let n = n.json();
    let again = post_keyed(&s, "/v1/notices", ADMIN, "notice-1", &notice).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json(), n);
    let listed = s.get("/v1/notices").await.json();
    assert_eq!(listed["notices"].as_array().unwrap().len(), 1, "{listed}");

    // The key is durable with its record: a retry after a restart still finds it.
    let s = s.restart_with_tokens().await;
    let after = post_keyed(&s, "/v1/declarations", APP, key, &decl).await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(after.json(), stored);
    let after = post_keyed(&s, "/v1/notices", ADMIN, "notice-1", &notice).await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(after.json(), n);
}
