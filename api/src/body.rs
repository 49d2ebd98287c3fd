//! Reading request bodies safely: media types, size caps and read deadlines.
//!
//! A body is refused before it is read when its `Content-Length` is over the cap, and the
//! streamed read stops as soon as the cap is passed (chunked bodies), so a 2 GiB upload costs the
//! server 16 MiB at most. Every frame must arrive within the idle timeout and the whole body
//! within the total timeout, so a slow or half-sent request holds only its own connection.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::HeaderMap;
use tokio::time::Instant;

use crate::decode::{ScanFormat, MAX_BODY_BYTES};
use crate::problem::ApiError;

/// A request body: from a connection, or (cluster mode) a health-domain request read back from
/// the stream to be applied here (`crate::cluster_mode`).
pub type ReqBody = Either<Incoming, Full<Bytes>>;
/// A request as the handlers take it.
pub type Req = hyper::Request<ReqBody>;

/// The body format named by `Content-Type`: JSON when absent; NDJSON only where `ndjson_ok`.
pub fn body_format(headers: &HeaderMap, ndjson_ok: bool) -> Result<ScanFormat, ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(ScanFormat::Json);
    };
    let value = value.to_str().unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(ScanFormat::Json);
    }
    if ndjson_ok
        && (essence.eq_ignore_ascii_case("application/x-ndjson")
            || essence.eq_ignore_ascii_case("application/ndjson"))
    {
        return Ok(ScanFormat::Ndjson);
    }
    let accepted = if ndjson_ok {
        "application/json or application/x-ndjson"
    } else {
        "application/json"
    };
    // `curl -d` sends this type unless told otherwise: say how to fix it.
    let hint = if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        " (curl -d sends this type by default: add -H 'Content-Type: application/json')"
    } else {
        ""
    };
    Err(ApiError::UnsupportedMediaType(format!(
        "Content-Type '{value}' is not accepted here; send {accepted}{hint}"
    )))
}

/// Deadlines of one body read.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeouts {
    /// Longest wait for the next chunk.
    pub idle: Duration,
    /// Longest time for the whole body.
    pub total: Duration,
}

/// Reads a whole body of at most [`MAX_BODY_BYTES`].
pub async fn read_body(
    headers: &HeaderMap,
    mut body: ReqBody,
    timeouts: BodyTimeouts,
) -> Result<Bytes, ApiError> {
    let too_large =
        || ApiError::TooLarge(format!("request body is over {} MiB", MAX_BODY_BYTES >> 20));
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let deadline = Instant::now() + timeouts.total;
    let mut buf = BytesMut::new();
    let mut first: Option<Bytes> = None;
    loop {
        let frame_deadline = (Instant::now() + timeouts.idle).min(deadline);
        let frame = match tokio::time::timeout_at(frame_deadline, body.frame()).await {
            Err(_) => {
                return Err(ApiError::Timeout(
                    "the request body did not arrive in time".into(),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::BadRequest(format!(
                    "could not read the request body: {e}"
                )))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let total = buf.len() + first.as_ref().map_or(0, Bytes::len) + data.len();
        if total > MAX_BODY_BYTES {
            return Err(too_large());
        }
        // The common case is a single data frame: keep it without copying.
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            None => buf.extend_from_slice(&data),
            Some(f) => {
                let hint = declared.map_or(0, |n| n as usize);
                buf.reserve(hint.max(f.len() + data.len()));
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(match first {
        Some(f) => f,
        None => buf.freeze(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn media_types() {
        let mut h = HeaderMap::new();
        assert_eq!(body_format(&h, true), Ok(ScanFormat::Json));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert_eq!(body_format(&h, false), Ok(ScanFormat::Json));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        assert_eq!(body_format(&h, true), Ok(ScanFormat::Ndjson));
        assert!(matches!(
            body_format(&h, false),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(matches!(
            body_format(&h, true),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }
}
