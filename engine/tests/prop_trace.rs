//! Contact traces (`CONTRACT.md` section 5) against the brute-force model in `tests/model`:
//!
//! - `model_examples`: hand-written traces straight from the contract text, checking the model
//!   (thresholds, `min_overlap_s = 0`, clipping of case visits, F2 via the F1's visits clipped to
//!   its first contact, `via` tie-breaks, ordering);
//! - `trace_matches_model`: random scans in a random order and batching; depth 1 and 2 traces
//!   with random windows and `min_overlap_s` (including 0) equal the model's, field by field and
//!   in order; unknown case persons give `None`.
#![allow(clippy::unwrap_used)]

mod model;

use engine::TraceRequest;
use model::strategies::{any_world, grid_world, world};
use model::*;
use proptest::prelude::*;

mod model_examples {
    use super::*;
    use engine::Action::{self, In, Out};

    /// A model with venues `A` (stay 100), `B` (stay 300), `C` (stay 1000).
    fn m(scans: &[(&str, &str, i64, Action)]) -> Model {
        let venues = [
            ("A".to_owned(), Some(100)),
            ("B".to_owned(), Some(300)),
            ("C".to_owned(), Some(1000)),
        ];
        let mut m = Model::new(&venues, 7200);
        for &(p, v, ts, a) in scans {
            m.insert(Scan::new(p, v, ts, a));
        }
        m
    }

    fn req(p: &str, from: i64, to: i64, min: i64, depth: u8) -> TraceRequest {
        TraceRequest::new(
            p.to_owned(),
            Some(from),
            Some(to),
            Some(min),
            Some(depth),
            0,
        )
        .unwrap()
    }

    /// F1 as (person, exposure, first contact, venues).
    fn f1(m: &Model, r: &TraceRequest) -> Vec<(String, i64, i64, Vec<String>)> {
        m.trace(r)
            .unwrap()
            .f1
            .iter()
            .map(|c| {
                (
                    c.person.to_string(),
                    c.exposure_s,
                    c.first_contact,
                    c.venues.iter().map(|v| v.to_string()).collect(),
                )
            })
            .collect()
    }

