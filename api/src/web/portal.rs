//! The public portal (`/`): what it shows, gathered from the health domain and the engine (the
//! same data as `GET /v1/summary`, `/v1/areas`, `/v1/exposure-sites`, `/v1/notices`), and a
//! short-lived cache of it.
//!
//! Gathering reads every case, every area, every case's visits and the tier and check-in
//! counts: tens of milliseconds on a big store (docs/BENCHMARKS.md, "Web pages"). So the portal
//! is gathered once for both languages, rendered and gzipped once per language, and every answer
//! shares those bytes while the build is fresh: for
//! [`ServerOptions::portal_refresh`](crate::ServerOptions) (1 s by default) or [`COST_FACTOR`]
//! times what the build took, whichever is longer, so that steady traffic costs at most about a
//! fifth of a core in rebuilds. A request that finds the build older than that is answered with
//! it while one rebuild runs in the background, as long as it is less than a grace
//! ([`STALE_GRACE`], or twice the build time if longer) past its freshness. While nobody asks,
//! [`keep_warm`] builds it again every [`IDLE_REBUILD`] (or its freshness if longer), so a
//! request after an idle spell still finds a build within the grace and is answered at once
//! (with figures at most that old; the page says as of when). Only the first request, or one
//! that finds a build past the grace (builds that failed), waits for the rebuild, and so do the
//! requests that come meanwhile (one build, not one per request). A `?q=` filter answer renders
//! the cached data with the matching exposure sites, once per filter and build (up to
//! [`FILTERED_BYTES`] of them per language; past that, per request). With a zero refresh
//! nothing is cached: each request gathers and renders its own language.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::charts::{bar_chart, Bar};
use super::i18n::Lang;
use super::pages::{datetime, dec, int, iso, Chrome};
use crate::app::App;
use crate::problem::ApiError;

/// How far back the portal lists exposure sites (as `GET /v1/exposure-sites` by default).
const SITES_WINDOW_S: i64 = 14 * 86_400;
/// Vietnam time: UTC+7, no daylight saving.
const ICT_OFFSET_S: i64 = 7 * 3600;
/// How long past its freshness a build may still be answered while its successor is built (at
/// least; one and a half times the idle rebuild, or twice the build time, if longer).
pub const STALE_GRACE: Duration = Duration::from_secs(5);
/// How old the portal may grow while nobody asks for it before [`keep_warm`] builds it again
/// (`ServerOptions::portal_idle_rebuild` by default).
pub const IDLE_REBUILD: Duration = Duration::from_secs(20);

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

/// One language's page: its data, its HTML with no filter, plain and gzipped, and the filtered
/// answers made from it so far.
pub(crate) struct Page {
    pub data: PortalData,
    pub html: Bytes,
    pub gzip: Bytes,
    /// `?q=` answers made from this page.
    filtered: Mutex<Filtered>,
}

/// `?q=` answers by `q` (plain, gzipped), and their bytes in all ([`FILTERED_BYTES`] at most).
#[derive(Default)]
struct Filtered {
    answers: HashMap<String, (Bytes, Bytes)>,
    bytes: usize,
}

/// The most bytes of filtered answers one page keeps (then new filters are rendered each time).
pub const FILTERED_BYTES: usize = 8 << 20;

impl Page {
    fn new(data: PortalData, html: Bytes, gzip: Bytes) -> Page {
        Page {
            data,
            html,
            gzip,
            filtered: Mutex::new(Filtered::default()),
        }
    }

    /// The answer for the filter `q`, plain and gzipped: the page's own when `q` is empty, else
    /// the sites that match, rendered once per `q` and page while the cache has room.
    pub fn page_for(&self, q: &str) -> Result<(Bytes, Bytes), askama::Error> {
        if q.is_empty() {
            return Ok((self.html.clone(), self.gzip.clone()));
        }
        if let Some(hit) = self.filtered.lock().answers.get(q) {
            return Ok(hit.clone());
        }
        let needle = q.trim().to_lowercase();
        let sites = self
            .data
            .sites
            .iter()
            .filter(|s| needle.is_empty() || s.search.contains(&needle))
            .collect();
        let html = Bytes::from(
            PortalPage {
                c: &self.data.c,
                d: &self.data,
                q,
                sites,
            }
            .render()?,
        );
        let gzip = super::compress::gzip(&html);
        let mut cache = self.filtered.lock();
        let size = html.len() + gzip.len() + q.len();
        if !cache.answers.contains_key(q) && cache.bytes + size <= FILTERED_BYTES {
            cache.bytes += size;
            cache
                .answers
                .insert(q.to_owned(), (html.clone(), gzip.clone()));
        }
        Ok((html, gzip))
    }
}

