//! The load generator against the real `checkin-server` binary: registers the generated venues,
//! ingests NDJSON batches and single scans, traces, and the server's own counts agree with what
//! the generator's report says was acknowledged.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use checkin_loadtest::gen::Params;
use checkin_loadtest::load::{Common, DepthMode, Persons, Source};
use checkin_loadtest::net::Target;
use checkin_loadtest::{run_ingest, run_trace, IngestOptions, TraceOptions};
use checkin_tests::{Launch, ServerProcess};

fn common(server: &ServerProcess, connections: usize) -> Common {
    let target = Target::parse(&format!("http://{}", server.addr)).unwrap();
    let mut c = Common::new(target);
    c.connections = connections;
    c.duration = Some(Duration::from_secs(60));
    c
}

/// Failed trace requests other than 404 (a person the generator never used).
fn errors_other_than_404(report: &checkin_loadtest::Report) -> u64 {
    report
        .errors_by_status
        .iter()
        .filter(|(status, _)| status.as_str() != "404")
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn generated_traffic_is_acknowledged_stored_and_traceable() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(Launch::new(&dir.path().join("data")));
    let params = Params {
        persons: 500,
        venues: 50,
        scans: 6_000,
        end_ts: checkin_tests::now(),
        seed: 7,
        ..Params::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Batches of 500 over 4 connections, then single scans over 2 connections.
    let batched = rt
        .block_on(run_ingest(IngestOptions {
            common: common(&server, 4),
            source: Source::Generate(params.clone()),
            batch: 500,
            scans: Some(5_000),
            register_venues: true,
            venue_chunk: 20,
        }))
        .unwrap();
    assert_eq!(batched.failed_requests(), 0, "{batched}");
    assert_eq!(batched.venues_registered, Some(50));
    assert_eq!(batched.scans_sent, 5_000);
    assert_eq!(
        batched.scans_accepted, 5_000,
        "every generated scan is valid: {batched}"
    );
    assert!(batched.latency.count > 0);

    let single = rt
        .block_on(run_ingest(IngestOptions {
            common: common(&server, 2),
            source: Source::Generate(Params {
                seed: 8,
                ..params.clone()
            }),
            batch: 1,
            scans: Some(300),
            register_venues: false,
            venue_chunk: 20,
        }))
        .unwrap();
    assert_eq!(single.failed_requests(), 0, "{single}");
    assert_eq!(single.requests, 300);

    // The generator sends exact duplicates on purpose: stored = accepted minus duplicates, and
    // never more than accepted.
    let stats = server.stats();
    let stored = stats["scans"].as_u64().unwrap();
    let acknowledged = batched.scans_accepted + single.scans_accepted;
    assert!(
        stored <= acknowledged && stored >= acknowledged * 9 / 10,
        "{stored} of {acknowledged}"
    );
    assert_eq!(stats["venues"].as_u64(), Some(50));

    let traces = rt
        .block_on(run_trace(TraceOptions {
            common: common(&server, 2),
            persons: Persons::Generated {
                persons: params.persons,
                venues: params.venues,
            },
            depth: DepthMode::Mixed,
            requests: Some(200),
            seed: 3,
            from: None,
            to: None,
            min_overlap_s: None,
        }))
        .unwrap();
    // Persons the generator never used answer 404; everything else must be 200.
    assert_eq!(errors_other_than_404(&traces), 0, "{traces}");
    assert!(traces.requests_ok > 100, "{traces}");

    // The same over one HTTP/2 connection with 8 streams in flight (`--http2`).
    let mut over_h2 = common(&server, 8);
    over_h2.http2 = true;
    let h2_ingest = rt
        .block_on(run_ingest(IngestOptions {
            common: over_h2.clone(),
            source: Source::Generate(Params {
                seed: 9,
                ..params.clone()
            }),
            batch: 100,
            scans: Some(2_000),
            register_venues: false,
            venue_chunk: 20,
        }))
        .unwrap();
    assert!(h2_ingest.http2);
    assert_eq!(h2_ingest.failed_requests(), 0, "{h2_ingest}");
    assert_eq!(h2_ingest.scans_accepted, 2_000, "{h2_ingest}");
    let after = server.stats()["scans"].as_u64().unwrap();
    assert!(
        after > stored,
        "HTTP/2 scans are stored: {after} after {stored}"
    );
    let h2_traces = rt
        .block_on(run_trace(TraceOptions {
            common: over_h2,
            persons: Persons::Generated {
                persons: params.persons,
                venues: params.venues,
            },
            depth: DepthMode::Mixed,
            requests: Some(200),
            seed: 4,
            from: None,
            to: None,
            min_overlap_s: None,
        }))
        .unwrap();
    assert_eq!(errors_other_than_404(&h2_traces), 0, "{h2_traces}");
    assert!(h2_traces.requests_ok > 100, "{h2_traces}");
    assert!(h2_traces
        .to_string()
        .contains("one HTTP/2 connection, 8 concurrent stream(s)"));
}
