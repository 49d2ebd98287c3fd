//! Contact traces (`CONTRACT.md` section 5) against the brute-force model in `tests/model`:
//!
//! - `model_examples`: hand-written traces straight from the contract text, checking the model
//!   (thresholds, `min_overlap_s = 0`, clipping of case visits, F2 via the F1's visits clipped to
//!   its first contact, `via` tie-breaks, ordering; v2: `min_stay_s` on unclipped lengths for the
//!   case's and the F1's visits, `linger_s` for F1 and F2, `last_contact`);
//! - `engine_examples`: the same v2 situations on the engine itself, among them contacts that only
//!   the linger makes (found only if the candidate search and key ranges are widened by it);
//! - `trace_matches_model`: random scans in a random order and batching; depth 1 and 2 traces
//!   with random windows, `min_overlap_s`, `min_stay_s` and `linger_s` (each often 0) equal the
//!   model's, field by field and in order; unknown case persons give `None`.
#![allow(clippy::unwrap_used)]

mod model;

use engine::{TraceRequest, TraceResult};
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

    pub(super) fn req(p: &str, from: i64, to: i64, min: i64, depth: u8) -> TraceRequest {
        req2(p, from, to, min, depth, 0, 0)
    }

    /// A request with `min_stay_s` and `linger_s` too.
    pub(super) fn req2(
        p: &str,
        from: i64,
        to: i64,
        min: i64,
        depth: u8,
        min_stay: i64,
        linger: i64,
    ) -> TraceRequest {
        TraceRequest::new(
            p.to_owned(),
            Some(from),
            Some(to),
            Some(min),
            Some(depth),
            Some(min_stay),
            Some(linger),
            0,
        )
        .unwrap()
    }

    /// An F1 contact as (person, exposure, first contact, last contact, venues).
    pub(super) type F1Row = (String, i64, i64, i64, Vec<String>);
    /// An F2 contact as (person, via, exposure, first contact, last contact).
    pub(super) type F2Row = (String, String, i64, i64, i64);
    /// A case visit as (venue, start, end).
    pub(super) type VisitRow = (String, i64, i64);

    pub(super) fn f1_rows(t: &TraceResult) -> Vec<F1Row> {
        t.f1.iter()
            .map(|c| {
                (
                    c.person.to_string(),
                    c.exposure_s,
                    c.first_contact,
                    c.last_contact,
                    c.venues.iter().map(|v| v.to_string()).collect(),
                )
            })
            .collect()
    }

    pub(super) fn f2_rows(t: &TraceResult) -> Vec<F2Row> {
        t.f2.iter()
            .map(|c| {
                (
                    c.person.to_string(),
                    c.via.to_string(),
                    c.exposure_s,
                    c.first_contact,
                    c.last_contact,
                )
            })
            .collect()
    }

    /// The case visits as (venue, start, end).
    pub(super) fn visit_rows(t: &TraceResult) -> Vec<VisitRow> {
        t.visits
            .iter()
            .map(|v| (v.venue.to_string(), v.start, v.end))
            .collect()
    }

    fn f1(m: &Model, r: &TraceRequest) -> Vec<F1Row> {
        f1_rows(&m.trace(r).unwrap())
    }

    fn f2(m: &Model, r: &TraceRequest) -> Vec<F2Row> {
        f2_rows(&m.trace(r).unwrap())
    }

    pub(super) fn s(x: &str) -> String {
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
            vec![(s("Q"), 60, 40, 100, vec![s("A")])]
        );
        assert_eq!(f1(&m, &req("P", 0, 1000, 61, 1)), vec![]);
        assert_eq!(
            f1(&m, &req("P", 0, 1000, 0, 1)),
            vec![
                (s("Q"), 60, 40, 100, vec![s("A")]),
                (s("S"), 5, 90, 95, vec![s("A")])
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
            vec![(s("R"), 1, 99, 100, vec![s("A")])]
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
            vec![(s("Q"), 30, 50, 80, vec![s("A")])]
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
                (s("Q"), 40, 60, 100, vec![s("A")]),
                (s("S"), 5, 90, 95, vec![s("A")])
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
        // Overlaps: A [50, 100) = 50; B [120, 400) = 280. The last contact is the latest end.
        assert_eq!(
            f1(&m, &req("P", 0, 1000, 0, 1)),
            vec![(s("Q"), 330, 50, 400, vec![s("A"), s("B")])]
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
        assert_eq!(f1(&m, &r), vec![(s("Q"), 50, 50, 100, vec![s("A")])]);
        assert_eq!(f2(&m, &r), vec![(s("R"), s("Q"), 100, 200, 300)]);
        assert!(f2(&m, &req("P", -2000, 1000, 1, 1)).is_empty(), "depth 1");
        // F2 visits are clipped at `to` too.
        assert_eq!(
            f2(&m, &req("P", -2000, 250, 1, 2)),
            vec![(s("R"), s("Q"), 50, 200, 250)]
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
                (s("b"), 100, 0, 100, vec![s("A")]),
                (s("a"), 50, 50, 100, vec![s("A")])
            ]
        );
        assert_eq!(
            f2(&m, &r),
            vec![
                (s("r"), s("a"), 100, 350, 450),
                (s("q"), s("a"), 50, 300, 350)
            ]
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
        assert_eq!(f1(&m, &r), vec![(s("Q"), 60, 40, 100, vec![s("A")])]);
        assert_eq!(f2(&m, &r), vec![(s("S"), s("Q"), 50, 90, 140)]);
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

    #[test]
    fn min_stay_filters_case_visits_on_their_unclipped_length() {
        // P: A [0, 100), B [200, 230) (30 s). Q: A [40, 140), B [200, 500).
        let m = m(&[
            ("P", "A", 0, In),
            ("P", "B", 200, In),
            ("P", "B", 230, Out),
            ("Q", "A", 40, In),
            ("Q", "B", 200, In),
        ]);
        let both = vec![(s("A"), 0, 100), (s("B"), 200, 230)];
        let t = m.trace(&req2("P", 0, 1000, 0, 1, 0, 0)).unwrap();
        assert_eq!(visit_rows(&t), both);
        assert_eq!(
            f1_rows(&t),
            vec![(s("Q"), 90, 40, 230, vec![s("A"), s("B")])]
        );
        // `>=`: a 30 s visit passes min_stay_s = 30, not 31.
        let t = m.trace(&req2("P", 0, 1000, 0, 1, 30, 0)).unwrap();
        assert_eq!(visit_rows(&t), both);
        let t = m.trace(&req2("P", 0, 1000, 0, 1, 31, 0)).unwrap();
        assert_eq!(visit_rows(&t), vec![(s("A"), 0, 100)]);
        assert_eq!(f1_rows(&t), vec![(s("Q"), 60, 40, 100, vec![s("A")])]);
        assert_eq!((t.min_stay_s, t.linger_s), (31, 0), "echoed");
        // The length is the unclipped one: A clipped to [0, 60) still has 100 s.
        let t = m.trace(&req2("P", 0, 60, 0, 1, 100, 0)).unwrap();
        assert_eq!(visit_rows(&t), vec![(s("A"), 0, 60)]);
        assert_eq!(f1_rows(&t), vec![(s("Q"), 20, 40, 60, vec![s("A")])]);
        let t = m.trace(&req2("P", 0, 60, 0, 1, 101, 0)).unwrap();
        assert!(t.visits.is_empty() && t.f1.is_empty());
    }

    #[test]
    fn linger_extends_case_visits_past_their_end_and_past_to() {
        // P: A [0, 100). Q: A [120, 220) (arrives after P left). S: A [50, 130).
        let m = m(&[
            ("P", "A", 0, In),
            ("Q", "A", 120, In),
            ("S", "A", 50, In),
            ("S", "A", 130, Out),
        ]);
        assert_eq!(
            f1(&m, &req2("P", 0, 1000, 0, 1, 0, 0)),
            vec![(s("S"), 50, 50, 100, vec![s("A")])]
        );
        // Exposure [0, 150): S [50, 130) = 80; Q [120, 150) = 30.
        let t = m.trace(&req2("P", 0, 1000, 0, 1, 0, 50)).unwrap();
        assert_eq!(
            f1_rows(&t),
            vec![
                (s("S"), 80, 50, 130, vec![s("A")]),
                (s("Q"), 30, 120, 150, vec![s("A")])
            ]
        );
        // The answer's visits carry no linger.
        assert_eq!(visit_rows(&t), vec![(s("A"), 0, 100)]);
        assert_eq!(t.linger_s, 50);
        // Exposure [0, 300): Q's whole visit.
        assert_eq!(
            f1(&m, &req2("P", 0, 1000, 0, 1, 0, 200)),
            vec![
                (s("Q"), 100, 120, 220, vec![s("A")]),
                (s("S"), 80, 50, 130, vec![s("A")])
            ]
        );
        // The linger runs past `to`: case visit [0, 90), exposure [0, 140).
        let t = m.trace(&req2("P", 0, 90, 0, 1, 0, 50)).unwrap();
        assert_eq!(visit_rows(&t), vec![(s("A"), 0, 90)]);
        assert_eq!(
            f1_rows(&t),
            vec![
                (s("S"), 80, 50, 130, vec![s("A")]),
                (s("Q"), 20, 120, 140, vec![s("A")])
            ]
        );
        // The threshold applies to the lingered exposure.
        assert_eq!(
            f1(&m, &req2("P", 0, 1000, 31, 1, 0, 50)),
            vec![(s("S"), 80, 50, 130, vec![s("A")])]
        );
        // min_stay_s filters the case's visits, never the contacts': S's 80 s visit still counts.
        assert_eq!(
            f1(&m, &req2("P", 0, 1000, 0, 1, 90, 0)),
            vec![(s("S"), 50, 50, 100, vec![s("A")])]
        );
    }

    #[test]
    fn f2_sources_linger_and_are_filtered_by_min_stay() {
        // P: A [0, 100). Q: A [50, 150), B [200, 220) (20 s). R: A [160, 260). T: B [210, 510).
        let m = m(&[
            ("P", "A", 0, In),
            ("Q", "A", 50, In),
            ("Q", "B", 200, In),
            ("Q", "B", 220, Out),
            ("R", "A", 160, In),
            ("T", "B", 210, In),
        ]);
        let r = req2("P", 0, 1000, 0, 2, 0, 0);
        assert_eq!(f1(&m, &r), vec![(s("Q"), 50, 50, 100, vec![s("A")])]);
        assert_eq!(f2(&m, &r), vec![(s("T"), s("Q"), 10, 210, 220)]);
        // Linger 20: P exposes [0, 120); Q exposes A [50, 170) and B [200, 240).
        let r = req2("P", 0, 1000, 0, 2, 0, 20);
        assert_eq!(f1(&m, &r), vec![(s("Q"), 70, 50, 120, vec![s("A")])]);
        assert_eq!(
            f2(&m, &r),
            vec![
                (s("T"), s("Q"), 30, 210, 240),
                (s("R"), s("Q"), 10, 160, 170)
            ]
        );
        // min_stay_s 25 drops Q's 20 s visit at B as a source (T's visit is longer, but it is
        // the source that must stay long enough).
        let r = req2("P", 0, 1000, 0, 2, 25, 20);
        assert_eq!(f1(&m, &r), vec![(s("Q"), 70, 50, 120, vec![s("A")])]);
        assert_eq!(f2(&m, &r), vec![(s("R"), s("Q"), 10, 160, 170)]);
    }

    #[test]
    fn lingering_exposures_of_consecutive_case_visits_add_up() {
        // P: A [0, 50), A [60, 160). Q: A [0, 100). The contract sums over pairs, so with a
        // linger of 30 the exposures [0, 80) and [60, 190) both count [60, 80).
        let m = m(&[
            ("P", "A", 0, In),
            ("P", "A", 50, Out),
            ("P", "A", 60, In),
            ("Q", "A", 0, In),
        ]);
        assert_eq!(
            f1(&m, &req2("P", 0, 1000, 0, 1, 0, 0)),
            vec![(s("Q"), 90, 0, 100, vec![s("A")])]
        );
        assert_eq!(
            f1(&m, &req2("P", 0, 1000, 0, 1, 0, 30)),
            vec![(s("Q"), 120, 0, 100, vec![s("A")])]
        );
    }
}

/// The v2 situations of `model_examples` on the engine itself, with hand-computed answers (so a
/// linger the engine ignored, or a candidate search or key range not widened by it, fails here
/// even if the model were wrong the same way), and compared with the model.
mod engine_examples {
    use super::model_examples::{f1_rows, f2_rows, s, visit_rows, F1Row, F2Row, VisitRow};
    use super::*;
    use engine::Action::{self, In, Out};

    /// Every time below is an offset from `B`, inside the retention period at `T0`.
    const B: i64 = T0 - 20_000;

    /// An engine and a model with venues `A` (stay 100), `B` (stay 300), `C` (stay 1000).
    fn both(scans: &[(&str, &str, i64, Action)]) -> (Harness, Model) {
        let venues = [
            ("A".to_owned(), Some(100)),
            ("B".to_owned(), Some(300)),
            ("C".to_owned(), Some(1000)),
        ];
        let mut m = Model::new(&venues, 7200);
        let scans: Vec<Scan> = scans
            .iter()
            .map(|&(p, v, ts, a)| Scan::new(p, v, B + ts, a))
            .collect();
        for x in &scans {
            m.insert(x.clone());
        }
        let h = Harness::open(&venues, 7200);
        ingest_batches(&h.engine, &[scans]);
        (h, m)
    }

    /// The engine's trace (checked against the model) with times shifted back to offsets.
    fn trace(
        h: &Harness,
        m: &Model,
        case: &str,
        to: i64,
        depth: u8,
        min_stay: i64,
        linger: i64,
    ) -> (Vec<VisitRow>, Vec<F1Row>, Vec<F2Row>) {
        let r = request_v2(case, B, B + to, 0, depth, min_stay, linger);
        let t = h.engine.trace(&r).unwrap();
        assert_eq!(Some(&t), m.trace(&r).as_ref(), "engine vs model");
        assert_eq!((t.min_stay_s, t.linger_s), (min_stay, linger));
        let visits = visit_rows(&t)
            .into_iter()
            .map(|(v, a, b)| (v, a - B, b - B))
            .collect();
        let f1 = f1_rows(&t)
            .into_iter()
            .map(|(p, e, a, b, v)| (p, e, a - B, b - B, v))
            .collect();
        let f2 = f2_rows(&t)
            .into_iter()
            .map(|(p, q, e, a, b)| (p, q, e, a - B, b - B))
            .collect();
        (visits, f1, f2)
    }

    #[test]
    fn linger_finds_contacts_who_arrive_after_the_case_left() {
        // P: A [0, 100). Q: A [120, 220): its only in-scan is after P's visit ends, so only a
        // candidate search widened by the linger finds it. S: A [50, 130): its out-scan is after
        // P's visit ends, so a key range not widened by the linger would make it [50, 150).
        let (h, m) = both(&[
            ("P", "A", 0, In),
            ("Q", "A", 120, In),
            ("S", "A", 50, In),
            ("S", "A", 130, Out),
        ]);
        let (visits, f1, _) = trace(&h, &m, "P", 1000, 1, 0, 0);
        assert_eq!(visits, vec![(s("A"), 0, 100)]);
        assert_eq!(f1, vec![(s("S"), 50, 50, 100, vec![s("A")])]);
        let (visits, f1, _) = trace(&h, &m, "P", 1000, 1, 0, 50);
        assert_eq!(visits, vec![(s("A"), 0, 100)]);
        assert_eq!(
            f1,
            vec![
                (s("S"), 80, 50, 130, vec![s("A")]),
                (s("Q"), 30, 120, 150, vec![s("A")])
            ]
        );
        // Past `to`: case visit [0, 90), exposure [0, 140).
        let (visits, f1, _) = trace(&h, &m, "P", 90, 1, 0, 50);
        assert_eq!(visits, vec![(s("A"), 0, 90)]);
        assert_eq!(
            f1,
            vec![
                (s("S"), 80, 50, 130, vec![s("A")]),
                (s("Q"), 20, 120, 140, vec![s("A")])
            ]
        );
        // The largest linger.
        let (_, f1, _) = trace(&h, &m, "P", 1000, 1, 0, 7200);
        assert_eq!(
            f1,
            vec![
                (s("Q"), 100, 120, 220, vec![s("A")]),
                (s("S"), 80, 50, 130, vec![s("A")])
            ]
        );
    }

    #[test]
    fn f2_lingers_too_and_min_stay_filters_both_tiers_of_sources() {
        // P: A [0, 100), B [400, 420) (20 s). Q: A [50, 150), B [200, 220) (20 s).
        // R: A [160, 260). T: B [210, 510).
        let (h, m) = both(&[
            ("P", "A", 0, In),
            ("P", "B", 400, In),
            ("P", "B", 420, Out),
            ("Q", "A", 50, In),
            ("Q", "B", 200, In),
            ("Q", "B", 220, Out),
            ("R", "A", 160, In),
            ("T", "B", 210, In),
        ]);
        // T meets P at B [400, 420) too, so T is F1 at min_stay 0 and F2 only once P's 20 s
        // visit is filtered out.
        let (visits, f1, f2) = trace(&h, &m, "P", 1000, 2, 0, 0);
        assert_eq!(visits, vec![(s("A"), 0, 100), (s("B"), 400, 420)]);
        assert_eq!(
            f1,
            vec![
                (s("Q"), 50, 50, 100, vec![s("A")]),
                (s("T"), 20, 400, 420, vec![s("B")])
            ]
        );
        assert_eq!(f2, vec![]);
        let (visits, f1, f2) = trace(&h, &m, "P", 1000, 2, 21, 20);
        assert_eq!(visits, vec![(s("A"), 0, 100)]);
        assert_eq!(f1, vec![(s("Q"), 70, 50, 120, vec![s("A")])]);
        // Q's 20 s visit at B is no source either: only R, reached through the linger.
        assert_eq!(f2, vec![(s("R"), s("Q"), 10, 160, 170)]);
        // Q as the case: its lingering visits A [50, 170) and B [200, 240) reach R and T.
        let (_, f1, f2) = trace(&h, &m, "Q", 1000, 1, 0, 20);
        assert_eq!(
            f1,
            vec![
                (s("P"), 50, 50, 100, vec![s("A")]),
                (s("T"), 30, 210, 240, vec![s("B")]),
                (s("R"), 10, 160, 170, vec![s("A")])
            ]
        );
        assert_eq!(f2, vec![]);
    }
}

/// Raw trace request: (case person index (8 = unknown person), offsets a and b of the window
/// ends, min overlap, depth, (min stay, linger)).
type RawReq = (usize, i64, i64, i64, u8, (i64, i64));

/// `min_stay_s`: 0 half the time, otherwise around the generated visit lengths (0–600 s, more
/// with re-scans), now and then the largest allowed.
fn min_stay() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => Just(0i64),
        1 => Just(1i64),
        3 => 1i64..=700,
        1 => (1i64..=10).prop_map(|k| k * 60),
        1 => Just(86_400i64),
    ]
}