/// A built portal: both languages from one gathering.
pub(crate) struct Built {
    /// When the gathering started (the data is as of then).
    pub at: Instant,
    /// How long gathering, rendering and compressing took.
    pub took: Duration,
    vi: Option<Page>,
    en: Option<Page>,
}

impl Built {
    /// The page in `lang` (every build but an uncached one has both).
    pub fn page(&self, lang: Lang) -> Option<&Page> {
        match lang {
            Lang::Vi => self.vi.as_ref(),
            Lang::En => self.en.as_ref(),
        }
    }
}

/// The cached portal, rebuilt at most once per `refresh` (or per [`COST_FACTOR`] times its
/// build time, whichever is longer).
pub(crate) struct PortalCache {
    refresh: Duration,
    idle_rebuild: Duration,
    current: RwLock<Option<Arc<Built>>>,
    /// Held by the one build in progress.
    building: Arc<tokio::sync::Mutex<()>>,
}

/// A page is fresh for at least this many times what it took to build, so that rebuilding it
/// under steady traffic costs at most about a fifth of one core.
pub const COST_FACTOR: u32 = 5;

impl PortalCache {
    /// A cache whose pages are fresh for `refresh` (zero: no cache, every request builds), and
    /// built again in the background when `idle_rebuild` old.
    pub fn new(refresh: Duration, idle_rebuild: Duration) -> PortalCache {
        PortalCache {
            refresh,
            idle_rebuild,
            current: RwLock::new(None),
            building: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// How long `b` is answered as it is.
    fn fresh_for(&self, b: &Built) -> Duration {
        self.refresh.max(b.took * COST_FACTOR)
    }

    /// How long past that `b` may still be answered while its successor is built.
    fn grace(&self, b: &Built) -> Duration {
        STALE_GRACE.max(self.idle_rebuild * 3 / 2).max(b.took * 2)
    }

    fn current(&self) -> Option<Arc<Built>> {
        self.current.read().clone()
    }
}

/// The portal in `lang`, from the cache or built now (see the module doc).
pub(crate) async fn get(app: &App, lang: Lang) -> Result<Arc<Built>, ApiError> {
    let cache = &app.inner.portal;
    if cache.refresh.is_zero() {
        return build_blocking(app, Some(lang)).await;
    }
    if let Some(b) = cache.current() {
        let age = b.at.elapsed();
        let fresh = cache.fresh_for(&b);
        if age < fresh {
            return Ok(b);
        }
        if age < fresh + cache.grace(&b) {
            // Answer with this one; the first to see it stale starts the rebuild.
            if let Ok(guard) = Arc::clone(&cache.building).try_lock_owned() {
                let app = app.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    if let Err(e) = rebuild(&app).await {
                        tracing::warn!(error = %e, "the portal could not be rebuilt");
                    }
                });
            }
            return Ok(b);
        }
    }
    // No page, or one too old to serve: wait for the build in progress, or build.
    let _guard = cache.building.lock().await;
    if let Some(b) = cache.current() {
        if b.at.elapsed() < cache.fresh_for(&b) {
            return Ok(b);
        }
    }
    rebuild(app).await
}

/// Once the portal has been asked for, builds it again whenever it is past its freshness and
/// the idle rebuild old (checked every quarter of that), so that no request waits for a build
/// after an idle spell; nothing with a zero refresh. The task runs until aborted.
pub(crate) fn keep_warm(app: App) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let cache = &app.inner.portal;
        if cache.refresh.is_zero() {
            return;
        }
        loop {
            let old = cache
                .current()
                .is_some_and(|b| b.at.elapsed() >= cache.fresh_for(&b).max(cache.idle_rebuild));
            if old {
                if let Ok(guard) = Arc::clone(&cache.building).try_lock_owned() {
                    let _guard = guard;
                    if let Err(e) = rebuild(&app).await {
                        tracing::warn!(error = %e, "the portal could not be rebuilt");
                    }
                }
            }
            tokio::time::sleep(cache.idle_rebuild / 4).await;
        }
    })
}

/// Builds the portal in both languages and keeps it.
async fn rebuild(app: &App) -> Result<Arc<Built>, ApiError> {
    let built = build_blocking(app, None).await?;
    *app.inner.portal.current.write() = Some(Arc::clone(&built));
    Ok(built)
}

/// Builds the portal in `only` that language, or in both.
async fn build_blocking(app: &App, only: Option<Lang>) -> Result<Arc<Built>, ApiError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let built = build(&app, only)?;
        app.inner.metrics.observe_portal_build(built.took);
        Ok(Arc::new(built))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the portal could not be built: {e}")))?
}

