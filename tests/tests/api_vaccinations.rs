//! Contract section 11, vaccinations, over HTTP: `POST /v1/vaccinations` in each of its four
//! formats (one object, a JSON array, NDJSON, CSV), every rejection reason, duplicates and
//! conflicts within a request and against what is stored, whole-request failures (400, 413,
//! 415) that store nothing, `GET /v1/persons/{id}/vaccinations` (shape, order, audit), the
//! metrics, and what the doses change elsewhere (summary, area coverage, the pass), also after a
//! restart.
#![allow(clippy::unwrap_used)]

mod api_support;

use api_support::*;
use checkin_tests::http::Response;
use serde_json::{json, Value};

const DAY: i64 = 86_400;
const PFIZER: &str = "EU/1/20/1528";
const JANSSEN: &str = "EU/1/20/1525";

async fn post_doses(
    s: &Server,
    token: &str,
    content_type: &str,
    body: impl Into<String>,
) -> Response {
    s.send(
        "POST",
        "/v1/vaccinations",
        Some(token),
        &[("content-type", content_type)],
        body.into(),
    )
    .await
}

async fn post_json(s: &Server, body: &Value) -> Response {
    post_doses(s, VACCINATOR, "application/json", body.to_string()).await
}

async fn post_csv(s: &Server, body: &str) -> Response {
    post_doses(s, VACCINATOR, "text/csv", body.to_string()).await
}

/// The answer of a successful POST: `(accepted, [(index, reason)])`.
fn outcome(r: &Response) -> (u64, Vec<(u64, String)>) {
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let rejected = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["index"].as_u64().unwrap(),
                x["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (v["accepted"].as_u64().unwrap(), rejected)
}

fn rej(pairs: &[(u64, &str)]) -> Vec<(u64, String)> {
    pairs.iter().map(|(i, r)| (*i, (*r).to_string())).collect()
}

async fn doses(s: &Server, person: &str) -> Value {
    let r = s
        .get_as(&format!("/v1/persons/{person}/vaccinations"), EPI)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["person"], person);
    v["doses"].clone()
}

