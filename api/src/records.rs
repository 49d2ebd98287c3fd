//! The routes of contract sections 11 and 12 over the health domain, except vaccinations and
//! certificates (their own modules): samples and results, person results, declarations,
//! follow-ups, the health pass, areas, the summary and notices.
//!
//! Reads of a person's results or pass are audited before they are answered; a result entered or
//! corrected is durable first, then audited (one entry per member of the sample).

use crate::body::Req;
use bytes::Bytes;
use health::{
    AreaInput, AreaView, ClientKey, Declaration, LabResult, NewDeclaration, NewSample, Notice,
    NoticeKind, Sample, SampleKind, Travel,
};
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::body::{body_format, read_body};
use crate::handlers::{
    audit_change, audit_entry, audit_outcome, audited, blocking, json, raw, Answer, Ctx,
};
use crate::outbreak::health_err;
use crate::problem::ApiError;

/// The request header that carries a client's idempotency key (IETF
/// draft-ietf-httpapi-idempotency-key-header): on `POST /v1/declarations` and `POST /v1/notices`.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The answer header that says a keyed request was answered with the record stored before.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// A JSON request body as a generic value (for bodies that are "one object or an array").
async fn body_value(app: &App, req: Req) -> Result<serde_json::Value, ApiError> {
    body_format(req.headers(), false)?;
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, app.body_timeouts()).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
}

fn from_value<T: for<'de> Deserialize<'de>>(v: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::BadRequest(format!("the body is not a valid request: {e}")))
}

#[derive(Serialize)]
struct SampleOut<'a> {
    id: &'a str,
    kind: &'static str,
    persons: &'a [String],
    pooled: bool,
    collected_at: i64,
    site: Option<&'a str>,
    result: &'static str,
    resulted_at: Option<i64>,
}

fn sample_out(s: &Sample) -> SampleOut<'_> {
    SampleOut {
        id: &s.id,
        kind: s.kind.as_str(),
        persons: &s.persons,
        pooled: s.pooled(),
        collected_at: s.collected_at,
        site: s.site.as_deref(),
        result: s.result.map_or("pending", LabResult::as_str),
        resulted_at: s.resulted_at,
    }
}

#[derive(Deserialize)]
struct SampleBody {
    id: String,
    kind: String,
    persons: Vec<String>,
    collected_at: Option<i64>,
    site: Option<String>,
}

pub(crate) async fn register_sample(app: &App, ctx: &Ctx, req: Req) -> Answer {
    let b: SampleBody = from_value(body_value(app, req).await?)?;
    let kind = SampleKind::parse(&b.kind).ok_or_else(|| {
        ApiError::BadRequest(format!("kind must be pcr or antigen, got '{}'", b.kind))
    })?;
    let request = NewSample {
        id: b.id,
        kind,
        persons: b.persons,
        collected_at: b.collected_at,
        site: b.site,
    };
    let health = app.health().clone();
    let (sample, created) = blocking(move || health.register_sample(request))
        .await?
        .map_err(health_err)?;
    if created && ctx.taken_here {
        app.inner.metrics.observe_sample();
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json(status, &sample_out(&sample))
}

/// A sample with its result is a read of each member's results (contract section 8): one audit
/// entry per member, durable before the answer.
pub(crate) async fn get_sample(app: &App, ctx: &Ctx) -> Answer {
    let s = app
        .health()
        .sample(&ctx.param)
        .ok_or_else(|| ApiError::NotFound(format!("no sample '{}'", ctx.param)))?;
    let engine = app.engine();
    // Every member's entry is submitted before any is waited for: they share one write.
    let entries: Vec<_> = s
        .persons
        .iter()
        .map(|person| {
            let entry = audit_entry(engine, ctx, person);
            audit_outcome(|done| engine.audit_submit(entry, done)).stored()
        })
        .collect();
    futures_util::future::try_join_all(entries).await?;
    json(StatusCode::OK, &sample_out(&s))
}

#[derive(Deserialize)]
struct ResultBody {
    result: String,
    resulted_at: Option<i64>,
}

pub(crate) async fn enter_result(app: &App, ctx: &Ctx, req: Req) -> Answer {
    let b: ResultBody = from_value(body_value(app, req).await?)?;
    let result = LabResult::parse(&b.result).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "result must be positive, negative or invalid, got '{}'",
            b.result
        ))
    })?;
    let health = app.health().clone();
    let id = ctx.param.clone();
    let (sample, changed) = blocking(move || health.enter_result(&id, result, b.resulted_at))
        .await?
        .map_err(health_err)?;
    if changed {
        if ctx.taken_here {
            app.inner.metrics.observe_result(result.as_str());
        }
        // Every member's entry is submitted before any is waited for: they share one write.
        // Each is waited for to its end, so that one refused entry does not drop the others
        // before they are kept (owed) too.
        let entries: Vec<_> = sample
            .persons
            .iter()
            .map(|person| audit_change(app, ctx, person).stored())
            .collect();
        for stored in futures_util::future::join_all(entries).await {
            stored?;
        }
    }
    json(StatusCode::OK, &sample_out(&sample))
}

