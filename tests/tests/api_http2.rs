//! Cleartext HTTP/2 with prior knowledge on the same port as HTTP/1.1: one connection carries
//! many requests at once and gets the same answers, errors and audit entries as HTTP/1.1, and
//! HTTP/1.1 clients on the same port are unaffected.
#![allow(clippy::unwrap_used)]

mod api_support;

use std::net::SocketAddr;

use api_support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

async fn connect_h2(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Posts JSON on a stream of the shared connection: (status, content type, body).
async fn post_h2(
    mut sender: SendRequest<Full<Bytes>>,
    path: &str,
    body: Value,
) -> (u16, String, Value) {
    sender.ready().await.unwrap();
    let req = hyper::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn one_http2_connection_carries_concurrent_scans_and_traces() {
    let server = Server::start().await;
    server.venues(&["V1"]).await;
    let sender = connect_h2(server.addr).await;

    // 50 scans in flight at once, one stream each, all at V1 an hour ago.
    let mut scans = JoinSet::new();
    for i in 0..50 {
        let scan = json!({"person": format!("p{i:02}"), "venue": "V1", "ts": T0 - 3600});
        scans.spawn(post_h2(sender.clone(), "/v1/scans", scan));
    }
    while let Some(answer) = scans.join_next().await {
        let (status, _, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"accepted": 1, "rejected": []}));
    }
    // Over HTTP/1.1, on the same port: every scan is stored.
    let stats = server.get("/v1/stats").await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json()["scans"], 50);

    // Ten traces in flight at once: everyone was together for the last hour (default stay 2 h,
    // clipped at now), so each case has the 49 others as F1 with 3600 s of exposure.
    let mut traces = JoinSet::new();
    for i in 0..10 {
        let req = json!({"person": format!("p{i:02}"), "depth": 1});
        traces.spawn(post_h2(sender.clone(), "/v1/trace", req));
    }
    let mut cases = Vec::new();
    while let Some(answer) = traces.join_next().await {
        let (status, _, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        let f1 = body["f1"].as_array().unwrap();
        assert_eq!(f1.len(), 49, "{body}");
        assert!(f1
            .iter()
            .all(|c| c["exposure_s"] == 3600 && c["venues"] == json!(["V1"])));
        assert!(f1.iter().all(|c| c["person"] != body["case"]));
        cases.push(body["case"].as_str().unwrap().to_owned());
    }
    cases.sort();
    assert_eq!(
        cases,
        (0..10).map(|i| format!("p{i:02}")).collect::<Vec<_>>()
    );

    // Errors are the same problem+json over HTTP/2.
    let (status, ctype, body) = post_h2(
        sender.clone(),
        "/v1/trace",
        json!({"person": "p00", "depth": 3}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(ctype.starts_with("application/problem+json"), "{ctype}");
    assert_eq!(body["status"], 400);

    // Every trace made over HTTP/2 is in the audit log.
    let audit = server.get("/v1/audit").await;
    assert_eq!(audit.status, 200);
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 10, "{entries:?}");
    assert!(entries.iter().all(|e| e["action"] == "/v1/trace"));
}

#[tokio::test]
async fn an_http2_connection_over_the_limit_gets_503_problems() {
    let server = Server::start_with(Opts {
        options: api::ServerOptions {
            max_connections: 1,
            ..api::ServerOptions::default()
        },
        ..Opts::default()
    })
    .await;
    // The one allowed connection, held open.
    let held = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let sender = connect_h2(server.addr).await;
    let (status, ctype, body) =
        post_h2(sender, "/v1/trace", json!({"person": "p00", "depth": 1})).await;
    assert_eq!(status, 503, "{body}");
    assert!(ctype.starts_with("application/problem+json"), "{ctype}");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("connection limit"));
    drop(held);
}

#[tokio::test]
async fn the_live_feed_streams_over_http2() {
    let server = Server::start().await;
    server.venues(&["V1"]).await;
    let mut sender = connect_h2(server.addr).await;
    sender.ready().await.unwrap();
    let req = hyper::Request::get("http://localhost/v1/venues/V1/events")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let mut body = resp.into_body();

    // A scan posted over HTTP/1.1 after subscribing arrives as an event on the HTTP/2 stream.
    let posted = server
        .scans(&json!([{"person": "p1", "venue": "V1", "ts": T0 - 10}]))
        .await;
    assert_eq!(posted.status, 200);
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains("\"person\":\"p1\"") {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("the event arrives within 10 s")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(seen.contains("id: 1"), "{seen}");
}
