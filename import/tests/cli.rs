//! The `checkin-import` binary: exit status 1 when the server cannot be reached or refuses,
//! retries of 503 (with `Retry-After`) and of dropped connections until the chunk is answered,
//! `--fail-on-reject` (status 2), the JSON report, and `generate` (exact row count, the same
//! bytes for the same seed, an area tree). The server here is a small mock on loopback that
//! records what it was sent; the import against the real server is in `tests/import_e2e.rs`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_checkin-import"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

/// A mock server: answers `/healthz` 200; `POST /v1/vaccinations` with the scripted statuses
/// first (`0` = close the connection without answering), then 200 rejecting every row whose
/// person contains `bad`. Records each POST body.
struct Mock {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

fn mock(script: Vec<u16>) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(script));
    {
        let bodies = bodies.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let bodies = bodies.clone();
                let script = script.clone();
                std::thread::spawn(move || serve(conn, &bodies, &script));
            }
        });
    }
    Mock { url, bodies }
}

fn serve(conn: TcpStream, bodies: &Mutex<Vec<String>>, script: &Mutex<Vec<u16>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let (status, answer) = if head.starts_with("GET /healthz") {
            (200, r#"{"status":"ok"}"#.to_string())
        } else {
            let next = {
                let mut s = script.lock().unwrap();
                (!s.is_empty()).then(|| s.remove(0))
            };
            match next {
                Some(0) => return,
                Some(s) => (
                    s,
                    r#"{"type":"x","title":"x","status":0,"detail":"scripted"}"#.into(),
                ),
                None => {
                    let text = String::from_utf8(body).unwrap();
                    let rows: Vec<&str> = text.lines().skip(1).collect();
                    let rejected: Vec<String> = rows
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.contains("bad"))
                        .map(|(i, _)| format!(r#"{{"index":{i},"reason":"invalid_person"}}"#))
                        .collect();
                    let answer = format!(
                        r#"{{"accepted":{},"rejected":[{}]}}"#,
                        rows.len() - rejected.len(),
                        rejected.join(",")
                    );
                    bodies.lock().unwrap().push(text);
                    (200, answer)
                }
            }
        };
        let reason = match status {
            200 => "OK",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let extra = if status == 503 {
            "Retry-After: 0\r\n"
        } else {
            ""
        };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn write_file(dir: &Path, rows: usize) -> std::path::PathBuf {
    let path = dir.join("doses.csv");
    let mut text = String::from("person,dose,vaccine,administered_at\n");
    for i in 0..rows {
        let person = if i % 10 == 3 {
            format!("bad{i}")
        } else {
            format!("p{i}")
        };
        text.push_str(&format!("{person},1,Abdala,1700000000\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_unreachable_server_is_exit_status_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), 5);
    // A port nobody listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = run(bin().arg(&file).args([
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--attempts",
        "2",
        "-q",
    ]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not reach the server"), "{err}");
    // A missing file and a bad URL too.
    let out = run(bin().arg(dir.path().join("none.csv")).args(["-q"]));
    assert_eq!(out.status.code(), Some(1));
    let out = run(bin()
        .arg(&file)
        .args(["--url", "https://example.invalid", "-q"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --url"));
}

#[test]
fn retries_503_and_dropped_connections_then_reports() {
    let m = mock(vec![503, 0, 503]);
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), 25);
    let out = run(bin().arg(&file).args([
        "--url",
        &m.url,
        "--chunk",
        "10",
        "--concurrency",
        "1",
        "--json",
        "-q",
    ]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows"], 25);
    assert_eq!(report["chunks"], 3);
    assert_eq!(report["accepted"], 22);
    assert_eq!(report["rejected"], 3);
    assert_eq!(report["by_reason"]["invalid_person"], 3);
    let rows: Vec<(u64, u64)> = report["first_rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["row"].as_u64().unwrap(), r["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(rows, [(3, 5), (13, 15), (23, 25)]);
    // Three chunks, each with the header, in order.
    let bodies = m.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3);
    for (i, b) in bodies.iter().enumerate() {
        assert!(
            b.starts_with("person,dose,vaccine,administered_at\n"),
            "{b}"
        );
        assert!(b.contains(&format!("p{},1,Abdala", i * 10)), "{b}");
    }
    // With --fail-on-reject the same import is status 2; the text report lists the rows.
    let m = mock(vec![]);
    let out =
        run(bin()
            .arg(&file)
            .args(["--url", &m.url, "--fail-on-reject", "--list", "2", "-q"]));
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("  row 3 (line 5): invalid_person"), "{text}");
    assert!(text.contains("1 more not listed"), "{text}");
}

#[test]
fn a_server_that_keeps_refusing_stops_the_import() {
    // 503 more often than the attempts allow: status 1, naming the rows not imported.
    let m = mock(vec![503; 10]);
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), 5);
    let out = run(bin()
        .arg(&file)
        .args(["--url", &m.url, "--attempts", "3", "-q"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 attempts"));
    // A 400 is not retried.
    let m = mock(vec![400]);
    let out = run(bin().arg(&file).args(["--url", &m.url, "-q"]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused rows 0..=4: HTTP 400: scripted"),
        "{err}"
    );
    assert!(m.bodies.lock().unwrap().is_empty());
}

#[test]
fn generate_is_exact_and_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let gen = |name: &str, seed: &str| {
        let path = dir.path().join(name);
        let areas = dir.path().join(format!("{name}.areas.json"));
        let out = run(bin()
            .args([
                "generate",
                "--rows",
                "3000",
                "--seed",
                seed,
                "--now",
                "1800000000",
            ])
            .arg("--out")
            .arg(&path)
            .arg("--areas-out")
            .arg(&areas));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
        (
            std::fs::read(&path).unwrap(),
            expected,
            std::fs::read(&areas).unwrap(),
        )
    };
    let (a, ea, areas) = gen("a.csv", "5");
    let (b, _, _) = gen("b.csv", "5");
    let (c, _, _) = gen("c.csv", "6");
    assert_eq!(a, b);
    assert_ne!(a, c);
    let rows = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(a.as_slice())
        .records()
        .count();
    assert_eq!(rows, 3000);
    assert_eq!(ea["rows"], 3000);
    let areas: serde_json::Value = serde_json::from_slice(&areas).unwrap();
    assert_eq!(areas[0]["id"], "ST");
    assert!(areas.as_array().unwrap().len() > 50);
}
