//! Refreshing live traces outside the index lock: what a refresh reads of the indexes (a few
//! persons' visits, the in-scans in reach of changed sources, names and stays) is copied under
//! short holds of the read lock, and the refresh itself runs on those copies, so neither the
//! writer nor the refresh waits for the other while the refresh computes.
//!
//! A group of traces is refreshed in three stages, each one short hold of the lock for the whole
//! group, with the computation between them lock-free:
//! 1. *touched*: which traces start over (the case id became known, or the case person had no
//!    scan), and the visits, names and venues (names, stays) of every touched person; then, if
//!    the case person was touched, the case visits again, lock-free; if they changed, a stage
//!    *1b* reads the persons with an in-scan in reach of each case visit added or removed (as
//!    touched persons: only they can have a different exposure to the case); then F1 of each
//!    touched person, lock-free;
//! 2. *reach*: the persons with an in-scan in reach of each F1 source added or removed, and the
//!    visits of every person to check as F2 (held with the writer let through every
//!    [`LIVE_HOLD`]); then F2 of each, lock-free;
//! 3. *names* of the persons who became listed in this refresh without being read in stage 1
//!    (new F2s).
//!
//! Each person's visits are read whole under one hold, as a refresh under the lock read them,
//! so a refresh is exact for every person it looks at as of when that person was read; a scan
//! stored after that is refreshed when its notice comes (the module docs of `live_trace`).
//! Traces that start over are derived under the lock with the writer let through (`Updater`).

use std::collections::hash_map::Entry;
use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::{FxHashMap, FxHashSet};

use super::{
    exposure_to, listing_of_f2, only_in, source_person_window, F1Entry, F2Entry, Listing,
    ListingChange, LiveChanges, LiveTrace, Updater, VenueWindow, LIVE_HOLD,
};
use crate::change::{PersonKey, VenueKey};
use crate::index::Index;
use crate::trace::{clip, Yielder};
use crate::types::Visit;
use crate::visits::RawVisit;

/// What the stages read of the indexes.
#[derive(Default)]
struct Reads {
    /// Every visit of each person read, as of when it was read.
    visits: FxHashMap<u32, Vec<RawVisit>>,
    /// Names of the touched persons.
    names: FxHashMap<u32, Arc<str>>,
    /// Name (if registered) and effective stay of each venue of a touched person's visits.
    venues: FxHashMap<u32, (Option<Arc<str>>, i64)>,
}

impl Reads {
    fn load_visits(&mut self, index: &Index, p: u32) {
        if let Entry::Vacant(e) = self.visits.entry(p) {
            let mut visits = Vec::new();
            if (p as usize) < index.person_keys.len() {
                index.raw_visits(p, &mut visits);
            }
            e.insert(visits);
        }
    }

    /// A touched person: visits, name and the venues of the visits (F1 reads all three).
    fn load_touched(&mut self, index: &Index, p: u32) {
        self.load_visits(index, p);
        if (p as usize) < index.person_keys.len() {
            self.names
                .entry(p)
                .or_insert_with(|| Arc::from(index.persons.get(p)));
        }
        for v in self.visits.get(&p).map_or(&[][..], |v| v) {
            self.venues.entry(v.venue).or_insert_with(|| {
                (
                    index.venue_ids.get(v.venue as usize).cloned(),
                    index.stay(v.venue),
                )
            });
        }
    }

    fn visits(&self, p: u32) -> &[RawVisit] {
        self.visits.get(&p).map_or(&[], |v| v)
    }

    fn venue_name(&self, venue: u32) -> Arc<str> {
        self.venues
            .get(&venue)
            .and_then(|v| v.0.clone())
            .unwrap_or_else(|| Arc::from(""))
    }

    fn stay(&self, venue: u32) -> i64 {
        self.venues.get(&venue).map_or(0, |v| v.1)
    }

