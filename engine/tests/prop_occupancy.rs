//! Live occupancy (`CONTRACT.md` section 4) against the brute-force model in `tests/model`.
//!
//! `present(V)` must equal the number of persons whose visit at V satisfies
//! `start <= now < end`, computed from the scans with `ts <= now` only. A scan is reflected as soon
//! as it is acknowledged (checked with no waiting right after each ingest); a change caused only by
//! the clock moving (auto check-outs, scans stamped in the future becoming current) must show
//! within 1 second (checked by polling for up to 1.5 s after moving the manual clock).
#![allow(clippy::unwrap_used)]

mod model;

use std::time::{Duration, Instant};

use engine::Action;
use model::strategies::any_world;
use model::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// How long a clock-driven change may take to show (contract: 1 s; plus scheduling slack).
const LAG: Duration = Duration::from_millis(1500);

/// (per venue: `occupancy()`, `venue().present`), and `stats().present`.
type Observed = (Vec<(Option<u32>, Option<u32>)>, u64);

fn observe(h: &Harness, venues: &[String]) -> Observed {
    let per = venues
        .iter()
        .map(|v| (h.engine.occupancy(v), h.engine.venue(v).map(|i| i.present)))
        .collect();
    (per, h.engine.stats().present)
}

fn expected(m: &Model, venues: &[String], now: i64) -> Observed {
    let per: Vec<(Option<u32>, Option<u32>)> = venues
        .iter()
        .map(|v| {
            let n = m.occupancy(v, now);
            (Some(n), Some(n))
        })
        .collect();
    let total = per.iter().map(|p| u64::from(p.0.unwrap_or(0))).sum();
    (per, total)
}

/// Checks the engine's occupancy against the model at the clock's current time: at once if
/// `strict`, else within [`LAG`].
fn check(h: &Harness, m: &Model, strict: bool, what: &str) -> Result<(), TestCaseError> {
    let now = h.engine.now();
    let venues: Vec<String> = m.venues.keys().cloned().collect();
    let want = expected(m, &venues, now);
    let deadline = Instant::now() + LAG;
    loop {
        let got = observe(h, &venues);
        if got == want {
            return Ok(());
        }
        if strict || Instant::now() >= deadline {
            return Err(TestCaseError::fail(format!(
                "{what}: occupancy at T0{:+} ({}): venues {:?}\n got  {:?}\n want {:?}",
                now - T0,
                if strict {
                    "right after ingest"
                } else {
                    "after 1.5 s"
                },
                venues,
                got,
                want
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ingest(h: &Harness, m: &mut Model, scans: &[Scan]) {
    ingest_batches(&h.engine, &[scans.to_vec()]);
    for s in scans {
        m.insert(s.clone());
    }
}

#[test]
fn auto_check_out_and_future_scans_follow_the_clock() {
    let venues = vec![("A".to_owned(), Some(60)), ("B".to_owned(), None)];
    let h = Harness::open(&venues, 600);
    let mut m = Model::new(&venues, 600);
    assert_eq!(h.engine.occupancy("nope"), None);
    ingest(
        &h,
        &mut m,
        &[
            Scan::new("p", "A", T0 - 10, Action::In),
            Scan::new("q", "B", T0 + 200, Action::In),
            Scan::new("r", "A", T0 - 100, Action::In),
        ],
    );
    check(&h, &m, true, "after ingest").unwrap();
    assert_eq!(h.engine.occupancy("A"), Some(1));
    assert_eq!(h.engine.occupancy("B"), Some(0));
    h.clock.set(T0 + 50);
    check(&h, &m, false, "at the deadline").unwrap();
    assert_eq!(h.engine.occupancy("A"), Some(0));
    h.clock.set(T0 + 200);
    check(&h, &m, false, "future scan becomes current").unwrap();
    assert_eq!(h.engine.occupancy("B"), Some(1));
    // A late "out" closes the visit at once.
    ingest(&h, &mut m, &[Scan::new("q", "B", T0 + 150, Action::Out)]);
    check(&h, &m, true, "late out").unwrap();
}

/// Splits scans into (ingested at `T0`, ingested at `T1`); scans too far in the future for
/// both are dropped.
fn phases(scans: &[Scan], late: &[bool], t1: i64) -> (Vec<Scan>, Vec<Scan>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, s) in scans.iter().enumerate() {
        let is_late = late.get(i).copied().unwrap_or(false);
        if s.ts <= T0 + 300 && !is_late {
            a.push(s.clone());
        } else if s.ts <= t1 + 300 {
            b.push(s.clone());
        }
    }
    (a, b)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    })]

    /// Property 5: occupancy equals the model at every step of a timeline: ingest at `T0`, move
    /// the clock to a point in between and to `T1`, ingest late scans at `T1`, move to `T2`.
    #[test]
    fn occupancy_matches_model(
        w in any_world(-2000, 1800, 40),
        late in prop::collection::vec(prop::bool::weighted(0.3), 40),
        d1 in 0i64..1500,
        mid in 0i64..1500,
        d2 in 0i64..900,
    ) {
        let t1 = T0 + d1;
        let (a, b) = phases(&w.scans, &late, t1);
        let h = Harness::open(&w.venues, w.default_stay_s);
        let mut m = w.model();
        m.scans.clear();

        ingest(&h, &mut m, &a);
        check(&h, &m, true, "phase 1 ingested at T0")?;
        h.clock.set(T0 + mid.min(d1));
        check(&h, &m, false, "clock moved between T0 and T1")?;
        h.clock.set(t1);
        check(&h, &m, false, "clock moved to T1")?;
        ingest(&h, &mut m, &b);
        check(&h, &m, true, "phase 2 ingested at T1")?;
        h.clock.set(t1 + d2);
        check(&h, &m, false, "clock moved to T2")?;
    }
}
