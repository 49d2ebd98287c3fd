//! The QR code of a certificate's `HC1:` text as an SVG image, error correction level Q. The
//! Base45 alphabet is QR's alphanumeric set, so the text is coded in alphanumeric mode.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// The text does not fit in a QR code at level Q (more than 2,420 alphanumeric characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot make a QR code of {len} characters: {why}")]
pub struct QrError {
    pub len: usize,
    pub why: String,
}

/// The QR code of `text` (level Q, 4-module quiet zone) as a standalone SVG document.
pub fn qr_svg(text: &str) -> Result<String, QrError> {
    let code = QrCode::with_error_correction_level(text, EcLevel::Q).map_err(|e| QrError {
        len: text.len(),
        why: e.to_string(),
    })?;
    Ok(code
        .render::<svg::Color<'_>>()
        .quiet_zone(true)
        .module_dimensions(4, 4)
        .build())
}
