//! The local cluster of `deploy/local-cluster.sh` (3 NATS servers, 2 shards × 2 replicas, two
//! HTTP nodes) against one single-node `checkin-server` fed the same scans: ingest while a NATS
//! server and a shard replica are killed with `kill -9` and restarted, then check that every
//! acknowledged scan is served (every person's visits equal the single server's) and that
//! occupancy and traces (depth 1 and 2) are equal too. Health-domain changes (cases, a retry, a
//! conflict, a pooled sample and its positive result, a recovery, a declaration) go through both
//! nodes during the kills, an HTTP node is killed and restarted (its replica is rebuilt from the
//! stream), and then cases, standing traces, every person's status, exposure sites, results,
//! passes and the audit of each change equal the single server's.
//!
//! Needs `nats-server` 2.15.x (`scripts/test-deps.sh` installs it from PyPI); without it the test
//! fails (it does not skip). Waits are on observed conditions: a replica's status subject
//! (`cluster::status_subject`: serving, applied sequence) against the stream's last sequences.
//! `CHECKIN_CLUSTER_TEST_DIR=DIR` keeps the cluster's logs in DIR (emptied first).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;

use support::{bin_dir, build_server, free_port, Resp};

fn request(base: &str, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<Resp> {
    support::request(base, method, path, None, body)
}

/// Retries until a 200, for up to `for_s` seconds: while a process is down the cluster may answer
/// 503 (with `Retry-After`, as the contract allows during a takeover) or drop a connection.
/// Any other answer fails the test. Returns the answer and how long the retries took.
fn until_ok_timed(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    for_s: u64,
) -> (Resp, Duration) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(for_s);
    loop {
        match request(base, method, path, body) {
            Ok(r) if r.status == 200 => return (r, started.elapsed()),
            Ok(r) if r.status == 503 => assert!(
                r.retry_after.is_some(),
                "{method} {path}: 503 without Retry-After: {}",
                r.body
            ),
            Ok(r) => panic!("{method} {path}: {} {}", r.status, r.body),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "{method} {path} did not succeed within {for_s} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn until_ok(base: &str, method: &str, path: &str, body: Option<&Value>, for_s: u64) -> Resp {
    until_ok_timed(base, method, path, body, for_s).0
}

/// Talks to the cluster's NATS servers directly: the stream's last sequences and the shard
/// replicas' status subjects (`cluster::status_subject`).
/// Sends a health-domain change to the single server and to a cluster node (retrying 503s and
/// dropped connections there, as a client would), and checks that both answer alike (the
/// nodes' and the single server's clocks stamp `registered_at`, so it is left out).
fn change_both(node: &str, single: &str, method: &str, path: &str, body: &Value) -> Resp {
    let want = request(single, method, path, Some(body)).expect("single");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut retried = false;
    let got = loop {
        match request(node, method, path, Some(body)) {
            Ok(r) if r.status == 503 => assert!(r.retry_after.is_some(), "{path}: {}", r.body),
            Ok(r) => break r,
            Err(_) => {}
        }
        retried = true;
        assert!(
            Instant::now() < deadline,
            "{method} {path} through {node}: no answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // A creation retried after a 503 (a publish whose acknowledgement was lost while a NATS
    // server died, but which was stored) is answered as the identical retry it is: 200.
    let retried_creation = retried && want.status == 201 && got.status == 200;
    assert!(
        got.status == want.status || retried_creation,
        "{method} {path}: {} {} vs {} {}",
        got.status,
        got.body,
        want.status,
        want.body
    );
    if want.status < 300 {
        // A case's contact counts are its standing trace's at that moment, which both servers
        // keep current asynchronously; the traces themselves are compared once settled.
        let counts_dropped = |v: Value| {
            let mut v = without_stamps(v);
            if let Some(m) = v.as_object_mut() {
                m.remove("f1");
                m.remove("f2");
            }
            v
        };
        assert_eq!(
            counts_dropped(got.json()),
            counts_dropped(want.json()),
            "{method} {path}"
        );
    }
    got
}

/// A JSON answer without the fields each server stamps with its own clock.
fn without_stamps(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in ["registered_at", "as_of", "issued", "expires"] {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    // The case list is ordered by `registered_at`, which differs between the two by the
    // milliseconds between a command's stamp and the single server's own registration: across
    // a second's boundary that reorders two cases of (nearly) the same second. Compare by id.
    if let Some(cases) = v.get_mut("cases").and_then(Value::as_array_mut) {
        cases.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    }
    v
}

/// Reads `path` from the single server and a cluster node until both answer 200 with equal
/// JSON (standing traces and tiers settle asynchronously on both), for up to `for_s` seconds.
fn settles_equal(node: &str, single: &str, path: &str, for_s: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(for_s);
    loop {
        let want = without_stamps(until_ok(single, "GET", path, None, 30).json());
        let got = without_stamps(until_ok(node, "GET", path, None, 30).json());
        if got == want {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{path} through {node} never equalled the single server's:\n{got}\nvs\n{want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

struct Nats {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
}

impl Nats {
    fn connect(urls: &str) -> Nats {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client = rt
            .block_on(cluster::node::connect(urls, "local-cluster-test"))
            .expect("connect to NATS");
        // The JetStream context starts a task: inside the runtime.
        let js = rt.block_on(async { async_nats::jetstream::new(client.clone()) });
        Nats { rt, client, js }
    }

    /// Publishes a health-domain command straight into the stream, as an HTTP node leaves it
    /// when it dies right after JetStream acknowledged its publish: no live node took it, so
    /// none waits for its outcome, and every node must still apply it and audit it.
    fn publish_orphan_command(&self, method: &str, target: &str, body: &Value, now: i64) -> u64 {
        let command = cluster::wire::HealthCommand {
            origin: "an-http-node-that-died".into(),
            request: 0,
            now,
            method: method.into(),
            target: target.into(),
            principal: "open".into(),
            role: None,
            venues: Vec::new(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: serde_json::to_vec(body).expect("encode the body"),
        };
        let payload = postcard::to_stdvec(&command).expect("encode the command");
        self.rt.block_on(async {
            self.js
                .publish(cluster::HEALTH_SUBJECT, payload.into())
                .await
                .expect("publish the command")
                .await
                .expect("the stream's acknowledgement")
                .sequence
        })
    }

    /// Waits until replica `r` of shard `k` serves queries and has applied every message of
    /// its subjects in the stream (observed, not assumed); returns how long that took.
    fn wait_caught_up(&self, k: u32, r: u32, for_s: u64) -> Duration {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(for_s);
        loop {
            let standing = self
                .rt
                .block_on(cluster::status::standing(&self.client, &self.js, k, r))
                .ok();
            if standing.as_ref().is_some_and(|s| s.caught_up()) {
                return started.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "shard-{k}-{r} did not catch up with the stream within {for_s} s: {standing:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Cluster {
    dir: PathBuf,
    script: PathBuf,
}

/// The message budget of http-1 and http-2 (`--cluster-message-bytes`).
const SMALL_MESSAGE_BYTES: usize = 4096;

/// What a node's `/metrics` says `name` (a metric without labels) is.
fn metric(url: &str, name: &str) -> Option<u64> {
    let metrics = until_ok(url, "GET", "/metrics", None, 30).body;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Cluster {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .env("CHECKIN_BIN_DIR", bin_dir())
            // The HTTP nodes snapshot their replicas every 2 s of applying (for http-3 below).
            .env("CHECKIN_REPLICA_SNAPSHOT_EVERY", "2")
            // http-1 and http-2 ask the shards in small messages, so that the traces below come
            // in many queries and pages (http-3 keeps the default, one message each).
            .env(
                "CHECKIN_CLUSTER_MESSAGE_BYTES",
                SMALL_MESSAGE_BYTES.to_string(),
            )
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

    fn kill9(&self, name: &str) {
        support::kill9(&self.dir, name);
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

/// An HTTP node started on a copy of another node's replica snapshot.
struct Seeded {
    url: String,
    snapshot_seq: u64,
    ready_after: Duration,
    _process: Single,
}

/// Copies `http-2`'s latest replica snapshot (`DATA/cluster-snapshots/LATEST`) into a new data
/// directory, as an operator would while `http-2` runs, and starts a third HTTP node on it;
/// returns once the node is ready (`/readyz`).
fn seed_from_snapshot(cluster: &Path, base: &Path, nats_urls: &str, bin: &Path) -> Seeded {
    let snapshots = cluster.join("http-2/cluster-snapshots");
    let data = base.join("http-3");
    let cache = data.join("cluster-cache");
    let deadline = Instant::now() + Duration::from_secs(30);
    let snapshot_seq = loop {
        // The newest two are kept: a copy that finds a file gone (a rotation under it) retries.
        let copied = (|| -> std::io::Result<u64> {
            let name = std::fs::read_to_string(snapshots.join("LATEST"))?;
            let from = snapshots.join(name.trim());
            let _ = std::fs::remove_dir_all(&cache);
            std::fs::create_dir_all(&cache)?;
            for entry in std::fs::read_dir(&from)? {
                let path = entry?.path();
                std::fs::copy(&path, cache.join(path.file_name().expect("a file name")))?;
            }
            let checkpoint: Value =
                serde_json::from_slice(&std::fs::read(cache.join("replica-checkpoint.json"))?)
                    .map_err(std::io::Error::other)?;
            Ok(checkpoint["applied"].as_u64().unwrap_or(0))
        })();
        match copied {
            Ok(seq) => break seq,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no copy of http-2's snapshot in 30 s: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(snapshot_seq > 0, "the snapshot stands for a sequence");
    std::fs::copy(
        cluster.join("http-2/signing-key.pem"),
        data.join("signing-key.pem"),
    )
    .expect("copy the signing key");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(base.join("http-3.log")).expect("http-3's log");
    let started = Instant::now();
    let process = Single(
        Command::new(bin.join("checkin-server"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(&data)
            .arg("--cluster")
            .arg(nats_urls)
            .arg("--cluster-shards")
            .arg("2")
            .env("NO_COLOR", "1")
            .env_remove("CHECKIN_CLUSTER_MESSAGE_BYTES")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start http-3"),
    );
    until_ok(&url, "GET", "/readyz", None, 60);
    Seeded {
        url,
        snapshot_seq,
        ready_after: started.elapsed(),
        _process: process,
    }
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
fn cluster_survives_kill9_and_equals_a_single_server() {
    let dir = bin_dir();
    build_server(&dir);
    assert!(
        dir.join("checkin-shard").exists(),
        "checkin-shard not built"
    );
    let work = tempfile::tempdir().expect("tempdir");
    // CHECKIN_CLUSTER_TEST_DIR: keep the cluster's logs there (emptied first) to read them after.
    let base = match std::env::var_os("CHECKIN_CLUSTER_TEST_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).expect("CHECKIN_CLUSTER_TEST_DIR");
            d
        }
        None => work.path().to_path_buf(),
    };
    let cluster = Cluster {
        dir: base.join("cluster"),
        script: support::local_cluster_script(),
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
    let nats_urls = std::fs::read_to_string(cluster.dir.join("conf/nats-urls")).expect("nats-urls");
    let nats = Nats::connect(nats_urls.trim());

    let port = free_port();
    let single_base = format!("http://127.0.0.1:{port}");
    let single = Single(
        Command::new(dir.join("checkin-server"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(base.join("single"))
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
    let now = unix_now();
    let persons = 240u64;
    let mut rng = Rng(0x005e_edc1_u64);
    let batches = 40;
    let mut acked = 0usize;
    // The longest a batch took to be acknowledged (retries of 503s included).
    let mut slowest_batch = Duration::ZERO;
    let mut shard_restarted = None;
    // The time the orphan command of c-e was stamped with (batch 26).
    let mut orphan_stamp = None;
    // http-1 is down for batches 30..34 (everything goes through http-2 then).
    let http1_down = |b: usize| (30..34).contains(&b);
    // Health-domain changes through both nodes during the kills, each after the scans so far:
    // (batch, node, method, path, body, status answered by both the cluster and the single server).
    let case = |id: &str, person: &str, sampled: i64| json!({"id": id, "person": person, "sampled_at": now - sampled, "isolated_at": now - 300});
    let changes: Vec<(usize, usize, &str, &str, Value, u16)> = vec![
        (4, 0, "POST", "/v1/cases", case("c-a", "p3", 3 * 3600), 201),
        // nats-2 is down (batches 8..22): a new case, and a retry of c-a through the other node.
        (9, 1, "POST", "/v1/cases", case("c-b", "p11", 2 * 3600), 201),
        (9, 1, "POST", "/v1/cases", case("c-a", "p3", 3 * 3600), 200),
        (
            12,
            0,
            "POST",
            "/v1/samples",
            json!({"id": "s-1", "kind": "pcr", "persons": ["p20", "p21"],
                   "collected_at": now - 4 * 3600}),
            201,
        ),
        (
            16,
            1,
            "POST",
            "/v1/samples/s-1/result",
            json!({"result": "positive", "resulted_at": now - 1200}),
            200,
        ),
        // p3 has an active case: refused alike.
        (18, 0, "POST", "/v1/cases", case("c-c", "p3", 3600), 409),
        (
            20,
            1,
            "PATCH",
            "/v1/cases/c-a",
            json!({"status": "recovered", "at": now - 60}),
            200,
        ),
        (
            24,
            0,
            "POST",
            "/v1/declarations",
            json!({"person": "p30", "ts": now - 100, "symptoms": ["fever"], "exposure": true}),
            201,
        ),
        // http-1 is down: through http-2 alone.
        (
            32,
            1,
            "POST",
            "/v1/cases",
            case("c-d", "p40", 5 * 3600),
            201,
        ),
    ];
    for b in 0..batches {
        match b {
            8 => cluster.kill9("nats-2"),
            14 => cluster.kill9("shard-0-1"),
            22 => {
                cluster.run(&["restart", &cluster.dir.to_string_lossy(), "nats-2"]);
            }
            28 => {
                cluster.run(&["restart", &cluster.dir.to_string_lossy(), "shard-0-1"]);
                shard_restarted = Some(Instant::now());
            }
            30 => {
                // http-1 checkpoints its replica every 5 s of applying (the first 5 s after
                // its start): once it has, kill it. The restart cuts its store back to that
                // point and follows the stream from there.
                let file = cluster
                    .dir
                    .join("http-1/cluster-cache/replica-checkpoint.json");
                let waited = Instant::now();
                while !file.exists() {
                    assert!(
                        waited.elapsed() < Duration::from_secs(30),
                        "http-1 wrote no replica checkpoint in 30 s"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                cluster.kill9("http-1");
                let cp: Value = serde_json::from_slice(
                    &std::fs::read(&file).expect("http-1 wrote no replica checkpoint"),
                )
                .expect("a replica checkpoint is JSON");
                let applied = cp["applied"].as_u64().expect("applied");
                assert!(applied > 0, "{cp}");
                eprintln!("http-1 killed; its replica checkpoint stands for sequence {applied}");
            }
            34 => {
                cluster.run(&["restart", &cluster.dir.to_string_lossy(), "http-1"]);
                // Its replica resumes from its checkpoint and catches up with the stream: once
                // /readyz says so, the health domain answers at once (no 503 left to retry).
                let restarted = Instant::now();
                let mut refused = 0;
                loop {
                    match request(&urls[0], "GET", "/readyz", None) {
                        Ok(r) if r.status == 200 => break,
                        Ok(r) => {
                            assert_eq!(r.status, 503, "{}", r.body);
                            assert!(r.retry_after.is_some(), "{}", r.body);
                            refused += 1;
                        }
                        Err(_) => {}
                    }
                    assert!(
                        restarted.elapsed() < Duration::from_secs(60),
                        "http-1 not ready 60 s after its restart"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                eprintln!(
                    "http-1 ready {:?} after its restart ({refused} answers of 503 before)",
                    restarted.elapsed()
                );
                let log = std::fs::read_to_string(cluster.dir.join("logs/http-1.log"))
                    .expect("http-1's log");
                assert_eq!(
                    log.matches("the local store resumes from its checkpoint")
                        .count(),
                    1,
                    "http-1 did not resume from its checkpoint:\n{log}"
                );
                for path in ["/v1/cases", "/v1/exposure-sites", "/v1/summary"] {
                    let r = request(&urls[0], "GET", path, None).expect("http-1");
                    assert_eq!(r.status, 200, "{path} right after /readyz: {}", r.body);
                }
            }
            _ => {}
        }
        let node = if http1_down(b) {
            &urls[1]
        } else {
            &urls[b % 2]
        };
        for (_, n, method, path, body, status) in changes.iter().filter(|c| c.0 == b) {
            let r = change_both(&urls[*n], &single_base, method, path, body);
            // (200 for a 201 only after a retried creation: change_both checks that.)
            assert!(
                r.status == *status || (*status == 201 && r.status == 200),
                "{method} {path}: {}",
                r.body
            );
            // Read your writes through the other node, at once: it waits for the change
            // (announced on ck.acked) rather than answer from before it.
            let case_path = match (*method, *path) {
                ("POST", "/v1/cases") if r.status < 300 => {
                    format!("/v1/cases/{}", body["id"].as_str().expect("a case id"))
                }
                ("PATCH", p) if p.starts_with("/v1/cases/") && r.status < 300 => p.to_string(),
                _ => continue,
            };
            if http1_down(b) {
                continue;
            }
            let other = &urls[1 - *n];
            // As long as a change may take during the kills (change_both): the other node's
            // replica may be replacing a consumer that was on the killed server.
            let asked = Instant::now();
            let deadline = asked + Duration::from_secs(60);
            let read = loop {
                match request(other, "GET", &case_path, None) {
                    Ok(back) if back.status != 503 => break back,
                    Ok(back) => assert!(back.retry_after.is_some(), "{}", back.body),
                    Err(_) => {}
                }
                assert!(Instant::now() < deadline, "{case_path} through {other}");
                std::thread::sleep(Duration::from_millis(50));
            };
            eprintln!(
                "{case_path} read back through the other node in {:?}",
                asked.elapsed()
            );
            assert_eq!(
                read.status, 200,
                "{case_path} through {other} right after {method} through {}: {}",
                urls[*n], read.body
            );
            assert_eq!(
                read.json()["status"],
                r.json()["status"],
                "{case_path} through {other} right after {method} through {}",
                urls[*n]
            );
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
        if b == 26 {
            // A case whose taking node died right after its command was stored: applied and
            // audited by both nodes all the same.
            let c_e = case("c-e", "p50", 4 * 3600);
            let stamped = unix_now();
            orphan_stamp = Some(stamped);
            let seq = nats.publish_orphan_command("POST", "/v1/cases", &c_e, stamped);
            let s = request(&single_base, "POST", "/v1/cases", Some(&c_e)).expect("single");
            assert_eq!(s.status, 201, "{}", s.body);
            eprintln!("case c-e published straight to the stream (sequence {seq})");
        }
        if b == 25 {
            // A declaration with an idempotency key, sent again through the other node (a phone
            // whose answer was lost): one declaration on every node, as on the single server.
            let decl =
                json!({"person": "p31", "ts": now - 90, "symptoms": ["cough"], "exposure": true});
            let key = [("Idempotency-Key", "decl-p31-1")];
            let keyed = |base: &str| {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    match support::request_with(
                        base,
                        "POST",
                        "/v1/declarations",
                        None,
                        &key,
                        Some(&decl),
                    ) {
                        Ok(r) if r.status != 503 => break r,
                        _ => {
                            assert!(
                                Instant::now() < deadline,
                                "{base}: no answer to the keyed declaration"
                            );
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            };
            let single_first = keyed(&single_base);
            assert_eq!(single_first.status, 201, "{}", single_first.body);
            assert_eq!(keyed(&single_base).status, 200);
            let first = keyed(&urls[0]);
            assert!(matches!(first.status, 200 | 201), "{}", first.body);
            let again = keyed(&urls[1]);
            assert_eq!(
                again.status, 200,
                "the retry through http-2: {}",
                again.body
            );
            assert_eq!(again.json()["id"], first.json()["id"]);
        }
        if b == 10 {
            // Lookups while nats-2 is down: their audit entries must be in the stream at the end.
            for p in 0..5 {
                let path = format!("/v1/persons/p{p}/visits");
                let _ = until_ok(&urls[1], "GET", &path, None, 30);
                let _ = request(&single_base, "GET", &path, None).expect("single");
            }
        }
        let body = json!(scans);
        let (r, took) = until_ok_timed(node, "POST", "/v1/scans", Some(&body), 60);
        slowest_batch = slowest_batch.max(took);
        let r = r.json();
        assert_eq!(r["rejected"], json!([]), "{r}");
        acked += r["accepted"].as_u64().expect("accepted") as usize;
        let s = until_ok(&single_base, "POST", "/v1/scans", Some(&body), 30).json();
        assert_eq!(s["accepted"], r["accepted"]);
    }
    assert_eq!(acked, batches * 250);
    // A batch with every kind of refusal, through each node: the same answer as the single
    // server's (accepted counts, and each refused scan's index and reason).
    for (i, url) in urls.iter().enumerate() {
        let t = now - 200 + i as i64;
        let mixed = json!([
            {"person": "p1", "venue": "V1", "ts": t, "action": "in"},
            {"person": "p1", "venue": "V-NOT-REGISTERED", "ts": t, "action": "in"},
            {"person": "not a person", "venue": "V1", "ts": t, "action": "in"},
            {"person": "p2", "venue": "a/b", "ts": t, "action": "in"},
            {"person": "p2", "venue": "V2", "ts": now - 40 * 86_400, "action": "in"},
            {"person": "p2", "venue": "V2", "ts": now + 3_600, "action": "in"},
            {"person": "p2", "venue": "V2", "ts": t, "action": "out"},
        ]);
        let want = until_ok(&single_base, "POST", "/v1/scans", Some(&mixed), 30).json();
        let got = until_ok(url, "POST", "/v1/scans", Some(&mixed), 60).json();
        assert_eq!(got, want, "a mixed batch through {url}");
        assert_eq!(want["rejected"].as_array().map(Vec::len), Some(5), "{want}");
    }
    eprintln!("ingested {acked} scans in {:?}", started.elapsed());

    eprintln!("slowest batch acknowledged in {slowest_batch:?}");

    // The restarted replica must now serve shard 0 alone: wait until it serves and has applied
    // every message of its subjects (its status subject, against the stream's last sequences).
    let restarted = shard_restarted.expect("shard-0-1 restarted");
    nats.wait_caught_up(0, 1, 60);
    eprintln!(
        "shard-0-1 serving and caught up {:?} after its restart",
        restarted.elapsed()
    );
    cluster.kill9("shard-0-2");
    let failover = Instant::now();
    let (_, took) = until_ok_timed(&urls[0], "GET", "/v1/occupancy?top=1", None, 30);
    eprintln!("shard 0 served by the restarted replica {took:?} after shard-0-2 was killed");
    assert!(
        failover.elapsed() < Duration::from_secs(10),
        "takeover took {:?} (the contract allows 503 for at most 10 s)",
        failover.elapsed()
    );
    // Reads through either HTTP node wait for that node's own acknowledged writes only (see
    // docs/cluster.md): before comparing, every live replica has applied the whole stream.
    for (k, r) in [(0, 1), (1, 1), (1, 2)] {
        nats.wait_caught_up(k, r, 30);
    }

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

    // The health domain, through both nodes (http-1's replica was rebuilt from the stream after
    // its kill): cases, each case's standing trace, every person's status, exposure sites,
    // results and passes equal the single server's.
    for url in &urls {
        let cases = settles_equal(url, &single_base, "/v1/cases", 30);
        let ids: Vec<String> = cases["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_string())
            .collect();
        assert!(
            ids.len() >= 4,
            "c-a, c-b, c-d, c-e and those of s-1: {cases}"
        );
        for id in &ids {
            settles_equal(url, &single_base, &format!("/v1/cases/{id}/contacts"), 30);
        }
        settles_equal(url, &single_base, "/v1/exposure-sites?since=0", 30);
        settles_equal(url, &single_base, "/v1/persons/p20/results", 30);
        settles_equal(url, &single_base, "/v1/followups", 30);
    }
    let mut tiers = std::collections::BTreeMap::new();
    for p in 0..persons {
        let path = format!("/v1/persons/p{p}/status");
        let status = settles_equal(&urls[(p % 2) as usize], &single_base, &path, 30);
        *tiers
            .entry(status["tier"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    assert!(
        tiers.get("F1").is_some_and(|n| *n > 0)
            && tiers.get("F2").is_some_and(|n| *n > 0)
            && tiers.get("F0").is_some_and(|n| *n >= 2),
        "the cases have contacts: {tiers:?}"
    );
    for p in ["p3", "p20", "p30", "p40"] {
        settles_equal(&urls[1], &single_base, &format!("/v1/persons/{p}/pass"), 30);
    }
    eprintln!("health domain equal through both nodes; tiers {tiers:?}");

    // Store counts: scans and persons are the shards', summed.
    let want = until_ok(&single_base, "GET", "/v1/stats", None, 30).json();
    let mut applied = Vec::new();
    for url in &urls {
        let got = until_ok(url, "GET", "/v1/stats", None, 30).json();
        for field in ["scans", "persons", "venues"] {
            assert_eq!(got[field], want[field], "stats {field} through {url}");
        }
        assert!(got["log_bytes"].as_u64().is_some_and(|b| b > 0), "{got}");
        // The store gauges of /metrics are the shards' too.
        let metrics = until_ok(url, "GET", "/metrics", None, 30).body;
        let gauge = |name: &str| -> Option<u64> {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        };
        assert_eq!(
            gauge("checkin_scans_stored"),
            want["scans"].as_u64(),
            "{url}/metrics"
        );
        assert_eq!(
            gauge("checkin_persons"),
            want["persons"].as_u64(),
            "{url}/metrics"
        );
        // Settled: the node's replica has applied all of the stream it has heard of.
        assert_eq!(gauge("checkin_cluster_replica_caught_up"), Some(1), "{url}");
        assert_eq!(gauge("checkin_cluster_replica_behind"), Some(0), "{url}");
        applied.push(gauge("checkin_cluster_replica_applied"));
    }
    // And both replicas stand at the same place in the stream.
    assert!(applied[0].is_some_and(|a| a > 0), "{applied:?}");
    assert_eq!(applied[0], applied[1], "both nodes' replicas");

    // Traces, depth 1 and 2, with and without the v2 rules; the last one ends among the early
    // scans, with a linger that reaches F1 visits starting after its end.
    let traces_equal = |url: &str, p: u64| {
        for (depth, min_overlap, linger, min_stay, to) in [
            (1, 900, 0, 0, to),
            (2, 600, 300, 600, to),
            (2, 300, 1800, 0, now - 4 * 3600),
        ] {
            let body = json!({
                "person": format!("p{p}"), "from": from, "to": to, "depth": depth,
                "min_overlap_s": min_overlap, "linger_s": linger, "min_stay_s": min_stay,
            });
            let want = request(&single_base, "POST", "/v1/trace", Some(&body)).expect("single");
            let got = if want.status == 200 {
                until_ok(url, "POST", "/v1/trace", Some(&body), 30)
            } else {
                request(url, "POST", "/v1/trace", Some(&body)).expect("cluster")
            };
            assert_eq!(got.status, want.status, "trace of p{p} through {url}");
            if want.status == 200 {
                assert_eq!(
                    got.json(),
                    want.json(),
                    "trace of p{p} depth {depth} through {url}"
                );
            }
        }
    };
    // Every 12th person, through the two nodes in turn.
    for (i, p) in (0..persons).step_by(12).enumerate() {
        traces_equal(&urls[i % 2], p);
    }
    // Asked in messages of SMALL_MESSAGE_BYTES, both nodes took several pages of the shards'
    // answers for those traces (and the answers above equal the single server's all the same).
    for url in &urls {
        let pages = metric(url, "checkin_cluster_continued_answers_total");
        assert!(
            pages.is_some_and(|n| n > 0),
            "{url}: {pages:?} continued answers"
        );
    }
    // The audit log: both HTTP nodes answer with every node's entries (a lookup retried after a
    // 503 may have left one more entry than the single server has, never fewer).
    let single_audit = until_ok(&single_base, "GET", "/v1/audit?since=0", None, 30).json();
    let audit_of = |v: &Value| -> (usize, std::collections::BTreeSet<(String, String)>) {
        let entries = v["entries"].as_array().expect("entries");
        let set = entries
            .iter()
            .map(|e| {
                assert_eq!(e["who"], "open", "{e}");
                (
                    e["action"].as_str().expect("action").to_string(),
                    e["subject"].as_str().expect("subject").to_string(),
                )
            })
            .collect();
        (entries.len(), set)
    };
    let (single_n, single_set) = audit_of(&single_audit);
    assert!(
        single_n > persons as usize,
        "single server audit: {single_n} entries"
    );
    // Each change is audited once in every node's log, c-e (whose taking node died) included.
    let changes = |v: &Value| -> Vec<Value> {
        v["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| {
                matches!(
                    e["action"].as_str(),
                    Some("/v1/cases" | "/v1/cases/{id}" | "/v1/samples/{id}/result")
                )
            })
            .cloned()
            .collect()
    };
    let single_changes = changes(&single_audit).len();
    assert_eq!(
        single_changes, 7,
        "c-a, c-b, c-d, c-e, s-1 for two persons, c-a recovered"
    );
    // Each node derives its change entries from the stream: the same entries, to the second,
    // on both nodes (c-e's stamped with its command's time).
    let mut change_entries = Vec::new();
    for url in &urls {
        let got = until_ok(url, "GET", "/v1/audit?since=0", None, 30).json();
        let node_changes = changes(&got);
        assert_eq!(
            node_changes.len(),
            single_changes,
            "change entries through {url}: {node_changes:?}"
        );
        let orphan_stamp = orphan_stamp.expect("c-e was published");
        assert!(
            node_changes
                .iter()
                .any(|e| e["subject"] == "p50" && e["ts"] == orphan_stamp),
            "c-e's entry through {url}, stamped {orphan_stamp}: {node_changes:?}"
        );
        change_entries.push(node_changes);
        let (n, set) = audit_of(&got);
        assert_eq!(set, single_set, "audit entries through {url}");
        assert!(
            n >= single_n,
            "{n} audit entries through {url}, single {single_n}"
        );
        let since = now - 60;
        let recent = until_ok(url, "GET", &format!("/v1/audit?since={since}"), None, 30).json();
        assert!(
            recent["entries"]
                .as_array()
                .expect("entries")
                .iter()
                .all(|e| e["ts"].as_i64().is_some_and(|t| t >= since)),
            "since filter through {url}"
        );
    }
    assert_eq!(
        change_entries[0], change_entries[1],
        "change entries (ts, who, action, subject) through the two nodes"
    );
    eprintln!("audit: {single_n} entries on the single server, the same through both HTTP nodes");

    // A third HTTP node seeded from http-2's latest snapshot, copied while http-2 runs: it
    // resumes from the snapshot's checkpoint (not from the stream's first message), catches up,
    // and serves the same health domain and change entries.
    let http3 = seed_from_snapshot(&cluster.dir, &base, nats_urls.trim(), &dir);
    let log3 = base.join("http-3.log");
    let mut resumed = None;
    for line in std::fs::read_to_string(&log3)
        .expect("http-3's log")
        .lines()
    {
        if line.contains("resumes from its checkpoint") {
            resumed = Some(line.to_string());
        }
    }
    let resumed = resumed.unwrap_or_else(|| panic!("http-3 did not resume from the snapshot"));
    assert!(
        resumed.contains(&format!("applied={}", http3.snapshot_seq)),
        "http-3 resumed at the snapshot's sequence {}: {resumed}",
        http3.snapshot_seq
    );
    settles_equal(&http3.url, &single_base, "/v1/cases", 30);
    settles_equal(&http3.url, &single_base, "/v1/followups", 30);
    for p in ["p3", "p20", "p30", "p40", "p50"] {
        settles_equal(
            &http3.url,
            &single_base,
            &format!("/v1/persons/{p}/status"),
            30,
        );
    }
    let got = until_ok(&http3.url, "GET", "/v1/audit?since=0", None, 30).json();
    assert_eq!(
        changes(&got),
        change_entries[1],
        "change entries through http-3"
    );
    // Traces through http-3, whose default message budget holds each of these answers whole.
    for p in (0..persons).step_by(36) {
        traces_equal(&http3.url, p);
    }
    assert_eq!(
        metric(&http3.url, "checkin_cluster_continued_answers_total"),
        Some(0),
        "http-3 pages nothing at the default budget"
    );
    eprintln!(
        "http-3 seeded from http-2's snapshot at sequence {}: ready after {:?}, equal",
        http3.snapshot_seq, http3.ready_after
    );
    drop(http3);
    drop(single);
    eprintln!("all checks passed in {:?}", started.elapsed());
}
