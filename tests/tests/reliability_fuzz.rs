//! Stable-toolchain versions of the cargo-fuzz targets in `fuzz/` (which need nightly):
//! proptest feeds the log record decoder (`engine::decode_record_for_fuzzing`) and the scans
//! body decoder (`api::decode_scans`) random bytes and mutations of valid inputs, 2,000 cases
//! each by default (`PROPTEST_CASES` overrides). Neither may panic; valid inputs must decode
//! to what was encoded, and a mutated record must never decode to more scans than fit in it.
//!
//! The valid records are real ones: written by an engine in a temporary directory and cut out
//! of its segment. `cargo test -p checkin-tests --test reliability_fuzz -- --ignored
//! write_fuzz_seed_corpus` rewrites the checked-in seed corpus of `fuzz/corpus/` from them.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::OnceLock;

use api::{decode_scans, ScanFormat, MAX_SCANS};
use engine::{Action, Config, Durability, Engine, ScanInput, VenueSpec};
use proptest::prelude::*;

/// Records of a real segment, each `(bytes, scans)`.
fn real_records() -> &'static Vec<(Vec<u8>, usize)> {
    static RECORDS: OnceLock<Vec<(Vec<u8>, usize)>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        config.durability = Durability::Os;
        config.segment_bytes = 1 << 20;
        let engine = Engine::open(config).unwrap();
        engine
            .register_venues(
                (0..3)
                    .map(|i| VenueSpec {
                        id: format!("V{i}"),
                        name: format!("venue {i}"),
                        province: None,
                        default_stay_s: None,
                    })
                    .collect(),
            )
            .unwrap();
        let now = engine.now();
        let mut sizes = Vec::new();
        for (r, n) in [1usize, 2, 5, 17, 64, 3, 1, 40].into_iter().enumerate() {
            let batch = (0..n)
                .map(|k| {
                    Ok(ScanInput {
                        // Persons repeat across records: some records add dictionary entries,
                        // some only refer to earlier ones.
                        person: format!("p{}", (r * 7 + k) % 50),
                        venue: format!("V{}", k % 3),
                        ts: Some(now - 1000 + (r * 100 + k) as i64),
                        action: if k % 4 == 3 { Action::Out } else { Action::In },
                    })
                })
                .collect();
            let out = engine.ingest(batch).unwrap();
            sizes.push(out.accepted() as usize);
        }
        engine.shutdown().unwrap();
        drop(engine);
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .unwrap();
        let bytes = std::fs::read(&seg).unwrap();
        let summary = engine::inspect_segment(&seg).unwrap();
        assert_eq!(summary.records as usize, sizes.len());
        // Walk the records: 16-byte header (len, crc, base_seq), payload, pad to 16.
        let mut out = Vec::new();
        let mut off = 64usize;
        for n in sizes {
            let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            let size = (16 + len).div_ceil(16) * 16;
            out.push((bytes[off..off + size].to_vec(), n));
            off += size;
        }
        assert_eq!(off as u64, summary.valid_end);
        out
    })
}

