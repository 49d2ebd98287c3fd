//! The engine's vocabulary: scans, rejection reasons, visits, venues, trace requests and answers.
//!
//! These are plain data types shared by every layer above the log. They carry no I/O and no
//! serialization format of any wire protocol (the `api` crate maps them to JSON).

use std::fmt;
use std::sync::Arc;

/// Longest person or venue id, in bytes (contract section 1).
pub const MAX_ID_LEN: usize = 64;
/// Clock-skew allowance for scans stamped in the future, in seconds (contract section 2).
pub const FUTURE_SKEW_S: i64 = 300;
/// Largest `default_stay_s` a venue may have (contract section 6).
pub const MAX_STAY_S: u32 = 86_400;
/// Default stay when a venue does not name one (contract section 3).
pub const DEFAULT_STAY_S: u32 = 7_200;
/// Default retention period in days (contract section 2).
pub const DEFAULT_RETENTION_DAYS: u32 = 21;

/// Direction of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Entry (the default). Sorts before `Out` at equal timestamps.
    In,
    /// Exit.
    Out,
}

impl Action {
    /// The contract's spelling: `"in"` or `"out"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::In => "in",
            Action::Out => "out",
        }
    }

    /// Parses the contract's spelling; anything else is `None`.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "in" => Some(Action::In),
            "out" => Some(Action::Out),
            _ => None,
        }
    }
}

/// Why a scan was not accepted. The names are the contract's reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    UnknownVenue,
    InvalidPerson,
    InvalidVenue,
    InvalidAction,
    InvalidTs,
    TooOld,
    InFuture,
}

impl RejectReason {
    /// Every reason, in a stable order (for metrics that pre-create their series).
    pub const ALL: [RejectReason; 7] = [
        RejectReason::UnknownVenue,
        RejectReason::InvalidPerson,
        RejectReason::InvalidVenue,
        RejectReason::InvalidAction,
        RejectReason::InvalidTs,
        RejectReason::TooOld,
        RejectReason::InFuture,
    ];

    /// The contract's reason code.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::UnknownVenue => "unknown_venue",
            RejectReason::InvalidPerson => "invalid_person",
            RejectReason::InvalidVenue => "invalid_venue",
            RejectReason::InvalidAction => "invalid_action",
            RejectReason::InvalidTs => "invalid_ts",
            RejectReason::TooOld => "too_old",
            RejectReason::InFuture => "in_future",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One scan as a client sent it, before validation. `ts: None` means "the server's clock at receipt".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanInput {
    pub person: String,
    pub venue: String,
    pub ts: Option<i64>,
    pub action: Action,
}

/// One item of an ingestion batch: a scan to validate, or one the caller already rejected while
/// decoding it (for example a field of the wrong JSON type). Indexes in [`IngestOutcome::rejected`]
/// refer to positions in the batch, so callers can mix both.
pub type ScanItem = Result<ScanInput, RejectReason>;

/// A rejected item of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub index: usize,
    pub reason: RejectReason,
}

/// What became of an ingestion batch once it is durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Accepted `"in"` scans (including exact duplicates of stored scans, which are acknowledged
    /// but stored once).
    pub accepted_in: u32,
    /// Accepted `"out"` scans (same rule).
    pub accepted_out: u32,
    /// How many of the accepted scans were exact duplicates of scans already stored.
    pub duplicates: u32,
    /// Rejected items, ascending by index.
    pub rejected: Vec<Rejection>,
}

impl IngestOutcome {
    /// All accepted scans, both actions.
    pub fn accepted(&self) -> u32 {
        self.accepted_in + self.accepted_out
    }
}

/// Is `id` a valid person id: 1–64 bytes of `[A-Za-z0-9._:+-]`?
pub fn is_valid_person_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'+' | b'-'))
}

/// Is `id` a valid venue id: 1–64 bytes of `[A-Za-z0-9._:-]`?
pub fn is_valid_venue_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A venue registration (create or update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenueSpec {
    pub id: String,
    pub name: String,
    pub province: Option<String>,
    /// `None` means "the server's default stay" (resolved at query time, so changing the server
    /// setting changes such venues too).
    pub default_stay_s: Option<u32>,
}

/// Why a venue registration was refused. The whole request is refused with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VenueSpecError {
    #[error("venue {index}: id must be 1-64 bytes of [A-Za-z0-9._:-]")]
    InvalidId { index: usize },
    #[error("venue {index}: name must be 1-256 bytes")]
    InvalidName { index: usize },
    #[error("venue {index}: province must be at most 256 bytes")]
    InvalidProvince { index: usize },
    #[error("venue {index}: default_stay_s must be an integer in 1..=86400")]
    InvalidStay { index: usize },
}

/// Longest venue name or province, in bytes.
pub const MAX_VENUE_TEXT: usize = 256;

/// A registered venue as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenueInfo {
    pub id: Arc<str>,
    pub name: String,
    pub province: Option<String>,
    /// The effective stay in seconds (the venue's own, or the server default).
    pub default_stay_s: u32,
    /// Persons present now.
    pub present: u32,
}

