//! Crash reliability of cases and standing traces on the real `checkin-server` binary: `kill -9`
//! during a stream of case registrations, and during a burst of late scans that reveal
//! contacts. After each restart every acknowledged case is there with the fields it was
//! acknowledged with, and cases, tiers and exposure sites equal what recomputing from scratch
//! gives: each case's contacts equal a fresh `POST /v1/trace` over its window (the engine's
//! trace, itself checked against the brute-force model by the engine's proptests), every
//! person's tier equals the section-10 rules applied to those traces, and the exposure sites
//! equal the section-10 rules applied to their visits.
//!
//! Seeds: `CHECKIN_TEST_SEED` overrides the default; the seed and kill points are printed.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checkin_tests::*;

const VENUES: usize = 6;
const PERSONS: usize = 60;
const DAY: i64 = 86_400;

fn venue(i: usize) -> String {
    format!("V{i}")
}

fn person(i: usize) -> String {
    format!("p{i}")
}

/// A day of seeded scans: every person visits a few venues in the last 30 hours.
fn base_scans(rng: &mut Rng, now: i64) -> Vec<Value> {
    let mut out = Vec::new();
    for p in 0..PERSONS {
        let mut t = now - 30 * 3600 + rng.range(0, 3600) as i64;
        for _ in 0..rng.range(2, 6) {
            let v = venue(rng.range(0, VENUES as u64) as usize);
            out.push(json!({"person": person(p), "venue": v, "ts": t, "action": "in"}));
            let stay = rng.range(600, 5400) as i64;
            if rng.chance(0.6) {
                out.push(json!({"person": person(p), "venue": v, "ts": t + stay, "action": "out"}));
            }
            t += stay + rng.range(60, 7200) as i64;
        }
    }
    out
}

fn post(server: &ServerProcess, path: &str, body: &Value) -> http::Response {
    server.post_json(path, body)
}

fn start(data: &std::path::Path) -> ServerProcess {
    ServerProcess::start(Launch::new(data).env("CHECKIN_DURABILITY", "fsync"))
}

