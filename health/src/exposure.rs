//! The exposure index: for every counted case, the person windows and venue windows its live
//! trace reports (see `engine::LiveTrace`), so that each stored scan is checked in `O(log n)`
//! for the cases and persons it may change, instead of re-deriving every case after every
//! batch.
//!
//! Every stored scan is checked, and nearly all of them are later than every window of their
//! person and venue, so in front of the maps sit two dense arrays of upper bounds of the windows'
//! ends, by person number and by venue number (4 bytes each): a scan later than both bounds is
//! turned away by two array reads, without touching a hash map or a window list (those are
//! cache misses, and were a third of the health thread's time while ingesting).

use std::collections::BTreeMap;

use engine::{AppliedScan, LiveChanges, PersonKey, VenueKey};
use rustc_hash::{FxHashMap, FxHashSet};

/// A case's place in the tracker's table.
pub(crate) type Slot = u32;

/// Width of the buckets that hold a venue's windows, by their low end.
const BUCKET_S: i64 = 3_600;

/// The windows at one venue, in buckets by their low end (`lo.div_euclid(BUCKET_S)`). `max_len`
/// bounds `hi - lo` of every window ever inserted, so a lookup only visits buckets whose low
/// ends may lie in `[ts - max_len, ts]`, and each bucket's `max_hi` (and the venue's) bounds the
/// high ends it holds, so a lookup skips a bucket, or the whole venue, that ends before `ts`
/// (the usual case: most scans are later than every case window).
#[derive(Default)]
struct VenueWindows {
    buckets: BTreeMap<i64, Bucket>,
    max_len: i64,
    /// At least the largest `hi` held (not lowered when a window is taken out).
    max_hi: i64,
}

/// The windows of one venue with their low end in one bucket.
#[derive(Default)]
struct Bucket {
    /// `(lo, slot, owner, n) -> hi`: the `n`th window of source person `owner` in case `slot`.
    by_lo: BTreeMap<(i64, Slot, u32, u32), i64>,
    /// At least the largest `hi` held (not lowered when a window is taken out).
    max_hi: i64,
}

impl VenueWindows {
    fn insert(&mut self, lo: i64, slot: Slot, owner: u32, n: u32, hi: i64) {
        let b = self
            .buckets
            .entry(lo.div_euclid(BUCKET_S))
            .or_insert(Bucket {
                by_lo: BTreeMap::new(),
                max_hi: i64::MIN,
            });
        b.by_lo.insert((lo, slot, owner, n), hi);
        b.max_hi = b.max_hi.max(hi);
        self.max_hi = self.max_hi.max(hi);
        self.max_len = self.max_len.max(hi.saturating_sub(lo));
    }

