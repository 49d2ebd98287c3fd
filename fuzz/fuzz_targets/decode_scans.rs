//! Fuzz target: the `POST /v1/scans` body decoder (`api::decode_scans`) must never panic and
//! never return more than `api::MAX_SCANS` items, for JSON and NDJSON framing alike.
#![no_main]

use api::{decode_scans, ScanFormat, MAX_SCANS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [ScanFormat::Json, ScanFormat::Ndjson] {
        if let Ok(items) = decode_scans(data, format) {
            assert!(items.len() <= MAX_SCANS);
            if format == ScanFormat::Json {
                assert!(!items.is_empty() || data.iter().any(|&b| b == b'['));
            }
        }
    }
});
