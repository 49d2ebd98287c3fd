//! Signing: a [`Certificate`] becomes `"HC1:" + Base45(zlib(COSE_Sign1))`, the EU Digital COVID
//! Certificate encoding. The COSE_Sign1 is CBOR tag 18 over `[protected, {}, payload, signature]`
//! with protected header `{1: -7 (ES256), 4: kid bytes}` and an ES256 `r||s` signature over
//! `["Signature1", protected, h'', payload]`.

use std::io::Write as _;

use ciborium::Value;
use coset::{iana, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable as _};
use flate2::write::ZlibEncoder;
use flate2::Compression;

use crate::claims::{Certificate, ClaimTimeOutOfRange};
use crate::key::SigningKey;
use crate::{
    HC1_PREFIX, PAYLOAD_EXPIRES, PAYLOAD_HCERT, PAYLOAD_HCERT_V1, PAYLOAD_ISSUED, PAYLOAD_ISSUER,
};

/// Why a certificate could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    ClaimTime(#[from] ClaimTimeOutOfRange),
    #[error("the certificate expires ({expires}) before it is issued ({issued})")]
    ExpiresBeforeIssued { issued: i64, expires: i64 },
    #[error("encoding the certificate failed: {0}")]
    Encode(String),
}

fn label(n: i64) -> Value {
    Value::Integer(n.into())
}

/// The CWT payload `{1: issuer, 4: expires, 6: issued, -260: {1: claims}}`, CBOR-encoded.
fn payload(cert: &Certificate) -> Result<Vec<u8>, IssueError> {
    let map = Value::Map(vec![
        (label(PAYLOAD_ISSUER), Value::Text(cert.issuer.clone())),
        (label(PAYLOAD_EXPIRES), label(cert.expires)),
        (label(PAYLOAD_ISSUED), label(cert.issued)),
        (
            label(PAYLOAD_HCERT),
            Value::Map(vec![(label(PAYLOAD_HCERT_V1), cert.claims.to_cbor()?)]),
        ),
    ]);
    let mut bytes = Vec::new();
    ciborium::into_writer(&map, &mut bytes).map_err(|e| IssueError::Encode(e.to_string()))?;
    Ok(bytes)
}

/// Signs `cert` with `key` and answers its `HC1:` text.
pub fn issue(key: &SigningKey, cert: &Certificate) -> Result<String, IssueError> {
    if cert.expires < cert.issued {
        return Err(IssueError::ExpiresBeforeIssued {
            issued: cert.issued,
            expires: cert.expires,
        });
    }
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .key_id(key.public_key().kid_bytes().to_vec())
        .build();
    let cose = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload(cert)?)
        .create_signature(b"", |to_be_signed| key.sign(to_be_signed).to_vec())
        .build()
        .to_tagged_vec()
        .map_err(|e| IssueError::Encode(e.to_string()))?;
    let mut zlib = ZlibEncoder::new(Vec::new(), Compression::best());
    let compressed = zlib
        .write_all(&cose)
        .and_then(|()| zlib.finish())
        .map_err(|e| IssueError::Encode(e.to_string()))?;
    Ok(format!("{HC1_PREFIX}{}", base45::encode(compressed)))
}
