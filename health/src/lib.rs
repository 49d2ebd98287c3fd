//! The outbreak domain over the scan store (contract section 10): cases, their standing traces,
//! every person's tier and the public exposure sites.
//!
//! Cases live in an embedded redb database (`health.redb`), each change durable before it is
//! acknowledged; vaccination doses in an append-only log beside it (`health.doses.log`). The standing traces are derived from the scan store (`engine`) and kept in
//! memory: at open every counted case is traced, and afterwards the health thread checks every
//! newly stored scan against an exposure index of the counted cases' windows, re-deriving only
//! the cases that scan may change (see `standing` for why that is exact).
//!
//! This crate knows nothing of HTTP, JSON or Prometheus; the `api` crate serves it.
#![deny(unsafe_code)]

mod areas;
mod case;
pub mod checkpoint;
mod client_keys;
mod dose_log;
mod error;
mod exposure;
mod health;
mod policy;
mod records;
mod samples;
mod sites;
mod standing;
mod store;
mod tiers;
mod tracker;
mod vaccinations;

pub use areas::{risk_level, Area, AreaInput, AreaView, MAX_AREA_NAME_BYTES};
pub use case::{is_valid_case_id, Case, CaseChange, CaseStatus, CaseView, NewCase, MAX_NOTE_BYTES};
pub use client_keys::{ClientKey, CLIENT_KEY_KEEP_S, MAX_CLIENT_KEY_BYTES};
pub use error::{Error, Result};
pub use health::{Health, HealthConfig, HealthStats, TierListener, UpdateObserver};
pub use policy::Policy;
pub use records::{
    Declaration, Followup, NewDeclaration, Notice, NoticeKind, Pass, PassBasis, PassColor, Summary,
    Symptom, Travel, MAX_NOTICE_BODY_BYTES, MAX_NOTICE_TITLE_BYTES, MAX_SYMPTOM_CODES,
};
pub use samples::{
    LabResult, MemberResult, NewSample, PersonResult, Sample, SampleKind, DEFAULT_MAX_POOL,
    SAMPLE_RETENTION_DAYS,
};
pub use sites::{ExposureSite, SITE_GRANULARITY_S};
pub use tiers::{PersonStatus, Tier};
pub use vaccinations::{
    vaccine, Dose, DoseInput, DoseItem, DoseOutcome, DoseReject, Vaccine, MAX_DOSE,
    MAX_DOSE_TEXT_BYTES, MIN_ADMINISTERED_AT, VACCINES,
};
