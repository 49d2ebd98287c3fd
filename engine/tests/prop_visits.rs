//! Visits (`CONTRACT.md` sections 2–3) against the brute-force model in `tests/model`:
//!
//! - `model_examples`: hand-written cases straight from the contract text, checking the model;
//! - `visits_match_model`: random scans ingested in a random permutation and batching, with exact
//!   duplicates, give the model's visits for every person, for the full range and random windows;
//! - `order_independence`: two engines fed the same scans in different orders give identical
//!   visits, traces and occupancy;
//! - `duplicates_change_nothing`: re-ingesting any subset changes no visit, trace, occupancy or
//!   stored-scan count, and `IngestOutcome::duplicates` counts it;
//! - a few deterministic ingestion checks (rejections store nothing, `ts: None` is "now").
#![allow(clippy::unwrap_used)]

mod model;

use engine::{Action, RejectReason, ScanInput, ScanItem};
use model::strategies::any_world;
use model::*;
use proptest::prelude::*;

mod model_examples {
    use super::*;
    use engine::Action::{In, Out};

    /// A model with venues `A` (stay 100), `B` (stay 300), `C` (server default 1000).
    fn m(scans: &[(&str, &str, i64, Action)]) -> Model {
        let venues = [
            ("A".to_owned(), Some(100)),
            ("B".to_owned(), Some(300)),
            ("C".to_owned(), None),
        ];
        let mut m = Model::new(&venues, 1000);
        for &(p, v, ts, a) in scans {
            m.insert(Scan::new(p, v, ts, a));
        }
        m
    }

    fn v(m: &Model, p: &str) -> Vec<(String, i64, i64)> {
        m.all_visits(p)
            .into_iter()
            .map(|v| (v.venue, v.start, v.end))
            .collect()
    }

    fn vv(list: &[(&str, i64, i64)]) -> Vec<(String, i64, i64)> {
        list.iter().map(|&(v, s, e)| (v.to_owned(), s, e)).collect()
    }

    #[test]
    fn single_in_lasts_the_stay() {
        assert_eq!(v(&m(&[("p", "A", 0, In)]), "p"), vv(&[("A", 0, 100)]));
        assert_eq!(v(&m(&[("p", "C", 0, In)]), "p"), vv(&[("C", 0, 1000)]));
    }

    #[test]
    fn rescan_extends_the_stay() {
        let m = m(&[("p", "A", 0, In), ("p", "A", 50, In)]);
        assert_eq!(v(&m, "p"), vv(&[("A", 0, 150)]));
    }

    #[test]
    fn rescan_at_or_after_deadline_starts_a_new_visit() {
        let m1 = m(&[("p", "A", 0, In), ("p", "A", 100, In)]);
        assert_eq!(v(&m1, "p"), vv(&[("A", 0, 100), ("A", 100, 200)]));
        let m2 = m(&[("p", "A", 0, In), ("p", "A", 99, In)]);
        assert_eq!(v(&m2, "p"), vv(&[("A", 0, 199)]));
    }

    #[test]
    fn in_elsewhere_is_an_implicit_check_out() {
        let m = m(&[("p", "A", 0, In), ("p", "B", 30, In)]);
        assert_eq!(v(&m, "p"), vv(&[("A", 0, 30), ("B", 30, 330)]));
    }

    #[test]
    fn out_closes_the_open_visit() {
        let m = m(&[("p", "B", 0, In), ("p", "B", 42, Out)]);
        assert_eq!(v(&m, "p"), vv(&[("B", 0, 42)]));
    }

    #[test]
    fn out_without_open_visit_is_ignored() {
        assert_eq!(v(&m(&[("p", "A", 5, Out)]), "p"), vv(&[]));
        // An "out" at another venue leaves the open visit alone.
        let m2 = m(&[("p", "A", 0, In), ("p", "B", 10, Out)]);
        assert_eq!(v(&m2, "p"), vv(&[("A", 0, 100)]));
        // A second "out" after the first is ignored.
        let m3 = m(&[("p", "B", 0, In), ("p", "B", 10, Out), ("p", "B", 20, Out)]);
        assert_eq!(v(&m3, "p"), vv(&[("B", 0, 10)]));
    }

