//! Contact tracing (contract section 5): F1 and F2 exactly as defined, over the indexes.
//!
//! Case visits are the case person's visits of unclipped length `>= min_stay_s`, clipped to
//! `[from, to]`. Each case visit `c` at venue V exposes V during `[c.start, c.end + linger_s)`;
//! the venue index yields every person with an in-scan at V in `[c.start - stay(V), c.end +
//! linger_s]` (a superset of those with a visit overlapping that exposure); their visits are
//! derived over the scans that can shape such a visit, and overlaps at V are summed. F2 repeats
//! the step with each F1 person's visits of unclipped length `>= min_stay_s`, clipped to
//! `[first_contact, to]`, as the case visits, with the same linger.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLockReadGuard;
use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use crate::index::Index;
use crate::types::{F1Contact, F2Contact, SourcedExposure, TraceRequest, TraceResult};
use crate::visits::RawVisit;

/// Exposure of one contact to one source. Most contacts share a single venue with the source,
/// so the first venue is kept inline and only further ones allocate.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exposure {
    pub total: i64,
    pub first_contact: i64,
    pub last_contact: i64,
    first_venue: u32,
    more_venues: Vec<u32>,
}

impl Exposure {
    /// Adds `sum` seconds of overlap, first starting at `first` and last ending at `last`, at
    /// `venue`.
    fn add(&mut self, sum: i64, first: i64, last: i64, venue: u32) {
        if self.total == 0 {
            self.first_contact = first;
            self.last_contact = last;
            self.first_venue = venue;
        } else {
            self.first_contact = self.first_contact.min(first);
            self.last_contact = self.last_contact.max(last);
            if venue != self.first_venue && !self.more_venues.contains(&venue) {
                self.more_venues.push(venue);
            }
        }
        self.total += sum;
    }

