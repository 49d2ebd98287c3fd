//! One function per route: parse the request's query and body, call the engine, shape the JSON.
//!
//! Anything that may wait on the disk (ingestion acknowledgement, venue registration, audit
//! appends, traces) runs off the tokio workers: ingestion through the engine's completion
//! callback and a oneshot, the rest in `spawn_blocking`. Every person lookup and trace is written
//! to the audit log, durably, before the answer is sent: the audit entry (queued to the engine's
//! audit writer, which flushes every queued entry at once) and the lookup run side by side and
//! the answer waits for both; if the audit
//! entry cannot be stored the lookup is refused (503) and its result discarded. Person visits and
//! depth-1 traces are microseconds of in-memory work and run on the worker; depth-2 traces go to
//! the blocking pool.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::body::Req;
use bytes::Bytes;
use engine::{AuditEntry, Engine, IngestOutcome, TraceRequest, Visit};
use http_body_util::{Either, Full};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::access::Principal;
use crate::app::App;
use crate::body::{body_format, read_body};
use crate::decode::{self, DecodeError};
use crate::problem::{ApiError, Body};
use crate::routes::{query_param, RouteSpec};
use crate::sse::{self, Start, MAX_REPLAY};

/// Bodies larger than this are decoded on the blocking pool rather than a tokio worker.
const DECODE_INLINE_MAX: usize = 1 << 20;
/// Default and largest `?top=N`.
const TOP_DEFAULT: usize = 10;
const TOP_MAX: usize = 1000;

/// What the pipeline learned about a request before its handler runs.
pub(crate) struct Ctx {
    pub spec: &'static RouteSpec,
    /// The decoded `{id}` segment (empty for routes without one).
    pub param: String,
    pub principal: Arc<Principal>,
    pub query: Vec<(String, String)>,
    /// Whether this node took the request from its caller: it then counts the change it makes
    /// in its metrics. `false` when a cluster node's replica applies a command that another
    /// node took (or replays its own after a restart).
    pub taken_here: bool,
}

pub(crate) type Answer = Result<Response<Body>, ApiError>;

pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Answer {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| ApiError::Internal(format!("could not encode the answer: {e}")))?;
    Ok(raw(status, "application/json", Bytes::from(bytes)))
}

pub(crate) fn raw(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("a worker task failed: {e}")))
}

/// An audit entry on its way to the log (see [`audit_outcome`]).
pub(crate) struct AuditPending(tokio::sync::oneshot::Receiver<engine::Result<()>>);

impl AuditPending {
    /// `Ok` once the entry is durable, else why it was not stored (`503`).
    pub(crate) async fn stored(self) -> Result<(), ApiError> {
        self.0
            .await
            .map_err(|_| {
                ApiError::Unavailable("the store stopped before recording the audit entry".into())
            })?
            .map_err(engine_err)
    }
}

/// Hands an audit entry's completion to `submit` at once and returns what waits for it. Every
/// audit write of the handlers goes through here.
pub(crate) fn audit_outcome(
    submit: impl FnOnce(Box<dyn FnOnce(engine::Result<()>) + Send>),
) -> AuditPending {
    let (stored_tx, stored) = tokio::sync::oneshot::channel();
    submit(Box::new(move |r| {
        let _ = stored_tx.send(r);
    }));
    AuditPending(stored)
}

/// Runs `work` while `entry` is made durable in the audit log, and answers only once both are
/// done: an audit failure refuses the lookup (503) and discards its result. `work` runs on this
/// worker when `inline` (microseconds of in-memory work), else on the blocking pool.
pub(crate) async fn audited<T: Send + 'static>(
    engine: &Engine,
    entry: AuditEntry,
    inline: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let stored = audit_outcome(|done| engine.audit_submit(entry, done));
    let out = if inline {
        work()
    } else {
        blocking(work).await?
    };
    stored.stored().await?;
    Ok(out)
}

pub(crate) fn engine_err(e: engine::Error) -> ApiError {
    ApiError::from_engine(&e)
}

