//! The api tests' layer over the shared helpers of `checkin_tests`: the test tokens file and its
//! role tokens, `Opts` (tokens, options, stay, durability; engine durability `Os` for speed, a
//! `ManualClock`, a temporary data directory), a `Server` in the test's own runtime (started and
//! stopped by `checkin_tests::Serving`) with request shorthands over the lib's HTTP client and
//! `http::Response`, and an SSE `Stream` reader.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use api::{Access, App, ServeError, ServerOptions, TokenSet};
use bytes::Bytes;
use checkin_tests::http::{self, Response};
use checkin_tests::Serving;
use engine::{Config, Durability, Engine, ManualClock};
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::Request;
use serde_json::Value;
use tokio::net::TcpStream;

/// The manual clock's start: 2027-01-15.
pub const T0: i64 = 1_800_000_000;

/// Bearer tokens of the test tokens file, one per role.
pub const ADMIN: &str = "admin-token";
pub const SCANNER: &str = "scanner-token";
pub const EPI: &str = "epi-token";
pub const METRICS: &str = "metrics-token";
/// Owns venue `V1` only.
pub const OWNER: &str = "owner-token";
pub const SAMPLER: &str = "sampler-token";
pub const LAB: &str = "lab-token";
pub const VACCINATOR: &str = "vaccinator-token";
pub const APP: &str = "app-token";

/// The test tokens file: one token per role; the venue token owns `V1`.
pub fn tokens_toml() -> String {
    let entry = |name: &str, role: &str, token: &str, venues: &str| {
        format!(
            "[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n{venues}\n",
            api::token_digest_hex(token)
        )
    };
    [
        entry("root", "admin", ADMIN, ""),
        entry("gateway-1", "scanner", SCANNER, ""),
        entry("cdc", "epidemiologist", EPI, ""),
        entry("prometheus", "metrics", METRICS, ""),
        entry("v1-owner", "venue", OWNER, "venues = [\"V1\"]"),
        entry("site-sampler", "sampler", SAMPLER, ""),
        entry("lab-1", "lab", LAB, ""),
        entry("vax-site", "vaccinator", VACCINATOR, ""),
        entry("citizen-app", "app", APP, ""),
    ]
    .concat()
}

/// How to start a test server.
pub struct Opts {
    pub tokens: bool,
    pub options: ServerOptions,
    pub default_stay_s: u32,
    /// Engine durability `Fsync` instead of `Os`.
    pub fsync: bool,
    /// The case policy.
    pub policy: health::Policy,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            tokens: false,
            options: ServerOptions::default(),
            default_stay_s: engine::DEFAULT_STAY_S,
            fsync: false,
            policy: health::Policy::default(),
        }
    }
}

/// A running in-process server.
pub struct Server {
    pub addr: SocketAddr,
    pub app: App,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    serving: Serving,
}

pub fn open_engine(dir: &Path, clock: &Arc<ManualClock>, opts: &Opts) -> Engine {
    let mut c = Config::new(dir);
    c.durability = if opts.fsync {
        Durability::Fsync
    } else {
        Durability::Os
    };
    c.clock = clock.clone();
    c.segment_bytes = 1 << 20;
    c.default_stay_s = opts.default_stay_s;
    Engine::open(c).expect("open engine")
}

impl Server {
    /// Open mode, default options.
    pub async fn start() -> Server {
        Server::start_with(Opts::default()).await
    }

    /// With the test tokens file.
    pub async fn start_with_tokens() -> Server {
        Server::start_with(Opts {
            tokens: true,
            ..Opts::default()
        })
        .await
    }