/// A derived visit `[start, end)` of one person at one venue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    pub venue: Arc<str>,
    pub start: i64,
    pub end: i64,
}

/// A contact-trace request (contract section 5). Defaults are resolved by [`TraceRequest::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRequest {
    pub person: String,
    pub from: i64,
    pub to: i64,
    pub min_overlap_s: i64,
    /// 1 or 2.
    pub depth: u8,
    /// Case (and F1) visits shorter than this, unclipped, are left out (v2); `0..=86400`.
    pub min_stay_s: i64,
    /// A case visit `c` exposes its venue during `[c.start, c.end + linger_s)` (v2); `0..=7200`.
    pub linger_s: i64,
}

/// Default trace window: 14 days.
pub const DEFAULT_TRACE_WINDOW_S: i64 = 14 * 86_400;
/// Default minimum overlap: 15 minutes.
pub const DEFAULT_MIN_OVERLAP_S: i64 = 900;
/// Largest `min_stay_s` of a trace (contract section 5).
pub const MAX_TRACE_MIN_STAY_S: i64 = 86_400;
/// Largest `linger_s` of a trace (contract section 5).
pub const MAX_TRACE_LINGER_S: i64 = 7_200;

/// Why a trace request is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceRequestError {
    #[error("from must not be after to")]
    FromAfterTo,
    #[error("depth must be 1 or 2")]
    BadDepth,
    #[error("min_overlap_s must be >= 0")]
    NegativeOverlap,
    #[error("min_stay_s must be in 0..=86400")]
    BadMinStay,
    #[error("linger_s must be in 0..=7200")]
    BadLinger,
}

/// The contract's default time window (`to = now`, `from = to - 14 days`), shared by traces and
/// person-visit lookups; `from > to` is refused.
pub fn resolve_window(
    from: Option<i64>,
    to: Option<i64>,
    now: i64,
) -> Result<(i64, i64), TraceRequestError> {
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to.saturating_sub(DEFAULT_TRACE_WINDOW_S));
    if from > to {
        return Err(TraceRequestError::FromAfterTo);
    }
    Ok((from, to))
}

impl TraceRequest {
    /// Builds a request, filling the contract's defaults (`to = now`, `from = to - 14 days`,
    /// `min_overlap_s = 900`, `depth = 2`, `min_stay_s = 0`, `linger_s = 0`) and checking the
    /// bounds.
    // One parameter per field of the contract's request body, in its order, plus `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        person: String,
        from: Option<i64>,
        to: Option<i64>,
        min_overlap_s: Option<i64>,
        depth: Option<u8>,
        min_stay_s: Option<i64>,
        linger_s: Option<i64>,
        now: i64,
    ) -> Result<TraceRequest, TraceRequestError> {
        let (from, to) = resolve_window(from, to, now)?;
        let min_overlap_s = min_overlap_s.unwrap_or(DEFAULT_MIN_OVERLAP_S);
        let depth = depth.unwrap_or(2);
        if !(1..=2).contains(&depth) {
            return Err(TraceRequestError::BadDepth);
        }
        if min_overlap_s < 0 {
            return Err(TraceRequestError::NegativeOverlap);
        }
        let min_stay_s = min_stay_s.unwrap_or(0);
        if !(0..=MAX_TRACE_MIN_STAY_S).contains(&min_stay_s) {
            return Err(TraceRequestError::BadMinStay);
        }
        let linger_s = linger_s.unwrap_or(0);
        if !(0..=MAX_TRACE_LINGER_S).contains(&linger_s) {
            return Err(TraceRequestError::BadLinger);
        }
        Ok(TraceRequest {
            person,
            from,
            to,
            min_overlap_s,
            depth,
            min_stay_s,
            linger_s,
        })
    }
}

/// An F1 contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct F1Contact {
    pub person: Arc<str>,
    pub exposure_s: i64,
    pub first_contact: i64,
    /// The largest `min(c.end + linger_s, q.end)` over the pairs with positive overlap (v2).
    pub last_contact: i64,
    /// Sorted, distinct.
    pub venues: Vec<Arc<str>>,
}

/// Visits of a person stored elsewhere (in cluster mode, on another shard): a source of
/// [`crate::Engine::exposures_to`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposureSource {
    pub person: String,
    /// Already clipped as the trace step wants them (contract section 5).
    pub visits: Vec<Visit>,
}

/// A person of this store exposed to some of the [`ExposureSource`]s: its best one (largest
/// exposure, ties by the smallest source id) and the overlap with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcedExposure {
    pub person: Arc<str>,
    /// Index of the best source in the list given.
    pub source: usize,
    pub exposure_s: i64,
    pub first_contact: i64,
    pub last_contact: i64,
    /// Venues of the overlaps with that source, sorted, distinct.
    pub venues: Vec<Arc<str>>,
}

/// An F2 contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct F2Contact {
    pub person: Arc<str>,
    pub via: Arc<str>,
    pub exposure_s: i64,
    /// First overlap start with `via`.
    pub first_contact: i64,
    /// Last overlap end with `via` (v2).
    pub last_contact: i64,
}

