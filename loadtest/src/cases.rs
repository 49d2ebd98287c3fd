//! Case registration during ingestion (`ingest --cases-per-min N`, contract section 10): the
//! record of persons the run has sent scans for ([`SentPersons`]), and the one task that
//! registers N cases per minute with `POST /v1/cases`, evenly spaced, one request at a time, so a
//! load run shows ingestion throughput while the server keeps N standing traces current.
//!
//! Each case is for a person drawn (seeded) from those the run has already sent scans for
//! (persons already given a case by this run are avoided while others are found), with
//! `sampled_at` = the `ts` of that person's latest sent scan, clamped into
//! `[now - retention + 60 s, now]` (inside the contract's `[now - retention, now + 300]`). Ids are
//! `<prefix>-<n>` (default prefix `lt-<seed>-<unix start>`), so a retry after a transport error
//! is idempotent (the server answers 200 with the stored case). A `409` whose detail says the
//! person already has an active case is counted apart, not as an error; every other non-2xx and
//! every request without an answer is an error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::gen::{now_unix, Ids};
use crate::http::{Answer, Conn, ConnSettings, TransportError};
use crate::load::CUT_OFF;
use crate::report::{micros, new_histogram, CaseSummary, Latency};
use crate::rng::{mix, Rng};

/// Most cases per minute a run may ask for (1,000 per second).
pub const MAX_CASES_PER_MIN: f64 = 60_000.0;
/// Longest id prefix: with `-<n>` the id stays within the contract's 80 bytes.
pub const MAX_PREFIX_LEN: usize = 60;
/// Retries of a case whose request got no answer (same id and body: idempotent).
pub const RETRIES: u32 = 2;
/// Pause before a retry.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Safety margin at the old end of the retention window (the server's clock moves on).
const RETENTION_MARGIN_S: i64 = 60;
/// Random draws tried to find a person this run has not registered yet...
const DRAWS: usize = 8;
/// ... then this many persons after the last draw, in order.
const SCAN: usize = 4096;
/// How often the task looks again when no scan has been sent yet.
const POLL: Duration = Duration::from_millis(10);
/// How soon it tries again when the scan source holds the record.
const BUSY_POLL: Duration = Duration::from_millis(1);

/// Options of case registration during an ingest run.
#[derive(Debug, Clone)]
pub struct CaseOptions {
    /// Cases per minute, evenly spaced; 0 = none.
    pub per_min: f64,
    /// Seed of the person draws (and of the default id prefix).
    pub seed: u64,
    /// The server's retention in days: `sampled_at` is clamped to within it.
    pub retention_days: u32,
    /// Bearer token for `POST /v1/cases` (epidemiologist or admin); `None` = the run's token.
    pub token: Option<String>,
    /// Ids are `<prefix>-1`, `<prefix>-2`, ...; `None` = `lt-<seed>-<unix start>`.
    pub id_prefix: Option<String>,
}

impl CaseOptions {
    /// `per_min` cases per minute, seed 42, 21 days retention, the run's token, default ids.
    pub fn new(per_min: f64) -> CaseOptions {
        CaseOptions {
            per_min,
            seed: 42,
            retention_days: 21,
            token: None,
            id_prefix: None,
        }
    }

    /// Checks the options; `Ok(None)` when no cases are to be registered, else the id prefix.
    pub fn validate(&self, start_unix: i64) -> Result<Option<String>, CaseOptionsError> {
        if !self.per_min.is_finite() || self.per_min < 0.0 || self.per_min > MAX_CASES_PER_MIN {
            return Err(CaseOptionsError::Rate(self.per_min));
        }
        if self.per_min == 0.0 {
            return Ok(None);
        }
        if self.retention_days == 0 {
            return Err(CaseOptionsError::Retention);
        }
        let prefix = match &self.id_prefix {
            Some(p) => p.clone(),
            None => format!("lt-{}-{}", self.seed, start_unix),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN || !prefix.chars().all(valid) {
            return Err(CaseOptionsError::Prefix(prefix));
        }
        Ok(Some(prefix))
    }
}

/// Case options that cannot be run.
#[derive(Debug, Clone, PartialEq)]
pub enum CaseOptionsError {
    /// The rate is not a number in `0..=MAX_CASES_PER_MIN`.
    Rate(f64),
    /// Retention of 0 days.
    Retention,
    /// The id prefix is empty, too long or has characters outside `[A-Za-z0-9._:-]`.
    Prefix(String),
}

impl fmt::Display for CaseOptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseOptionsError::Rate(r) => write!(
                f,
                "cases per minute must be a number from 0 to {MAX_CASES_PER_MIN}, not {r}"
            ),
            CaseOptionsError::Retention => write!(f, "the server's retention must be >= 1 day"),
            CaseOptionsError::Prefix(p) => write!(
                f,
                "case id prefix {p:?} must be 1-{MAX_PREFIX_LEN} bytes of [A-Za-z0-9._:-]"
            ),
        }
    }
}