/// Valid scan bodies: `(bytes, format, scans)`.
fn valid_bodies() -> Vec<(Vec<u8>, ScanFormat, usize)> {
    vec![
        (br#"{"person":"p1","venue":"V1","ts":1700000000}"#.to_vec(), ScanFormat::Json, 1),
        (
            br#"[{"person":"p1","venue":"V1"},{"person":"p2","venue":"V2","action":"out","ts":5}]"#
                .to_vec(),
            ScanFormat::Json,
            2,
        ),
        (
            b"{\"person\":\"a\",\"venue\":\"V\"}\n\n{\"person\":\"b\",\"venue\":\"V\",\"ts\":1}\n"
                .to_vec(),
            ScanFormat::Ndjson,
            2,
        ),
        (
            br#"[{"person":7,"venue":"V1","ts":"x","extra":{"a":[1,2,{"b":null}]}},{"person":"q","venue":"V","ts":1.5,"action":"in"}]"#
                .to_vec(),
            ScanFormat::Json,
            2,
        ),
        (
            br#"{"venue":"V\u0031","person":"p\"q","action":"out"}"#.to_vec(),
            ScanFormat::Json,
            1,
        ),
        (b"[]".to_vec(), ScanFormat::Json, 0),
    ]
}

/// A mutation: overwrite, insert, delete or truncate at seeded positions.
fn mutate(mut bytes: Vec<u8>, ops: &[(u8, usize, u8)]) -> Vec<u8> {
    for &(op, pos, val) in ops {
        let len = bytes.len();
        match op % 5 {
            0 if len > 0 => bytes[pos % len] = val,
            1 if len > 0 => bytes[pos % len] ^= 1 << (val % 8),
            2 => bytes.insert(pos % (len + 1), val),
            3 if len > 0 => {
                bytes.remove(pos % len);
            }
            4 => bytes.truncate(pos % (len + 1)),
            _ => {}
        }
    }
    bytes
}

fn check_record(bytes: &[u8]) {
    if let Some(scans) = engine::decode_record_for_fuzzing(bytes) {
        assert!(
            scans == 0 || 16 + 16 * scans <= bytes.len(),
            "{scans} scans decoded from {} bytes",
            bytes.len()
        );
    }
}

fn check_scans(bytes: &[u8]) {
    for format in [ScanFormat::Json, ScanFormat::Ndjson] {
        if let Ok(items) = decode_scans(bytes, format) {
            assert!(items.len() <= MAX_SCANS);
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000)
}

#[test]
fn valid_inputs_decode_to_what_was_encoded() {
    for (bytes, n) in real_records() {
        assert_eq!(engine::decode_record_for_fuzzing(bytes), Some(*n));
    }
    for (bytes, format, n) in valid_bodies() {
        let items = decode_scans(&bytes, format).unwrap();
        assert_eq!(items.len(), n, "{}", String::from_utf8_lossy(&bytes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn record_decoder_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_record(&bytes);
    }

    #[test]
    fn record_decoder_survives_mutated_records(
        which in 0usize..64,
        ops in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6),
    ) {
        let records = real_records();
        let (orig, n) = &records[which % records.len()];
        let bytes = mutate(orig.clone(), &ops);
        check_record(&bytes);
        if bytes == *orig {
            prop_assert_eq!(engine::decode_record_for_fuzzing(&bytes), Some(*n));
        }
    }

    #[test]
    fn record_decoder_survives_records_with_a_valid_crc_over_mutated_payloads(
        which in 0usize..64,
        ops in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..4),
    ) {
        // Mutate the payload and fix up len and CRC, so the archive validation (bytecheck)
        // and the semantic checks are what is exercised, not just the checksum.
        let records = real_records();
        let (orig, _) = &records[which % records.len()];
        let len = u32::from_le_bytes(orig[0..4].try_into().unwrap()) as usize;
        let payload = mutate(orig[16..16 + len].to_vec(), &ops);
        let mut rec = Vec::with_capacity(16 + payload.len() + 16);
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let mut crc_input = (payload.len() as u32).to_le_bytes().to_vec();
        crc_input.extend_from_slice(&orig[8..16]);
        crc_input.extend_from_slice(&payload);
        rec.extend_from_slice(&crc32c(&crc_input).to_le_bytes());
        rec.extend_from_slice(&orig[8..16]);
        rec.extend_from_slice(&payload);
        rec.resize(rec.len().div_ceil(16) * 16, 0);
        check_record(&rec);
    }

    #[test]
    fn scans_decoder_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        check_scans(&bytes);
    }

    #[test]
    fn scans_decoder_survives_mutated_bodies(
        which in 0usize..64,
        ops in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..8),
    ) {
        let bodies = valid_bodies();
        let (orig, _, _) = &bodies[which % bodies.len()];
        check_scans(&mutate(orig.clone(), &ops));
    }

    #[test]
    fn scans_decoder_survives_json_shaped_noise(
        body in "[\\[\\]{}\",:0-9a-z \\\\\n.eE+-]{0,300}",
    ) {
        check_scans(body.as_bytes());
    }
}

/// CRC-32C (Castagnoli), bitwise: the record checksum of docs/log-format.md.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn crc_fixup_reproduces_the_engine_checksum() {
    // A record re-encoded with our CRC over its own payload must still decode.
    for (orig, n) in real_records() {
        let len = u32::from_le_bytes(orig[0..4].try_into().unwrap()) as usize;
        let mut input = orig[0..4].to_vec();
        input.extend_from_slice(&orig[8..16]);
        input.extend_from_slice(&orig[16..16 + len]);
        assert_eq!(
            crc32c(&input),
            u32::from_le_bytes(orig[4..8].try_into().unwrap())
        );
        assert_eq!(engine::decode_record_for_fuzzing(orig), Some(*n));
    }
}

#[test]
#[ignore = "writes the seed corpus of fuzz/; run by hand"]
fn write_fuzz_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let rec_dir = root.join("decode_record");
    let scans_dir = root.join("decode_scans");
    std::fs::create_dir_all(&rec_dir).unwrap();
    std::fs::create_dir_all(&scans_dir).unwrap();
    for (i, (bytes, _)) in real_records().iter().enumerate() {
        std::fs::write(rec_dir.join(format!("record-{i}")), bytes).unwrap();
    }
    for (i, (bytes, _, _)) in valid_bodies().iter().enumerate() {
        std::fs::write(scans_dir.join(format!("body-{i}")), bytes).unwrap();
    }
}