async fn areas(s: &Server) {
    let r = s
        .post_as(
            "/v1/areas",
            ADMIN,
            &json!([
                {"id": "ST", "name": "Soc Trang", "population": 1000},
                {"id": "ST-1", "name": "District 1", "population": 400, "parent": "ST"},
                {"id": "ST-1-A", "name": "Commune A", "population": 100, "parent": "ST-1"},
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

fn dose(person: &str, n: i64, vaccine: &str, at: i64) -> Value {
    json!({"person": person, "dose": n, "vaccine": vaccine, "administered_at": at})
}

#[tokio::test]
async fn each_format_records_doses_and_reads_answer_them_in_order() {
    let s = Server::start_with_tokens().await;
    areas(&s).await;
    // One object, with every field.
    let r = post_json(
        &s,
        &json!({"person": "p1", "dose": 2, "vaccine": PFIZER, "administered_at": T0 - 10 * DAY,
                "lot": "FE1234", "site": "Commune A health station", "area": "ST-1-A", "x": 1}),
    )
    .await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(outcome(&r), (1, vec![]));
    // An array.
    let r = post_json(
        &s,
        &json!([
            dose("p1", 1, PFIZER, T0 - 40 * DAY),
            dose("p2", 1, "Abdala", T0 - DAY)
        ]),
    )
    .await;
    assert_eq!(outcome(&r), (2, vec![]));
    // NDJSON.
    let nd = format!(
        "{}\n\n{}\n",
        dose("p3", 1, JANSSEN, T0 - 20 * DAY),
        dose("p3", 2, "EU/1/20/1507", T0 - 2 * DAY)
    );
    let r = post_doses(&s, ADMIN, "application/x-ndjson", nd).await;
    assert_eq!(outcome(&r), (2, vec![]));
    // CSV: BOM, CRLF, a header in another order with an unknown column, quoted cells.
    let csv = format!(
        "\u{feff}vaccine,person,administered_at,dose,note,site,lot,area\r\n\
         CoronaVac,p4,{},1,\"ignored, really\",\"Ward \"\"B\"\", floor 2\",,ST-1\r\n\
         CoronaVac,p4,{},2,,,\"L-9\",\r\n",
        T0 - 30 * DAY,
        T0 - 3 * DAY
    );
    let r = post_csv(&s, &csv).await;
    assert_eq!(outcome(&r), (2, vec![]));

    assert_eq!(
        doses(&s, "p1").await,
        json!([
            {"dose": 1, "vaccine": PFIZER, "administered_at": T0 - 40 * DAY, "lot": null, "site": null, "area": null},
            {"dose": 2, "vaccine": PFIZER, "administered_at": T0 - 10 * DAY, "lot": "FE1234",
             "site": "Commune A health station", "area": "ST-1-A"},
        ])
    );
    assert_eq!(
        doses(&s, "p4").await,
        json!([
            {"dose": 1, "vaccine": "CoronaVac", "administered_at": T0 - 30 * DAY, "lot": null,
             "site": "Ward \"B\", floor 2", "area": "ST-1"},
            {"dose": 2, "vaccine": "CoronaVac", "administered_at": T0 - 3 * DAY, "lot": "L-9", "site": null, "area": null},
        ])
    );
    // Unknown persons (even ids no record could carry) answer an empty list.
    assert_eq!(doses(&s, "nobody").await, json!([]));
    let r = s
        .get_as("/v1/persons/not%20an%20id/vaccinations", APP)
        .await;
    assert_eq!(r.json(), json!({"person": "not an id", "doses": []}));
    // Every read is audited, refused ones are not.
    assert_eq!(
        s.get_as("/v1/persons/p1/vaccinations", VACCINATOR)
            .await
            .status,
        403
    );
    let entries = s.get_as("/v1/audit", ADMIN).await.json()["entries"].clone();
    let reads: Vec<(String, String)> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "/v1/persons/{id}/vaccinations")
        .map(|e| {
            (
                e["who"].as_str().unwrap().to_string(),
                e["subject"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("cdc", "p1"),
        ("cdc", "p4"),
        ("cdc", "nobody"),
        ("citizen-app", "not an id"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
    .collect();
    assert_eq!(reads, want);
}

#[tokio::test]
async fn every_reason_over_json_and_csv() {
    let s = Server::start_with_tokens().await;
    areas(&s).await;
    let body = json!([
        {"person": 42, "dose": 1, "vaccine": PFIZER, "administered_at": T0},
        {"person": "bad id", "dose": 1, "vaccine": PFIZER, "administered_at": T0},
        {"person": "p1", "dose": 1.5, "vaccine": PFIZER, "administered_at": T0},
        {"person": "p1", "dose": 11, "vaccine": PFIZER, "administered_at": T0},
        {"person": "p1", "dose": 1, "vaccine": "Sputnik-Light", "administered_at": T0},
        {"person": "p1", "dose": 1, "vaccine": PFIZER, "administered_at": "2021-06-01"},
        {"person": "p1", "dose": 1, "vaccine": PFIZER, "administered_at": 1_606_780_799},
        {"person": "p1", "dose": 1, "vaccine": PFIZER, "administered_at": T0 + 301},
        {"person": "p1", "dose": 1, "vaccine": PFIZER, "administered_at": T0, "area": "NOWHERE"},
        {"person": "p1", "dose": 1, "vaccine": PFIZER, "administered_at": T0, "lot": 1234},
        {"person": "p1", "dose": 1, "vaccine": PFIZER, "administered_at": T0, "lot": "A"},
        {"person": "p1", "dose": 1, "vaccine": PFIZER, "administered_at": T0, "lot": "B"},
        {"person": "p1", "dose": 1, "vaccine": PFIZER, "administered_at": T0, "lot": "A"},
        {"person": "p2", "dose": 1, "vaccine": PFIZER, "administered_at": 1_606_780_800},
        {"person": "p2", "dose": 2, "vaccine": PFIZER, "administered_at": T0 + 300, "area": "ST"},
    ]);
    let r = post_json(&s, &body).await;
    assert_eq!(
        outcome(&r),
        (
            4,
            rej(&[
                (0, "invalid_person"),
                (1, "invalid_person"),
                (2, "invalid_dose"),
                (3, "invalid_dose"),
                (4, "unknown_vaccine"),
                (5, "invalid_ts"),
                (6, "invalid_ts"),
                (7, "in_future"),
                (8, "unknown_area"),
                (9, "invalid_row"),
                (11, "conflict"),
            ])
        )
    );
    assert_eq!(doses(&s, "p1").await.as_array().unwrap().len(), 1);
    assert_eq!(doses(&s, "p1").await[0]["lot"], "A");
    assert_eq!(doses(&s, "p2").await.as_array().unwrap().len(), 2);

    // The same over CSV; indexes count data rows from 0 (blank lines are not rows).
    let csv = format!(
        "person,dose,vaccine,administered_at,lot,area\n\
         p3,1,{PFIZER},{T0}\n\
         bad id,1,{PFIZER},{T0},,\n\
         p3,x,{PFIZER},{T0},,\n\
         \n\
         p3,0,{PFIZER},{T0},,\n\
         p3,1,nope,{T0},,\n\
         p3,1,{PFIZER},yesterday,,\n\
         p3,1,{PFIZER},1000,,\n\
         p3,1,{PFIZER},{},,\n\
         p3,1,{PFIZER},{T0},,NOWHERE\n\
         p3,1,{PFIZER},{T0},L1,ST-1-A\n\
         p3,1,{PFIZER},{T0},L1,ST-1-A\n\
         p3,1,{PFIZER},{T0},L2,ST-1-A\n\
         p3,1,{PFIZER},{T0},L1,ST-1-A,extra\n",
        T0 + 301
    );
    let r = post_csv(&s, &csv).await;
    assert_eq!(
        outcome(&r),
        (
            2,
            rej(&[
                (0, "invalid_row"),
                (1, "invalid_person"),
                (2, "invalid_dose"),
                (3, "invalid_dose"),
                (4, "unknown_vaccine"),
                (5, "invalid_ts"),
                (6, "invalid_ts"),
                (7, "in_future"),
                (8, "unknown_area"),
                (11, "conflict"),
                (12, "invalid_row"),
            ])
        )
    );
    // Against stored doses: the same record again is accepted, any change is a conflict.
    let r = post_json(
        &s,
        &json!([
            {"person": "p1", "dose": 1, "vaccine": PFIZER, "administered_at": T0, "lot": "A"},
            {"person": "p1", "dose": 1, "vaccine": PFIZER, "administered_at": T0, "lot": "A", "site": "x"},
            {"person": "p1", "dose": 1, "vaccine": PFIZER, "administered_at": T0},
            {"person": "p1", "dose": 1, "vaccine": PFIZER, "administered_at": T0 - 1, "lot": "A"},
        ]),
    )
    .await;
    assert_eq!(
        outcome(&r),
        (1, rej(&[(1, "conflict"), (2, "conflict"), (3, "conflict")]))
    );
    let r = post_csv(
        &s,
        &format!("person,dose,vaccine,administered_at,lot,area\np3,1,{PFIZER},{T0},L1,ST-1-A\n"),
    )
    .await;
    assert_eq!(outcome(&r), (1, vec![]));
    assert_eq!(doses(&s, "p3").await.as_array().unwrap().len(), 1);

    // The metrics count every accepted record (duplicates too) and each reason.
    let text = s.get_as("/metrics", METRICS).await.text();
    for line in [
        "checkin_vaccinations_accepted_total 8",
        "checkin_vaccinations_rejected_total{reason=\"invalid_person\"} 3",
        "checkin_vaccinations_rejected_total{reason=\"invalid_dose\"} 4",
        "checkin_vaccinations_rejected_total{reason=\"unknown_vaccine\"} 2",
        "checkin_vaccinations_rejected_total{reason=\"invalid_ts\"} 4",
        "checkin_vaccinations_rejected_total{reason=\"in_future\"} 2",
        "checkin_vaccinations_rejected_total{reason=\"unknown_area\"} 2",
        "checkin_vaccinations_rejected_total{reason=\"conflict\"} 5",
        "checkin_vaccinations_rejected_total{reason=\"invalid_row\"} 3",
    ] {
        assert!(text.contains(line), "missing {line}");
    }
}

#[tokio::test]
async fn whole_request_failures_store_nothing() {
    let s = Server::start_with_tokens().await;
    let one = dose("p1", 1, PFIZER, T0);
    // Not JSON, not an object, an element that is not an object.
    for body in [
        "nope".to_string(),
        String::new(),
        "42".into(),
        format!("[{one}, 3]"),
        format!("{one} {one}"),
    ] {
        post_doses(&s, VACCINATOR, "application/json", body)
            .await
            .assert_problem(400);
    }
    post_doses(
        &s,
        VACCINATOR,
        "application/x-ndjson",
        format!("{one}\n[1]\n"),
    )
    .await
    .assert_problem(400);
    // A CSV whose header lacks a required column, an empty CSV.
    let p = s
        .send(
            "POST",
            "/v1/vaccinations",
            Some(ADMIN),
            &[("content-type", "text/csv; charset=utf-8")],
            format!("person,dose,vaccine,lot\np1,1,{PFIZER},L1\n"),
        )
        .await
        .assert_problem(400);
    assert!(
        p["detail"].as_str().unwrap().contains("administered_at"),
        "{p}"
    );
    post_csv(&s, "").await.assert_problem(400);
    // Other media types.
    for t in ["text/plain", "application/x-www-form-urlencoded"] {
        post_doses(&s, VACCINATOR, t, one.to_string())
            .await
            .assert_problem(415);
    }
    // More than 100,000 records, in each format.
    let row = format!("p1,1,{PFIZER},{T0}\n");
    let mut csv = String::from("person,dose,vaccine,administered_at\n");
    csv.push_str(&row.repeat(100_001));
    post_csv(&s, &csv).await.assert_problem(413);
    let small = r#"{"person":"p1","dose":1,"vaccine":"Abdala","administered_at":1700000000}"#;
    let nd = vec![small; 100_001].join("\n");
    post_doses(&s, VACCINATOR, "application/x-ndjson", nd)
        .await
        .assert_problem(413);
    let arr = format!("[{}]", vec![small; 100_001].join(","));
    post_doses(&s, VACCINATOR, "application/json", arr)
        .await
        .assert_problem(413);
    assert_eq!(doses(&s, "p1").await, json!([]));
    // Exactly 100,000 is one request (and one transaction).
    let r = post_csv(&s, &csv[..csv.len() - row.len()]).await;
    assert_eq!(outcome(&r), (100_000, vec![]));
    assert_eq!(doses(&s, "p1").await.as_array().unwrap().len(), 1);
    // An empty array or NDJSON body, or a CSV with only its header, accepts nothing.
    assert_eq!(outcome(&post_json(&s, &json!([])).await), (0, vec![]));
    assert_eq!(
        outcome(&post_csv(&s, "person,dose,vaccine,administered_at\r\n").await),
        (0, vec![])
    );
}

#[tokio::test]
async fn summary_coverage_and_the_pass_follow_the_doses_across_a_restart() {
    let s = Server::start_with_tokens().await;
    areas(&s).await;
    let r = post_json(
        &s,
        &json!([
            // Fully vaccinated 20 days ago (dose 2).
            {"person": "a", "dose": 1, "vaccine": PFIZER, "administered_at": T0 - 50 * DAY, "area": "ST-1-A"},
            {"person": "a", "dose": 2, "vaccine": PFIZER, "administered_at": T0 - 20 * DAY, "area": "ST-1-A"},
            // Single-dose vaccine 15 days ago.
            {"person": "b", "dose": 1, "vaccine": JANSSEN, "administered_at": T0 - 15 * DAY, "area": "ST-1"},
            // One dose of two, 30 days ago.
            {"person": "c", "dose": 1, "vaccine": "BBIBP-CorV", "administered_at": T0 - 30 * DAY, "area": "ST"},
            // Dose 2 only yesterday: fully vaccinated, but not yet 14 days ago.
            {"person": "d", "dose": 1, "vaccine": PFIZER, "administered_at": T0 - 40 * DAY},
            {"person": "d", "dose": 2, "vaccine": PFIZER, "administered_at": T0 - DAY},
        ]),
    )
    .await;
    assert_eq!(outcome(&r), (6, vec![]));
    check(&s).await;
    let s = s.restart_with_tokens().await;
    check(&s).await;
    assert_eq!(doses(&s, "a").await.as_array().unwrap().len(), 2);
}

/// The summary, the areas' coverage and the passes of the doses of the test above.
async fn check(s: &Server) {
    let summary = s.get("/v1/summary").await.json();
    assert_eq!(summary["dose1"], 4, "{summary}");
    assert_eq!(summary["fully_vaccinated"], 3, "{summary}");
    let areas = s.get("/v1/areas").await.json();
    let coverage: Vec<(String, f64)> = areas["areas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                a["dose1_coverage"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        coverage,
        vec![
            ("ST".to_string(), 3.0 / 1000.0),
            ("ST-1".to_string(), 2.0 / 400.0),
            ("ST-1-A".to_string(), 1.0 / 100.0),
        ]
    );
    for (person, basis) in [
        ("a", "vaccinated"),
        ("b", "vaccinated"),
        ("c", "partially_vaccinated"),
        ("d", "partially_vaccinated"),
        ("e", "no_record"),
    ] {
        let pass = s
            .get_as(&format!("/v1/persons/{person}/pass"), APP)
            .await
            .json();
        assert_eq!(pass["basis"], basis, "{person}: {pass}");
    }
}
