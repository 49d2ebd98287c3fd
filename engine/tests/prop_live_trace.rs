//! Live traces (`Engine::live_trace`, `refresh_live_trace`) against fresh traces and the model:
//! random scans arrive in random batches after the live traces are derived; after each batch
//! every live trace is refreshed with the persons of that batch (the persons whose scans
//! changed), and its answer must equal a trace from scratch (`Engine::trace`) and the brute-force
//! model over the scans stored so far. Its listings (what the tier table keeps) must equal the
//! answer's contacts, as reported change by change.
//!
//! Which scans reach a refresh (the windows) is the health domain's part, checked by
//! `health/tests/standing_model.rs`; here every scan does.
#![allow(clippy::unwrap_used)]

mod model;

use std::collections::BTreeMap;
use std::sync::Arc;

use engine::{Degree, Listing, LiveChanges, PersonKey, TraceRequest, TraceResult};
use model::strategies::any_world;
use model::*;
use proptest::prelude::*;

/// The answer for a case person with no stored scan: no visits, no contacts.
fn empty_like(r: &TraceRequest) -> TraceResult {
    TraceResult {
        case: Arc::from(r.person.as_str()),
        from: r.from,
        to: r.to,
        min_overlap_s: r.min_overlap_s,
        min_stay_s: r.min_stay_s,
        linger_s: r.linger_s,
        visits: Vec::new(),
        f1: Vec::new(),
        f2: Vec::new(),
    }
}

/// The listings an answer implies.
fn listings_of(t: &TraceResult) -> BTreeMap<Arc<str>, Listing> {
    let mut out = BTreeMap::new();
    for c in &t.f1 {
        out.insert(
            c.person.clone(),
            Listing {
                degree: Degree::F1,
                first_contact: c.first_contact,
                last_contact: c.last_contact,
            },
        );
    }
    for c in &t.f2 {
        out.insert(
            c.person.clone(),
            Listing {
                degree: Degree::F2,
                first_contact: c.first_contact,
                last_contact: c.last_contact,
            },
        );
    }
    out
}

fn apply(held: &mut BTreeMap<Arc<str>, Listing>, changes: &LiveChanges) {
    for c in &changes.listings {
        match c.listing {
            Some(l) => held.insert(c.person.clone(), l),
            None => held.remove(&c.person),
        };
    }
}

proptest! {
    #![proptest_config(model::strategies::config(160))]

    #[test]
    fn refreshed_live_traces_equal_fresh_traces(
        w in any_world(-3000, 300, 48),
        seed in any::<u64>(),
        first_share in 0usize..=4,
        windows in prop::collection::vec((0usize..9, -3600i64..1200, -3600i64..1200), 1..4),
        min in prop_oneof![Just(0i64), Just(1i64), 1i64..400, Just(900i64)],
        min_stay in prop_oneof![4 => Just(0i64), 1 => 1i64..700],
        linger in prop_oneof![4 => Just(0i64), 1 => 1i64..900],
    ) {
        let h = Harness::open(&w.venues, w.default_stay_s);
        let batches = shuffle_and_split(&w.scans, seed, 6);
        // Some batches before the traces are derived, the rest after.
        let split = first_share.min(batches.len());
        ingest_batches(&h.engine, &batches[..split]);
        let mut model = Model::new(&w.venues, w.default_stay_s);
        for b in &batches[..split] {
            for s in b {
                model.insert(s.clone());
            }
        }
        let requests: Vec<TraceRequest> = windows
            .iter()
            .map(|&(i, a, b)| {
                let person = w.persons.get(i).map_or("nobody", |p| p.as_str());
                request_v2(person, T0 + a.min(b), T0 + a.max(b), min, 2, min_stay, linger)
            })
            .chain(w.persons.iter().map(|p| request_v2(p, FAR_PAST, FAR_FUTURE, min, 2, min_stay, linger)))
            .collect();
        let mut lives = Vec::new();
        for r in &requests {
            let (live, changes) = h.engine.live_trace(r);
            let mut held = BTreeMap::new();
            apply(&mut held, &changes);
            lives.push((live, held));
        }
        for (n, b) in batches[split..].iter().enumerate() {
            ingest_batches(&h.engine, std::slice::from_ref(b));
            for s in b {
                model.insert(s.clone());
            }
            let persons: Vec<PersonKey> =
                b.iter().filter_map(|s| h.engine.person_key(&s.person)).collect();
            for (r, (live, held)) in requests.iter().zip(lives.iter_mut()) {
                let changes = h.engine.refresh_live_trace(live, &persons);
                apply(held, &changes);
                let got = live.result();
                let fresh = h.engine.trace(r).unwrap_or_else(|| empty_like(r));
                let want = model.trace(r).unwrap_or_else(|| empty_like(r));
                prop_assert_eq!(&fresh, &want, "engine trace vs model");
                prop_assert_eq!(
                    &got, &want,
                    "after batch {} of {}: live trace of {} in [T0{:+}, T0{:+}] min {} stay {} linger {}",
                    n, batches.len() - split, r.person, r.from - T0, r.to - T0, min, min_stay, linger
                );
                prop_assert_eq!(&*held, &listings_of(&want), "listings told");
                prop_assert_eq!(live.f1_len(), want.f1.len());
                prop_assert_eq!(live.f2_len(), want.f2.len());
            }
        }
    }
}
