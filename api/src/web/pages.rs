//! One function per page: gathers what the page shows, fills its template, and answers with the
//! page's headers, gzipped when the client takes it. The portal comes from its cache
//! ([`super::portal`]); pages behind a token are shells: their data comes from the JSON API in
//! the browser.

use std::sync::OnceLock;

use crate::body::Req;
use askama::Template;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::i18n::{Lang, Msgs};
use super::{assets, compress, html, PageRoute};
use crate::access::{Role, Who};
use crate::app::App;
use crate::problem::{ApiError, Body};

/// Vietnam time: UTC+7, no daylight saving.
const ICT_OFFSET_S: i64 = 7 * 3600;

/// What every page's frame needs (`base.html`).
pub(crate) struct Chrome {
    pub t: &'static Msgs,
    pub lang: Lang,
    pub css: &'static str,
    pub common_js: &'static str,
    pub page_js: &'static str,
    pub icon: &'static str,
    pub msgs_json: &'static str,
    pub open: bool,
    pub active: &'static str,
    pub other_lang_href: String,
    pub other_lang_code: &'static str,
}

impl Chrome {
    pub(crate) fn new(app: &App, lang: Lang, path: &str, active: &'static str, js: &str) -> Chrome {
        static JSON: OnceLock<(String, String)> = OnceLock::new();
        let json = JSON.get_or_init(|| (super::i18n::VI.to_json(), super::i18n::EN.to_json()));
        let (other_lang_href, other_lang_code) = match lang {
            Lang::Vi => (format!("{path}?lang=en"), "en"),
            Lang::En => (path.to_owned(), "vi"),
        };
        Chrome {
            t: lang.msgs(),
            lang,
            css: assets::url("site.css"),
            common_js: assets::url("common.js"),
            page_js: if js.is_empty() { "" } else { assets::url(js) },
            icon: assets::url("icon.svg"),
            msgs_json: match lang {
                Lang::Vi => &json.0,
                Lang::En => &json.1,
            },
            open: app.is_open(),
            active,
            other_lang_href,
            other_lang_code,
        }
    }
}

#[derive(Template)]
#[template(path = "venue.html")]
pub(crate) struct VenuePage {
    pub c: Chrome,
    pub venue: String,
}

#[derive(Template)]
#[template(path = "poster.html")]
pub(crate) struct PosterPage {
    pub c: Chrome,
    pub venue: String,
    pub name: String,
    pub qr_svg: Option<String>,
    /// The QR text (open mode only; with tokens the page shows nothing before one).
    pub payload: String,
    /// The `kid` of the key that signed the QR payload, if signed.
    pub kid: Option<String>,
}

#[derive(Template)]
#[template(path = "console.html")]
pub(crate) struct ConsolePage {
    pub c: Chrome,
}

#[derive(Template)]
#[template(path = "verify.html")]
pub(crate) struct VerifyPage {
    pub c: Chrome,
    /// Whether the server has `POST /v1/verify` (the certificate work).
    pub available: bool,
}

#[derive(Template)]
#[template(path = "not_found.html")]
pub(crate) struct NotFoundPage {
    pub c: Chrome,
    pub message: &'static str,
}

