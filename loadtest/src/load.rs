//! The load drivers: [`run_ingest`] (register venues, then `POST /v1/scans`) and [`run_trace`]
//! (`POST /v1/trace`), each closed loop (C connections, each sending its next request as soon as
//! the previous answer is in) or open loop (requests scheduled at a fixed rate, latency measured
//! from the scheduled time so a slow server cannot hide its queueing: no coordinated omission).
//! Runs are always bounded (duration, scan or request count, end of input) and stop early on
//! the `stop` flag (Ctrl-C in the binary). Live counters feed an indicatif progress bar.
//! [`run_ingest_with_cases`] also registers cases while ingesting (see [`crate::cases`]); the
//! health-record drivers of [`crate::records`] run on the same workers.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hyper::Method;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{de::IgnoredAny, Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::cases::{register_cases, CaseOptions, CaseRecorder, CaseRun, CaseSignals, SentPersons};
use crate::gen::{self, Generator, Ids, Params};
use crate::http::{Answer, Conn, ConnSettings, SharedHttp2, TransportError};
use crate::net::Target;
use crate::report::{fmt_count, fmt_rate, Recorder, Report, RunInfo};
use crate::rng::Rng;

/// Largest batch the contract lets one request carry.
pub const MAX_BATCH: usize = 100_000;
pub(crate) const NDJSON: &str = "application/x-ndjson";
pub(crate) const JSON: &str = "application/json";

/// Options shared by both drivers.
#[derive(Debug, Clone)]
pub struct Common {
    pub target: Target,
    pub token: Option<String>,
    /// Connections (closed loop: concurrent requests; open loop: the pool serving the schedule).
    /// With `http2`, the concurrent streams of one HTTP/2 connection instead.
    pub connections: usize,
    /// Send everything over one cleartext HTTP/2 connection.
    pub http2: bool,
    /// Open loop at this many requests per second; `None` = closed loop.
    pub rate: Option<f64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Draw the progress bar.
    pub progress: bool,
    /// Set to stop the run early (the report covers what was done).
    pub stop: Arc<AtomicBool>,
    /// How long requests in flight at the end of `duration` may still take before they are
    /// abandoned (reported as [`CUT_OFF`]).
    pub grace: Duration,
}

impl Common {
    /// What every connection of a run needs.
    pub(crate) fn conn_settings(&self) -> Arc<ConnSettings> {
        Arc::new(ConnSettings {
            target: self.target.clone(),
            token: self.token.clone(),
            timeout: self.timeout,
            http2: self.http2.then(SharedHttp2::default),
        })
    }

    /// Defaults for `target`: 4 connections, closed loop, 10 s, 30 s timeout, no progress bar.
    pub fn new(target: Target) -> Common {
        Common {
            target,
            token: None,
            connections: 4,
            http2: false,
            rate: None,
            duration: Some(Duration::from_secs(10)),
            timeout: Duration::from_secs(30),
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            grace: CUT_GRACE,
        }
    }
}

/// Where ingested scans come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Generated on the fly (use `end_ts` = now so the server accepts them).
    Generate(Params),
    /// An NDJSON file of scan objects (sent verbatim) and the venues JSON array to register.
    File {
        scans: PathBuf,
        venues: Option<PathBuf>,
    },
}

/// Options of [`run_ingest`].
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub common: Common,
    pub source: Source,
    /// Scans per request: 1 = one JSON object per request, more = an NDJSON body.
    pub batch: usize,
    /// Stop after sending this many scans.
    pub scans: Option<u64>,
    /// Register the venues first.
    pub register_venues: bool,
    /// Venues per `POST /v1/venues` request.
    pub venue_chunk: usize,
}

/// Which depth each trace asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepthMode {
    One,
    Two,
    /// Half depth 1, half depth 2.
    Mixed,
}

/// Where traced persons come from.
#[derive(Debug, Clone)]
pub enum Persons {
    /// The generator's ids `p000000 .. p{persons-1}` (give the dataset's `persons`/`venues`).
    Generated { persons: u32, venues: u32 },
    /// Persons seen in the first `max_lines` lines of an NDJSON or CSV scans file.
    File { path: PathBuf, max_lines: u64 },
    /// An explicit list.
    List(Vec<String>),
}

