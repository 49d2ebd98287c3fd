//! Crash reliability of the real `checkin-server` binary: `kill -9` at seeded moments during
//! concurrent ingestion (several writer threads; single objects, JSON arrays and NDJSON), at the
//! moment a segment rolls over, and in the middle of a retention purge; after every restart each
//! acknowledged scan must be served (`/v1/stats` and `GET /v1/persons/{id}/visits`), and at the
//! end an engine opened on the same directory must give every acknowledged person exactly the
//! visits their acknowledged scans define. Also: a second server on the same data directory
//! refuses to start.
//!
//! Seeds: `CHECKIN_TEST_SEED` overrides the default; the seed and kill points are printed.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use checkin_tests::*;

const VENUES: usize = 10;
const WRITERS: usize = 4;

/// Checks over HTTP that the server serves every acknowledged scan: the stored count covers
/// them, and a seeded sample of persons has exactly the expected visits.
fn check_served(server: &ServerProcess, acked: &[Scan], rng: &mut Rng, sample: usize) {
    let stats = server.stats();
    let stored = stats["scans"].as_u64().unwrap();
    assert!(
        stored >= acked.len() as u64,
        "after restart /v1/stats scans = {stored} < {} acknowledged",
        acked.len()
    );
    let persons: Vec<(String, Vec<Scan>)> = by_person(acked).into_iter().collect();
    for _ in 0..sample.min(persons.len()) {
        let (p, scans) = &persons[rng.range(0, persons.len() as u64) as usize];
        let want = expected_visits(scans, engine::DEFAULT_STAY_S as i64);
        let got = person_visits(server.addr, p);
        assert_eq!(
            got.as_ref(),
            Some(&want),
            "visits of acknowledged person {p}"
        );
    }
}

#[test]
fn kill9_during_concurrent_ingestion_loses_no_acknowledged_scan() {
    let seed = seed(0xC0FFEE);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let small = small_segments_supported();
    let mut launch = Launch::new(&data);
    let mut acked_all: Vec<Scan> = Vec::new();
    let mut sent_all = 0u64;
    let rounds = 6;
    let mut kill_log = Vec::new();
    for round in 0..rounds {
        let server = ServerProcess::start(launch.clone());
        if round == 0 {
            register_venues(server.addr, VENUES);
        } else {
            // Everything acknowledged before every earlier kill is still there.
            check_served(&server, &acked_all, &mut rng, 40);
            let log = server.log_text();
            assert!(
                log.contains("recovered the store"),
                "no recovery line: {log}"
            );
        }
        let ingest = Ingest::start(
            server.addr,
            &format!("c{round}"),
            WRITERS,
            VENUES,
            seed ^ round,
            (600, 3 * 86_400),
        );
        // Wait for the first acknowledgement, then a seeded delay; the last round waits for a
        // segment rollover instead and kills at the instant the new segment file appears.
        let deadline = Instant::now() + Duration::from_secs(30);
        while ingest.acked_len() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let what = if round == rounds - 1 && small {
            let before = segments(&data).len();
            while segments(&data).len() == before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(200));
            }
            format!("at rollover to segment {}", segments(&data).len())
        } else {
            let ms = rng.range(20, 1200);
            std::thread::sleep(Duration::from_millis(ms));
            format!("{ms} ms after the first ack")
        };
        launch = server.kill9();
        let sent = ingest.sent.load(std::sync::atomic::Ordering::Relaxed);
        let (acked, anomalies) = ingest.finish();
        assert!(anomalies.is_empty(), "unexpected answers: {anomalies:?}");
        kill_log.push(format!(
            "round {round}: kill -9 {what}; {} acked of {sent} sent",
            acked.len()
        ));
        sent_all += sent;
        acked_all.extend(acked);
    }
    // A last restart: everything is served, then a clean stop.
    let server = ServerProcess::start(launch.clone());
    check_served(&server, &acked_all, &mut rng, 200);
    let served = server.stats()["scans"].as_u64().unwrap();
    assert!(served <= sent_all, "{served} stored > {sent_all} ever sent");
    let (status, _) = server.sigterm(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM exit: {status:?}"
    );
    let stored = verify_offline(&data, &acked_all, engine::DEFAULT_RETENTION_DAYS);
    eprintln!(
        "reliability_crash seed={seed}: {rounds} kills survived, {} scans acknowledged \
         ({sent_all} sent, {stored} stored), {} segments; small segments: {small}\n  {}",
        acked_all.len(),
        segments(&data).len(),
        kill_log.join("\n  ")
    );
    assert!(!acked_all.is_empty());
    if small {
        assert!(
            segments(&data).len() > 1,
            "no rollover happened with 64 KiB segments"
        );
    }
}

