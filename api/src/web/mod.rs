//! The web pages of contract section 13, served by `checkin-server` on its own port next to the
//! JSON API: the public portal (`/`), a venue controller's live view (`/venue/{id}`), its
//! printable QR poster (`/venue/{id}/poster`), the epidemiologist console (`/console`) and the
//! certificate check (`/verify`), with their static files under `/assets/`.
//!
//! - Server-rendered HTML from askama templates (`api/templates/`, checked at compile time,
//!   every value escaped); Vietnamese by default, English with `?lang=en`, from one catalogue
//!   ([`i18n`]).
//! - The portal's figures, levels, sites, notices and charts (server-made SVG, [`charts`]) are
//!   in the HTML: readable without JavaScript. The other pages are shells whose small scripts
//!   (`api/web/*.js`) read the JSON API with the token the person types (kept in
//!   `sessionStorage`, sent as `Authorization: Bearer`, never in a URL or a cookie), and read
//!   the live feeds with `fetch()` streams so the token travels in a header there too. Without
//!   a tokens file no page asks for one.
//! - A strict Content-Security-Policy on every page (`default-src 'self'`, no inline script or
//!   style); the files are embedded with hashed names and cached for a year ([`assets`]).
//! - HTML, CSS, scripts and SVG go out gzipped when the request's `Accept-Encoding` takes it
//!   ([`compress`]); the portal is built at most once a second (longer when a build is slow) for
//!   both languages and its bytes are shared until then (`portal`).

pub mod assets;
pub mod charts;
pub mod compress;
pub mod i18n;
mod pages;
pub(crate) mod portal;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::problem::Body;

pub(crate) use pages::serve;

/// A page or asset path, recognised before the JSON route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PageRoute {
    Portal,
    Venue(String),
    Poster(String),
    /// The poster's QR code as SVG (needs a venue owner's or admin's token).
    PosterQr(String),
    Console,
    Verify,
    Asset,
}

impl PageRoute {
    /// The metrics label: the route pattern, never a raw path.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            PageRoute::Portal => "/",
            PageRoute::Venue(_) => "/venue/{id}",
            PageRoute::Poster(_) => "/venue/{id}/poster",
            PageRoute::PosterQr(_) => "/venue/{id}/poster.svg",
            PageRoute::Console => "/console",
            PageRoute::Verify => "/verify",
            PageRoute::Asset => "/assets/{file}",
        }
    }
}

/// The page `path` names, for `GET` and `HEAD` only (anything else falls through to the JSON
/// table, whose 404/405 are problem+json).
pub(crate) fn find(method: &str, path: &str) -> Option<PageRoute> {
    if method != "GET" && method != "HEAD" {
        return None;
    }
    match path {
        "/" => return Some(PageRoute::Portal),
        "/console" => return Some(PageRoute::Console),
        "/verify" => return Some(PageRoute::Verify),
        _ => {}
    }
    if path.starts_with("/assets/") {
        return Some(PageRoute::Asset);
    }
    let rest = path.strip_prefix("/venue/")?;
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if !valid_venue_id(id) {
        return None;
    }
    match tail {
        "" => Some(PageRoute::Venue(id.to_owned())),
        "poster" => Some(PageRoute::Poster(id.to_owned())),
        "poster.svg" => Some(PageRoute::PosterQr(id.to_owned())),
        _ => None,
    }
}

/// A venue id as the contract allows: 1–64 bytes of `[A-Za-z0-9._:-]`.
fn valid_venue_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The Content-Security-Policy of every page: only this origin, no inline code, no framing;
/// images may also be `blob:` (the poster's QR code fetched with a token).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// An HTML page with the security headers and no caching (pages carry live figures), gzipped
/// when `gz` (the client takes gzip).
pub(crate) fn html(status: StatusCode, body: String, gz: bool) -> Response<Body> {
    html_bytes(status, Bytes::from(body), gz, |b| Some(compress::gzip(b)))
}

/// [`html`] of bytes, with their gzipped form made by `gzipped` if needed.
pub(crate) fn html_bytes(
    status: StatusCode,
    body: Bytes,
    gz: bool,
    gzipped: impl FnOnce(&Bytes) -> Option<Bytes>,
) -> Response<Body> {
    let mut h = hyper::HeaderMap::new();
    let body = compress::choose(&mut h, gz, body, gzipped);
    let mut resp = Response::new(Either::Left(Full::new(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.extend(h);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(headers);
    resp
}

/// The headers every page and asset carries.
fn security_headers(h: &mut hyper::HeaderMap) {
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
}

/// A static file, cached for a year (its name changes with its content); its gzipped form
/// (made once) when `gz` and the type is text.
pub(crate) fn asset(path: &str, gz: bool) -> Option<Response<Body>> {
    let (index, a) = assets::find_indexed(path)?;
    let plain = Bytes::from_static(a.bytes);
    let mut vary = hyper::HeaderMap::new();
    let body = if compress::compressible(a.content_type) {
        compress::choose(&mut vary, gz, plain, |_| compress::asset_gzip(index))
    } else {
        plain
    };
    let mut resp = Response::new(Either::Left(Full::new(body)));
    let h = resp.headers_mut();
    h.extend(vary);
    h.insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    security_headers(h);
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_found_for_get_and_head_only() {
        assert_eq!(find("GET", "/"), Some(PageRoute::Portal));
        assert_eq!(find("HEAD", "/console"), Some(PageRoute::Console));
        assert_eq!(find("POST", "/"), None);
        assert_eq!(find("GET", "/verify"), Some(PageRoute::Verify));
        assert_eq!(
            find("GET", "/venue/ST-MARKET-3"),
            Some(PageRoute::Venue("ST-MARKET-3".into()))
        );
        assert_eq!(
            find("GET", "/venue/V1/poster"),
            Some(PageRoute::Poster("V1".into()))
        );
        assert_eq!(
            find("GET", "/venue/V1/poster.svg"),
            Some(PageRoute::PosterQr("V1".into()))
        );
        assert_eq!(find("GET", "/venue/V1/other"), None);
        assert_eq!(find("GET", "/venue/<x>"), None);
        assert_eq!(find("GET", "/venue/"), None);
        assert_eq!(find("GET", "/v1/summary"), None);
        assert_eq!(find("GET", "/assets/x.css"), Some(PageRoute::Asset));
    }
}
