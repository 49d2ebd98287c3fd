//! The routes of contract section 10 over the health domain: cases, their standing traces,
//! person status, tier events and the public exposure sites.
//!
//! Case changes (registration, recovery, discard) are durable in the health database before
//! the answer and are then written to the audit log (subject: the case's person); reads of a
//! case's contacts and of a person's status are audited before they are answered, like traces.

use crate::body::Req;
use bytes::Bytes;
use health::{CaseChange, CaseStatus, CaseView, NewCase, PersonStatus};
use http_body_util::Either;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::body::{body_format, read_body};
use crate::handlers::{
    audit_change, audit_entry, audited, blocking, int_param, json, raw, Answer, Ctx,
};
use crate::problem::ApiError;
use crate::routes::query_param;

/// Default look-back of `GET /v1/exposure-sites` (`since = now - 14 days`).
const SITES_DEFAULT_WINDOW_S: i64 = 14 * 86_400;

pub(crate) fn health_err(e: health::Error) -> ApiError {
    match e {
        health::Error::Invalid(m) => ApiError::BadRequest(m),
        health::Error::Conflict(m) => ApiError::Conflict(m),
        health::Error::NotFound(m) => ApiError::NotFound(m),
        health::Error::ShuttingDown => ApiError::Unavailable("the server is shutting down".into()),
        health::Error::Store(m) => {
            tracing::error!(error = %m, "health database failed");
            ApiError::Unavailable("the health database cannot store records right now".into())
        }
    }
}

/// A JSON request body, decoded into `T` (unknown fields ignored; wrong types are 400).
async fn json_body<T: for<'de> Deserialize<'de>>(app: &App, req: Req) -> Result<T, ApiError> {
    body_format(req.headers(), false)?;
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, app.body_timeouts()).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not a valid request: {e}")))
}

#[derive(Deserialize)]
struct CaseBody {
    person: String,
    sampled_at: i64,
    onset: Option<i64>,
    isolated_at: Option<i64>,
    area: Option<String>,
    note: Option<String>,
    id: Option<String>,
}

#[derive(Serialize)]
struct CaseOut<'a> {
    id: &'a str,
    person: &'a str,
    status: &'static str,
    source: &'a str,
    sampled_at: i64,
    onset: Option<i64>,
    isolated_at: i64,
    registered_at: i64,
    recovered_at: Option<i64>,
    area: Option<&'a str>,
    note: Option<&'a str>,
    from: i64,
    to: i64,
    f1: usize,
    f2: usize,
}

fn case_out(v: &CaseView) -> CaseOut<'_> {
    let c = &v.case;
    CaseOut {
        id: &c.id,
        person: &c.person,
        status: c.status.as_str(),
        source: &c.source,
        sampled_at: c.sampled_at,
        onset: c.onset,
        isolated_at: c.isolated_at,
        registered_at: c.registered_at,
        recovered_at: c.recovered_at,
        area: c.area.as_deref(),
        note: c.note.as_deref(),
        from: v.from,
        to: v.to,
        f1: v.f1,
        f2: v.f2,
    }
}

pub(crate) async fn register_case(app: &App, ctx: &Ctx, req: Req) -> Answer {
    let b: CaseBody = json_body(app, req).await?;
    let request = NewCase {
        id: b.id,
        person: b.person,
        sampled_at: b.sampled_at,
        onset: b.onset,
        isolated_at: b.isolated_at,
        area: b.area,
        note: b.note,
    };
    let health = app.health().clone();
    let (view, created) = blocking(move || health.register_case(request))
        .await?
        .map_err(health_err)?;
    if created {
        audit_change(app, ctx, &view.case.person).stored().await?;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json(status, &case_out(&view))
}

#[derive(Serialize)]
struct CaseListOut<'a> {
    cases: Vec<CaseOut<'a>>,
}

pub(crate) async fn list_cases(app: &App, ctx: &Ctx) -> Answer {
    let status = match query_param(&ctx.query, "status") {
        None | Some("") => None,
        Some(s) => Some(CaseStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "query parameter 'status' must be active, recovered or discarded, got '{s}'"
            ))
        })?),
    };
    let since = int_param(ctx, "since")?;
    let health = app.health().clone();
    let cases = blocking(move || health.cases(status, since)).await?;
    json(
        StatusCode::OK,
        &CaseListOut {
            cases: cases.iter().map(case_out).collect(),
        },
    )
}

