//! Offline verification of an `HC1:` text against the published keys, answering a [`Verdict`]:
//! valid with what the certificate says, or invalid with exactly one reason. Every input, however
//! malformed or hostile, gets a verdict: nothing panics, and decompression stops at
//! [`MAX_COSE_BYTES`] so a zip bomb costs nothing.
//!
//! The checks run in this order, the first failure being the reason: prefix, Base45, zlib, the
//! COSE_Sign1 envelope (tag 18, protected `alg` ES256, a `kid`, an embedded payload), the `kid`
//! among the keys, the signature, the payload's shape (only parsed once it is authenticated), and
//! last the expiry (expired when `now >= expires`).
//!
//! The signature is checked by `ring`; the inflating is done by one decompressor per thread,
//! reset between certificates.

use std::cell::RefCell;

use flate2::{Decompress, FlushDecompress, Status};

use ciborium::Value;
use coset::{iana, Algorithm, CborSerializable as _, CoseSign1, TaggedCborSerializable as _};

use crate::key::PublicKey;
use crate::{
    HC1_PREFIX, PAYLOAD_EXPIRES, PAYLOAD_HCERT, PAYLOAD_HCERT_V1, PAYLOAD_ISSUED, PAYLOAD_ISSUER,
};

/// The most bytes a certificate's COSE_Sign1 may inflate to; more is `bad_zlib`.
pub const MAX_COSE_BYTES: usize = 64 * 1024;

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Valid(VerifiedCertificate),
    Invalid(InvalidReason),
}

impl Verdict {
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid(_))
    }

    /// The reason, if invalid.
    pub fn reason(&self) -> Option<InvalidReason> {
        match self {
            Verdict::Valid(_) => None,
            Verdict::Invalid(reason) => Some(*reason),
        }
    }
}

/// What a valid certificate says.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCertificate {
    /// The `kid` of the key that verified it (standard base64).
    pub kid: String,
    pub issuer: String,
    /// Unix seconds.
    pub issued: i64,
    /// Unix seconds.
    pub expires: i64,
    /// The map under payload key -260/1, as JSON: `{"pid", "pass", "v", "t", "r"}`.
    pub claims: serde_json::Value,
}

/// Why a certificate is not valid. [`InvalidReason::reason_code`] is the contract's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum InvalidReason {
    #[error("the text does not start with \"HC1:\"")]
    BadPrefix,
    #[error("the text after \"HC1:\" is not Base45")]
    BadBase45,
    #[error("the Base45 data is not one complete zlib stream of at most 64 KiB")]
    BadZlib,
    #[error("the data is not a COSE_Sign1 ES256 health certificate")]
    BadCose,
    #[error("no published key has this certificate's kid")]
    UnknownKid,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the certificate has expired")]
    Expired,
}

impl InvalidReason {
    pub fn reason_code(self) -> &'static str {
        match self {
            InvalidReason::BadPrefix => "bad_prefix",
            InvalidReason::BadBase45 => "bad_base45",
            InvalidReason::BadZlib => "bad_zlib",
            InvalidReason::BadCose => "bad_cose",
            InvalidReason::UnknownKid => "unknown_kid",
            InvalidReason::BadSignature => "bad_signature",
            InvalidReason::Expired => "expired",
        }
    }
}

/// Verifies `hc1` against `keys` at `now` (unix seconds).
pub fn verify(hc1: &str, keys: &[PublicKey], now: i64) -> Verdict {
    match check(hc1, keys, now) {
        Ok(cert) => Verdict::Valid(cert),
        Err(reason) => Verdict::Invalid(reason),
    }
}

fn check(hc1: &str, keys: &[PublicKey], now: i64) -> Result<VerifiedCertificate, InvalidReason> {
    use InvalidReason::*;

    let text = hc1.strip_prefix(HC1_PREFIX).ok_or(BadPrefix)?;
    let compressed = base45::decode(text).map_err(|_| BadBase45)?;
    let cose = inflate_bounded(&compressed).ok_or(BadZlib)?;

    let sign1 = CoseSign1::from_tagged_slice(&cose).map_err(|_| BadCose)?;
    let header = &sign1.protected.header;
    if header.alg != Some(Algorithm::Assigned(iana::Algorithm::ES256)) || header.key_id.is_empty() {
        return Err(BadCose);
    }
    let payload = sign1.payload.as_deref().ok_or(BadCose)?;

    let mut candidates = keys
        .iter()
        .filter(|k| k.kid_bytes().as_slice() == header.key_id.as_slice())
        .peekable();
    if candidates.peek().is_none() {
        return Err(UnknownKid);
    }
    if sign1.signature.len() != 64 {
        return Err(BadSignature);
    }
    let to_be_signed = sign1.tbs_data(b"");
    let key = candidates
        .find(|k| k.verifies(&to_be_signed, &sign1.signature))
        .ok_or(BadSignature)?;

    let (issuer, issued, expires, claims) = parse_payload(payload).ok_or(BadCose)?;
    if now >= expires {
        return Err(Expired);
    }
    Ok(VerifiedCertificate {
        kid: key.kid().to_owned(),
        issuer,
        issued,
        expires,
        claims,
    })
}

