//! Shared helpers of the integration and reliability tests (integration tests live in
//! `tests/tests/`).
//!
//! - [`server_bin`]: the real `checkin-server` binary, built on first use if missing.
//! - [`ServerProcess`]: that binary spawned on a free loopback port over a data directory, with
//!   its log captured to a file, `/healthz` awaited, and `kill -9` / SIGTERM at will.
//! - [`Serving`]: the HTTP service (`api::serve`) started on a free port as a task of the current
//!   tokio runtime and stopped gracefully; the api tests' harness (`tests/api_support`) builds
//!   its `Server` on it.
//! - [`InProcess`]: [`Serving`] on a runtime of its own, over an engine [`engine::Config`] of the
//!   test's choosing (e.g. tiny segments), for behaviour the binary's flags cannot reach.
//! - [`http`]: a tiny blocking HTTP/1.1 client over `std::net::TcpStream` (one request per
//!   connection), so tests can also send bytes no well-behaved client would; its
//!   [`http::Response`] is the whole-response type of the api and reliability suites.
//! - [`Rng`]: a seeded SplitMix64 generator; every random choice of the suites is reproducible
//!   from the seed they print.
//!
//! Network rule: everything here only ever talks to 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

/// A seeded, reproducible random generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 >= 1.0 - p
    }
}