/// The answer to a trace (contract section 5), in the contract's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceResult {
    pub case: Arc<str>,
    pub from: i64,
    pub to: i64,
    pub min_overlap_s: i64,
    /// Echoed from the request (v2).
    pub min_stay_s: i64,
    /// Echoed from the request (v2).
    pub linger_s: i64,
    /// The case's visits of unclipped length `>= min_stay_s`, clipped to `[from, to]`,
    /// ascending by start (without the linger).
    pub visits: Vec<Visit>,
    pub f1: Vec<F1Contact>,
    pub f2: Vec<F2Contact>,
}

/// Store-wide counts (`GET /v1/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Accepted scans stored (exact duplicates count once; purged scans no longer count).
    pub scans: u64,
    /// Registered venues.
    pub venues: u64,
    /// Distinct persons with at least one stored scan.
    pub persons: u64,
    /// Bytes of log segments on disk (allocated capacity of every live segment).
    pub log_bytes: u64,
    /// Persons present now, all venues together.
    pub present: u64,
}

/// One accepted, durable scan, as the live feed and its replay report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEvent {
    /// The scan's position in the log: strictly increasing in acceptance order, never reused.
    pub seq: u64,
    pub person: Arc<str>,
    pub venue: Arc<str>,
    pub ts: i64,
    pub action: Action,
}

/// Why the server ended a visit that no "out" scan ended (contract section 6, v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// The visit reached its deadline (`start + stay`, or the last re-scan + stay).
    Deadline,
    /// The person checked in at another venue.
    Elsewhere,
}

impl ExitReason {
    /// The feed's spelling: `"deadline"` or `"elsewhere"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Deadline => "deadline",
            ExitReason::Elsewhere => "elsewhere",
        }
    }
}

/// An exit the server inferred at a watched venue: the person stopped being present at `venue`
/// at `ts` without an "out" scan there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitEvent {
    pub person: Arc<str>,
    pub venue: Arc<str>,
    pub ts: i64,
    pub reason: ExitReason,
}

/// One audit entry: who looked up whom, when, through which route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuditEntry {
    pub ts: i64,
    pub who: String,
    pub action: String,
    pub subject: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_ids_follow_the_contract_alphabet() {
        assert!(is_valid_person_id("a+b:c.d_e-f9"));
        assert!(!is_valid_person_id(""));
        assert!(!is_valid_person_id("has space"));
        assert!(!is_valid_person_id("é"));
        assert!(is_valid_person_id(&"x".repeat(64)));
        assert!(!is_valid_person_id(&"x".repeat(65)));
    }

    #[test]
    fn venue_ids_do_not_allow_plus() {
        assert!(is_valid_venue_id("ST-MARKET-3"));
        assert!(!is_valid_venue_id("a+b"));
        assert!(!is_valid_venue_id("a/b"));
    }

    #[test]
    fn trace_defaults_follow_the_contract() {
        let r =
            TraceRequest::new("p".into(), None, None, None, None, None, None, 1_000_000).unwrap();
        assert_eq!(r.to, 1_000_000);
        assert_eq!(r.from, 1_000_000 - 14 * 86_400);
        assert_eq!(r.min_overlap_s, 900);
        assert_eq!(r.depth, 2);
        assert_eq!(r.min_stay_s, 0);
        assert_eq!(r.linger_s, 0);
        assert_eq!(
            TraceRequest::new("p".into(), Some(5), Some(4), None, None, None, None, 0),
            Err(TraceRequestError::FromAfterTo)
        );
        assert_eq!(
            TraceRequest::new("p".into(), None, None, None, Some(3), None, None, 0),
            Err(TraceRequestError::BadDepth)
        );
    }

    #[test]
    fn trace_min_stay_and_linger_bounds() {
        let new = |stay, linger| {
            TraceRequest::new("p".into(), None, None, None, None, stay, linger, 0)
                .map(|r| (r.min_stay_s, r.linger_s))
        };
        assert_eq!(new(Some(0), Some(0)), Ok((0, 0)));
        assert_eq!(new(Some(86_400), Some(7_200)), Ok((86_400, 7_200)));
        assert_eq!(new(Some(600), None), Ok((600, 0)));
        assert_eq!(new(None, Some(1800)), Ok((0, 1800)));
        assert_eq!(new(Some(-1), None), Err(TraceRequestError::BadMinStay));
        assert_eq!(new(Some(86_401), None), Err(TraceRequestError::BadMinStay));
        assert_eq!(new(None, Some(-1)), Err(TraceRequestError::BadLinger));
        assert_eq!(new(None, Some(7_201)), Err(TraceRequestError::BadLinger));
        assert_eq!(
            TraceRequestError::BadMinStay.to_string(),
            "min_stay_s must be in 0..=86400"
        );
        assert_eq!(
            TraceRequestError::BadLinger.to_string(),
            "linger_s must be in 0..=7200"
        );
    }
}