thread_local! {
    /// This thread's decompressor, reset before each use.
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(true));
}

/// Inflates one complete zlib stream that is all of `data`, or `None`: corrupt, cut short (its
/// end and checksum not reached), past the bound, or with bytes after its end.
fn inflate_bounded(data: &[u8]) -> Option<Vec<u8>> {
    if data.is_empty() {
        return None;
    }
    INFLATE.with(|cell| {
        let mut fresh;
        let mut reused = cell.try_borrow_mut().ok();
        let z: &mut Decompress = match reused.as_deref_mut() {
            Some(z) => {
                z.reset(true);
                z
            }
            None => {
                fresh = Decompress::new(true);
                &mut fresh
            }
        };
        let limit = MAX_COSE_BYTES.saturating_add(1);
        let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(2).clamp(512, limit));
        loop {
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    return None;
                }
                let more = out.capacity().min(limit - out.len());
                out.reserve_exact(more);
            }
            let (before_in, before_out) = (z.total_in(), z.total_out());
            let consumed = usize::try_from(before_in).ok()?;
            let status = z
                .decompress_vec(data.get(consumed..)?, &mut out, FlushDecompress::None)
                .ok()?;
            if out.len() > MAX_COSE_BYTES {
                return None;
            }
            match status {
                Status::StreamEnd => break,
                // no progress with room to write: the input is used up before the stream's end
                Status::Ok | Status::BufError
                    if (z.total_in(), z.total_out()) == (before_in, before_out)
                        && out.len() < out.capacity() =>
                {
                    return None
                }
                Status::Ok | Status::BufError => {}
            }
        }
        (usize::try_from(z.total_in()).ok()? == data.len()).then_some(out)
    })
}

fn lookup(map: &[(Value, Value)], key: i64) -> Option<&Value> {
    map.iter()
        .find(|(k, _)| matches!(k, Value::Integer(i) if i128::from(*i) == i128::from(key)))
        .map(|(_, v)| v)
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(i) => i64::try_from(i128::from(*i)).ok(),
        _ => None,
    }
}

fn parse_payload(payload: &[u8]) -> Option<(String, i64, i64, serde_json::Value)> {
    let value = Value::from_slice(payload).ok()?;
    let map = value.as_map()?;
    let issuer = lookup(map, PAYLOAD_ISSUER)?.as_text()?.to_owned();
    let expires = integer(lookup(map, PAYLOAD_EXPIRES)?)?;
    let issued = integer(lookup(map, PAYLOAD_ISSUED)?)?;
    let hcert = lookup(map, PAYLOAD_HCERT)?.as_map()?;
    let claims = lookup(hcert, PAYLOAD_HCERT_V1)?;
    if !claims.is_map() {
        return None;
    }
    Some((issuer, issued, expires, to_json(claims)?))
}

/// CBOR to JSON for the claims: text-keyed maps (no duplicate keys), arrays, text, integers,
/// finite floats, booleans and null. Anything else (bytes, tags, other keys) is refused.
fn to_json(value: &Value) -> Option<serde_json::Value> {
    use serde_json::Value as Json;
    Some(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Text(s) => Json::String(s.clone()),
        Value::Integer(i) => {
            let i = i128::from(*i);
            match (i64::try_from(i), u64::try_from(i)) {
                (Ok(n), _) => Json::from(n),
                (_, Ok(n)) => Json::from(n),
                _ => return None,
            }
        }
        Value::Float(f) => Json::Number(serde_json::Number::from_f64(*f)?),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect::<Option<_>>()?),
        Value::Map(entries) => {
            let mut object = serde_json::Map::with_capacity(entries.len());
            for (k, v) in entries {
                let k = k.as_text()?;
                if object.insert(k.to_owned(), to_json(v)?).is_some() {
                    return None;
                }
            }
            Json::Object(object)
        }
        _ => return None,
    })
}
