//! Storage faults under the real server: torn and corrupt tails of a store written by
//! `checkin-server` (cut mid-record, half-zeroed record, flipped bytes, zeroed header, garbage
//! after the end), a full disk (tmpfs mounted with 1 MiB, later grown) and an unwritable data
//! directory.
//!
//! Expectations (contract sections 2 and 9, docs/log-format.md): the server starts, drops only
//! the damaged record and says so in its log, serves everything else, and keeps appending on
//! clean ground; when the disk is full or the directory unwritable, ingestion answers 503
//! `application/problem+json` and acknowledges nothing, reads keep working, and ingestion
//! resumes once space returns. Mount-based cases need root and are skipped with a notice
//! otherwise.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use checkin_tests::*;

const STAY: i64 = engine::DEFAULT_STAY_S as i64;

/// Writes `requests` sequential requests of fresh persons (each request is one log record),
/// then stops the server cleanly. Returns the scans per request.
fn write_store(data: &Path, requests: usize, seed: u64) -> Vec<Vec<Scan>> {
    let server = ServerProcess::start(Launch::new(data));
    register_venues(server.addr, 5);
    let mut rng = Rng::new(seed);
    let t = now();
    let mut out = Vec::new();
    for r in 0..requests {
        let batch: Vec<Scan> = (0..rng.range(1, 20))
            .map(|k| Scan {
                person: format!("r{r}k{k}"),
                venue: format!("V{}", rng.range(0, 5)),
                ts: t - rng.range(600, 86_400) as i64,
                out: false,
            })
            .collect();
        assert_eq!(
            post_scans(server.addr, &batch, Framing::Array),
            Ok(batch.len() as u64)
        );
        out.push(batch);
    }
    let (status, _) = server.sigterm(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()), "SIGTERM: {status:?}");
    out
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Applies one kind of damage to the newest segment; returns whether the last record is lost.
fn damage(kind: &str, seg: &Path) -> bool {
    let s = engine::inspect_segment(seg).unwrap();
    assert!(
        s.damage.is_none(),
        "store written by the server is damaged: {s:?}"
    );
    let last = s.last_record.unwrap() as usize;
    let end = s.valid_end as usize;
    let mut bytes = fs::read(seg).unwrap();
    let lost = match kind {
        "truncate-mid-record" => {
            bytes.truncate(last + (end - last) / 2);
            true
        }
        "zero-second-half" => {
            let mid = last + (end - last) / 2;
            bytes[mid..end].fill(0);
            true
        }
        "flip-bytes" => {
            for off in [last + 20, (last + end) / 2, end - 1] {
                bytes[off] ^= 0x5A;
            }
            true
        }
        "flip-length" => {
            bytes[last + 1] ^= 0x01;
            true
        }
        "zero-header" => {
            bytes[..64].fill(0);
            false
        }
        "garbage-after-end" => {
            for (i, b) in bytes[end + 16..end + 80].iter_mut().enumerate() {
                *b = i as u8 | 0x80;
            }
            false
        }
        other => panic!("unknown damage {other}"),
    };
    fs::write(seg, &bytes).unwrap();
    lost
}

