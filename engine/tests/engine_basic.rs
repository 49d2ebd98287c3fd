//! End-to-end checks of the engine through its public API: ingestion rules, visits, occupancy,
//! trace, duplicates, retention, segment rollover and the directory lock.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
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
        province: Some("Soc Trang".into()),
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
fn rejects_with_the_contract_reasons_and_stores_nothing_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), &clock);
    e.register_venues(vec![venue("A", None)]).unwrap();
    let out = e
        .ingest(vec![
            scan("p1", "A", T0, Action::In),
            scan("bad person", "A", T0, Action::In),
            scan("p1", "B", T0, Action::In),
            scan("p1", "a/b", T0, Action::In),
            scan("p1", "A", T0 - 22 * 86_400, Action::In),
            scan("p1", "A", T0 + 301, Action::In),
            Err(RejectReason::InvalidTs),
            scan("p2", "A", T0 + 300, Action::Out),
        ])
        .unwrap();
    assert_eq!(out.accepted_in, 1);
    assert_eq!(out.accepted_out, 1);
    let reasons: Vec<(usize, &str)> = out
        .rejected
        .iter()
        .map(|r| (r.index, r.reason.code()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (1, "invalid_person"),
            (2, "unknown_venue"),
            (3, "invalid_venue"),
            (4, "too_old"),
            (5, "in_future"),
            (6, "invalid_ts"),
        ]
    );
    assert_eq!(e.stats().scans, 2);
}

#[test]
fn visits_occupancy_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), &clock);
    e.register_venues(vec![venue("A", Some(600)), venue("B", None)])
        .unwrap();
    // Out of order on purpose: the out first, then the in.
    e.ingest(vec![scan("p1", "A", T0 - 100, Action::Out)])
        .unwrap();
    e.ingest(vec![
        scan("p1", "A", T0 - 500, Action::In),
        scan("p2", "A", T0 - 10, Action::In),
    ])
    .unwrap();
    let v = e.visits("p1", 0, i64::MAX).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(
        (&*v[0].venue, v[0].start, v[0].end),
        ("A", T0 - 500, T0 - 100)
    );
    assert_eq!(e.occupancy("A"), Some(1), "p1 left, p2 is inside");
    assert_eq!(e.occupancy("B"), Some(0));
    assert_eq!(e.occupancy("nope"), None);
    assert_eq!(e.visits("nobody", 0, i64::MAX), None);

    // A retry changes nothing and is acknowledged.
    let again = e
        .ingest(vec![scan("p2", "A", T0 - 10, Action::In)])
        .unwrap();
    assert_eq!((again.accepted_in, again.duplicates), (1, 1));
    assert_eq!(e.stats().scans, 3);
    assert_eq!(e.occupancy("A"), Some(1));

    // Auto check-out at the deadline (T0 - 10 + 600), seen within a second.
    clock.set(T0 + 590);
    assert!(wait_for(|| e.occupancy("A") == Some(1)));
    clock.set(T0 + 591);
    assert!(
        wait_for(|| e.occupancy("A") == Some(0)),
        "auto check-out not reflected"
    );
    assert_eq!(e.stats().present, 0);
    let top = e.top_occupancy(5);
    assert_eq!(top.len(), 2);
}

#[test]
fn future_scans_count_once_their_time_comes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), &clock);
    e.register_venues(vec![venue("A", None)]).unwrap();
    e.ingest(vec![scan("p1", "A", T0 + 200, Action::In)])
        .unwrap();
    assert_eq!(e.occupancy("A"), Some(0));
    clock.set(T0 + 200);
    assert!(wait_for(|| e.occupancy("A") == Some(1)));
}