#[derive(Serialize)]
struct ResultOut<'a> {
    sample: &'a str,
    kind: &'static str,
    collected_at: i64,
    site: Option<&'a str>,
    pooled: bool,
    result: &'static str,
    resulted_at: Option<i64>,
}

#[derive(Serialize)]
struct ResultsOut<'a> {
    person: &'a str,
    results: Vec<ResultOut<'a>>,
}

pub(crate) async fn person_results(app: &App, ctx: &Ctx) -> Answer {
    let entry = audit_entry(app.engine(), ctx, &ctx.param);
    let health = app.health().clone();
    let person = ctx.param.clone();
    let results = audited(app.engine(), entry, true, move || health.results(&person)).await?;
    json(
        StatusCode::OK,
        &ResultsOut {
            person: &ctx.param,
            results: results
                .iter()
                .map(|r| ResultOut {
                    sample: &r.sample,
                    kind: r.kind.as_str(),
                    collected_at: r.collected_at,
                    site: r.site.as_deref(),
                    pooled: r.pooled,
                    result: r.result.as_str(),
                    resulted_at: r.resulted_at,
                })
                .collect(),
        },
    )
}

#[derive(Deserialize)]
struct TravelBody {
    from: String,
    to: String,
    date: String,
}

#[derive(Deserialize)]
struct DeclarationBody {
    person: String,
    ts: Option<i64>,
    symptoms: Vec<String>,
    exposure: bool,
    travel: Option<Vec<TravelBody>>,
}

#[derive(Serialize)]
struct TravelOut<'a> {
    from: &'a str,
    to: &'a str,
    date: &'a str,
}

#[derive(Serialize)]
struct DeclarationOut<'a> {
    id: &'a str,
    person: &'a str,
    ts: i64,
    symptoms: Vec<&'static str>,
    exposure: bool,
    travel: Vec<TravelOut<'a>>,
}

fn declaration_out(d: &Declaration) -> DeclarationOut<'_> {
    DeclarationOut {
        id: &d.id,
        person: &d.person,
        ts: d.ts,
        symptoms: d.symptoms.iter().map(|s| s.as_str()).collect(),
        exposure: d.exposure,
        travel: d
            .travel
            .iter()
            .map(|t| TravelOut {
                from: &t.from,
                to: &t.to,
                date: &t.date,
            })
            .collect(),
    }
}

/// The `Idempotency-Key` header of a request, as the caller's [`ClientKey`] (none without the
/// header). The key may be sent bare (`Idempotency-Key: 8e03978e-…`) or as the structured-field
/// string the IETF draft writes (`Idempotency-Key: "8e03978e-…"`).
fn client_key(ctx: &Ctx, req: &Req) -> Result<Option<ClientKey>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::BadRequest("the Idempotency-Key header is not visible ASCII".into())
    })?;
    let key = text
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(text);
    ClientKey::new(&ctx.principal.name, key)
        .map(Some)
        .map_err(health_err)
}