    #[test]
    fn auto_check_out_at_the_deadline() {
        // "out" exactly at the deadline: the auto check-out comes first, the "out" is ignored.
        let m1 = m(&[("p", "A", 0, In), ("p", "A", 100, Out)]);
        assert_eq!(v(&m1, "p"), vv(&[("A", 0, 100)]));
        let m2 = m(&[("p", "A", 0, In), ("p", "A", 99, Out)]);
        assert_eq!(v(&m2, "p"), vv(&[("A", 0, 99)]));
        // "in" elsewhere after the deadline: the visit ends at the deadline, not at the new "in".
        let m3 = m(&[("p", "A", 0, In), ("p", "B", 500, In)]);
        assert_eq!(v(&m3, "p"), vv(&[("A", 0, 100), ("B", 500, 800)]));
    }

    #[test]
    fn in_sorts_before_out_at_equal_ts() {
        // out and in at the same second: the "in" comes first, so the "out" closes it at once.
        let m1 = m(&[("p", "A", 10, Out), ("p", "A", 10, In)]);
        assert_eq!(v(&m1, "p"), vv(&[("A", 10, 10)]));
        // A re-scan and an "out" at the same second: the re-scan extends, then the "out" closes.
        let m2 = m(&[("p", "B", 0, In), ("p", "B", 50, Out), ("p", "B", 50, In)]);
        assert_eq!(v(&m2, "p"), vv(&[("B", 0, 50)]));
        // in at B then out at A at the same second: the in at B checks out of A first, so the
        // "out" at A finds nothing open there.
        let m3 = m(&[("p", "A", 0, In), ("p", "A", 20, Out), ("p", "B", 20, In)]);
        assert_eq!(v(&m3, "p"), vv(&[("A", 0, 20), ("B", 20, 320)]));
    }

    #[test]
    fn venue_bytes_break_ties_between_ins() {
        // "B" < "a" in byte order: B first (zero length), then a stays open.
        let venues = [("a".to_owned(), Some(100)), ("B".to_owned(), Some(100))];
        let mut m = Model::new(&venues, 1000);
        m.insert(Scan::new("p", "a", 7, In));
        m.insert(Scan::new("p", "B", 7, In));
        assert_eq!(v(&m, "p"), vv(&[("B", 7, 7), ("a", 7, 107)]));
    }

    #[test]
    fn arrival_order_and_duplicates_do_not_matter() {
        let scans = [
            ("p", "A", 0, In),
            ("p", "B", 30, In),
            ("p", "B", 60, Out),
            ("p", "A", 70, In),
        ];
        let a = m(&scans);
        let mut rev = scans.to_vec();
        rev.reverse();
        rev.push(scans[1]);
        let b = m(&rev);
        assert_eq!(v(&a, "p"), v(&b, "p"));
        assert_eq!(
            v(&a, "p"),
            vv(&[("A", 0, 30), ("B", 30, 60), ("A", 70, 170)])
        );
    }

    #[test]
    fn visits_window_is_start_before_to_and_end_at_or_after_from() {
        let m = m(&[("p", "A", 100, In), ("p", "B", 400, In)]);
        // Visits: A [100, 200), B [400, 700).
        let w = |from, to| {
            m.visits("p", from, to)
                .unwrap()
                .iter()
                .map(|v| (v.venue.to_string(), v.start, v.end))
                .collect::<Vec<_>>()
        };
        assert_eq!(w(200, 400), vv(&[("A", 100, 200)]));
        assert_eq!(w(201, 401), vv(&[("B", 400, 700)]));
        assert_eq!(w(150, 160), vv(&[("A", 100, 200)]), "unclipped");
        assert_eq!(w(0, 100), vv(&[]));
        assert!(m.visits("nobody", 0, 1000).is_none());
        let only_out = super::model_examples::m(&[("q", "A", 5, Out)]);
        assert_eq!(only_out.visits("q", 0, 1000), Some(vec![]));
    }