fn setup(server: &ServerProcess, rng: &mut Rng) {
    let venues: Vec<Value> = (0..VENUES)
        .map(|i| json!({"id": venue(i), "name": format!("Venue {i}"), "province": "Soc Trang"}))
        .collect();
    assert_eq!(
        post(server, "/v1/venues", &Value::Array(venues)).status,
        200
    );
    let scans = base_scans(rng, now());
    let r = post(server, "/v1/scans", &Value::Array(scans.clone()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"].as_u64().unwrap(), scans.len() as u64);
}

/// The case body for person `p`, with a client id so retries are idempotent.
fn case_body(tag: &str, p: usize, now: i64) -> Value {
    json!({"id": format!("{tag}-{p}"), "person": person(p), "sampled_at": now - 3600})
}

/// Checks everything section 10 derives against a recomputation from scratch.
fn check_outbreak(
    server: &ServerProcess,
    acked_cases: &BTreeMap<String, Value>,
    persons: &[String],
) {
    let list = server.get("/v1/cases");
    assert_eq!(list.status, 200);
    let cases: Vec<Value> = list.json()["cases"].as_array().unwrap().clone();
    let by_id: BTreeMap<String, Value> = cases
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c.clone()))
        .collect();
    for (id, acked) in acked_cases {
        let stored = by_id
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged case {id} lost"));
        for field in [
            "person",
            "sampled_at",
            "isolated_at",
            "registered_at",
            "status",
        ] {
            assert_eq!(stored[field], acked[field], "case {id} field {field}");
        }
    }
    let now = now();
    let mut traces: BTreeMap<String, Value> = BTreeMap::new();
    for c in &cases {
        let id = c["id"].as_str().unwrap();
        let contacts = server.get(&format!("/v1/cases/{id}/contacts"));
        assert_eq!(contacts.status, 200);
        let fresh = post(
            server,
            "/v1/trace",
            &json!({"person": c["person"], "from": c["from"], "to": c["to"], "depth": 2}),
        );
        let fresh = if fresh.status == 404 {
            json!({"f1": [], "f2": [], "visits": []})
        } else {
            fresh.json()
        };
        assert_eq!(contacts.json()["f1"], fresh["f1"], "case {id} F1");
        assert_eq!(contacts.json()["f2"], fresh["f2"], "case {id} F2");
        assert_eq!(
            contacts.json()["visits"],
            fresh["visits"],
            "case {id} visits"
        );
        assert_eq!(
            c["f1"],
            fresh["f1"].as_array().unwrap().len(),
            "case {id} f1 count"
        );
        traces.insert(id.to_string(), fresh);
    }
    // Tiers, by the section-10 rules over the fresh traces.
    for name in persons {
        let got = server.get(&format!("/v1/persons/{name}/status")).json();
        let want = expected_status(name, now, &cases, &traces);
        assert_eq!(
            (
                got["tier"].clone(),
                got["since"].clone(),
                got["until"].clone(),
                got["cases"].clone()
            ),
            want,
            "status of {name}"
        );
    }
    // Exposure sites.
    let mut per_venue: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for c in &cases {
        if c["status"] == "discarded" {
            continue;
        }
        for v in traces[c["id"].as_str().unwrap()]["visits"]
            .as_array()
            .unwrap()
        {
            let (s, e) = (v["start"].as_i64().unwrap(), v["end"].as_i64().unwrap());
            per_venue
                .entry(v["venue"].as_str().unwrap().into())
                .or_default()
                .push((s.div_euclid(900) * 900, -((-e).div_euclid(900)) * 900));
        }
    }
    let mut want_sites = Vec::new();
    for (venue, mut iv) in per_venue {
        iv.sort();
        let mut merged: Vec<(i64, i64)> = Vec::new();
        for (s, e) in iv {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        for (s, e) in merged {
            if e > now - 14 * DAY {
                want_sites.push((s, venue.clone(), e));
            }
        }
    }
    want_sites.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let got_sites: Vec<(i64, String, i64)> = server.get("/v1/exposure-sites").json()["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["start"].as_i64().unwrap(),
                s["venue"].as_str().unwrap().into(),
                s["end"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got_sites, want_sites, "exposure sites");
}

fn expected_status(
    person: &str,
    now: i64,
    cases: &[Value],
    traces: &BTreeMap<String, Value>,
) -> (Value, Value, Value, Value) {
    if let Some(c) = cases
        .iter()
        .find(|c| c["status"] == "active" && c["person"] == person)
    {
        let since = c["onset"]
            .as_i64()
            .map_or(c["sampled_at"].as_i64().unwrap(), |o| {
                o.min(c["sampled_at"].as_i64().unwrap())
            });
        return (json!("F0"), json!(since), Value::Null, json!([c["id"]]));
    }
    for (tier, list, q) in [("F1", "f1", 14 * DAY), ("F2", "f2", 7 * DAY)] {
        let mut hits: Vec<(String, i64, i64)> = Vec::new();
        for c in cases.iter().filter(|c| c["status"] != "discarded") {
            let id = c["id"].as_str().unwrap();
            for x in traces[id][list].as_array().unwrap() {
                if x["person"] == person {
                    let until = x["last_contact"].as_i64().unwrap() + q;
                    if now < until {
                        hits.push((id.into(), x["first_contact"].as_i64().unwrap(), until));
                    }
                }
            }
        }
        if !hits.is_empty() {
            let ids: BTreeSet<String> = hits.iter().map(|h| h.0.clone()).collect();
            return (
                json!(tier),
                json!(hits.iter().map(|h| h.1).min()),
                json!(hits.iter().map(|h| h.2).max()),
                json!(ids),
            );
        }
    }
    (json!("none"), Value::Null, Value::Null, json!([]))
}

/// Waits until the standing traces have caught up with everything stored (the contract allows
/// 5 s; the check retries until then).
fn check_eventually(server: &ServerProcess, acked: &BTreeMap<String, Value>, persons: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_outbreak(server, acked, persons)
        }));
        match attempt {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => std::panic::resume_unwind(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn kill9_during_case_registration_loses_no_acknowledged_case() {
    let seed = seed(0x0CA5E);
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    setup(&server, &mut rng);
    let acked: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let addr = server.addr;
    let t0 = now();
    let registrar = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for p in 0..PERSONS / 2 {
                let body = case_body("K", p, t0);
                let Ok(r) = http::request(
                    addr,
                    "POST",
                    "/v1/cases",
                    &[("Content-Type", "application/json")],
                    body.to_string().as_bytes(),
                ) else {
                    return p;
                };
                if r.status == 201 || r.status == 200 {
                    let c = r.json();
                    acked
                        .lock()
                        .unwrap()
                        .insert(c["id"].as_str().unwrap().into(), c);
                } else {
                    panic!("registration answered {}: {}", r.status, r.text());
                }
            }
            PERSONS / 2
        })
    };
    // Kill at a seeded moment after the first acknowledgement.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(rng.range(5, 120)));
    let launch = server.kill9();
    let sent = registrar.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    println!(
        "killed after {} acknowledged registrations ({sent} attempted)",
        acked.len()
    );
    let server = ServerProcess::start(launch);
    let persons: Vec<String> = (0..PERSONS).map(person).collect();
    check_eventually(&server, &acked, &persons);
    // Retrying every registration (the acknowledged, the one in flight, the unsent) with the
    // same id is safe: 200 for a stored case, 201 for one that was not, never a conflict.
    let mut acked = acked;
    for p in 0..PERSONS / 2 {
        let r = post(&server, "/v1/cases", &case_body("K", p, t0));
        let id = format!("K-{p}");
        if acked.contains_key(&id) {
            assert_eq!(r.status, 200, "retry of acknowledged {id}: {}", r.text());
        } else {
            assert!(
                r.status == 201 || r.status == 200,
                "retry of {id}: {}",
                r.text()
            );
        }
        acked.insert(id, r.json());
    }
    check_eventually(&server, &acked, &persons);
}