/// The status of a keyed request's answer: `201` when it stored the record, `200` when its key
/// gave back the one stored before (with `Idempotent-Replayed: true`).
fn stored_answer<T: Serialize>(stored_now: bool, value: &T) -> Answer {
    if stored_now {
        return json(StatusCode::CREATED, value);
    }
    let mut resp = json(StatusCode::OK, value)?;
    resp.headers_mut().insert(
        IDEMPOTENT_REPLAYED,
        hyper::header::HeaderValue::from_static("true"),
    );
    Ok(resp)
}

pub(crate) async fn declare(app: &App, ctx: &Ctx, req: Req) -> Answer {
    let key = client_key(ctx, &req)?;
    let b: DeclarationBody = from_value(body_value(app, req).await?)?;
    let request = NewDeclaration {
        person: b.person,
        ts: b.ts,
        symptoms: b.symptoms,
        exposure: b.exposure,
        travel: b
            .travel
            .unwrap_or_default()
            .into_iter()
            .map(|t| Travel {
                from: t.from,
                to: t.to,
                date: t.date,
            })
            .collect(),
    };
    let health = app.health().clone();
    let (d, stored_now) = blocking(move || health.declare_once(request, key.as_ref()))
        .await?
        .map_err(health_err)?;
    if ctx.taken_here && stored_now {
        app.inner.metrics.observe_declaration();
    }
    stored_answer(stored_now, &declaration_out(&d))
}

#[derive(Serialize)]
struct FollowupOut<'a> {
    person: &'a str,
    tier: &'static str,
    symptoms: Vec<&'static str>,
    last_declared: i64,
}

#[derive(Serialize)]
struct FollowupsOut<'a> {
    persons: Vec<FollowupOut<'a>>,
}

pub(crate) async fn followups(app: &App) -> Answer {
    let health = app.health().clone();
    let list = blocking(move || health.followups()).await?;
    json(
        StatusCode::OK,
        &FollowupsOut {
            persons: list
                .iter()
                .map(|f| FollowupOut {
                    person: &f.person,
                    tier: f.tier.as_str(),
                    symptoms: f.symptoms.iter().map(|s| s.as_str()).collect(),
                    last_declared: f.last_declared,
                })
                .collect(),
        },
    )
}

#[derive(Serialize)]
struct PassOut<'a> {
    person: &'a str,
    color: &'static str,
    basis: &'static str,
    as_of: i64,
}

pub(crate) async fn pass(app: &App, ctx: &Ctx) -> Answer {
    let entry = audit_entry(app.engine(), ctx, &ctx.param);
    let health = app.health().clone();
    let person = ctx.param.clone();
    let p = audited(app.engine(), entry, true, move || health.pass(&person)).await?;
    app.inner.metrics.observe_pass(p.color.as_str());
    let body = serde_json::to_vec(&PassOut {
        person: &p.person,
        color: p.color.as_str(),
        basis: p.basis.as_str(),
        as_of: p.as_of,
    })
    .map_err(|e| ApiError::Internal(format!("could not encode the answer: {e}")))?;
    Ok(raw(StatusCode::OK, "application/json", Bytes::from(body)))
}

#[derive(Deserialize)]
struct AreaBody {
    id: String,
    name: String,
    population: i64,
    parent: Option<String>,
}

pub(crate) async fn register_areas(app: &App, req: Req) -> Answer {
    let v = body_value(app, req).await?;
    let bodies: Vec<AreaBody> = match v {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(from_value)
            .collect::<Result<_, _>>()?,
        one => vec![from_value(one)?],
    };
    let inputs: Vec<AreaInput> = bodies
        .into_iter()
        .map(|b| AreaInput {
            id: b.id,
            name: b.name,
            population: b.population,
            parent: b.parent,
        })
        .collect();
    let health = app.health().clone();
    let n = blocking(move || health.register_areas(inputs))
        .await?
        .map_err(health_err)?;
    json(StatusCode::OK, &serde_json::json!({ "registered": n }))
}

