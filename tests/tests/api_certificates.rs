//! Contract section 12, "Certificates", over HTTP: `GET /v1/keys` (its `kid` recomputed here from
//! the key file with `p256`/`sha2`), `GET /v1/persons/{id}/certificate` (decoded and its ES256
//! signature checked here without the `certs` crate, then verified through `POST /v1/verify`),
//! `?format=svg`, every verification reason, the audit entry, the metrics, and the key file
//! (mode 0600, the same `kid` after a restart).
#![allow(clippy::unwrap_used)]

mod api_support;

#[path = "../../certs/tests/qr_decode/mod.rs"]
mod qr_decode;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;

use api_support::*;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use ciborium::Value as Cbor;
use health::{CaseChange, DoseInput, LabResult, NewCase, NewSample, SampleKind};
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

const DAY: i64 = 86_400;

/// Runs `f` on the server's health domain off the async workers (its writes wait on redb).
async fn with_health<T: Send + 'static>(
    s: &Server,
    f: impl FnOnce(&health::Health) -> T + Send + 'static,
) -> T {
    let health = s.app.health().clone();
    tokio::task::spawn_blocking(move || f(&health))
        .await
        .unwrap()
}

/// p1: a case sampled 10 days ago and recovered 3 days ago, a one-person negative PCR an hour
/// ago, a first dose 30 days ago; plus a pooled negative and a one-person invalid result, which
/// a certificate leaves out.
async fn seed_p1(s: &Server) {
    with_health(s, |h| {
        h.register_case(NewCase {
            id: Some("K1".into()),
            person: "p1".into(),
            sampled_at: T0 - 10 * DAY,
            ..NewCase::default()
        })
        .unwrap();
        h.update_case(
            "K1",
            CaseChange::Recover {
                at: Some(T0 - 3 * DAY),
            },
        )
        .unwrap();
        let sample = |id: &str, kind, persons: &[&str], at| NewSample {
            id: id.into(),
            kind,
            persons: persons.iter().map(|p| (*p).to_owned()).collect(),
            collected_at: Some(at),
            site: None,
        };
        h.register_sample(sample("S1", SampleKind::Pcr, &["p1"], T0 - 3600))
            .unwrap();
        h.enter_result("S1", LabResult::Negative, Some(T0 - 1800))
            .unwrap();
        h.register_sample(sample("S2", SampleKind::Antigen, &["p1", "p2"], T0 - 7200))
            .unwrap();
        h.enter_result("S2", LabResult::Negative, Some(T0 - 7000))
            .unwrap();
        h.register_sample(sample("S3", SampleKind::Antigen, &["p1"], T0 - 5400))
            .unwrap();
        h.enter_result("S3", LabResult::Invalid, Some(T0 - 5000))
            .unwrap();
        let outcome = h
            .record_doses(vec![Ok(DoseInput {
                person: "p1".into(),
                dose: 1,
                vaccine: "EU/1/20/1528".into(),
                administered_at: T0 - 30 * DAY,
                lot: Some("EX0001".into()),
                site: None,
                area: None,
            })])
            .unwrap();
        assert_eq!(outcome.accepted, 1, "{outcome:?}");
    })
    .await;
}

/// What p1's certificate claims (T0 = 2027-01-15T08:00:00Z).
fn p1_claims() -> Value {
    json!({
        "pid": "p1",
        // recovered 3 days ago (rule 5, before "partially vaccinated" and "negative test")
        "pass": "green",
        "v": [{"dn": 1, "mp": "EU/1/20/1528", "dt": "2026-12-16"}],
        "t": [{"tt": "LP6464-4", "sc": "2027-01-15T07:00:00Z", "tr": "260415000"}],
        // sampled 2027-01-05; recovered 2027-01-12, valid 180 days more
        "r": [{"fr": "2027-01-05", "du": "2027-07-11"}],
    })
}

fn cbor_map_get(map: &[(Cbor, Cbor)], key: i64) -> &Cbor {
    map.iter()
        .find(|(k, _)| {
            k.as_integer()
                .is_some_and(|i| i128::from(i) == i128::from(key))
        })
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no key {key} in {map:?}"))
}

fn cbor_int(v: &Cbor) -> i64 {
    i64::try_from(i128::from(v.as_integer().unwrap())).unwrap()
}