fn unknown_case(id: &str) -> ApiError {
    ApiError::NotFound(format!("no case '{id}'"))
}

pub(crate) fn get_case(app: &App, ctx: &Ctx) -> Answer {
    let view = app
        .health()
        .case(&ctx.param)
        .ok_or_else(|| unknown_case(&ctx.param))?;
    json(StatusCode::OK, &case_out(&view))
}

#[derive(Deserialize)]
struct PatchBody {
    status: String,
    at: Option<i64>,
}

pub(crate) async fn patch_case(app: &App, ctx: &Ctx, req: Req) -> Answer {
    let b: PatchBody = json_body(app, req).await?;
    let change = match CaseStatus::parse(&b.status) {
        Some(CaseStatus::Recovered) => CaseChange::Recover { at: b.at },
        Some(CaseStatus::Discarded) => CaseChange::Discard,
        Some(other) => CaseChange::Other(other),
        None => {
            return Err(ApiError::BadRequest(format!(
                "status must be recovered or discarded, got '{}'",
                b.status
            )))
        }
    };
    let health = app.health().clone();
    let id = ctx.param.clone();
    let (view, changed) = blocking(move || health.change_case(&id, change))
        .await?
        .map_err(health_err)?;
    if changed {
        audit_change(app, ctx, &view.case.person).stored().await?;
    }
    json(StatusCode::OK, &case_out(&view))
}

pub(crate) async fn case_contacts(app: &App, ctx: &Ctx) -> Answer {
    let health = app.health();
    let view = health
        .case(&ctx.param)
        .ok_or_else(|| unknown_case(&ctx.param))?;
    let entry = audit_entry(app.engine(), ctx, &view.case.person);
    let reader = health.clone();
    let id = ctx.param.clone();
    let body = audited(app.engine(), entry, true, move || {
        reader
            .contacts(&id)
            .map(|t| crate::trace_body::trace_body(&t))
    })
    .await?
    .ok_or_else(|| unknown_case(&ctx.param))?;
    Ok(raw(StatusCode::OK, "application/json", Bytes::from(body)))
}

#[derive(Serialize)]
struct StatusOut<'a> {
    person: &'a str,
    tier: &'static str,
    since: Option<i64>,
    until: Option<i64>,
    cases: Vec<&'a str>,
}

/// The JSON of a person's status (also each tier event's data).
pub(crate) fn status_json(s: &PersonStatus) -> String {
    let out = StatusOut {
        person: &s.person,
        tier: s.tier.as_str(),
        since: s.since,
        until: s.until,
        cases: s.cases.iter().map(|c| &**c).collect(),
    };
    // Serializing strings and integers cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}

pub(crate) async fn person_status(app: &App, ctx: &Ctx) -> Answer {
    let entry = audit_entry(app.engine(), ctx, &ctx.param);
    let health = app.health().clone();
    let person = ctx.param.clone();
    let status = audited(app.engine(), entry, true, move || health.status(&person)).await?;
    app.inner.metrics.observe_status(status.tier);
    Ok(raw(
        StatusCode::OK,
        "application/json",
        Bytes::from(status_json(&status)),
    ))
}

pub(crate) fn tier_events(app: &App) -> Answer {
    let body = app
        .inner
        .tiers
        .open_feed(app.options().sse_keepalive, app.inner.shutdown.subscribe());
    let mut resp = Response::new(Either::Right(body));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

#[derive(Serialize)]
struct SiteOut<'a> {
    venue: &'a str,
    name: &'a str,
    province: Option<&'a str>,
    start: i64,
    end: i64,
}

#[derive(Serialize)]
struct SitesOut<'a> {
    sites: Vec<SiteOut<'a>>,
}

pub(crate) async fn exposure_sites(app: &App, ctx: &Ctx) -> Answer {
    let now = app.engine().now();
    let since = int_param(ctx, "since")?.unwrap_or(now - SITES_DEFAULT_WINDOW_S);
    let health = app.health().clone();
    let sites = blocking(move || health.exposure_sites(since)).await?;
    json(
        StatusCode::OK,
        &SitesOut {
            sites: sites
                .iter()
                .map(|s| SiteOut {
                    venue: &s.venue,
                    name: &s.name,
                    province: s.province.as_deref(),
                    start: s.start,
                    end: s.end,
                })
                .collect(),
        },
    )
}