#[test]
fn damaged_tails_are_dropped_logged_and_the_rest_served() {
    let seed = seed(7);
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    let batches = write_store(&pristine, 30, seed);
    let all: Vec<Scan> = batches.concat();
    let last_batch = batches.last().unwrap().clone();
    let kinds = [
        "truncate-mid-record",
        "zero-second-half",
        "flip-bytes",
        "flip-length",
        "zero-header",
        "garbage-after-end",
    ];
    let mut failures = Vec::new();
    for kind in kinds {
        let data = dir.path().join(kind);
        copy_dir(&pristine, &data);
        let seg = segments(&data).last().unwrap().clone();
        let lost = damage(kind, &seg);
        let server = match ServerProcess::try_start(Launch::new(&data)) {
            Ok(s) => s,
            Err((why, log)) => {
                failures.push(format!("{kind}: server did not start ({why}): {log}"));
                continue;
            }
        };
        let log = server.log_text();
        let want_scans = if lost {
            all.len() - last_batch.len()
        } else {
            all.len()
        };
        let stored = server.stats()["scans"].as_u64().unwrap() as usize;
        if stored != want_scans {
            failures.push(format!("{kind}: {stored} scans served, want {want_scans}"));
        }
        let logged = if kind == "zero-header" {
            log.contains("header damaged")
        } else {
            log.contains("torn or corrupt")
        };
        if (lost || kind == "zero-header") && !logged {
            failures.push(format!("{kind}: the drop is not in the log:\n{log}"));
        }
        // Every undamaged record is served exactly; the damaged one not at all.
        for (i, batch) in batches.iter().enumerate() {
            let gone = lost && i + 1 == batches.len();
            for s in batch {
                let got = person_visits(server.addr, &s.person);
                let want = (!gone).then(|| vec![(s.venue.clone(), s.ts, s.ts + STAY)]);
                if got != want {
                    failures.push(format!("{kind}: {} gives {got:?}, want {want:?}", s.person));
                }
            }
        }
        // Appends continue on clean ground and survive another restart.
        let extra = vec![Scan {
            person: format!("after-{kind}"),
            venue: "V1".into(),
            ts: now() - 60,
            out: false,
        }];
        assert_eq!(post_scans(server.addr, &extra, Framing::Object), Ok(1));
        let launch = server.kill9();
        let server = ServerProcess::start(launch);
        let after = server.stats()["scans"].as_u64().unwrap() as usize;
        if after != want_scans + 1 {
            failures.push(format!(
                "{kind}: {after} scans after re-restart, want {}",
                want_scans + 1
            ));
        }
        let again = server.log_text();
        if again.contains("torn or corrupt") {
            failures.push(format!(
                "{kind}: damage reported again after repair: {again}"
            ));
        }
        drop(server);
    }
    eprintln!(
        "reliability_storage seed={seed}: {} damage kinds tried over {} records",
        kinds.len(),
        batches.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A tmpfs mount that is unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !is_root() {
            skip(&format!(
                "not root, cannot mount a tmpfs at {}",
                dir.display()
            ));
            return None;
        }
        fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            skip(&format!("mount -t tmpfs failed at {}", dir.display()));
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }

    fn remount(&self, opts: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount {opts} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Either the real binary (when it honours `CHECKIN_SEGMENT_BYTES`) or the same service in
/// this process with 64 KiB segments.
enum Target {
    Proc(ServerProcess),
    InProc(InProcess),
}

impl Target {
    fn start(data: &Path) -> Target {
        if small_segments_supported() {
            Target::Proc(ServerProcess::start(Launch::new(data)))
        } else {
            eprintln!("notice: using an in-process server with 64 KiB segments");
            let mut c = engine::Config::new(data);
            c.segment_bytes = SMALL_SEGMENT;
            Target::InProc(InProcess::start(c, api::ServerOptions::default()))
        }
    }
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Target::Proc(p) => p.addr,
            Target::InProc(p) => p.addr,
        }
    }
    fn stop(self) {
        match self {
            Target::Proc(p) => {
                let (s, _) = p.sigterm(Duration::from_secs(60));
                assert!(s.is_some_and(|s| s.success()), "SIGTERM: {s:?}");
            }
            Target::InProc(p) => p.stop().unwrap(),
        }
    }
}

fn get(addr: std::net::SocketAddr, path: &str) -> http::Response {
    http::request(addr, "GET", path, &[], b"").unwrap()
}

