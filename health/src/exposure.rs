//! The exposure index: for every counted case, the venue windows and person windows of its
//! standing trace (see `standing`), so that each stored scan is checked in `O(log n)` for the
//! cases it may change, instead of re-deriving every case after every batch.

use std::collections::BTreeMap;

use engine::{AppliedScan, PersonKey, VenueKey};
use rustc_hash::FxHashMap;

use crate::standing::Derived;

/// A case's place in the tracker's table.
pub(crate) type Slot = u32;

/// The windows at one venue, by their low end. `max_len` bounds `hi - lo` of every window ever
/// inserted, so a lookup only visits windows with `lo` in `[ts - max_len, ts]`.
#[derive(Default)]
struct VenueWindows {
    by_lo: BTreeMap<(i64, Slot, u32), i64>,
    max_len: i64,
}

/// What one case put in the index, to take it out again.
#[derive(Default)]
struct Installed {
    venues: Vec<(VenueKey, i64, u32)>,
    persons: Vec<PersonKey>,
}

#[derive(Default)]
pub(crate) struct ExposureIndex {
    venues: FxHashMap<VenueKey, VenueWindows>,
    persons: FxHashMap<PersonKey, Vec<(Slot, i64, i64)>>,
    installed: FxHashMap<Slot, Installed>,
}

impl ExposureIndex {
    /// Replaces `slot`'s windows with those of `derived`.
    pub(crate) fn install(&mut self, slot: Slot, derived: &Derived) {
        self.remove(slot);
        let mut installed = Installed::default();
        for (n, &(venue, lo, hi)) in derived.venue_windows.iter().enumerate() {
            let n = n as u32;
            let w = self.venues.entry(venue).or_default();
            w.by_lo.insert((lo, slot, n), hi);
            w.max_len = w.max_len.max(hi.saturating_sub(lo));
            installed.venues.push((venue, lo, n));
        }
        for &(person, lo, hi) in &derived.person_windows {
            self.persons.entry(person).or_default().push((slot, lo, hi));
            installed.persons.push(person);
        }
        self.installed.insert(slot, installed);
    }

    /// Takes `slot`'s windows out (a discarded case, or before a re-derivation is installed).
    pub(crate) fn remove(&mut self, slot: Slot) {
        let Some(installed) = self.installed.remove(&slot) else {
            return;
        };
        for (venue, lo, n) in installed.venues {
            if let Some(w) = self.venues.get_mut(&venue) {
                w.by_lo.remove(&(lo, slot, n));
                if w.by_lo.is_empty() {
                    self.venues.remove(&venue);
                }
            }
        }
        for person in installed.persons {
            if let Some(list) = self.persons.get_mut(&person) {
                list.retain(|(s, _, _)| *s != slot);
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
            for (&(_, slot, _), &hi) in w.by_lo.range((lo, 0, 0)..=(t, Slot::MAX, u32::MAX)) {
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

    /// How many windows are held (for the docs' sizing and the tests).
    pub(crate) fn len(&self) -> usize {
        self.venues.values().map(|w| w.by_lo.len()).sum::<usize>()
            + self.persons.values().map(Vec::len).sum::<usize>()
    }
}
