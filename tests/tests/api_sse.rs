//! `GET /v1/venues/{id}/events`: live delivery, `?last=N` replay, `Last-Event-ID` resume without
//! a gap, keep-alives, slow subscribers that never slow ingestion, and shutdown ending feeds.
#![allow(clippy::unwrap_used)]

mod api_support;

use std::time::Duration;

use api::ServerOptions;
use api_support::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_scan_posted_after_subscribing_arrives_live() {
    let s = Server::start().await;
    s.venues(&["V1", "V2"]).await;
    let mut feed = Stream::open(s.addr, "/v1/venues/V1/events", &[]).await;
    assert_eq!(feed.status, 200);
    assert_eq!(
        feed.headers.get("content-type").unwrap(),
        "text/event-stream"
    );
    assert!(feed.wait_for(": connected", WAIT).await);

    s.scans(&json!([
        scan("p2", "V2", T0 - 5, "in"),
        scan("p1", "V1", T0 - 10, "in"),
        scan("p1", "V1", T0 - 1, "out"),
    ]))
    .await;
    assert!(
        feed.wait_for("\"action\":\"out\"", WAIT).await,
        "{}",
        feed.buf
    );
    let events = feed.events();
    assert_eq!(events.len(), 2, "{}", feed.buf);
    assert_eq!(events[0]["person"], "p1");
    assert_eq!(events[0]["venue"], "V1");
    assert_eq!(events[0]["ts"], T0 - 10);
    assert_eq!(events[0]["action"], "in");
    assert!(events[0]["seq"].as_u64().unwrap() < events[1]["seq"].as_u64().unwrap());
    // Each event's id is its seq.
    let ids: Vec<u64> = feed
        .buf
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|i| i.parse().unwrap())
        .collect();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(ids, seqs);
}

async fn post_n(s: &Server, venue: &str, n: usize, first_ts: i64) {
    let batch: Vec<Value> = (0..n)
        .map(|i| scan(&format!("p{i}"), venue, first_ts + i as i64, "in"))
        .collect();
    let r = s.scans(&Value::Array(batch)).await;
    assert_eq!(r.json()["accepted"], n);
}

#[tokio::test]
async fn last_n_replays_then_streams_live() {
    let s = Server::start().await;
    s.venues(&["V1"]).await;
    post_n(&s, "V1", 5, T0 - 100).await;
    let mut feed = Stream::open(s.addr, "/v1/venues/V1/events?last=2", &[]).await;
    assert!(
        feed.wait_for("\"person\":\"p4\"", WAIT).await,
        "{}",
        feed.buf
    );
    let replay: Vec<Value> = feed.events();
    let persons: Vec<&str> = replay
        .iter()
        .map(|e| e["person"].as_str().unwrap())
        .collect();
    assert_eq!(persons, vec!["p3", "p4"]);
    s.scans(&json!([scan("live", "V1", T0, "in")])).await;
    assert!(feed.wait_for("\"person\":\"live\"", WAIT).await);
    assert_eq!(feed.events().len(), 3);
}

#[tokio::test]
async fn last_event_id_resumes_without_a_gap() {
    let s = Server::start().await;
    s.venues(&["V1"]).await;
    let mut first = Stream::open(s.addr, "/v1/venues/V1/events", &[]).await;
    assert!(first.wait_for(": connected", WAIT).await);
    post_n(&s, "V1", 3, T0 - 100).await;
    assert!(first.wait_for("\"person\":\"p2\"", WAIT).await);
    let seen = first.events();
    let resume_from = seen[0]["seq"].as_u64().unwrap().to_string();
    drop(first);

    // Scans accepted while disconnected.
    s.scans(&json!([scan("while-away", "V1", T0 - 1, "in")]))
        .await;
    let mut again = Stream::open(
        s.addr,
        "/v1/venues/V1/events",
        &[("last-event-id", &resume_from)],
    )
    .await;
    assert!(again.wait_for("while-away", WAIT).await, "{}", again.buf);
    s.scans(&json!([scan("after", "V1", T0, "in")])).await;
    assert!(again.wait_for("\"person\":\"after\"", WAIT).await);
    let persons: Vec<String> = again
        .events()
        .iter()
        .map(|e| e["person"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(persons, vec!["p1", "p2", "while-away", "after"]);
    assert!(!again.buf.contains("missed"));
}

#[tokio::test]
async fn feed_errors() {
    let s = Server::start().await;
    s.venues(&["V1"]).await;
    s.get("/v1/venues/NOPE/events").await.assert_problem(404);
    for q in ["last=abc", "last=-1", "last=10001"] {
        s.get(&format!("/v1/venues/V1/events?{q}"))
            .await
            .assert_problem(400);
    }
    let r = s
        .send(
            "GET",
            "/v1/venues/V1/events",
            None,
            &[("last-event-id", "yesterday")],
            bytes::Bytes::new(),
        )
        .await;
    r.assert_problem(400);
}

#[tokio::test]
async fn keep_alive_comments_flow_and_shutdown_ends_feeds() {
    let mut s = Server::start_with(Opts {
        options: ServerOptions {
            sse_keepalive: Duration::from_millis(100),
            ..ServerOptions::default()
        },
        ..Opts::default()
    })
    .await;
    s.venues(&["V1"]).await;
    let mut feed = Stream::open(s.addr, "/v1/venues/V1/events", &[]).await;
    assert!(feed.wait_for(": keep-alive", WAIT).await);
    let started = std::time::Instant::now();
    s.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(feed.wait_end(WAIT).await);
}

#[tokio::test]
async fn a_stalled_subscriber_never_slows_ingestion() {
    let s = Server::start().await;
    s.venues(&["V1"]).await;
    // Subscribe and never read: the socket buffers fill, then the feed's channel lags.
    let mut stalled = Stream::open_small_buffer(s.addr, "/v1/venues/V1/events").await;
    assert!(stalled.wait_for(": connected", WAIT).await);
    // If a stalled feed could hold up the engine's sync thread, this would hang: bound it.
    let ingest = async {
        for b in 0..100 {
            let batch: Vec<Value> = (0..1000)
                .map(|i| scan(&format!("p{b}x{i}"), "V1", T0 - 1000 + i, "in"))
                .collect();
            let r = s.scans(&Value::Array(batch)).await;
            assert_eq!(r.json()["accepted"], 1000);
        }
    };
    tokio::time::timeout(Duration::from_secs(120), ingest)
        .await
        .expect("ingestion stalled behind a subscriber that does not read");
    // Now read: the feed says it dropped events rather than blocking the writer.
    assert!(
        stalled
            .wait_for(": dropped ", Duration::from_secs(20))
            .await,
        "read {} bytes",
        stalled.buf.len()
    );
}