    /// The sorted, distinct names of venue numbers (as `live_trace::venue_names`).
    fn venue_names(&self, venues: impl Iterator<Item = u32>) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = venues
            .filter_map(|v| self.venues.get(&v).and_then(|n| n.0.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn venue_windows(&self, sources: &[RawVisit], linger: i64) -> Vec<VenueWindow> {
        sources
            .iter()
            .map(|s| {
                (
                    VenueKey(s.venue),
                    s.start - self.stay(s.venue),
                    s.end + linger,
                )
            })
            .collect()
    }
}

/// One trace's refresh between the stages.
#[derive(Default)]
struct Partial {
    out: LiveChanges,
    /// Listing and name before this refresh, of every person whose listing may change.
    before: FxHashMap<u32, (Option<Listing>, Option<Arc<str>>)>,
    window_changed: FxHashSet<u32>,
    /// Persons to check as F2 (after stage 2: sorted, distinct, neither the case nor F1).
    f2_check: Vec<u32>,
    /// F1 sources added or removed: the persons with an in-scan in their reach are checked.
    reach: Vec<RawVisit>,
    /// Persons who became F2 here, their names still to read.
    unnamed: Vec<u32>,
}

/// Refreshes each trace with the persons named for it (see the module docs).
pub(crate) fn refresh_many(
    index: &RwLock<Index>,
    max_stay: i64,
    work: &mut [(&mut LiveTrace, &[PersonKey])],
) -> Vec<LiveChanges> {
    let mut outs: Vec<Option<LiveChanges>> = work.iter().map(|_| None).collect();
    let mut reads = Reads::default();
    let mut again = Vec::new();
    let mut plain = Vec::new();
    // Stage 1.
    {
        let guard = index.read();
        for (i, (live, persons)) in work.iter().enumerate() {
            let start_over = match live.case_key {
                // The id was unknown at the last derivation: start over if it is known now.
                None => guard.persons.find(&live.req.person).is_some(),
                Some(_) => !live.present,
            };
            if start_over {
                again.push(i);
                continue;
            }
            for p in persons.iter() {
                reads.load_touched(&guard, p.0);
            }
            plain.push(i);
        }
    }
    if !again.is_empty() {
        let mut guard = index.read();
        let mut u = Updater::new(&mut guard, max_stay);
        for &i in &again {
            u.maybe_yield();
            outs[i] = Some(u.rederive(work[i].0));
        }
    }
    // The case visits of the traces whose case person was touched; then (stage 1b, only if some
    // changed) the persons with an in-scan in reach of a case visit added or removed, who are
    // checked as F1 like the touched ones.
    let mut partials: Vec<(usize, Partial, Vec<u32>)> = Vec::with_capacity(plain.len());
    let mut case_reach = Vec::new();
    for i in plain {
        let (live, persons) = &mut work[i];
        let mut p = Partial::default();
        let mut touched: Vec<u32> = persons.iter().map(|p| p.0).collect();
        touched.sort_unstable();
        touched.dedup();
        if let Some(case) = live.case_key {
            if let Ok(at) = touched.binary_search(&case) {
                touched.remove(at);
                let reach = refresh_case(live, case, &reads, max_stay, &mut p);
                if !reach.is_empty() {
                    case_reach.push((partials.len(), reach));
                }
            }
        }
        partials.push((i, p, touched));
    }
    if !case_reach.is_empty() {
        let mut guard = index.read();
        let mut yielder = Yielder::new(LIVE_HOLD);
        for (k, reach) in &case_reach {
            let (i, _, touched) = &mut partials[*k];
            let live = &*work[*i].0;
            let before = touched.len();
            candidates(&guard, reach, live.req.linger_s, touched);
            let case = live.case_key;
            for (n, &q) in touched[before..].iter().enumerate() {
                if n % 64 == 63 {
                    yielder.maybe_yield(&mut guard);
                }
                if Some(q) != case {
                    reads.load_touched(&guard, q);
                }
            }
            touched.retain(|&q| Some(q) != case);
            touched.sort_unstable();
            touched.dedup();
        }
    }
    let mut partials: Vec<(usize, Partial)> = partials
        .into_iter()
        .map(|(i, mut p, touched)| {
            refresh_f1(work[i].0, &touched, &reads, max_stay, &mut p);
            (i, p)
        })
        .collect();
    // Stage 2.
    if partials
        .iter()
        .any(|(_, p)| !p.f2_check.is_empty() || !p.reach.is_empty())
    {
        let mut guard = index.read();
        let mut yielder = Yielder::new(LIVE_HOLD);
        for (i, p) in &mut partials {
            let live = &*work[*i].0;
            candidates(&guard, &p.reach, live.req.linger_s, &mut p.f2_check);
            p.f2_check.sort_unstable();
            p.f2_check.dedup();
            let case = live.case_key;
            p.f2_check
                .retain(|&r| Some(r) != case && !live.f1.contains_key(&r));
            for (n, &r) in p.f2_check.iter().enumerate() {
                if n % 64 == 63 {
                    yielder.maybe_yield(&mut guard);
                }
                reads.load_visits(&guard, r);
            }
            yielder.maybe_yield(&mut guard);
        }
    }
    for (i, p) in &mut partials {
        refresh_f2(work[*i].0, p, &reads, max_stay);
    }
    // Stage 3.
    if partials.iter().any(|(_, p)| !p.unnamed.is_empty()) {
        let guard = index.read();
        for (i, p) in &partials {
            let live = &mut *work[*i].0;
            for &r in &p.unnamed {
                if (r as usize) >= guard.person_keys.len() {
                    continue;
                }
                let name: Arc<str> = Arc::from(guard.persons.get(r));
                if let Some(e) = live.f1.get_mut(&r) {
                    e.name = name;
                } else if let Some(e) = live.f2.get_mut(&r) {
                    e.name = name;
                }
            }
        }
    }
    for (i, p) in partials {
        outs[i] = Some(finish(work[i].0, p));
    }
    outs.into_iter().map(Option::unwrap_or_default).collect()
}

/// Persons with an in-scan in reach of `sources` (a superset of those overlapping them).
fn candidates(index: &Index, sources: &[RawVisit], linger: i64, out: &mut Vec<u32>) {
    for s in sources {
        let range = index.ins_in_reach(s.venue, s.start, s.end + linger);
        out.extend(range.iter().map(|&k| k as u32));
    }
}

/// F1 of each touched person, from their visits against the case visits; collects who is to be
/// checked as F2 and which sources changed.
/// `touched`: sorted, distinct, without the case person.
fn refresh_f1(
    live: &mut LiveTrace,
    touched: &[u32],
    reads: &Reads,
    max_stay: i64,
    p: &mut Partial,
) {
    let linger = live.req.linger_s;
    let threshold = live.threshold;
    let to = live.req.to;
    let min_stay = live.req.min_stay_s;
    for &x in touched {
        let visits = reads.visits(x);
        let (total, first, last, venues) = exposure_to(visits, &live.case_by_venue);
        let now_f1 = total >= threshold;
        let was_f1 = live.f1.contains_key(&x);
        if !now_f1 && !was_f1 {
            p.f2_check.push(x);
            continue;
        }
        p.before
            .entry(x)
            .or_insert_with(|| (live.listing(x), live.name_of(x)));
        let old_sources = live
            .f1
            .get(&x)
            .map(|e| e.sources.clone())
            .unwrap_or_default();
        let new_sources = if now_f1 {
            clip(visits, min_stay, first, to)
        } else {
            Vec::new()
        };
        if now_f1 {
            let name = match live.name_of(x).or_else(|| reads.names.get(&x).cloned()) {
                Some(n) => n,
                None => {
                    p.unnamed.push(x);
                    Arc::from("")
                }
            };
            live.f1.insert(
                x,
                F1Entry {
                    name,
                    total,
                    first_contact: first,
                    last_contact: last,
                    venues: reads.venue_names(venues.into_iter()),
                    sources: new_sources.clone(),
                },
            );
            live.f2.remove(&x);
            let w = source_person_window(visits, first, to + linger, max_stay);
            if live.watch.insert(x, w) != Some(w) {
                p.window_changed.insert(x);
            }
        } else {
            live.f1.remove(&x);
            live.watch.remove(&x);
            p.window_changed.insert(x);
            p.f2_check.push(x);
        }
        if old_sources != new_sources {
            // Only a source in one set but not the other can change anyone's exposure to `x`:
            // the F2 candidates of those.
            p.reach.extend(only_in(&old_sources, &new_sources));
            p.reach.extend(only_in(&new_sources, &old_sources));
            for s in &old_sources {
                if let Some(list) = live.sources_by_venue.get_mut(&s.venue) {
                    list.retain(|&(_, _, owner)| owner != x);
                    if list.is_empty() {
                        live.sources_by_venue.remove(&s.venue);
                    }
                }
            }
            for s in &new_sources {
                live.sources_by_venue.entry(s.venue).or_default().push((
                    s.start,
                    s.end + linger,
                    x,
                ));
            }
            p.out
                .venue_windows
                .push((PersonKey(x), reads.venue_windows(&new_sources, linger)));
        }
    }
}

/// The case person's scans changed: their case visits are read again from `reads` and, if they
/// changed, installed (with the case's venue windows). Returns the case visits added or removed:
/// only persons with an in-scan in their reach can have a different exposure to the case.
fn refresh_case(
    live: &mut LiveTrace,
    case: u32,
    reads: &Reads,
    max_stay: i64,
    p: &mut Partial,
) -> Vec<RawVisit> {
    let linger = live.req.linger_s;
    let all = reads.visits(case);
    let w = source_person_window(all, live.req.from, live.req.to + linger, max_stay);
    if live.watch.insert(case, w) != Some(w) {
        p.window_changed.insert(case);
    }
    let mut visits = clip(all, live.req.min_stay_s, live.req.from, live.req.to);
    visits.sort_by_key(|v| v.start);
    if visits == live.case_visits {
        return Vec::new();
    }
    let mut reach = only_in(&live.case_visits, &visits);
    reach.extend(only_in(&visits, &live.case_visits));
    live.case_by_venue.clear();
    for c in &visits {
        live.case_by_venue
            .entry(c.venue)
            .or_default()
            .push((c.start, c.end + linger));
    }
    live.case_visits_named = visits
        .iter()
        .map(|v| Visit {
            venue: reads.venue_name(v.venue),
            start: v.start,
            end: v.end,
        })
        .collect();
    p.out
        .venue_windows
        .push((PersonKey(case), reads.venue_windows(&visits, linger)));
    p.out.case_visits_changed = true;
    live.case_visits = visits;
    reach
}

/// F2 of every person to check, against the F1 sources now held, with the contract's `via`
/// rule.
fn refresh_f2(live: &mut LiveTrace, p: &mut Partial, reads: &Reads, max_stay: i64) {
    let threshold = live.threshold;
    let mut per_q: FxHashMap<u32, (i64, i64, i64)> = FxHashMap::default();
    for &r in &p.f2_check {
        per_q.clear();
        for v in reads.visits(r) {
            let Some(list) = live.sources_by_venue.get(&v.venue) else {
                continue;
            };
            for &(start, exposed_end, owner) in list {
                let s = start.max(v.start);
                let e = exposed_end.min(v.end);
                if e > s {
                    let acc = per_q.entry(owner).or_insert((0, i64::MAX, i64::MIN));
                    acc.0 += e - s;
                    acc.1 = acc.1.min(s);
                    acc.2 = acc.2.max(e);
                }
            }
        }
        let mut best: Option<(i64, u32, i64, i64)> = None;
        let mut hull = (i64::MAX, i64::MIN);
        for (&q, &(total, first, last)) in &per_q {
            if total < threshold {
                continue;
            }
            hull = (hull.0.min(first), hull.1.max(last));
            let better = match best {
                None => true,
                Some((bt, bq, _, _)) => {
                    // Ties go to the F1 whose id sorts first (names are byte-ordered).
                    total > bt
                        || (total == bt
                            && live.f1.get(&q).map(|e| &e.name) < live.f1.get(&bq).map(|e| &e.name))
                }
            };
            if better {
                best = Some((total, q, first, last));
            }
        }
        let old = live.f2.get(&r).cloned();
        let new = match best {
            None => None,
            Some((total, via, first, last)) => {
                let name = match old.as_ref() {
                    Some(e) => e.name.clone(),
                    None => {
                        p.unnamed.push(r);
                        Arc::from("")
                    }
                };
                let via_name = live
                    .f1
                    .get(&via)
                    .map(|e| e.name.clone())
                    .unwrap_or_else(|| Arc::from(""));
                Some(F2Entry {
                    name,
                    total,
                    via,
                    via_name,
                    first_contact: first,
                    last_contact: last,
                })
            }
        };
        let window = new
            .as_ref()
            .map(|_| (hull.0.saturating_sub(max_stay), hull.1));
        let held = live.watch.get(&r).copied();
        if held != window {
            match window {
                Some(w) => live.watch.insert(r, w),
                None => live.watch.remove(&r),
            };
            p.window_changed.insert(r);
        }
        if old == new {
            continue;
        }
        p.before.entry(r).or_insert_with(|| {
            (
                old.as_ref().map(listing_of_f2),
                old.as_ref().map(|e| e.name.clone()),
            )
        });
        match new {
            Some(e) => live.f2.insert(r, e),
            None => live.f2.remove(&r),
        };
    }
}

/// The listing and window changes of one refreshed trace (names read).
fn finish(live: &LiveTrace, p: Partial) -> LiveChanges {
    let mut out = p.out;
    for (person, (old, old_name)) in p.before {
        let now = live.listing(person);
        if now == old {
            continue;
        }
        let Some(name) = live.name_of(person).or(old_name) else {
            continue;
        };
        out.listings.push(ListingChange {
            person: name,
            listing: now,
        });
    }
    for person in p.window_changed {
        out.person_windows
            .push((PersonKey(person), live.watch.get(&person).copied()));
    }
    out
}