/// Answers a page or asset request.
pub(crate) async fn serve(app: &App, route: PageRoute, req: &Req) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let lang = Lang::from_query(query.as_deref());
    let gz = compress::accepts_gzip(req.headers());
    match route {
        PageRoute::Asset => super::asset(&path, gz)
            .unwrap_or_else(|| ApiError::NotFound(format!("no asset {path}")).into_response()),
        PageRoute::Portal => {
            let q = crate::routes::parse_query(query.as_deref())
                .into_iter()
                .rev()
                .find(|(k, _)| k == "q")
                .map(|(_, v)| v)
                .unwrap_or_default();
            let built = match super::portal::get(app, lang).await {
                Ok(b) => b,
                Err(e) => return e.into_response(),
            };
            let Some(page) = built.page(lang) else {
                return ApiError::Internal("the portal was built without this language".into())
                    .into_response();
            };
            match page.page_for(&q) {
                Ok((plain, gzipped)) => {
                    super::html_bytes(StatusCode::OK, plain, gz, move |_| Some(gzipped))
                }
                Err(e) => ApiError::Internal(format!("the portal could not be rendered: {e}"))
                    .into_response(),
            }
        }
        PageRoute::Venue(id) => {
            // With tokens the page is a shell whose script asks the API with the caller's
            // token: whether a venue exists is the API's to tell, to the roles that may know.
            if app.is_open() && app.engine().venue(&id).is_none() {
                return not_found(app, lang, &path, gz);
            }
            render(
                StatusCode::OK,
                &VenuePage {
                    c: Chrome::new(app, lang, &path, "", "venue.js"),
                    venue: id,
                },
                gz,
            )
        }
        PageRoute::Poster(id) => {
            // Without tokens the poster is whole in the HTML; with tokens the script fetches
            // the name and the QR code with the owner's token (and learns from the API, as the
            // venue page does, whether the venue exists).
            let (name, qr_svg, payload, kid) = if app.is_open() {
                let Some(info) = app.engine().venue(&id) else {
                    return not_found(app, lang, &path, gz);
                };
                let (payload, kid) = poster_payload(app, &id);
                let svg = qr_inline(&payload);
                (info.name.clone(), svg, payload, kid)
            } else {
                // nothing signed for a shell (the script fetches the signed QR code)
                let kid = app.signing_kid().map(str::to_owned);
                (String::new(), None, String::new(), kid)
            };
            render(
                StatusCode::OK,
                &PosterPage {
                    c: Chrome::new(app, lang, &path, "", "poster.js"),
                    venue: id,
                    name,
                    qr_svg,
                    payload,
                    kid,
                },
                gz,
            )
        }
        PageRoute::PosterQr(id) => {
            poster_qr(app, &id, req, gz).unwrap_or_else(ApiError::into_response)
        }
        PageRoute::Console => render(
            StatusCode::OK,
            &ConsolePage {
                c: Chrome::new(app, lang, &path, "console", "console.js"),
            },
            gz,
        ),
        PageRoute::Verify => render(
            StatusCode::OK,
            &VerifyPage {
                c: Chrome::new(app, lang, &path, "verify", "verify.js"),
                available: matches!(
                    crate::routes::find("POST", "/v1/verify"),
                    crate::routes::Match::Found(..)
                ),
            },
            gz,
        ),
    }
}

fn render<T: Template>(status: StatusCode, page: &T, gz: bool) -> Response<Body> {
    match page.render() {
        Ok(body) => html(status, body, gz),
        Err(e) => ApiError::Internal(format!("a page could not be rendered: {e}")).into_response(),
    }
}

fn not_found(app: &App, lang: Lang, path: &str, gz: bool) -> Response<Body> {
    render(
        StatusCode::NOT_FOUND,
        &NotFoundPage {
            c: Chrome::new(app, lang, path, "", ""),
            message: lang.msgs().venue_not_found,
        },
        gz,
    )
}

/// The signed part of a venue's poster QR text: `CHECKIN:1:<venue id>`.
pub fn poster_message(venue: &str) -> String {
    format!("CHECKIN:1:{venue}")
}

/// The text a venue's poster QR code holds (documented in `docs/api.md`):
/// `CHECKIN:1:<venue id>:<kid>:<signature>`, the signature ES256 (`r||s`, base64url without
/// padding) over `CHECKIN:1:<venue id>` with the server's certificate key (`GET /v1/keys`), or
/// `CHECKIN:1:<venue id>` alone while the server has no key. Also whether it is signed.
pub(crate) fn poster_payload(app: &App, venue: &str) -> (String, Option<String>) {
    let message = poster_message(venue);
    match app.sign_with_server_key(message.as_bytes()) {
        Some((kid, sig)) => (
            format!("{message}:{kid}:{}", base64url(&sig)),
            Some(kid.to_owned()),
        ),
        None => (message, None),
    }
}

