//! The local cluster of `deploy/local-cluster.sh` (3 NATS servers, 2 shards × 2 replicas, two
//! HTTP nodes) against one single-node `checkin-server` fed the same scans: ingest while a NATS
//! server and a shard replica are killed with `kill -9` and restarted, then check that every
//! acknowledged scan is served (every person's visits equal the single server's) and that
//! occupancy and traces (depth 1 and 2) are equal too.
//!
//! Needs `nats-server` 2.15.x (`.ci/run` installs it from PyPI); without it the test fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `target/<profile>/` of this test executable.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Builds `checkin-server` next to `checkin-shard` (another package's binary is not built by
/// `cargo test` of this one).
fn build_server(dir: &Path) {
    let profile = dir
        .file_name()
        .expect("profile")
        .to_string_lossy()
        .to_string();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "checkin-api", "--bin", "checkin-server"])
        .arg("--manifest-path")
        .arg(repo().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", dir.parent().expect("target"));
    if profile == "release" {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo build");
    assert!(status.success(), "cannot build checkin-server");
}

struct Resp {
    status: u16,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn request(base: &str, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<Resp> {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(payload.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok(Resp { status, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Retries until a 200 (the cluster may answer 503 or drop a connection while a process is
/// down), for up to `for_s` seconds.
fn until_ok(base: &str, method: &str, path: &str, body: Option<&Value>, for_s: u64) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(for_s);
    loop {
        match request(base, method, path, body) {
            Ok(r) if r.status == 200 => return r,
            Ok(r) if r.status == 503 || r.status >= 500 => {}
            Ok(r) => panic!("{method} {path}: {} {}", r.status, r.body),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "{method} {path} did not succeed within {for_s} s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Cluster {
    dir: PathBuf,
    script: PathBuf,
}

impl Cluster {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .env("CHECKIN_BIN_DIR", bin_dir())
            .stderr(Stdio::inherit())
            .output()
            .expect("run deploy/local-cluster.sh");
        assert!(
            out.status.success(),
            "local-cluster.sh {args:?} failed; logs in {}",
            self.dir.display()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn pid(&self, name: &str) -> i32 {
        std::fs::read_to_string(self.dir.join("pids").join(format!("{name}.pid")))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid")
    }

    fn kill9(&self, name: &str) {
        let pid = self.pid(name);
        let ok = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
        // Wait until it is gone, so that `restart` sees it stopped.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}/stat")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
        {
            assert!(Instant::now() < deadline, "{name} did not die");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["stop", &self.dir.to_string_lossy()])
            .status();
    }
}

struct Single(Child);

impl Drop for Single {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
#[ignore = "needs nats-server 2.15.x; not yet in the default run (see docs/cluster.md)"]
fn cluster_survives_kill9_and_equals_a_single_server() {
    let dir = bin_dir();
    build_server(&dir);
    assert!(
        dir.join("checkin-shard").exists(),
        "checkin-shard not built"
    );
    let work = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster {
        dir: work.path().join("cluster"),
        script: repo().join("deploy/local-cluster.sh"),
    };
    let started = Instant::now();
    let out = cluster.run(&["start", &cluster.dir.to_string_lossy()]);
    let urls: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("http://"))
        .map(String::from)
        .collect();
    assert_eq!(urls.len(), 2, "start printed: {out}");
    eprintln!("cluster up in {:?}: {urls:?}", started.elapsed());

    let port = free_port();
    let single_base = format!("http://127.0.0.1:{port}");
    let single = Single(
        Command::new(dir.join("checkin-server"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(work.path().join("single"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the single server"),
    );
    until_ok(&single_base, "GET", "/healthz", None, 60);

    let venues: Vec<Value> = (0..12)
        .map(|i| json!({"id": format!("V{i}"), "name": format!("venue {i}")}))
        .collect();
    until_ok(&urls[0], "POST", "/v1/venues", Some(&json!(venues)), 30);
    until_ok(&single_base, "POST", "/v1/venues", Some(&json!(venues)), 30);

    // Scans well away from any auto check-out at the time of the checks: an early block
    // (3-6 h ago, all closed by now) and a recent one (10-50 min ago, all open for 70+ min).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let persons = 240u64;
    let mut rng = Rng(0x005e_edc1_u64);
    let batches = 40;
    let mut acked = 0usize;
    for b in 0..batches {
        match b {
            8 => cluster.kill9("nats-2"),
            14 => cluster.kill9("shard-0-1"),
            22 => {
                cluster.run(&["restart", &cluster.dir.to_string_lossy(), "nats-2"]);
            }
            28 => {
                cluster.run(&["restart", &cluster.dir.to_string_lossy(), "shard-0-1"]);
            }
            _ => {}
        }
        let scans: Vec<Value> = (0..250)
            .map(|_| {
                let early = rng.below(2) == 0;
                let ts = if early {
                    now - 6 * 3600 + rng.below(3 * 3600) as i64
                } else {
                    now - 50 * 60 + rng.below(40 * 60) as i64
                };
                let action = if rng.below(5) == 0 { "out" } else { "in" };
                json!({
                    "person": format!("p{}", rng.below(persons)),
                    "venue": format!("V{}", rng.below(if early { 12 } else { 6 })),
                    "ts": ts,
                    "action": action,
                })
            })
            .collect();
        let body = json!(scans);
        let node = &urls[b % 2];
        let r = until_ok(node, "POST", "/v1/scans", Some(&body), 60).json();
        assert_eq!(r["rejected"], json!([]), "{r}");
        acked += r["accepted"].as_u64().expect("accepted") as usize;
        let s = until_ok(&single_base, "POST", "/v1/scans", Some(&body), 30).json();
        assert_eq!(s["accepted"], r["accepted"]);
    }
    assert_eq!(acked, batches * 250);
    eprintln!("ingested {acked} scans in {:?}", started.elapsed());

    // The restarted replica must now serve shard 0 alone.
    let until = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(cluster.dir.join("logs/shard-0-1.log"))
        .unwrap_or_default()
        .contains("serving queries")
    {
        assert!(Instant::now() < until, "shard-0-1 did not catch up");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.kill9("shard-0-2");
    let failover = Instant::now();
    until_ok(&urls[0], "GET", "/v1/occupancy?top=1", None, 30);
    eprintln!(
        "shard 0 served by the restarted replica after {:?}",
        failover.elapsed()
    );

    // Every person's visits, from both HTTP nodes, equal the single server's.
    let from = now - 7 * 3600;
    let to = now;
    for p in 0..persons {
        let path = format!("/v1/persons/p{p}/visits?from={from}&to={to}");
        let want = request(&single_base, "GET", &path, None).expect("single");
        let node = &urls[(p % 2) as usize];
        let got = if want.status == 200 {
            until_ok(node, "GET", &path, None, 30)
        } else {
            request(node, "GET", &path, None).expect("cluster")
        };
        assert_eq!(got.status, want.status, "visits of p{p}");
        if want.status == 200 {
            assert_eq!(got.json(), want.json(), "visits of p{p}");
        }
    }

    // Occupancy: the top list and each venue.
    let want = until_ok(&single_base, "GET", "/v1/occupancy?top=100", None, 30).json();
    let got = until_ok(&urls[1], "GET", "/v1/occupancy?top=100", None, 30).json();
    assert_eq!(got, want, "top occupancy");
    for v in 0..12 {
        let path = format!("/v1/venues/V{v}/occupancy");
        let want = until_ok(&single_base, "GET", &path, None, 30).json();
        let got = until_ok(&urls[0], "GET", &path, None, 30).json();
        assert_eq!(got["present"], want["present"], "occupancy of V{v}");
    }

    // Traces, depth 1 and 2, with and without the v2 rules.
    for p in (0..persons).step_by(12) {
        for (depth, min_overlap, linger, min_stay) in [(1, 900, 0, 0), (2, 600, 300, 600)] {
            let body = json!({
                "person": format!("p{p}"), "from": from, "to": to, "depth": depth,
                "min_overlap_s": min_overlap, "linger_s": linger, "min_stay_s": min_stay,
            });
            let want = request(&single_base, "POST", "/v1/trace", Some(&body)).expect("single");
            let got = if want.status == 200 {
                until_ok(
                    &urls[(p % 2) as usize],
                    "POST",
                    "/v1/trace",
                    Some(&body),
                    30,
                )
            } else {
                request(&urls[0], "POST", "/v1/trace", Some(&body)).expect("cluster")
            };
            assert_eq!(got.status, want.status, "trace of p{p}");
            if want.status == 200 {
                assert_eq!(got.json(), want.json(), "trace of p{p} depth {depth}");
            }
        }
    }
    drop(single);
    eprintln!("all checks passed in {:?}", started.elapsed());
}
