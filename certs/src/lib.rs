//! Signed health certificates for the national check-in service (contract section 12,
//! "Certificates"): the server's ES256 signing key and its published form, the claims model,
//! issuing `HC1:` texts (Base45 of zlib of a COSE_Sign1, as the EU Digital COVID Certificate
//! encodes it), verifying them offline against the published keys, and their QR code as SVG.
//!
//! This crate knows nothing of HTTP: the `api` crate maps [`Jwk`] to `GET /v1/keys`, [`issue`] to
//! `GET /v1/persons/{id}/certificate`, [`qr_svg`] to its `?format=svg`, and [`verify`] to
//! `POST /v1/verify`.
#![deny(unsafe_code)]

mod claims;
mod dates;
mod issue;
mod key;
mod qr;
mod verify;

pub use claims::{
    Certificate, ClaimTimeOutOfRange, HealthClaims, PassColor, Recovery, TestKind, TestOutcome,
    TestResult, Vaccination, DEFAULT_CERTIFICATE_DAYS, DEFAULT_ISSUER, RECOVERY_VALIDITY_DAYS,
};
pub use dates::{utc_date, utc_rfc3339, DateOutOfRange};
pub use issue::{issue, IssueError};
pub use key::{Jwk, KeyError, KeyOrigin, PublicKey, SigningKey, KEY_FILE_NAME};
pub use qr::{qr_svg, QrError};
pub use verify::{verify, InvalidReason, Verdict, VerifiedCertificate, MAX_COSE_BYTES};

/// What every certificate text starts with.
pub const HC1_PREFIX: &str = "HC1:";

/// CWT payload keys.
const PAYLOAD_ISSUER: i64 = 1;
const PAYLOAD_EXPIRES: i64 = 4;
const PAYLOAD_ISSUED: i64 = 6;
const PAYLOAD_HCERT: i64 = -260;
const PAYLOAD_HCERT_V1: i64 = 1;
