//! One keep-alive HTTP/1.1 connection to the (loopback) target, on hyper 1.x's low-level
//! `client::conn::http1` over a tokio `TcpStream`. Each load worker owns one [`Conn`], so
//! `--connections C` means exactly C sockets. A broken connection is dropped and re-opened on
//! the next request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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
}

/// A lazily opened keep-alive connection.
pub struct Conn {
    settings: Arc<ConnSettings>,
    auth: Option<HeaderValue>,
    host: Option<HeaderValue>,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Connections opened so far (1 in a healthy run).
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

    async fn open(&mut self) -> Result<SendRequest<Full<Bytes>>, TransportError> {
        let stream = TcpStream::connect(self.settings.target.addr)
            .await
            .map_err(TransportError::Connect)?;
        // Small requests must not wait for Nagle; failure to set it only costs latency.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(TransportError::Http)?;
        tokio::spawn(async move {
            // Errors surface on the request that hit them; nothing more to do here.
            let _ = connection.await;
        });
        self.opened += 1;
        Ok(sender)
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
        let resp = sender
            .send_request(req)
            .await
            .map_err(TransportError::Http)?;
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
