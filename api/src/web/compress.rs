//! gzip for the pages' text responses (HTML, CSS, JavaScript, SVG), when the request's
//! `Accept-Encoding` allows it (RFC 9110 section 12.5.3: `gzip` or `x-gzip` with a non-zero
//! weight, or `*` when gzip is not named). Every compressible response says
//! `Vary: Accept-Encoding`, compressed or not, so a shared cache keeps both forms apart.
//!
//! Dynamic pages are compressed per answer (the portal's once per refresh, in its cache); the
//! embedded assets once, on first use, and kept ([`asset_gzip`]). Bodies under
//! [`MIN_BYTES`] are sent as they are: gzip's 20-byte frame would eat the gain.

use std::io::Write as _;
use std::sync::OnceLock;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use hyper::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, VARY};

use super::assets::ASSETS;

/// Bodies shorter than this are not compressed.
pub const MIN_BYTES: usize = 512;

/// The level of dynamic answers: zlib's default, a good trade at a few tens of KB.
const DYNAMIC_LEVEL: u32 = 6;
/// The level of the embedded assets, compressed once.
const STATIC_LEVEL: u32 = 9;

/// Whether `headers` accept a gzip body.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip: Option<bool> = None;
    let mut star: Option<bool> = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let allowed = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
                })
                .next_back()
                .is_none_or(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0));
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(gzip.unwrap_or(false) || allowed);
            } else if coding == "*" {
                star = Some(allowed);
            }
        }
    }
    gzip.or(star).unwrap_or(false)
}

/// Whether a response of `content_type` is worth compressing.
pub fn compressible(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    matches!(
        essence,
        "text/html" | "text/css" | "text/javascript" | "application/javascript" | "image/svg+xml"
    )
}

fn gzip_at(data: &[u8], level: u32) -> Bytes {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(data.len() / 3 + 64),
        Compression::new(level),
    );
    // Writing into a Vec cannot fail.
    match enc.write_all(data).and_then(|()| enc.finish()) {
        Ok(out) => Bytes::from(out),
        Err(_) => Bytes::new(),
    }
}

/// `data` gzipped at the dynamic level.
pub fn gzip(data: &[u8]) -> Bytes {
    gzip_at(data, DYNAMIC_LEVEL)
}

/// The gzipped bytes of the embedded asset at `index` in [`ASSETS`], compressed once.
pub fn asset_gzip(index: usize) -> Option<Bytes> {
    static GZ: OnceLock<Vec<Bytes>> = OnceLock::new();
    GZ.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| gzip_at(a.bytes, STATIC_LEVEL))
            .collect()
    })
    .get(index)
    .cloned()
}

/// A body to send: `plain`, or `gzipped` (made on demand) when the client takes gzip and the
/// body is long enough. Sets `Content-Encoding` and `Vary` on `headers`.
pub fn choose(
    headers: &mut HeaderMap,
    take_gzip: bool,
    plain: Bytes,
    gzipped: impl FnOnce(&Bytes) -> Option<Bytes>,
) -> Bytes {
    headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    if take_gzip && plain.len() >= MIN_BYTES {
        if let Some(gz) = gzipped(&plain).filter(|gz| !gz.is_empty()) {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            return gz;
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn accept(v: &str) -> bool {
        let mut h = HeaderMap::new();
        h.insert(
            ACCEPT_ENCODING,
            HeaderValue::from_str(v).unwrap_or_else(|_| unreachable!()),
        );
        accepts_gzip(&h)
    }

    #[test]
    fn accept_encoding_is_read_as_rfc_9110_says() {
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(accept("gzip"));
        assert!(accept("gzip, deflate, br, zstd"));
        assert!(accept("br;q=1.0, GZIP;q=0.5"));
        assert!(accept("x-gzip"));
        assert!(accept("*"));
        assert!(!accept("identity"));
        assert!(!accept("br"));
        assert!(!accept("gzip;q=0"));
        assert!(!accept("gzip; q=0.000"));
        assert!(!accept("*, gzip;q=0"), "naming gzip wins over *");
        assert!(!accept("*;q=0"));
        assert!(!accept("gzip;q=bogus"));
    }

    #[test]
    fn text_types_are_compressible_and_images_are_not() {
        assert!(compressible("text/html; charset=utf-8"));
        assert!(compressible("text/css; charset=utf-8"));
        assert!(compressible("text/javascript; charset=utf-8"));
        assert!(compressible("image/svg+xml"));
        assert!(!compressible("image/png"));
        assert!(!compressible("application/json"));
    }

    #[test]
    fn gzip_round_trips_and_assets_shrink() {
        let text = "Cổng thông tin COVID-19 ".repeat(100);
        let gz = gzip(text.as_bytes());
        assert!(gz.len() < text.len() / 5);
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut back)
            .unwrap_or_default();
        assert_eq!(back, text);
        for (i, a) in ASSETS.iter().enumerate() {
            let gz = asset_gzip(i).unwrap_or_default();
            assert!(!gz.is_empty(), "{}", a.name);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap_or_default();
            assert_eq!(back, a.bytes, "{}", a.name);
        }
        assert!(asset_gzip(ASSETS.len()).is_none());
    }

    #[test]
    fn short_bodies_and_refusing_clients_get_the_plain_body_with_vary() {
        let mut h = HeaderMap::new();
        let plain = Bytes::from(vec![b'a'; 4096]);
        let out = choose(&mut h, false, plain.clone(), |b| Some(gzip(b)));
        assert_eq!(out, plain);
        assert_eq!(
            h.get(VARY).map(|v| v.as_bytes()),
            Some(&b"accept-encoding"[..])
        );
        assert!(h.get(CONTENT_ENCODING).is_none());
        let out = choose(&mut h, true, Bytes::from_static(b"short"), |b| {
            Some(gzip(b))
        });
        assert_eq!(&out[..], b"short");
        assert!(h.get(CONTENT_ENCODING).is_none());
        let out = choose(&mut h, true, plain.clone(), |b| Some(gzip(b)));
        assert!(out.len() < 100);
        assert_eq!(
            h.get(CONTENT_ENCODING).map(|v| v.as_bytes()),
            Some(&b"gzip"[..])
        );
    }
}
