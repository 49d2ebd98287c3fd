//! Every way an HTTP request can fail, and its RFC 9457 `application/problem+json` rendering.
//!
//! Handlers return [`ApiError`]; only this module turns one into a response, so every error the
//! server ever sends has the same shape (`type`, `title`, `status`, `detail`) and the headers its
//! status calls for (`Allow` on 405, `WWW-Authenticate` on 401, `Retry-After` on 503,
//! `Connection: close` when the request body was not read to its end).

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

/// The response body type of every route: a whole body, or a live stream (Server-Sent Events).
pub type Body = Either<Full<Bytes>, http_body_util::channel::Channel<Bytes>>;

/// The RFC 9457 members, in the RFC's order.
#[derive(serde::Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    type_uri: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

/// Seconds a client is told to wait after a 503.
pub const RETRY_AFTER_S: u32 = 5;

/// A failed request. The `String`s are the problem's `detail`: written for the client, never
/// containing anything the client did not send or may not see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed body, query or field.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no bearer token, or one the tokens file does not list.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a known token whose role may not use this route or venue.
    #[error("{0}")]
    Forbidden(String),
    /// 404: unknown route, venue or person.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request contradicts what is stored (a case id reused with other fields, a
    /// second active case, a status change the case's status does not allow).
    #[error("{0}")]
    Conflict(String),
    /// 405: the path exists with other methods (listed in `Allow`).
    #[error("method not allowed; this path accepts {allow}")]
    MethodNotAllowed { allow: String },
    /// 408: the request body did not arrive in time.
    #[error("{0}")]
    Timeout(String),
    /// 413: the body is over 16 MiB or holds over 100,000 scans.
    #[error("{0}")]
    TooLarge(String),
    /// 415: a body of a type this route does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: the store cannot acknowledge right now (disk full, sync failed, shutting down), or the
    /// server is at its connection limit.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a fault of the server or its store, never of the request.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem `type`: a URN naming the kind of problem (listed in docs/api.md).
    pub fn type_uri(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "urn:checkin:problem:bad-request",
            ApiError::Unauthorized(_) => "urn:checkin:problem:unauthorized",
            ApiError::Forbidden(_) => "urn:checkin:problem:forbidden",
            ApiError::NotFound(_) => "urn:checkin:problem:not-found",
            ApiError::MethodNotAllowed { .. } => "urn:checkin:problem:method-not-allowed",
            ApiError::Conflict(_) => "urn:checkin:problem:conflict",
            ApiError::Timeout(_) => "urn:checkin:problem:request-timeout",
            ApiError::TooLarge(_) => "urn:checkin:problem:payload-too-large",
            ApiError::UnsupportedMediaType(_) => "urn:checkin:problem:unsupported-media-type",
            ApiError::Unavailable(_) => "urn:checkin:problem:unavailable",
            ApiError::Internal(_) => "urn:checkin:problem:internal",
        }
    }

    /// The problem `title`: short and the same for every problem of this type.
    pub fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "Bad request",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) => "Not found",
            ApiError::MethodNotAllowed { .. } => "Method not allowed",
            ApiError::Conflict(_) => "Conflict",
            ApiError::Timeout(_) => "Request timeout",
            ApiError::TooLarge(_) => "Payload too large",
            ApiError::UnsupportedMediaType(_) => "Unsupported media type",
            ApiError::Unavailable(_) => "Service unavailable",
            ApiError::Internal(_) => "Internal server error",
        }
    }

    /// Maps an engine error: retryable conditions are 503, the rest 500 (never the client's fault).
    /// The detail names the condition without internal paths; the full error goes to the log,
    /// at most one line every ten seconds so a failing disk cannot flood it.
    pub fn from_engine(err: &engine::Error) -> ApiError {
        use engine::Error as E;
        let detail = match err {
            E::InvalidVenue(e) => return ApiError::BadRequest(e.to_string()),
            E::InvalidTrace(e) => return ApiError::BadRequest(e.to_string()),
            E::NoSpace(_) => "the store is out of disk space; nothing of this request was acknowledged",
            E::ShuttingDown => "the server is shutting down; retry shortly",
            E::Poisoned(_) => {
                "the store stopped acknowledging after a failed disk write; the operator must restart it"
            }
            E::Io { .. } => "the store could not write to disk; nothing of this request was acknowledged",
            E::Forward(_) => "the cluster could not store the audit entry of this request; retry shortly",
            _ => "",
        };
        log_limited(err);
        if err.is_unavailable() {
            ApiError::Unavailable(detail.to_owned())
        } else {
            ApiError::Internal("the store failed; the operator has been told in the log".into())
        }
    }

    /// The problem+json response.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let detail = self.to_string();
        let body = serde_json::to_vec(&Problem {
            type_uri: self.type_uri(),
            title: self.title(),
            status: status.as_u16(),
            detail: &detail,
        })
        .unwrap_or_default();
        let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body))));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            ApiError::MethodNotAllowed { allow } => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    headers.insert(ALLOW, v);
                }
            }
            ApiError::Unauthorized(_) => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"checkin\""),
                );
            }
            ApiError::Unavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
            }
            ApiError::TooLarge(_) | ApiError::Timeout(_) => {
                // The body was not read to its end: the connection cannot be reused.
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}

/// Logs a store error, at most once every ten seconds.
/// True at most once every 10 s per `last` (which holds the unix second it last said yes), so a
/// failing disk or a flood of refusals does not flood the log.
pub(crate) fn once_per_10s(last: &std::sync::atomic::AtomicU64) -> bool {
    use std::sync::atomic::Ordering;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let prev = last.load(Ordering::Relaxed);
    now >= prev.saturating_add(10)
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

fn log_limited(err: &engine::Error) {
    use std::sync::atomic::AtomicU64;
    static LAST: AtomicU64 = AtomicU64::new(0);
    if once_per_10s(&LAST) {
        if err.is_unavailable() {
            tracing::warn!(error = %err, "store unavailable: answering 503 (logged at most every 10 s)");
        } else {
            tracing::error!(error = %err, "store error: answering 500 (logged at most every 10 s)");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn problems_have_the_rfc_9457_members() {
        let resp = ApiError::MethodNotAllowed {
            allow: "GET".into(),
        }
        .into_response();
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()[ALLOW], "GET");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
        let body = resp.into_body().collect().await.map(|c| c.to_bytes());
        let v: serde_json::Value = serde_json::from_slice(&body.unwrap_or_default()).unwrap();
        assert_eq!(v["status"], 405);
        assert_eq!(v["title"], "Method not allowed");
        assert!(v["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:checkin:problem:"));
        assert!(v["detail"].as_str().unwrap().contains("GET"));
    }

    #[test]
    fn unavailable_says_when_to_retry() {
        let resp = ApiError::Unavailable("x".into()).into_response();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()[RETRY_AFTER], "5");
    }
}
