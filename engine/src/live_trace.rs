//! Live traces: a depth-2 trace (contract section 5) held as maps, so that when some persons'
//! scans change, only their part of the answer is computed again instead of the whole trace.
//!
//! A stored scan changes the visits of its own person only, and only in `[ts, ts + max_stay)`.
//! So a trace is kept current by *refreshing* the persons whose scans changed:
//! - the case person: the case visits are derived again; if they changed, every person with an
//!   in-scan in reach of a case visit that is in one set but not the other is refreshed as below
//!   (a case visit kept as it was changes nobody's exposure to the case);
//! - anyone else, `X`: `X`'s exposure to the case visits is summed again from `X`'s visits, which
//!   says whether `X` is F1 and with which contact times. If `X` is (or was) F1 and its source
//!   visits (its visits clipped to `[first_contact, to]`) changed, every person with an in-scan in
//!   reach of a source that is in one set but not the other is refreshed as a possible F2 (a
//!   source kept as it was changes nobody's exposure to `X`). Then every refreshed
//!   person who is not F1 gets its F2 entry summed again against the F1 sources now held (each F1
//!   person's sources, by venue), with the contract's `via` rule.
//!
//! Each refresh reads one person's visits from the indexes as they are then, so a refresh is
//! exact for every person it looks at, whatever was stored meanwhile: a scan stored later is
//! refreshed when its notice comes.
//!
//! The layer above decides *which* scans to refresh through the windows a trace reports (see
//! [`LiveChanges`]): a **person window** for the case person, each F1 and each F2 (a scan of that
//! person in it may change their part), and the **venue windows** of every source visit (a scan
//! at that venue in it may add presence that makes someone a contact). A scan outside every
//! window cannot change the trace: it adds presence only at its own venue, outside every source's
//! reach, and removes presence only from a person who is not watched or outside the part of
//! their visits that the trace reads.

use std::sync::Arc;

use std::time::Duration;

use parking_lot::{RwLock, RwLockReadGuard};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::change::{PersonKey, VenueKey};
use crate::index::Index;
use crate::trace::{clip, Tracer, Yielder};
use crate::types::{F1Contact, F2Contact, TraceRequest, TraceResult, Visit};
use crate::visits::RawVisit;

mod refresh;

pub(crate) use refresh::refresh_many;

/// How close a contact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Degree {
    F1,
    F2,
}

/// What a trace says of one contact, as far as tiers are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing {
    pub degree: Degree,
    pub first_contact: i64,
    pub last_contact: i64,
}

/// One person whose listing in a trace changed (`None`: no longer listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingChange {
    pub person: Arc<str>,
    pub listing: Option<Listing>,
}

/// A venue window: a scan at `venue` with `lo <= ts <= hi` may change a trace.
pub type VenueWindow = (VenueKey, i64, i64);

/// What an update of a [`LiveTrace`] changed.
#[derive(Debug, Default)]
pub struct LiveChanges {
    /// The trace was derived from scratch: drop every window held for it, then install the
    /// windows below, which are then the full set.
    pub rebuilt: bool,
    pub listings: Vec<ListingChange>,
    /// A scan of `person` with `lo <= ts <= hi` may change the trace (`None`: none can any more).
    pub person_windows: Vec<(PersonKey, Option<(i64, i64)>)>,
    /// The venue windows of one source person (the case person, or an F1), replacing that
    /// person's earlier ones: a scan at `venue` with `lo <= ts <= hi` may change the trace.
    pub venue_windows: Vec<(PersonKey, Vec<VenueWindow>)>,
    /// The case visits changed without a derivation from scratch (read them again with
    /// [`LiveTrace::case_visits`]; after a rebuild they may have changed too).
    pub case_visits_changed: bool,
}