#[derive(Serialize)]
struct AreaOut<'a> {
    id: &'a str,
    name: &'a str,
    parent: Option<&'a str>,
    population: u64,
    cases_7d: u64,
    rate_per_100k: f64,
    dose1_coverage: f64,
    level: u8,
}

#[derive(Serialize)]
struct AreasOut<'a> {
    as_of: i64,
    areas: Vec<AreaOut<'a>>,
}

fn area_out(v: &AreaView) -> AreaOut<'_> {
    AreaOut {
        id: &v.area.id,
        name: &v.area.name,
        parent: v.area.parent.as_deref(),
        population: v.area.population,
        cases_7d: v.cases_7d,
        rate_per_100k: v.rate_per_100k,
        dose1_coverage: v.dose1_coverage,
        level: v.level,
    }
}

pub(crate) async fn areas(app: &App) -> Answer {
    let health = app.health().clone();
    let now = app.engine().now();
    let views = blocking(move || health.area_views()).await?;
    json(
        StatusCode::OK,
        &AreasOut {
            as_of: now,
            areas: views.iter().map(area_out).collect(),
        },
    )
}

#[derive(Serialize)]
struct SummaryOut {
    as_of: i64,
    cases_active: u64,
    cases_new_24h: u64,
    cases_7d: u64,
    f1: u64,
    f2: u64,
    present: u64,
    scans_24h: u64,
    samples_24h: u64,
    positive_24h: u64,
    dose1: u64,
    fully_vaccinated: u64,
}

pub(crate) async fn summary(app: &App) -> Answer {
    let health = app.health().clone();
    let s = blocking(move || health.summary()).await?;
    json(
        StatusCode::OK,
        &SummaryOut {
            as_of: s.as_of,
            cases_active: s.cases_active,
            cases_new_24h: s.cases_new_24h,
            cases_7d: s.cases_7d,
            f1: s.f1,
            f2: s.f2,
            present: s.present,
            scans_24h: s.scans_24h,
            samples_24h: s.samples_24h,
            positive_24h: s.positive_24h,
            dose1: s.dose1,
            fully_vaccinated: s.fully_vaccinated,
        },
    )
}

#[derive(Deserialize)]
struct NoticeBody {
    kind: String,
    title: String,
    body: String,
    published_at: Option<i64>,
}

#[derive(Serialize)]
struct NoticeOut<'a> {
    id: &'a str,
    kind: &'static str,
    title: &'a str,
    body: &'a str,
    published_at: i64,
}

fn notice_out(n: &Notice) -> NoticeOut<'_> {
    NoticeOut {
        id: &n.id,
        kind: n.kind.as_str(),
        title: &n.title,
        body: &n.body,
        published_at: n.published_at,
    }
}

pub(crate) async fn publish_notice(app: &App, ctx: &Ctx, req: Req) -> Answer {
    let key = client_key(ctx, &req)?;
    let b: NoticeBody = from_value(body_value(app, req).await?)?;
    let kind = NoticeKind::parse(&b.kind).ok_or_else(|| {
        ApiError::BadRequest(format!("kind must be directive or news, got '{}'", b.kind))
    })?;
    let health = app.health().clone();
    let (n, stored_now) = blocking(move || {
        health.publish_notice_once(kind, b.title, b.body, b.published_at, key.as_ref())
    })
    .await?
    .map_err(health_err)?;
    stored_answer(stored_now, &notice_out(&n))
}

#[derive(Serialize)]
struct NoticesOut<'a> {
    notices: Vec<NoticeOut<'a>>,
}

pub(crate) async fn notices(app: &App) -> Answer {
    let health = app.health().clone();
    let list = blocking(move || health.notices()).await?;
    json(
        StatusCode::OK,
        &NoticesOut {
            notices: list.iter().map(notice_out).collect(),
        },
    )
}