/// `linger_s`: 0 half the time, otherwise up to a few stays, now and then the largest allowed.
fn linger() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => Just(0i64),
        1 => Just(1i64),
        3 => 1i64..=900,
        1 => (1i64..=10).prop_map(|k| k * 60),
        1 => Just(7_200i64),
    ]
}

fn raw_req() -> impl Strategy<Value = RawReq> {
    (
        0usize..9,
        -3600i64..1200,
        -3600i64..1200,
        prop_oneof![2 => Just(0i64), 1 => Just(1i64), 4 => 1i64..400, 1 => Just(900i64)],
        1u8..=2,
        (min_stay(), linger()),
    )
}

proptest! {
    #![proptest_config(model::strategies::config(128))]

    /// Property 4: depth 1 and 2 traces equal the model's, field by field and in order.
    #[test]
    fn trace_matches_model(
        w in any_world(-3000, 300, 48),
        seed in any::<u64>(),
        reqs in prop::collection::vec(raw_req(), 1..6),
        full_window_min in prop_oneof![Just(0i64), 1i64..200],
        (full_stay, full_linger) in (min_stay(), linger()),
    ) {
        let model = w.model();
        let h = Harness::open(&w.venues, w.default_stay_s);
        ingest_batches(&h.engine, &shuffle_and_split(&w.scans, seed, 4));

        let mut all: Vec<TraceRequest> = Vec::new();
        for (i, a, b, min, depth, (stay, linger)) in reqs {
            let person = w.persons.get(i).map_or("nobody", |p| p.as_str());
            all.push(request_v2(person, T0 + a.min(b), T0 + a.max(b), min, depth, stay, linger));
        }
        // Every person's full-window trace at depth 2, with and without the v2 rules, and the
        // contract defaults for one.
        for p in &w.persons {
            all.push(request(p, FAR_PAST, FAR_FUTURE, full_window_min, 2));
            all.push(request_v2(p, FAR_PAST, FAR_FUTURE, full_window_min, 2, full_stay, full_linger));
        }
        all.push(
            TraceRequest::new(w.persons[0].clone(), None, None, None, None, None, None, T0 + 1000)
                .unwrap(),
        );

        for r in &all {
            let got = h.engine.trace(r);
            let want = model.trace(r);
            prop_assert_eq!(
                &got, &want,
                "trace of {} in [T0{:+}, T0{:+}] min {} depth {} min_stay {} linger {}",
                r.person, r.from - T0, r.to - T0, r.min_overlap_s, r.depth, r.min_stay_s,
                r.linger_s
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
    let mut seen = [0u32; 11];
    for i in 0..n {
        let w = if i % 2 == 0 {
            plain.new_tree(&mut runner).unwrap().current()
        } else {
            grid.new_tree(&mut runner).unwrap().current()
        };
        let m = w.model();
        let mut hit = [false; 11];
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
                    exposure(&qv, &rv, 0).total == r.exposure_s
                });
                ties.count() >= 2
            });
            // v2: the linger and min_stay_s change answers (so comparing them tests something).
            let with =
                |stay, linger| m.trace(&request_v2(p, FAR_PAST, FAR_FUTURE, 60, 2, stay, linger));
            let plain = with(0, 0);
            let (lingered, filtered) = (with(0, 120), with(120, 0));
            let f1_of = |t: &Option<engine::TraceResult>| t.as_ref().map(|t| t.f1.clone());
            let f2_of = |t: &Option<engine::TraceResult>| t.as_ref().map(|t| t.f2.clone());
            hit[8] |= f1_of(&lingered) != f1_of(&plain);
            hit[9] |= f2_of(&lingered) != f2_of(&plain);
            hit[10] |= f1_of(&filtered) != f1_of(&plain);
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
        "linger changes F1",
        "linger changes F2",
        "min_stay_s changes F1",
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
        min_stay_s: 0,
        linger_s: 0,
        visits: vec![],
        f1: vec![],
        f2: vec![],
    }
}