    pub async fn start_with(opts: Opts) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        Server::start_in(dir, clock, opts).await
    }

    /// Starts over an existing data directory.
    pub async fn start_in(dir: tempfile::TempDir, clock: Arc<ManualClock>, opts: Opts) -> Server {
        let engine = {
            let path = dir.path().to_owned();
            let clock = clock.clone();
            let eopts = Opts {
                options: ServerOptions::default(),
                ..opts
            };
            let engine =
                tokio::task::spawn_blocking(move || open_engine(&path, &clock, &eopts)).await;
            engine.unwrap()
        };
        let access = if opts.tokens {
            Access::Tokens(TokenSet::parse(&tokens_toml()).unwrap())
        } else {
            Access::Open
        };
        let health = {
            let engine = engine.clone();
            let mut config = health::HealthConfig::new(dir.path());
            config.policy = opts.policy;
            tokio::task::spawn_blocking(move || health::Health::open(engine, config))
                .await
                .unwrap()
                .unwrap()
        };
        let app = App::new(engine, health, access, opts.options).unwrap();
        // The certificate key in the data directory, as the binary does without --signing-key.
        let (key, _) = api::load_signing_key(None, dir.path()).unwrap();
        let app = app.with_certificates(key, "VN", 365).unwrap();
        let serving = Serving::start(app.clone()).await;
        Server {
            addr: serving.addr,
            app,
            clock,
            dir,
            serving,
        }
    }

    /// Signals shutdown and waits for `serve` to return; gives the data directory back.
    /// Stops the server cleanly and starts a new one with tokens on the same directory and
    /// clock: what a restart keeps is what it read back from disk.
    pub async fn restart_with_tokens(self) -> Server {
        let clock = self.clock.clone();
        let (stopped, dir) = self.stop().await;
        stopped.unwrap_or_else(|e| panic!("stop: {e}"));
        Server::start_in(
            dir,
            clock,
            Opts {
                tokens: true,
                ..Opts::default()
            },
        )
        .await
    }

    pub async fn stop(mut self) -> (Result<(), ServeError>, tempfile::TempDir) {
        let res = self.shutdown().await;
        (res, self.dir)
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn shutdown(&mut self) -> Result<(), ServeError> {
        self.serving
            .shutdown()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn engine(&self) -> &Engine {
        self.app.engine()
    }

    /// Sends one request on a fresh connection.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response {
        send(self.addr, method, path, token, headers, body.into()).await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send("GET", path, None, &[], Bytes::new()).await
    }

    pub async fn get_as(&self, path: &str, token: &str) -> Response {
        self.send("GET", path, Some(token), &[], Bytes::new()).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.send(
            "POST",
            path,
            None,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    pub async fn post_as(&self, path: &str, token: &str, body: &Value) -> Response {
        self.send(
            "POST",
            path,
            Some(token),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    /// Registers venues `ids` (open mode or admin token).
    pub async fn venues(&self, ids: &[&str]) {
        let body: Vec<Value> = ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "name": format!("Venue {id}"), "province": "Soc Trang"}))
            .collect();
        let token = ADMIN;
        let r = self
            .send(
                "POST",
                "/v1/venues",
                Some(token),
                &[],
                Value::Array(body).to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// Posts scans as a JSON array (admin token, which open mode ignores).
    pub async fn scans(&self, scans: &Value) -> Response {
        self.post_as("/v1/scans", ADMIN, scans).await
    }
}

/// Sends one request on a fresh connection with the lib's client (on a blocking thread, so a
/// server in this runtime keeps serving) and reads the whole response.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Response {
    let method = method.to_string();
    let path = path.to_string();
    let mut owned: Vec<(String, String)> = Vec::new();
    if let Some(t) = token {
        owned.push(("authorization".into(), format!("Bearer {t}")));
    }
    owned.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        http::request(addr, &method, &path, &headers, &body)
    })
    .await
    .unwrap()
    .unwrap()
}

/// An open streaming response (SSE): read chunks as they come.
pub struct Stream {
    pub status: u16,
    pub headers: HeaderMap,
    body: hyper::body::Incoming,
    pub buf: String,
}

impl Stream {
    /// Opens a stream with the admin token (ignored in open mode).
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Stream {
        Stream::open_as(addr, path, Some(ADMIN), headers).await
    }

    pub async fn open_as(
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Stream {
        let stream = TcpStream::connect(addr).await.unwrap();
        Stream::open_on(stream, addr, path, token, headers).await
    }

    /// Opens a stream over a socket with a tiny receive buffer (a subscriber that stalls fast).
    pub async fn open_small_buffer(addr: SocketAddr, path: &str) -> Stream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        Stream::open_on(stream, addr, path, Some(ADMIN), &[]).await
    }

    async fn open_on(
        stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Stream {
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .uri(path)
            .header("host", addr.to_string());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        Stream {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    /// Reads until `buf` contains `needle` (or the timeout passes); true if found.
    pub async fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        // Search only what arrived since the last look (the buffer may grow to megabytes).
        let mut from: usize = 0;
        loop {
            let mut start = from.saturating_sub(needle.len());
            while !self.buf.is_char_boundary(start) {
                start -= 1;
            }
            if self.buf[start..].contains(needle) {
                return true;
            }
            from = self.buf.len();
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                _ => return false,
            }
        }
    }

    /// Reads until the stream ends (or the timeout passes); true if it ended.
    pub async fn wait_end(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                Ok(_) => return true,
                Err(_) => return false,
            }
        }
    }

    /// The `data:` payloads received so far, parsed.
    pub fn events(&self) -> Vec<Value> {
        self.buf
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

/// A scan object.
pub fn scan(person: &str, venue: &str, ts: i64, action: &str) -> Value {
    serde_json::json!({"person": person, "venue": venue, "ts": ts, "action": action})
}
