//! Deriving one case's standing trace, and the windows in which a newly stored scan could change
//! it.
//!
//! A scan at time `t` changes its person's visits only in `[t, t + max_stay)`: it can end the
//! visit open at `t`, open one at its own venue, or cut short a re-scan chain, and the contract's
//! visit machine is back in step at the next in-scan or by the deadline. It can add presence only
//! at its own venue. So a case's trace can change through a new scan only if
//! - its venue is a source venue (a case visit, or an F1's visit that plays the case's role for
//!   F2) and `t` falls in `[source.start - max_stay, source.end + linger]`: a **venue window**;
//! - or its person is one whose visits the trace reads: the case's person and every F1 (their
//!   visits are sources, whose unclipped length the `min_stay_s` rule reads) with `t` in
//!   `[min(from, first visit start) - max_stay, max(to + linger, last visit end)]` over their
//!   visits that reach into the window, and every F2 with `t` in
//!   `[from - max_stay, to + linger]`: a **person window**.
//!
//! Persons outside both can only lose presence at the source venues, which cannot make them
//! contacts. The proptest in `tests/standing_model.rs` checks this against re-deriving
//! everything from scratch.

use std::sync::Arc;

use engine::{Engine, PersonKey, TraceRequest, TraceResult, VenueKey};

use crate::policy::Policy;

/// One derivation of a case's standing trace.
pub(crate) struct Derived {
    pub trace: Arc<TraceResult>,
    /// `(venue, lo, hi)`: a scan at `venue` with `lo <= ts <= hi` may change the trace.
    pub venue_windows: Vec<(VenueKey, i64, i64)>,
    /// `(person, lo, hi)`: a scan of `person` with `lo <= ts <= hi` may change the trace.
    pub person_windows: Vec<(PersonKey, i64, i64)>,
    /// The case's person has no stored scan yet: any scan of theirs may change the trace.
    pub person_unseen: bool,
}

/// An answer with no visits and no contacts over `[from, to]`.
pub(crate) fn empty_trace(person: &str, from: i64, to: i64, policy: &Policy) -> TraceResult {
    TraceResult {
        case: Arc::from(person),
        from,
        to,
        min_overlap_s: policy.min_overlap_s,
        min_stay_s: policy.min_stay_s,
        linger_s: policy.linger_s,
        visits: Vec::new(),
        f1: Vec::new(),
        f2: Vec::new(),
    }
}

/// Derives the standing trace of `person` over `window` under `policy`.
pub(crate) fn derive(
    engine: &Engine,
    person: &str,
    window: (i64, i64),
    policy: &Policy,
) -> Derived {
    let (from, to) = window;
    if from > to {
        // An empty window stays empty: nothing can change it.
        return Derived {
            trace: Arc::new(empty_trace(person, from, to, policy)),
            venue_windows: Vec::new(),
            person_windows: Vec::new(),
            person_unseen: false,
        };
    }
    let max_stay = engine.max_stay_s();
    let linger = policy.linger_s;
    let request = TraceRequest {
        person: person.to_string(),
        from,
        to,
        min_overlap_s: policy.min_overlap_s,
        depth: 2,
        min_stay_s: policy.min_stay_s,
        linger_s: linger,
    };
    let Some(trace) = engine.trace(&request) else {
        // No stored scan of the case's person (yet, or any more): any scan of theirs counts.
        let key = engine.person_key(person);
        return Derived {
            trace: Arc::new(empty_trace(person, from, to, policy)),
            venue_windows: Vec::new(),
            person_windows: key.map(|k| (k, i64::MIN, i64::MAX)).into_iter().collect(),
            person_unseen: key.is_none(),
        };
    };
    let mut venue_windows = Vec::new();
    let mut person_windows = Vec::new();
    let venue_key = |v: &str| engine.venue_key(v);
    for c in &trace.visits {
        if let Some(k) = venue_key(&c.venue) {
            venue_windows.push((k, c.start - max_stay, c.end + linger));
        }
    }
    // The window of a person whose visits are sources.
    let source_person_window = |id: &str| -> Option<(PersonKey, i64, i64, Vec<engine::Visit>)> {
        let key = engine.person_key(id)?;
        let visits = engine.visits(id, from, to + linger).unwrap_or_default();
        let lo = visits
            .iter()
            .map(|v| v.start)
            .min()
            .unwrap_or(from)
            .min(from);
        let hi = visits
            .iter()
            .map(|v| v.end)
            .max()
            .unwrap_or(to + linger)
            .max(to + linger);
        Some((key, lo - max_stay, hi, visits))
    };
    if let Some((key, lo, hi, _)) = source_person_window(person) {
        person_windows.push((key, lo, hi));
    }
    for q in &trace.f1 {
        let Some((key, lo, hi, visits)) = source_person_window(&q.person) else {
            continue;
        };
        person_windows.push((key, lo, hi));
        for v in visits {
            if v.end - v.start < policy.min_stay_s {
                continue;
            }
            let start = v.start.max(q.first_contact);
            let end = v.end.min(to);
            if end > start {
                if let Some(k) = venue_key(&v.venue) {
                    venue_windows.push((k, start - max_stay, end + linger));
                }
            }
        }
    }
    for r in &trace.f2 {
        if let Some(key) = engine.person_key(&r.person) {
            person_windows.push((key, from - max_stay, to + linger));
        }
    }
    Derived {
        trace: Arc::new(trace),
        venue_windows,
        person_windows,
        person_unseen: false,
    }
}
