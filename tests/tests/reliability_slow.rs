//! Slow and idle clients against the real `checkin-server`: half-sent heads, trickled heads and
//! half-sent bodies time out (head: closed; body: 408 problem+json, nothing stored) without
//! delaying anyone else, and idle connections beyond `--max-connections` are refused with a 503
//! problem+json instead of exhausting the server, which serves again once they go.
//!
//! The server's head and body deadlines are 15 s (`ServerOptions::default()`), so each case
//! waits at most 15 s + a margin; the cases run concurrently.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use checkin_tests::*;

/// Head and body deadlines of the server, plus scheduling margin.
const DEADLINE: Duration = Duration::from_secs(15);
const MARGIN: Duration = Duration::from_secs(10);

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE + MARGIN)).unwrap();
    s
}

/// Reads until the server closes; returns what it sent and how long that took.
fn read_until_closed(mut s: TcpStream, since: Instant) -> (Vec<u8>, Duration) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match http::read_some(&mut s, &mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server kept a stalled connection open: {e}"),
        }
    }
    (buf, since.elapsed())
}

static FAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A well-behaved request must be answered quickly while the slow ones hang.
fn assert_fast(addr: std::net::SocketAddr, what: &str) {
    let t = Instant::now();
    let r = http::request(addr, "GET", "/healthz", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    let b = [Scan {
        person: format!(
            "fast-{}",
            FAST.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
        venue: "V0".into(),
        ts: now() - 10,
        out: false,
    }];
    assert_eq!(post_scans(addr, &b, Framing::Object), Ok(1));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "{what}: a normal request took {:?}",
        t.elapsed()
    );
}

#[test]
fn stalled_heads_and_bodies_time_out_without_blocking_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(Launch::new(&dir.path().join("data")));
    let addr = server.addr;
    register_venues(addr, 1);
    let before = server.stats()["scans"].as_u64().unwrap();
    let started = Instant::now();

    // Half-sent head.
    let mut head = connect(addr);
    head.write_all(b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    // Trickled head: one byte every 400 ms (never completes within the deadline).
    let trickle = std::thread::spawn(move || {
        let mut s = connect(addr);
        let t = Instant::now();
        let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        for b in req.iter() {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(400));
            if t.elapsed() > DEADLINE + MARGIN {
                break;
            }
        }
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        (t.elapsed(), buf)
    });
    // Half-sent body: a scan body that stops after 10 of 1000 bytes.
    let mut body = connect(addr);
    body.write_all(
        b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{\"person\"",
    )
    .unwrap();
    // Half-sent chunked body.
    let mut chunked = connect(addr);
    chunked
        .write_all(b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[{\"pe\r\n")
        .unwrap();

    // Others are served normally meanwhile, repeatedly.
    for i in 0..5 {
        assert_fast(addr, &format!("while stalled #{i}"));
        std::thread::sleep(Duration::from_millis(500));
    }

    let (got, took) = read_until_closed(head, started);
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408"),
        "half-sent head got: {text}"
    );
    assert!(
        took <= DEADLINE + MARGIN,
        "half-sent head held for {took:?}"
    );
    for (name, conn) in [
        ("half-sent body", body),
        ("half-sent chunked body", chunked),
    ] {
        let (got, took) = read_until_closed(conn, started);
        let r = http::parse(&got);
        assert!(
            r.as_ref().is_some_and(|r| r.is_problem(408)),
            "{name}: want a 408 problem, got {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(took <= DEADLINE + MARGIN, "{name} held for {took:?}");
    }
    let (took, got) = trickle.join().unwrap();
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(
        !text.starts_with("HTTP/1.1 200"),
        "a head trickled over {took:?} was served: the head deadline does not bound the total"
    );
    assert!(took <= DEADLINE + MARGIN, "trickled head held for {took:?}");
    assert_fast(addr, "after the stalls");
    // Only the five fast scans and the last one are stored.
    let after = server.stats()["scans"].as_u64().unwrap();
    assert_eq!(after, before + 6, "a half-sent body stored something");
    eprintln!(
        "reliability_slow: 4 stalled connections closed within {:?}; others served meanwhile",
        started.elapsed()
    );
}

#[test]
fn idle_connections_beyond_the_limit_are_refused_with_503() {
    const LIMIT: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        Launch::new(&dir.path().join("data"))
            .arg("--max-connections")
            .arg(LIMIT.to_string()),
    );
    let addr = server.addr;
    register_venues(addr, 1);
    // Fill the limit with idle connections (a request proves each one is counted).
    let mut idle = Vec::new();
    for _ in 0..LIMIT {
        let mut s = connect(addr);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = http::read_some(&mut s, &mut buf).unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "idle connection setup"
        );
        idle.push(s);
    }
    // Beyond the limit: a clear 503 problem, quickly.
    let mut refused = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let r = http::request(addr, "GET", "/healthz", &[], b"");
        match r {
            Ok(r) if r.is_problem(503) => {
                assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                refused += 1;
            }
            other => panic!("connection over the limit got {other:?}"),
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "refusal took {:?}",
            t.elapsed()
        );
    }
    // The held connections still work (keep-alive).
    for s in idle.iter_mut().take(5) {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = http::read_some(s, &mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    // Once they go, new clients are served again.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http::request(addr, "GET", "/healthz", &[], b"").unwrap();
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not served after idle clients left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Many idle connections under the default limit do not slow anyone down.
    let dir2 = tempfile::tempdir().unwrap();
    let server2 = ServerProcess::start(Launch::new(&dir2.path().join("data")));
    register_venues(server2.addr, 1);
    let many: Vec<TcpStream> = (0..500).map(|_| connect(server2.addr)).collect();
    assert_fast(server2.addr, "with 500 idle connections open");
    drop(many);
    eprintln!(
        "reliability_slow: {LIMIT} idle connections held, {refused} over-limit connections \
         refused with 503; 500 idle connections under the default limit"
    );
}
