//! `Engine::scans_after`: stored scans newer than a time, duplicates once, whatever the order.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use engine::*;

const T0: i64 = 1_800_000_000;

#[test]
fn counts_stored_scans_after_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut c = Config::new(dir.path());
    c.durability = Durability::Os;
    c.clock = clock.clone();
    let e = Engine::open(c).unwrap();
    e.register_venues(vec![VenueSpec {
        id: "A".into(),
        name: "A".into(),
        province: None,
        default_stay_s: None,
    }])
    .unwrap();
    let scan = |p: &str, ts: i64, action: Action| -> ScanItem {
        Ok(ScanInput {
            person: p.into(),
            venue: "A".into(),
            ts: Some(ts),
            action,
        })
    };
    e.ingest(vec![
        scan("p1", T0 - 100, Action::In),
        scan("p1", T0 - 10, Action::Out),
        scan("p2", T0 - 50, Action::In),
        scan("p2", T0 - 50, Action::In),
        scan("p3", T0 - 200, Action::In),
    ])
    .unwrap();
    assert_eq!(e.scans_after(T0 - 1000), 4);
    assert_eq!(e.scans_after(T0 - 100), 2, "ts > after, not >=");
    assert_eq!(e.scans_after(T0 - 51), 2);
    assert_eq!(e.scans_after(T0 - 50), 1);
    assert_eq!(e.scans_after(T0), 0);
    assert_eq!(e.scans_after(-1), 4);
}