    fn remove(&mut self, lo: i64, slot: Slot, owner: u32, n: u32) {
        let key = lo.div_euclid(BUCKET_S);
        if let Some(b) = self.buckets.get_mut(&key) {
            b.by_lo.remove(&(lo, slot, owner, n));
            if b.by_lo.is_empty() {
                self.buckets.remove(&key);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// What one case put in the index, to take it out again.
#[derive(Default)]
struct Installed {
    /// By source person: `(venue, lo, n)` of each venue window.
    owners: FxHashMap<u32, Vec<(VenueKey, i64, u32)>>,
    persons: FxHashSet<PersonKey>,
}

#[derive(Default)]
pub(crate) struct ExposureIndex {
    venues: FxHashMap<VenueKey, VenueWindows>,
    persons: FxHashMap<PersonKey, Vec<(Slot, i64, i64)>>,
    installed: FxHashMap<Slot, Installed>,
    windows: usize,
    /// By person number: the largest `hi` of the person's windows ([`bound`]; 0 with none).
    person_hi: Vec<u32>,
    /// By venue number: at least the largest `hi` of the windows at the venue ([`bound`]; 0
    /// with none; like `VenueWindows::max_hi`, not lowered when a window is taken out).
    venue_hi: Vec<u32>,
}

/// A window end as stored in the dense bounds: clamped to `u32` (a scan's time is a `u32`), so
/// `ts > bound(hi)` implies `ts > hi` for every scan.
fn bound(hi: i64) -> u32 {
    hi.clamp(0, i64::from(u32::MAX)) as u32
}

/// Sets `slots[at]` to `value`, growing `slots` with zeros as needed.
fn set_dense(slots: &mut Vec<u32>, at: u32, value: u32) {
    let at = at as usize;
    if at >= slots.len() {
        if value == 0 {
            return;
        }
        slots.resize(at + 1, 0);
    }
    slots[at] = value;
}

/// Whether a scan at `ts` may fall inside a window whose end is bounded by `slots[at]`.
fn may_reach(slots: &[u32], at: u32, ts: i64) -> bool {
    slots
        .get(at as usize)
        .is_some_and(|&hi| ts <= i64::from(hi))
}

impl ExposureIndex {
    /// Applies the window changes of one update of `slot`'s live trace.
    pub(crate) fn apply(&mut self, slot: Slot, changes: &LiveChanges) {
        if changes.rebuilt {
            self.remove(slot);
        }
        for &(person, window) in &changes.person_windows {
            self.set_person(slot, person, window);
        }
        for (owner, windows) in &changes.venue_windows {
            self.remove_owner(slot, owner.index());
            if windows.is_empty() {
                continue;
            }
            let mut held = Vec::with_capacity(windows.len());
            for (n, &(venue, lo, hi)) in windows.iter().enumerate() {
                let n = n as u32;
                let w = self.venues.entry(venue).or_default();
                w.insert(lo, slot, owner.index(), n, hi);
                set_dense(&mut self.venue_hi, venue.index(), bound(w.max_hi));
                held.push((venue, lo, n));
            }
            self.windows += held.len();
            self.installed
                .entry(slot)
                .or_default()
                .owners
                .insert(owner.index(), held);
        }
    }

    fn set_person(&mut self, slot: Slot, person: PersonKey, window: Option<(i64, i64)>) {
        let list = self.persons.entry(person).or_default();
        let before = list.len();
        list.retain(|(s, _, _)| *s != slot);
        self.windows -= before - list.len();
        match window {
            Some((lo, hi)) => {
                list.push((slot, lo, hi));
                self.windows += 1;
                self.installed
                    .entry(slot)
                    .or_default()
                    .persons
                    .insert(person);
            }
            None => {
                if let Some(i) = self.installed.get_mut(&slot) {
                    i.persons.remove(&person);
                }
            }
        }
        self.person_bound(person);
    }

    /// Sets the person's dense bound from its window list (dropping an empty list).
    fn person_bound(&mut self, person: PersonKey) {
        let hi = match self.persons.get(&person) {
            Some(list) if list.is_empty() => {
                self.persons.remove(&person);
                0
            }
            Some(list) => list.iter().map(|&(_, _, hi)| bound(hi)).max().unwrap_or(0),
            None => 0,
        };
        set_dense(&mut self.person_hi, person.index(), hi);
    }

    fn remove_owner(&mut self, slot: Slot, owner: u32) {
        let Some(held) = self
            .installed
            .get_mut(&slot)
            .and_then(|i| i.owners.remove(&owner))
        else {
            return;
        };
        self.drop_venue_windows(slot, owner, held);
    }

    /// Takes the venue windows `held` of source person `owner` in `slot` out.
    fn drop_venue_windows(&mut self, slot: Slot, owner: u32, held: Vec<(VenueKey, i64, u32)>) {
        self.windows -= held.len();
        for (venue, lo, n) in held {
            if let Some(w) = self.venues.get_mut(&venue) {
                w.remove(lo, slot, owner, n);
                if w.is_empty() {
                    self.venues.remove(&venue);
                    set_dense(&mut self.venue_hi, venue.index(), 0);
                }
            }
        }
    }

    /// Takes every window of `slot` out (a discarded case, or before a full derivation is
    /// installed).
    pub(crate) fn remove(&mut self, slot: Slot) {
        let Some(installed) = self.installed.remove(&slot) else {
            return;
        };
        for (owner, held) in installed.owners {
            self.drop_venue_windows(slot, owner, held);
        }
        for person in installed.persons {
            if let Some(list) = self.persons.get_mut(&person) {
                let before = list.len();
                list.retain(|(s, _, _)| *s != slot);
                self.windows -= before - list.len();
                self.person_bound(person);
            }
        }
    }

    /// Calls `hit` with every case `scan` may change (a case may be named more than once).
    pub(crate) fn hits(&self, scan: &AppliedScan, mut hit: impl FnMut(Slot)) {
        let t = scan.ts;
        // The dense bounds first: the maps are looked into only when they may hold a window.
        let at_venue = may_reach(&self.venue_hi, scan.venue.index(), t)
            .then(|| self.venues.get(&scan.venue))
            .flatten()
            .filter(|w| w.max_hi >= t);
        if let Some(w) = at_venue {
            let lo = t.saturating_sub(w.max_len);
            for b in w
                .buckets
                .range(lo.div_euclid(BUCKET_S)..=t.div_euclid(BUCKET_S))
                .map(|(_, b)| b)
                .filter(|b| b.max_hi >= t)
            {
                for (&(_, slot, _, _), &hi) in b
                    .by_lo
                    .range((lo, 0, 0, 0)..=(t, Slot::MAX, u32::MAX, u32::MAX))
                {
                    if hi >= t {
                        hit(slot);
                    }
                }
            }
        }
        let of_person = may_reach(&self.person_hi, scan.person.index(), t)
            .then(|| self.persons.get(&scan.person))
            .flatten();
        for &(slot, lo, hi) in of_person.into_iter().flatten() {
            if lo <= t && t <= hi {
                hit(slot);
            }
        }
    }

    /// How many windows are held (for the metrics and the docs' sizing).
    pub(crate) fn len(&self) -> usize {
        self.windows
    }
}
