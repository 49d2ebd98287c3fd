//! Shared by the cluster crate's tests that run processes through `deploy/local-cluster.sh`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `deploy/local-cluster.sh` of this checkout.
pub fn local_cluster_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-cluster.sh")
}

/// Kills the cluster process `name` of the cluster in `dir` with `kill -9` (its pid from
/// `dir/pids/NAME.pid`) and waits until it is gone (or a zombie), so that `restart` sees it
/// stopped.
pub fn kill9(dir: &Path, name: &str) {
    let pid =
        std::fs::read_to_string(dir.join("pids").join(format!("{name}.pid"))).expect("pid file");
    let pid = pid.trim();
    let killed = Command::new("kill")
        .args(["-9", pid])
        .status()
        .expect("kill");
    assert!(killed.success(), "kill -9 {name}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(Instant::now() < deadline, "{name} did not die");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three NATS servers started by `deploy/local-cluster.sh nats` (fails, not skips, without
/// `nats-server`), stopped on drop.
#[allow(dead_code)] // not every test crate that shares this module uses it
pub struct Servers {
    dir: tempfile::TempDir,
}

#[allow(dead_code)]
impl Servers {
    pub fn start() -> (Servers, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("bash")
            .arg(local_cluster_script())
            .args(["nats", &dir.path().to_string_lossy()])
            .stderr(Stdio::inherit())
            .output()
            .expect("run deploy/local-cluster.sh");
        assert!(
            out.status.success(),
            "local-cluster.sh nats failed (is nats-server installed? bash scripts/test-deps.sh)"
        );
        let urls = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(urls.starts_with("nats://"), "{urls}");
        (Servers { dir }, urls)
    }

    pub fn kill9(&self, name: &str) {
        kill9(self.dir.path(), name);
    }

    pub fn restart(&self, name: &str) {
        let ok = Command::new("bash")
            .arg(local_cluster_script())
            .args(["restart", &self.dir.path().to_string_lossy(), name])
            .status()
            .expect("restart");
        assert!(ok.success(), "restart {name}");
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(local_cluster_script())
            .args(["stop", &self.dir.path().to_string_lossy()])
            .status();
    }
}

#[allow(dead_code)]
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `target/<profile>/` of this test executable.
#[allow(dead_code)]
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Builds `checkin-server` next to `checkin-shard` (another package's binary is not built by
/// `cargo test` of this one).
#[allow(dead_code)]
pub fn build_server(dir: &Path) {
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
    // `cargo test` sets these for this package; ring's build script watches several of them, so
    // passing them on would rebuild ring and everything above it (a minute) on every run.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| k.starts_with(p))
            || k == "CARGO_PRIMARY_PACKAGE"
            || k == "CARGO_TARGET_TMPDIR"
        {
            cmd.env_remove(&*k);
        }
    }
    if profile == "release" {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo build");
    assert!(status.success(), "cannot build checkin-server");
}

#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// An HTTP answer.
#[allow(dead_code)]
pub struct Resp {
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    pub body: String,
}

#[allow(dead_code)]
impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request (`Connection: close`), with `token` as its bearer token if any.
#[allow(dead_code)]
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<Resp> {
    request_with(base, method, path, token, &[], body)
}

/// [`request`] with more request headers.
#[allow(dead_code)]
pub fn request_with(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> std::io::Result<Resp> {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr)?;
    // Longer than a health change may wait for its outcome (30 s, then 503).
    s.set_read_timeout(Some(Duration::from_secs(40)))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    for (name, value) in headers {
        auth.push_str(&format!("{name}: {value}\r\n"));
    }
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
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
    let lower = head.to_ascii_lowercase();
    let retry_after = lower
        .lines()
        .find_map(|l| l.strip_prefix("retry-after:"))
        .map(|v| v.trim().to_string());
    let body = if lower.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok(Resp {
        status,
        retry_after,
        body,
    })
}

#[allow(dead_code)]
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
