//! `POST /v1/trace` with the v2 rules of contract section 5 over real HTTP: `min_stay_s` and
//! `linger_s` (defaults, echo, bounds, types), `last_contact` in F1 and F2, and a linger that
//! changes the answer.
#![allow(clippy::unwrap_used)]

mod api_support;

use api_support::*;
use serde_json::{json, Value};

/// p1 is the case: V1 [T0-7200, T0-3600), V2 [T0-600, T0-540) (a 60 s stay).
/// p2: V1 [T0-4500, T0-3000), V2 [T0-2900, T0-1500). p3: V1 [T0-3000, T0-1000) (arrives after
/// p1 left). p4: V2 [T0-600, T0) (met p1's short stay). p5: V2 [T0-2500, T0-1500) (met p2 only).
async fn fixture(s: &Server) {
    s.venues(&["V1", "V2"]).await;
    let r = s
        .scans(&json!([
            scan("p1", "V1", T0 - 7200, "in"),
            scan("p1", "V1", T0 - 3600, "out"),
            scan("p1", "V2", T0 - 600, "in"),
            scan("p1", "V2", T0 - 540, "out"),
            scan("p2", "V1", T0 - 4500, "in"),
            scan("p2", "V1", T0 - 3000, "out"),
            scan("p2", "V2", T0 - 2900, "in"),
            scan("p2", "V2", T0 - 1500, "out"),
            scan("p3", "V1", T0 - 3000, "in"),
            scan("p3", "V1", T0 - 1000, "out"),
            scan("p4", "V2", T0 - 600, "in"),
            scan("p4", "V2", T0, "out"),
            scan("p5", "V2", T0 - 2500, "in"),
            scan("p5", "V2", T0 - 1500, "out"),
        ]))
        .await;
    assert_eq!(r.json()["accepted"], 14, "{}", r.text());
}