/// An integer query parameter, or `None` when absent.
pub(crate) fn int_param(ctx: &Ctx, name: &str) -> Result<Option<i64>, ApiError> {
    match query_param(&ctx.query, name) {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "query parameter '{name}' must be an integer, got '{v}'"
            ))
        }),
    }
}

fn unknown_venue(id: &str) -> ApiError {
    ApiError::NotFound(format!("venue '{id}' is not registered"))
}

pub(crate) fn healthz(app: &App) -> Answer {
    store_status(app, "ok")
}

/// `GET /readyz`: `200` once this node answers every route. Alone that is `/healthz`; in
/// cluster mode the dispatcher first refuses it with `503` until the node's replica of the
/// health domain has caught up with the stream (it is routed as a read of the health domain),
/// so a load balancer can keep a restarted node out of the pool while `/healthz` already says
/// it takes scans.
pub(crate) fn readyz(app: &App) -> Answer {
    store_status(app, "ready")
}

/// `{"status": ok_word}` while the store can acknowledge scans; else the same 503 as ingestion
/// gets, without internal paths (these routes need no token).
fn store_status(app: &App, ok_word: &str) -> Answer {
    app.engine()
        .health()
        .map_err(|e| ApiError::from_engine(&e))?;
    // A health database or dose log that refuses every write until a restart: a supervisor
    // that restarts on a failing /healthz mends it.
    if let Some(why) = app.health().write_failure() {
        tracing::error!(%why, "the health domain cannot store changes until a restart");
        return Err(ApiError::Unavailable(
            "the health database cannot store changes until the server is restarted".into(),
        ));
    }
    json(StatusCode::OK, &serde_json::json!({ "status": ok_word }))
}

pub(crate) async fn metrics(app: &App) -> Answer {
    let mut stats = app.engine().stats();
    if let Some(node) = app.cluster() {
        app.inner
            .metrics
            .set_continued_answers(node.continued_answers());
        // The store gauges are the shards'. A scrape must not hang on a shard that is taking
        // over: without an answer within 2 s they show the node's own (empty) store and
        // `checkin_cluster_stats_failures_total` counts it.
        match tokio::time::timeout(
            std::time::Duration::from_secs(2),
            crate::cluster_mode::shard_totals(node),
        )
        .await
        {
            Ok(Ok(t)) => {
                stats.scans = t.scans;
                stats.persons = t.persons;
                stats.log_bytes = t.log_bytes;
                stats.present = t.present;
            }
            _ => app.inner.metrics.note_cluster_stats_failure(),
        }
    }
    if let Some(replica) = app.inner.replica.get() {
        app.inner
            .metrics
            .set_replica(replica.applied(), replica.is_caught_up(), replica.behind());
    }
    app.inner.metrics.set_store_write_failed(
        app.engine().health().is_err(),
        app.health().write_failure().is_some(),
    );
    let text = app
        .inner
        .metrics
        .render(&stats, &app.inner.health.stats())
        .map_err(|e| ApiError::Internal(format!("could not render metrics: {e}")))?;
    Ok(raw(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(text),
    ))
}

pub(crate) async fn register_venues(app: &App, req: Req) -> Answer {
    body_format(req.headers(), false)?;
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, app.body_timeouts()).await?;
    let specs = decode::decode_venues(&body).map_err(ApiError::BadRequest)?;
    if let Some(node) = app.cluster() {
        let n = crate::cluster_mode::register_venues(node, specs).await?;
        return json(StatusCode::OK, &serde_json::json!({ "registered": n }));
    }
    let engine = app.engine().clone();
    let n = blocking(move || engine.register_venues(specs))
        .await?
        .map_err(engine_err)?;
    json(StatusCode::OK, &serde_json::json!({ "registered": n }))
}

#[derive(Serialize)]
struct VenueOut<'a> {
    id: &'a str,
    name: &'a str,
    province: Option<&'a str>,
    default_stay_s: u32,
    present: u32,
}

