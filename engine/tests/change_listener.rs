//! The change listener: every stored scan once (duplicates not), after it is queryable; purges
//! and venue registrations as notices of their own.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use engine::*;

const T0: i64 = 1_800_000_000;

fn scan(p: &str, v: &str, ts: i64, action: Action) -> ScanItem {
    Ok(ScanInput {
        person: p.into(),
        venue: v.into(),
        ts: Some(ts),
        action,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Scan(AppliedScan),
    Purged(i64),
    Venues,
}

#[test]
fn every_stored_scan_is_reported_once_with_purges_and_venue_changes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut c = Config::new(dir.path());
    c.durability = Durability::Os;
    c.clock = clock.clone();
    c.retention_days = 1;
    c.segment_bytes = 1 << 20;
    let e = Engine::open(c).unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = seen.clone();
    let probe = e.clone();
    e.on_change(Box::new(move |change| {
        let mut s = sink.lock().unwrap();
        match change {
            StoreChange::Scans(scans) => {
                for sc in scans {
                    s.push(Seen::Scan(*sc));
                }
            }
            StoreChange::Purged { cutoff } => s.push(Seen::Purged(cutoff)),
            StoreChange::VenuesChanged => s.push(Seen::Venues),
        }
        // The scans are already in the indexes when the notice runs.
        if let StoreChange::Scans(scans) = change {
            assert!(probe.stats().scans >= scans.len() as u64);
        }
    }));
    e.register_venues(vec![VenueSpec {
        id: "A".into(),
        name: "A".into(),
        province: None,
        default_stay_s: Some(600),
    }])
    .unwrap();
    assert_eq!(e.max_stay_s(), 7200, "the default stay still bounds visits");
    e.ingest(vec![
        scan("p1", "A", T0 - 100, Action::In),
        scan("p1", "A", T0 - 100, Action::In),
        scan("p2", "A", T0 - 50, Action::Out),
        scan("p2", "nowhere", T0, Action::In),
    ])
    .unwrap();
    e.ingest(vec![scan("p1", "A", T0 - 100, Action::In)])
        .unwrap();
    let p1 = e.person_key("p1").unwrap();
    let p2 = e.person_key("p2").unwrap();
    let a = e.venue_key("A").unwrap();
    assert!(e.person_key("p3").is_none());
    assert!(e.venue_key("nowhere").is_none());
    let got = seen.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            Seen::Venues,
            Seen::Scan(AppliedScan {
                person: p1,
                venue: a,
                ts: T0 - 100,
                out: false
            }),
            Seen::Scan(AppliedScan {
                person: p2,
                venue: a,
                ts: T0 - 50,
                out: true
            }),
        ]
    );
    clock.set(T0 + 2 * 86_400);
    e.purge_expired().unwrap();
    assert_eq!(
        seen.lock().unwrap().last(),
        Some(&Seen::Purged(T0 + 2 * 86_400 - 86_400))
    );
    // A pass that removes nothing says nothing.
    let n = seen.lock().unwrap().len();
    e.purge_expired().unwrap();
    assert_eq!(seen.lock().unwrap().len(), n);
}