#[test]
fn kill9_during_retention_purge_keeps_recent_acknowledged_scans() {
    if !small_segments_supported() {
        skip(
            "kill9_during_retention_purge: checkin-server does not honour \
             CHECKIN_SEGMENT_BYTES, so closed old segments would need 64 MiB of scans each",
        );
        return;
    }
    let seed = seed(0xBEEF);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 1. Old scans (3 to 4 days old) fill several segments under the default retention.
    let server = ServerProcess::start(Launch::new(&data));
    register_venues(server.addr, VENUES);
    let ingest = Ingest::start(
        server.addr,
        "old",
        2,
        VENUES,
        seed,
        (3 * 86_400, 4 * 86_400),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while segments(&data).len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (old, anomalies) = ingest.finish();
    assert!(anomalies.is_empty(), "{anomalies:?}");
    // Recent scans, so that the old segments are closed and the active one is recent.
    let ingest = Ingest::start(server.addr, "new0", 2, VENUES, seed + 1, (600, 86_400));
    std::thread::sleep(Duration::from_millis(300));
    let before = segments(&data).len();
    while segments(&data).len() == before && Instant::now() < deadline + Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (mut recent, anomalies) = ingest.finish();
    assert!(anomalies.is_empty(), "{anomalies:?}");
    let (status, launch) = server.sigterm(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM exit {status:?}"
    );
    let segs_before = segments(&data).len();
    assert!(segs_before >= 4, "only {segs_before} segments");

    // 2. Restart with a 2-day retention: the old segments are purged by the first retention
    // pass (about 60 s after start). Keep ingesting and kill -9 the instant a segment goes.
    let launch = launch.arg("--retention-days").arg("2");
    let server = ServerProcess::start(launch.clone());
    // Paced: the wait is about a minute, and the point is the kill, not the volume.
    let ingest = Ingest::start_paced(
        server.addr,
        "new1",
        2,
        VENUES,
        seed + 2,
        (600, 86_400),
        Duration::from_millis(20),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = segments(&data).first().cloned().unwrap();
    while first.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(500));
    }
    let purging = !first.exists();
    server.kill9();
    let (acked, anomalies) = ingest.finish();
    assert!(anomalies.is_empty(), "{anomalies:?}");
    assert!(purging, "no retention purge within 120 s");
    recent.extend(acked);

    // 3. Restart: every recent acknowledged scan is served, the expired ones are not.
    let server = ServerProcess::start(launch);
    check_served(&server, &recent, &mut rng, 100);
    for p in by_person(&old).keys().take(20) {
        assert_eq!(
            person_visits(server.addr, p),
            None,
            "expired {p} still served"
        );
    }
    let (status, _) = server.sigterm(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()));
    let stored = verify_offline(&data, &recent, 2);
    eprintln!(
        "reliability_crash purge seed={seed}: {} old scans expired over {segs_before} segments, \
         {} recent acknowledged scans survived kill -9 mid-purge ({stored} stored)",
        old.len(),
        recent.len()
    );
}

#[test]
fn second_server_on_the_same_data_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = ServerProcess::start(Launch::new(&data));
    register_venues(first.addr, 1);
    let (mut child, log, start) = spawn_server(&Launch::new(&data), free_port());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the second server is still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = read_from(&log, start);
    assert!(!status.success(), "second server exited {status}");
    assert!(
        text.contains("locked") && text.contains("another"),
        "no clear message: {text}"
    );
    // The first one is unharmed.
    assert_eq!(first.get("/healthz").status, 200);
    assert_eq!(first.stats()["venues"], 1);
}
