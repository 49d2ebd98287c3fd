//! An independent brute-force model of `CONTRACT.md` sections 2–5, written from the contract text
//! alone (not from the engine's code), plus the shared harness of the property suites.
//!
//! The model keeps the set of distinct accepted scans and recomputes everything from scratch on
//! every question: visits (section 3, the pseudo-code transcribed line by line), occupancy
//! (section 4) and contact traces (section 5, quadratic loops over every pair of visits). It is
//! deliberately slow and obvious; the property suites (`prop_visits`, `prop_trace`,
//! `prop_occupancy`) compare the engine's answers with it.
//!
//! Reading notes where the contract leaves room (the model picks the literal reading):
//! - visits of zero length (an `in` and an `out` at the same second, or two `in`s at different
//!   venues at the same second) are emitted, as the pseudo-code emits them;
//! - an F2 contact's `first_contact` is taken over the same pairs that make up `E_via(R)`, i.e. the
//!   via's visits clipped to `[first_contact(via), to]`;
//! - the trace answer echoes the requested `min_overlap_s` (0 stays 0; only the threshold is
//!   `max(min_overlap_s, 1)`), `min_stay_s` and `linger_s`;
//! - v2: the `min_stay_s` filter looks at a visit's unclipped length (before clipping to the
//!   window, or to `[first_contact, to]` for an F1's visits); the linger extends each case (or F1)
//!   visit's end *after* clipping, so an exposure may run past `to`; the answer's `visits` are the
//!   clipped case visits without the linger; an F2 contact's `last_contact` is taken over the same
//!   pairs as its `first_contact`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use engine::{
    Action, Config, Durability, Engine, F1Contact, F2Contact, ManualClock, ScanInput, ScanItem,
    TraceRequest, TraceResult, VenueSpec, Visit,
};

/// A fixed "now" far from zero, so that negative or overflowing arithmetic would show.
pub const T0: i64 = 1_700_000_000;

/// One stored scan, with its timestamp resolved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scan {
    pub person: String,
    pub venue: String,
    pub ts: i64,
    pub action: Action,
}

impl Scan {
    pub fn new(person: &str, venue: &str, ts: i64, action: Action) -> Scan {
        Scan {
            person: person.to_owned(),
            venue: venue.to_owned(),
            ts,
            action,
        }
    }

    /// The scan as an ingestion item with an explicit timestamp.
    pub fn item(&self) -> ScanItem {
        Ok(ScanInput {
            person: self.person.clone(),
            venue: self.venue.clone(),
            ts: Some(self.ts),
            action: self.action,
        })
    }
}

/// A visit as the model derives it: `[start, end)` at `venue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MVisit {
    pub venue: String,
    pub start: i64,
    pub end: i64,
}

impl MVisit {
    fn to_visit(&self) -> Visit {
        Visit {
            venue: Arc::from(self.venue.as_str()),
            start: self.start,
            end: self.end,
        }
    }
}

/// The model store: venues with their stays and the set of distinct accepted scans.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Venue id -> its own stay (`None`: the server default).
    pub venues: BTreeMap<String, Option<u32>>,
    /// The server's default stay.
    pub default_stay_s: u32,
    /// Distinct stored scans (exact duplicates are stored once).
    pub scans: BTreeSet<Scan>,
}

impl Model {
    pub fn new(venues: &[(String, Option<u32>)], default_stay_s: u32) -> Model {
        Model {
            venues: venues.iter().cloned().collect(),
            default_stay_s,
            scans: BTreeSet::new(),
        }
    }

    /// Stores a scan; `true` if it was new (not an exact duplicate).
    pub fn insert(&mut self, scan: Scan) -> bool {
        assert!(
            self.venues.contains_key(&scan.venue),
            "model: unknown venue"
        );
        self.scans.insert(scan)
    }