    #[test]
    fn occupancy_uses_scans_up_to_now_and_half_open_visits() {
        let m = m(&[
            ("p", "B", 0, In),
            ("p", "B", 50, Out),
            ("q", "B", 10, In),
            ("r", "B", 60, In),
        ]);
        assert_eq!(m.occupancy("B", -1), 0);
        assert_eq!(m.occupancy("B", 0), 1);
        assert_eq!(m.occupancy("B", 49), 2);
        assert_eq!(m.occupancy("B", 50), 1, "end is exclusive");
        assert_eq!(m.occupancy("B", 59), 1, "r's scan is still in the future");
        assert_eq!(m.occupancy("B", 60), 2);
        assert_eq!(m.occupancy("B", 309), 2);
        assert_eq!(m.occupancy("B", 310), 1, "q auto-checked-out at 10 + 300");
        assert_eq!(m.occupancy("A", 20), 0);
        // A later "out" does not close a visit before its time.
        let m2 = super::model_examples::m(&[("p", "B", 0, In), ("p", "B", 100, Out)]);
        assert_eq!(m2.occupancy("B", 99), 1);
        // A later implicit check-out does not either.
        let m3 = super::model_examples::m(&[("p", "B", 0, In), ("p", "A", 100, In)]);
        assert_eq!(m3.occupancy("B", 99), 1);
        assert_eq!(m3.occupancy("B", 100), 0);
        assert_eq!(m3.occupancy("A", 100), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic ingestion checks.
// ---------------------------------------------------------------------------------------------

fn venues_ab() -> Vec<(String, Option<u32>)> {
    vec![("A".to_owned(), Some(100)), ("B".to_owned(), Some(300))]
}

fn input(p: &str, v: &str, ts: Option<i64>, action: Action) -> ScanItem {
    Ok(ScanInput {
        person: p.to_owned(),
        venue: v.to_owned(),
        ts,
        action,
    })
}

#[test]
fn rejected_items_store_nothing() {
    let h = Harness::open(&venues_ab(), 600);
    let retention = 21 * 86_400;
    let batch = vec![
        input("p", "A", Some(T0 - 100), Action::In),
        input("ghost", "NOPE", Some(T0 - 50), Action::In),
        input("ghost", "A", Some(T0 - retention - 1), Action::In),
        input("ghost", "A", Some(T0 + 301), Action::In),
        Err(RejectReason::InvalidTs),
        input("p", "B", Some(T0 + 300), Action::In),
        input("q", "A", Some(T0 - retention), Action::In),
    ];
    let out = h.engine.ingest(batch).unwrap();
    let rejected: Vec<(usize, RejectReason)> =
        out.rejected.iter().map(|r| (r.index, r.reason)).collect();
    assert_eq!(
        rejected,
        vec![
            (1, RejectReason::UnknownVenue),
            (2, RejectReason::TooOld),
            (3, RejectReason::InFuture),
            (4, RejectReason::InvalidTs),
        ]
    );
    assert_eq!(out.accepted(), 3);
    assert_eq!(out.duplicates, 0);
    assert!(h.engine.visits("ghost", FAR_PAST, FAR_FUTURE).is_none());
    let mut m = Model::new(&venues_ab(), 600);
    m.insert(Scan::new("p", "A", T0 - 100, Action::In));
    m.insert(Scan::new("p", "B", T0 + 300, Action::In));
    m.insert(Scan::new("q", "A", T0 - retention, Action::In));
    for p in ["p", "q"] {
        assert_eq!(
            h.engine.visits(p, FAR_PAST, FAR_FUTURE),
            m.visits(p, FAR_PAST, FAR_FUTURE)
        );
    }
    let st = h.engine.stats();
    assert_eq!((st.scans, st.persons, st.venues), (3, 2, 2));
}

#[test]
fn missing_ts_means_the_engine_clock() {
    let h = Harness::open(&venues_ab(), 600);
    h.clock.set(T0 + 1234);
    let out = h
        .engine
        .ingest(vec![input("p", "B", None, Action::In)])
        .unwrap();
    assert_eq!(out.accepted_in, 1);
    // The same scan with the explicit timestamp is an exact duplicate.
    let out = h
        .engine
        .ingest(vec![input("p", "B", Some(T0 + 1234), Action::In)])
        .unwrap();
    assert_eq!(out.duplicates, 1);
    let mut m = Model::new(&venues_ab(), 600);
    m.insert(Scan::new("p", "B", T0 + 1234, Action::In));
    assert_eq!(
        h.engine.visits("p", FAR_PAST, FAR_FUTURE),
        m.visits("p", FAR_PAST, FAR_FUTURE)
    );
    assert_eq!(h.engine.stats().scans, 1);
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

/// Scans of a world plus exact duplicates picked by index.
fn with_duplicates(w: &World, dup_picks: &[usize]) -> Vec<Scan> {
    let mut all = w.scans.clone();
    if !w.scans.is_empty() {
        for &i in dup_picks {
            all.push(w.scans[i % w.scans.len()].clone());
        }
    }
    all
}

/// A window `(from, to)` from two offsets (in any order), relative to `T0`.
fn window(a: i64, b: i64) -> (i64, i64) {
    (T0 + a.min(b), T0 + a.max(b))
}

/// Everything observable about a store, for before/after and engine/engine comparisons.
#[derive(Debug, PartialEq)]
struct Snapshot {
    visits: Vec<Option<Vec<engine::Visit>>>,
    traces: Vec<Option<engine::TraceResult>>,
    occupancy: Vec<Option<u32>>,
    scans: u64,
    persons: u64,
}

fn snapshot(h: &Harness, w: &World, min_overlap: i64) -> Snapshot {
    let mut persons: Vec<String> = w.persons.clone();
    persons.push("nobody".to_owned());
    let traces = persons
        .iter()
        .flat_map(|p| {
            [1u8, 2].map(|d| {
                h.engine
                    .trace(&request(p, T0 - 4000, T0 + 1000, min_overlap, d))
            })
        })
        .collect();
    let st = h.engine.stats();
    Snapshot {
        visits: engine_all_visits(&h.engine, &persons),
        traces,
        occupancy: w
            .venues
            .iter()
            .map(|(v, _)| h.engine.occupancy(v))
            .collect(),
        scans: st.scans,
        persons: st.persons,
    }
}

proptest! {
    #![proptest_config(model::strategies::config(96))]

    /// Property 1: the engine's visits equal the model's, whatever the arrival order, batching
    /// and duplicates.
    #[test]
    fn visits_match_model(
        w in any_world(-3000, 300, 48),
        dup_picks in prop::collection::vec(any::<usize>(), 0..8),
        seed in any::<u64>(),
        windows in prop::collection::vec((-3600i64..1200, -3600i64..1200), 1..4),
    ) {
        let model = w.model();
        let all = with_duplicates(&w, &dup_picks);
        let batches = shuffle_and_split(&all, seed, 4);
        let h = Harness::open(&w.venues, w.default_stay_s);
        let dups = ingest_batches(&h.engine, &batches);
        prop_assert_eq!(dups as usize, all.len() - model.scans.len(), "duplicates");
        let st = h.engine.stats();
        prop_assert_eq!(st.scans as usize, model.scans.len(), "stats.scans");
        prop_assert_eq!(st.persons as usize, model.persons().len(), "stats.persons");
        prop_assert_eq!(st.venues as usize, w.venues.len(), "stats.venues");

        let mut persons = w.persons.clone();
        persons.push("nobody".to_owned());
        for p in &persons {
            prop_assert_eq!(
                h.engine.visits(p, FAR_PAST, FAR_FUTURE),
                model.visits(p, FAR_PAST, FAR_FUTURE),
                "full visits of {}", p
            );
            for &(a, b) in &windows {
                let (from, to) = window(a, b);
                prop_assert_eq!(
                    h.engine.visits(p, from, to),
                    model.visits(p, from, to),
                    "visits of {} in [{}, {}] (T0{:+}, T0{:+})", p, from, to, from - T0, to - T0
                );
            }
        }
    }

    /// Property 2: two engines fed the same scans in different orders and batchings answer alike.
    #[test]
    fn order_independence(
        w in any_world(-3000, 300, 48),
        seeds in (any::<u64>(), any::<u64>()),
        min_overlap in prop_oneof![Just(0i64), 1i64..300],
    ) {
        let a = Harness::open(&w.venues, w.default_stay_s);
        let b = Harness::open(&w.venues, w.default_stay_s);
        ingest_batches(&a.engine, &shuffle_and_split(&w.scans, seeds.0, 5));
        ingest_batches(&b.engine, &shuffle_and_split(&w.scans, seeds.1, 5));
        prop_assert_eq!(snapshot(&a, &w, min_overlap), snapshot(&b, &w, min_overlap));
    }

    /// Property 3: re-ingesting any subset of stored scans changes nothing observable and is
    /// counted in `duplicates`.
    #[test]
    fn duplicates_change_nothing(
        w in any_world(-3000, 300, 40),
        seed in any::<u64>(),
        picks in prop::collection::vec(any::<usize>(), 1..20),
        min_overlap in prop_oneof![Just(0i64), 1i64..300],
    ) {
        prop_assume!(!w.scans.is_empty());
        let model = w.model();
        let h = Harness::open(&w.venues, w.default_stay_s);
        ingest_batches(&h.engine, &shuffle_and_split(&w.scans, seed, 3));
        let before = snapshot(&h, &w, min_overlap);
        prop_assert_eq!(before.scans as usize, model.scans.len());

        let again: Vec<Scan> = picks.iter().map(|&i| w.scans[i % w.scans.len()].clone()).collect();
        let dups = ingest_batches(&h.engine, &shuffle_and_split(&again, seed ^ 0x5eed, 3));
        prop_assert_eq!(dups as usize, again.len(), "every re-ingested scan is a duplicate");
        let after = snapshot(&h, &w, min_overlap);
        prop_assert_eq!(before, after);
    }
}