fn post_json(addr: std::net::SocketAddr, path: &str, body: &str) -> http::Response {
    http::request(
        addr,
        "POST",
        path,
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .unwrap()
}

fn batch(prefix: &str, n: usize, t: i64) -> Vec<Scan> {
    (0..n)
        .map(|k| Scan {
            person: format!("{prefix}-{k}"),
            venue: format!("V{}", k % 3),
            ts: t - 600 - k as i64,
            out: false,
        })
        .collect()
}

/// Ingests until the store refuses with 503; checks the refusal and that reads keep working.
/// Returns the scans acknowledged before.
fn fill_until_refused(addr: std::net::SocketAddr, prefix: &str) -> (Vec<Scan>, http::Response) {
    let mut acked = Vec::new();
    let t = now();
    for i in 0..5_000 {
        let b = batch(&format!("{prefix}{i}"), 200, t);
        match post_scans(addr, &b, Framing::Array) {
            Ok(_) => acked.extend(b),
            Err((503, _)) => {
                let body = b.iter().map(Scan::to_json).collect::<Vec<_>>();
                let r = post_json(addr, "/v1/scans", &Value::Array(body).to_string());
                return (acked, r);
            }
            Err(other) => panic!("unexpected answer while filling the disk: {other:?}"),
        }
    }
    panic!("the disk never filled up after {} scans", acked.len());
}

/// While ingestion is refused: the refusal is a problem, nothing is stored, reads work.
fn check_refusing(addr: std::net::SocketAddr, refusal: &http::Response, acked: &[Scan]) {
    assert!(
        refusal.is_problem(503),
        "refusal is not a 503 problem+json: {} {:?} {}",
        refusal.status,
        refusal.headers,
        refusal.text()
    );
    let stored = get(addr, "/v1/stats").json()["scans"].as_u64().unwrap();
    for i in 0..3 {
        // As large as the refused request, with longer ids: no more room than it had.
        let b = batch(&format!("refused-longer-prefix-{i}"), 200, now());
        let r = post_scans(addr, &b, Framing::Ndjson);
        assert!(matches!(r, Err((503, _))), "while full: {r:?}");
    }
    let stats = get(addr, "/v1/stats");
    assert_eq!(stats.status, 200, "stats while full: {}", stats.text());
    assert_eq!(
        stats.json()["scans"].as_u64().unwrap(),
        stored,
        "refused scans were stored"
    );
    assert!(stored >= acked.len() as u64);
    for path in [
        "/v1/venues/V0",
        "/v1/venues/V1/occupancy",
        "/v1/occupancy?top=3",
        "/metrics",
    ] {
        let r = get(addr, path);
        assert_eq!(r.status, 200, "{path} while the disk is full: {}", r.text());
    }
    // A person lookup is audited durably first: it may be refused (503 problem), never wrong.
    let p = &acked[0];
    let r = get(addr, &format!("/v1/persons/{}/visits", p.person));
    assert!(
        r.status == 200 || r.is_problem(503),
        "visits while full: {} {}",
        r.status,
        r.text()
    );
}

#[test]
fn disk_full_refuses_with_503_and_resumes_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(fs_) = Tmpfs::mount(&mnt, "1m") else {
        return;
    };
    let data = mnt.join("data");
    let target = Target::start(&data);
    let addr = target.addr();
    register_venues(addr, 3);
    let (mut acked, refusal) = fill_until_refused(addr, "full");
    assert!(!acked.is_empty(), "nothing fit on a 1 MiB tmpfs");
    check_refusing(addr, &refusal, &acked);
    let health = get(addr, "/healthz");
    eprintln!(
        "disk full: /healthz answers {} {}",
        health.status,
        health.text()
    );

    // Space returns: ingestion resumes without a restart.
    fs_.remount("size=64m");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut resumed = false;
    let mut last = None;
    while Instant::now() < deadline {
        let b = batch(&format!("resume{}", acked.len()), 50, now());
        match post_scans(addr, &b, Framing::Array) {
            Ok(_) => {
                acked.extend(b);
                resumed = true;
                break;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        resumed,
        "ingestion did not resume after the disk grew: {last:?}"
    );
    assert_eq!(get(addr, "/healthz").status, 200);
    for i in 0..20 {
        let b = batch(&format!("more{i}"), 200, now());
        assert_eq!(post_scans(addr, &b, Framing::Array), Ok(200));
        acked.extend(b);
    }
    target.stop();
    let stored = verify_offline(&data, &acked, engine::DEFAULT_RETENTION_DAYS);
    assert_eq!(
        stored,
        acked.len() as u64,
        "stored count differs from acknowledged"
    );
    eprintln!(
        "reliability_storage disk-full: {} scans acknowledged around a full disk",
        acked.len()
    );
}

/// Makes a directory unwritable (`chmod 555`, or `chattr +i` as root, whom permission bits do
/// not stop) or writable again. Returns false if that is not possible here.
fn set_writable(dir: &Path, writable: bool) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if is_root() {
        Command::new("chattr")
            .arg(if writable { "-i" } else { "+i" })
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success())
    } else {
        let mode = if writable { 0o755 } else { 0o555 };
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).is_ok()
    }
}

