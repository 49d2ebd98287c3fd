//! An HTTP node's replica stops at a message it cannot store and follows the stream again from
//! it once it can, also when the node runs with a tokens file (as in production): node B's data
//! directory is a tmpfs that is filled up while venues and scans go through node A, then space
//! returns, and a case registered through A afterwards is listed by B. Runs three real NATS
//! servers through `deploy/local-cluster.sh nats` and two `checkin-server --cluster --tokens`
//! (fails, not skips, without `nats-server`; needs root for the tmpfs, and fails without it
//! under `CI`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;

use support::{bin_dir, build_server, free_port, Servers};

/// The administrator's bearer token, and the SHA-256 of it that the tokens file holds
/// (`printf %s admin-token | sha256sum`).
const ADMIN: &str = "admin-token";
const ADMIN_SHA256: &str = "10a4c7c9fc5206d6f36dc6944a81bb6f4a3cb0e25014ae3b12e6c3e52712292a";

/// `--replica-stall-exit` of the nodes: far longer than the first outage lasts.
const STALL_EXIT_S: u64 = 15;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tmpfs mounted at a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount -t tmpfs at {} failed", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    /// Writes a file until the tmpfs is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0x5au8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.write_all(&[0]);
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn start_node(bin: &Path, data: &Path, tokens: &Path, urls: &str, log: &Path) -> (Killed, String) {
    let port = free_port();
    let log = std::fs::File::create(log).expect("the node's log");
    let node = Killed(
        Command::new(bin.join("checkin-server"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(data)
            .arg("--tokens")
            .arg(tokens)
            .arg("--cluster")
            .arg(urls)
            .arg("--cluster-shards")
            .arg("1")
            .arg("--replica-stall-exit")
            .arg(STALL_EXIT_S.to_string())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start checkin-server"),
    );
    (node, format!("http://127.0.0.1:{port}"))
}

/// One HTTP/1.1 request with the administrator's token: (status, body).
fn call(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, String)> {
    support::request(base, method, path, Some(ADMIN), body).map(|r| (r.status, r.body))
}

/// Calls until the answer is `want`, for at most `for_s` seconds; panics with the last answer.
fn until(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    want: u16,
    for_s: u64,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(for_s);
    loop {
        let last = call(base, method, path, body);
        match &last {
            Ok((status, body)) if *status == want => return body.clone(),
            _ if Instant::now() >= deadline => {
                panic!("{method} {path}: no {want} in {for_s} s; last answer {last:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn case_ids(base: &str) -> Vec<String> {
    let body = until(base, "GET", "/v1/cases", None, 200, 30);
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    let list = v
        .get("cases")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no cases list: {body}"));
    let mut ids: Vec<String> = list
        .iter()
        .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_replica_that_could_not_store_follows_again_once_it_can() {
    if !is_root() {
        let why = "needs root to mount a tmpfs";
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs every test: {why}"
        );
        eprintln!("SKIPPED: {why}");
        return;
    }
    let (_servers, urls) = Servers::start();
    let bin = bin_dir();
    build_server(&bin);
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!("[[tokens]]\nname = \"root\"\nrole = \"admin\"\nsha256 = \"{ADMIN_SHA256}\"\n"),
    )
    .expect("tokens file");
    let disk = Tmpfs::mount(&dir.path().join("b-disk"), "512m");
    let (_a, a) = start_node(
        &bin,
        &dir.path().join("a"),
        &tokens,
        &urls,
        &dir.path().join("a.log"),
    );
    let b_log = dir.path().join("b.log");
    let (mut b_process, b) = start_node(&bin, &disk.0.join("data"), &tokens, &urls, &b_log);
    until(&a, "GET", "/readyz", None, 200, 60);
    until(&b, "GET", "/readyz", None, 200, 60);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let case = |id: &str, person: &str| json!({"id": id, "person": person, "sampled_at": now - 3600, "isolated_at": now - 300});
    until(
        &a,
        "POST",
        "/v1/cases",
        Some(&case("c-before", "p1")),
        201,
        30,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while case_ids(&b) != ["c-before"] {
        assert!(Instant::now() < deadline, "B never applied the first case");
        std::thread::sleep(Duration::from_millis(200));
    }

    // B's disk is full: its replica cannot store what A takes (A acknowledges once JetStream has).
    let filler = disk.fill();
    let venues: Vec<Value> = (0..4)
        .map(|i| json!({"id": format!("V{i}"), "name": format!("venue {i}")}))
        .collect();
    until(&a, "POST", "/v1/venues", Some(&json!(venues)), 200, 30);
    for batch in 0..20 {
        let scans: Vec<Value> = (0..500)
            .map(|i| {
                json!({"person": format!("p{}", batch * 500 + i), "venue": format!("V{}", i % 4),
                       "ts": now - 600 + i64::from(i % 60), "action": "in"})
            })
            .collect();
        until(&a, "POST", "/v1/scans", Some(&json!(scans)), 200, 30);
    }
    // Long enough for B to have tried (and failed) to store them.
    std::thread::sleep(Duration::from_secs(3));
    let log = std::fs::read_to_string(&b_log).unwrap_or_default();
    assert!(
        log.contains("stream follower stopped"),
        "B's replica stored everything on a full disk?\n{log}"
    );

    // Space returns: B's replica goes on from where it stopped, without a restart.
    std::fs::remove_file(&filler).expect("remove the filler");
    until(
        &a,
        "POST",
        "/v1/cases",
        Some(&case("c-after", "p2")),
        201,
        30,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids = case_ids(&b);
        if ids == ["c-after", "c-before"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B lists {ids:?} 60 s after space returned; its log:\n{}",
            std::fs::read_to_string(&b_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Every scan A took is in B's replica too (its store counts are the shards', so look at the
    // replica's own applied sequence against A's).
    let applied = |base: &str| -> u64 {
        let text = until(base, "GET", "/metrics", None, 200, 30);
        text.lines()
            .find_map(|l| l.strip_prefix("checkin_cluster_replica_applied "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no checkin_cluster_replica_applied in {text}"))
    };
    assert_eq!(applied(&b), applied(&a));
    let log = std::fs::read_to_string(&b_log).unwrap_or_default();
    assert!(!log.contains("panicked"), "B panicked:\n{log}");

    // Full again, for longer than --replica-stall-exit: B stops by itself (status 1) rather
    // than stay stuck, and restarted once space returns, resumes from its checkpoint. Enough
    // venues to need new pages of venues.log (a small append fits in its last page), then a
    // case behind them in the stream.
    let filler = disk.fill();
    let many: Vec<Value> = (0..400)
        .map(|i| json!({"id": format!("W{i}"), "name": format!("another venue with a long name {i}")}))
        .collect();
    until(&a, "POST", "/v1/venues", Some(&json!(many)), 200, 30);
    until(
        &a,
        "POST",
        "/v1/cases",
        Some(&case("c-during", "p3")),
        201,
        30,
    );
    let deadline = Instant::now() + Duration::from_secs(STALL_EXIT_S + 45);
    let status = loop {
        if let Some(status) = b_process.0.try_wait().expect("B's status") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "B did not stop by itself; its log:\n{}",
            std::fs::read_to_string(&b_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let log = std::fs::read_to_string(&b_log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("has not got past stream sequence"), "{log}");
    std::fs::remove_file(&filler).expect("remove the filler");
    let b_log = dir.path().join("b-restarted.log");
    let (_b_again, b) = start_node(&bin, &disk.0.join("data"), &tokens, &urls, &b_log);
    until(&b, "GET", "/readyz", None, 200, 60);
    assert_eq!(case_ids(&b), ["c-after", "c-before", "c-during"]);
    assert_eq!(applied(&b), applied(&a));
    // The case's change is audited once on each node, however often B tried it.
    let audited = |base: &str| -> usize {
        let body = until(base, "GET", "/v1/audit", None, 200, 30);
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        v["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("no entries: {body}"))
            .iter()
            .filter(|e| e["subject"] == "p3" && e["action"] == "/v1/cases")
            .count()
    };
    assert_eq!(audited(&a), 1);
    assert_eq!(audited(&b), 1);
}