impl std::error::Error for CaseOptionsError {}

/// The persons a run has sent scans for, each with the `ts` of its latest sent scan. Fed by the
/// scan source as it builds each request (so "sent" = handed to a connection), read by the case
/// task. Memory is `O(distinct persons)`.
#[derive(Debug)]
pub enum SentPersons {
    /// Generated scans: numeric person ids, rendered with `ids` when drawn.
    Generated {
        ids: Ids,
        index: HashMap<u32, usize>,
        list: Vec<(u32, i64)>,
    },
    /// Scans from a file: the `person` and `ts` of each line.
    File {
        index: HashMap<Box<str>, usize>,
        list: Vec<(Box<str>, i64)>,
    },
}

/// The two fields of a scan line the case task needs.
#[derive(Deserialize)]
struct LineFields<'a> {
    #[serde(borrow)]
    person: std::borrow::Cow<'a, str>,
    ts: i64,
}

impl SentPersons {
    /// An empty record for generated scans.
    pub fn generated(ids: Ids) -> SentPersons {
        SentPersons::Generated {
            ids,
            index: HashMap::new(),
            list: Vec::new(),
        }
    }

    /// An empty record for scans read from a file.
    pub fn file() -> SentPersons {
        SentPersons::File {
            index: HashMap::new(),
            list: Vec::new(),
        }
    }

    /// Notes a generated scan of person number `person` at `ts`.
    pub fn note_generated(&mut self, person: u32, ts: i64) {
        if let SentPersons::Generated { index, list, .. } = self {
            match index.get(&person) {
                Some(&i) => {
                    if let Some(e) = list.get_mut(i) {
                        e.1 = ts;
                    }
                }
                None => {
                    index.insert(person, list.len());
                    list.push((person, ts));
                }
            }
        }
    }

    /// Notes one scan line of a file (a JSON object with `person` and `ts`); lines without
    /// them (which the server rejects anyway) are skipped.
    pub fn note_line(&mut self, line: &[u8]) {
        let SentPersons::File { index, list } = self else {
            return;
        };
        let Ok(f) = serde_json::from_slice::<LineFields<'_>>(line) else {
            return;
        };
        match index.get(f.person.as_ref()) {
            Some(&i) => {
                if let Some(e) = list.get_mut(i) {
                    e.1 = f.ts;
                }
            }
            None => {
                let key: Box<str> = f.person.as_ref().into();
                index.insert(key.clone(), list.len());
                list.push((key, f.ts));
            }
        }
    }

    /// Distinct persons noted so far.
    pub fn len(&self) -> usize {
        match self {
            SentPersons::Generated { list, .. } => list.len(),
            SentPersons::File { list, .. } => list.len(),
        }
    }

    /// Whether no scan was noted yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th distinct person (in order of first scan) and its latest scan's `ts`.
    pub fn get(&self, i: usize) -> Option<(String, i64)> {
        match self {
            SentPersons::Generated { ids, list, .. } => {
                list.get(i).map(|&(p, ts)| (ids.person(p), ts))
            }
            SentPersons::File { list, .. } => list.get(i).map(|(p, ts)| (p.to_string(), *ts)),
        }
    }
}

/// `ts` clamped into `[now - retention + 60 s, now]`.
pub fn clamp_sampled_at(ts: i64, now: i64, retention_days: u32) -> i64 {
    let oldest = now - i64::from(retention_days) * 86_400 + RETENTION_MARGIN_S;
    ts.clamp(oldest.min(now), now)
}