/// Options of [`run_trace`].
#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub common: Common,
    pub persons: Persons,
    pub depth: DepthMode,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    pub seed: u64,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub min_overlap_s: Option<i64>,
}

/// What a request is, so that its answer is read the right way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobKind {
    /// `POST /v1/scans`: `{"accepted","rejected"}`.
    Scans,
    /// `POST /v1/trace`: the F1 and F2 lists.
    Trace,
    /// `POST /v1/vaccinations`: `{"accepted","rejected"}`, like scans.
    Doses,
    /// `GET /v1/persons/{id}/pass`: counted by `color/basis`.
    Pass,
    /// `GET /v1/persons/{id}/certificate`: counted as `issued` (JSON with an `hc1`) or `svg`.
    Certificate,
    /// `POST /v1/verify`: counted as `valid` or `invalid:<reason>`.
    Verify,
}

/// One request to make.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) method: Method,
    /// The route, e.g. `/v1/scans` or `/v1/persons/p000001/pass` (the target's base path is
    /// put in front of it).
    pub(crate) route: Cow<'static, str>,
    pub(crate) body: Bytes,
    pub(crate) content_type: Option<&'static str>,
    pub(crate) kind: JobKind,
    /// Records in the body (scans or doses).
    pub(crate) scans: u64,
    pub(crate) label: Option<&'static str>,
}

/// Produces the jobs of a run, in order; `None` = input exhausted.
pub(crate) trait JobSource: Send {
    fn next_job(&mut self) -> Result<Option<Job>>;
}

enum ScanInput {
    Gen(Box<Generator>, Ids),
    File(BufReader<File>, PathBuf),
}

struct ScanSource {
    input: ScanInput,
    batch: usize,
    remaining: Option<u64>,
    line: Vec<u8>,
    /// The persons sent so far, when cases are registered during the run.
    sent: Option<Arc<Mutex<SentPersons>>>,
}

impl ScanSource {
    /// Appends the next scan object (no newline) to `buf` (and notes it in `sent`); `false` at
    /// end of input.
    fn next_scan(&mut self, buf: &mut Vec<u8>, sent: Option<&mut SentPersons>) -> Result<bool> {
        match &mut self.input {
            ScanInput::Gen(g, ids) => match g.next() {
                Some(s) => {
                    ids.write_json(buf, &s)?;
                    if let Some(sent) = sent {
                        sent.note_generated(s.person, s.ts);
                    }
                    Ok(true)
                }
                None => Ok(false),
            },
            ScanInput::File(r, path) => loop {
                self.line.clear();
                let n = r
                    .read_until(b'\n', &mut self.line)
                    .with_context(|| format!("reading {}", path.display()))?;
                if n == 0 {
                    return Ok(false);
                }
                let trimmed = self.line.trim_ascii();
                if trimmed.is_empty() {
                    continue;
                }
                buf.extend_from_slice(trimmed);
                if let Some(sent) = sent {
                    sent.note_line(trimmed);
                }
                return Ok(true);
            },
        }
    }
}

impl JobSource for ScanSource {
    fn next_job(&mut self) -> Result<Option<Job>> {
        let want = match self.remaining {
            Some(0) => return Ok(None),
            Some(r) => (self.batch as u64).min(r) as usize,
            None => self.batch,
        };
        let mut buf = Vec::with_capacity(want * 80);
        let mut n = 0usize;
        // One lock per request, not per scan; a panic elsewhere cannot leave the record torn.
        let sent = self.sent.clone();
        let mut sent = sent
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()));
        while n < want {
            if n > 0 {
                buf.push(b'\n');
            }
            if !self.next_scan(&mut buf, sent.as_deref_mut())? {
                if n > 0 {
                    buf.pop();
                }
                break;
            }
            n += 1;
        }
        if n == 0 {
            return Ok(None);
        }
        if let Some(r) = self.remaining.as_mut() {
            *r -= n as u64;
        }
        let content_type = if self.batch == 1 {
            JSON
        } else {
            buf.push(b'\n');
            NDJSON
        };
        Ok(Some(Job {
            method: Method::POST,
            route: Cow::Borrowed("/v1/scans"),
            body: Bytes::from(buf),
            content_type: Some(content_type),
            kind: JobKind::Scans,
            scans: n as u64,
            label: None,
        }))
    }
}

