//! Signing keys: the data-directory key file, operator PEM files, the kid and the public form.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use certs::{KeyError, KeyOrigin, PublicKey, SigningKey, KEY_FILE_NAME};
use p256::pkcs8::EncodePrivateKey;

#[test]
fn created_with_mode_0600_and_reloaded_to_the_same_kid() {
    let dir = tempfile::tempdir().unwrap();
    let (first, origin) = SigningKey::load_or_create(dir.path()).unwrap();
    assert_eq!(origin, KeyOrigin::Created);
    let path = dir.path().join(KEY_FILE_NAME);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let pem = fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    // nothing else is left in the directory
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [KEY_FILE_NAME]);

    let (again, origin) = SigningKey::load_or_create(dir.path()).unwrap();
    assert_eq!(origin, KeyOrigin::Loaded);
    assert_eq!(again.kid(), first.kid());
    assert_eq!(again.public_key(), first.public_key());
    assert_eq!(fs::read_to_string(&path).unwrap(), pem, "never rewritten");
    let operator = SigningKey::from_pem_file(&path).unwrap();
    assert_eq!(operator.kid(), first.kid());

    // a certificate signed before the restart verifies with the reloaded key
    let hc1 = certs::issue(&first, &common::sample_certificate()).unwrap();
    assert!(certs::verify(&hc1, &[again.public_key().clone()], common::JUNE_1_2021).is_valid());
}

#[test]
fn an_existing_bad_file_is_an_error_and_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE_NAME);
    fs::write(
        &path,
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = SigningKey::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, KeyError::InvalidFile { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(KEY_FILE_NAME) && !text.contains("c2VjcmV0"),
        "{text}"
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"
    );
}

#[test]
fn a_missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = SigningKey::load_or_create(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, KeyError::Io { .. }), "{err:?}");
}

#[test]
fn operator_pem_files() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _) = common::key_pair();
    let path = dir.path().join("operator.pem");
    fs::write(
        &path,
        raw.to_pkcs8_pem(p256::pkcs8::LineEnding::CRLF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let key = SigningKey::from_pem_file(&path).unwrap();
    let expected = PublicKey::from_verifying_key(*raw.verifying_key()).unwrap();
    assert_eq!(key.public_key(), &expected);

    // a SEC1 "EC PRIVATE KEY" file is refused: the contract asks for PKCS#8
    let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n";
    assert!(matches!(
        SigningKey::from_pkcs8_pem(sec1),
        Err(KeyError::InvalidPem(_))
    ));
    assert!(matches!(
        SigningKey::from_pem_file(&dir.path().join("absent.pem")),
        Err(KeyError::Io { .. })
    ));
}

#[test]
fn debug_and_errors_show_no_secret() {
    let (raw, key) = common::key_pair();
    let secret = raw.to_bytes();
    let pem = raw.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
    let debug = format!("{key:?} {key:#?} {:?}", key.public_key());
    assert!(debug.contains(key.kid()), "{debug}");
    assert_eq!(debug.matches(key.kid()).count(), 3);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!debug.to_lowercase().contains(&hex));
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!debug.contains(line));
    }
    assert!(!debug.contains(&format!("{:?}", &secret[..8])));
    assert_eq!(
        format!("{key:?}"),
        format!("SigningKey {{ kid: {:?}, .. }}", key.kid())
    );
}

#[test]
fn kid_format_and_jwk_round_trip() {
    let key = SigningKey::generate().unwrap();
    // standard base64 of 8 bytes: 11 characters and one '='
    assert_eq!(key.kid().len(), 12);
    assert!(key.kid().ends_with('='));
    let jwk = key.public_key().jwk();
    let json = serde_json::to_value(&jwk).unwrap();
    assert_eq!(
        json.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["alg", "crv", "kid", "kty", "x", "y"]
    );
    assert_eq!(json["kty"], "EC");
    assert_eq!(json["crv"], "P-256");
    assert_eq!(json["alg"], "ES256");
    assert_eq!(jwk.x.len(), 43);
    assert_eq!(jwk.y.len(), 43);
    let back = PublicKey::from_jwk(&jwk).unwrap();
    assert_eq!(&back, key.public_key());

    let mut wrong_kid = jwk.clone();
    wrong_kid.kid = SigningKey::generate().unwrap().kid().to_owned();
    assert!(PublicKey::from_jwk(&wrong_kid).is_err());
    let mut swapped = jwk.clone();
    std::mem::swap(&mut swapped.x, &mut swapped.y);
    assert!(PublicKey::from_jwk(&swapped).is_err());
    let mut rsa = jwk.clone();
    rsa.kty = "RSA".into();
    assert!(PublicKey::from_jwk(&rsa).is_err());
    let mut padded = jwk;
    padded.x.push('=');
    assert!(PublicKey::from_jwk(&padded).is_err());
}

#[test]
fn generated_keys_differ() {
    let a = SigningKey::generate().unwrap();
    let b = SigningKey::generate().unwrap();
    assert_ne!(a.kid(), b.kid());
}

#[test]
fn concurrent_first_starts_agree_on_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| SigningKey::load_or_create(dir.path()).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = results
        .iter()
        .filter(|(_, o)| *o == KeyOrigin::Created)
        .count();
    assert_eq!(created, 1);
    let on_disk = SigningKey::from_pem_file(&dir.path().join(KEY_FILE_NAME)).unwrap();
    for (key, _) in &results {
        assert_eq!(key.kid(), on_disk.kid());
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}
