//! The connection lifecycle: graceful shutdown loses no acknowledged scan and finishes in-flight
//! requests, the connection limit answers 503, slow or half-sent requests time out without
//! blocking others, and oversized bodies are refused without being read to the end.
#![allow(clippy::unwrap_used)]

mod api_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::ServerOptions;
use api_support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads from a raw connection until the server closes it (or `timeout`); returns what came.
async fn read_until_close(stream: &mut TcpStream, timeout: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// Like `send`, but a failed connection or request is `None` (the server may be going away).
async fn try_post(addr: SocketAddr, body: String) -> Option<(u16, Value)> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .ok()?;
    tokio::spawn(conn);
    let req = hyper::Request::post("/v1/scans")
        .header("host", "x")
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, serde_json::from_slice(&body).ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_loses_no_acknowledged_scan() {
    let mut s = Server::start().await;
    s.venues(&["V1"]).await;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..6 {
        let addr = s.addr;
        let acked = acked.clone();
        clients.push(tokio::spawn(async move {
            for b in 0.. {
                let persons: Vec<String> = (0..200).map(|i| format!("c{c}b{b}i{i}")).collect();
                let body: Vec<Value> = persons
                    .iter()
                    .map(|p| scan(p, "V1", T0 - 60, "in"))
                    .collect();
                match try_post(addr, Value::Array(body).to_string()).await {
                    Some((200, v)) => {
                        assert_eq!(v["accepted"], 200);
                        acked.lock().unwrap().extend(persons);
                    }
                    Some((503, _)) | None => return,
                    Some((status, v)) => panic!("unexpected {status}: {v}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.shutdown().await.unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "no batch was acknowledged before shutdown"
    );

    // Reopen the same directory: every acknowledged scan is there.
    let (_, dir) = s.stop().await;
    let clock = Arc::new(engine::ManualClock::new(T0));
    let engine = open_engine(dir.path(), &clock, &Opts::default());
    let stats = engine.stats();
    assert!(stats.scans >= acked.len() as u64);
    for p in &acked {
        let visits = engine.visits(p, 0, T0 + 1);
        assert!(
            visits.is_some_and(|v| v.len() == 1),
            "acknowledged scan of {p} lost"
        );
    }
    engine.shutdown().unwrap();
}

#[tokio::test]
async fn shutdown_finishes_a_request_in_flight() {
    let mut s = Server::start().await;
    s.venues(&["V1"]).await;
    let body = json!([scan("late", "V1", T0 - 1, "in")]).to_string();
    let (head, tail) = body.split_at(10);
    let tail = tail.to_owned();
    let mut raw = TcpStream::connect(s.addr).await.unwrap();
    raw.write_all(
        format!(
            "POST /v1/scans HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{head}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = s.addr;
    let finish = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        raw.write_all(tail.as_bytes()).await.unwrap();
        read_until_close(&mut raw, Duration::from_secs(5)).await
    });
    s.shutdown().await.unwrap();
    let (resp, _) = finish.await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("{\"accepted\":1,\"rejected\":[]}"), "{resp}");
    // New connections are refused once shut down.
    assert!(TcpStream::connect(addr).await.is_err());
    let (_, dir) = s.stop().await;
    let clock = Arc::new(engine::ManualClock::new(T0));
    let engine = open_engine(dir.path(), &clock, &Opts::default());
    assert!(engine.visits("late", 0, T0 + 1).is_some());
    engine.shutdown().unwrap();
}

#[tokio::test]
async fn the_connection_limit_answers_503() {
    let s = Server::start_with(Opts {
        options: ServerOptions {
            max_connections: 2,
            ..ServerOptions::default()
        },
        ..Opts::default()
    })
    .await;
    let idle1 = TcpStream::connect(s.addr).await.unwrap();
    let idle2 = TcpStream::connect(s.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = s.get("/healthz").await;
    let v = r.assert_problem(503);
    assert!(v["detail"].as_str().unwrap().contains("connection limit"));
    assert!(r.header("retry-after").is_some());
    drop(idle1);
    drop(idle2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn a_half_sent_request_head_times_out_without_blocking_others() {
    let s = Server::start_with(Opts {
        options: ServerOptions {
            header_read_timeout: Duration::from_millis(300),
            ..ServerOptions::default()
        },
        ..Opts::default()
    })
    .await;
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    assert_eq!(s.get("/healthz").await.status, 200);
    let (_, closed) = read_until_close(&mut slow, Duration::from_secs(3)).await;
    assert!(closed, "the server kept a half-sent request open");
}

#[tokio::test]
async fn a_stalled_body_is_answered_408() {
    let s = Server::start_with(Opts {
        options: ServerOptions {
            body_idle_timeout: Duration::from_millis(300),
            ..ServerOptions::default()
        },
        ..Opts::default()
    })
    .await;
    s.venues(&["V1"]).await;
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"POST /v1/scans HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n[{\"per")
        .await
        .unwrap();
    assert_eq!(s.get("/healthz").await.status, 200);
    let (resp, closed) = read_until_close(&mut slow, Duration::from_secs(3)).await;
    assert!(closed);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("application/problem+json"));
    assert_eq!(s.get("/v1/stats").await.json()["scans"], 0);
}

#[tokio::test]
async fn an_oversized_content_length_is_413_before_the_body_is_read() {
    let s = Server::start().await;
    let mut raw = TcpStream::connect(s.addr).await.unwrap();
    raw.write_all(
        b"POST /v1/scans HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-ndjson\r\ncontent-length: 17000000\r\n\r\n{\"person\":\"p\"}\n",
    )
    .await
    .unwrap();
    let (resp, closed) = read_until_close(&mut raw, Duration::from_secs(3)).await;
    assert!(closed);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("application/problem+json"));
}

#[tokio::test]
async fn an_endless_chunked_body_is_cut_off_at_16_mib() {
    let s = Server::start().await;
    let raw = TcpStream::connect(s.addr).await.unwrap();
    let (mut rd, mut wr) = raw.into_split();
    wr.write_all(b"POST /v1/scans HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        let chunk = vec![b' '; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..64 {
            if wr.write_all(b"100000\r\n").await.is_err()
                || wr.write_all(&chunk).await.is_err()
                || wr.write_all(b"\r\n").await.is_err()
            {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    let sent = writer.await.unwrap();
    assert!(sent < 64 << 20, "the server read the whole 64 MiB");
}

#[tokio::test]
async fn concurrent_batches_are_all_acknowledged() {
    let s = Server::start().await;
    s.venues(&["V1", "V2"]).await;
    let mut tasks = Vec::new();
    for c in 0..8 {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let body: Vec<Value> = (0..500)
                .map(|i| {
                    scan(
                        &format!("c{c}i{i}"),
                        if i % 2 == 0 { "V1" } else { "V2" },
                        T0 - 10,
                        "in",
                    )
                })
                .collect();
            try_post(addr, Value::Array(body).to_string()).await
        }));
    }
    for t in tasks {
        let (status, v) = t.await.unwrap().unwrap();
        assert_eq!(status, 200);
        assert_eq!(v["accepted"], 500);
    }
    assert_eq!(s.get("/v1/stats").await.json()["scans"], 4000);
    assert_eq!(
        s.get("/v1/venues/V1/occupancy").await.json()["present"],
        2000
    );
}
