//! One function per page: gathers what the page shows (the portal reads the health domain and
//! the engine directly, the same data as `GET /v1/summary`, `/v1/areas`, `/v1/exposure-sites`,
//! `/v1/notices`), fills its template, and answers with the page's headers. Pages behind a
//! token are shells: their data comes from the JSON API in the browser.

use std::collections::HashMap;
use std::sync::OnceLock;

use askama::Template;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use super::charts::{bar_chart, Bar};
use super::i18n::{Lang, Msgs};
use super::{assets, html, PageRoute};
use crate::access::{Role, Who};
use crate::app::App;
use crate::problem::{ApiError, Body};

/// How far back the portal lists exposure sites (as `GET /v1/exposure-sites` by default).
const SITES_WINDOW_S: i64 = 14 * 86_400;
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
    fn new(app: &App, lang: Lang, path: &str, active: &'static str, js: &str) -> Chrome {
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

/// One summary figure.
pub(crate) struct Figure {
    pub key: &'static str,
    pub label: &'static str,
    pub value: String,
    pub alert: bool,
}

pub(crate) struct AreaRow {
    pub name: String,
    pub parent: String,
    pub population: String,
    pub cases_7d: String,
    pub rate: String,
    pub coverage: String,
    pub level: u8,
    pub level_text: &'static str,
}

pub(crate) struct SiteRow {
    pub name: String,
    pub venue: String,
    pub province: String,
    pub from: String,
    pub to: String,
    /// Lower-case text the script filters on.
    pub search: String,
}

pub(crate) struct NoticeRow {
    pub kind: &'static str,
    pub kind_label: &'static str,
    pub title: String,
    pub body: String,
    pub date: String,
}

#[derive(Template)]
#[template(path = "portal.html")]
pub(crate) struct PortalPage {
    pub c: Chrome,
    pub as_of: String,
    pub as_of_iso: String,
    pub figures: Vec<Figure>,
    pub areas: Vec<AreaRow>,
    pub q: String,
    pub sites: Vec<SiteRow>,
    pub notices: Vec<NoticeRow>,
    pub cases_svg: String,
    pub cases_rows: Vec<(String, u64)>,
    pub cases_total: u64,
    pub checkins_svg: String,
    pub checkins_rows: Vec<(String, u64)>,
    pub checkins_total: u64,
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
pub(crate) async fn serve(app: &App, route: PageRoute, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let lang = Lang::from_query(query.as_deref());
    match route {
        PageRoute::Asset => super::asset(&path)
            .unwrap_or_else(|| ApiError::NotFound(format!("no asset {path}")).into_response()),
        PageRoute::Portal => {
            let app2 = app.clone();
            let q = crate::routes::parse_query(query.as_deref())
                .into_iter()
                .rev()
                .find(|(k, _)| k == "q")
                .map(|(_, v)| v)
                .unwrap_or_default();
            let built = tokio::task::spawn_blocking(move || portal(&app2, lang, &path, q)).await;
            match built {
                Ok(page) => render(StatusCode::OK, &page),
                Err(e) => ApiError::Internal(format!("the portal could not be built: {e}"))
                    .into_response(),
            }
        }
        PageRoute::Venue(id) => {
            if app.engine().venue(&id).is_none() {
                return not_found(app, lang, &path);
            }
            render(
                StatusCode::OK,
                &VenuePage {
                    c: Chrome::new(app, lang, &path, "", "venue.js"),
                    venue: id,
                },
            )
        }
        PageRoute::Poster(id) => {
            let Some(info) = app.engine().venue(&id) else {
                return not_found(app, lang, &path);
            };
            // Without tokens the poster is whole in the HTML; with tokens the script fetches
            // the name and the QR code with the owner's token.
            let open = app.is_open();
            let (payload, kid) = poster_payload(app, &id);
            let (name, qr_svg, payload) = if open {
                let svg = qr_inline(&payload);
                (info.name.clone(), svg, payload)
            } else {
                (String::new(), None, String::new())
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
            )
        }
        PageRoute::PosterQr(id) => poster_qr(app, &id, req).unwrap_or_else(ApiError::into_response),
        PageRoute::Console => render(
            StatusCode::OK,
            &ConsolePage {
                c: Chrome::new(app, lang, &path, "console", "console.js"),
            },
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
        ),
    }
}

fn render<T: Template>(status: StatusCode, page: &T) -> Response<Body> {
    match page.render() {
        Ok(body) => html(status, body),
        Err(e) => ApiError::Internal(format!("a page could not be rendered: {e}")).into_response(),
    }
}

fn not_found(app: &App, lang: Lang, path: &str) -> Response<Body> {
    render(
        StatusCode::NOT_FOUND,
        &NotFoundPage {
            c: Chrome::new(app, lang, path, "", ""),
            message: lang.msgs().venue_not_found,
        },
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
fn poster_qr(app: &App, venue: &str, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let auth = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    let principal = app.inner.access.authenticate(auth)?;
    Who::Roles(&[Role::Venue, Role::Admin]).check(&principal, Some(venue))?;
    if app.engine().venue(venue).is_none() {
        return Err(ApiError::NotFound(format!("no venue {venue}")));
    }
    let svg = qr_document(&poster_payload(app, venue).0)?;
    let mut resp = Response::new(http_body_util::Either::Left(http_body_util::Full::new(
        bytes::Bytes::from(svg),
    )));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    super::security_headers(h);
    Ok(resp)
}

/// Builds the portal (blocking: it reads the health database).
fn portal(app: &App, lang: Lang, path: &str, q: String) -> PortalPage {
    let t = lang.msgs();
    let health = app.health();
    let now = app.engine().now();
    let s = health.summary();
    let figures = vec![
        fig("cases_active", t.s_cases_active, s.cases_active, lang, true),
        fig(
            "cases_new_24h",
            t.s_cases_new_24h,
            s.cases_new_24h,
            lang,
            true,
        ),
        fig("cases_7d", t.s_cases_7d, s.cases_7d, lang, false),
        fig("f1", t.s_f1, s.f1, lang, false),
        fig("f2", t.s_f2, s.f2, lang, false),
        fig("present", t.s_present, s.present, lang, false),
        fig("scans_24h", t.s_scans_24h, s.scans_24h, lang, false),
        fig("samples_24h", t.s_samples_24h, s.samples_24h, lang, false),
        fig(
            "positive_24h",
            t.s_positive_24h,
            s.positive_24h,
            lang,
            false,
        ),
        fig("dose1", t.s_dose1, s.dose1, lang, false),
        fig(
            "fully_vaccinated",
            t.s_fully,
            s.fully_vaccinated,
            lang,
            false,
        ),
    ];

    let views = health.area_views();
    let names: HashMap<&str, &str> = views
        .iter()
        .map(|v| (v.area.id.as_str(), v.area.name.as_str()))
        .collect();
    let areas = views
        .iter()
        .map(|v| AreaRow {
            name: v.area.name.clone(),
            parent: v
                .area
                .parent
                .as_deref()
                .map(|p| names.get(p).copied().unwrap_or(p).to_owned())
                .unwrap_or_default(),
            population: int(lang, v.area.population),
            cases_7d: int(lang, v.cases_7d),
            rate: dec(lang, v.rate_per_100k),
            coverage: format!("{} %", dec(lang, v.dose1_coverage * 100.0)),
            level: v.level.clamp(1, 4),
            level_text: match v.level {
                0 | 1 => t.level_1,
                2 => t.level_2,
                3 => t.level_3,
                _ => t.level_4,
            },
        })
        .collect();

    let needle = q.trim().to_lowercase();
    let sites = health
        .exposure_sites(now - SITES_WINDOW_S)
        .into_iter()
        .map(|site| {
            let province = site.province.clone().unwrap_or_default();
            SiteRow {
                search: format!("{} {} {}", site.name, site.venue, province).to_lowercase(),
                name: site.name,
                venue: site.venue.to_string(),
                province,
                from: datetime(site.start),
                to: datetime(site.end),
            }
        })
        .filter(|row| needle.is_empty() || row.search.contains(&needle))
        .collect();

    let notices = health
        .notices()
        .into_iter()
        .map(|n| {
            let directive = n.kind.as_str() == "directive";
            NoticeRow {
                kind: if directive { "directive" } else { "news" },
                kind_label: if directive {
                    t.notice_directive
                } else {
                    t.notice_news
                },
                title: n.title,
                body: n.body,
                date: datetime(n.published_at),
            }
        })
        .collect();

    // Cases per day over the last 30 days (Vietnam days), by sampled_at, not discarded.
    let today = (now + ICT_OFFSET_S).div_euclid(86_400);
    let mut per_day = [0u64; 30];
    for v in health.cases(None, None) {
        if v.case.status.as_str() == "discarded" {
            continue;
        }
        let day = (v.case.sampled_at + ICT_OFFSET_S).div_euclid(86_400);
        let back = today - day;
        if (0..30).contains(&back) {
            per_day[(29 - back) as usize] += 1;
        }
    }
    let case_bars: Vec<Bar> = per_day
        .iter()
        .enumerate()
        .map(|(i, &value)| Bar {
            label: day_label(today - 29 + i as i64),
            value,
        })
        .collect();

    // Check-ins per hour over the last 24 hours (the current hour last).
    let hours = app.engine().checkins_per_hour(23);
    let this_hour = now.div_euclid(3600);
    let checkin_bars: Vec<Bar> = hours
        .iter()
        .enumerate()
        .map(|(i, &value)| {
            let h = this_hour - 23 + i as i64;
            Bar {
                label: format!(
                    "{:02}:00",
                    ((h * 3600 + ICT_OFFSET_S).div_euclid(3600)).rem_euclid(24)
                ),
                value,
            }
        })
        .collect();

    PortalPage {
        c: Chrome::new(app, lang, path, "portal", "portal.js"),
        as_of: datetime(s.as_of),
        as_of_iso: iso(s.as_of),
        figures,
        areas,
        q,
        sites,
        notices,
        cases_svg: bar_chart(&case_bars, "chart-cases-h", 5),
        cases_total: per_day.iter().sum(),
        cases_rows: case_bars
            .iter()
            .map(|b| (b.label.clone(), b.value))
            .collect(),
        checkins_svg: bar_chart(&checkin_bars, "chart-checkins-h", 3),
        checkins_total: hours.iter().sum(),
        checkins_rows: checkin_bars
            .iter()
            .map(|b| (b.label.clone(), b.value))
            .collect(),
    }
}

fn fig(key: &'static str, label: &'static str, v: u64, lang: Lang, alert: bool) -> Figure {
    Figure {
        key,
        label,
        value: int(lang, v),
        alert: alert && v > 0,
    }
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
fn day_label(day: i64) -> String {
    let (_, m, d) = civil(day);
    format!("{d:02}/{m:02}")
}

/// RFC 3339 in Vietnam time (for `<time datetime>`).
fn iso(unix: i64) -> String {
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