#[derive(Serialize)]
struct TraceBody<'a> {
    person: &'a str,
    depth: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_overlap_s: Option<i64>,
}

/// The persons a run draws from.
pub(crate) enum PersonPool {
    Range(Ids, u32),
    List(Vec<String>),
}

impl PersonPool {
    /// The pool `persons` names (a file is read now).
    pub(crate) fn of(persons: &Persons) -> Result<PersonPool> {
        Ok(match persons {
            Persons::Generated { persons, venues } => {
                if *persons == 0 {
                    bail!("persons must be at least 1");
                }
                PersonPool::Range(Ids::new(*persons, *venues), *persons)
            }
            Persons::File { path, max_lines } => {
                PersonPool::List(persons_from_file(path, *max_lines)?)
            }
            Persons::List(v) => {
                if v.is_empty() {
                    bail!("empty person list");
                }
                PersonPool::List(v.clone())
            }
        })
    }

    /// A person drawn uniformly (`None` only for an empty list).
    pub(crate) fn pick(&self, rng: &mut Rng) -> Option<String> {
        match self {
            PersonPool::Range(ids, n) => Some(ids.person(rng.below(u64::from(*n)) as u32)),
            PersonPool::List(v) => v.get(rng.below(v.len() as u64) as usize).cloned(),
        }
    }
}

struct TraceSource {
    pool: PersonPool,
    rng: Rng,
    depth: DepthMode,
    remaining: Option<u64>,
    from: Option<i64>,
    to: Option<i64>,
    min_overlap_s: Option<i64>,
}

impl JobSource for TraceSource {
    fn next_job(&mut self) -> Result<Option<Job>> {
        if let Some(r) = self.remaining.as_mut() {
            if *r == 0 {
                return Ok(None);
            }
            *r -= 1;
        }
        let Some(person) = self.pool.pick(&mut self.rng) else {
            return Ok(None);
        };
        let depth = match self.depth {
            DepthMode::One => 1,
            DepthMode::Two => 2,
            DepthMode::Mixed => 1 + self.rng.below(2) as u8,
        };
        let body = serde_json::to_vec(&TraceBody {
            person: &person,
            depth,
            from: self.from,
            to: self.to,
            min_overlap_s: self.min_overlap_s,
        })?;
        Ok(Some(Job {
            method: Method::POST,
            route: Cow::Borrowed("/v1/trace"),
            body: Bytes::from(body),
            content_type: Some(JSON),
            kind: JobKind::Trace,
            scans: 0,
            label: Some(if depth == 1 { "depth=1" } else { "depth=2" }),
        }))
    }
}

/// Counters the progress bar reads while the run goes on.
#[derive(Default)]
struct Live {
    requests: AtomicU64,
    failed: AtomicU64,
    scans_sent: AtomicU64,
    scans_accepted: AtomicU64,
}

struct Ctx {
    settings: Arc<ConnSettings>,
    source: Mutex<Box<dyn JobSource>>,
    source_error: Mutex<Option<anyhow::Error>>,
    stop: Arc<AtomicBool>,
    deadline: Option<Instant>,
    live: Live,
    /// Turns `true` when requests still in flight must be abandoned.
    cut: watch::Receiver<bool>,
    grace: Duration,
    /// Cases registered so far, when the run registers cases.
    cases_live: Option<Arc<AtomicU64>>,
}

/// Default [`Common::grace`]; after a stop request (Ctrl-C) requests in flight get
/// [`STOP_GRACE`].
pub const CUT_GRACE: Duration = Duration::from_secs(5);
/// See [`CUT_GRACE`].
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// Label of requests abandoned at the end of a run.
pub const CUT_OFF: &str = "cut off at end of run";

