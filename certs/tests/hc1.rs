//! The HC1 format end to end: round trips, an independent decoder, and every invalid reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use certs::{issue, verify, Certificate, InvalidReason, PassColor, SigningKey, Verdict};
use ciborium::Value;
use common::*;
use p256::ecdsa::signature::Verifier;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn reason(hc1: &str, key: &SigningKey, now: i64) -> Option<&'static str> {
    verify(hc1, &[key.public_key().clone()], now)
        .reason()
        .map(InvalidReason::reason_code)
}

#[test]
fn round_trip() {
    let key = SigningKey::generate().unwrap();
    let cert = sample_certificate();
    let hc1 = issue(&key, &cert).unwrap();
    assert!(hc1.starts_with("HC1:"));
    let Verdict::Valid(v) = verify(&hc1, &[key.public_key().clone()], JUNE_1_2021 + DAY) else {
        panic!("not valid")
    };
    assert_eq!(v.kid, key.kid());
    assert_eq!(v.issuer, "VN");
    assert_eq!(v.issued, JUNE_1_2021);
    assert_eq!(v.expires, JUNE_1_2021 + 365 * DAY);
    assert_eq!(v.claims, sample_claims_json());
}

#[test]
fn empty_claims_round_trip() {
    let key = SigningKey::generate().unwrap();
    let mut claims = sample_claims();
    claims.pass = PassColor::Red;
    claims.vaccinations.clear();
    claims.tests.clear();
    claims.recoveries.clear();
    let hc1 = issue(&key, &Certificate::new("XX", 5, 1, claims)).unwrap();
    let Verdict::Valid(v) = verify(&hc1, &[key.public_key().clone()], 6) else {
        panic!("not valid")
    };
    assert_eq!(v.issuer, "XX");
    assert_eq!(v.expires, 5 + DAY);
    assert_eq!(
        v.claims,
        serde_json::json!({"pid": "P-000123", "pass": "red", "v": [], "t": [], "r": []})
    );
}

