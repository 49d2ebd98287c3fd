//! The certificate's QR code: an SVG document that decodes back to the `HC1:` text at level Q.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod qr_decode;

use certs::{issue, qr_svg, SigningKey};

#[test]
fn svg_decodes_back_to_the_certificate_at_level_q() {
    let key = SigningKey::generate().unwrap();
    let hc1 = issue(&key, &common::sample_certificate()).unwrap();
    let svg = qr_svg(&hc1).unwrap();
    assert!(svg.starts_with("<?xml"));
    let root = svg.find("<svg").unwrap();
    assert!(svg[root..].starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));

    let (content, ecc_level) = qr_decode::decode(&svg);
    assert_eq!(content, hc1);
    assert_eq!(ecc_level, 3, "format bits 11 = level Q");
}

#[test]
fn too_long_for_a_qr_code_is_an_error() {
    assert!(qr_svg(&"A".repeat(2_420)).is_ok());
    let err = qr_svg(&"A".repeat(2_421)).unwrap_err();
    assert_eq!(err.len, 2_421);
}
