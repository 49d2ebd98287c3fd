//! Recovery: torn and corrupt tails, a zeroed header, an empty preallocated segment, reopening
//! twice, and a checked-in damaged store under `tests/fixtures/`.
#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::*;

const T0: i64 = 1_800_000_000;
const SEGMENT: u64 = 256 << 10;

fn open(dir: &Path) -> Engine {
    let mut c = Config::new(dir);
    c.durability = Durability::Fsync;
    c.clock = Arc::new(ManualClock::new(T0));
    c.segment_bytes = SEGMENT;
    Engine::open(c).unwrap()
}

fn scan(p: &str, ts: i64) -> ScanItem {
    Ok(ScanInput {
        person: p.into(),
        venue: "V".into(),
        ts: Some(ts),
        action: Action::In,
    })
}

/// Writes `batches` batches of 10 scans each, then stops the engine.
fn build_store(dir: &Path, batches: usize) {
    let e = open(dir);
    e.register_venues(vec![VenueSpec {
        id: "V".into(),
        name: "Venue".into(),
        province: None,
        default_stay_s: None,
    }])
    .unwrap();
    for b in 0..batches {
        let batch = (0..10)
            .map(|i| scan(&format!("p{b}-{i}"), T0 - 1000 + b as i64))
            .collect();
        e.ingest(batch).unwrap();
    }
    e.shutdown().unwrap();
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn flipped_byte_in_last_record_drops_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    build_store(dir.path(), 5);
    let seg = newest_segment(dir.path());
    let summary = inspect_segment(&seg).unwrap();
    assert_eq!((summary.records, summary.scans), (5, 50));
    let last = summary.last_record.unwrap();
    poke(&seg, last + 20, &[0xAB]);

    let e = open(dir.path());
    let r = e.recovery_report();
    assert_eq!(r.dropped.len(), 1, "{r:?}");
    assert_eq!(r.dropped[0].offset, last);
    assert_eq!(e.stats().scans, 40);
    assert!(e.visits("p4-0", 0, i64::MAX).is_none());
    assert!(e.visits("p3-9", 0, i64::MAX).is_some());
    // Appending continues cleanly over the dropped tail, and survives another reopen.
    e.ingest(vec![scan("after", T0)]).unwrap();
    drop(e);
    let e = open(dir.path());
    assert!(e.recovery_report().dropped.is_empty());
    assert_eq!(e.stats().scans, 41);
}

#[test]
fn torn_tail_with_zeroed_second_half_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    build_store(dir.path(), 3);
    let seg = newest_segment(dir.path());
    let s = inspect_segment(&seg).unwrap();
    let last = s.last_record.unwrap();
    // The record's header made it to disk, the end of its payload did not.
    let half = (s.valid_end - last) / 2;
    poke(
        &seg,
        last + half,
        &vec![0u8; (s.valid_end - last - half) as usize],
    );
    let e = open(dir.path());
    assert_eq!(e.recovery_report().dropped.len(), 1);
    assert_eq!(e.stats().scans, 20);
}

#[test]
fn file_cut_mid_record_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    build_store(dir.path(), 3);
    let seg = newest_segment(dir.path());
    let s = inspect_segment(&seg).unwrap();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(s.last_record.unwrap() + 24).unwrap();
    drop(f);
    let e = open(dir.path());
    assert_eq!(e.recovery_report().dropped.len(), 1);
    assert_eq!(e.stats().scans, 20);
    // The shortened segment is full sooner; appends roll over to a new one.
    for i in 0..50 {
        e.ingest(vec![scan(&format!("n{i}"), T0)]).unwrap();
    }
    assert_eq!(e.stats().scans, 70);
}

#[test]
fn zeroed_header_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    build_store(dir.path(), 4);
    let seg = newest_segment(dir.path());
    poke(&seg, 0, &[0u8; 64]);
    let e = open(dir.path());
    assert_eq!(e.stats().scans, 40);
    assert_eq!(
        e.recovery_report().dropped.len(),
        1,
        "the rewrite is reported"
    );
    drop(e);
    let e = open(dir.path());
    assert!(e.recovery_report().dropped.is_empty());
    assert_eq!(e.stats().scans, 40);
}