/// Parses the produced COSE with ciborium directly and checks the signature with a key built
/// only from the published x/y.
#[test]
fn independent_decoder_and_verifier() {
    let key = SigningKey::generate().unwrap();
    let hc1 = issue(&key, &sample_certificate()).unwrap();
    let cose = unwrap_hc1(&hc1);
    let (protected, unprotected, payload_bytes, signature) = split_cose(&cose);

    // protected header {1: -7, 4: kid bytes}, exactly
    assert_eq!(protected, protected_header(&kid_bytes(&key)));
    assert_eq!(unprotected, Value::Map(Vec::new()));
    assert_eq!(kid_bytes(&key).len(), 8);

    // payload {1: iss, 4: exp, 6: iat, -260: {1: {...}}}
    let payload: Value = ciborium::from_reader(&payload_bytes[..]).unwrap();
    let map = payload.as_map().unwrap();
    let keys: Vec<i128> = map
        .iter()
        .map(|(k, _)| i128::from(k.as_integer().unwrap()))
        .collect();
    assert_eq!(keys, [1, 4, 6, -260]);
    assert_eq!(map[0].1, Value::Text("VN".into()));
    assert_eq!(map[1].1, int(JUNE_1_2021 + 365 * DAY));
    assert_eq!(map[2].1, int(JUNE_1_2021));
    let hcert = map[3].1.as_map().unwrap();
    assert_eq!(hcert.len(), 1);
    assert_eq!(hcert[0].0, int(1));
    let claims = hcert[0].1.as_map().unwrap();
    let names: Vec<&str> = claims.iter().map(|(k, _)| k.as_text().unwrap()).collect();
    assert_eq!(names, ["pid", "pass", "v", "t", "r"]);
    // codes and numbers have the contract's CBOR types
    let v0 = claims[2].1.as_array().unwrap()[0].as_map().unwrap();
    assert_eq!(v0[0], (Value::Text("dn".into()), int(1)));
    let t0 = claims[3].1.as_array().unwrap()[0].as_map().unwrap();
    assert_eq!(
        t0[2],
        (Value::Text("tr".into()), Value::Text("260373001".into()))
    );

    // the published key, rebuilt from x/y alone
    let jwk = key.public_key().jwk();
    assert_eq!(
        (jwk.kty.as_str(), jwk.crv.as_str(), jwk.alg.as_str()),
        ("EC", "P-256", "ES256")
    );
    assert!(!jwk.x.contains('=') && !jwk.y.contains('='));
    let x = URL_SAFE_NO_PAD.decode(&jwk.x).unwrap();
    let y = URL_SAFE_NO_PAD.decode(&jwk.y).unwrap();
    assert_eq!((x.len(), y.len()), (32, 32));
    let mut sec1 = vec![0x04];
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
    assert_eq!(signature.len(), 64);
    let signature = p256::ecdsa::Signature::from_slice(&signature).unwrap();
    verifying
        .verify(&sig_structure(&protected, &payload_bytes), &signature)
        .expect("signature over the Sig_structure verifies");

    // kid = base64(SHA-256(DER SPKI)[..8]), with the SPKI assembled by hand
    let mut spki = hex(
        "3059301306072a8648ce3d020106082a8648ce3d030107034200", // id-ecPublicKey, prime256v1
    );
    spki.extend_from_slice(&sec1);
    let digest = Sha256::digest(&spki);
    assert_eq!(kid_bytes(&key), digest[..8]);
    assert_eq!(jwk.kid, key.kid());
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A certificate assembled by hand (no crate code) verifies, so the verifier reads the format.
#[test]
fn hand_built_certificate_verifies() {
    let (raw, key) = key_pair();
    let claims = Value::Map(vec![(Value::Text("pid".into()), Value::Text("P1".into()))]);
    let cose = build_cose(
        &protected_header(&kid_bytes(&key)),
        &payload("VN", 100, 200, claims),
        &raw,
    );
    let Verdict::Valid(v) = verify(&wrap(&cose), &[key.public_key().clone()], 150) else {
        panic!("not valid")
    };
    assert_eq!((v.issued, v.expires), (100, 200));
    assert_eq!(v.claims, serde_json::json!({"pid": "P1"}));
}

#[test]
fn tampered_payload_is_bad_signature() {
    let key = SigningKey::generate().unwrap();
    let hc1 = issue(&key, &sample_certificate()).unwrap();
    let (protected, _, payload_bytes, signature) = split_cose(&unwrap_hc1(&hc1));

    // change the pass colour in the payload, keep the signature
    let mut value: Value = ciborium::from_reader(&payload_bytes[..]).unwrap();
    let Value::Map(entries) = &mut value else {
        panic!()
    };
    let Value::Map(hcert) = &mut entries[3].1 else {
        panic!()
    };
    let Value::Map(claims) = &mut hcert[0].1 else {
        panic!()
    };
    claims[1].1 = Value::Text("red".into());
    let forged = assemble_cose(&protected, &cbor(&value), &signature);
    assert_eq!(
        reason(&wrap(&forged), &key, JUNE_1_2021),
        Some("bad_signature")
    );

    // one flipped payload byte, and one flipped signature byte
    let mut flipped = payload_bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let forged = assemble_cose(&protected, &flipped, &signature);
    assert_eq!(
        reason(&wrap(&forged), &key, JUNE_1_2021),
        Some("bad_signature")
    );
    let mut bad_sig = signature.clone();
    bad_sig[10] ^= 0x40;
    let forged = assemble_cose(&protected, &payload_bytes, &bad_sig);
    assert_eq!(
        reason(&wrap(&forged), &key, JUNE_1_2021),
        Some("bad_signature")
    );
    // a signature of the wrong length, or all zeros (r = s = 0)
    let forged = assemble_cose(&protected, &payload_bytes, &signature[..63]);
    assert_eq!(
        reason(&wrap(&forged), &key, JUNE_1_2021),
        Some("bad_signature")
    );
    let forged = assemble_cose(&protected, &payload_bytes, &[0; 64]);
    assert_eq!(
        reason(&wrap(&forged), &key, JUNE_1_2021),
        Some("bad_signature")
    );
}

#[test]
fn other_key_is_unknown_kid_and_forged_kid_is_bad_signature() {
    let key = SigningKey::generate().unwrap();
    let (other_raw, other) = key_pair();
    assert_ne!(key.kid(), other.kid());

    // a genuine certificate of another issuer key: same structure, unknown kid
    let hc1 = issue(&other, &sample_certificate()).unwrap();
    assert_eq!(reason(&hc1, &key, JUNE_1_2021), Some("unknown_kid"));
    assert_eq!(
        verify(&hc1, &[], JUNE_1_2021).reason(),
        Some(InvalidReason::UnknownKid)
    );

    // signed with the other key but claiming our kid
    let claims = Value::Map(vec![(Value::Text("pid".into()), Value::Text("P1".into()))]);
    let cose = build_cose(
        &protected_header(&kid_bytes(&key)),
        &payload("VN", 100, 10 * JUNE_1_2021, claims),
        &other_raw,
    );
    assert_eq!(
        reason(&wrap(&cose), &key, JUNE_1_2021),
        Some("bad_signature")
    );

    // with several published keys, the one with the kid verifies
    let ring = [other.public_key().clone(), key.public_key().clone()];
    let hc1 = issue(&key, &sample_certificate()).unwrap();
    let Verdict::Valid(v) = verify(&hc1, &ring, JUNE_1_2021) else {
        panic!("not valid")
    };
    assert_eq!(v.kid, key.kid());
}

#[test]
fn expiry() {
    let key = SigningKey::generate().unwrap();
    let cert = Certificate::new("VN", 1_000, 2, sample_claims());
    let hc1 = issue(&key, &cert).unwrap();
    let expires = 1_000 + 2 * DAY;
    assert!(verify(&hc1, &[key.public_key().clone()], expires - 1).is_valid());
    assert_eq!(reason(&hc1, &key, expires), Some("expired"));
    assert_eq!(reason(&hc1, &key, expires + 365 * DAY), Some("expired"));
    // expired certificates still report a tampered signature first
    let (protected, _, payload_bytes, mut signature) = split_cose(&unwrap_hc1(&hc1));
    signature[0] ^= 1;
    let forged = wrap(&assemble_cose(&protected, &payload_bytes, &signature));
    assert_eq!(reason(&forged, &key, expires + 1), Some("bad_signature"));
}

#[test]
fn issue_rejects_what_it_cannot_spell() {
    let key = SigningKey::generate().unwrap();
    let mut cert = sample_certificate();
    cert.expires = cert.issued - 1;
    assert!(matches!(
        issue(&key, &cert),
        Err(certs::IssueError::ExpiresBeforeIssued { .. })
    ));
    let mut cert = sample_certificate();
    cert.claims.vaccinations[0].administered_at = i64::MAX;
    let err = issue(&key, &cert).unwrap_err();
    assert!(err.to_string().contains("v.dt"), "{err}");
}

#[test]
fn malformed_inputs_have_their_reasons() {
    let key = SigningKey::generate().unwrap();
    let now = JUNE_1_2021;
    let good = issue(&key, &sample_certificate()).unwrap();
    let r = |s: &str| reason(s, &key, now);

    // prefix
    assert_eq!(r(""), Some("bad_prefix"));
    assert_eq!(r("HC1"), Some("bad_prefix"));
    assert_eq!(r(&good.replacen("HC1:", "hc1:", 1)), Some("bad_prefix"));
    assert_eq!(r(&good.replacen("HC1:", "HC2:", 1)), Some("bad_prefix"));
    assert_eq!(r(&format!(" {good}")), Some("bad_prefix"));
    assert_eq!(r(&good[4..]), Some("bad_prefix"));

    // base45
    assert_eq!(r("HC1:abc"), Some("bad_base45"));
    assert_eq!(r("HC1:ÄÖÜ"), Some("bad_base45"));
    assert_eq!(r("HC1:A"), Some("bad_base45")); // a lone trailing character
    assert_eq!(r("HC1:ZZZ"), Some("bad_base45")); // above 0xFFFF
    assert_eq!(r(&format!("{good}\n")), Some("bad_base45"));

    // zlib
    assert_eq!(r("HC1:"), Some("bad_zlib"));
    assert_eq!(
        r(&format!("HC1:{}", base45::encode(b"not zlib at all"))),
        Some("bad_zlib")
    );
    let cose = unwrap_hc1(&good);
    let mut compressed = zlib(&cose);
    let n = compressed.len();
    compressed[n - 1] ^= 0xff; // adler-32 mismatch
    assert_eq!(
        r(&format!("HC1:{}", base45::encode(&compressed))),
        Some("bad_zlib")
    );
    let mut trailing = zlib(&cose);
    trailing.extend_from_slice(b"extra");
    assert_eq!(
        r(&format!("HC1:{}", base45::encode(&trailing))),
        Some("bad_zlib")
    );

    // zlib of something that is not a COSE_Sign1
    assert_eq!(r(&wrap(b"hello")), Some("bad_cose"));
    assert_eq!(r(&wrap(&[])), Some("bad_cose"));
    assert_eq!(r(&wrap(&cbor(&int(18)))), Some("bad_cose"));
    // the right array, untagged or with another tag
    let (protected, _, payload_bytes, signature) = split_cose(&cose);
    let untagged = cbor(&Value::Array(vec![
        Value::Bytes(protected.clone()),
        Value::Map(vec![]),
        Value::Bytes(payload_bytes.clone()),
        Value::Bytes(signature.clone()),
    ]));
    assert_eq!(r(&wrap(&untagged)), Some("bad_cose"));
    let mut tag98 = cose.clone();
    tag98[0] = 0xd8; // 0xd2 (tag 18) -> 0xd8 0x62 (tag 98)
    tag98.insert(1, 0x62);
    assert_eq!(r(&wrap(&tag98)), Some("bad_cose"));
    // a valid COSE followed by more CBOR
    let mut extra = cose.clone();
    extra.push(0x00);
    assert_eq!(r(&wrap(&extra)), Some("bad_cose"));
    // truncated COSE inside a valid zlib stream
    assert_eq!(r(&wrap(&cose[..cose.len() - 1])), Some("bad_cose"));
    assert_eq!(r(&wrap(&cose[..cose.len() / 2])), Some("bad_cose"));
}

#[test]
fn truncated_texts_are_never_valid() {
    let key = SigningKey::generate().unwrap();
    let good = issue(&key, &sample_certificate()).unwrap();
    for cut in 1..good.len() {
        let got = reason(&good[..good.len() - cut], &key, JUNE_1_2021);
        let expected: &[&str] = if good.len() - cut < 4 {
            &["bad_prefix"]
        } else {
            &["bad_base45", "bad_zlib"]
        };
        assert!(
            got.is_some_and(|g| expected.contains(&g)),
            "cut {cut}: {got:?}"
        );
    }
}

#[test]
fn cose_envelope_checks() {
    let (raw, key) = key_pair();
    let now = 150;
    let claims = || Value::Map(vec![(Value::Text("pid".into()), Value::Text("P1".into()))]);
    let body = payload("VN", 100, 200, claims());
    let r = |cose: &[u8]| reason(&wrap(cose), &key, now);

    // another algorithm (ES384), or none
    let es384 = cbor(&Value::Map(vec![
        (int(1), int(-35)),
        (int(4), Value::Bytes(kid_bytes(&key))),
    ]));
    assert_eq!(r(&build_cose(&es384, &body, &raw)), Some("bad_cose"));
    let no_alg = cbor(&Value::Map(vec![(int(4), Value::Bytes(kid_bytes(&key)))]));
    assert_eq!(r(&build_cose(&no_alg, &body, &raw)), Some("bad_cose"));
    // no kid
    let no_kid = cbor(&Value::Map(vec![(int(1), int(-7))]));
    assert_eq!(r(&build_cose(&no_kid, &body, &raw)), Some("bad_cose"));
    // a kid of another length matches no key
    let short = protected_header(&kid_bytes(&key)[..7]);
    assert_eq!(r(&build_cose(&short, &body, &raw)), Some("unknown_kid"));
    // a detached (nil) payload
    let protected = protected_header(&kid_bytes(&key));
    let detached = cbor(&Value::Tag(
        18,
        Box::new(Value::Array(vec![
            Value::Bytes(protected.clone()),
            Value::Map(vec![]),
            Value::Null,
            Value::Bytes(vec![0; 64]),
        ])),
    ));
    assert_eq!(r(&detached), Some("bad_cose"));
    // protected header not a bstr
    let bad_protected = cbor(&Value::Tag(
        18,
        Box::new(Value::Array(vec![
            Value::Map(vec![(int(1), int(-7))]),
            Value::Map(vec![]),
            Value::Bytes(body.clone()),
            Value::Bytes(vec![0; 64]),
        ])),
    ));
    assert_eq!(r(&bad_protected), Some("bad_cose"));
}

#[test]
fn signed_but_malformed_payloads_are_bad_cose() {
    let (raw, key) = key_pair();
    let protected = protected_header(&kid_bytes(&key));
    let r = |body: Vec<u8>| reason(&wrap(&build_cose(&protected, &body, &raw)), &key, 150);
    let text = |s: &str| Value::Text(s.into());
    let claims = || Value::Map(vec![(text("pid"), text("P1"))]);
    let map = |entries: Vec<(Value, Value)>| cbor(&Value::Map(entries));

    assert_eq!(r(b"not cbor".to_vec()), Some("bad_cose"));
    assert_eq!(r(cbor(&Value::Array(vec![]))), Some("bad_cose"));
    // a missing or mistyped issuer, expiry or issue time
    assert_eq!(
        r(map(vec![
            (int(4), int(200)),
            (int(6), int(100)),
            (int(-260), Value::Map(vec![(int(1), claims())]))
        ])),
        Some("bad_cose")
    );
    assert_eq!(
        r(map(vec![
            (int(1), text("VN")),
            (int(4), text("200")),
            (int(6), int(100)),
            (int(-260), Value::Map(vec![(int(1), claims())]))
        ])),
        Some("bad_cose")
    );
    assert_eq!(
        r(map(vec![
            (int(1), text("VN")),
            (int(4), Value::Integer(u64::MAX.into())),
            (int(6), int(100)),
            (int(-260), Value::Map(vec![(int(1), claims())]))
        ])),
        Some("bad_cose")
    );
    // no -260, no -260/1, or -260/1 not a map
    assert_eq!(
        r(map(vec![
            (int(1), text("VN")),
            (int(4), int(200)),
            (int(6), int(100))
        ])),
        Some("bad_cose")
    );
    assert_eq!(r(payload("VN", 100, 200, text("x"))), Some("bad_cose"));
    // claims that JSON cannot carry: bytes, a non-text key, a duplicate key, a tag
    for bad in [
        Value::Map(vec![(text("pid"), Value::Bytes(vec![1]))]),
        Value::Map(vec![(int(1), text("P1"))]),
        Value::Map(vec![(text("pid"), text("a")), (text("pid"), text("b"))]),
        Value::Map(vec![(text("pid"), Value::Tag(0, Box::new(text("x"))))]),
        Value::Map(vec![(text("f"), Value::Float(f64::NAN))]),
    ] {
        assert_eq!(r(payload("VN", 100, 200, bad)), Some("bad_cose"));
    }
    // what JSON can carry comes back as JSON
    let rich = Value::Map(vec![
        (text("n"), Value::Null),
        (text("b"), Value::Bool(true)),
        (text("f"), Value::Float(1.5)),
        (text("big"), Value::Integer(u64::MAX.into())),
        (text("neg"), int(-3)),
        (text("nest"), Value::Array(vec![Value::Map(vec![])])),
    ]);
    let hc1 = wrap(&build_cose(
        &protected,
        &payload("VN", 100, 200, rich),
        &raw,
    ));
    let Verdict::Valid(v) = verify(&hc1, &[key.public_key().clone()], 150) else {
        panic!("not valid")
    };
    assert_eq!(
        v.claims,
        serde_json::json!({"n": null, "b": true, "f": 1.5, "big": u64::MAX, "neg": -3, "nest": [{}]})
    );
}

#[test]
fn decompression_is_bounded() {
    let key = SigningKey::generate().unwrap();
    // a zip bomb: 16 MiB of zeros compresses to a few KiB
    let bomb = wrap(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 100_000);
    assert_eq!(reason(&bomb, &key, 0), Some("bad_zlib"));
    assert_eq!(
        reason(&wrap(&vec![0u8; certs::MAX_COSE_BYTES + 1]), &key, 0),
        Some("bad_zlib")
    );
    // exactly at the bound it inflates, and is then judged as COSE
    assert_eq!(
        reason(&wrap(&vec![0u8; certs::MAX_COSE_BYTES]), &key, 0),
        Some("bad_cose")
    );
}

#[test]
fn hostile_cbor_does_not_hurt() {
    let key = SigningKey::generate().unwrap();
    let r = |bytes: &[u8]| reason(&wrap(bytes), &key, 0);
    // lengths that claim far more than is there
    assert_eq!(
        r(&[0xd2, 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        Some("bad_cose")
    );
    assert_eq!(
        r(&[0xd2, 0x84, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        Some("bad_cose")
    );
    assert_eq!(
        r(&[0xd2, 0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        Some("bad_cose")
    );
    // deep nesting: 60,000 nested arrays, and as many nested tags
    assert_eq!(r(&vec![0x81; 60_000]), Some("bad_cose"));
    assert_eq!(
        r(&[vec![0xd2; 60_000], vec![0x00]].concat()),
        Some("bad_cose")
    );
    // indefinite-length items never closed
    assert_eq!(r(&[0xd2, 0x9f, 0x9f, 0x9f]), Some("bad_cose"));
    assert_eq!(r(&[0xd2, 0x5f, 0x41, 0x00]), Some("bad_cose"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_after_prefix_gets_a_verdict(s in ".*") {
        let key = SigningKey::generate().unwrap();
        let v = verify(&format!("HC1:{s}"), &[key.public_key().clone()], 0);
        prop_assert!(!v.is_valid());
    }

    #[test]
    fn base45_alphabet_text_gets_a_verdict(s in "[0-9A-Z $%*+./:-]{0,600}") {
        let key = SigningKey::generate().unwrap();
        let v = verify(&format!("HC1:{s}"), &[key.public_key().clone()], 0);
        prop_assert!(!v.is_valid());
    }

    #[test]
    fn any_bytes_inside_zlib_get_a_verdict(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let key = SigningKey::generate().unwrap();
        let v = verify(&wrap(&bytes), &[key.public_key().clone()], 0);
        prop_assert!(!v.is_valid());
    }

    #[test]
    fn mutated_certificates_are_never_valid_unless_unchanged(
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let key = SigningKey::generate().unwrap();
        let good = issue(&key, &sample_certificate()).unwrap();
        let mut cose = unwrap_hc1(&good);
        let i = at.index(cose.len());
        cose[i] ^= 1 << bit;
        let v = verify(&wrap(&cose), &[key.public_key().clone()], JUNE_1_2021);
        prop_assert!(!v.is_valid(), "byte {} bit {} still valid", i, bit);
    }
}

/// `ring` signs with a random nonce: the same certificate signed twice gives two texts, and p256
/// (a separate implementation) verifies both signatures; so does `verify`, many times over on
/// one thread (the reused decompressor) and for a p256-made signature of the same message.
#[test]
fn each_signature_is_fresh_and_verifies_independently() {
    let (raw, key) = key_pair();
    let cert = sample_certificate();
    let a = issue(&key, &cert).unwrap();
    let b = issue(&key, &cert).unwrap();
    assert_ne!(a, b, "a random nonce gives another signature");
    let verifying = *raw.verifying_key();
    for hc1 in [&a, &b] {
        let (protected, _, payload_bytes, signature) = split_cose(&unwrap_hc1(hc1));
        let signature = p256::ecdsa::Signature::from_slice(&signature).unwrap();
        verifying
            .verify(&sig_structure(&protected, &payload_bytes), &signature)
            .expect("p256 verifies ring's signature");
    }
    for _ in 0..200 {
        assert_eq!(reason(&a, &key, JUNE_1_2021), None);
        assert_eq!(reason(&b, &key, JUNE_1_2021), None);
    }
    let (protected, _, payload_bytes, _) = split_cose(&unwrap_hc1(&a));
    let by_p256 = build_cose(&protected, &payload_bytes, &raw);
    assert_eq!(reason(&wrap(&by_p256), &key, JUNE_1_2021), None);
}