    /// `stay(V)`: the venue's `default_stay_s`, else the server setting.
    pub fn stay(&self, venue: &str) -> i64 {
        i64::from(self.venues[venue].unwrap_or(self.default_stay_s))
    }

    /// Every person with at least one stored scan, in byte order.
    pub fn persons(&self) -> BTreeSet<String> {
        self.scans.iter().map(|s| s.person.clone()).collect()
    }

    /// Section 3, literally: the person's visits from the given scans (all of them, whatever their
    /// timestamp), in the order the algorithm emits them (which is ascending by start).
    pub fn all_visits_with(&self, person: &str, max_ts: Option<i64>) -> Vec<MVisit> {
        let mut scans: Vec<&Scan> = self
            .scans
            .iter()
            .filter(|s| s.person == person && max_ts.is_none_or(|m| s.ts <= m))
            .collect();
        // (ts, action) with "in" before "out" at equal ts, then venue id bytes.
        scans.sort_by(|a, b| {
            (a.ts, a.action, a.venue.as_bytes()).cmp(&(b.ts, b.action, b.venue.as_bytes()))
        });

        struct Open {
            venue: String,
            start: i64,
            deadline: i64,
        }
        let mut out = Vec::new();
        let mut open: Option<Open> = None;
        for s in scans {
            if let Some(o) = &open {
                if s.ts >= o.deadline {
                    // auto check-out
                    out.push(MVisit {
                        venue: o.venue.clone(),
                        start: o.start,
                        end: o.deadline,
                    });
                    open = None;
                }
            }
            match s.action {
                Action::In => {
                    let same = open.as_ref().is_some_and(|o| o.venue == s.venue);
                    if same {
                        // re-scan at the same venue extends the stay
                        if let Some(o) = open.as_mut() {
                            o.deadline = s.ts + self.stay(&s.venue);
                        }
                    } else {
                        if let Some(o) = &open {
                            // implicit check-out
                            out.push(MVisit {
                                venue: o.venue.clone(),
                                start: o.start,
                                end: s.ts,
                            });
                        }
                        open = Some(Open {
                            venue: s.venue.clone(),
                            start: s.ts,
                            deadline: s.ts + self.stay(&s.venue),
                        });
                    }
                }
                Action::Out => {
                    if let Some(o) = &open {
                        if o.venue == s.venue {
                            out.push(MVisit {
                                venue: o.venue.clone(),
                                start: o.start,
                                end: s.ts,
                            });
                            open = None;
                        }
                    }
                    // an "out" with no open visit at that venue is ignored
                }
            }
        }
        if let Some(o) = open {
            out.push(MVisit {
                venue: o.venue,
                start: o.start,
                end: o.deadline,
            });
        }
        out
    }

    /// All of a person's visits (every stored scan).
    pub fn all_visits(&self, person: &str) -> Vec<MVisit> {
        self.all_visits_with(person, None)
    }

    /// `Engine::visits`: visits with `start < to` and `end >= from`, unclipped, ascending by start;
    /// `None` if the person has no stored scan.
    pub fn visits(&self, person: &str, from: i64, to: i64) -> Option<Vec<Visit>> {
        if !self.scans.iter().any(|s| s.person == person) {
            return None;
        }
        let mut v: Vec<MVisit> = self
            .all_visits(person)
            .into_iter()
            .filter(|v| v.start < to && v.end >= from)
            .collect();
        // The algorithm already emits in start order; a stable sort keeps emission order on ties.
        v.sort_by_key(|v| v.start);
        Some(v.iter().map(MVisit::to_visit).collect())
    }

    /// Section 4: persons whose visit at `venue` is open at `now` (`start <= now < end`), using
    /// only the scans with `ts <= now`.
    pub fn occupancy(&self, venue: &str, now: i64) -> u32 {
        let mut n = 0;
        for p in self.persons() {
            let present = self
                .all_visits_with(&p, Some(now))
                .iter()
                .any(|v| v.venue == venue && v.start <= now && now < v.end);
            if present {
                n += 1;
            }
        }
        n
    }

