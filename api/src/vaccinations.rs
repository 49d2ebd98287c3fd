//! The vaccination routes of contract section 11 over the health domain: `POST /v1/vaccinations`
//! (one object, a JSON array, NDJSON or CSV, decoded by `dose_decode`) and
//! `GET /v1/persons/{id}/vaccinations`.
//!
//! A request's accepted doses are durable in the health database (one transaction) before the
//! answer; decoding and the store run on the blocking pool. A read of a person's doses is written
//! to the audit log, durably, before it is answered, like every other person lookup.

use std::fmt::Write as _;

use crate::body::Req;
use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;

use crate::app::App;
use crate::body::read_body;
use crate::dose_decode::{decode_doses, dose_format};
use crate::handlers::{audit_entry, audited, blocking, json, raw, Answer, Ctx};
use crate::problem::ApiError;

/// Bodies larger than this are decoded on the blocking pool rather than a tokio worker.
const DECODE_INLINE_MAX: usize = 64 << 10;

fn health_err(e: health::Error) -> ApiError {
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

pub(crate) async fn record(app: &App, ctx: &Ctx, req: Req) -> Answer {
    let format = dose_format(req.headers())?;
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, app.body_timeouts()).await?;
    let items = if body.len() <= DECODE_INLINE_MAX {
        decode_doses(&body, format)
    } else {
        blocking(move || decode_doses(&body, format)).await?
    }?;
    let health = app.health().clone();
    let outcome = blocking(move || health.record_doses(items))
        .await?
        .map_err(health_err)?;
    if ctx.taken_here {
        app.inner.metrics.record_doses(&outcome);
    }
    let mut out = String::with_capacity(40 + outcome.rejected.len() * 40);
    let _ = write!(out, "{{\"accepted\":{},\"rejected\":[", outcome.accepted);
    for (i, (index, reason)) in outcome.rejected.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"index\":{index},\"reason\":\"{}\"}}",
            reason.code()
        );
    }
    out.push_str("]}");
    Ok(raw(StatusCode::OK, "application/json", Bytes::from(out)))
}

#[derive(Serialize)]
struct DoseOut {
    dose: u8,
    vaccine: String,
    administered_at: i64,
    lot: Option<String>,
    site: Option<String>,
    area: Option<String>,
}

#[derive(Serialize)]
struct PersonDosesOut<'a> {
    person: &'a str,
    doses: Vec<DoseOut>,
}

pub(crate) async fn person_doses(app: &App, ctx: &Ctx) -> Answer {
    let entry = audit_entry(app.engine(), ctx, &ctx.param);
    let health = app.health().clone();
    let person = ctx.param.clone();
    let doses = audited(app.engine(), entry, true, move || health.doses(&person)).await?;
    json(
        StatusCode::OK,
        &PersonDosesOut {
            person: &ctx.param,
            doses: doses
                .into_iter()
                .map(|d| DoseOut {
                    dose: d.dose,
                    vaccine: d.vaccine,
                    administered_at: d.administered_at,
                    lot: d.lot,
                    site: d.site,
                    area: d.area,
                })
                .collect(),
        },
    )
}
