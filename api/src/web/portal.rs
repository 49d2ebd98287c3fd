//! The public portal (`/`): what it shows, gathered from the health domain and the engine (the
//! same data as `GET /v1/summary`, `/v1/areas`, `/v1/exposure-sites`, `/v1/notices`), and a
//! short-lived cache of it per language.
//!
//! Gathering reads every case, every listed person's tier, every area and the last 24 hours of
//! check-ins: tens of milliseconds or more on a big store. So the portal is built at most once
//! per [`ServerOptions::portal_refresh`](crate::ServerOptions) (1 s by default) per language,
//! rendered and gzipped once, and every answer in between is a copy of those bytes. When a
//! request finds the page older than that, it is answered with the page it finds while one
//! rebuild runs in the background, as long as that page is less than [`STALE_GRACE`] past its
//! refresh; an older page (after an idle spell) is never served: the request waits for the
//! rebuild, and so do the requests that come meanwhile (one build, not one per request). A
//! `?q=` filter answer renders the cached data with the matching exposure sites, per request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use bytes::Bytes;
use parking_lot::RwLock;

use super::charts::{bar_chart, Bar};
use super::i18n::Lang;
use super::pages::{datetime, dec, int, iso, Chrome};
use crate::app::App;
use crate::problem::ApiError;

/// How far back the portal lists exposure sites (as `GET /v1/exposure-sites` by default).
const SITES_WINDOW_S: i64 = 14 * 86_400;
/// Vietnam time: UTC+7, no daylight saving.
const ICT_OFFSET_S: i64 = 7 * 3600;
/// How long past its refresh a page may still be served while its rebuild runs.
pub const STALE_GRACE: Duration = Duration::from_secs(5);

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
    /// Lower-case text the filter matches (the script's and the server's).
    pub search: String,
}

pub(crate) struct NoticeRow {
    pub kind: &'static str,
    pub kind_label: &'static str,
    pub title: String,
    pub body: String,
    pub date: String,
}

/// Everything the portal shows, with every exposure site of the window.
pub(crate) struct PortalData {
    pub c: Chrome,
    pub as_of: String,
    pub as_of_iso: String,
    pub figures: Vec<Figure>,
    pub areas: Vec<AreaRow>,
    pub sites: Vec<SiteRow>,
    pub notices: Vec<NoticeRow>,
    pub cases_svg: String,
    pub cases_rows: Vec<(String, u64)>,
    pub cases_total: u64,
    pub checkins_svg: String,
    pub checkins_rows: Vec<(String, u64)>,
    pub checkins_total: u64,
}

/// The portal page: the data, and the exposure sites that match `q` (all for an empty `q`).
#[derive(Template)]
#[template(path = "portal.html")]
pub(crate) struct PortalPage<'a> {
    pub c: &'a Chrome,
    pub d: &'a PortalData,
    pub q: &'a str,
    pub sites: Vec<&'a SiteRow>,
}

/// A built portal: its data, and its HTML with no filter, plain and gzipped.
pub(crate) struct Built {
    /// When the gathering started (the data is as of then).
    pub at: Instant,
    pub data: PortalData,
    pub html: Bytes,
    pub gzip: Bytes,
}

impl Built {
    /// The page for the filter `q`: the cached HTML when `q` is empty, else rendered now.
    pub fn page_for(&self, q: &str) -> Result<Option<String>, askama::Error> {
        if q.is_empty() {
            return Ok(None);
        }
        let needle = q.trim().to_lowercase();
        let sites = self
            .data
            .sites
            .iter()
            .filter(|s| needle.is_empty() || s.search.contains(&needle))
            .collect();
        PortalPage {
            c: &self.data.c,
            d: &self.data,
            q,
            sites,
        }
        .render()
        .map(Some)
    }
}

/// One language's cached portal.
#[derive(Default)]
struct Slot {
    current: RwLock<Option<Arc<Built>>>,
    /// Held by the one build in progress.
    building: Arc<tokio::sync::Mutex<()>>,
}

impl Slot {
    fn current(&self) -> Option<Arc<Built>> {
        self.current.read().clone()
    }
}

/// The portal per language, rebuilt at most once per `refresh`.
pub(crate) struct PortalCache {
    refresh: Duration,
    vi: Slot,
    en: Slot,
}

impl PortalCache {
    /// A cache whose pages are fresh for `refresh` (zero: no cache, every request builds).
    pub fn new(refresh: Duration) -> PortalCache {
        PortalCache {
            refresh,
            vi: Slot::default(),
            en: Slot::default(),
        }
    }

    fn slot(&self, lang: Lang) -> &Slot {
        match lang {
            Lang::Vi => &self.vi,
            Lang::En => &self.en,
        }
    }
}

/// The portal in `lang`, from the cache or built now (see the module doc).
pub(crate) async fn get(app: &App, lang: Lang) -> Result<Arc<Built>, ApiError> {
    let cache = &app.inner.portal;
    if cache.refresh.is_zero() {
        return build_blocking(app, lang).await;
    }
    let slot = cache.slot(lang);
    if let Some(b) = slot.current() {
        let age = b.at.elapsed();
        if age < cache.refresh {
            return Ok(b);
        }
        if age < cache.refresh + STALE_GRACE {
            // Answer with this one; the first to see it stale starts the rebuild.
            if let Ok(guard) = Arc::clone(&slot.building).try_lock_owned() {
                let app = app.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    if let Err(e) = rebuild(&app, lang).await {
                        tracing::warn!(error = %e, "the portal could not be rebuilt");
                    }
                });
            }
            return Ok(b);
        }
    }
    // No page, or one too old to serve: wait for the build in progress, or build.
    let _guard = slot.building.lock().await;
    if let Some(b) = slot.current() {
        if b.at.elapsed() < cache.refresh {
            return Ok(b);
        }
    }
    rebuild(app, lang).await
}

/// Builds the portal in `lang` and keeps it.
async fn rebuild(app: &App, lang: Lang) -> Result<Arc<Built>, ApiError> {
    let built = build_blocking(app, lang).await?;
    *app.inner.portal.slot(lang).current.write() = Some(Arc::clone(&built));
    Ok(built)
}

async fn build_blocking(app: &App, lang: Lang) -> Result<Arc<Built>, ApiError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || build(&app, lang))
        .await
        .map_err(|e| ApiError::Internal(format!("the portal could not be built: {e}")))?
        .map(Arc::new)
}

/// Gathers, renders and compresses the portal (blocking: it reads the health database).
fn build(app: &App, lang: Lang) -> Result<Built, ApiError> {
    let at = Instant::now();
    let data = gather(app, lang);
    let html = PortalPage {
        c: &data.c,
        d: &data,
        q: "",
        sites: data.sites.iter().collect(),
    }
    .render()
    .map_err(|e| ApiError::Internal(format!("the portal could not be rendered: {e}")))?;
    let html = Bytes::from(html);
    let gzip = super::compress::gzip(&html);
    Ok(Built {
        at,
        data,
        html,
        gzip,
    })
}

/// Reads what the portal shows.
fn gather(app: &App, lang: Lang) -> PortalData {
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
            label: super::pages::day_label(today - 29 + i as i64),
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

    PortalData {
        c: Chrome::new(app, lang, "/", "portal", "portal.js"),
        as_of: datetime(s.as_of),
        as_of_iso: iso(s.as_of),
        figures,
        areas,
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