    /// Section 5, by brute force. `None` if the case person has no stored scan.
    pub fn trace(&self, req: &TraceRequest) -> Option<TraceResult> {
        let p = req.person.as_str();
        if !self.scans.iter().any(|s| s.person == p) {
            return None;
        }
        let (from, to) = (req.from, req.to);
        let threshold = req.min_overlap_s.max(1);
        let (min_stay, linger) = (req.min_stay_s, req.linger_s);
        let all: BTreeMap<String, Vec<MVisit>> = self
            .persons()
            .into_iter()
            .map(|q| {
                let v = self.all_visits(&q);
                (q, v)
            })
            .collect();

        // Case visits: unclipped length >= min_stay_s, clipped to [from, to], zero-length ones
        // dropped, ascending by start.
        let case = clip(&long_enough(&all[p], min_stay), from, to);

        // F1.
        struct F1 {
            person: String,
            exposure: i64,
            first: i64,
            last: i64,
            venues: BTreeSet<String>,
        }
        let mut f1: Vec<F1> = Vec::new();
        for (q, qv) in &all {
            if q == p {
                continue;
            }
            let x = exposure(&case, qv, linger);
            if x.total >= threshold {
                f1.push(F1 {
                    person: q.clone(),
                    exposure: x.total,
                    first: x.first.expect("positive exposure has a first contact"),
                    last: x.last.expect("positive exposure has a last contact"),
                    venues: x.venues,
                });
            }
        }
        f1.sort_by(|a, b| {
            b.exposure
                .cmp(&a.exposure)
                .then_with(|| a.person.as_bytes().cmp(b.person.as_bytes()))
        });

        // F2.
        let mut f2: Vec<F2Contact> = Vec::new();
        if req.depth >= 2 {
            let f1_names: BTreeSet<&str> = f1.iter().map(|c| c.person.as_str()).collect();
            for (r, rv) in &all {
                if r == p || f1_names.contains(r.as_str()) {
                    continue;
                }
                // (exposure, via, first and last contact with via)
                let mut best: Option<(i64, &str, i64, i64)> = None;
                for q in &f1 {
                    let qclip = clip(&long_enough(&all[&q.person], min_stay), q.first, to);
                    let x = exposure(&qclip, rv, linger);
                    let e = x.total;
                    if e < threshold {
                        continue;
                    }
                    let better = match best {
                        None => true,
                        Some((be, bq, _, _)) => {
                            e > be || (e == be && q.person.as_bytes() < bq.as_bytes())
                        }
                    };
                    if better {
                        best = Some((
                            e,
                            q.person.as_str(),
                            x.first.expect("positive exposure"),
                            x.last.expect("positive exposure"),
                        ));
                    }
                }
                if let Some((e, via, first, last)) = best {
                    f2.push(F2Contact {
                        person: Arc::from(r.as_str()),
                        via: Arc::from(via),
                        exposure_s: e,
                        first_contact: first,
                        last_contact: last,
                    });
                }
            }
            f2.sort_by(|a, b| {
                b.exposure_s
                    .cmp(&a.exposure_s)
                    .then_with(|| a.person.as_bytes().cmp(b.person.as_bytes()))
            });
        }

        Some(TraceResult {
            case: Arc::from(p),
            from,
            to,
            min_overlap_s: req.min_overlap_s,
            min_stay_s: req.min_stay_s,
            linger_s: req.linger_s,
            visits: case.iter().map(MVisit::to_visit).collect(),
            f1: f1
                .into_iter()
                .map(|c| F1Contact {
                    person: Arc::from(c.person.as_str()),
                    exposure_s: c.exposure,
                    first_contact: c.first,
                    last_contact: c.last,
                    venues: c.venues.iter().map(|v| Arc::from(v.as_str())).collect(),
                })
                .collect(),
            f2,
        })
    }
}

