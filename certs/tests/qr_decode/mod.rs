//! Decodes the certificate QR code's SVG in tests: a rasteriser for the qrcode crate's SVG and
//! rqrr. Shared by `certs/tests/qr.rs` and `tests/tests/api_certificates.rs` (included there by
//! path).
#![allow(dead_code)]

/// Rasterises the qrcode crate's SVG (one background rect, one path of `M x y h w v h H x V y`
/// rectangles) at one pixel per unit.
pub fn rasterise(svg: &str) -> (usize, usize, Vec<bool>) {
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

/// The text and error-correction level (rqrr's number: 3 is Q) of the one QR code in `svg`.
pub fn decode(svg: &str) -> (String, u16) {
    let (w, h, dark) = rasterise(svg);
    let mut image = rqrr::PreparedImage::prepare_from_bitmap(w, h, |x, y| dark[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    let (meta, content) = grids[0].decode().unwrap();
    (content, meta.ecc_level)
}