#[test]
fn empty_preallocated_segment_and_reopening_twice() {
    let dir = tempfile::tempdir().unwrap();
    // A store that was created and never written to.
    drop(open(dir.path()));
    let seg = newest_segment(dir.path());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), SEGMENT);
    for _ in 0..2 {
        let e = open(dir.path());
        assert!(e.recovery_report().dropped.is_empty());
        assert_eq!(e.stats().scans, 0);
    }
    // A preallocated next segment whose header never reached the disk.
    std::fs::write(
        dir.path().join(format!("{:020}.seg", 2)),
        vec![0u8; SEGMENT as usize],
    )
    .unwrap();
    let e = open(dir.path());
    assert_eq!(e.stats().scans, 0);
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/damaged-tail")
}

/// The checked-in store: 8 batches of 10 scans, the last record with a flipped byte.
#[test]
fn checked_in_damaged_store_recovers() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), dir.path());
    let e = open(dir.path());
    let r = e.recovery_report();
    assert_eq!(r.dropped.len(), 1, "{r:?}");
    assert!(r.dropped[0].reason.contains("checksum"), "{r:?}");
    assert_eq!(e.stats().scans, 70);
    assert_eq!(e.stats().venues, 1);
    let visits = e.visits("p6-3", 0, i64::MAX).unwrap();
    assert_eq!(visits.len(), 1);
    assert_eq!(visits[0].start, T0 - 1000 + 6);
}

/// Regenerates the fixture: `cargo test -p checkin-engine --test recovery -- --ignored make_fixture`.
#[test]
#[ignore]
fn make_fixture() {
    let out = fixture_dir();
    let _ = std::fs::remove_dir_all(&out);
    let dir = tempfile::tempdir().unwrap();
    build_store(dir.path(), 8);
    let seg = newest_segment(dir.path());
    let last = inspect_segment(&seg).unwrap().last_record.unwrap();
    poke(&seg, last + 40, &[0x5A]);
    std::fs::create_dir_all(&out).unwrap();
    for name in ["venues.log", "audit.log"] {
        std::fs::copy(dir.path().join(name), out.join(name)).unwrap();
    }
    std::fs::copy(&seg, out.join(seg.file_name().unwrap())).unwrap();
}

/// A crash between creating the next segment file and writing its header leaves an empty file
/// after the full one. Recovery removes it and writes on: the segment before it is the newest
/// again, and new segments do not collide with existing file names.
#[test]
fn empty_next_segment_file_is_removed_and_writing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    build_store(dir.path(), 8);
    let newest = newest_segment(dir.path());
    let name = newest.file_stem().unwrap().to_str().unwrap().to_owned();
    let next_id: u64 = name.parse::<u64>().unwrap() + 1;
    let empty = dir
        .path()
        .join(format!("{:0width$}.seg", next_id, width = name.len()));
    std::fs::File::create(&empty).unwrap();

    let e = open(dir.path());
    assert!(!empty.exists(), "the empty segment file is removed");
    let report = e.recovery_report();
    assert!(
        report
            .dropped
            .iter()
            .any(|d| d.path == empty && d.bytes == 0),
        "{:?}",
        report.dropped
    );
    assert_eq!(e.stats().scans, 80);
    // Enough new scans to fill the segment and roll over more than once.
    for b in 0..400 {
        let batch = (0..10)
            .map(|i| scan(&format!("q{b}-{i}"), T0 - 500))
            .collect();
        e.ingest(batch).unwrap();
    }
    e.shutdown().unwrap();
    drop(e);

    let e = open(dir.path());
    assert_eq!(e.stats().scans, 80 + 4000);
    assert!(e.recovery_report().dropped.is_empty());
}