    /// F2 as (person, via, exposure, first contact).
    fn f2(m: &Model, r: &TraceRequest) -> Vec<(String, String, i64, i64)> {
        m.trace(r)
            .unwrap()
            .f2
            .iter()
            .map(|c| {
                (
                    c.person.to_string(),
                    c.via.to_string(),
                    c.exposure_s,
                    c.first_contact,
                )
            })
            .collect()
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    #[test]
    fn f1_threshold_and_zero_min_overlap() {
        // P: A [0, 100). Q: A [40, 140) -> 60 s. S: A [90, 95) -> 5 s.
        let m = m(&[
            ("P", "A", 0, In),
            ("Q", "A", 40, In),
            ("S", "A", 90, In),
            ("S", "A", 95, Out),
        ]);
        assert_eq!(
            f1(&m, &req("P", 0, 1000, 60, 1)),
            vec![(s("Q"), 60, 40, vec![s("A")])]
        );
        assert_eq!(f1(&m, &req("P", 0, 1000, 61, 1)), vec![]);
        assert_eq!(
            f1(&m, &req("P", 0, 1000, 0, 1)),
            vec![
                (s("Q"), 60, 40, vec![s("A")]),
                (s("S"), 5, 90, vec![s("A")])
            ]
        );
        // The answer echoes the requested min_overlap_s.
        assert_eq!(m.trace(&req("P", 0, 1000, 0, 1)).unwrap().min_overlap_s, 0);
        assert!(m.trace(&req("nobody", 0, 1000, 0, 1)).is_none());
    }

    #[test]
    fn min_overlap_zero_means_one_second() {
        // Q's visit touches P's at a single instant (zero overlap): never a contact.
        let m = m(&[("P", "A", 0, In), ("Q", "A", 100, In), ("R", "A", 99, In)]);
        assert_eq!(
            f1(&m, &req("P", 0, 1000, 0, 1)),
            vec![(s("R"), 1, 99, vec![s("A")])]
        );
    }

    #[test]
    fn case_visits_are_clipped_and_empty_ones_dropped() {
        let m = m(&[
            ("P", "A", 0, In),
            ("P", "B", 500, In),
            ("Q", "A", 40, In),
            ("S", "A", 90, In),
            ("S", "A", 95, Out),
        ]);
        let t = m.trace(&req("P", 50, 80, 0, 1)).unwrap();
        let visits: Vec<_> = t
            .visits
            .iter()
            .map(|v| (v.venue.to_string(), v.start, v.end))
            .collect();
        assert_eq!(visits, vec![(s("A"), 50, 80)]);
        assert_eq!(
            f1(&m, &req("P", 50, 80, 0, 1)),
            vec![(s("Q"), 30, 50, vec![s("A")])]
        );
        // A window touching a visit's end only: zero length after clipping, dropped.
        assert!(m
            .trace(&req("P", 100, 500, 0, 1))
            .unwrap()
            .visits
            .is_empty());
        // Q's visits are not clipped: Q's visit starting before `from` still counts.
        assert_eq!(
            f1(&m, &req("P", 60, 1000, 0, 1)),
            vec![
                (s("Q"), 40, 60, vec![s("A")]),
                (s("S"), 5, 90, vec![s("A")])
            ]
        );
    }

    #[test]
    fn exposure_sums_over_visits_and_venues() {
        // P: A [0, 100), B [100, 400). Q: A [50, 150)->implicit out at 120, B [120, 420).
        let m = m(&[
            ("P", "A", 0, In),
            ("P", "B", 100, In),
            ("Q", "A", 50, In),
            ("Q", "B", 120, In),
        ]);
        // Overlaps: A [50, 100) = 50; B [120, 400) = 280.
        assert_eq!(
            f1(&m, &req("P", 0, 1000, 0, 1)),
            vec![(s("Q"), 330, 50, vec![s("A"), s("B")])]
        );
    }

    #[test]
    fn f2_uses_f1_visits_from_first_contact() {
        // P: A [0, 100). Q: C [-1000, 0), A [50, 150), B [200, 500).
        // R: B [0, 300) overlaps Q's B visit by 100. R2: C [-500, 500) overlaps Q only before
        // Q's first contact (50), so not at all.
        let m = m(&[
            ("P", "A", 0, In),
            ("Q", "C", -1000, In),
            ("Q", "A", 50, In),
            ("Q", "B", 200, In),
            ("R", "B", 0, In),
            ("R2", "C", -500, In),
        ]);
        let r = req("P", -2000, 1000, 1, 2);
        assert_eq!(f1(&m, &r), vec![(s("Q"), 50, 50, vec![s("A")])]);
        assert_eq!(f2(&m, &r), vec![(s("R"), s("Q"), 100, 200)]);
        assert!(f2(&m, &req("P", -2000, 1000, 1, 1)).is_empty(), "depth 1");
        // F2 visits are clipped at `to` too.
        assert_eq!(
            f2(&m, &req("P", -2000, 250, 1, 2)),
            vec![(s("R"), s("Q"), 50, 200)]
        );
    }

    #[test]
    fn f2_via_largest_exposure_then_smallest_id() {
        // P: A [0, 100). b: A [0, 100), B [100, 400). a: A [50, 150), B [150, 450).
        // r: B [350, 450): 50 via b, 100 via a. q: B [300, 350): 50 via both -> via "a".
        let m = m(&[
            ("P", "A", 0, In),
            ("b", "A", 0, In),
            ("b", "B", 100, In),
            ("a", "A", 50, In),
            ("a", "B", 150, In),
            ("r", "B", 350, In),
            ("r", "B", 450, Out),
            ("q", "B", 300, In),
            ("q", "B", 350, Out),
        ]);
        let r = req("P", 0, 1000, 0, 2);
        assert_eq!(
            f1(&m, &r),
            vec![
                (s("b"), 100, 0, vec![s("A")]),
                (s("a"), 50, 50, vec![s("A")])
            ]
        );
        assert_eq!(
            f2(&m, &r),
            vec![(s("r"), s("a"), 100, 350), (s("q"), s("a"), 50, 300)]
        );
    }

    #[test]
    fn below_f1_threshold_can_still_be_f2() {
        // P: A [0, 100). Q: A [40, 140) -> 60. S: A [90, 140) -> 10 with P, 50 with Q.
        let m = m(&[
            ("P", "A", 0, In),
            ("Q", "A", 40, In),
            ("S", "A", 90, In),
            ("S", "A", 140, Out),
        ]);
        let r = req("P", 0, 1000, 40, 2);
        assert_eq!(f1(&m, &r), vec![(s("Q"), 60, 40, vec![s("A")])]);
        assert_eq!(f2(&m, &r), vec![(s("S"), s("Q"), 50, 90)]);
        // The case person is never F1 or F2 of itself.
        assert!(f2(&m, &r).iter().all(|c| c.0 != "P"));
    }

    #[test]
    fn ties_in_exposure_order_by_person_bytes() {
        let m = m(&[
            ("P", "A", 0, In),
            ("b", "A", 50, In),
            ("B", "A", 50, In),
            ("a", "A", 50, In),
        ]);
        let names: Vec<String> = f1(&m, &req("P", 0, 1000, 0, 1))
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(names, vec![s("B"), s("a"), s("b")]);
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

/// Raw trace request: (case person index (8 = unknown person), offsets a and b of the window
/// ends, min overlap, depth).
type RawReq = (usize, i64, i64, i64, u8);

fn raw_req() -> impl Strategy<Value = RawReq> {
    (
        0usize..9,
        -3600i64..1200,
        -3600i64..1200,
        prop_oneof![2 => Just(0i64), 1 => Just(1i64), 4 => 1i64..400, 1 => Just(900i64)],
        1u8..=2,
    )
}

proptest! {
    #![proptest_config(config(128))]

    /// Property 4: depth 1 and 2 traces equal the model's, field by field and in order.
    #[test]
    fn trace_matches_model(
        w in any_world(-3000, 300, 48),
        seed in any::<u64>(),
        reqs in prop::collection::vec(raw_req(), 1..6),
        full_window_min in prop_oneof![Just(0i64), 1i64..200],
    ) {
        let model = w.model();
        let h = Harness::open(&w.venues, w.default_stay_s);
        ingest_batches(&h.engine, &shuffle_and_split(&w.scans, seed, 4));

        let mut all: Vec<TraceRequest> = Vec::new();
        for (i, a, b, min, depth) in reqs {
            let person = w.persons.get(i).map_or("nobody", |p| p.as_str());
            all.push(request(person, T0 + a.min(b), T0 + a.max(b), min, depth));
        }
        // Every person's full-window trace at depth 2, and the contract defaults for one.
        for p in &w.persons {
            all.push(request(p, FAR_PAST, FAR_FUTURE, full_window_min, 2));
        }
        all.push(TraceRequest::new(w.persons[0].clone(), None, None, None, None, T0 + 1000)
            .unwrap());

        for r in &all {
            let got = h.engine.trace(r);
            let want = model.trace(r);
            prop_assert_eq!(
                &got, &want,
                "trace of {} in [T0{:+}, T0{:+}] min {} depth {}",
                r.person, r.from - T0, r.to - T0, r.min_overlap_s, r.depth
            );
        }
    }
}

/// The generators are only useful if they produce the situations the contract singles out; this
/// checks (on the model alone, deterministically) that a fair share of worlds has each of them.
#[test]
fn generators_exercise_the_interesting_cases() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let plain = world(-3000, 300, 48);
    let grid = grid_world(-3000, 300, 48);
    let n = 200;
    let mut seen = [0u32; 8];
    for i in 0..n {
        let w = if i % 2 == 0 {
            plain.new_tree(&mut runner).unwrap().current()
        } else {
            grid.new_tree(&mut runner).unwrap().current()
        };
        let m = w.model();
        let mut hit = [false; 8];
        for p in &w.persons {
            let visits = m.all_visits(p);
            hit[0] |= visits.iter().any(|v| v.start == v.end);
            hit[1] |= visits.iter().any(|v| v.end - v.start > m.stay(&v.venue));
            hit[2] |= visits.windows(2).any(|x| x[0].end == x[1].start);
            let mine: Vec<&Scan> = m.scans.iter().filter(|s| &s.person == p).collect();
            hit[3] |= mine
                .iter()
                .any(|a| mine.iter().any(|b| a.ts == b.ts && a != b));
            let t = m
                .trace(&request(p, FAR_PAST, FAR_FUTURE, 60, 2))
                .unwrap_or_else(|| m.trace(&request(p, T0, T0, 0, 2)).unwrap_or_else(empty));
            hit[4] |= !t.f1.is_empty();
            hit[5] |= !t.f2.is_empty();
            hit[6] |= t.f1.windows(2).any(|x| x[0].exposure_s == x[1].exposure_s);
            // An F2 contact reached with the same largest exposure through two F1 persons.
            hit[7] |= t.f2.iter().any(|r| {
                let rv = m.all_visits(&r.person);
                let ties = t.f1.iter().filter(|q| {
                    let qv = clip(&m.all_visits(&q.person), q.first_contact, t.to);
                    exposure(&qv, &rv).0 == r.exposure_s
                });
                ties.count() >= 2
            });
        }
        for (s, h) in seen.iter_mut().zip(hit) {
            *s += u32::from(h);
        }
    }
    let names = [
        "zero-length visit",
        "re-scan extension",
        "back-to-back visits",
        "equal-ts scans of one person",
        "F1 contact",
        "F2 contact",
        "F1 exposure tie",
        "F2 via tie",
    ];
    for (name, s) in names.iter().zip(seen) {
        eprintln!("{name}: {s}/{n} worlds (half plain, half grid)");
        assert!(s * 40 >= n, "{name} in only {s} of {n} worlds");
    }
}

fn empty() -> engine::TraceResult {
    engine::TraceResult {
        case: "".into(),
        from: 0,
        to: 0,
        min_overlap_s: 0,
        visits: vec![],
        f1: vec![],
        f2: vec![],
    }
}