/// The base seed of a suite: `CHECKIN_TEST_SEED` if set, else `default`. Printed by callers.
pub fn seed(default: u64) -> u64 {
    std::env::var("CHECKIN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// True when the tests run as root (mounts, and permission bits do not stop root).
/// Says why a test cannot run here and returns, so the test can end early; under CI (`CI` set,
/// as `.ci/run` does) it fails instead, because a test that quietly skips has not passed.
pub fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("this test cannot run here and CI runs every test: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

pub fn is_root() -> bool {
    // The effective uid from /proc (no libc in this crate).
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// `target/<profile>/` of the running test executable (`target/<profile>/deps/<test>-<hash>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    deps.parent().unwrap().to_path_buf()
}

/// Path of the `checkin-server` binary next to the test executable. Built once per test process
/// with `cargo build -p checkin-api --bin checkin-server` (a no-op when it is up to date), since
/// a binary of another package is not guaranteed to be built by `cargo test`.
pub fn server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = profile_dir();
        let bin = dir.join("checkin-server");
        if std::env::var_os("CHECKIN_SERVER_BIN").is_some() {
            return PathBuf::from(std::env::var_os("CHECKIN_SERVER_BIN").unwrap());
        }
        let profile = dir.file_name().unwrap().to_string_lossy().to_string();
        let target = dir.parent().unwrap().to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-q",
            "-p",
            "checkin-api",
            "--bin",
            "checkin-server",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target);
        if profile != "debug" {
            cmd.args(["--profile", &profile]);
        }
        let status = cmd.status();
        match status {
            Ok(s) if s.success() => {}
            other if bin.exists() => {
                eprintln!("notice: building checkin-server failed ({other:?}); using {bin:?}")
            }
            other => panic!("cannot build checkin-server: {other:?}"),
        }
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The segment size the reliability suites ask the server for, through
/// `CHECKIN_SEGMENT_BYTES` (the engine's minimum, 64 KiB, so rollover happens every few
/// hundred scans).
pub const SMALL_SEGMENT: u64 = 64 << 10;

/// How to start a `checkin-server` process.
#[derive(Debug, Clone)]
pub struct Launch {
    pub data: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Run as this uid/gid (root only), e.g. to make permission bits bite.
    pub uid: Option<u32>,
}

impl Launch {
    /// Defaults: open mode, fsync durability, small segments requested.
    pub fn new(data: &Path) -> Launch {
        Launch {
            data: data.to_path_buf(),
            args: Vec::new(),
            env: vec![("CHECKIN_SEGMENT_BYTES".into(), SMALL_SEGMENT.to_string())],
            uid: None,
        }
    }
    pub fn arg(mut self, a: impl Into<String>) -> Launch {
        self.args.push(a.into());
        self
    }
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Launch {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
        self
    }
}

/// A spawned `checkin-server`.
pub struct ServerProcess {
    pub addr: SocketAddr,
    pub child: Child,
    pub launch: Launch,
    /// Where stdout and stderr of this run go (appended, one file per data directory).
    pub log: PathBuf,
    /// Offset of this run's first log byte in `log`.
    log_start: u64,
}

/// The log file of the server runs over `data` (kept beside it, not inside it).
pub fn log_path(data: &Path) -> PathBuf {
    let mut name = data.file_name().unwrap().to_os_string();
    name.push(".server.log");
    data.parent().unwrap().join(name)
}

/// Spawns the server without waiting for it.
pub fn spawn_server(launch: &Launch, port: u16) -> (Child, PathBuf, u64) {
    use std::os::unix::process::CommandExt;
    let log = log_path(&launch.data);
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let start = file.metadata().unwrap().len();
    let mut cmd = Command::new(server_bin());
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(&launch.data)
        .args(&launch.args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (k, v) in &launch.env {
        cmd.env(k, v);
    }
    if let Some(uid) = launch.uid {
        cmd.uid(uid).gid(uid);
    }
    (cmd.spawn().unwrap(), log, start)
}

impl ServerProcess {
    /// Starts the server and waits (up to 60 s) until `/healthz` answers 200.
    pub fn start(launch: Launch) -> ServerProcess {
        match ServerProcess::try_start(launch) {
            Ok(s) => s,
            Err((msg, log)) => panic!("checkin-server did not start: {msg}\n--- log ---\n{log}"),
        }
    }

    /// Starts the server; on failure returns why and the log of this run.
    pub fn try_start(launch: Launch) -> Result<ServerProcess, (String, String)> {
        let mut last = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let (mut child, log, log_start) = spawn_server(&launch, port);
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("exited early with {status}");
                    let text = read_from(&log, log_start);
                    if text.contains("Address already in use") {
                        break; // port race: retry on another port
                    }
                    return Err((last, text));
                }
                if let Ok(r) = http::request(addr, "GET", "/healthz", &[], b"") {
                    if r.status == 200 {
                        return Ok(ServerProcess {
                            addr,
                            child,
                            launch,
                            log,
                            log_start,
                        });
                    }
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err((
                        "no healthy /healthz in 60 s".into(),
                        read_from(&log, log_start),
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err((last, String::new()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` and reap.
    pub fn kill9(mut self) -> Launch {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.launch.clone()
    }

    /// SIGTERM, then wait up to `timeout` for the exit status (kill -9 after that).
    pub fn sigterm(mut self, timeout: Duration) -> (Option<ExitStatus>, Launch) {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (Some(status), self.launch.clone());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return (None, self.launch.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// This run's log so far.
    pub fn log_text(&self) -> String {
        read_from(&self.log, self.log_start)
    }

    /// Resident set size in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> Option<u64> {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    pub fn get(&self, path: &str) -> http::Response {
        http::request(self.addr, "GET", path, &[], b"").unwrap()
    }

    pub fn post_json(&self, path: &str, body: &Value) -> http::Response {
        http::request(
            self.addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .unwrap()
    }

    /// `GET /v1/stats` (open mode).
    pub fn stats(&self) -> Value {
        let r = self.get("/v1/stats");
        assert_eq!(r.status, 200, "stats: {}", r.text());
        r.json()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal by name with `kill(1)` (no libc in this crate).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// A file's text from `offset` on (lossy).
pub fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(bytes.get(offset as usize..).unwrap_or(&[])).into_owned()
}

/// The segment files of a data directory, ascending.
pub fn segments(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(data)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Whether the binary honours `CHECKIN_SEGMENT_BYTES` (probed once: a fresh store's first
/// segment has the requested size).
pub fn small_segments_supported() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("probe");
        let server = ServerProcess::start(Launch::new(&data));
        let size = segments(&data)
            .first()
            .and_then(|p| fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        let _ = server.sigterm(Duration::from_secs(30));
        let ok = size == SMALL_SEGMENT;
        if !ok {
            eprintln!(
                "notice: checkin-server ignores CHECKIN_SEGMENT_BYTES (first segment is {size} \
                 bytes); rollover tests fall back to larger data or an in-process server"
            );
        }
        ok
    })
}

// ---------------------------------------------------------------------------------------------
// In-process server
// ---------------------------------------------------------------------------------------------

/// `api::serve` of an app on a free loopback port, as a task of the current tokio runtime: the
/// one in-process start and stop, shared by [`InProcess`] and the api tests' `Server`.
pub struct Serving {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), api::ServeError>>>,
}

impl Serving {
    /// Binds 127.0.0.1:0 and spawns `api::serve` until [`Serving::shutdown`] (or drop).
    pub async fn start(app: api::App) -> Serving {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(api::serve(listener, app, async move {
            let _ = stopped.await;
        }));
        Serving {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Signals shutdown and waits up to 60 s for `serve` to return: `Err` if it did not return
    /// in time or its task panicked, else what `serve` returned (`Ok(Ok(()))` once stopped).
    pub async fn shutdown(&mut self) -> Result<Result<(), api::ServeError>, String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .map_err(|_| "serve did not return in 60 s".to_string())
                .and_then(|joined| joined.map_err(|e| e.to_string())),
            None => Ok(Ok(())),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The HTTP service in this process, over an engine opened with the given config, on a runtime
/// of its own (for blocking tests).
pub struct InProcess {
    pub addr: SocketAddr,
    pub engine: engine::Engine,
    runtime: Option<tokio::runtime::Runtime>,
    serving: Serving,
}

impl InProcess {
    /// Opens the engine and serves it in open mode on a free port.
    pub fn start(config: engine::Config, options: api::ServerOptions) -> InProcess {
        let data_dir = config.data_dir.clone();
        let engine = engine::Engine::open(config).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let health =
            health::Health::open(engine.clone(), health::HealthConfig::new(&data_dir)).unwrap();
        let (key, _) = api::load_signing_key(None, &data_dir).unwrap();
        let app = api::App::new(engine.clone(), health, api::Access::Open, options)
            .unwrap()
            .with_certificates(key, certs::DEFAULT_ISSUER, certs::DEFAULT_CERTIFICATE_DAYS)
            .unwrap();
        let serving = runtime.block_on(Serving::start(app));
        InProcess {
            addr: serving.addr,
            engine,
            runtime: Some(runtime),
            serving,
        }
    }

    /// Graceful stop; returns what `serve` returned.
    pub fn stop(mut self) -> Result<(), String> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), String> {
        let res = match self.runtime.as_ref() {
            Some(rt) => rt
                .block_on(self.serving.shutdown())
                .and_then(|r| r.map_err(|e| e.to_string())),
            None => Ok(()),
        };
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        res
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

/// A minimal blocking HTTP/1.1 client: one request per connection (`Connection: close`).
pub mod http {
    use super::*;

    /// A whole response.
    #[derive(Debug, Clone)]
    pub struct Response {
        pub status: u16,
        /// Header names lower-cased.
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Response {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
        /// The body as JSON (panics with the body if it is not JSON).
        pub fn json(&self) -> Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
        }
        /// True for an RFC 9457 problem with this status.
        pub fn is_problem(&self, status: u16) -> bool {
            let ct_ok = self
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/problem+json"));
            let v: Option<Value> = serde_json::from_slice(&self.body).ok();
            ct_ok
                && self.status == status
                && v.is_some_and(|v| {
                    v["status"] == status
                        && v["type"].is_string()
                        && v["title"].is_string()
                        && v["detail"].is_string()
                })
        }
        /// Asserts an RFC 9457 problem with this status (exact content type); returns its body.
        pub fn assert_problem(&self, status: u16) -> Value {
            assert_eq!(self.status, status, "{}", self.text());
            assert_eq!(
                self.header("content-type"),
                Some("application/problem+json"),
                "{}",
                self.text()
            );
            let v = self.json();
            assert_eq!(v["status"], status);
            assert!(v["type"].is_string() && v["title"].is_string() && v["detail"].is_string());
            v
        }
    }

    /// Sends one request with a `Content-Length` body and reads the whole answer.
    pub fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        raw_request(addr, &raw, Duration::from_secs(60))
    }

    /// Writes `raw` bytes as they are and parses the answer (read until the server closes).
    pub fn raw_request(
        addr: SocketAddr,
        raw: &[u8],
        timeout: Duration,
    ) -> std::io::Result<Response> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        // The server may answer (413, 400) and close before the whole body is written: keep
        // what it said.
        let write_err = s.write_all(raw).err();
        let mut buf = Vec::new();
        let read = read_response(&mut s, &mut buf);
        match (read, write_err) {
            (Ok(r), _) => Ok(r),
            (Err(e), Some(w)) if buf.is_empty() => Err(w).or(Err(e)),
            (Err(e), _) => Err(e),
        }
    }

    /// One `read`, retried when a stop and continue of this process interrupts it (Linux gives
    /// `EINTR` on a socket with a receive timeout then, even with no signal handler).
    pub fn read_some(s: &mut TcpStream, chunk: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match s.read(chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// Reads one response from a stream the server closes after answering.
    pub fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Response> {
        let mut chunk = [0u8; 64 << 10];
        loop {
            match read_some(s, &mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !buf.is_empty() => {
                    break
                }
                Err(e) => return Err(e),
            }
            if let Some(r) = parse(buf) {
                return Ok(r);
            }
        }
        parse(buf).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "incomplete response: {:?}",
                    String::from_utf8_lossy(&buf[..buf.len().min(200)])
                ),
            )
        })
    }

    /// Parses a complete response, or `None` if more bytes are needed.
    pub fn parse(buf: &[u8]) -> Option<Response> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&buf[..end]).ok()?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let rest = &buf[end + 4..];
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let body = if let Some(len) = get("content-length") {
            let len: usize = len.parse().ok()?;
            if rest.len() < len {
                return None;
            }
            rest[..len].to_vec()
        } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            dechunk(rest)?
        } else {
            return None; // until EOF
        };
        Some(Response {
            status,
            headers,
            body,
        })
    }

    fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(
                std::str::from_utf8(&rest[..eol])
                    .ok()?
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            rest = &rest[eol + 2..];
            if size == 0 {
                return Some(out);
            }
            if rest.len() < size + 2 {
                return None;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scans
// ---------------------------------------------------------------------------------------------

/// One scan the tests sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scan {
    pub person: String,
    pub venue: String,
    pub ts: i64,
    pub out: bool,
}

impl Scan {
    pub fn to_json(&self) -> Value {
        json!({
            "person": self.person,
            "venue": self.venue,
            "ts": self.ts,
            "action": if self.out { "out" } else { "in" },
        })
    }
}

/// How a batch is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Object,
    Array,
    Ndjson,
}

/// Posts scans; `Ok(accepted)` only on a 200 whose `rejected` list is empty, `Err` with the
/// status (0 for a transport error) and body otherwise.
pub fn post_scans(
    addr: SocketAddr,
    scans: &[Scan],
    framing: Framing,
) -> Result<u64, (u16, String)> {
    let (ct, body) = match framing {
        Framing::Object => {
            assert_eq!(scans.len(), 1);
            ("application/json", scans[0].to_json().to_string())
        }
        Framing::Array => (
            "application/json",
            Value::Array(scans.iter().map(Scan::to_json).collect()).to_string(),
        ),
        Framing::Ndjson => (
            "application/x-ndjson",
            scans
                .iter()
                .map(|s| s.to_json().to_string() + "\n")
                .collect::<String>(),
        ),
    };
    match http::request(
        addr,
        "POST",
        "/v1/scans",
        &[("Content-Type", ct)],
        body.as_bytes(),
    ) {
        Ok(r) if r.status == 200 => {
            let v = r.json();
            let rejected = v["rejected"].as_array().map_or(0, Vec::len);
            if rejected != 0 {
                return Err((200, r.text()));
            }
            Ok(v["accepted"].as_u64().unwrap_or(0))
        }
        Ok(r) => Err((r.status, r.text())),
        Err(e) => Err((0, e.to_string())),
    }
}

/// Registers venues `V0..Vn` (stay 7200 s).
pub fn register_venues(addr: SocketAddr, n: usize) {
    let venues: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("V{i}"), "name": format!("venue {i}")}))
        .collect();
    let r = http::request(
        addr,
        "POST",
        "/v1/venues",
        &[("Content-Type", "application/json")],
        Value::Array(venues).to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "register venues: {}", r.text());
}

/// The visits of a person as `(venue, start, end)`, or `None` on 404.
pub fn person_visits(addr: SocketAddr, person: &str) -> Option<Vec<(String, i64, i64)>> {
    let t = now();
    let path = format!(
        "/v1/persons/{person}/visits?from={}&to={}",
        t - 30 * 86_400,
        t + 86_400
    );
    let r = http::request(addr, "GET", &path, &[], b"").unwrap();
    if r.status == 404 {
        return None;
    }
    assert_eq!(r.status, 200, "visits of {person}: {}", r.text());
    let v = r.json();
    Some(
        v["visits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["venue"].as_str().unwrap().to_string(),
                    x["start"].as_i64().unwrap(),
                    x["end"].as_i64().unwrap(),
                )
            })
            .collect(),
    )
}

/// The contract's visit algorithm (section 3) for one person, every venue with `stay` seconds.
pub fn expected_visits(scans: &[Scan], stay: i64) -> Vec<(String, i64, i64)> {
    let mut s: Vec<&Scan> = scans.iter().collect();
    s.sort_by(|a, b| (a.ts, a.out, &a.venue).cmp(&(b.ts, b.out, &b.venue)));
    s.dedup();
    let mut out = Vec::new();
    let mut open: Option<(String, i64, i64)> = None;
    for x in s {
        if let Some((v, start, deadline)) = open.clone() {
            if x.ts >= deadline {
                out.push((v, start, deadline));
                open = None;
            }
        }
        if !x.out {
            match open.as_mut() {
                Some((v, _, deadline)) if *v == x.venue => *deadline = x.ts + stay,
                _ => {
                    if let Some((v, start, _)) = open.take() {
                        out.push((v, start, x.ts));
                    }
                    open = Some((x.venue.clone(), x.ts, x.ts + stay));
                }
            }
        } else if open.as_ref().is_some_and(|(v, _, _)| *v == x.venue) {
            let (v, start, _) = open.take().unwrap();
            out.push((v, start, x.ts));
        }
    }
    if let Some(o) = open {
        out.push(o);
    }
    out.sort_by_key(|v| v.1);
    out
}

/// Concurrent writers posting fresh persons' scans (one `in`, or an `in` and an `out` 600 s
/// later) as single objects, JSON arrays and NDJSON, recording what was acknowledged.
pub struct Ingest {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<std::thread::JoinHandle<Vec<String>>>,
    /// Every scan of every request answered 200 with no rejection.
    pub acked: std::sync::Arc<std::sync::Mutex<Vec<Scan>>>,
    /// Scans sent in any request (acknowledged or not).
    pub sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Ingest {
    /// Starts `threads` writers on `addr`; persons are named `{prefix}t{thread}n{k}`, venues
    /// `V0..V{venues}`, timestamps in `now - ts_age.1 .. now - ts_age.0`.
    pub fn start(
        addr: SocketAddr,
        prefix: &str,
        threads: usize,
        venues: usize,
        seed: u64,
        ts_age: (i64, i64),
    ) -> Ingest {
        Ingest::start_paced(addr, prefix, threads, venues, seed, ts_age, Duration::ZERO)
    }

    /// Like [`Ingest::start`], each writer pausing `pause` after every request.
    pub fn start_paced(
        addr: SocketAddr,
        prefix: &str,
        threads: usize,
        venues: usize,
        seed: u64,
        ts_age: (i64, i64),
        pause: Duration,
    ) -> Ingest {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let handles = (0..threads)
            .map(|t| {
                let (stop, acked, sent) = (stop.clone(), acked.clone(), sent.clone());
                let prefix = prefix.to_string();
                std::thread::spawn(move || {
                    let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(t as u64));
                    let mut anomalies = Vec::new();
                    let mut k = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let framing = match rng.range(0, 10) {
                            0..=2 => Framing::Object,
                            3..=6 => Framing::Array,
                            _ => Framing::Ndjson,
                        };
                        let units = if framing == Framing::Object {
                            1
                        } else {
                            rng.range(1, 60)
                        };
                        let mut batch = Vec::new();
                        let t_now = now();
                        for _ in 0..units {
                            let person = format!("{prefix}t{t}n{k}");
                            k += 1;
                            let venue = format!("V{}", rng.range(0, venues as u64));
                            let ts = t_now - rng.range(ts_age.0 as u64, ts_age.1 as u64) as i64;
                            // The check-out must not be in the future (300 s skew allowance).
                            let pair =
                                framing != Framing::Object && rng.chance(0.5) && ts + 600 <= t_now;
                            batch.push(Scan {
                                person: person.clone(),
                                venue: venue.clone(),
                                ts,
                                out: false,
                            });
                            if pair {
                                batch.push(Scan {
                                    person,
                                    venue,
                                    ts: ts + 600,
                                    out: true,
                                });
                            }
                        }
                        if !pause.is_zero() {
                            std::thread::sleep(pause);
                        }
                        sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        match post_scans(addr, &batch, framing) {
                            Ok(n) if n == batch.len() as u64 => acked.lock().unwrap().extend(batch),
                            Ok(n) => anomalies
                                .push(format!("accepted {n} of {} fresh scans", batch.len())),
                            Err((0, _)) => break, // the server is gone
                            Err((status, body)) => {
                                anomalies.push(format!("{status}: {body}"));
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                    anomalies
                })
            })
            .collect();
        Ingest {
            stop,
            handles,
            acked,
            sent,
        }
    }

    pub fn acked_len(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the writers (they also stop on their own when the server dies) and returns the
    /// acknowledged scans and any unexpected answers.
    pub fn finish(self) -> (Vec<Scan>, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut anomalies = Vec::new();
        for h in self.handles {
            anomalies.extend(h.join().unwrap());
        }
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        (acked, anomalies)
    }
}

/// Groups scans by person.
pub fn by_person(scans: &[Scan]) -> std::collections::BTreeMap<String, Vec<Scan>> {
    let mut m: std::collections::BTreeMap<String, Vec<Scan>> = Default::default();
    for s in scans {
        m.entry(s.person.clone()).or_default().push(s.clone());
    }
    m
}

/// Opens the store in this process (after the server has stopped) and checks that every
/// acknowledged scan is there: each person's visits are exactly what their acknowledged scans
/// give. Returns the engine's stored scan count.
pub fn verify_offline(data: &Path, acked: &[Scan], retention_days: u32) -> u64 {
    let mut config = engine::Config::new(data);
    config.retention_days = retention_days;
    let engine = engine::Engine::open(config).unwrap();
    let t = now();
    let mut missing = Vec::new();
    for (person, scans) in by_person(acked) {
        let want = expected_visits(&scans, engine::DEFAULT_STAY_S as i64);
        let got: Vec<(String, i64, i64)> = engine
            .visits(&person, t - 40 * 86_400, t + 86_400)
            .unwrap_or_default()
            .into_iter()
            .map(|v| (v.venue.to_string(), v.start, v.end))
            .collect();
        if got != want {
            missing.push(format!("{person}: want {want:?}, got {got:?}"));
        }
    }
    let stored = engine.stats().scans;
    engine.shutdown().unwrap();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged persons lost or wrong after recovery, e.g. {:?}",
        missing.len(),
        by_person(acked).len(),
        &missing[..missing.len().min(5)]
    );
    stored
}