pub(crate) async fn venue(app: &App, ctx: &Ctx) -> Answer {
    if let Some(node) = app.cluster() {
        crate::cluster_mode::known_venue(app, node, &ctx.param).await?;
    }
    let mut v = app
        .engine()
        .venue(&ctx.param)
        .ok_or_else(|| unknown_venue(&ctx.param))?;
    if let Some(node) = app.cluster() {
        v.present = crate::cluster_mode::occupancy(app, node, &ctx.param).await?;
    }
    json(
        StatusCode::OK,
        &VenueOut {
            id: &v.id,
            name: &v.name,
            province: v.province.as_deref(),
            default_stay_s: v.default_stay_s,
            present: v.present,
        },
    )
}

#[derive(Serialize)]
struct OccupancyOut<'a> {
    venue: &'a str,
    present: u32,
    as_of: i64,
}

pub(crate) async fn venue_occupancy(app: &App, ctx: &Ctx) -> Answer {
    let engine = app.engine();
    let present = match app.cluster() {
        Some(node) => crate::cluster_mode::occupancy(app, node, &ctx.param).await?,
        None => engine
            .occupancy(&ctx.param)
            .ok_or_else(|| unknown_venue(&ctx.param))?,
    };
    json(
        StatusCode::OK,
        &OccupancyOut {
            venue: &ctx.param,
            present,
            as_of: engine.now(),
        },
    )
}

pub(crate) fn venue_events(app: &App, ctx: &Ctx, req: &Req) -> Answer {
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Last-Event-ID must be an event id (a seq) this server sent".into(),
                    )
                })
        })
        .transpose()?;
    let last = match int_param(ctx, "last")? {
        None => None,
        Some(n) => match usize::try_from(n) {
            Ok(n) if n <= MAX_REPLAY => Some(n),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "query parameter 'last' must be an integer in 0..={MAX_REPLAY}"
                )))
            }
        },
    };
    if app.engine().venue(&ctx.param).is_none() {
        return Err(unknown_venue(&ctx.param));
    }
    let start = match (last_event_id, last) {
        (Some(seq), _) => Start::After(seq),
        (None, Some(n)) if n > 0 => Start::Last(n),
        _ => Start::Live,
    };
    let body = sse::open_feed(
        app.engine().clone(),
        &app.inner.hub,
        ctx.param.clone(),
        start,
        app.options().sse_keepalive,
        app.inner.shutdown.subscribe(),
    );
    let mut resp = Response::new(Either::Right(body));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

#[derive(Serialize)]
struct TopEntry<'a> {
    venue: &'a str,
    present: u32,
}

#[derive(Serialize)]
struct TopOut<'a> {
    venues: Vec<TopEntry<'a>>,
}

pub(crate) async fn top_occupancy(app: &App, ctx: &Ctx) -> Answer {
    let n = match int_param(ctx, "top")? {
        None => TOP_DEFAULT,
        Some(n) => match usize::try_from(n) {
            Ok(n) if n <= TOP_MAX => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "query parameter 'top' must be an integer in 0..={TOP_MAX}"
                )))
            }
        },
    };
    let engine = app.engine().clone();
    let top = match app.cluster() {
        Some(node) => crate::cluster_mode::top_occupancy(app, node, n).await?,
        None => blocking(move || engine.top_occupancy(n)).await?,
    };
    json(
        StatusCode::OK,
        &TopOut {
            venues: top
                .iter()
                .map(|(venue, present)| TopEntry {
                    venue,
                    present: *present,
                })
                .collect(),
        },
    )
}

pub(crate) async fn scans(app: &App, req: Req) -> Answer {
    let format = body_format(req.headers(), true)?;
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, app.body_timeouts()).await?;
    let items = if body.len() <= DECODE_INLINE_MAX {
        decode::decode_scans(&body, format)
    } else {
        blocking(move || decode::decode_scans(&body, format)).await?
    }
    .map_err(|e| match e {
        DecodeError::TooMany => ApiError::TooLarge(e.to_string()),
        DecodeError::Malformed(m) => ApiError::BadRequest(m),
    })?;
    let outcome = if items.is_empty() {
        IngestOutcome::default()
    } else {
        match app.cluster() {
            Some(node) => crate::cluster_mode::submit(app, node, items).await?,
            None => submit(app.engine(), items).await?,
        }
    };
    app.inner.metrics.record_outcome(&outcome);
    let mut out = String::with_capacity(40 + outcome.rejected.len() * 40);
    let _ = write!(out, "{{\"accepted\":{},\"rejected\":[", outcome.accepted());
    for (i, r) in outcome.rejected.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"index\":{},\"reason\":\"{}\"}}",
            r.index,
            r.reason.code()
        );
    }
    out.push_str("]}");
    Ok(raw(StatusCode::OK, "application/json", Bytes::from(out)))
}

