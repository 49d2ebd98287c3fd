//! Live occupancy: who is present where right now (contract section 4).
//!
//! Each person keeps the visit machine's state after their scans with `ts <= now`, and the venue
//! they are counted at. A scan that extends the person's history in order steps the machine; a
//! late (out-of-order) scan replays that person's scans. Scans stamped in the future (allowed up
//! to 300 s of clock skew) and visit deadlines go on a timer wheel of one-second buckets, which the
//! engine's ticker drains every 250 ms, so auto check-outs show within a second of their deadline.
//! Wheel entries are hints, checked against the person's state when they fire, so stale ones
//! (a deadline extended since) cost nothing but the check.

use std::sync::Arc;

use crate::types::ExitReason;
use crate::visits::{self, key_is_out, key_ts, key_venue, Machine, Open};

/// Buckets of the timer wheel: one per second, more than the longest stay plus the future skew.
const WHEEL: usize = 1 << 17;
const NONE: u32 = u32::MAX;

/// Per-person occupancy state (compact: persons number in the millions).
#[derive(Debug, Clone, Copy)]
struct PersonState {
    /// Open visit after the applied scans: venue (`NONE` if none), start, deadline.
    venue: u32,
    start: u32,
    deadline: u32,
    /// Key of the last applied scan (`0` = none applied).
    last_key: u64,
    /// Venue this person is counted present at (`NONE` if not counted).
    counted: u32,
}

impl Default for PersonState {
    fn default() -> Self {
        PersonState {
            venue: NONE,
            start: 0,
            deadline: 0,
            last_key: 0,
            counted: NONE,
        }
    }
}

impl PersonState {
    fn machine(&self) -> Machine {
        Machine {
            open: (self.venue != NONE).then_some(Open {
                venue: self.venue,
                start: self.start as i64,
                deadline: self.deadline as i64,
            }),
        }
    }

    fn set_machine(&mut self, m: Machine) {
        match m.open {
            Some(o) => {
                self.venue = o.venue;
                self.start = clamp_u32(o.start);
                self.deadline = clamp_u32(o.deadline);
            }
            None => self.venue = NONE,
        }
    }
}

/// Why a person counted at `st.counted` stops being counted there (`want` is where they count
/// now), and when; `None` when an "out" scan at that venue ended the visit (the feed already
/// carries that scan).
fn inferred_exit(st: &PersonState, want: u32, now: i64) -> Option<(i64, ExitReason)> {
    if want != NONE {
        // Counted somewhere else now: the check-in there closed this visit.
        return Some((st.start as i64, ExitReason::Elsewhere));
    }
    if st.venue == st.counted {
        // Still the same open visit, but its deadline has passed.
        return Some(((st.deadline as i64).min(now), ExitReason::Deadline));
    }
    if st.venue != NONE {
        // Open at another venue that does not count (yet): a check-in elsewhere closed it.
        return Some(((st.start as i64).min(now), ExitReason::Elsewhere));
    }
    // No open visit: either an "out" scan at the counted venue (not inferred) or the machine
    // closed the visit at its deadline while stepping through a later scan.
    let scanned_out =
        st.last_key != 0 && key_is_out(st.last_key) && key_venue(st.last_key) == st.counted;
    (!scanned_out).then_some(((st.deadline as i64).min(now), ExitReason::Deadline))
}

fn clamp_u32(v: i64) -> u32 {
    v.clamp(0, u32::MAX as i64) as u32
}

/// Read-only view of what occupancy needs from the indexes: every person's sorted keys, venue
/// stays and venue ids (for the contract's tie order).
pub(crate) struct View<'a> {
    pub person_keys: &'a [Vec<u64>],
    pub stays: &'a [u32],
    pub venue_ids: &'a [Arc<str>],
}

impl View<'_> {
    fn keys(&self, person: u32) -> &[u64] {
        self.person_keys.get(person as usize).map_or(&[], |k| k)
    }

    fn stay(&self, venue: u32) -> i64 {
        self.stays.get(venue as usize).copied().unwrap_or(0) as i64
    }

    fn name(&self, venue: u32) -> &str {
        self.venue_ids.get(venue as usize).map_or("", |s| s)
    }
}

/// An exit the server inferred: `person` stopped being counted at `venue` at `ts` without an
/// "out" scan there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawExit {
    pub person: u32,
    pub venue: u32,
    pub ts: i64,
    pub reason: ExitReason,
}

/// Occupancy of every venue.
pub(crate) struct Occupancy {
    persons: Vec<PersonState>,
    present: Vec<u32>,
    total: u64,
    wheel: Vec<Vec<u32>>,
    /// Last second the wheel was drained up to.
    drained_to: i64,
    /// Inferred exits since [`Occupancy::collect_exits`] (`None` while nobody watches a venue:
    /// then counting stays as cheap as it was).
    exits: Option<Vec<RawExit>>,
}

impl Occupancy {
    pub(crate) fn new(now: i64) -> Occupancy {
        Occupancy {
            persons: Vec::new(),
            present: Vec::new(),
            total: 0,
            wheel: vec![Vec::new(); WHEEL],
            drained_to: now,
            exits: None,
        }
    }

    /// Starts (or, with `false`, stops) collecting inferred exits; returns those collected so
    /// far.
    pub(crate) fn collect_exits(&mut self, on: bool) -> Vec<RawExit> {
        let taken = self.exits.take().unwrap_or_default();
        if on {
            self.exits = Some(Vec::new());
        }
        taken
    }