#[test]
fn trace_finds_f1_and_f2() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), &clock);
    e.register_venues(vec![venue("A", Some(3600)), venue("B", Some(3600))])
        .unwrap();
    let h = 3600;
    e.ingest(vec![
        // Case at A for an hour; q at A overlapping 30 min; r meets q later at B.
        scan("case", "A", T0 - 10 * h, Action::In),
        scan("case", "A", T0 - 9 * h, Action::Out),
        scan("q", "A", T0 - 10 * h + 1800, Action::In),
        scan("q", "A", T0 - 9 * h + 1800, Action::Out),
        scan("q", "B", T0 - 5 * h, Action::In),
        scan("r", "B", T0 - 5 * h + 600, Action::In),
        scan("brief", "A", T0 - 10 * h, Action::In),
        scan("brief", "A", T0 - 10 * h + 60, Action::Out),
    ])
    .unwrap();
    let req = TraceRequest::new("case".into(), None, None, None, None, None, None, T0).unwrap();
    let t = e.trace(&req).unwrap();
    assert_eq!(t.visits.len(), 1);
    assert_eq!(t.f1.len(), 1, "brief contact is under 900 s");
    assert_eq!(&*t.f1[0].person, "q");
    assert_eq!(t.f1[0].exposure_s, 1800);
    assert_eq!(t.f1[0].first_contact, T0 - 10 * h + 1800);
    assert_eq!(t.f2.len(), 1);
    assert_eq!((&*t.f2[0].person, &*t.f2[0].via), ("r", "q"));
    assert_eq!(t.f2[0].exposure_s, 3000);
    let d1 =
        TraceRequest::new("case".into(), None, None, Some(0), Some(1), None, None, T0).unwrap();
    let t1 = e.trace(&d1).unwrap();
    assert_eq!(t1.f1.len(), 2, "min_overlap 0 means 1 s");
    assert!(t1.f2.is_empty());
    assert!(e
        .trace(&TraceRequest::new("ghost".into(), None, None, None, None, None, None, T0).unwrap())
        .is_none());
}

#[test]
fn reopen_recovers_everything_and_lock_refuses_a_second_engine() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    {
        let e = open(dir.path(), &clock);
        e.register_venues(vec![venue("A", None), venue("B", Some(60))])
            .unwrap();
        let mut batch = Vec::new();
        for i in 0..5_000 {
            batch.push(scan(
                &format!("p{}", i % 700),
                if i % 3 == 0 { "A" } else { "B" },
                T0 - 5_000 + i,
                Action::In,
            ));
        }
        // Small segments force rollovers.
        for chunk in batch.chunks(500) {
            e.ingest(chunk.to_vec()).unwrap();
        }
        assert!(matches!(
            Engine::open(Config::new(dir.path())),
            Err(Error::Locked(_))
        ));
        e.audit_append(AuditEntry {
            ts: T0,
            who: "open".into(),
            action: "/v1/trace".into(),
            subject: "p1".into(),
        })
        .unwrap();
        e.shutdown().unwrap();
    }
    let before;
    {
        let e = open(dir.path(), &clock);
        assert!(
            e.recovery_report().dropped.is_empty(),
            "{:?}",
            e.recovery_report()
        );
        before = (e.stats(), e.visits("p5", 0, i64::MAX), e.occupancy("A"));
        assert_eq!(before.0.scans, 5_000);
        assert_eq!(before.0.venues, 2);
        assert_eq!(before.0.persons, 700);
        assert_eq!(e.audit_since(0).unwrap().len(), 1);
        // Appends continue after recovery, with fresh sequence numbers.
        e.ingest(vec![scan("late", "A", T0, Action::In)]).unwrap();
        let ev = e.recent_events("A", 1);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].seq, 5_001);
    }
    let e = open(dir.path(), &clock);
    assert_eq!(e.stats().scans, 5_001);
    assert_eq!(e.visits("p5", 0, i64::MAX), before.1);
}

#[test]
fn retention_removes_old_segments_and_rejects_old_scans() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), &clock);
    e.register_venues(vec![venue("A", None)]).unwrap();
    let mut n = 0;
    while e.stats().log_bytes < 3 << 20 {
        let batch: Vec<ScanItem> = (0..2000)
            .map(|i| scan(&format!("p{n}-{i}"), "A", T0 - 86_400, Action::In))
            .collect();
        e.ingest(batch).unwrap();
        n += 1;
    }
    let scans = e.stats().scans;
    clock.set(T0 + 21 * 86_400);
    let r = e.purge_expired().unwrap();
    assert!(r.segments_removed >= 2, "{r:?}");
    assert_eq!(r.scans_pruned, scans);
    assert_eq!(e.stats().scans, 0);
    assert_eq!(e.stats().persons, 0);
    let out = e.ingest(vec![scan("x", "A", T0 - 1, Action::In)]).unwrap();
    assert_eq!(out.rejected[0].reason, RejectReason::TooOld);
}

