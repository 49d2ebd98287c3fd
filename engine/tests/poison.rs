//! A failed sync poisons the log: the failed batch and everything after it are refused, health
//! reports it, and what was acknowledged before is intact after a reopen.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engine::*;

const T0: i64 = 1_800_000_000;

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::new(dir);
    c.durability = Durability::Fsync;
    c.clock = Arc::new(ManualClock::new(T0));
    c.segment_bytes = 1 << 20;
    c
}

fn batch(prefix: &str) -> Vec<ScanItem> {
    (0..10)
        .map(|i| {
            Ok(ScanInput {
                person: format!("{prefix}{i}"),
                venue: "V".into(),
                ts: Some(T0 - 100 + i),
                action: Action::In,
            })
        })
        .collect()
}

#[test]
fn failed_sync_poisons_and_acknowledged_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let mut c = config(dir.path());
    let flag = fail.clone();
    c.sync_fault = Some(Arc::new(move || {
        if flag.load(Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(libc_eio()))
        } else {
            Ok(())
        }
    }));
    let e = Engine::open(c).unwrap();
    e.register_venues(vec![VenueSpec {
        id: "V".into(),
        name: "Venue".into(),
        province: None,
        default_stay_s: None,
    }])
    .unwrap();
    assert_eq!(e.ingest(batch("ok")).unwrap().accepted(), 10);
    assert!(e.health().is_ok());

    fail.store(true, Ordering::SeqCst);
    assert!(matches!(e.ingest(batch("lost")), Err(Error::Poisoned(_))));
    assert!(matches!(e.health(), Err(Error::Poisoned(_))));

    // Poisoning is sticky: the disk "recovering" does not make the engine acknowledge again.
    fail.store(false, Ordering::SeqCst);
    assert!(matches!(e.ingest(batch("after")), Err(Error::Poisoned(_))));
    assert!(matches!(e.flush(), Err(Error::Poisoned(_))));
    assert!(e.shutdown().is_err());
    drop(e);

    let e = Engine::open(config(dir.path())).unwrap();
    assert!(e.health().is_ok());
    for i in 0..10 {
        assert!(
            e.visits(&format!("ok{i}"), 0, i64::MAX).is_some(),
            "acknowledged scan lost"
        );
        assert!(
            e.visits(&format!("after{i}"), 0, i64::MAX).is_none(),
            "refused scan stored"
        );
    }
    // The failed batch was never acknowledged; whether it reached the disk is not promised.
    let stored = e.stats().scans;
    assert!((10..=20).contains(&stored), "{stored}");
}

/// EIO, without a libc dependency in the tests.
fn libc_eio() -> i32 {
    5
}
