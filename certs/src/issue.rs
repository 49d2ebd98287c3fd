//! Signing: a [`Certificate`] becomes `"HC1:" + Base45(zlib(COSE_Sign1))`, the EU Digital COVID
//! Certificate encoding. The COSE_Sign1 is CBOR tag 18 over `[protected, {}, payload, signature]`
//! with protected header `{1: -7 (ES256), 4: kid bytes}` and an ES256 `r||s` signature over
//! `["Signature1", protected, h'', payload]`.
//!
//! The zlib stream is made by one compressor per thread, reset between certificates: setting one
//! up (miniz_oxide's state is some 300 KB) cost more than compressing the ~250 bytes.

use std::cell::RefCell;

use ciborium::Value;
use coset::{iana, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable as _};
use flate2::{Compress, Compression, FlushCompress, Status};

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
    let compressed = zlib(&cose)?;
    Ok(format!("{HC1_PREFIX}{}", base45::encode(compressed)))
}

thread_local! {
    /// This thread's compressor, reset before each use.
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::best(), true));
}

/// One complete zlib stream of `data` at `Compression::best()`: the bytes a fresh
/// `ZlibEncoder` of that level makes.
fn zlib(data: &[u8]) -> Result<Vec<u8>, IssueError> {
    let encode = |e: &dyn std::fmt::Display| IssueError::Encode(format!("zlib: {e}"));
    DEFLATE.with(|cell| {
        let mut fresh;
        let mut reused = cell.try_borrow_mut().ok();
        let z: &mut Compress = match reused.as_deref_mut() {
            Some(z) => {
                z.reset();
                z
            }
            // not reachable (nothing calls back in while it is borrowed); a fresh one is right
            None => {
                fresh = Compress::new(Compression::best(), true);
                &mut fresh
            }
        };
        let mut out = Vec::with_capacity(data.len() + 64);
        loop {
            let consumed = usize::try_from(z.total_in()).map_err(|e| encode(&e))?;
            let rest = data.get(consumed..).unwrap_or_default();
            match z
                .compress_vec(rest, &mut out, FlushCompress::Finish)
                .map_err(|e| encode(&e))?
            {
                Status::StreamEnd => return Ok(out),
                Status::Ok | Status::BufError => out.reserve(out.capacity().max(256)),
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::{Read as _, Write as _};

    use flate2::write::ZlibEncoder;
    use flate2::Compression;

    /// The reused compressor makes the stream a fresh encoder makes, call after call, for inputs
    /// small and larger than its first output buffer.
    #[test]
    fn the_reused_compressor_makes_what_a_fresh_encoder_makes() {
        let inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"a".to_vec(),
            (0..250u32).map(|i| (i * 13 % 97) as u8).collect(),
            (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            (0..250u32).map(|i| (i * 31 % 7) as u8).collect(),
        ];
        for _round in 0..3 {
            for input in &inputs {
                let mut fresh = ZlibEncoder::new(Vec::new(), Compression::best());
                fresh.write_all(input).unwrap();
                let expected = fresh.finish().unwrap();
                let got = super::zlib(input).unwrap();
                assert_eq!(got, expected, "{} bytes", input.len());
                let mut back = Vec::new();
                flate2::read::ZlibDecoder::new(got.as_slice())
                    .read_to_end(&mut back)
                    .unwrap();
                assert_eq!(&back, input);
            }
        }
    }
}