    /// The distinct venues of the overlaps, unordered.
    pub(crate) fn venues(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.first_venue).chain(self.more_venues.iter().copied())
    }

    /// The ids of those venues, sorted, distinct (as an answer lists them).
    fn venue_ids(&self, index: &Index) -> Vec<Arc<str>> {
        let mut ids: Vec<Arc<str>> = self
            .venues()
            .map(|v| index.venue_ids[v as usize].clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

pub(crate) struct Tracer<'g, 'a> {
    /// The shared index lock, held for the whole trace but yielded to a waiting writer between
    /// F1 persons of a depth-2 trace (`bump`), so a long trace never stalls ingestion for long.
    pub guard: &'g mut RwLockReadGuard<'a, Index>,
    /// The last source visit that looked at each candidate, so a person with several in-scans in
    /// one window is counted once for it (instead of sorting and deduplicating the candidates).
    seen: FxHashMap<u32, u32>,
    /// Incremented per source visit.
    stamp: u32,
    yielder: Yielder,
}

/// How long a trace asked for over the API may hold the index lock before it lets a waiting
/// writer in.
pub(crate) const HOLD: Duration = Duration::from_millis(2);

/// Lets a waiting writer through a long read of the indexes, at most once per `hold`.
pub(crate) struct Yielder {
    hold: Duration,
    last: Instant,
}

impl Yielder {
    pub(crate) fn new(hold: Duration) -> Yielder {
        Yielder {
            hold,
            last: Instant::now(),
        }
    }

    /// Lets a waiting writer in (`bump`) if the lock was held for `hold` since the last time.
    pub(crate) fn maybe_yield(&mut self, guard: &mut RwLockReadGuard<'_, Index>) {
        if self.last.elapsed() >= self.hold {
            RwLockReadGuard::bump(guard);
            self.last = Instant::now();
        }
    }
}

impl<'g, 'a> Tracer<'g, 'a> {
    pub(crate) fn new(guard: &'g mut RwLockReadGuard<'a, Index>) -> Tracer<'g, 'a> {
        Tracer::with_hold(guard, HOLD)
    }

    /// A tracer that lets a waiting writer in every `hold`.
    pub(crate) fn with_hold(guard: &'g mut RwLockReadGuard<'a, Index>, hold: Duration) -> Self {
        Tracer {
            guard,
            yielder: Yielder::new(hold),
            seen: FxHashMap::default(),
            stamp: 0,
        }
    }

    /// Lets a waiting writer in. The trace is then a consistent answer for the scans stored when
    /// each F1 person was looked at.
    pub(crate) fn yield_to_writer(&mut self) {
        self.yielder.maybe_yield(self.guard);
    }

    /// Every visit of `person`, in the contract's order.
    pub(crate) fn visits_of(&self, person: u32) -> Vec<RawVisit> {
        let mut visits = Vec::new();
        self.guard.raw_visits(person, &mut visits);
        visits
    }

    /// Exposures of every other person to the `sources` visits (the case's, or an F1's), keyed by
    /// person. Each source `c` exposes its venue during `[c.start, c.end + linger)`. `skip(q)`
    /// excludes persons up front.
    ///
    /// A candidate's visits are derived only over the part of their scans that can shape a visit
    /// overlapping the exposure `[c.start, e)` of the source visit `c` (`e = c.end + linger`):
    /// scans in `[c.start - max_stay, e)`. An earlier scan leaves a visit whose deadline is before
    /// `c.start`, so starting the contract's machine empty there changes only visits that end
    /// before `c.start` and the start of a visit that begins before `c.start` either way (overlap
    /// and first contact are then the same); scans at or after `e` only move an end that is
    /// already at or past `e` (overlap and last contact are then the same).
    pub(crate) fn exposures(
        &mut self,
        sources: &[RawVisit],
        linger: i64,
        skip: impl Fn(u32) -> bool,
    ) -> FxHashMap<u32, Exposure> {
        let mut out: FxHashMap<u32, Exposure> = FxHashMap::default();
        let Tracer {
            guard, seen, stamp, ..
        } = self;
        let index = &***guard;
        let max_stay = i64::from(index.max_stay);
        for c in sources {
            *stamp += 1;
            let stamp = *stamp;
            // The end of the exposure: the case visit's end plus the linger.
            let exposed_end = c.end + linger;
            let candidates = index.ins_in_reach(c.venue, c.start, exposed_end);
            warm_up(index, candidates);
            out.reserve(candidates.len());
            seen.reserve(candidates.len());
            let from_ts = (c.start - max_stay).max(0) as u64;
            let to_ts = exposed_end.max(0) as u64;
            for &k in candidates {
                let q = k as u32;
                if skip(q) {
                    continue;
                }
                match seen.entry(q) {
                    Entry::Occupied(mut e) => {
                        if *e.get() == stamp {
                            continue;
                        }
                        *e.get_mut() = stamp;
                    }
                    Entry::Vacant(e) => {
                        e.insert(stamp);
                    }
                }
                let Some(keys) = index.person_keys.get(q as usize) else {
                    continue;
                };
                let keys = &keys[keys.partition_point(|&k| (k >> 32) < from_ts)
                    ..keys.partition_point(|&k| (k >> 32) < to_ts)];
                let mut sum = 0i64;
                let mut first = i64::MAX;
                let mut last = i64::MIN;
                crate::visits::derive(
                    keys,
                    |v| index.stay(v),
                    |v| index.venue_name(v),
                    |v| {
                        if v.venue == c.venue {
                            let end = v.end.min(exposed_end);
                            let start = v.start.max(c.start);
                            if end > start {
                                sum += end - start;
                                first = first.min(start);
                                last = last.max(end);
                            }
                        }
                    },
                );
                if sum > 0 {
                    out.entry(q).or_default().add(sum, first, last, c.venue);
                }
            }
        }
        out
    }
}

/// Reads every candidate's key list (its middle, where the search starts) before any is derived. The candidates are
/// scattered over a large index, so each is a cache miss or two; touching them all first lets the
/// CPU overlap those misses instead of taking them one by one inside the derivation.
fn warm_up(index: &Index, candidates: &[u64]) {
    let mut sink = 0u64;
    for &k in candidates {
        if let Some(keys) = index.person_keys.get(k as u32 as usize) {
            sink ^= keys.len() as u64;
        }
    }
    for &k in candidates {
        // Every cache line the binary search may probe, for the short lists most persons have;
        // the first probe for longer ones.
        if let Some(keys) = index.person_keys.get(k as u32 as usize) {
            if keys.len() <= 32 {
                for line in keys.iter().step_by(8) {
                    sink ^= line;
                }
            } else if let Some(&middle) = keys.get(keys.len() / 2) {
                sink ^= middle;
            }
        }
    }
    std::hint::black_box(sink);
}

/// Keeps the visits of unclipped length `>= min_stay` and clips them to `[from, to]`, dropping
/// those of zero length after clipping.
pub(crate) fn clip(visits: &[RawVisit], min_stay: i64, from: i64, to: i64) -> Vec<RawVisit> {
    visits
        .iter()
        .filter(|v| v.end - v.start >= min_stay)
        .filter_map(|v| {
            let start = v.start.max(from);
            let end = v.end.min(to);
            (end > start).then_some(RawVisit {
                venue: v.venue,
                start,
                end,
            })
        })
        .collect()
}

/// Runs a trace under the index read lock; `None` if the case person has no stored scan.
pub(crate) fn trace(
    mut guard: RwLockReadGuard<'_, Index>,
    req: &TraceRequest,
) -> Option<TraceResult> {
    let case = guard.person(&req.person)?;
    let threshold = req.min_overlap_s.max(1);
    let mut tracer = Tracer::new(&mut guard);
    let mut case_visits = clip(&tracer.visits_of(case), req.min_stay_s, req.from, req.to);
    case_visits.sort_by_key(|v| v.start);

    let f1_map = tracer.exposures(&case_visits, req.linger_s, |q| q == case);
    let mut f1: Vec<(u32, Exposure)> = f1_map
        .into_iter()
        .filter(|(_, e)| e.total >= threshold)
        .collect();
    {
        let index = &**tracer.guard;
        // The answer needs every contact's id (ties sort by it, the result carries it).
        index.persons.warm_up(f1.iter().map(|(q, _)| *q));
        let name = |p: u32| index.persons.bytes(p);
        f1.sort_unstable_by(|a, b| {
            b.1.total
                .cmp(&a.1.total)
                .then_with(|| name(a.0).cmp(name(b.0)))
        });
    }

    let mut f2_out = Vec::new();
    if req.depth >= 2 && !f1.is_empty() {
        let in_f1: FxHashMap<u32, ()> = f1.iter().map(|(q, _)| (*q, ())).collect();
        // Best source per F2 person: (exposure, via, first_contact, last_contact).
        let mut best: FxHashMap<u32, (i64, u32, i64, i64)> = FxHashMap::default();
        for (q, e) in &f1 {
            tracer.yield_to_writer();
            let sources = clip(
                &tracer.visits_of(*q),
                req.min_stay_s,
                e.first_contact,
                req.to,
            );
            let exposures = tracer.exposures(&sources, req.linger_s, |r| {
                r == case || r == *q || in_f1.contains_key(&r)
            });
            let index = &**tracer.guard;
            let name = |p: u32| index.persons.bytes(p);
            for (r, x) in exposures {
                if x.total < threshold {
                    continue;
                }
                let better = match best.get(&r) {
                    None => true,
                    Some(&(bt, bq, _, _)) => x.total > bt || (x.total == bt && name(*q) < name(bq)),
                };
                if better {
                    best.insert(r, (x.total, *q, x.first_contact, x.last_contact));
                }
            }
        }
        let index = &**tracer.guard;
        let name = |p: u32| index.persons.get(p);
        let key = |p: u32| index.persons.bytes(p);
        let mut f2: Vec<(u32, (i64, u32, i64, i64))> = best.into_iter().collect();
        index.persons.warm_up(f2.iter().map(|(r, _)| *r));
        f2.sort_unstable_by(|a, b| {
            Reverse(a.1 .0)
                .cmp(&Reverse(b.1 .0))
                .then_with(|| key(a.0).cmp(key(b.0)))
        });
        f2_out = f2
            .into_iter()
            .map(|(r, (total, via, first, last))| F2Contact {
                person: Arc::from(name(r)),
                via: Arc::from(name(via)),
                exposure_s: total,
                first_contact: first,
                last_contact: last,
            })
            .collect();
    }

    let index = &**tracer.guard;
    let name = |p: u32| index.persons.get(p);
    let f1_out = f1
        .into_iter()
        .map(|(q, e)| {
            let venues = e.venue_ids(index);
            F1Contact {
                person: Arc::from(name(q)),
                exposure_s: e.total,
                first_contact: e.first_contact,
                last_contact: e.last_contact,
                venues,
            }
        })
        .collect();

    Some(TraceResult {
        case: Arc::from(name(case)),
        from: req.from,
        to: req.to,
        min_overlap_s: req.min_overlap_s,
        min_stay_s: req.min_stay_s,
        linger_s: req.linger_s,
        visits: case_visits.into_iter().map(|v| index.visit(v)).collect(),
        f1: f1_out,
        f2: f2_out,
    })
}

/// The F1 step (one source: the case) or the F2 step (one source per F1) of [`trace`] for
/// sources stored elsewhere (cluster mode: another shard's persons, given by value): every
/// person of this store not in `exclude` whose exposure to some source is `>= threshold`, with
/// the best source (largest exposure, ties by the smallest source id). Source visits at venues
/// this store does not know are skipped (nobody here can have been there).
pub(crate) fn foreign_exposures(
    mut guard: RwLockReadGuard<'_, Index>,
    sources: &[(Option<u32>, Vec<RawVisit>)],
    names: &[&str],
    linger_s: i64,
    threshold: i64,
    exclude: &rustc_hash::FxHashSet<u32>,
) -> Vec<SourcedExposure> {
    let threshold = threshold.max(1);
    let mut tracer = Tracer::new(&mut guard);
    let mut best: FxHashMap<u32, (usize, Exposure)> = FxHashMap::default();
    for (i, (own, visits)) in sources.iter().enumerate() {
        tracer.yield_to_writer();
        let exposures = tracer.exposures(visits, linger_s, |q| {
            Some(q) == *own || exclude.contains(&q)
        });
        for (q, x) in exposures {
            if x.total < threshold {
                continue;
            }
            let better = match best.get(&q) {
                None => true,
                Some((bi, b)) => x.total > b.total || (x.total == b.total && names[i] < names[*bi]),
            };
            if better {
                best.insert(q, (i, x));
            }
        }
    }
    let index = &**tracer.guard;
    best.into_iter()
        .map(|(q, (source, e))| {
            let venues = e.venue_ids(index);
            SourcedExposure {
                person: Arc::from(index.persons.get(q)),
                source,
                exposure_s: e.total,
                first_contact: e.first_contact,
                last_contact: e.last_contact,
                venues,
            }
        })
        .collect()
}
