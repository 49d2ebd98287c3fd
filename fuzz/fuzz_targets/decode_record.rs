//! Fuzz target: the scan-log record decoder must never panic, whatever bytes a damaged or
//! hostile segment holds (`engine::decode_record_for_fuzzing`: CRC, rkyv bytecheck, bounds).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(scans) = engine::decode_record_for_fuzzing(data) {
        // A record of n scans needs at least 16 bytes of header and 16 bytes per scan.
        assert!(16 + 16 * scans <= data.len() || scans == 0);
    }
});