#[test]
fn live_events_flow_only_for_watched_venues() {
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), &clock);
    e.register_venues(vec![venue("A", None), venue("B", None)])
        .unwrap();
    let seen: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let sink = seen.clone();
    e.subscribe(Box::new(move |events| {
        let mut s = sink.lock().unwrap();
        s.extend(events.iter().map(|ev| (ev.venue.to_string(), ev.seq)));
    }));
    e.ingest(vec![scan("p1", "A", T0, Action::In)]).unwrap();
    assert!(seen.lock().unwrap().is_empty(), "nobody watches A yet");
    assert!(e.watch_venue("nope").is_none());
    let watch = e.watch_venue("A").unwrap();
    e.ingest(vec![
        scan("p2", "A", T0, Action::In),
        scan("p3", "B", T0, Action::In),
    ])
    .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![("A".to_string(), 2)]);
    drop(watch);
    e.ingest(vec![scan("p4", "A", T0, Action::In)]).unwrap();
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "no events after the watch ends"
    );
    // The replay window keeps every venue's events regardless.
    assert_eq!(e.recent_events("A", 10).len(), 3);
}

/// Audit entries submitted from many threads at once are all stored, each thread's in its own
/// order, every `done` is called once durable; after shutdown new entries are refused.
#[test]
fn concurrent_audit_entries_are_all_stored_in_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), &clock);
    let entry = |t: usize, i: usize| AuditEntry {
        ts: T0,
        who: format!("t{t}"),
        action: "/v1/trace".into(),
        subject: format!("{i:04}"),
    };
    let confirmed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::scope(|s| {
        for t in 0..8 {
            let e = e.clone();
            let confirmed = confirmed.clone();
            s.spawn(move || {
                let (tx, rx) = std::sync::mpsc::channel();
                for i in 0..200 {
                    let tx = tx.clone();
                    let confirmed = confirmed.clone();
                    e.audit_submit(entry(t, i), move |r| {
                        r.unwrap();
                        confirmed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tx.send(()).unwrap();
                    });
                }
                for _ in 0..200 {
                    rx.recv_timeout(Duration::from_secs(30)).unwrap();
                }
            });
        }
    });
    assert_eq!(confirmed.load(std::sync::atomic::Ordering::SeqCst), 1600);
    let stored = e.audit_since(0).unwrap();
    assert_eq!(stored.len(), 1600);
    for t in 0..8 {
        let mine: Vec<String> = stored
            .iter()
            .filter(|x| x.who == format!("t{t}"))
            .map(|x| x.subject.clone())
            .collect();
        let expected: Vec<String> = (0..200).map(|i| format!("{i:04}")).collect();
        assert_eq!(mine, expected, "thread {t}'s entries in submission order");
    }
    e.shutdown().unwrap();
    assert!(matches!(
        e.audit_append(entry(9, 0)),
        Err(Error::ShuttingDown)
    ));
    drop(e);
    // Everything confirmed is there after a reopen.
    let e = open(dir.path(), &clock);
    assert_eq!(e.audit_since(0).unwrap().len(), 1600);
}

/// With a forward set (cluster mode), entries go to the forward and not to `audit.log`, except
/// those submitted with `audit_submit_local`, which go to `audit.log` and not to the forward.
#[test]
fn a_forward_takes_every_entry_but_the_local_ones() {
    struct Collect(parking_lot::Mutex<Vec<AuditEntry>>);
    impl AuditForward for Collect {
        fn submit(&self, entry: AuditEntry, done: AuditDone) {
            self.0.lock().push(entry);
            done(Ok(()));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), &clock);
    let entry = |subject: &str| AuditEntry {
        ts: T0,
        who: "open".into(),
        action: "/v1/cases".into(),
        subject: subject.into(),
    };
    e.audit_append(entry("before")).unwrap();
    let forward = Arc::new(Collect(parking_lot::Mutex::new(Vec::new())));
    assert!(e.forward_audit(forward.clone()));
    e.audit_append(entry("forwarded")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    e.audit_submit_local(entry("local"), move |r| tx.send(r).unwrap());
    rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    let local: Vec<String> = e
        .audit_since(0)
        .unwrap()
        .into_iter()
        .map(|x| x.subject)
        .collect();
    assert_eq!(local, ["before", "local"]);
    let forwarded: Vec<String> = forward.0.lock().iter().map(|x| x.subject.clone()).collect();
    assert_eq!(forwarded, ["forwarded"]);
}

fn segment_ids(dir: &std::path::Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".seg").map(|s| s.parse().unwrap())
        })
        .collect();
    ids.sort_unstable();
    ids
}

