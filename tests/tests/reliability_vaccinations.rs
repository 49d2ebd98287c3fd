//! Crash reliability of dose records on the real `checkin-server` binary: `kill -9` at a seeded
//! random moment while a client posts CSV batches of doses back to back. After each restart
//! every acknowledged dose is there with the fields it was sent with, and the batch in flight at
//! the kill is there whole or not at all (one transaction per request): the summary's `dose1`
//! and `fully_vaccinated` equal the acknowledged batches' persons, plus all or none of that
//! batch's.
//!
//! Seeds: `CHECKIN_TEST_SEED` overrides the default; the seed and kill points are printed.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkin_tests::*;

const PER_BATCH: usize = 400;
const AREAS: [&str; 3] = ["VX", "VX-1", "VX-1-A"];
const DAY: i64 = 86_400;

/// A batch's persons, each with the doses it was sent (as the read route answers them).
type Persons = Vec<(String, Vec<Value>)>;

/// Batch `b`: persons `b{b}-{i}`, dose 1 for all, dose 2 for every other one; as CSV.
fn batch(b: usize, now: i64) -> (String, Persons) {
    let mut csv = String::from("area,person,dose,vaccine,administered_at,lot,site\r\n");
    let mut persons = Vec::new();
    for i in 0..PER_BATCH {
        let person = format!("b{b}-{i}");
        let area = AREAS[i % 3];
        let mut doses = Vec::new();
        for n in 1..=(1 + i % 2) {
            let at = now - (60 - 30 * n as i64) * DAY;
            let lot = format!("L{b}.{i}.{n}");
            let site = format!("Site {}, room \"{}\"", b % 7, n);
            csv.push_str(&format!(
                "{area},{person},{n},EU/1/20/1528,{at},{lot},\"{}\"\r\n",
                site.replace('"', "\"\"")
            ));
            doses.push(
                json!({"dose": n, "vaccine": "EU/1/20/1528", "administered_at": at,
                              "lot": lot, "site": site, "area": area}),
            );
        }
        persons.push((person, doses));
    }
    (csv, persons)
}

fn start(data: &std::path::Path) -> ServerProcess {
    ServerProcess::start(Launch::new(data).env("CHECKIN_DURABILITY", "fsync"))
}

fn doses_of(server: &ServerProcess, person: &str) -> Value {
    let r = server.get(&format!("/v1/persons/{person}/vaccinations"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["doses"].clone()
}

#[test]
fn kill_9_while_posting_doses_loses_no_acknowledged_dose_and_no_batch_is_torn() {
    let seed = seed(0x7AC5);
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data);
    let areas = json!([
        {"id": "VX", "name": "Province", "population": 100000},
        {"id": "VX-1", "name": "District", "population": 40000, "parent": "VX"},
        {"id": "VX-1-A", "name": "Commune", "population": 9000, "parent": "VX-1"},
    ]);
    assert_eq!(server.post_json("/v1/areas", &areas).status, 200);
    let now = now();
    // Batch number -> (its persons and doses, acknowledged).
    let mut acked: Vec<(usize, Persons)> = Vec::new();
    let mut next_batch = 0;
    for round in 0..3 {
        let addr = server.addr;
        let done: Arc<Mutex<Vec<usize>>> = Arc::default();
        let in_flight: Arc<Mutex<Option<usize>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let first = next_batch;
        let poster = {
            let (done, in_flight, stop) = (done.clone(), in_flight.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut b = first;
                // Bounded: at most 200 batches a round.
                while !stop.load(Ordering::Relaxed) && b < first + 200 {
                    let (csv, _) = batch(b, now);
                    *in_flight.lock().unwrap() = Some(b);
                    let r = http::request(
                        addr,
                        "POST",
                        "/v1/vaccinations",
                        &[("Content-Type", "text/csv")],
                        csv.as_bytes(),
                    );
                    match r {
                        Ok(r) if r.status == 200 => {
                            let v = r.json();
                            assert_eq!(v["rejected"], json!([]), "batch {b}");
                            assert_eq!(v["accepted"], PER_BATCH + PER_BATCH / 2);
                            done.lock().unwrap().push(b);
                            *in_flight.lock().unwrap() = None;
                        }
                        _ => return b,
                    }
                    b += 1;
                }
                b
            })
        };
        let wait = rng.range(300, 1500);
        std::thread::sleep(Duration::from_millis(wait));
        let launch = server.kill9();
        stop.store(true, Ordering::Relaxed);
        let reached = poster.join().unwrap();
        let done = done.lock().unwrap().clone();
        let torn = *in_flight.lock().unwrap();
        println!(
            "round {round}: killed after {wait} ms, {} batches acknowledged, in flight: {torn:?}",
            done.len()
        );
        assert!(
            !done.is_empty(),
            "no batch acknowledged before the kill: raise the wait"
        );
        for &b in &done {
            acked.push((b, batch(b, now).1));
        }
        next_batch = reached + 1;
        server = ServerProcess::start(launch);

        // Every acknowledged batch is there, field for field (its first, middle and last
        // persons; the counts below cover the rest).
        for (b, persons) in &acked {
            for k in [0, PER_BATCH / 2 + 1, PER_BATCH - 1] {
                let (person, want) = &persons[k];
                assert_eq!(
                    doses_of(&server, person),
                    Value::Array(want.clone()),
                    "batch {b}"
                );
            }
        }
        // The batch in flight: whole or not at all.
        if let Some(b) = torn {
            let (_, persons) = batch(b, now);
            let present: Vec<bool> = [0, PER_BATCH / 2, PER_BATCH - 1]
                .iter()
                .map(|&k| doses_of(&server, &persons[k].0) != json!([]))
                .collect();
            assert!(
                present.iter().all(|&p| p == present[0]),
                "batch {b} torn: {present:?}"
            );
            if present[0] {
                // Stored after all: count it as acknowledged from now on.
                acked.push((b, persons));
            }
        }
        let summary = server.get("/v1/summary").json();
        let persons = acked.len() * PER_BATCH;
        assert_eq!(summary["dose1"], persons, "{summary}");
        assert_eq!(summary["fully_vaccinated"], persons / 2, "{summary}");
        // Coverage counts them in their areas and above.
        let areas = server.get("/v1/areas").json();
        let vx = &areas["areas"][0];
        assert_eq!(vx["id"], "VX");
        let covered = (vx["dose1_coverage"].as_f64().unwrap() * 100_000.0).round() as usize;
        assert_eq!(covered, persons);
    }
}
