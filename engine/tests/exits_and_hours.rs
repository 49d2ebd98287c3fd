//! Inferred exits at watched venues (a visit that reached its deadline, a check-in elsewhere; an
//! "out" scan is not inferred; unwatched venues cost nothing and tell nothing) and the in-scans
//! per hour query.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::*;

const T0: i64 = 1_800_000_000;

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    let mut c = Config::new(dir);
    c.durability = Durability::Os;
    c.clock = clock.clone();
    c.segment_bytes = 1 << 20;
    Engine::open(c).expect("open")
}

fn venue(id: &str, stay: Option<u32>) -> VenueSpec {
    VenueSpec {
        id: id.into(),
        name: format!("Venue {id}"),
        province: None,
        default_stay_s: stay,
    }
}

fn scan(p: &str, v: &str, ts: i64, action: Action) -> ScanItem {
    Ok(ScanInput {
        person: p.into(),
        venue: v.into(),
        ts: Some(ts),
        action,
    })
}

type Seen = Arc<Mutex<Vec<(String, String, i64, &'static str)>>>;

fn listen(e: &Engine) -> Seen {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    e.on_exit(Box::new(move |exits| {
        let mut s = sink.lock().unwrap();
        s.extend(exits.iter().map(|x| {
            (
                x.person.to_string(),
                x.venue.to_string(),
                x.ts,
                x.reason.as_str(),
            )
        }));
    }));
    seen
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn a_check_in_elsewhere_ends_the_visit_at_a_watched_venue() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), &clock);
    e.register_venues(vec![venue("A", None), venue("B", None)])
        .unwrap();
    let seen = listen(&e);
    let _watch = e.watch_venue("A").unwrap();
    e.ingest(vec![scan("p1", "A", T0 - 600, Action::In)])
        .unwrap();
    e.ingest(vec![scan("p2", "A", T0 - 600, Action::In)])
        .unwrap();
    e.ingest(vec![scan("p1", "B", T0 - 60, Action::In)])
        .unwrap();
    // An "out" scan is a scanned exit, carried by the scan feed, not inferred.
    e.ingest(vec![scan("p2", "A", T0 - 30, Action::Out)])
        .unwrap();
    assert!(wait_for(|| !seen.lock().unwrap().is_empty()));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("p1".into(), "A".into(), T0 - 60, "elsewhere")]
    );
    assert_eq!(e.occupancy("A"), Some(0));
    assert_eq!(e.occupancy("B"), Some(1));
}

#[test]
fn a_deadline_ends_the_visit_within_a_second_and_unwatched_venues_tell_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), &clock);
    e.register_venues(vec![venue("A", Some(100)), venue("B", Some(100))])
        .unwrap();
    let seen = listen(&e);
    let watch = e.watch_venue("A").unwrap();
    e.ingest(vec![
        scan("p1", "A", T0 - 50, Action::In),
        scan("p2", "B", T0 - 50, Action::In),
    ])
    .unwrap();
    assert_eq!(e.occupancy("A"), Some(1));
    clock.advance(60);
    let until = Instant::now() + Duration::from_secs(1);
    assert!(wait_for(|| !seen.lock().unwrap().is_empty()));
    assert!(Instant::now() <= until + Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("p1".into(), "A".into(), T0 + 50, "deadline")],
        "B is not watched: its deadline tells nothing"
    );
    assert_eq!(e.occupancy("B"), Some(0));
    // After the watch ends, nothing more is collected.
    drop(watch);
    e.ingest(vec![scan("p3", "A", T0 + 60, Action::In)])
        .unwrap();
    e.ingest(vec![scan("p3", "B", T0 + 61, Action::In)])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn in_scans_are_counted_per_hour() {
    let dir = tempfile::tempdir().unwrap();
    // Start 30 minutes into an hour.
    let now = (T0 / 3600) * 3600 + 1800;
    let clock = Arc::new(ManualClock::new(now));
    let e = open(dir.path(), &clock);
    e.register_venues(vec![venue("A", None), venue("B", None)])
        .unwrap();
    e.ingest(vec![
        scan("p1", "A", now - 10, Action::In),
        scan("p2", "B", now - 20, Action::In),
        scan("p2", "B", now - 15, Action::Out),
        scan("p3", "A", now - 3600, Action::In),
        scan("p4", "A", now - 3 * 3600, Action::In),
        scan("p5", "A", now - 30 * 3600, Action::In),
        scan("p6", "A", now + 100, Action::In),
    ])
    .unwrap();
    // An exact duplicate counts once.
    e.ingest(vec![scan("p1", "A", now - 10, Action::In)])
        .unwrap();
    let counts = e.checkins_per_hour(23);
    assert_eq!(counts.len(), 24);
    assert_eq!(counts[23], 2, "the current hour up to now");
    assert_eq!(counts[22], 1);
    assert_eq!(counts[20], 1);
    assert_eq!(
        counts.iter().sum::<u64>(),
        4,
        "older and future scans are left out"
    );
    // The counts are kept as scans are stored; reopening counts them again from the log.
    drop(e);
    let e = open(dir.path(), &clock);
    assert_eq!(e.checkins_per_hour(23), counts, "the same after recovery");
    // The future scan counts once the clock reaches it.
    clock.set(now + 100);
    assert_eq!(e.checkins_per_hour(23)[23], 3);
}