#[test]
fn kill9_during_a_burst_of_late_scans_keeps_tiers_true() {
    let seed = seed(0x1A7E);
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    setup(&server, &mut rng);
    let t0 = now();
    let mut acked_cases = BTreeMap::new();
    for p in 0..5 {
        let r = post(&server, "/v1/cases", &case_body("L", p, t0));
        assert_eq!(r.status, 201, "{}", r.text());
        acked_cases.insert(format!("L-{p}"), r.json());
    }
    // Late uploads: persons PERSONS.. (new phones) that were at the cases' venues yesterday.
    let late: Vec<Vec<Value>> = (0..40)
        .map(|b| {
            (0..20)
                .map(|i| {
                    let p = PERSONS + (b * 20 + i) % 200;
                    let v = venue(rng.range(0, VENUES as u64) as usize);
                    let ts = t0 - 30 * 3600 + rng.range(0, 26 * 3600) as i64;
                    json!({"person": format!("late{p}"), "venue": v, "ts": ts, "action": "in"})
                })
                .collect()
        })
        .collect();
    let acked_scans: Arc<Mutex<usize>> = Arc::default();
    let addr = server.addr;
    let uploader = {
        let acked_scans = acked_scans.clone();
        std::thread::spawn(move || {
            for batch in late {
                let Ok(r) = http::request(
                    addr,
                    "POST",
                    "/v1/scans",
                    &[("Content-Type", "application/json")],
                    Value::Array(batch).to_string().as_bytes(),
                ) else {
                    return;
                };
                assert_eq!(r.status, 200, "{}", r.text());
                *acked_scans.lock().unwrap() += r.json()["accepted"].as_u64().unwrap() as usize;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while *acked_scans.lock().unwrap() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(rng.range(5, 80)));
    let launch = server.kill9();
    uploader.join().unwrap();
    let before = *acked_scans.lock().unwrap();
    println!("killed after {before} acknowledged late scans");
    let server = ServerProcess::start(launch);
    let stats = server.stats();
    assert!(stats["scans"].as_u64().unwrap() as usize >= before);
    let persons: Vec<String> = (0..PERSONS)
        .map(person)
        .chain((PERSONS..PERSONS + 200).map(|p| format!("late{p}")))
        .collect();
    check_eventually(&server, &acked_cases, &persons);
    let late_f = (PERSONS..PERSONS + 200)
        .filter(|p| server.get(&format!("/v1/persons/late{p}/status")).json()["tier"] != "none")
        .count();
    println!("{late_f} late persons have a tier after the restart");
    assert!(
        late_f > 0,
        "the late uploads revealed no contact: the test checks nothing"
    );
}
