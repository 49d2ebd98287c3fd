//! The exposure index: for every counted case, the person windows and venue windows its live
//! trace reports (see `engine::LiveTrace`), so that each stored scan is checked in `O(log n)`
//! for the cases and persons it may change, instead of re-deriving every case after every
//! batch.

use std::collections::BTreeMap;

use engine::{AppliedScan, LiveChanges, PersonKey, VenueKey};
use rustc_hash::{FxHashMap, FxHashSet};

/// A case's place in the tracker's table.
pub(crate) type Slot = u32;

/// The windows at one venue, by their low end. `max_len` bounds `hi - lo` of every window ever
/// inserted, so a lookup only visits windows with `lo` in `[ts - max_len, ts]`.
#[derive(Default)]
struct VenueWindows {
    /// `(lo, slot, owner, n) -> hi`: the `n`th window of source person `owner` in case `slot`.
    by_lo: BTreeMap<(i64, Slot, u32, u32), i64>,
    max_len: i64,
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
                w.by_lo.insert((lo, slot, owner.index(), n), hi);
                w.max_len = w.max_len.max(hi.saturating_sub(lo));
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
                if list.is_empty() {
                    self.persons.remove(&person);
                }
                if let Some(i) = self.installed.get_mut(&slot) {
                    i.persons.remove(&person);
                }
            }
        }
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
                w.by_lo.remove(&(lo, slot, owner, n));
                if w.by_lo.is_empty() {
                    self.venues.remove(&venue);
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
                if list.is_empty() {
                    self.persons.remove(&person);
                }
            }
        }
    }

    /// Calls `hit` with every case `scan` may change (a case may be named more than once).
    pub(crate) fn hits(&self, scan: &AppliedScan, mut hit: impl FnMut(Slot)) {
        let t = scan.ts;
        if let Some(w) = self.venues.get(&scan.venue) {
            let lo = t.saturating_sub(w.max_len);
            for (&(_, slot, _, _), &hi) in w
                .by_lo
                .range((lo, 0, 0, 0)..=(t, Slot::MAX, u32::MAX, u32::MAX))
            {
                if hi >= t {
                    hit(slot);
                }
            }
        }
        if let Some(list) = self.persons.get(&scan.person) {
            for &(slot, lo, hi) in list {
                if lo <= t && t <= hi {
                    hit(slot);
                }
            }
        }
    }

    /// How many windows are held (for the metrics and the docs' sizing).
    pub(crate) fn len(&self) -> usize {
        self.windows
    }
}