/// Visits clipped to `[from, to]`; those of zero length after clipping are dropped; ascending by
/// start.
pub fn clip(visits: &[MVisit], from: i64, to: i64) -> Vec<MVisit> {
    let mut out: Vec<MVisit> = visits
        .iter()
        .map(|v| MVisit {
            venue: v.venue.clone(),
            start: v.start.max(from),
            end: v.end.min(to),
        })
        .filter(|v| v.end > v.start)
        .collect();
    out.sort_by_key(|v| v.start);
    out
}

/// The visits whose unclipped length `end - start` is `>= min_stay_s`, in their order.
pub fn long_enough(visits: &[MVisit], min_stay_s: i64) -> Vec<MVisit> {
    visits
        .iter()
        .filter(|v| v.end - v.start >= min_stay_s)
        .cloned()
        .collect()
}

/// `overlap(c, q) = max(0, min(c.end + linger_s, q.end) - max(c.start, q.start))` for a case
/// visit `c` and a visit `q` at the same venue (0 at different venues).
pub fn overlap(c: &MVisit, q: &MVisit, linger_s: i64) -> i64 {
    if c.venue != q.venue {
        return 0;
    }
    ((c.end + linger_s).min(q.end) - c.start.max(q.start)).max(0)
}

/// Exposure of one person's visits to a set of case visits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MExposure {
    /// Sum of overlaps over all pairs.
    pub total: i64,
    /// The smallest `max(c.start, q.start)` over the pairs with positive overlap.
    pub first: Option<i64>,
    /// The largest `min(c.end + linger_s, q.end)` over the pairs with positive overlap.
    pub last: Option<i64>,
    /// The distinct venues of those pairs.
    pub venues: BTreeSet<String>,
}

/// The exposure of `other`'s visits to the `case` visits, each lingering `linger_s`.
pub fn exposure(case: &[MVisit], other: &[MVisit], linger_s: i64) -> MExposure {
    let mut x = MExposure::default();
    for c in case {
        for q in other {
            let o = overlap(c, q, linger_s);
            if o > 0 {
                x.total += o;
                let s = c.start.max(q.start);
                x.first = Some(x.first.map_or(s, |f| f.min(s)));
                let e = (c.end + linger_s).min(q.end);
                x.last = Some(x.last.map_or(e, |l| l.max(e)));
                x.venues.insert(c.venue.clone());
            }
        }
    }
    x
}

// ---------------------------------------------------------------------------------------------
// Harness shared by the property suites.
// ---------------------------------------------------------------------------------------------

/// A `from` before every generated scan (but inside any sane arithmetic range).
pub const FAR_PAST: i64 = T0 - 30 * 86_400;
/// A `to` after every generated visit.
pub const FAR_FUTURE: i64 = T0 + 30 * 86_400;

/// Person ids: mixed case and lengths so that byte order differs from "natural" order.
pub const PERSONS: [&str; 8] = ["b", "A", "a", "B2", "B10", "c", "Z", "a.b"];
/// Venue ids, same idea.
pub const VENUES: [&str; 4] = ["v2", "V1", "v10", "W"];

/// An engine on a fresh temporary directory, driven by a manual clock.
pub struct Harness {
    pub engine: Engine,
    pub clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Opens an engine at clock `T0` and registers `venues`.
    pub fn open(venues: &[(String, Option<u32>)], default_stay_s: u32) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(T0));
        let mut c = Config::new(dir.path());
        c.durability = Durability::Os;
        c.clock = clock.clone();
        c.segment_bytes = 1 << 20;
        c.default_stay_s = default_stay_s;
        let engine = Engine::open(c).expect("open engine");
        let specs = venues
            .iter()
            .map(|(id, stay)| VenueSpec {
                id: id.clone(),
                name: format!("venue {id}"),
                province: None,
                default_stay_s: *stay,
            })
            .collect();
        let n = engine.register_venues(specs).expect("register venues");
        assert_eq!(n, venues.len());
        Harness {
            engine,
            clock,
            _dir: dir,
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.engine.shutdown();
    }
}