fn open_small(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    let mut c = Config::new(dir);
    c.durability = Durability::Os;
    c.clock = clock.clone();
    c.segment_bytes = 64 << 10;
    Engine::open(c).expect("open")
}

/// A cluster replica's checkpoint: `sync_to_disk` names a durable point, and `cut_back` returns
/// the closed store to it exactly, whatever was written after it (venues, scans over several
/// segments, audit entries).
#[test]
fn cut_back_returns_the_store_to_the_point_sync_to_disk_named() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let entry = |who: &str| AuditEntry {
        ts: T0,
        who: who.into(),
        action: "/v1/cases".into(),
        subject: "c-1".into(),
    };
    let before_scans: Vec<ScanItem> = (0..2_000)
        .map(|i| scan(&format!("p{}", i % 300), "A", T0 - 4_000 + i, Action::In))
        .collect();
    let after_scans: Vec<ScanItem> = (0..40_000)
        .map(|i| scan(&format!("q{i}"), "B", T0 - 50_000 + i, Action::In))
        .collect();
    let (ends, at_checkpoint) = {
        let e = open_small(dir.path(), &clock);
        e.register_venues(vec![venue("A", None)]).unwrap();
        for chunk in before_scans.chunks(500) {
            e.ingest(chunk.to_vec()).unwrap();
        }
        e.audit_append(entry("before")).unwrap();
        let ends = e.sync_to_disk().unwrap();
        assert_eq!(
            e.sync_to_disk().unwrap(),
            ends,
            "nothing was written between"
        );
        let at_checkpoint = (e.stats(), e.visits("p7", 0, i64::MAX));
        // After the checkpoint: a venue, scans over more segments, an audit entry.
        e.register_venues(vec![venue("B", Some(60))]).unwrap();
        for chunk in after_scans.chunks(1_000) {
            e.ingest(chunk.to_vec()).unwrap();
        }
        e.audit_append(entry("after")).unwrap();
        assert!(segment_ids(dir.path()).last().unwrap() > &ends.segment);
        e.shutdown().unwrap();
        (ends, at_checkpoint)
    };
    cut_back(dir.path(), &ends).unwrap();
    assert_eq!(segment_ids(dir.path()).last(), Some(&ends.segment));
    {
        let e = open_small(dir.path(), &clock);
        assert!(
            e.recovery_report().dropped.is_empty(),
            "{:?}",
            e.recovery_report()
        );
        assert_eq!(e.stats().scans, at_checkpoint.0.scans);
        assert_eq!(e.stats().venues, 1);
        assert_eq!(e.stats().persons, at_checkpoint.0.persons);
        assert_eq!(e.visits("p7", 0, i64::MAX), at_checkpoint.1);
        assert_eq!(e.visits("q1", 0, i64::MAX), None);
        let audit = e.audit_since(0).unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].who, "before");
        // What came after is applied again, once, as a replica replaying the stream does.
        e.register_venues(vec![venue("B", Some(60))]).unwrap();
        for chunk in after_scans.chunks(1_000) {
            e.ingest(chunk.to_vec()).unwrap();
        }
        assert_eq!(e.stats().scans, 42_000);
        e.shutdown().unwrap();
    }
    // A store holding less than the ends say is refused, not cut.
    let mut beyond = ends;
    beyond.audit_log += 1 << 30;
    assert!(cut_back(dir.path(), &beyond).is_err());
    let e = open_small(dir.path(), &clock);
    assert_eq!(e.stats().scans, 42_000);
    assert_eq!(e.visits("q1", 0, i64::MAX).map(|v| v.len()), Some(1));
}