/// Hands a batch to the engine and waits, without holding a worker, until it is durable.
async fn submit(engine: &Engine, items: Vec<engine::ScanItem>) -> Result<IngestOutcome, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    engine.submit(
        items,
        Box::new(move |result| {
            let _ = tx.send(result);
        }),
    );
    rx.await
        .map_err(|_| {
            ApiError::Unavailable("the store stopped before acknowledging the scans".into())
        })?
        .map_err(engine_err)
}

/// Resolves `from`/`to` as the contract's trace defaults do: `to = now`, `from = to - 14 days`.
pub(crate) fn window(ctx: &Ctx, now: i64) -> Result<(i64, i64), ApiError> {
    engine::resolve_window(int_param(ctx, "from")?, int_param(ctx, "to")?, now)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

#[derive(Serialize)]
struct VisitOut<'a> {
    venue: &'a str,
    start: i64,
    end: i64,
}

fn visits_out(visits: &[Visit]) -> Vec<VisitOut<'_>> {
    visits
        .iter()
        .map(|v| VisitOut {
            venue: &v.venue,
            start: v.start,
            end: v.end,
        })
        .collect()
}

#[derive(Serialize)]
struct PersonVisitsOut<'a> {
    person: &'a str,
    visits: Vec<VisitOut<'a>>,
}

/// Audits a change to the health domain (subject: the person it concerns) before it is
/// answered: the entry is submitted at once, [`AuditChange::stored`] waits for it. Alone: durably
/// in the store's audit log. In cluster mode the handler runs as the follower applies the
/// change's command, on every node, and the command is already durable in the stream: every
/// node's replica derives the same entry from it, stamped with the command's time, into its own
/// store's `audit.log` (a cache of the stream like the rest of the store), and
/// `GET /v1/audit` adds those entries to the audit stream's lookups.
pub(crate) fn audit_change<'a>(app: &'a App, ctx: &Ctx, subject: &str) -> AuditChange<'a> {
    let engine = app.engine();
    let mut entry = audit_entry(engine, ctx, subject);
    match app.inner.replica.get() {
        Some(replica) => {
            entry.ts = replica.command_time();
            let again = entry.clone();
            AuditChange::Replica {
                app,
                first: audit_outcome(|done| engine.audit_submit_local(entry, done)),
                entry: again,
            }
        }
        None => AuditChange::Alone {
            app,
            first: audit_outcome(|done| engine.audit_submit(entry.clone(), done)),
            entry,
        },
    }
}

/// The audit entry of a change, on its way to the log ([`audit_change`]).
pub(crate) enum AuditChange<'a> {
    /// Single node: a failure refuses the request (`503`). The change is made all the same (its
    /// retry finds it made and writes no entry), so the entry is owed: kept in
    /// `audit-owed.log`, which the next start moves into `audit.log` ([`owe`]).
    Alone {
        app: &'a App,
        first: AuditPending,
        entry: AuditEntry,
    },
    /// A cluster replica applying a command, whose change is already made when its entry is
    /// written: a failure to write it is tried again (every second) rather than answered, since
    /// the command applied again would find the change made and write no entry. A failure that
    /// lasts (`--replica-stall-exit`) stops the server, whose restart cuts its store back to a
    /// checkpoint from before the command.
    Replica {
        app: &'a App,
        first: AuditPending,
        entry: AuditEntry,
    },
}