    /// Persons present at `venue`.
    pub(crate) fn present(&self, venue: u32) -> u32 {
        self.present.get(venue as usize).copied().unwrap_or(0)
    }

    /// Persons present, all venues together.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Per-venue counts (index = venue number; may be shorter than the registry).
    pub(crate) fn counts(&self) -> &[u32] {
        &self.present
    }

    fn state(&mut self, person: u32) -> &mut PersonState {
        let i = person as usize;
        if i >= self.persons.len() {
            self.persons.resize(i + 1, PersonState::default());
        }
        &mut self.persons[i]
    }

    fn schedule(&mut self, person: u32, at: i64) {
        if at > self.drained_to && at - self.drained_to < WHEEL as i64 {
            self.wheel[(at as usize) % WHEEL].push(person);
        }
    }

    /// Takes a newly stored scan of `person` (already in `view.keys`) into account.
    pub(crate) fn on_scan(&mut self, person: u32, key: u64, view: &View<'_>, now: i64) {
        let ts = key_ts(key) as i64;
        if ts > now {
            self.schedule(person, ts);
            return;
        }
        let st = *self.state(person);
        // Step only when this scan directly follows the last applied one; anything else (a late
        // scan, a tie at equal (ts, action), a skipped scan that was in the future) replays.
        let keys = view.keys(person);
        let pos = keys.partition_point(|&k| k < key);
        let prev = if pos == 0 { 0 } else { keys[pos - 1] };
        if prev == st.last_key && key >> 31 > st.last_key >> 31 {
            let mut m = st.machine();
            let venue = key_venue(key);
            m.step(ts, venue, key_is_out(key), view.stay(venue), &mut |_| {});
            let s = self.state(person);
            s.set_machine(m);
            s.last_key = key;
        } else {
            self.replay(person, view, now);
        }
        self.refresh(person, now);
    }

    /// Recomputes `person`'s state from all their scans with `ts <= now`.
    pub(crate) fn replay(&mut self, person: u32, view: &View<'_>, now: i64) {
        let mut m = Machine::default();
        let mut last = 0u64;
        let keys = view.keys(person);
        let upto = keys.partition_point(|&k| (key_ts(k) as i64) <= now);
        visits::for_each_in_contract_order(
            &keys[..upto],
            |v| view.name(v),
            |k| {
                let v = key_venue(k);
                m.step(
                    key_ts(k) as i64,
                    v,
                    key_is_out(k),
                    view.stay(v),
                    &mut |_| {},
                );
                last = last.max(k);
            },
        );
        let s = self.state(person);
        s.set_machine(m);
        s.last_key = last;
    }

    /// Brings `person`'s counted venue in line with their state at `now`.
    pub(crate) fn refresh(&mut self, person: u32, now: i64) {
        let st = *self.state(person);
        let want = if st.venue != NONE && (st.deadline as i64) > now && (st.start as i64) <= now {
            st.venue
        } else {
            NONE
        };
        if want != st.counted {
            if st.counted != NONE {
                if let Some(c) = self.present.get_mut(st.counted as usize) {
                    *c = c.saturating_sub(1);
                }
                self.total = self.total.saturating_sub(1);
                if let Some(exits) = self.exits.as_mut() {
                    if let Some((ts, reason)) = inferred_exit(&st, want, now) {
                        exits.push(RawExit {
                            person,
                            venue: st.counted,
                            ts,
                            reason,
                        });
                    }
                }
            }
            if want != NONE {
                let i = want as usize;
                if i >= self.present.len() {
                    self.present.resize(i + 1, 0);
                }
                self.present[i] += 1;
                self.total += 1;
            }
            self.state(person).counted = want;
        }
        if want != NONE {
            self.schedule(person, st.deadline as i64);
        }
    }

    /// Persons whose wheel entries are due at or before `now` (drains their buckets).
    pub(crate) fn due(&mut self, now: i64) -> Vec<u32> {
        let mut due = Vec::new();
        if now <= self.drained_to {
            return due;
        }
        let span = (now - self.drained_to).min(WHEEL as i64);
        for s in 1..=span {
            let b = ((self.drained_to + s) as usize) % WHEEL;
            due.append(&mut self.wheel[b]);
        }
        self.drained_to = now;
        due.sort_unstable();
        due.dedup();
        due
    }

    /// Handles one due person: applies scans that became current and expires deadlines.
    pub(crate) fn tick_person(&mut self, person: u32, view: &View<'_>, now: i64) {
        let st = *self.state(person);
        // A scan with st.last_key < key and ts <= now that is not applied yet (it was in the future).
        let pending = view
            .keys(person)
            .iter()
            .rev()
            .take_while(|&&k| k > st.last_key)
            .any(|&k| (key_ts(k) as i64) <= now);
        if pending {
            self.replay(person, view, now);
        }
        self.refresh(person, now);
    }

    /// Venues a person is open at, for recomputation after a venue's stay changes.
    pub(crate) fn persons_open_at(&self, venue: u32) -> Vec<u32> {
        self.persons
            .iter()
            .enumerate()
            .filter(|(_, s)| s.venue == venue)
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Heap bytes held (for memory reports).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.persons.capacity() * std::mem::size_of::<PersonState>()
            + self.present.capacity() * 4
            + self
                .wheel
                .iter()
                .map(|b| b.capacity() * 4 + 24)
                .sum::<usize>()
    }
}