impl Ctx {
    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn next_job(&self) -> Option<Job> {
        let res = match self.source.lock() {
            Ok(mut s) => s.next_job(),
            Err(_) => Err(anyhow!("job source poisoned by a panic")),
        };
        match res {
            Ok(j) => j,
            Err(e) => {
                if let Ok(mut slot) = self.source_error.lock() {
                    slot.get_or_insert(e);
                }
                self.stop.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    fn record_cut(&self, rec: &mut Recorder, job: &Job) {
        rec.requests += 1;
        rec.scans_sent += job.scans;
        *rec.transport.entry(CUT_OFF.to_string()).or_default() += 1;
        self.live.requests.fetch_add(1, Ordering::Relaxed);
        self.live.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn record(
        &self,
        rec: &mut Recorder,
        job: &Job,
        res: Result<Answer, TransportError>,
        latency: Duration,
    ) {
        rec.requests += 1;
        rec.scans_sent += job.scans;
        self.live.requests.fetch_add(1, Ordering::Relaxed);
        self.live.scans_sent.fetch_add(job.scans, Ordering::Relaxed);
        let answer = match res {
            Ok(a) => a,
            Err(e) => {
                *rec.transport.entry(e.kind().to_string()).or_default() += 1;
                self.live.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        rec.latency(latency, job.label);
        if !answer.status.is_success() {
            *rec.status.entry(answer.status.as_u16()).or_default() += 1;
            self.live.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        rec.requests_ok += 1;
        match job.kind {
            JobKind::Scans | JobKind::Doses => {
                match serde_json::from_slice::<ScansAnswer>(&answer.body) {
                    Ok(a) => {
                        rec.scans_accepted += a.accepted;
                        rec.scans_rejected += a.rejected.len() as u64;
                        self.live
                            .scans_accepted
                            .fetch_add(a.accepted, Ordering::Relaxed);
                        for r in a.rejected {
                            *rec.reasons.entry(r.reason).or_default() += 1;
                        }
                    }
                    Err(_) => *rec.transport.entry("unparsable answer".into()).or_default() += 1,
                }
            }
            JobKind::Trace => match serde_json::from_slice::<TraceAnswer>(&answer.body) {
                Ok(t) => {
                    rec.traces_ok += 1;
                    rec.f1_total += t.f1.len() as u64;
                    rec.f2_total += t.f2.len() as u64;
                    rec.f1_max = rec.f1_max.max(t.f1.len() as u64);
                }
                Err(_) => *rec.transport.entry("unparsable answer".into()).or_default() += 1,
            },
            JobKind::Pass | JobKind::Certificate | JobKind::Verify => {
                rec.answer_bytes += answer.body.len() as u64;
                match crate::records::outcome(job.kind, &answer.body) {
                    Some(o) => *rec.outcomes.entry(o).or_default() += 1,
                    None => *rec.transport.entry("unparsable answer".into()).or_default() += 1,
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct ScansAnswer {
    accepted: u64,
    #[serde(default)]
    rejected: Vec<Rejection>,
}

#[derive(Deserialize)]
struct Rejection {
    reason: String,
}

#[derive(Deserialize)]
struct TraceAnswer {
    #[serde(default)]
    f1: Vec<IgnoredAny>,
    #[serde(default)]
    f2: Vec<IgnoredAny>,
}

/// Sends `job` on `conn`; `None` if the run is cut off first (see [`Common::grace`]).
async fn send(ctx: &Ctx, conn: &mut Conn, job: &Job) -> Option<Result<Answer, TransportError>> {
    let mut cut = ctx.cut.clone();
    let request = conn.request(
        job.method.clone(),
        &job.route,
        job.content_type,
        job.body.clone(),
    );
    tokio::select! {
        res = request => Some(res),
        _ = async {
            if cut.wait_for(|c| *c).await.is_err() {
                std::future::pending::<()>().await;
            }
        } => None,
    }
}

async fn closed_worker(ctx: Arc<Ctx>) -> Recorder {
    let mut rec = Recorder::default();
    let mut conn = Conn::new(ctx.settings.clone());
    while !ctx.should_stop() {
        let Some(job) = ctx.next_job() else { break };
        let t0 = Instant::now();
        let Some(res) = send(&ctx, &mut conn, &job).await else {
            ctx.record_cut(&mut rec, &job);
            break;
        };
        ctx.record(&mut rec, &job, res, t0.elapsed());
    }
    rec
}

type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<(Instant, Job)>>>;

async fn open_worker(ctx: Arc<Ctx>, queue: Queue) -> Recorder {
    let mut rec = Recorder::default();
    let mut conn = Conn::new(ctx.settings.clone());
    loop {
        let next = { queue.lock().await.recv().await };
        let Some((due, job)) = next else { break };
        let Some(res) = send(&ctx, &mut conn, &job).await else {
            ctx.record_cut(&mut rec, &job);
            break;
        };
        // Latency from the scheduled start: time spent queued behind a slow server counts.
        ctx.record(&mut rec, &job, res, due.elapsed());
    }
    rec
}

async fn dispatch(ctx: Arc<Ctx>, rate: f64, tx: mpsc::Sender<(Instant, Job)>) {
    let start = Instant::now();
    let interval = 1.0 / rate;
    let mut i: u64 = 0;
    loop {
        let due = start + Duration::from_secs_f64(interval * i as f64);
        if ctx.stop.load(Ordering::Relaxed) || ctx.deadline.is_some_and(|d| due >= d) {
            break;
        }
        // Build the request before its slot, so generating and serializing scans on the client
        // never counts as server latency (latency is measured from `due`).
        let Some(job) = ctx.next_job() else { break };
        tokio::time::sleep_until(due.into()).await;
        if ctx.stop.load(Ordering::Relaxed) {
            break;
        }
        if tx.send((due, job)).await.is_err() {
            break;
        }
        i += 1;
    }
}

/// What bounds a run (and what the progress bar counts).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bound {
    Scans(u64),
    Requests(u64),
    Time(Duration),
    Open,
}

fn progress_bar(enabled: bool, bound: Bound) -> ProgressBar {
    let (len, template) = match bound {
        Bound::Scans(n) => (
            Some(n),
            "{spinner:.green} {elapsed_precise} [{bar:30.cyan/blue}] {human_pos}/{human_len} scans  {msg}",
        ),
        Bound::Requests(n) => (
            Some(n),
            "{spinner:.green} {elapsed_precise} [{bar:30.cyan/blue}] {human_pos}/{human_len} requests  {msg}",
        ),
        Bound::Time(d) => (
            Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)),
            "{spinner:.green} {elapsed_precise} [{bar:30.cyan/blue}] {percent:>3}%  {msg}",
        ),
        Bound::Open => (None, "{spinner:.green} {elapsed_precise} {human_pos} sent  {msg}"),
    };
    let target = if enabled {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(len, target);
    if enabled {
        pb.enable_steady_tick(Duration::from_millis(120));
    }
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

async fn ticker(ctx: Arc<Ctx>, pb: ProgressBar, bound: Bound, done: Arc<AtomicBool>) {
    let start = Instant::now();
    let mut last = (Instant::now(), 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        let now = Instant::now();
        let req = ctx.live.requests.load(Ordering::Relaxed);
        let acc = ctx.live.scans_accepted.load(Ordering::Relaxed);
        let sent = ctx.live.scans_sent.load(Ordering::Relaxed);
        let failed = ctx.live.failed.load(Ordering::Relaxed);
        let dt = now.duration_since(last.0).as_secs_f64();
        if dt >= 0.9 || last.1 == 0 {
            let rps = if dt > 0.0 {
                (req - last.1) as f64 / dt
            } else {
                0.0
            };
            let sps = if dt > 0.0 {
                (acc - last.2) as f64 / dt
            } else {
                0.0
            };
            let mut msg = format!("{} req/s", fmt_rate(rps));
            if sent > 0 {
                msg.push_str(&format!("  {} scans/s", fmt_rate(sps)));
            }
            msg.push_str(&format!("  {} failed", fmt_count(failed)));
            if let Some(c) = &ctx.cases_live {
                msg.push_str(&format!("  {} cases", fmt_count(c.load(Ordering::Relaxed))));
            }
            pb.set_message(msg);
            last = (now, req, acc);
        }
        match bound {
            Bound::Scans(_) => pb.set_position(sent),
            Bound::Requests(_) | Bound::Open => pb.set_position(if sent > 0 { sent } else { req }),
            Bound::Time(_) => {
                pb.set_position(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX))
            }
        }
    }
}

/// Signals `cut` once requests in flight have had their grace after the deadline or a stop.
async fn cut_off(ctx: Arc<Ctx>, cut: watch::Sender<bool>, done: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        if ctx.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(STOP_GRACE).await;
            break;
        }
        if ctx
            .deadline
            .is_some_and(|d| Instant::now() >= d + ctx.grace)
        {
            break;
        }
    }
    let _ = cut.send(true);
}

/// What a run measured: the workers' merged recorder, the elapsed time of the workers, and
/// the case task's recorder when it registered cases.
pub(crate) type Driven = (Recorder, Duration, Option<CaseRecorder>);

/// The case task of a run, before its connection settings are known.
pub(crate) struct CasePlan {
    per_min: f64,
    seed: u64,
    retention_days: u32,
    prefix: String,
    token: Option<String>,
    sent: Arc<Mutex<SentPersons>>,
}

/// Runs the workers over `source` until a bound is hit (and the case task beside them, if
/// `cases`); returns the merged recorder, the elapsed time and the case recorder.
pub(crate) async fn drive(
    common: &Common,
    source: Box<dyn JobSource>,
    bound: Bound,
    cases: Option<CasePlan>,
) -> Result<Driven> {
    if common.connections == 0 {
        bail!("connections must be at least 1");
    }
    if let Some(r) = common.rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("rate must be a positive number of requests per second");
        }
    }
    let settings = common.conn_settings();
    let start = Instant::now();
    let (cut_tx, cut_rx) = watch::channel(false);
    let cases_live = cases.as_ref().map(|_| Arc::new(AtomicU64::new(0)));
    let ctx = Arc::new(Ctx {
        settings: settings.clone(),
        source: Mutex::new(source),
        source_error: Mutex::new(None),
        stop: common.stop.clone(),
        deadline: common.duration.map(|d| start + d),
        live: Live::default(),
        cut: cut_rx.clone(),
        grace: common.grace,
        cases_live: cases_live.clone(),
    });
    let (ended_tx, ended_rx) = watch::channel(false);
    let case_task = match (cases, cases_live) {
        (Some(plan), Some(live)) => {
            // Over HTTP/1.1 a connection of its own; with --http2 a stream of the one shared
            // connection (the SharedHttp2 handle is cloned, not re-made).
            let case_settings = Arc::new(ConnSettings {
                token: plan.token.or_else(|| settings.token.clone()),
                ..(*settings).clone()
            });
            let run = CaseRun {
                per_min: plan.per_min,
                seed: plan.seed,
                retention_days: plan.retention_days,
                prefix: plan.prefix,
                sent: plan.sent,
                settings: case_settings,
                live,
            };
            let signals = CaseSignals {
                stop: ctx.stop.clone(),
                deadline: ctx.deadline,
                ended: ended_rx,
                cut: cut_rx,
                grace: common.grace,
            };
            Some(tokio::spawn(register_cases(run, signals)))
        }
        _ => None,
    };
    let pb = progress_bar(common.progress, bound);
    let done = Arc::new(AtomicBool::new(false));
    let tick = tokio::spawn(ticker(ctx.clone(), pb.clone(), bound, done.clone()));
    let cutter = tokio::spawn(cut_off(ctx.clone(), cut_tx, done.clone()));
    let mut workers = Vec::with_capacity(common.connections);
    let mut dispatcher = None;
    match common.rate {
        None => {
            for _ in 0..common.connections {
                workers.push(tokio::spawn(closed_worker(ctx.clone())));
            }
        }
        Some(rate) => {
            let (tx, rx) = mpsc::channel(common.connections * 2);
            let queue: Queue = Arc::new(tokio::sync::Mutex::new(rx));
            for _ in 0..common.connections {
                workers.push(tokio::spawn(open_worker(ctx.clone(), queue.clone())));
            }
            dispatcher = Some(tokio::spawn(dispatch(ctx.clone(), rate, tx)));
        }
    }
    if let Some(d) = dispatcher {
        d.await.context("dispatcher task failed")?;
    }
    let mut rec = Recorder::default();
    for w in workers {
        rec.merge(&w.await.context("worker task failed")?);
    }
    let elapsed = start.elapsed();
    // The scans are done: no new cases; one in flight gets the grace (or the run's cut-off).
    let _ = ended_tx.send(true);
    let case_rec = match case_task {
        Some(t) => Some(t.await.context("case task failed")?),
        None => None,
    };
    done.store(true, Ordering::Relaxed);
    let _ = tick.await;
    let _ = cutter.await;
    pb.finish_and_clear();
    let err = ctx.source_error.lock().ok().and_then(|mut e| e.take());
    if let Some(e) = err {
        return Err(e.context("reading the scan input"));
    }
    Ok((rec, elapsed, case_rec))
}

/// Fails with a clear message when nothing answers at the target.
pub(crate) async fn check_reachable(settings: Arc<ConnSettings>) -> Result<()> {
    let mut conn = Conn::new(settings.clone());
    match conn
        .request(Method::GET, "/healthz", None, Bytes::new())
        .await
    {
        Ok(_) => Ok(()),
        // A request that cannot even be built (e.g. a token that is no valid header value)
        // is the run's setup failing, not the server being away: say so once.
        Err(crate::http::TransportError::Request(why)) => {
            Err(anyhow!("cannot send requests: {why}"))
        }
        Err(e) => Err(anyhow!(
            "no checkin-server answering at {} ({e}); start it first",
            settings.target
        )),
    }
}

/// Registers venues (a JSON array of venue objects) in chunks; returns how many the server
/// counted.
pub async fn register_venues(
    settings: Arc<ConnSettings>,
    venues: &[serde_json::Value],
    chunk: usize,
) -> Result<u64> {
    #[derive(Deserialize)]
    struct Registered {
        registered: u64,
    }
    let mut conn = Conn::new(settings);
    let mut total = 0;
    for part in venues.chunks(chunk.max(1)) {
        let body = serde_json::to_vec(part)?;
        let a = conn
            .request(Method::POST, "/v1/venues", Some(JSON), Bytes::from(body))
            .await
            .context("registering venues")?;
        if !a.status.is_success() {
            let text = String::from_utf8_lossy(&a.body);
            let snippet: String = text.chars().take(300).collect();
            bail!("registering venues: HTTP {} {}", a.status, snippet);
        }
        let r: Registered = serde_json::from_slice(&a.body)
            .context("registering venues: unexpected answer (no \"registered\")")?;
        total += r.registered;
    }
    Ok(total)
}

/// The venues file next to a scans file (`venues.json` in the same directory).
pub fn sibling_venues(scans: &Path) -> PathBuf {
    scans
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(crate::dataset::VENUES_JSON)
}

fn load_venues(source: &Source) -> Result<Vec<serde_json::Value>> {
    match source {
        Source::Generate(p) => {
            let vs = gen::venues(p)?;
            vs.iter()
                .map(|v| serde_json::to_value(v).map_err(Into::into))
                .collect()
        }
        Source::File { scans, venues } => {
            let path = venues.clone().unwrap_or_else(|| sibling_venues(scans));
            let text = std::fs::read(&path).with_context(|| {
                format!(
                    "reading venues from {} (give --venues-file, or --no-register if the \
                     server already knows them)",
                    path.display()
                )
            })?;
            match serde_json::from_slice::<serde_json::Value>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
            {
                serde_json::Value::Array(v) => Ok(v),
                one @ serde_json::Value::Object(_) => Ok(vec![one]),
                _ => bail!("{}: expected a JSON array of venues", path.display()),
            }
        }
    }
}

/// Registers the venues, then drives `POST /v1/scans` until a bound is hit.
pub async fn run_ingest(opts: IngestOptions) -> Result<Report> {
    run_ingest_with_cases(opts, CaseOptions::new(0.0)).await
}

/// [`run_ingest`], registering `cases.per_min` cases per minute while the scans go (none at
/// 0); the report's `cases` then says how that went.
pub async fn run_ingest_with_cases(opts: IngestOptions, cases: CaseOptions) -> Result<Report> {
    let prefix = cases.validate(gen::now_unix())?;
    if !(1..=MAX_BATCH).contains(&opts.batch) {
        bail!("batch must be in 1..={MAX_BATCH} (the contract's limit per request)");
    }
    let c = &opts.common;
    if c.duration.is_none() && opts.scans.is_none() && matches!(opts.source, Source::Generate(_)) {
        bail!("an on-the-fly run needs a bound: --duration and/or --scans");
    }
    let settings = c.conn_settings();
    check_reachable(settings.clone()).await?;
    let venues_registered = if opts.register_venues {
        let venues = load_venues(&opts.source)?;
        Some(register_venues(settings, &venues, opts.venue_chunk).await?)
    } else {
        None
    };
    let input = match &opts.source {
        Source::Generate(p) => {
            let g = Generator::new(p)?;
            let ids = g.ids();
            ScanInput::Gen(Box::new(g), ids)
        }
        Source::File { scans, .. } => {
            let f = File::open(scans).with_context(|| format!("opening {}", scans.display()))?;
            ScanInput::File(BufReader::with_capacity(1 << 20, f), scans.clone())
        }
    };
    let plan = prefix.map(|prefix| CasePlan {
        per_min: cases.per_min,
        seed: cases.seed,
        retention_days: cases.retention_days,
        prefix,
        token: cases.token.clone(),
        sent: Arc::new(Mutex::new(match &input {
            ScanInput::Gen(_, ids) => SentPersons::generated(*ids),
            ScanInput::File(..) => SentPersons::file(),
        })),
    });
    let summary_of = plan.as_ref().map(|p| (p.per_min, p.prefix.clone()));
    let source = ScanSource {
        input,
        batch: opts.batch,
        remaining: opts.scans,
        line: Vec::new(),
        sent: plan.as_ref().map(|p| p.sent.clone()),
    };
    let bound = match (opts.scans, c.duration) {
        (Some(n), _) => Bound::Scans(n),
        (None, Some(d)) => Bound::Time(d),
        (None, None) => Bound::Open,
    };
    let (rec, elapsed, case_rec) = drive(c, Box::new(source), bound, plan).await?;
    let mut report = Report::new(
        RunInfo {
            command: "ingest".into(),
            url: c.target.to_string(),
            connections: c.connections,
            http2: c.http2,
            batch: Some(opts.batch),
            rate: c.rate,
        },
        &rec,
        elapsed,
    );
    report.venues_registered = venues_registered;
    if let (Some(r), Some((per_min, prefix))) = (case_rec, summary_of) {
        // The case task schedules cases until the deadline or the end of the scans.
        let window = c.duration.map_or(elapsed, |d| d.min(elapsed));
        report.cases = Some(r.summary(per_min, &prefix, window));
    }
    Ok(report)
}

/// Distinct person ids in the first `max_lines` lines of an NDJSON or CSV scans file.
pub fn persons_from_file(path: &Path, max_lines: u64) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct P {
        person: String,
    }
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut seen = HashSet::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        if i as u64 >= max_lines {
            break;
        }
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let line = line.trim();
        let person = if line.starts_with('{') {
            match serde_json::from_str::<P>(line) {
                Ok(p) => p.person,
                Err(_) => continue,
            }
        } else {
            match line.split(',').next() {
                Some(p) if !p.is_empty() && p != "person" => p.to_string(),
                _ => continue,
            }
        };
        seen.insert(person);
    }
    let mut v: Vec<String> = seen.into_iter().collect();
    v.sort_unstable();
    if v.is_empty() {
        bail!("no person ids found in {}", path.display());
    }
    Ok(v)
}

/// Drives `POST /v1/trace` for random persons until a bound is hit.
pub async fn run_trace(opts: TraceOptions) -> Result<Report> {
    let c = &opts.common;
    if c.duration.is_none() && opts.requests.is_none() {
        bail!("a trace run needs a bound: --duration and/or --requests");
    }
    let pool = PersonPool::of(&opts.persons)?;
    let settings = c.conn_settings();
    check_reachable(settings).await?;
    let source = TraceSource {
        pool,
        rng: Rng::new(opts.seed),
        depth: opts.depth,
        remaining: opts.requests,
        from: opts.from,
        to: opts.to,
        min_overlap_s: opts.min_overlap_s,
    };
    let bound = match (opts.requests, c.duration) {
        (Some(n), _) => Bound::Requests(n),
        (None, Some(d)) => Bound::Time(d),
        (None, None) => Bound::Open,
    };
    let (rec, elapsed, _) = drive(c, Box::new(source), bound, None).await?;
    Ok(Report::new(
        RunInfo {
            command: "trace".into(),
            url: c.target.to_string(),
            connections: c.connections,
            http2: c.http2,
            batch: None,
            rate: c.rate,
        },
        &rec,
        elapsed,
    ))
}