impl AuditChange<'_> {
    /// `Ok` once the entry is durable, else why it was not stored (`503`).
    pub(crate) async fn stored(self) -> Result<(), ApiError> {
        let (app, first, entry) = match self {
            AuditChange::Alone { app, first, entry } => {
                let refused = first.stored().await;
                if refused.is_err() {
                    owe(app, entry).await;
                }
                return refused;
            }
            AuditChange::Replica { app, first, entry } => (app, first, entry),
        };
        let started = Instant::now();
        let mut attempt = first;
        loop {
            let e = match attempt.stored().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let limit = app
                .inner
                .replica
                .get()
                .and_then(|r| r.stall_exit())
                .unwrap_or(Duration::MAX);
            if app.is_shutting_down() {
                return Err(e);
            }
            if started.elapsed() >= limit {
                app.stop_for(format!(
                    "the audit entry of an applied change could not be written for {} s ({e})",
                    started.elapsed().as_secs()
                ));
                return Err(e);
            }
            tracing::warn!(error = %e, "the audit entry of an applied change was not written; trying again in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let engine = app.engine();
            let entry = entry.clone();
            attempt = audit_outcome(|done| engine.audit_submit_local(entry, done));
        }
    }
}

/// Keeps the entry of a change that `audit.log` refused in `audit-owed.log`
/// ([`Engine::audit_owe`]), trying again every second while that fails too (the same full
/// disk), until it is stored or the server stops; the entry is logged whole either way, so that
/// an operator has it even if it never reaches a disk.
async fn owe(app: &App, entry: AuditEntry) {
    tracing::error!(ts = entry.ts, who = %entry.who, action = %entry.action, subject = %entry.subject,
        "audit.log refused the entry of a change that was made; keeping it in audit-owed.log");
    let app = app.clone();
    let keep = async move {
        loop {
            let engine = app.engine().clone();
            let owed = entry.clone();
            match tokio::task::spawn_blocking(move || engine.audit_owe(owed)).await {
                Ok(Ok(())) => {
                    tokio::spawn(settle_owed(app));
                    return;
                }
                Ok(Err(e)) => tracing::error!(error = %e, subject = %entry.subject,
                    "could not keep an owed audit entry; trying again in 1 s"),
                Err(e) => tracing::error!(error = %e, "the owed audit entry's task failed"),
            }
            if app.is_shutting_down() {
                tracing::error!(ts = entry.ts, who = %entry.who, action = %entry.action,
                    subject = %entry.subject, "an owed audit entry is lost with the shutdown");
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    // The first attempt is waited for (so the usual case is kept before the 503 is answered);
    // retries run on after it.
    let first = tokio::spawn(keep);
    let _ = tokio::time::timeout(Duration::from_secs(2), first).await;
}

/// Moves the owed audit entries into `audit.log` once it takes appends again (a full disk
/// that has room again), trying every 5 s while the server runs; a restart moves them otherwise.
pub(crate) async fn settle_owed(app: App) {
    while !app.is_shutting_down() {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let engine = app.engine().clone();
        match tokio::task::spawn_blocking(move || engine.audit_settle_owed()).await {
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => {
                tracing::warn!(entries = n, "moved the owed audit entries into audit.log");
                return;
            }
            Ok(Err(engine::Error::Poisoned(_))) => return,
            Ok(Err(e)) => tracing::warn!(error = %e, "the owed audit entries stay owed for now"),
            Err(e) => tracing::error!(error = %e, "the owed audit entries' task failed"),
        }
    }
}

pub(crate) fn audit_entry(engine: &Engine, ctx: &Ctx, subject: &str) -> AuditEntry {
    AuditEntry {
        ts: engine.now(),
        who: ctx.principal.name.to_string(),
        action: ctx.spec.pattern.to_string(),
        subject: subject.to_string(),
    }
}

pub(crate) async fn person_visits(app: &App, ctx: &Ctx) -> Answer {
    let engine = app.engine().clone();
    let (from, to) = window(ctx, engine.now())?;
    let person = ctx.param.clone();
    if !engine::is_valid_person_id(&person) {
        return Err(ApiError::NotFound(format!(
            "'{}' is not a person id (1-64 bytes of [A-Za-z0-9._:+-])",
            person.escape_debug()
        )));
    }
    let entry = audit_entry(&engine, ctx, &person);
    if let Some(node) = app.cluster() {
        return crate::cluster_mode::person_visits(app, node, &person, from, to, entry).await;
    }
    let reader = engine.clone();
    let looked_up = audited(&engine, entry, true, move || {
        reader.visits(&person, from, to)
    })
    .await?;
    let visits = looked_up
        .ok_or_else(|| ApiError::NotFound(format!("no scans of person '{}'", ctx.param)))?;
    json(
        StatusCode::OK,
        &PersonVisitsOut {
            person: &ctx.param,
            visits: visits_out(&visits),
        },
    )
}

pub(crate) async fn trace(app: &App, ctx: &Ctx, req: Req) -> Answer {
    body_format(req.headers(), false)?;
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, app.body_timeouts()).await?;
    let t = decode::decode_trace(&body).map_err(ApiError::BadRequest)?;
    if !engine::is_valid_person_id(&t.person) {
        return Err(ApiError::BadRequest(
            "person must be 1-64 bytes of [A-Za-z0-9._:+-]".into(),
        ));
    }
    // Out-of-range depths become 0, which `TraceRequest::new` refuses like any other bad depth.
    let depth = t.depth.map(|d| u8::try_from(d).unwrap_or(0));
    let engine = app.engine().clone();
    let request = TraceRequest::new(
        t.person,
        t.from,
        t.to,
        t.min_overlap_s,
        depth,
        t.min_stay_s,
        t.linger_s,
        engine.now(),
    )
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let entry = audit_entry(&engine, ctx, &request.person);
    if let Some(node) = app.cluster() {
        return crate::cluster_mode::trace(app, node, request, entry).await;
    }
    let metrics = app.inner.metrics.clone();
    // A depth-1 trace is tens of microseconds of in-memory work and runs on this worker; a
    // depth-2 trace can take milliseconds and goes to the blocking pool.
    let inline = request.depth == 1;
    let tracer = engine.clone();
    // The answer is built next to the audit flush too: only sending it waits for the flush.
    let (answer, person) = audited(&engine, entry, inline, move || {
        let started = Instant::now();
        let result = tracer.trace(&request);
        metrics.observe_trace(request.depth, started.elapsed());
        let body = result.as_ref().map(crate::trace_body::trace_body);
        (body, request.person)
    })
    .await?;
    let body =
        answer.ok_or_else(|| ApiError::NotFound(format!("no scans of person '{person}'")))?;
    Ok(raw(StatusCode::OK, "application/json", Bytes::from(body)))
}

#[derive(Serialize)]
struct StatsOut {
    scans: u64,
    venues: u64,
    persons: u64,
    log_bytes: u64,
}

pub(crate) async fn stats(app: &App) -> Answer {
    let s = app.engine().stats();
    let mut out = StatsOut {
        scans: s.scans,
        venues: s.venues,
        persons: s.persons,
        log_bytes: s.log_bytes,
    };
    if let Some(node) = app.cluster() {
        // The scans are the shards': summed over one replica of each; venues are this node's
        // registry, complete once its replica has caught up with the stream (503 before).
        crate::cluster_mode::venues_complete(app)?;
        let t = crate::cluster_mode::shard_totals(node).await?;
        out.scans = t.scans;
        out.persons = t.persons;
        out.log_bytes = t.log_bytes;
    }
    json(StatusCode::OK, &out)
}

#[derive(Serialize)]
struct AuditOut<'a> {
    ts: i64,
    who: &'a str,
    action: &'a str,
    subject: &'a str,
}

#[derive(Serialize)]
struct AuditListOut<'a> {
    entries: Vec<AuditOut<'a>>,
}

pub(crate) async fn audit(app: &App, ctx: &Ctx) -> Answer {
    let since = int_param(ctx, "since")?.unwrap_or(0);
    let entries = match app.cluster() {
        Some(node) => crate::cluster_mode::audit_since(app, node, since).await?,
        None => {
            let engine = app.engine().clone();
            blocking(move || engine.audit_since(since))
                .await?
                .map_err(engine_err)?
        }
    };
    let entries: Vec<AuditOut<'_>> = entries
        .iter()
        .map(|e| AuditOut {
            ts: e.ts,
            who: &e.who,
            action: &e.action,
            subject: &e.subject,
        })
        .collect();
    json(StatusCode::OK, &AuditListOut { entries })
}