/// Base64url without padding (RFC 4648 section 5).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// The poster's QR code of `payload` as an SVG document.
fn qr_document(payload: &str) -> Result<String, ApiError> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::with_error_correction_level(payload.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| ApiError::Internal(format!("cannot make the QR code: {e}")))?;
    Ok(code
        .render::<svg::Color<'_>>()
        .quiet_zone(true)
        .min_dimensions(320, 320)
        .build())
}

/// The QR code for embedding in HTML (without the XML prologue).
fn qr_inline(payload: &str) -> Option<String> {
    let doc = qr_document(payload).ok()?;
    let start = doc.find("<svg")?;
    Some(doc[start..].replacen("<svg", "<svg role=\"img\" aria-label=\"QR\"", 1))
}

/// `GET /venue/{id}/poster.svg`: the QR code, for the venue's owner or an admin.
fn poster_qr(app: &App, venue: &str, req: &Req, gz: bool) -> Result<Response<Body>, ApiError> {
    let auth = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    let principal = app.inner.access.authenticate(auth)?;
    Who::VenueOwnerOr(&[Role::Admin]).check(&principal, Some(venue))?;
    if app.engine().venue(venue).is_none() {
        return Err(ApiError::NotFound(format!("no venue {venue}")));
    }
    let svg = bytes::Bytes::from(qr_document(&poster_payload(app, venue).0)?);
    let mut h = hyper::HeaderMap::new();
    let body = compress::choose(&mut h, gz, svg, |b| Some(compress::gzip(b)));
    let mut resp = Response::new(http_body_util::Either::Left(http_body_util::Full::new(
        body,
    )));
    let headers = resp.headers_mut();
    headers.extend(h);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    super::security_headers(headers);
    Ok(resp)
}

/// An integer with the language's thousands separator (`1.234` in Vietnamese, `1,234` in
/// English).
pub fn int(lang: Lang, v: u64) -> String {
    let sep = match lang {
        Lang::Vi => '.',
        Lang::En => ',',
    };
    let digits = v.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

/// A number with one decimal, in the language's form (`12,5` / `12.5`).
pub fn dec(lang: Lang, v: f64) -> String {
    let tenths = (v * 10.0).round().max(0.0) as u64;
    let mark = match lang {
        Lang::Vi => ',',
        Lang::En => '.',
    };
    format!("{}{mark}{}", int(lang, tenths / 10), tenths % 10)
}

/// Civil date of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `dd/mm/yyyy HH:MM`, Vietnam time.
pub fn datetime(unix: i64) -> String {
    let local = unix + ICT_OFFSET_S;
    let (y, m, d) = civil(local.div_euclid(86_400));
    let secs = local.rem_euclid(86_400);
    format!(
        "{d:02}/{m:02}/{y} {:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// `dd/mm` of a Vietnam day number.
pub(crate) fn day_label(day: i64) -> String {
    let (_, m, d) = civil(day);
    format!("{d:02}/{m:02}")
}

/// RFC 3339 in Vietnam time (for `<time datetime>`).
pub(crate) fn iso(unix: i64) -> String {
    let local = unix + ICT_OFFSET_S;
    let (y, m, d) = civil(local.div_euclid(86_400));
    let secs = local.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+07:00",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_dates_take_the_readers_form() {
        assert_eq!(int(Lang::Vi, 1_234_567), "1.234.567");
        assert_eq!(int(Lang::En, 1_234_567), "1,234,567");
        assert_eq!(int(Lang::En, 999), "999");
        assert_eq!(dec(Lang::Vi, 12.46), "12,5");
        assert_eq!(dec(Lang::En, 0.0), "0.0");
        // 2027-01-15 08:00 UTC is 15:00 in Vietnam.
        assert_eq!(datetime(1_800_000_000), "15/01/2027 15:00");
        assert_eq!(iso(1_800_000_000), "2027-01-15T15:00:00+07:00");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(day_label(19_723), "01/01");
    }

    #[test]
    fn the_poster_payload_names_the_venue() {
        assert_eq!(poster_message("ST-MARKET-3"), "CHECKIN:1:ST-MARKET-3");
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        let svg = qr_inline("CHECKIN:1:ST-MARKET-3").unwrap_or_default();
        assert!(svg.starts_with("<svg role=\"img\""));
        assert!(!svg.contains("style="));
    }
}