#[test]
fn unwritable_data_directory_refuses_ingestion_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let target = Target::start(&data);
    let addr = target.addr();
    register_venues(addr, 3);
    let mut acked = batch("w0", 100, now());
    assert_eq!(post_scans(addr, &acked, Framing::Array), Ok(100));
    if !set_writable(&data, false) {
        skip(&format!(
            "unwritable_data_directory: cannot make {data:?} unwritable here"
        ));
        return;
    }
    let filled = std::panic::catch_unwind(|| {
        let (more, refusal) = fill_until_refused(addr, "ro");
        check_refusing(addr, &refusal, &more);
        more
    });
    assert!(
        set_writable(&data, true),
        "cannot make {data:?} writable again"
    );
    acked.extend(filled.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut resumed = None;
    while Instant::now() < deadline {
        let b = batch(&format!("back{}", acked.len()), 50, now());
        match post_scans(addr, &b, Framing::Array) {
            Ok(_) => {
                acked.extend(b);
                resumed = None;
                break;
            }
            Err(e) => resumed = Some(e),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(resumed.is_none(), "ingestion did not resume: {resumed:?}");
    target.stop();
    let stored = verify_offline(&data, &acked, engine::DEFAULT_RETENTION_DAYS);
    assert_eq!(stored, acked.len() as u64);
    eprintln!(
        "reliability_storage unwritable: {} scans acknowledged around an unwritable directory",
        acked.len()
    );
}

#[test]
fn read_only_data_directory_stops_the_server_at_start_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("ro");
    let Some(fs_) = Tmpfs::mount(&mnt, "1m") else {
        return;
    };
    fs_.remount("ro");
    // The mount point itself is the data directory (the log goes beside it, writable).
    let launch = Launch::new(&mnt);
    let (mut child, log, start) = spawn_server(&launch, free_port());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "server runs on a read-only directory"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = read_from(&log, start);
    assert!(!status.success());
    assert!(
        text.contains("data directory") && text.to_lowercase().contains("read-only"),
        "unclear message: {text}"
    );
}

/// After a failed write the health database refuses every later one until it is reopened
/// (redb's latch): `/healthz` and `/readyz` say so (`503`) instead of `200` while every change
/// answers `503`, so a supervisor restarts the server; restarted with space, it takes changes.
#[test]
fn a_health_database_that_failed_a_write_fails_healthz_until_a_restart() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(_fs) = Tmpfs::mount(&mnt, "8m") else {
        return;
    };
    let data = mnt.join("data");
    let target = Target::start(&data);
    let addr = target.addr();
    assert_eq!(get(addr, "/healthz").status, 200);
    let case = |i: usize| {
        format!(
            r#"{{"id":"full-{i}","person":"full-{i}","sampled_at":{}}}"#,
            now() - 3600
        )
    };
    let post_case = |i: usize| post_json(addr, "/v1/cases", &case(i));
    assert_eq!(post_case(0).status, 201);
    // Fill the disk, then register cases until one is refused.
    let filler = mnt.join("filler");
    {
        let mut f = fs::File::create(&filler).unwrap();
        let chunk = vec![0x5au8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.write_all(&[0]);
    }
    let started = Instant::now();
    let refused = (1..200).find(|&i| post_case(i).status == 503);
    eprintln!("refused at case {refused:?} after {:?}", started.elapsed());
    assert!(refused.is_some(), "every case fit on a full disk");
    fs::remove_file(&filler).unwrap();
    let r = post_case(1_000);
    assert_eq!(r.status, 503, "redb refuses until reopened: {}", r.text());
    for path in ["/healthz", "/readyz"] {
        let r = get(addr, path);
        assert_eq!(
            r.status,
            503,
            "{path} while no change can be stored: {}",
            r.text()
        );
    }
    let metrics = get(addr, "/metrics").text();
    assert!(
        metrics.contains("checkin_store_write_failed{store=\"health\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("checkin_store_write_failed{store=\"log\"} 0"));
    let started = Instant::now();
    target.stop();
    eprintln!("stopped in {:?}", started.elapsed());
    let target = Target::start(&data);
    let addr = target.addr();
    assert_eq!(get(addr, "/healthz").status, 200);
    assert!(get(addr, "/metrics")
        .text()
        .contains("checkin_store_write_failed{store=\"health\"} 0"));
    let r = post_json(addr, "/v1/cases", &case(2_000));
    assert_eq!(r.status, 201, "{}", r.text());
    target.stop();
}

/// A change whose audit entry `audit.log` refused (its disk full, the health database's not) is
/// made and answered `503`; its entry is kept in `audit-owed.log` and moved into `audit.log` once
/// that takes appends again, while the server runs or at its next start, so every registered
/// case has its entry, exactly once, and a retry of the change (`200`, no change) writes none.
#[test]
fn a_change_whose_audit_entry_was_refused_is_audited_once_space_returns() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("audit-disk");
    let Some(_fs) = Tmpfs::mount(&mnt, "1m") else {
        return;
    };
    let data = dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    // audit.log alone on the small disk
    std::os::unix::fs::symlink(mnt.join("audit.log"), data.join("audit.log")).unwrap();
    let filler = mnt.join("filler");
    let fill = || {
        let mut f = fs::File::create(&filler).unwrap();
        let chunk = vec![0x5au8; 16 << 10];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&[0]).is_ok() {}
    };
    // one time for every request, so that a retry is the identical request
    let sampled_at = now() - 3600;
    let case =
        |i: usize| format!(r#"{{"id":"owed-{i}","person":"owed-{i}","sampled_at":{sampled_at}}}"#);
    let post_case = |addr, i: usize| post_json(addr, "/v1/cases", &case(i));
    let refused = |addr, i: usize| {
        let r = post_case(addr, i);
        assert_eq!(r.status, 503, "audit.log has no room: {}", r.text());
        // made all the same (the health database has room)
        let r = get(addr, &format!("/v1/cases/owed-{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let audited = |addr| -> Vec<String> {
        let r = get(addr, "/v1/audit?since=0");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "/v1/cases")
            .map(|e| e["subject"].as_str().unwrap().to_string())
            .collect()
    };
    // While the server runs: moved once audit.log takes appends again.
    let owed_file = data.join("audit-owed.log");
    let target = Target::start(&data);
    let addr = target.addr();
    fill();
    refused(addr, 0);
    refused(addr, 1);
    assert!(owed_file.exists(), "the entries are not kept");
    assert_eq!(audited(addr), Vec::<String>::new());
    fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while audited(addr).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the owed entries are not in audit.log 20 s after space returned"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(audited(addr), ["owed-0", "owed-1"]);
    assert!(!owed_file.exists());
    target.stop();

    // Stopped while the disk is full (another store, whose audit.log has no room yet): moved
    // at the next start.
    let data = dir.path().join("data-2");
    fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(mnt.join("audit-2.log"), data.join("audit.log")).unwrap();
    let owed_file = data.join("audit-owed.log");
    let target = Target::start(&data);
    let addr = target.addr();
    fill();
    refused(addr, 0);
    refused(addr, 1);
    target.stop();
    assert!(owed_file.exists(), "the entries are not kept");
    fs::remove_file(&filler).unwrap();
    let target = Target::start(&data);
    let addr = target.addr();
    assert!(!owed_file.exists(), "not moved at start");
    assert_eq!(audited(addr), ["owed-0", "owed-1"]);
    // the retries find the cases made: no change, no entry
    for i in 0..2 {
        assert_eq!(post_case(addr, i).status, 200);
    }
    assert_eq!(post_case(addr, 2).status, 201);
    assert_eq!(audited(addr), ["owed-0", "owed-1", "owed-2"]);
    target.stop();

    // Restarted while the disk is still full (a third store): the start cannot move them, the
    // running server does once space returns.
    let data = dir.path().join("data-3");
    fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(mnt.join("audit-3.log"), data.join("audit.log")).unwrap();
    let owed_file = data.join("audit-owed.log");
    let target = Target::start(&data);
    let addr = target.addr();
    fill();
    refused(addr, 0);
    target.stop();
    let target = Target::start(&data);
    let addr = target.addr();
    assert!(
        owed_file.exists(),
        "the entry is not kept while the disk is full"
    );
    fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while audited(addr).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the entry owed at start is not in audit.log 20 s after space returned"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(audited(addr), ["owed-0"]);
    assert!(!owed_file.exists());
    target.stop();
}