/// `unshare` gives a hard-linked file a copy of its own: the other name keeps its bytes while
/// this one is cut (a store seeded by linking a snapshot's files cuts below what the snapshot
/// holds); a file with one link is left as it is.
#[test]
fn unshare_gives_a_linked_file_a_copy_of_its_own() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (
        dir.path().join("audit.log"),
        dir.path().join("snapshot-audit.log"),
    );
    std::fs::write(&ours, b"0123456789").unwrap();
    std::fs::hard_link(&ours, &theirs).unwrap();
    unshare(&ours).unwrap();
    assert_eq!(std::fs::metadata(&ours).unwrap().nlink(), 1);
    assert_eq!(std::fs::metadata(&theirs).unwrap().nlink(), 1);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ours)
        .unwrap()
        .set_len(3)
        .unwrap();
    assert_eq!(std::fs::read(&ours).unwrap(), b"012");
    assert_eq!(std::fs::read(&theirs).unwrap(), b"0123456789");
    let inode = std::fs::metadata(&ours).unwrap().ino();
    unshare(&ours).unwrap();
    assert_eq!(
        std::fs::metadata(&ours).unwrap().ino(),
        inode,
        "one link: left alone"
    );
}

/// A store fed by a log that checked the scans' times when it accepted them (a cluster replica)
/// stores them whatever its own clock says; a store taking scans directly refuses the same
/// times as too old or in the future.
#[test]
fn times_checked_upstream_are_not_checked_again() {
    let clock = Arc::new(ManualClock::new(T0));
    let batch = || {
        vec![
            scan("ahead", "A", T0 + 400, Action::In),
            scan("old", "A", T0 - 30 * 86_400, Action::In),
            scan("now", "A", T0, Action::In),
        ]
    };
    let direct_dir = tempfile::tempdir().unwrap();
    let direct = open_small(direct_dir.path(), &clock);
    direct.register_venues(vec![venue("A", None)]).unwrap();
    let out = direct.ingest(batch()).unwrap();
    let reasons: Vec<RejectReason> = out.rejected.iter().map(|r| r.reason).collect();
    assert_eq!(reasons, vec![RejectReason::InFuture, RejectReason::TooOld]);
    direct.shutdown().unwrap();

    let replica_dir = tempfile::tempdir().unwrap();
    let mut c = Config::new(replica_dir.path());
    c.durability = Durability::Os;
    c.clock = clock.clone();
    c.times_checked_upstream = true;
    let replica = Engine::open(c).unwrap();
    replica.register_venues(vec![venue("A", None)]).unwrap();
    let out = replica.ingest(batch()).unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(replica.stats().scans, 3);
    assert!(replica.visits("ahead", 0, i64::MAX).is_some());
    // Everything else is still checked.
    let out = replica
        .ingest(vec![scan("p", "NOPE", T0, Action::In)])
        .unwrap();
    assert_eq!(out.rejected[0].reason, RejectReason::UnknownVenue);
    replica.shutdown().unwrap();
}

/// Occupancy after a venue's stay changes is what the visits say (contract sections 3 and 4),
/// for the persons whose visit there a shorter stay had ended as much as for those inside, and
/// the same as a store reopened with the new stay computes.
#[test]
fn occupancy_follows_a_changed_stay_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), &clock);
    e.register_venues(vec![venue("V", Some(3600)), venue("W", Some(3600))])
        .unwrap();
    e.ingest(vec![
        // ended by the 1 h stay at T0 - 400; then an exit elsewhere, which does not end it
        scan("p", "V", T0 - 4000, Action::In),
        scan("p", "W", T0 - 100, Action::Out),
        // ended by the stay, nothing after
        scan("q", "V", T0 - 5000, Action::In),
        // inside for the 1 h stay, out of reach of a 10 min one
        scan("r", "V", T0 - 1200, Action::In),
    ])
    .unwrap();
    let inside = |e: &Engine| -> u32 {
        ["p", "q", "r"]
            .iter()
            .filter(|p| {
                e.visits(p, T0 - 86_400, T0 + 86_400)
                    .unwrap_or_default()
                    .iter()
                    .any(|v| &*v.venue == "V" && v.start <= T0 && T0 < v.end)
            })
            .count() as u32
    };
    assert_eq!(e.occupancy("V"), Some(1));
    assert_eq!(inside(&e), 1);
    for stay in [7200, 600, 7200] {
        e.register_venues(vec![venue("V", Some(stay))]).unwrap();
        let want = inside(&e);
        assert_eq!(e.occupancy("V"), Some(want), "stay {stay}");
    }
    assert_eq!(e.occupancy("V"), Some(3));
    drop(e);
    let e = open(dir.path(), &clock);
    assert_eq!(e.occupancy("V"), Some(3), "reopened");
}