/// The parts of an `HC1:` text, decoded here without the `certs` crate.
struct Decoded {
    protected: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn decode_hc1(hc1: &str) -> Decoded {
    let compressed = base45::decode(hc1.strip_prefix("HC1:").expect("HC1: prefix")).unwrap();
    let mut cose = Vec::new();
    flate2::read::ZlibDecoder::new(&compressed[..])
        .read_to_end(&mut cose)
        .unwrap();
    let value: Cbor = ciborium::from_reader(&cose[..]).unwrap();
    let Cbor::Tag(18, inner) = value else {
        panic!("not a COSE_Sign1 (tag 18): {value:?}")
    };
    let Cbor::Array(parts) = *inner else {
        panic!("COSE_Sign1 is not an array")
    };
    assert_eq!(parts.len(), 4);
    let bytes = |v: &Cbor| v.as_bytes().expect("a byte string").clone();
    assert_eq!(parts[1], Cbor::Map(vec![]), "unprotected header is empty");
    Decoded {
        protected: bytes(&parts[0]),
        payload: bytes(&parts[2]),
        signature: bytes(&parts[3]),
    }
}

fn encode_hc1(d: &Decoded) -> String {
    let value = Cbor::Tag(
        18,
        Box::new(Cbor::Array(vec![
            Cbor::Bytes(d.protected.clone()),
            Cbor::Map(vec![]),
            Cbor::Bytes(d.payload.clone()),
            Cbor::Bytes(d.signature.clone()),
        ])),
    );
    let mut cose = Vec::new();
    ciborium::into_writer(&value, &mut cose).unwrap();
    format!("HC1:{}", base45::encode(zlib(&cose)))
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

/// The P-256 key of a `/v1/keys` entry.
fn jwk_key(jwk: &Value) -> p256::ecdsa::VerifyingKey {
    let mut sec1 = vec![0x04];
    for c in ["x", "y"] {
        let bytes = URL_SAFE_NO_PAD.decode(jwk[c].as_str().unwrap()).unwrap();
        assert_eq!(bytes.len(), 32, "{c}");
        sec1.extend(bytes);
    }
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap()
}

/// Standard base64 of SHA-256(DER SubjectPublicKeyInfo)[..8].
fn kid_of(key: &p256::ecdsa::VerifyingKey) -> String {
    let spki = key.to_public_key_der().unwrap();
    STANDARD.encode(&Sha256::digest(spki.as_bytes())[..8])
}

async fn the_key(s: &Server) -> Value {
    let r = s.get("/v1/keys").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let keys = r.json()["keys"].clone();
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    keys[0].clone()
}

async fn certificate(s: &Server, person: &str) -> Value {
    let r = s
        .get_as(&format!("/v1/persons/{person}/certificate"), APP)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    r.json()
}

async fn verify(s: &Server, hc1: &str) -> Value {
    let r = s.post("/v1/verify", &json!({ "hc1": hc1 })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

async fn reason(s: &Server, hc1: &str) -> String {
    let v = verify(s, hc1).await;
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(
        v.as_object().unwrap().len(),
        2,
        "only valid and reason: {v}"
    );
    v["reason"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn keys_publish_the_key_file_with_its_kid() {
    let s = Server::start_with_tokens().await;
    let jwk = the_key(&s).await;
    let fields: Vec<&str> = jwk
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(fields.len(), 6, "{jwk}");
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    for c in ["x", "y"] {
        let text = jwk[c].as_str().unwrap();
        assert_eq!(
            text.len(),
            43,
            "32 bytes, base64url without padding: {text}"
        );
        assert!(!text.contains(['=', '+', '/']), "{text}");
    }

    // The published key is the private key file's, and its kid is computed as the contract says.
    let pem = std::fs::read_to_string(s.dir.path().join("signing-key.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
    let secret = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem).unwrap();
    let public = *secret.verifying_key();
    assert_eq!(jwk_key(&jwk), public);
    let kid = kid_of(&public);
    assert_eq!(STANDARD.decode(&kid).unwrap().len(), 8);
    assert_eq!(jwk["kid"], kid.as_str());
    assert_eq!(s.app.signing_kid(), Some(kid.as_str()));
}

#[tokio::test]
async fn a_certificate_holds_the_record_and_verifies() {
    let s = Server::start_with_tokens().await;
    seed_p1(&s).await;
    let jwk = the_key(&s).await;

    let cert = certificate(&s, "p1").await;
    assert_eq!(cert["person"], "p1");
    assert_eq!(cert["issued"], T0);
    assert_eq!(cert["expires"], T0 + 365 * DAY);
    let hc1 = cert["hc1"].as_str().unwrap();
    assert!(hc1.starts_with("HC1:"), "{hc1}");

    // The COSE_Sign1, read and checked here: protected {1: -7, 4: kid}, ES256 over
    // ["Signature1", protected, h'', payload] with the published key.
    let d = decode_hc1(hc1);
    let protected: Cbor = ciborium::from_reader(&d.protected[..]).unwrap();
    let protected = protected.as_map().unwrap();
    assert_eq!(protected.len(), 2);
    assert_eq!(cbor_int(cbor_map_get(protected, 1)), -7);
    let kid = cbor_map_get(protected, 4).as_bytes().unwrap();
    assert_eq!(STANDARD.encode(kid), jwk["kid"].as_str().unwrap());
    let mut to_be_signed = Vec::new();
    ciborium::into_writer(
        &Cbor::Array(vec![
            Cbor::Text("Signature1".into()),
            Cbor::Bytes(d.protected.clone()),
            Cbor::Bytes(vec![]),
            Cbor::Bytes(d.payload.clone()),
        ]),
        &mut to_be_signed,
    )
    .unwrap();
    let signature = p256::ecdsa::Signature::from_slice(&d.signature).unwrap();
    assert_eq!(d.signature.len(), 64, "r||s");
    jwk_key(&jwk).verify(&to_be_signed, &signature).unwrap();
    let payload: Cbor = ciborium::from_reader(&d.payload[..]).unwrap();
    let payload = payload.as_map().unwrap();
    assert_eq!(cbor_map_get(payload, 1), &Cbor::Text("VN".into()));
    assert_eq!(cbor_int(cbor_map_get(payload, 4)), T0 + 365 * DAY);
    assert_eq!(cbor_int(cbor_map_get(payload, 6)), T0);
    let hcert = cbor_map_get(payload, -260).as_map().unwrap();
    let claims = cbor_map_get(hcert, 1).as_map().unwrap();
    let keys: Vec<&str> = claims.iter().map(|(k, _)| k.as_text().unwrap()).collect();
    assert_eq!(keys, ["pid", "pass", "v", "t", "r"]);

    // And through the server's verifier.
    let v = verify(&s, hc1).await;
    assert_eq!(
        v,
        json!({
            "valid": true,
            "kid": jwk["kid"],
            "issuer": "VN",
            "issued": T0,
            "expires": T0 + 365 * DAY,
            "claims": p1_claims(),
        })
    );
    // The admin may read certificates too.
    assert_eq!(
        s.get_as("/v1/persons/p1/certificate", ADMIN).await.status,
        200
    );
}

#[tokio::test]
async fn a_person_without_a_record_gets_a_red_certificate() {
    let s = Server::start_with_tokens().await;
    let cert = certificate(&s, "nobody").await;
    let v = verify(&s, cert["hc1"].as_str().unwrap()).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(
        v["claims"],
        json!({"pid": "nobody", "pass": "red", "v": [], "t": [], "r": []})
    );
    // An id no scan could carry is not a person.
    let r = s
        .get_as("/v1/persons/not%20a%20person/certificate", APP)
        .await;
    r.assert_problem(404);
    let r = s.get_as("/v1/persons/p1/certificate?format=png", APP).await;
    r.assert_problem(400);
}

#[tokio::test]
async fn every_failure_has_its_reason() {
    let s = Server::start_with_tokens().await;
    seed_p1(&s).await;
    let hc1 = certificate(&s, "p1").await["hc1"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(verify(&s, &hc1).await["valid"], true);

    // Tampered claims (the issuer changed) under the original signature.
    let mut d = decode_hc1(&hc1);
    let mut payload: Cbor = ciborium::from_reader(&d.payload[..]).unwrap();
    if let Cbor::Map(entries) = &mut payload {
        for (k, v) in entries.iter_mut() {
            if k.as_integer().is_some_and(|i| i128::from(i) == 1) {
                *v = Cbor::Text("XX".into());
            }
        }
    }
    let original_payload = std::mem::take(&mut d.payload);
    ciborium::into_writer(&payload, &mut d.payload).unwrap();
    assert_ne!(d.payload, original_payload);
    assert_eq!(reason(&s, &encode_hc1(&d)).await, "bad_signature");
    // A flipped signature bit, over the original payload.
    d.payload = original_payload;
    assert_eq!(verify(&s, &encode_hc1(&d)).await["valid"], true);
    d.signature[10] ^= 1;
    assert_eq!(reason(&s, &encode_hc1(&d)).await, "bad_signature");

    // Signed by a key this server does not publish.
    let other = certs::SigningKey::generate().unwrap();
    let stranger = certs::issue(
        &other,
        &certs::Certificate::new(
            "VN",
            T0,
            365,
            certs::HealthClaims {
                person: "p1".into(),
                pass: certs::PassColor::Green,
                vaccinations: vec![],
                tests: vec![],
                recoveries: vec![],
            },
        ),
    )
    .unwrap();
    assert_eq!(reason(&s, &stranger).await, "unknown_kid");

    // Garbage at each layer.
    assert_eq!(reason(&s, "").await, "bad_prefix");
    assert_eq!(reason(&s, "hello").await, "bad_prefix");
    assert_eq!(reason(&s, &hc1[4..]).await, "bad_prefix");
    assert_eq!(reason(&s, "HC1:hello").await, "bad_base45");
    let not_zlib = format!("HC1:{}", base45::encode(b"not zlib at all"));
    assert_eq!(reason(&s, &not_zlib).await, "bad_zlib");
    let not_cose = format!("HC1:{}", base45::encode(zlib(b"not cose")));
    assert_eq!(reason(&s, &not_cose).await, "bad_cose");

    // Valid until its expiry, expired from then on.
    s.clock.set(T0 + 365 * DAY - 1);
    assert_eq!(verify(&s, &hc1).await["valid"], true);
    s.clock.set(T0 + 365 * DAY);
    assert_eq!(reason(&s, &hc1).await, "expired");

    // Bodies that are not {"hc1": string}: 400; another media type: 415.
    for body in [
        "not json",
        "{}",
        "{\"hc1\":5}",
        "[\"HC1:\"]",
        "{\"hc1\":null}",
    ] {
        let r = s
            .send(
                "POST",
                "/v1/verify",
                None,
                &[("content-type", "application/json")],
                body,
            )
            .await;
        r.assert_problem(400);
    }
    let r = s
        .send(
            "POST",
            "/v1/verify",
            None,
            &[("content-type", "text/plain")],
            hc1.clone(),
        )
        .await;
    r.assert_problem(415);

    // One certificate signed; every verdict counted by its result.
    let text = s.get_as("/metrics", METRICS).await.text();
    for (series, n) in [
        ("checkin_certificates_issued_total", 1),
        (
            "checkin_certificate_verifications_total{result=\"valid\"}",
            3,
        ),
        (
            "checkin_certificate_verifications_total{result=\"bad_signature\"}",
            2,
        ),
        (
            "checkin_certificate_verifications_total{result=\"unknown_kid\"}",
            1,
        ),
        (
            "checkin_certificate_verifications_total{result=\"bad_prefix\"}",
            3,
        ),
        (
            "checkin_certificate_verifications_total{result=\"bad_base45\"}",
            1,
        ),
        (
            "checkin_certificate_verifications_total{result=\"bad_zlib\"}",
            1,
        ),
        (
            "checkin_certificate_verifications_total{result=\"bad_cose\"}",
            1,
        ),
        (
            "checkin_certificate_verifications_total{result=\"expired\"}",
            1,
        ),
    ] {
        assert!(
            text.lines().any(|l| l == format!("{series} {n}")),
            "want {series} {n}:\n{}",
            text.lines()
                .filter(|l| l.starts_with("checkin_certificate"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test]
async fn the_qr_code_is_an_svg_of_a_certificate_of_the_same_record() {
    let s = Server::start_with_tokens().await;
    seed_p1(&s).await;
    let hc1 = certificate(&s, "p1").await["hc1"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s.get_as("/v1/persons/p1/certificate?format=svg", APP).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/svg+xml"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let svg = r.text();
    assert!(
        svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    // Every request signs anew (a random ES256 nonce), so the code holds another text of the
    // same record: same header and payload (same clock), another signature, valid.
    let text = qr_decode::decode(&svg).0;
    assert_eq!(svg, certs::qr_svg(&text).unwrap());
    let (ours, theirs) = (decode_hc1(&text), decode_hc1(&hc1));
    assert_eq!(ours.protected, theirs.protected);
    assert_eq!(ours.payload, theirs.payload);
    assert_ne!(ours.signature, theirs.signature);
    assert_eq!(verify(&s, &text).await["valid"], true);
    let again = s
        .get_as("/v1/persons/p1/certificate?format=json", APP)
        .await
        .json()["hc1"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(decode_hc1(&again).payload, theirs.payload);
}

#[tokio::test]
async fn a_record_too_long_for_a_qr_code_is_a_clear_500() {
    let s = Server::start_with_tokens().await;
    // About 250 one-person results fill a QR code at level Q (150 make some 1,650 characters):
    // 300 hourly tests do not fit.
    with_health(&s, |h| {
        for i in 0..300 {
            let id = format!("H{i}");
            h.register_sample(NewSample {
                id: id.clone(),
                kind: if i % 3 == 0 {
                    SampleKind::Antigen
                } else {
                    SampleKind::Pcr
                },
                persons: vec!["p7".into()],
                collected_at: Some(T0 - 20 * DAY + i * 3_607),
                site: None,
            })
            .unwrap();
            h.enter_result(&id, LabResult::Negative, None).unwrap();
        }
    })
    .await;
    let hc1 = certificate(&s, "p7").await["hc1"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(hc1.len() > 2420, "{} characters", hc1.len());
    let v = verify(&s, &hc1).await;
    assert_eq!(v["claims"]["t"].as_array().unwrap().len(), 300);
    let r = s.get_as("/v1/persons/p7/certificate?format=svg", APP).await;
    let problem = r.assert_problem(500);
    let detail = problem["detail"].as_str().unwrap();
    // its own certificate, signed anew (a random nonce): about as long as the first (the 64 random
    // signature bytes change the zlib stream's Huffman codes, so the length moves by a few bytes)
    let told: usize = detail
        .split(|c: char| !c.is_ascii_digit())
        .find(|n| !n.is_empty())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        detail.contains("QR code") && told > 2420 && told.abs_diff(hc1.len()) <= 60,
        "{detail} (the first: {} characters)",
        hc1.len()
    );
}

#[tokio::test]
async fn certificate_reads_are_audited() {
    let s = Server::start_with_tokens().await;
    seed_p1(&s).await;
    certificate(&s, "p1").await;
    assert_eq!(
        s.get_as("/v1/persons/p2/certificate?format=svg", ADMIN)
            .await
            .status,
        200
    );
    // Refused reads and verifications look nobody up.
    assert_eq!(
        s.get_as("/v1/persons/p1/certificate", EPI).await.status,
        403
    );
    let hc1 = certificate(&s, "p1").await["hc1"].clone();
    verify(&s, hc1.as_str().unwrap()).await;
    let entries = s.get_as("/v1/audit", ADMIN).await.json()["entries"].clone();
    let action = "/v1/persons/{id}/certificate";
    assert_eq!(
        entries,
        json!([
            {"ts": T0, "who": "citizen-app", "action": action, "subject": "p1"},
            {"ts": T0, "who": "root", "action": action, "subject": "p2"},
            {"ts": T0, "who": "citizen-app", "action": action, "subject": "p1"},
        ])
    );
}

#[tokio::test]
async fn the_key_file_is_private_and_survives_a_restart() {
    let s = Server::start_with_tokens().await;
    seed_p1(&s).await;
    let path = s.dir.path().join("signing-key.pem");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let kid = the_key(&s).await["kid"].clone();
    let hc1 = certificate(&s, "p1").await["hc1"].clone();
    let pem = std::fs::read(&path).unwrap();

    let s = s.restart_with_tokens().await;
    assert_eq!(the_key(&s).await["kid"], kid);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        pem,
        "the file is not rewritten"
    );
    let v = verify(&s, hc1.as_str().unwrap()).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["claims"], p1_claims());
}

#[tokio::test]
async fn keys_and_verify_need_no_token_but_certificates_do() {
    let s = Server::start_with_tokens().await;
    assert_eq!(s.get("/v1/keys").await.status, 200);
    assert_eq!(
        s.send(
            "POST",
            "/v1/verify",
            None,
            &[],
            Bytes::from("{\"hc1\":\"x\"}")
        )
        .await
        .json(),
        json!({"valid": false, "reason": "bad_prefix"})
    );
    s.get("/v1/persons/p1/certificate")
        .await
        .assert_problem(401);
    s.get_as("/v1/persons/p1/certificate", SCANNER)
        .await
        .assert_problem(403);
}