async fn trace(s: &Server, body: Value) -> Value {
    let r = s.post("/v1/trace", &body).await;
    assert_eq!(r.status, 200, "{body}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

#[tokio::test]
async fn defaults_echo_zero_and_contacts_carry_last_contact() {
    let s = Server::start().await;
    fixture(&s).await;
    let t = trace(&s, json!({"person": "p1"})).await;
    assert_eq!(
        t,
        json!({
            "case": "p1",
            "from": T0 - 14 * 86_400,
            "to": T0,
            "min_overlap_s": 900,
            "min_stay_s": 0,
            "linger_s": 0,
            "visits": [
                {"venue": "V1", "start": T0 - 7200, "end": T0 - 3600},
                {"venue": "V2", "start": T0 - 600, "end": T0 - 540}
            ],
            "f1": [{"person": "p2", "exposure_s": 900, "first_contact": T0 - 4500,
                    "last_contact": T0 - 3600, "venues": ["V1"]}],
            "f2": [{"person": "p5", "via": "p2", "exposure_s": 1000, "first_contact": T0 - 2500,
                    "last_contact": T0 - 1500}]
        })
    );
    // Explicit zeros are the defaults.
    let zeros = trace(&s, json!({"person": "p1", "min_stay_s": 0, "linger_s": 0})).await;
    assert_eq!(zeros, t);
    // Unknown fields next to the new ones are still ignored.
    let extra = trace(&s, json!({"person": "p1", "linger_s": 0, "linger_m": "x"})).await;
    assert_eq!(extra, t);
}

#[tokio::test]
async fn linger_changes_the_answer() {
    let s = Server::start().await;
    fixture(&s).await;
    let plain = trace(&s, json!({"person": "p1"})).await;
    // p1's V1 visit now exposes V1 until T0-1800: p2 gets all of its stay there, and p3, who
    // arrived after p1 left, becomes F1.
    let t = trace(&s, json!({"person": "p1", "linger_s": 1800})).await;
    assert_ne!(t, plain);
    assert_eq!(t["linger_s"], 1800);
    assert_eq!(t["min_stay_s"], 0);
    assert_eq!(
        t["visits"], plain["visits"],
        "the case visits carry no linger"
    );
    assert_eq!(
        t["f1"],
        json!([
            {"person": "p2", "exposure_s": 1500, "first_contact": T0 - 4500,
             "last_contact": T0 - 3000, "venues": ["V1"]},
            {"person": "p3", "exposure_s": 1200, "first_contact": T0 - 3000,
             "last_contact": T0 - 1800, "venues": ["V1"]}
        ])
    );
    assert_eq!(
        t["f2"],
        json!([{"person": "p5", "via": "p2", "exposure_s": 1000, "first_contact": T0 - 2500,
                "last_contact": T0 - 1500}])
    );
    // The largest linger reaches past `to` (T0): p1's V1 exposure lasts until T0+3600, its V2
    // exposure until T0+6660, so p4 meets p1's 60 s stay there until p4's exit at T0.
    let t = trace(
        &s,
        json!({"person": "p1", "linger_s": 7200, "depth": 1, "min_overlap_s": 0}),
    )
    .await;
    assert_eq!(
        t["f1"],
        json!([
            {"person": "p3", "exposure_s": 2000, "first_contact": T0 - 3000,
             "last_contact": T0 - 1000, "venues": ["V1"]},
            {"person": "p2", "exposure_s": 1500, "first_contact": T0 - 4500,
             "last_contact": T0 - 3000, "venues": ["V1"]},
            {"person": "p4", "exposure_s": 600, "first_contact": T0 - 600,
             "last_contact": T0, "venues": ["V2"]}
        ])
    );
    assert_eq!(t["f2"], json!([]), "depth 1");
}

#[tokio::test]
async fn min_stay_drops_short_case_visits() {
    let s = Server::start().await;
    fixture(&s).await;
    let f1 = |t: &Value| -> Vec<String> {
        t["f1"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["person"].as_str().unwrap().to_owned())
            .collect()
    };
    let base = json!({"person": "p1", "min_overlap_s": 0, "depth": 1});
    let with = |stay: i64| {
        let mut b = base.clone();
        b["min_stay_s"] = json!(stay);
        b
    };
    let all = trace(&s, with(60)).await;
    assert_eq!(all["min_stay_s"], 60);
    assert_eq!(all["visits"].as_array().unwrap().len(), 2, "60 s >= 60 s");
    assert_eq!(f1(&all), ["p2", "p4"]);
    assert_eq!(all["f1"][1]["last_contact"], T0 - 540);
    let long = trace(&s, with(61)).await;
    assert_eq!(
        long["visits"],
        json!([{"venue": "V1", "start": T0 - 7200, "end": T0 - 3600}])
    );
    assert_eq!(f1(&long), ["p2"]);
    let none = trace(&s, with(86_400)).await;
    assert_eq!(none["visits"], json!([]));
    assert_eq!(none["f1"], json!([]));
    assert_eq!(none["min_stay_s"], 86_400);
}

#[tokio::test]
async fn out_of_range_or_mistyped_rules_are_400() {
    let s = Server::start().await;
    fixture(&s).await;
    const STAY: &str = "min_stay_s must be in 0..=86400";
    const LINGER: &str = "linger_s must be in 0..=7200";
    const TYPE: &str = "body is not a valid trace request";
    for (bad, detail) in [
        (json!({"person": "p1", "min_stay_s": -1}), STAY),
        (json!({"person": "p1", "min_stay_s": 86_401}), STAY),
        (json!({"person": "p1", "min_stay_s": i64::MIN}), STAY),
        (json!({"person": "p1", "linger_s": -1}), LINGER),
        (json!({"person": "p1", "linger_s": 7201}), LINGER),
        (json!({"person": "p1", "linger_s": i64::MAX}), LINGER),
        (json!({"person": "p1", "min_stay_s": "600"}), TYPE),
        (json!({"person": "p1", "min_stay_s": 1.5}), TYPE),
        (json!({"person": "p1", "min_stay_s": [0]}), TYPE),
        (json!({"person": "p1", "linger_s": "60"}), TYPE),
        (json!({"person": "p1", "linger_s": true}), TYPE),
        (json!({"person": "p1", "linger_s": 1e30}), TYPE),
        (json!({"person": "p1", "linger_s": u64::MAX}), TYPE),
    ] {
        let p = s.post("/v1/trace", &bad).await.assert_problem(400);
        let got = p["detail"].as_str().unwrap();
        assert!(
            got.contains(detail),
            "{bad}: detail {got:?} lacks {detail:?}"
        );
    }
    // The bounds themselves are allowed.
    let t = trace(
        &s,
        json!({"person": "p1", "min_stay_s": 86_400, "linger_s": 7200}),
    )
    .await;
    assert_eq!(
        (t["min_stay_s"].clone(), t["linger_s"].clone()),
        (json!(86_400), json!(7200))
    );
}
