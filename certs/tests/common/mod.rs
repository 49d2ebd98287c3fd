//! Shared fixtures for the certificate tests, and an encoder/decoder written straight on
//! ciborium, flate2 and base45 (independent of the crate's own) to check the wire format.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};

use certs::{
    Certificate, HealthClaims, PassColor, Recovery, SigningKey, TestKind, TestOutcome, TestResult,
    Vaccination,
};
use ciborium::Value;
use p256::ecdsa::signature::Signer;

/// 2021-06-01T00:00:00Z
pub const JUNE_1_2021: i64 = 1_622_505_600;
pub const DAY: i64 = 86_400;

pub fn sample_claims() -> HealthClaims {
    HealthClaims {
        person: "P-000123".to_owned(),
        pass: PassColor::Green,
        vaccinations: vec![
            Vaccination {
                dose_number: 1,
                product: "EU/1/20/1528".to_owned(),
                administered_at: JUNE_1_2021 + 3_600,
            },
            Vaccination {
                dose_number: 2,
                product: "EU/1/20/1528".to_owned(),
                administered_at: JUNE_1_2021 + 28 * DAY + 86_399,
            },
        ],
        tests: vec![
            TestResult {
                kind: TestKind::Pcr,
                collected_at: JUNE_1_2021 - 10 * DAY + 30_615,
                outcome: TestOutcome::Positive,
            },
            TestResult {
                kind: TestKind::Antigen,
                collected_at: JUNE_1_2021 - 2 * DAY,
                outcome: TestOutcome::Negative,
            },
        ],
        recoveries: vec![Recovery {
            sampled_at: JUNE_1_2021 - 10 * DAY + 30_615,
            recovered_at: JUNE_1_2021 - 3 * DAY,
        }],
    }
}

/// The JSON the verifier must answer for [`sample_claims`].
pub fn sample_claims_json() -> serde_json::Value {
    serde_json::json!({
        "pid": "P-000123",
        "pass": "green",
        "v": [
            {"dn": 1, "mp": "EU/1/20/1528", "dt": "2021-06-01"},
            {"dn": 2, "mp": "EU/1/20/1528", "dt": "2021-06-29"}
        ],
        "t": [
            {"tt": "LP6464-4", "sc": "2021-05-22T08:30:15Z", "tr": "260373001"},
            {"tt": "LP217198-3", "sc": "2021-05-30T00:00:00Z", "tr": "260415000"}
        ],
        "r": [{"fr": "2021-05-22", "du": "2021-11-25"}]
    })
}

pub fn sample_certificate() -> Certificate {
    Certificate::new("VN", JUNE_1_2021, 365, sample_claims())
}

/// A raw p256 key and the crate's key made from its PKCS#8 PEM.
pub fn key_pair() -> (p256::ecdsa::SigningKey, SigningKey) {
    use p256::elliptic_curve::Generate;
    use p256::pkcs8::EncodePrivateKey;
    let raw = p256::ecdsa::SigningKey::try_generate().unwrap();
    let pem = raw.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
    let ours = SigningKey::from_pkcs8_pem(&pem).unwrap();
    (raw, ours)
}

pub fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

pub fn int(n: i64) -> Value {
    Value::Integer(n.into())
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

/// `HC1:` + Base45(zlib(data)).
pub fn wrap(data: &[u8]) -> String {
    format!("HC1:{}", base45::encode(zlib(data)))
}

/// The COSE_Sign1 bytes inside an `HC1:` text, without the crate's decoder.
pub fn unwrap_hc1(hc1: &str) -> Vec<u8> {
    let compressed = base45::decode(hc1.strip_prefix("HC1:").unwrap()).unwrap();
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(&compressed[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// `(protected bstr, unprotected, payload bstr, signature bstr)` of a tagged COSE_Sign1.
pub fn split_cose(cose: &[u8]) -> (Vec<u8>, Value, Vec<u8>, Vec<u8>) {
    let value: Value = ciborium::from_reader(cose).unwrap();
    let Value::Tag(18, inner) = value else {
        panic!("not CBOR tag 18: {value:?}")
    };
    let Value::Array(items) = *inner else {
        panic!("not an array")
    };
    assert_eq!(items.len(), 4);
    let mut items = items.into_iter();
    let protected = items.next().unwrap().into_bytes().unwrap();
    let unprotected = items.next().unwrap();
    let payload = items.next().unwrap().into_bytes().unwrap();
    let signature = items.next().unwrap().into_bytes().unwrap();
    (protected, unprotected, payload, signature)
}

/// `["Signature1", protected, h'', payload]`, CBOR-encoded.
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    cbor(&Value::Array(vec![
        Value::Text("Signature1".to_owned()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(Vec::new()),
        Value::Bytes(payload.to_vec()),
    ]))
}

/// A tagged COSE_Sign1 built by hand and signed with `signer`.
pub fn build_cose(protected: &[u8], payload: &[u8], signer: &p256::ecdsa::SigningKey) -> Vec<u8> {
    let signature: p256::ecdsa::Signature = signer.sign(&sig_structure(protected, payload));
    assemble_cose(protected, payload, &signature.to_bytes())
}

pub fn assemble_cose(protected: &[u8], payload: &[u8], signature: &[u8]) -> Vec<u8> {
    cbor(&Value::Tag(
        18,
        Box::new(Value::Array(vec![
            Value::Bytes(protected.to_vec()),
            Value::Map(Vec::new()),
            Value::Bytes(payload.to_vec()),
            Value::Bytes(signature.to_vec()),
        ])),
    ))
}

/// The protected header `{1: -7, 4: kid}`, CBOR-encoded.
pub fn protected_header(kid: &[u8]) -> Vec<u8> {
    cbor(&Value::Map(vec![
        (int(1), int(-7)),
        (int(4), Value::Bytes(kid.to_vec())),
    ]))
}

/// A payload `{1: iss, 4: exp, 6: iat, -260: {1: claims}}`, CBOR-encoded.
pub fn payload(issuer: &str, issued: i64, expires: i64, claims: Value) -> Vec<u8> {
    cbor(&Value::Map(vec![
        (int(1), Value::Text(issuer.to_owned())),
        (int(4), int(expires)),
        (int(6), int(issued)),
        (int(-260), Value::Map(vec![(int(1), claims)])),
    ]))
}

pub fn kid_bytes(key: &SigningKey) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key.kid())
        .unwrap()
}
