//! Soak (ignored by default; `CHECKIN_SOAK_SECS`, default 60, bounds it): the real
//! `checkin-server` ingests (4 writers), traces contacts and answers occupancy and visits reads
//! together for the whole duration, restarted every phase alternately with SIGTERM (must exit
//! 0) and `kill -9`. At the end every acknowledged scan is served exactly (engine opened on the
//! directory), and memory stays flat: in the read-only tail of each phase RSS (`VmRSS`) may not
//! grow beyond noise.
//!
//! Run: `CHECKIN_SOAK_SECS=60 cargo test -p checkin-tests --test reliability_soak -- --ignored
//! --nocapture`.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checkin_tests::*;

const VENUES: usize = 40;

/// Readers: traces, occupancy, visits of acknowledged persons. Returns (requests, failures).
fn readers(
    addr: std::net::SocketAddr,
    known: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let (mut n, mut bad) = (0u64, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let person = {
                let k = known.lock().unwrap();
                (!k.is_empty()).then(|| k[rng.range(0, k.len() as u64) as usize].clone())
            };
            let r = match (rng.range(0, 4), person) {
                (0, Some(p)) => http::request(
                    addr,
                    "POST",
                    "/v1/trace",
                    &[("Content-Type", "application/json")],
                    json!({"person": p, "depth": 1 + rng.range(0, 2)})
                        .to_string()
                        .as_bytes(),
                ),
                (1, Some(p)) => {
                    http::request(addr, "GET", &format!("/v1/persons/{p}/visits"), &[], b"")
                }
                (2, _) => http::request(addr, "GET", "/v1/occupancy?top=10", &[], b""),
                _ => http::request(
                    addr,
                    "GET",
                    &format!("/v1/venues/V{}/occupancy", rng.range(0, VENUES as u64)),
                    &[],
                    b"",
                ),
            };
            match r {
                Ok(r) if r.status == 200 => n += 1,
                Ok(r) => bad.push(format!("{} {}", r.status, r.text())),
                Err(_) => break, // the server went away
            }
        }
        (n, bad)
    })
}

#[test]
#[ignore = "soak: run with CHECKIN_SOAK_SECS=<n> -- --ignored"]
fn soak_ingest_trace_occupancy_with_restarts() {
    let secs: u64 = std::env::var("CHECKIN_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed = seed(0x50A4);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let phase = Duration::from_secs((secs / 6).clamp(10, 120));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut launch = Launch::new(&data);
    let mut acked_all: Vec<Scan> = Vec::new();
    let known = Arc::new(Mutex::new(Vec::<String>::new()));
    let reads = Arc::new(AtomicU64::new(0));
    let (mut sigterms, mut kills, mut phases) = (0, 0, 0u64);
    let mut rss_report = Vec::new();
    let mut failures = Vec::new();
    let mut first = true;
    while Instant::now() < end {
        let server = ServerProcess::start(launch.clone());
        if first {
            register_venues(server.addr, VENUES);
            first = false;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let ingest = Ingest::start(
            server.addr,
            &format!("s{phases}"),
            4,
            VENUES,
            seed ^ phases,
            (60, 3 * 86_400),
        );
        let rd: Vec<_> = (0..2)
            .map(|i| {
                readers(
                    server.addr,
                    known.clone(),
                    stop.clone(),
                    seed + phases * 7 + i,
                )
            })
            .collect();
        // Two thirds ingest and read, feeding new persons to the readers.
        let t0 = Instant::now();
        let mut fed = 0;
        while t0.elapsed() < phase * 2 / 3 {
            std::thread::sleep(Duration::from_millis(250));
            let acked = ingest.acked.lock().unwrap();
            let new = &acked[fed.min(acked.len())..];
            known
                .lock()
                .unwrap()
                .extend(new.iter().step_by(50).map(|s| s.person.clone()));
            fed = acked.len();
        }
        let (acked, anomalies) = ingest.finish();
        failures.extend(anomalies);
        acked_all.extend(acked);
        // The rest of the phase: reads only; RSS must stay flat.
        let mut samples = Vec::new();
        while t0.elapsed() < phase {
            std::thread::sleep(Duration::from_millis(250));
            if let Some(r) = server.rss_kib() {
                samples.push(r);
            }
        }
        stop.store(true, Ordering::Relaxed);
        for h in rd {
            let (n, bad) = h.join().unwrap();
            reads.fetch_add(n, Ordering::Relaxed);
            failures.extend(bad);
        }
        if samples.len() >= 4 {
            let base = samples[samples.len() / 4];
            let max = *samples.iter().max().unwrap();
            rss_report.push(format!("phase {phases}: {base}..{max} KiB"));
            if max > base + (base / 10).max(16 << 10) {
                failures.push(format!(
                    "phase {phases}: RSS grew from {base} to {max} KiB under reads only"
                ));
            }
        }
        // Stored counts cover what was acknowledged, before every restart.
        let stored = server.stats()["scans"].as_u64().unwrap();
        if stored < acked_all.len() as u64 {
            failures.push(format!(
                "phase {phases}: {stored} stored < {} acked",
                acked_all.len()
            ));
        }
        if rng.chance(0.5) {
            let (status, l) = server.sigterm(Duration::from_secs(60));
            if !status.is_some_and(|s| s.success()) {
                failures.push(format!("phase {phases}: SIGTERM exit {status:?}"));
            }
            sigterms += 1;
            launch = l;
        } else {
            launch = server.kill9();
            kills += 1;
        }
        phases += 1;
    }
    let server = ServerProcess::start(launch);
    let stored = server.stats()["scans"].as_u64().unwrap();
    assert!(stored >= acked_all.len() as u64);
    let (status, _) = server.sigterm(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()));
    let exact = verify_offline(&data, &acked_all, engine::DEFAULT_RETENTION_DAYS);
    eprintln!(
        "reliability_soak seed={seed}: {secs} s, {phases} phases, {sigterms} SIGTERM + {kills} \
         kill -9 restarts, {} scans acknowledged ({exact} stored), {} reads/traces; RSS {}",
        acked_all.len(),
        reads.load(Ordering::Relaxed),
        rss_report.join(", ")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