/// A generated world: which venues exist (with stays), the server default stay, and scans.
#[derive(Debug, Clone)]
pub struct World {
    pub venues: Vec<(String, Option<u32>)>,
    pub default_stay_s: u32,
    pub persons: Vec<String>,
    pub scans: Vec<Scan>,
}

impl World {
    pub fn model(&self) -> Model {
        let mut m = Model::new(&self.venues, self.default_stay_s);
        for s in &self.scans {
            m.insert(s.clone());
        }
        m
    }
}

/// Raw scan material: (person index, venue index, ts offset from `T0`, is "out").
pub type RawScan = (usize, usize, i64, bool);

/// Builds a world from raw material. Persons and venues are taken from the front of
/// [`PERSONS`]/[`VENUES`]; a venue stay of 0 means "none" (the server default).
pub fn build_world(n_persons: usize, stays: &[u32], default_stay_s: u32, raw: &[RawScan]) -> World {
    let venues: Vec<(String, Option<u32>)> = stays
        .iter()
        .enumerate()
        .map(|(i, &s)| (VENUES[i].to_owned(), (s != 0).then_some(s)))
        .collect();
    let persons: Vec<String> = PERSONS[..n_persons].iter().map(|p| p.to_string()).collect();
    let scans = raw
        .iter()
        .map(|&(p, v, off, out)| Scan {
            person: persons[p % n_persons].clone(),
            venue: venues[v % venues.len()].0.clone(),
            ts: T0 + off,
            action: if out { Action::Out } else { Action::In },
        })
        .collect();
    World {
        venues,
        default_stay_s,
        persons,
        scans,
    }
}

/// proptest strategies for worlds.
pub mod strategies {
    use super::*;
    use proptest::prelude::*;

    /// The property tests' settings: `cases` cases, no persisted failures, a deep shrink.
    #[allow(dead_code)] // prop_occupancy sets its own
    pub fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            max_shrink_iters: 2048,
            ..ProptestConfig::default()
        }
    }

    /// A timestamp offset in `[lo, hi]`: often on a 300 s or 60 s grid (ties are frequent),
    /// otherwise anywhere.
    pub fn ts_offset(lo: i64, hi: i64) -> impl Strategy<Value = i64> {
        prop_oneof![
            1 => (lo / 300..=hi / 300).prop_map(|k| k * 300),
            2 => (lo / 60..=hi / 60).prop_map(|k| k * 60),
            2 => lo..=hi,
        ]
    }

    /// A stay of 60–600 s, half the time a whole number of minutes (so exposures tie).
    pub fn stay() -> impl Strategy<Value = u32> {
        prop_oneof![(1u32..=10).prop_map(|k| k * 60), 60u32..=600]
    }

    /// One raw scan with a timestamp offset in `[lo, hi]`; about one in three is an "out".
    pub fn raw_scan(lo: i64, hi: i64) -> impl Strategy<Value = RawScan> {
        (
            0usize..8,
            0usize..4,
            ts_offset(lo, hi),
            prop::bool::weighted(0.35),
        )
    }

    /// A world of 3–8 persons, 2–4 venues (stays 60–600 s, sometimes the server default, itself
    /// 60–600 s) and up to `max_scans` scans with timestamps in `[T0 + lo, T0 + hi]`.
    pub fn world(lo: i64, hi: i64, max_scans: usize) -> impl Strategy<Value = World> {
        (
            3usize..=8,
            prop::collection::vec(prop_oneof![1 => Just(0u32), 4 => stay()], 2..=4),
            stay(),
            prop::collection::vec(raw_scan(lo, hi), 0..=max_scans),
        )
            .prop_map(|(n, stays, d, raw)| build_world(n, &stays, d, &raw))
    }

    /// Like [`world`], with every timestamp and stay on a 60 s (often 300 s) grid and 2 venues:
    /// exposures tie often, so F1 ordering and F2 `via` tie-breaks are exercised.
    pub fn grid_world(lo: i64, hi: i64, max_scans: usize) -> impl Strategy<Value = World> {
        let ts = prop_oneof![
            (lo / 300..=hi / 300).prop_map(|k| k * 300),
            (lo / 60..=hi / 60).prop_map(|k| k * 60),
        ];
        let grid_stay = prop_oneof![
            (1u32..=2).prop_map(|k| k * 300),
            (1u32..=10).prop_map(|k| k * 60)
        ];
        (
            3usize..=8,
            prop::collection::vec(grid_stay.clone(), 2..=2),
            grid_stay,
            prop::collection::vec(
                (0usize..8, 0usize..4, ts, prop::bool::weighted(0.35)),
                0..=max_scans,
            ),
        )
            .prop_map(|(n, stays, d, raw)| build_world(n, &stays, d, &raw))
    }

    /// Either kind of world, half and half.
    pub fn any_world(lo: i64, hi: i64, max_scans: usize) -> impl Strategy<Value = World> {
        prop_oneof![world(lo, hi, max_scans), grid_world(lo, hi, max_scans)]
    }
}