/// What the case task saw.
#[derive(Debug, Clone)]
pub struct CaseRecorder {
    hist: Histogram<u64>,
    pub attempted: u64,
    pub registered: u64,
    pub replayed: u64,
    pub active_conflicts: u64,
    pub retries: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Default for CaseRecorder {
    fn default() -> Self {
        CaseRecorder {
            hist: new_histogram(),
            attempted: 0,
            registered: 0,
            replayed: 0,
            active_conflicts: 0,
            retries: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl CaseRecorder {
    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    /// Sorts one answer into registered / already active / error.
    fn answer(&mut self, a: &Answer) {
        #[derive(Deserialize)]
        struct Problem {
            #[serde(default)]
            detail: String,
        }
        if a.status.is_success() {
            self.registered += 1;
            if a.status == StatusCode::OK {
                self.replayed += 1;
            }
        } else if a.status == StatusCode::CONFLICT
            && serde_json::from_slice::<Problem>(&a.body)
                .is_ok_and(|p| p.detail.contains("active case"))
        {
            self.active_conflicts += 1;
        } else {
            self.error(format!("HTTP {}", a.status.as_u16()));
        }
    }

    /// The report's summary of this recorder, for a run whose cases were scheduled over
    /// `window` (the ingestion's elapsed time, at most its duration).
    pub fn summary(&self, per_min: f64, id_prefix: &str, window: Duration) -> CaseSummary {
        CaseSummary {
            per_min,
            id_prefix: id_prefix.to_string(),
            due: (window.as_secs_f64() * per_min / 60.0).ceil() as u64,
            attempted: self.attempted,
            registered: self.registered,
            replayed: self.replayed,
            active_conflicts: self.active_conflicts,
            errors: self.errors.values().sum(),
            errors_by_kind: self.errors.clone(),
            retries: self.retries,
            latency: Latency::from_histogram(&self.hist),
        }
    }
}

/// Everything the case task needs, prepared by the ingest driver.
pub(crate) struct CaseRun {
    pub per_min: f64,
    pub seed: u64,
    pub retention_days: u32,
    pub prefix: String,
    pub sent: Arc<Mutex<SentPersons>>,
    pub settings: Arc<ConnSettings>,
    /// Cases registered so far (the progress bar reads it).
    pub live: Arc<AtomicU64>,
}

/// When the case task must stop starting cases, and when it must abandon one in flight.
pub(crate) struct CaseSignals {
    pub stop: Arc<AtomicBool>,
    pub deadline: Option<Instant>,
    /// Turns `true` when the scan workers are done.
    pub ended: watch::Receiver<bool>,
    /// Turns `true` when requests in flight must be abandoned (the run's cut-off).
    pub cut: watch::Receiver<bool>,
    /// How long a case in flight may still take after `ended`.
    pub grace: Duration,
}

impl CaseSignals {
    fn should_stop(&self) -> bool {
        *self.ended.borrow()
            || self.stop.load(Ordering::Relaxed)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Sleeps until `at`; `false` if the run ended first.
    async fn sleep_until(&mut self, at: Instant) -> bool {
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => !self.should_stop(),
            _ = wait_true(&mut self.ended) => false,
        }
    }

    /// Resolves when a request in flight must be abandoned.
    async fn abandon(&self) {
        let mut cut = self.cut.clone();
        let mut ended = self.ended.clone();
        let grace = self.grace;
        tokio::select! {
            _ = wait_true(&mut cut) => {}
            _ = async {
                wait_true(&mut ended).await;
                tokio::time::sleep(grace).await;
            } => {}
        }
    }
}

/// Resolves when `rx` holds `true`; never if its sender is gone first.
async fn wait_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[derive(Serialize)]
struct CaseBody<'a> {
    id: &'a str,
    person: &'a str,
    sampled_at: i64,
    note: &'static str,
}

/// Draws a person (by index into `sent`, which only grows): up to [`DRAWS`] uniform draws for
/// one not in `used`, then the next [`SCAN`] indices after the last draw; if all of those are
/// used, the last draw anyway (the server will answer 409).
fn draw(sent: &SentPersons, rng: &mut Rng, used: &HashSet<usize>) -> Option<(usize, String, i64)> {
    let n = sent.len();
    if n == 0 {
        return None;
    }
    let mut i = 0;
    for _ in 0..DRAWS {
        i = rng.below(n as u64) as usize;
        if !used.contains(&i) {
            return sent.get(i).map(|(p, ts)| (i, p, ts));
        }
    }
    let free = (1..=SCAN.min(n))
        .map(|k| (i + k) % n)
        .find(|j| !used.contains(j))
        .unwrap_or(i);
    sent.get(free).map(|(p, ts)| (free, p, ts))
}

/// Registers cases until the run ends; returns what it saw.
pub(crate) async fn register_cases(run: CaseRun, mut signals: CaseSignals) -> CaseRecorder {
    let mut rec = CaseRecorder::default();
    let mut conn = Conn::new(run.settings.clone());
    let mut rng = Rng::new(mix(run.seed, 0xCA5E_5EED));
    let mut used = HashSet::new();
    let interval = 60.0 / run.per_min;
    let start = Instant::now();
    'cases: for n in 0u64.. {
        let due = start + Duration::from_secs_f64(interval * n as f64);
        if signals.deadline.is_some_and(|d| due >= d) || !signals.sleep_until(due).await {
            break;
        }
        // The first cases may come before the first scan is sent: wait for one. The scan
        // source holds the lock while it builds a request: never block a runtime thread on it.
        let (index, person, ts) = loop {
            let (drawn, pause) = match run.sent.try_lock() {
                Ok(sent) => (draw(&sent, &mut rng, &used), POLL),
                Err(TryLockError::Poisoned(e)) => (draw(&e.into_inner(), &mut rng, &used), POLL),
                Err(TryLockError::WouldBlock) => (None, BUSY_POLL),
            };
            if let Some(p) = drawn {
                break p;
            }
            if !signals.sleep_until(Instant::now() + pause).await {
                break 'cases;
            }
        };
        used.insert(index);
        let id = format!("{}-{}", run.prefix, n + 1);
        let sampled_at = clamp_sampled_at(ts, now_unix(), run.retention_days);
        let body = match serde_json::to_vec(&CaseBody {
            id: &id,
            person: &person,
            sampled_at,
            note: "checkin-loadtest",
        }) {
            Ok(b) => Bytes::from(b),
            Err(_) => {
                rec.attempted += 1;
                rec.error("unserialisable case");
                continue;
            }
        };
        rec.attempted += 1;
        for attempt in 0..=RETRIES {
            let t0 = Instant::now();
            let res: Option<Result<Answer, TransportError>> = tokio::select! {
                r = conn.request(Method::POST, "/v1/cases", Some("application/json"), body.clone()) => Some(r),
                _ = signals.abandon() => None,
            };
            match res {
                None => {
                    rec.error(CUT_OFF);
                    break 'cases;
                }
                Some(Ok(a)) => {
                    rec.hist.saturating_record(micros(t0.elapsed()));
                    rec.answer(&a);
                    run.live.store(rec.registered, Ordering::Relaxed);
                    break;
                }
                Some(Err(e)) if attempt < RETRIES && !matches!(e, TransportError::Request(_)) => {
                    // Same id, same body: if the lost attempt was stored, the retry answers 200.
                    rec.retries += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_PAUSE) => {}
                        _ = signals.abandon() => {
                            rec.error(e.kind());
                            break 'cases;
                        }
                    }
                }
                Some(Err(e)) => {
                    rec.error(e.kind());
                    break;
                }
            }
        }
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_validate() {
        let o = CaseOptions::new(0.0);
        assert_eq!(o.validate(100), Ok(None));
        let o = CaseOptions::new(12.0);
        assert_eq!(
            o.validate(1_700_000_000),
            Ok(Some("lt-42-1700000000".into()))
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY, MAX_CASES_PER_MIN + 1.0] {
            assert!(matches!(
                CaseOptions::new(bad).validate(1),
                Err(CaseOptionsError::Rate(_))
            ));
        }
        let mut o = CaseOptions::new(1.0);
        o.retention_days = 0;
        assert_eq!(o.validate(1), Err(CaseOptionsError::Retention));
        for bad in ["", "has space", "é", &"x".repeat(MAX_PREFIX_LEN + 1)] {
            let mut o = CaseOptions::new(1.0);
            o.id_prefix = Some(bad.to_string());
            assert!(
                matches!(o.validate(1), Err(CaseOptionsError::Prefix(_))),
                "{bad:?}"
            );
        }
        let mut o = CaseOptions::new(1.0);
        o.id_prefix = Some("run_7.a:b-c".into());
        assert_eq!(o.validate(1), Ok(Some("run_7.a:b-c".into())));
    }

    #[test]
    fn sampled_at_is_clamped_into_retention() {
        let now = 1_700_000_000;
        assert_eq!(clamp_sampled_at(now - 3600, now, 21), now - 3600);
        assert_eq!(clamp_sampled_at(now + 900, now, 21), now);
        assert_eq!(
            clamp_sampled_at(now - 40 * 86_400, now, 21),
            now - 21 * 86_400 + RETENTION_MARGIN_S
        );
    }

    #[test]
    fn sent_persons_keep_the_latest_ts() {
        let mut s = SentPersons::generated(Ids::new(1000, 10));
        assert!(s.is_empty());
        s.note_generated(7, 100);
        s.note_generated(3, 150);
        s.note_generated(7, 200);
        assert_eq!(s.len(), 2);
        assert_eq!(s.get(0), Some(("p000007".into(), 200)));
        assert_eq!(s.get(1), Some(("p000003".into(), 150)));
        assert_eq!(s.get(2), None);

        let mut f = SentPersons::file();
        f.note_line(br#"{"person":"alice","venue":"V-1","ts":10,"action":"in"}"#);
        f.note_line(br#"{"person":"bob","venue":"V-1","ts":20,"action":"in"}"#);
        f.note_line(br#"{"person":"alice","venue":"V-2","ts":30,"action":"out"}"#);
        f.note_line(b"not json");
        f.note_line(br#"{"person":"carol"}"#);
        assert_eq!(f.len(), 2);
        assert_eq!(f.get(0), Some(("alice".into(), 30)));
        assert_eq!(f.get(1), Some(("bob".into(), 20)));
    }

    #[test]
    fn draws_prefer_persons_without_a_case() {
        let mut s = SentPersons::generated(Ids::new(10, 10));
        for p in 0..4 {
            s.note_generated(p, 1);
        }
        let sent = s;
        let mut rng = Rng::new(1);
        let mut used = HashSet::new();
        for _ in 0..4 {
            let (i, p, _) = draw(&sent, &mut rng, &used).expect("a person");
            assert_eq!(sent.get(i).map(|e| e.0), Some(p));
            assert!(used.insert(i), "drawn twice while others were left");
        }
        // All taken: the draw still answers (the server will say 409).
        assert!(draw(&sent, &mut rng, &used).is_some());
        let empty = SentPersons::file();
        assert!(draw(&empty, &mut rng, &used).is_none());
    }

    #[test]
    fn answers_are_sorted() {
        let ans = |status: u16, body: &str| Answer {
            status: StatusCode::from_u16(status).expect("status"),
            body: Bytes::from(body.to_string()),
        };
        let mut r = CaseRecorder::default();
        r.answer(&ans(201, "{}"));
        r.answer(&ans(200, "{}"));
        r.answer(&ans(
            409,
            r#"{"status":409,"detail":"person p1 already has an active case: c9"}"#,
        ));
        r.answer(&ans(
            409,
            r#"{"status":409,"detail":"case c1 is already registered with other fields"}"#,
        ));
        r.answer(&ans(500, "oops"));
        assert_eq!((r.registered, r.replayed, r.active_conflicts), (2, 1, 1));
        assert_eq!(r.errors.get("HTTP 409"), Some(&1));
        assert_eq!(r.errors.get("HTTP 500"), Some(&1));
        let s = r.summary(60.0, "lt-1-2", Duration::from_millis(2_500));
        assert_eq!(s.due, 3, "cases at 0 s, 1 s and 2 s");
        assert_eq!(s.errors, 2);
        assert_eq!(s.id_prefix, "lt-1-2");
    }
}