impl LiveChanges {
    /// Nothing changed: no listing, no window, no rebuild.
    pub fn is_empty(&self) -> bool {
        !self.rebuilt
            && self.listings.is_empty()
            && self.person_windows.is_empty()
            && self.venue_windows.is_empty()
            && !self.case_visits_changed
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct F1Entry {
    name: Arc<str>,
    total: i64,
    first_contact: i64,
    last_contact: i64,
    /// Sorted (byte order), distinct.
    venues: Vec<Arc<str>>,
    /// The visits of unclipped length `>= min_stay_s`, clipped to `[first_contact, to]`: the
    /// sources of F2.
    sources: Vec<RawVisit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct F2Entry {
    name: Arc<str>,
    total: i64,
    via: u32,
    via_name: Arc<str>,
    first_contact: i64,
    last_contact: i64,
}

/// A depth-2 trace kept current by refreshing persons (see the module docs).
#[derive(Debug, Clone)]
pub struct LiveTrace {
    req: TraceRequest,
    threshold: i64,
    /// The case person's number, if the store knows the id (possibly with no scan now).
    case_key: Option<u32>,
    /// The case person has stored scans (otherwise the trace is empty).
    present: bool,
    case_visits: Vec<RawVisit>,
    case_visits_named: Vec<Visit>,
    /// `(start, start + length + linger)` of the case visits, by venue.
    case_by_venue: FxHashMap<u32, Vec<(i64, i64)>>,
    f1: FxHashMap<u32, F1Entry>,
    /// `(start, end + linger, owner)` of every F1's sources, by venue.
    sources_by_venue: FxHashMap<u32, Vec<(i64, i64, u32)>>,
    f2: FxHashMap<u32, F2Entry>,
    /// The person windows held now.
    watch: FxHashMap<u32, (i64, i64)>,
}

impl LiveTrace {
    /// A trace with nothing in it yet (before its first derivation).
    pub fn empty(request: &TraceRequest) -> LiveTrace {
        LiveTrace {
            req: request.clone(),
            threshold: request.min_overlap_s.max(1),
            case_key: None,
            present: false,
            case_visits: Vec::new(),
            case_visits_named: Vec::new(),
            case_by_venue: FxHashMap::default(),
            f1: FxHashMap::default(),
            sources_by_venue: FxHashMap::default(),
            f2: FxHashMap::default(),
            watch: FxHashMap::default(),
        }
    }

    /// The request this trace answers.
    pub fn request(&self) -> &TraceRequest {
        &self.req
    }

    /// How many F1 contacts there are now.
    pub fn f1_len(&self) -> usize {
        self.f1.len()
    }

    /// How many F2 contacts there are now.
    pub fn f2_len(&self) -> usize {
        self.f2.len()
    }

    /// The case visits (after `min_stay_s`, clipped to the window), ascending by start.
    pub fn case_visits(&self) -> &[Visit] {
        &self.case_visits_named
    }

    /// The case person has no stored scan and the store does not know the id yet: the layer
    /// above must refresh this trace once any scan of that person is stored.
    pub fn case_unknown(&self) -> bool {
        self.case_key.is_none()
    }

    /// The answer now, in the shape and order of [`crate::Engine::trace`] (an empty answer if the
    /// case person has no stored scan).
    pub fn result(&self) -> TraceResult {
        let mut f1: Vec<&F1Entry> = self.f1.values().collect();
        f1.sort_unstable_by(|a, b| b.total.cmp(&a.total).then_with(|| a.name.cmp(&b.name)));
        let mut f2: Vec<&F2Entry> = self.f2.values().collect();
        f2.sort_unstable_by(|a, b| b.total.cmp(&a.total).then_with(|| a.name.cmp(&b.name)));
        TraceResult {
            case: Arc::from(self.req.person.as_str()),
            from: self.req.from,
            to: self.req.to,
            min_overlap_s: self.req.min_overlap_s,
            min_stay_s: self.req.min_stay_s,
            linger_s: self.req.linger_s,
            visits: self.case_visits_named.clone(),
            f1: f1
                .into_iter()
                .map(|e| F1Contact {
                    person: e.name.clone(),
                    exposure_s: e.total,
                    first_contact: e.first_contact,
                    last_contact: e.last_contact,
                    venues: e.venues.clone(),
                })
                .collect(),
            f2: f2
                .into_iter()
                .map(|e| F2Contact {
                    person: e.name.clone(),
                    via: e.via_name.clone(),
                    exposure_s: e.total,
                    first_contact: e.first_contact,
                    last_contact: e.last_contact,
                })
                .collect(),
        }
    }

    /// Replaces this trace with `fresh`, a derivation made without holding this one (with
    /// `changes`, its full report from [`crate::Engine::live_trace`]); reports the listing
    /// changes from this trace to `fresh`, and `fresh`'s windows in full.
    pub fn replace(&mut self, fresh: LiveTrace, changes: LiveChanges) -> LiveChanges {
        let mut out = LiveChanges {
            rebuilt: true,
            listings: Vec::new(),
            person_windows: changes.person_windows,
            venue_windows: changes.venue_windows,
            case_visits_changed: false,
        };
        diff_listings(self, &fresh, &mut out);
        *self = fresh;
        out
    }

    /// Empties the trace (its case stopped counting): every listing goes, and every window.
    pub fn clear(&mut self) -> LiveChanges {
        let empty = LiveTrace::empty(&self.req);
        let old = std::mem::replace(self, empty);
        let mut out = LiveChanges {
            rebuilt: true,
            ..LiveChanges::default()
        };
        diff_listings(&old, self, &mut out);
        out
    }
}

fn listing_of_f1(e: &F1Entry) -> Listing {
    Listing {
        degree: Degree::F1,
        first_contact: e.first_contact,
        last_contact: e.last_contact,
    }
}

fn listing_of_f2(e: &F2Entry) -> Listing {
    Listing {
        degree: Degree::F2,
        first_contact: e.first_contact,
        last_contact: e.last_contact,
    }
}

impl LiveTrace {
    fn listing(&self, p: u32) -> Option<Listing> {
        if let Some(e) = self.f1.get(&p) {
            return Some(listing_of_f1(e));
        }
        self.f2.get(&p).map(listing_of_f2)
    }

    fn name_of(&self, p: u32) -> Option<Arc<str>> {
        self.f1
            .get(&p)
            .map(|e| e.name.clone())
            .or_else(|| self.f2.get(&p).map(|e| e.name.clone()))
    }
}

/// Appends the listing changes from `old` to `new`.
fn diff_listings(old: &LiveTrace, new: &LiveTrace, out: &mut LiveChanges) {
    let mut seen: FxHashSet<u32> = FxHashSet::default();
    for &p in old.f1.keys().chain(old.f2.keys()) {
        seen.insert(p);
        let now = new.listing(p);
        if old.listing(p) != now {
            if let Some(name) = old.name_of(p) {
                out.listings.push(ListingChange {
                    person: name,
                    listing: now,
                });
            }
        }
    }
    for &p in new.f1.keys().chain(new.f2.keys()) {
        if seen.contains(&p) {
            continue;
        }
        if let Some(name) = new.name_of(p) {
            out.listings.push(ListingChange {
                person: name,
                listing: new.listing(p),
            });
        }
    }
}

/// The sorted, distinct names of venue numbers.
fn venue_names(index: &Index, venues: impl Iterator<Item = u32>) -> Vec<Arc<str>> {
    let mut names: Vec<Arc<str>> = venues
        .filter_map(|v| index.venue_ids.get(v as usize).cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Sums `visits`' overlaps with `sources` (by venue; `(start, exposed_end)`), as section 5 does:
/// `(total, first_contact, last_contact, venues)`.
fn exposure_to(
    visits: &[RawVisit],
    sources: &FxHashMap<u32, Vec<(i64, i64)>>,
) -> (i64, i64, i64, Vec<u32>) {
    let mut total = 0;
    let mut first = i64::MAX;
    let mut last = i64::MIN;
    let mut venues = Vec::new();
    for q in visits {
        let Some(list) = sources.get(&q.venue) else {
            continue;
        };
        for &(start, exposed_end) in list {
            let s = start.max(q.start);
            let e = exposed_end.min(q.end);
            if e > s {
                total += e - s;
                first = first.min(s);
                last = last.max(e);
                venues.push(q.venue);
            }
        }
    }
    venues.sort_unstable();
    venues.dedup();
    (total, first, last, venues)
}

/// The window of a person whose visits are sources (the case person over `[from, to]`, an F1
/// over `[first_contact, to]`): their visits that reach into it, unclipped (their length is
/// what `min_stay_s` reads).
/// The visits of `a` that are not in `b` (both short: one person's visits in a window).
fn only_in(a: &[RawVisit], b: &[RawVisit]) -> Vec<RawVisit> {
    a.iter().filter(|v| !b.contains(v)).copied().collect()
}

fn source_person_window(visits: &[RawVisit], from: i64, to: i64, max_stay: i64) -> (i64, i64) {
    let mut lo = from;
    let mut hi = to;
    for v in visits.iter().filter(|v| v.end > from && v.start < to) {
        lo = lo.min(v.start);
        hi = hi.max(v.end);
    }
    (lo.saturating_sub(max_stay), hi)
}

/// How long live-trace work may hold the index lock before it lets a waiting writer in. (250 µs
/// was tried: the refreshes then wait behind the writer so often that the health thread falls
/// further behind, and late scans wait longer; docs/BENCHMARKS.md, "Cases and standing traces".)
const LIVE_HOLD: Duration = Duration::from_millis(2);

/// Builds, refreshes and diffs live traces over the indexes, under one read guard that it lets
/// a waiting writer through every [`LIVE_HOLD`].
pub(crate) struct Updater<'g, 'a> {
    guard: &'g mut RwLockReadGuard<'a, Index>,
    /// An upper bound of any visit's reach past the scan that shaped it.
    max_stay: i64,
    yielder: Yielder,
}

impl<'g, 'a> Updater<'g, 'a> {
    pub(crate) fn new(guard: &'g mut RwLockReadGuard<'a, Index>, max_stay: i64) -> Self {
        Updater {
            guard,
            max_stay,
            yielder: Yielder::new(LIVE_HOLD),
        }
    }

    fn index(&self) -> &Index {
        self.guard
    }

    fn maybe_yield(&mut self) {
        self.yielder.maybe_yield(self.guard);
    }

    fn venue_windows(&self, sources: &[RawVisit], linger: i64) -> Vec<VenueWindow> {
        sources
            .iter()
            .map(|s| {
                (
                    VenueKey(s.venue),
                    s.start - self.index().stay(s.venue),
                    s.end + linger,
                )
            })
            .collect()
    }

    /// Derives `req` from scratch.
    fn build(&mut self, req: &TraceRequest) -> LiveTrace {
        let max_stay = self.max_stay;
        let mut live = LiveTrace::empty(req);
        live.case_key = self.index().persons.find(&req.person);
        let Some(case) = self.index().person(&req.person) else {
            // Unknown or with no scan now: any scan of theirs may start the trace.
            if let Some(k) = live.case_key {
                live.watch.insert(k, (i64::MIN, i64::MAX));
            }
            return live;
        };
        live.present = true;
        let linger = req.linger_s;
        let threshold = live.threshold;
        let mut tracer = Tracer::with_hold(self.guard, LIVE_HOLD);
        tracer.yield_to_writer();
        let case_all = tracer.visits_of(case);
        let mut case_visits = clip(&case_all, req.min_stay_s, req.from, req.to);
        case_visits.sort_by_key(|v| v.start);
        live.watch.insert(
            case,
            source_person_window(&case_all, req.from, req.to + linger, max_stay),
        );
        for c in &case_visits {
            live.case_by_venue
                .entry(c.venue)
                .or_default()
                .push((c.start, c.end + linger));
        }
        live.case_visits_named = case_visits.iter().map(|v| tracer.guard.visit(*v)).collect();
        let f1_map = tracer.exposures(&case_visits, linger, |q| q == case);
        live.case_visits = case_visits;
        for (q, e) in f1_map {
            if e.total < threshold {
                continue;
            }
            let venues = venue_names(tracer.guard, e.venues());
            live.f1.insert(
                q,
                F1Entry {
                    name: Arc::from(tracer.guard.persons.get(q)),
                    total: e.total,
                    first_contact: e.first_contact,
                    last_contact: e.last_contact,
                    venues,
                    sources: Vec::new(),
                },
            );
        }
        let f1_keys: Vec<u32> = live.f1.keys().copied().collect();
        // Per F2 candidate: best (total, via, first, last) and the hull of qualifying overlaps.
        let mut best: FxHashMap<u32, (i64, u32, i64, i64, i64, i64)> = FxHashMap::default();
        for q in f1_keys {
            tracer.yield_to_writer();
            let visits = tracer.visits_of(q);
            let Some(entry) = live.f1.get_mut(&q) else {
                continue;
            };
            let sources = clip(&visits, req.min_stay_s, entry.first_contact, req.to);
            live.watch.insert(
                q,
                source_person_window(&visits, entry.first_contact, req.to + linger, max_stay),
            );
            for s in &sources {
                live.sources_by_venue.entry(s.venue).or_default().push((
                    s.start,
                    s.end + linger,
                    q,
                ));
            }
            entry.sources = sources;
            let in_f1 = &live.f1;
            let exposures = tracer.exposures(&in_f1[&q].sources, linger, |r| {
                r == case || r == q || in_f1.contains_key(&r)
            });
            let index = &**tracer.guard;
            let name = |p: u32| index.persons.bytes(p);
            for (r, x) in exposures {
                if x.total < threshold {
                    continue;
                }
                match best.get_mut(&r) {
                    None => {
                        best.insert(
                            r,
                            (
                                x.total,
                                q,
                                x.first_contact,
                                x.last_contact,
                                x.first_contact,
                                x.last_contact,
                            ),
                        );
                    }
                    Some(b) => {
                        b.4 = b.4.min(x.first_contact);
                        b.5 = b.5.max(x.last_contact);
                        if x.total > b.0 || (x.total == b.0 && name(q) < name(b.1)) {
                            b.0 = x.total;
                            b.1 = q;
                            b.2 = x.first_contact;
                            b.3 = x.last_contact;
                        }
                    }
                }
            }
        }
        let index = &**tracer.guard;
        for (r, (total, via, first, last, lo, hi)) in best {
            live.watch.insert(r, (lo.saturating_sub(max_stay), hi));
            live.f2.insert(
                r,
                F2Entry {
                    name: Arc::from(index.persons.get(r)),
                    total,
                    via,
                    via_name: live.f1[&via].name.clone(),
                    first_contact: first,
                    last_contact: last,
                },
            );
        }
        live
    }

    /// Every window of `live` (after a build).
    fn all_windows(&self, live: &LiveTrace, out: &mut LiveChanges) {
        for (&p, &w) in &live.watch {
            out.person_windows.push((PersonKey(p), Some(w)));
        }
        if let Some(case) = live.case_key.filter(|_| live.present) {
            out.venue_windows.push((
                PersonKey(case),
                self.venue_windows(&live.case_visits, live.req.linger_s),
            ));
        }
        for (&q, e) in &live.f1 {
            out.venue_windows.push((
                PersonKey(q),
                self.venue_windows(&e.sources, live.req.linger_s),
            ));
        }
    }
}

/// A fresh derivation of `req`, with every listing and window reported.
pub(crate) fn derive(
    index: &RwLock<Index>,
    max_stay: i64,
    req: &TraceRequest,
) -> (LiveTrace, LiveChanges) {
    let mut live = LiveTrace::empty(req);
    let mut guard = index.read();
    let changes = Updater::new(&mut guard, max_stay).rederive(&mut live);
    (live, changes)
}

/// Replaces `live` with a fresh derivation and reports the difference (windows in full).
pub(crate) fn rederive(index: &RwLock<Index>, max_stay: i64, live: &mut LiveTrace) -> LiveChanges {
    let mut guard = index.read();
    Updater::new(&mut guard, max_stay).rederive(live)
}

impl Updater<'_, '_> {
    /// Replaces `live` with a fresh derivation and reports the difference (windows in full).
    fn rederive(&mut self, live: &mut LiveTrace) -> LiveChanges {
        let fresh = self.build(&live.req);
        let mut out = LiveChanges {
            rebuilt: true,
            ..LiveChanges::default()
        };
        diff_listings(live, &fresh, &mut out);
        *live = fresh;
        self.all_windows(live, &mut out);
        out
    }
}