/// Splits `items` into `batches` random non-empty-ish batches, after shuffling, deterministically
/// from `seed`.
pub fn shuffle_and_split<T: Clone>(items: &[T], seed: u64, max_batches: usize) -> Vec<Vec<T>> {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = items.to_vec();
    v.shuffle(&mut rng);
    let n = rng.gen_range(1..=max_batches.max(1));
    let mut cuts: Vec<usize> = (0..n - 1).map(|_| rng.gen_range(0..=v.len())).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for c in cuts.into_iter().chain(std::iter::once(v.len())) {
        out.push(v[prev..c].to_vec());
        prev = c;
    }
    out
}

/// Ingests scans in the given batches; checks that every one is accepted and returns the summed
/// `duplicates` count.
pub fn ingest_batches(engine: &Engine, batches: &[Vec<Scan>]) -> u32 {
    let mut dups = 0;
    for b in batches {
        let items: Vec<ScanItem> = b.iter().map(Scan::item).collect();
        let out = engine.ingest(items).expect("ingest");
        assert!(
            out.rejected.is_empty(),
            "unexpected rejections: {:?}",
            out.rejected
        );
        let ins = b.iter().filter(|s| s.action == Action::In).count() as u32;
        assert_eq!(out.accepted_in, ins, "accepted_in");
        assert_eq!(out.accepted_out, b.len() as u32 - ins, "accepted_out");
        dups += out.duplicates;
    }
    dups
}

/// Every person's full visit list from the engine (`from`/`to` covering everything).
pub fn engine_all_visits(engine: &Engine, persons: &[String]) -> Vec<Option<Vec<Visit>>> {
    persons
        .iter()
        .map(|p| engine.visits(p, FAR_PAST, FAR_FUTURE))
        .collect()
}

/// A trace request with `min_stay_s = linger_s = 0` (panics on a malformed one: callers build
/// valid ones).
pub fn request(person: &str, from: i64, to: i64, min_overlap: i64, depth: u8) -> TraceRequest {
    request_v2(person, from, to, min_overlap, depth, 0, 0)
}

/// A trace request with every v2 rule (panics on a malformed one: callers build valid ones).
pub fn request_v2(
    person: &str,
    from: i64,
    to: i64,
    min_overlap: i64,
    depth: u8,
    min_stay: i64,
    linger: i64,
) -> TraceRequest {
    TraceRequest::new(
        person.to_owned(),
        Some(from),
        Some(to),
        Some(min_overlap),
        Some(depth),
        Some(min_stay),
        Some(linger),
        T0,
    )
    .expect("valid trace request")
}