/// Gathers once, then renders and compresses each language asked for (blocking: it reads the
/// health database).
fn build(app: &App, only: Option<Lang>) -> Result<Built, ApiError> {
    let at = Instant::now();
    let g = gather(app);
    let page = |lang: Lang| -> Result<Option<Page>, ApiError> {
        if only.is_some_and(|l| l != lang) {
            return Ok(None);
        }
        let data = format(app, lang, &g);
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
        Ok(Some(Page::new(data, html, gzip)))
    };
    let vi = page(Lang::Vi)?;
    let en = page(Lang::En)?;
    Ok(Built {
        at,
        took: at.elapsed(),
        vi,
        en,
    })
}

/// What the portal shows, in no language yet.
struct Gathered {
    now: i64,
    summary: health::Summary,
    views: Vec<health::AreaView>,
    sites: Vec<health::ExposureSite>,
    notices: Vec<health::Notice>,
    /// Cases per Vietnam day, the last 30 days, oldest first; and the last day's number.
    per_day: [u64; 30],
    today: i64,
    /// In-scans per hour, the last 24 hours, oldest first.
    hours: Vec<u64>,
}

/// Reads what the portal shows.
fn gather(app: &App) -> Gathered {
    let health = app.health();
    let now = app.engine().now();
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
    Gathered {
        now,
        summary: health.summary(),
        views: health.area_views(),
        sites: health.exposure_sites(now - SITES_WINDOW_S),
        notices: health.notices(),
        per_day,
        today,
        hours: app.engine().checkins_per_hour(23),
    }
}

/// The gathered data in `lang`'s words and number forms.
fn format(app: &App, lang: Lang, g: &Gathered) -> PortalData {
    let t = lang.msgs();
    let s = &g.summary;
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

    let names: HashMap<&str, &str> = g
        .views
        .iter()
        .map(|v| (v.area.id.as_str(), v.area.name.as_str()))
        .collect();
    let areas = g
        .views
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

    let sites = g
        .sites
        .iter()
        .map(|site| {
            let province = site.province.clone().unwrap_or_default();
            SiteRow {
                search: format!("{} {} {}", site.name, site.venue, province).to_lowercase(),
                name: site.name.clone(),
                venue: site.venue.to_string(),
                province,
                from: datetime(site.start),
                to: datetime(site.end),
            }
        })
        .collect();

    let notices = g
        .notices
        .iter()
        .map(|n| {
            let directive = n.kind.as_str() == "directive";
            NoticeRow {
                kind: if directive { "directive" } else { "news" },
                kind_label: if directive {
                    t.notice_directive
                } else {
                    t.notice_news
                },
                title: n.title.clone(),
                body: n.body.clone(),
                date: datetime(n.published_at),
            }
        })
        .collect();

    let case_bars: Vec<Bar> = g
        .per_day
        .iter()
        .enumerate()
        .map(|(i, &value)| Bar {
            label: super::pages::day_label(g.today - 29 + i as i64),
            value,
        })
        .collect();

    // Check-ins per hour over the last 24 hours (the current hour last).
    let this_hour = g.now.div_euclid(3600);
    let checkin_bars: Vec<Bar> = g
        .hours
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
        cases_total: g.per_day.iter().sum(),
        cases_rows: case_bars
            .iter()
            .map(|b| (b.label.clone(), b.value))
            .collect(),
        checkins_svg: bar_chart(&checkin_bars, "chart-checkins-h", 3),
        checkins_total: g.hours.iter().sum(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn built(took: Duration) -> Built {
        Built {
            at: Instant::now(),
            took,
            vi: None,
            en: None,
        }
    }

    #[test]
    fn a_slow_build_stays_fresh_for_five_times_its_cost() {
        let cache = PortalCache::new(Duration::from_secs(1), IDLE_REBUILD);
        let quick = built(Duration::from_millis(20));
        assert_eq!(cache.fresh_for(&quick), Duration::from_secs(1));
        assert_eq!(
            cache.grace(&quick),
            IDLE_REBUILD * 3 / 2,
            "past the idle rebuild"
        );
        let slow = built(Duration::from_millis(800));
        assert_eq!(cache.fresh_for(&slow), Duration::from_secs(4));
        let slower = built(Duration::from_secs(20));
        assert_eq!(cache.fresh_for(&slower), Duration::from_secs(100));
        assert_eq!(cache.grace(&slower), Duration::from_secs(40));
        let eager = PortalCache::new(Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(eager.grace(&quick), STALE_GRACE);
        assert!(slower.page(Lang::Vi).is_none());
    }
}
