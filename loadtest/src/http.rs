//! Connections to the (loopback) target on hyper 1.x's low-level client over a tokio
//! `TcpStream`. Over HTTP/1.1 each load worker owns one keep-alive connection, so
//! `--connections C` means exactly C sockets. With `--http2` every worker sends its requests as
//! streams of one shared HTTP/2 connection (cleartext, prior knowledge), so C means C requests in
//! flight on one socket. A broken connection is dropped and re-opened on the next request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::net::Target;

/// A request that got no HTTP answer.
#[derive(Debug)]
pub enum TransportError {
    /// The TCP connect failed.
    Connect(std::io::Error),
    /// No complete answer within the timeout.
    Timeout,
    /// The HTTP exchange failed (reset, closed mid-response, protocol error).
    Http(hyper::Error),
    /// The request could not be built (bad token characters).
    Request(String),
}

impl TransportError {
    /// A short stable label for the report.
    pub fn kind(&self) -> &'static str {
        match self {
            TransportError::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connect refused"
            }
            TransportError::Connect(_) => "connect failed",
            TransportError::Timeout => "timeout",
            TransportError::Http(e) if e.is_incomplete_message() => "closed mid-response",
            TransportError::Http(e) if e.is_closed() || e.is_canceled() => "connection closed",
            TransportError::Http(_) => "http error",
            TransportError::Request(_) => "bad request setup",
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Connect(e) => write!(f, "connect: {e}"),
            TransportError::Timeout => write!(f, "no answer within the timeout"),
            TransportError::Http(e) => write!(f, "http: {e}"),
            TransportError::Request(e) => write!(f, "request: {e}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// Settings shared by every connection of a run.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    pub target: Target,
    /// Bearer token, sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Whole-request timeout (connect + send + full answer).
    pub timeout: Duration,
    /// `Some`: every [`Conn`] sends over this one shared HTTP/2 connection.
    pub http2: Option<SharedHttp2>,
}

/// The one HTTP/2 connection of a run, opened by the first request that needs it.
#[derive(Clone, Default)]
pub struct SharedHttp2(Arc<Mutex<Option<http2::SendRequest<Full<Bytes>>>>>);

impl fmt::Debug for SharedHttp2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedHttp2")
    }
}

/// Where a [`Conn`] sends its requests.
enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Sender::Http1(s) => s.ready().await,
            Sender::Http2(s) => s.ready().await,
        }
    }

    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
        match self {
            Sender::Http1(s) => s.send_request(req).await,
            Sender::Http2(s) => s.send_request(req).await,
        }
    }
}

/// A lazily opened keep-alive connection.
pub struct Conn {
    settings: Arc<ConnSettings>,
    auth: Option<HeaderValue>,
    host: Option<HeaderValue>,
    sender: Option<Sender>,
    /// Connections this worker opened so far (1 in a healthy HTTP/1.1 run; with HTTP/2 the
    /// worker that opened the shared connection counts it).
    pub opened: u64,
}

/// Status and body of an answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Conn {
    /// A connection (not opened until the first request).
    pub fn new(settings: Arc<ConnSettings>) -> Conn {
        let auth = settings
            .token
            .as_ref()
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok());
        let host = HeaderValue::from_str(&settings.target.authority).ok();
        Conn {
            settings,
            auth,
            host,
            sender: None,
            opened: 0,
        }
    }

    async fn connect(&self) -> Result<TcpStream, TransportError> {
        let stream = TcpStream::connect(self.settings.target.addr)
            .await
            .map_err(TransportError::Connect)?;
        // Small requests must not wait for Nagle; failure to set it only costs latency.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn open(&mut self) -> Result<Sender, TransportError> {
        // Errors of a connection task surface on the request that hit them; nothing more to do.
        if let Some(shared) = &self.settings.http2 {
            let mut slot = shared.0.lock().await;
            if let Some(s) = slot.as_ref().filter(|s| !s.is_closed()) {
                return Ok(Sender::Http2(s.clone()));
            }
            let stream = self.connect().await?;
            let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(TransportError::Http)?;
            tokio::spawn(connection);
            *slot = Some(sender.clone());
            self.opened += 1;
            return Ok(Sender::Http2(sender));
        }
        let stream = self.connect().await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(TransportError::Http)?;
        tokio::spawn(connection);
        self.opened += 1;
        Ok(Sender::Http1(sender))
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<Answer, TransportError> {
        if let Some(token) = &self.settings.token {
            if self.auth.is_none() {
                return Err(TransportError::Request(format!(
                    "token of {} bytes is not a valid header value",
                    token.len()
                )));
            }
        }
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.open().await?,
        };
        if sender.ready().await.is_err() {
            // The server closed the idle keep-alive connection: open a fresh one.
            sender = self.open().await?;
            sender.ready().await.map_err(TransportError::Http)?;
        }
        let mut req = Request::builder().method(method).uri(path);
        if let Some(h) = &self.host {
            req = req.header(HOST, h.clone());
        }
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        req = req.header(
            USER_AGENT,
            concat!("checkin-loadtest/", env!("CARGO_PKG_VERSION")),
        );
        let req = req
            .body(Full::new(body))
            .map_err(|e| TransportError::Request(e.to_string()))?;
        let resp = sender.send(req).await.map_err(TransportError::Http)?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(TransportError::Http)?
            .to_bytes();
        self.sender = Some(sender);
        Ok(Answer { status, body })
    }

    /// Sends one request and reads the whole answer, within the run's timeout. On any failure
    /// the connection is dropped (the next request opens a new one).
    pub async fn request(
        &mut self,
        method: Method,
        route: &str,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<Answer, TransportError> {
        let path = self.settings.target.path(route);
        let timeout = self.settings.timeout;
        match tokio::time::timeout(timeout, self.exchange(method, &path, content_type, body)).await
        {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(TransportError::Timeout)
            }
        }
    }
}
