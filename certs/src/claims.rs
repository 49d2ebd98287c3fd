//! What a certificate says: the issuer, its validity window, and the health claims under
//! payload key -260/1, with the contract's codes (EU DCC value sets) and how each claim is spelled
//! in CBOR.

use ciborium::Value;

use crate::dates::{utc_date, utc_rfc3339, DateOutOfRange};

/// The issuer when the operator gives none (`--issuer`).
pub const DEFAULT_ISSUER: &str = "VN";
/// How long a certificate is valid when the operator gives nothing (`--certificate-days`).
pub const DEFAULT_CERTIFICATE_DAYS: u32 = 365;
/// A recovery entry is valid until `recovered_at` plus this many days (`du`).
pub const RECOVERY_VALIDITY_DAYS: i64 = 180;

const DAY: i64 = 86_400;

/// One certificate to sign: CWT claims 1 (`iss`), 6 (`iat`), 4 (`exp`) and the health claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub issuer: String,
    /// Unix seconds.
    pub issued: i64,
    /// Unix seconds; the certificate is expired from this instant on.
    pub expires: i64,
    pub claims: HealthClaims,
}

impl Certificate {
    /// A certificate issued at `issued` that expires `validity_days` days later.
    pub fn new(
        issuer: impl Into<String>,
        issued: i64,
        validity_days: u32,
        claims: HealthClaims,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            issued,
            expires: issued.saturating_add(i64::from(validity_days) * DAY),
            claims,
        }
    }
}

/// The map under -260/1: `{"pid", "pass", "v", "t", "r"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthClaims {
    /// `pid`: the person id.
    pub person: String,
    /// `pass`: the health pass colour at issue time.
    pub pass: PassColor,
    /// `v`: every dose.
    pub vaccinations: Vec<Vaccination>,
    /// `t`: every one-person positive or negative result.
    pub tests: Vec<TestResult>,
    /// `r`: every recovered case.
    pub recoveries: Vec<Recovery>,
}

/// The health pass colour, spelled `green`, `yellow`, `red`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PassColor {
    Green,
    Yellow,
    Red,
}

impl PassColor {
    pub fn as_str(self) -> &'static str {
        match self {
            PassColor::Green => "green",
            PassColor::Yellow => "yellow",
            PassColor::Red => "red",
        }
    }
}

/// One dose: `{"dn": dose number, "mp": vaccine code, "dt": UTC date administered}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vaccination {
    pub dose_number: u32,
    pub product: String,
    /// Unix seconds.
    pub administered_at: i64,
}

/// One test result: `{"tt": test type, "sc": collection time RFC 3339 UTC, "tr": result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestResult {
    pub kind: TestKind,
    /// Unix seconds.
    pub collected_at: i64,
    pub outcome: TestOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestKind {
    Pcr,
    Antigen,
}

impl TestKind {
    /// The LOINC code of `tt`.
    pub fn code(self) -> &'static str {
        match self {
            TestKind::Pcr => "LP6464-4",
            TestKind::Antigen => "LP217198-3",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestOutcome {
    Positive,
    Negative,
}

impl TestOutcome {
    /// The SNOMED CT code of `tr`.
    pub fn code(self) -> &'static str {
        match self {
            TestOutcome::Positive => "260373001",
            TestOutcome::Negative => "260415000",
        }
    }
}

/// One recovered case: `{"fr": date of sampled_at, "du": date of recovered_at + 180 days}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Unix seconds: when the case's positive sample was taken.
    pub sampled_at: i64,
    /// Unix seconds: when the case recovered.
    pub recovered_at: i64,
}

/// A claim time that no date can spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {source}")]
pub struct ClaimTimeOutOfRange {
    pub field: &'static str,
    pub source: DateOutOfRange,
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn entry(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(fields.into_iter().map(|(k, v)| (text(k), v)).collect())
}

fn at(
    field: &'static str,
    r: Result<String, DateOutOfRange>,
) -> Result<Value, ClaimTimeOutOfRange> {
    r.map(Value::Text)
        .map_err(|source| ClaimTimeOutOfRange { field, source })
}

impl HealthClaims {
    /// The CBOR map under -260/1, keys in the contract's order.
    pub(crate) fn to_cbor(&self) -> Result<Value, ClaimTimeOutOfRange> {
        let v = self
            .vaccinations
            .iter()
            .map(|d| {
                Ok(entry(vec![
                    ("dn", Value::Integer(d.dose_number.into())),
                    ("mp", text(&d.product)),
                    ("dt", at("v.dt", utc_date(d.administered_at))?),
                ]))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let t = self
            .tests
            .iter()
            .map(|r| {
                Ok(entry(vec![
                    ("tt", text(r.kind.code())),
                    ("sc", at("t.sc", utc_rfc3339(r.collected_at))?),
                    ("tr", text(r.outcome.code())),
                ]))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let r = self
            .recoveries
            .iter()
            .map(|c| {
                let until = c.recovered_at.saturating_add(RECOVERY_VALIDITY_DAYS * DAY);
                Ok(entry(vec![
                    ("fr", at("r.fr", utc_date(c.sampled_at))?),
                    ("du", at("r.du", utc_date(until))?),
                ]))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(entry(vec![
            ("pid", text(&self.person)),
            ("pass", text(self.pass.as_str())),
            ("v", Value::Array(v)),
            ("t", Value::Array(t)),
            ("r", Value::Array(r)),
        ]))
    }
}
