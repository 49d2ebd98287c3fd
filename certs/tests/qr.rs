//! The certificate's QR code: an SVG document that decodes back to the `HC1:` text at level Q.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use certs::{issue, qr_svg, SigningKey};

/// Rasterises the qrcode crate's SVG (one background rect, one path of `M x y h w v h H x V y`
/// rectangles) at one pixel per unit.
fn rasterise(svg: &str) -> (usize, usize, Vec<bool>) {
    let attr = |name: &str| -> usize {
        let start = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        let end = start + svg[start..].find('"').unwrap();
        svg[start..end].parse().unwrap()
    };
    let (w, h) = (attr("width"), attr("height"));
    let mut dark = vec![false; w * h];
    let d_start = svg.find(" d=\"").unwrap() + 4;
    let d = &svg[d_start..d_start + svg[d_start..].find('"').unwrap()];
    for rect in d.split('M').filter(|s| !s.is_empty()) {
        let nums: Vec<usize> = rect
            .split(|c: char| c == ' ' || c.is_ascii_alphabetic())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let [left, top, width, height, ..] = nums[..] else {
            panic!("bad rect {rect}")
        };
        for y in top..top + height {
            for x in left..left + width {
                dark[y * w + x] = true;
            }
        }
    }
    (w, h, dark)
}

#[test]
fn svg_decodes_back_to_the_certificate_at_level_q() {
    let key = SigningKey::generate().unwrap();
    let hc1 = issue(&key, &common::sample_certificate()).unwrap();
    let svg = qr_svg(&hc1).unwrap();
    assert!(svg.starts_with("<?xml"));
    let root = svg.find("<svg").unwrap();
    assert!(svg[root..].starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));

    let (w, h, dark) = rasterise(&svg);
    let mut image = rqrr::PreparedImage::prepare_from_bitmap(w, h, |x, y| dark[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1);
    let (meta, content) = grids[0].decode().unwrap();
    assert_eq!(content, hc1);
    assert_eq!(meta.ecc_level, 3, "format bits 11 = level Q");
}

#[test]
fn too_long_for_a_qr_code_is_an_error() {
    assert!(qr_svg(&"A".repeat(2_420)).is_ok());
    let err = qr_svg(&"A".repeat(2_421)).unwrap_err();
    assert_eq!(err.len, 2_421);
}
