//! A case's standing trace: the section-5 request it answers (the case window, depth 2, the
//! policy's rules), and the answer of a case whose window is empty or that counts for nobody.
//!
//! The trace itself is an `engine::LiveTrace`, kept current person by person as scans arrive;
//! which scans reach it is decided by the windows it reports, held in the exposure index
//! (`exposure.rs`). The exactness argument is in the engine's `live_trace` module and in
//! ARCHITECTURE.md ("the path of a late scan to a tier change").

use std::sync::Arc;

use engine::{TraceRequest, TraceResult};

use crate::policy::Policy;

/// The request of the standing trace of `person` over `window`.
pub(crate) fn request(person: &str, window: (i64, i64), policy: &Policy) -> TraceRequest {
    TraceRequest {
        person: person.to_string(),
        from: window.0,
        to: window.1,
        min_overlap_s: policy.min_overlap_s,
        depth: 2,
        min_stay_s: policy.min_stay_s,
        linger_s: policy.linger_s,
    }
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
