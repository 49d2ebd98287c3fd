//! In-memory indexes, rebuilt from the log at open: persons, their scans, venues' in-scans,
//! occupancy and the recent-events window.
//!
//! - Per person: every scan as a sorted `u64` key (see `visits::person_key`), 8 bytes a scan.
//! - Per venue: every `"in"` scan as a sorted `ts << 32 | person` key, 8 bytes a scan. A visit at
//!   venue V overlapping `[a, b)` always has an in-scan at V in `(a - stay(V), b)`, so a range of
//!   this index finds every candidate contact.
//!
//! Late scans are inserted in place (a binary search and a move of the newer tail, which is short
//! for the usual minutes-to-hours lateness). An exact duplicate is found by the same search and
//! stored nowhere. The whole `Index` sits behind one `RwLock`: the writer thread takes it once per
//! batch, readers share it.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::hourly::HourlyIns;
use crate::intern::Interner;
use crate::occupancy::{Occupancy, View};
use crate::types::{Action, ExitEvent, ScanEvent, Visit};
use crate::visits::{self, key_ts, person_key, RawVisit};

/// One entry of the recent-events window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventRec {
    pub seq: u64,
    pub person: u32,
    pub venue: u32,
    pub ts: u32,
    pub out: bool,
}

/// The indexes.
pub(crate) struct Index {
    pub persons: Interner,
    pub person_keys: Vec<Vec<u64>>,
    pub venue_ins: Vec<Vec<u64>>,
    /// `venue_ins` counted per hour.
    pub hourly: HourlyIns,
    /// Venue ids and effective stays by venue number (copied from the registry).
    pub venue_ids: Vec<Arc<str>>,
    pub stays: Vec<u32>,
    /// An upper bound of every venue's stay (the largest ever set): a scan older than
    /// `t - max_stay` cannot keep a visit open at `t`.
    pub max_stay: u32,
    pub occupancy: Occupancy,
    pub scans: u64,
    /// Persons with at least one stored scan.
    pub active_persons: u64,
    pub recent: VecDeque<EventRec>,
    pub recent_cap: usize,
    /// Oldest seq that is still (or was never evicted from) the window.
    pub recent_floor: u64,
}

impl Index {
    pub(crate) fn new(now: i64, recent_cap: usize) -> Index {
        Index {
            persons: Interner::default(),
            person_keys: Vec::new(),
            venue_ins: Vec::new(),
            hourly: HourlyIns::default(),
            venue_ids: Vec::new(),
            stays: Vec::new(),
            max_stay: 0,
            occupancy: Occupancy::new(now),
            scans: 0,
            active_persons: 0,
            recent: VecDeque::new(),
            recent_cap,
            recent_floor: 0,
        }
    }

    /// Sets a venue's id and effective stay (registration).
    pub(crate) fn set_venue(&mut self, venue: u32, id: Arc<str>, stay: u32) {
        let i = venue as usize;
        if i >= self.venue_ids.len() {
            self.venue_ids.resize(i + 1, Arc::from(""));
            self.stays.resize(i + 1, 0);
            self.venue_ins.resize_with(i + 1, Vec::new);
        }
        self.venue_ids[i] = id;
        self.stays[i] = stay;
        self.max_stay = self.max_stay.max(stay);
    }

    /// Interns a person id.
    pub(crate) fn intern(&mut self, person: &str) -> u32 {
        let (id, new) = self.persons.intern(person);
        if new {
            self.person_keys.push(Vec::new());
        }
        id
    }

    /// Stores one scan in the person and venue indexes, the clock reading `now`. Returns its
    /// key, or `None` for an exact duplicate of a stored scan.
    pub(crate) fn insert(
        &mut self,
        person: u32,
        venue: u32,
        ts: u32,
        out: bool,
        now: i64,
    ) -> Option<u64> {
        let key = person_key(ts, venue, out);
        let keys = &mut self.person_keys[person as usize];
        match keys.last() {
            None => {
                keys.push(key);
                self.active_persons += 1;
            }
            Some(&last) if last < key => keys.push(key),
            Some(_) => match keys.binary_search(&key) {
                Ok(_) => return None,
                Err(pos) => keys.insert(pos, key),
            },
        }
        if !out {
            let vkey = ((ts as u64) << 32) | person as u64;
            let ins = &mut self.venue_ins[venue as usize];
            match ins.last() {
                Some(&last) if last >= vkey => {
                    let pos = ins.partition_point(|&k| k < vkey);
                    ins.insert(pos, vkey);
                }
                _ => ins.push(vkey),
            }
            self.hourly.add(ts, now);
        }
        self.scans += 1;
        Some(key)
    }

    /// Sorts and deduplicates what recovery pushed, drops scans older than `cutoff`, trims spare
    /// capacity, and computes occupancy at `now`.
    pub(crate) fn finish_recovery(&mut self, cutoff: i64, now: i64) {
        let mut scans = 0u64;
        let mut active = 0u64;
        for keys in &mut self.person_keys {
            if !keys.is_sorted() {
                keys.sort_unstable();
            }
            keys.dedup();
            let drop_n = keys.partition_point(|&k| (key_ts(k) as i64) < cutoff);
            keys.drain(..drop_n);
            keys.shrink_to_fit();
            scans += keys.len() as u64;
            active += u64::from(!keys.is_empty());
        }
        for ins in &mut self.venue_ins {
            if !ins.is_sorted() {
                ins.sort_unstable();
            }
            ins.dedup();
            let drop_n = ins.partition_point(|&k| ((k >> 32) as i64) < cutoff);
            ins.drain(..drop_n);
            ins.shrink_to_fit();
            for &k in ins.iter() {
                self.hourly.add((k >> 32) as u32, now);
            }
        }
        self.scans = scans;
        self.active_persons = active;
        self.occupancy = Occupancy::new(now);
        for p in 0..self.person_keys.len() as u32 {
            self.recompute_occupancy(p, now);
        }
    }

    /// Occupancy, and the read-only parts of the index it works from.
    fn occupancy_parts(&mut self) -> (&mut Occupancy, View<'_>) {
        let Index {
            person_keys,
            stays,
            venue_ids,
            occupancy,
            ..
        } = self;
        let view = View {
            person_keys,
            stays,
            venue_ids,
        };
        (occupancy, view)
    }

    /// Replays one person's occupancy state from scratch.
    pub(crate) fn recompute_occupancy(&mut self, person: u32, now: i64) {
        let (occupancy, view) = self.occupancy_parts();
        occupancy.replay(person, &view, now);
        occupancy.refresh(person, now);
    }

    /// Updates occupancy for a newly stored scan.
    pub(crate) fn occupancy_on_scan(&mut self, person: u32, key: u64, now: i64) {
        let (occupancy, view) = self.occupancy_parts();
        occupancy.on_scan(person, key, &view, now);
    }

    /// Expires deadlines and activates future-stamped scans due by `now`.
    pub(crate) fn tick(&mut self, now: i64) {
        self.hourly.forget_ahead_before(now);
        let (occupancy, view) = self.occupancy_parts();
        for p in occupancy.due(now) {
            occupancy.tick_person(p, &view, now);
        }
    }

    /// Removes every scan with `ts < cutoff`. Returns how many were removed.
    pub(crate) fn prune_before(&mut self, cutoff: i64) -> u64 {
        let mut removed = 0u64;
        for keys in &mut self.person_keys {
            let n = keys.partition_point(|&k| (key_ts(k) as i64) < cutoff);
            if n > 0 {
                keys.drain(..n);
                removed += n as u64;
                if keys.is_empty() {
                    self.active_persons = self.active_persons.saturating_sub(1);
                    keys.shrink_to_fit();
                }
            }
        }
        for ins in &mut self.venue_ins {
            let n = ins.partition_point(|&k| ((k >> 32) as i64) < cutoff);
            if n > 0 {
                for k in ins.drain(..n) {
                    self.hourly.remove((k >> 32) as u32);
                }
            }
        }
        self.scans = self.scans.saturating_sub(removed);
        removed
    }

    /// Stored scans with `ts > after`.
    pub(crate) fn scans_after(&self, after: i64) -> u64 {
        if after < 0 {
            return self.scans;
        }
        let after = after.min(i64::from(u32::MAX)) as u32;
        self.person_keys
            .iter()
            .map(|keys| (keys.len() - keys.partition_point(|&k| key_ts(k) <= after)) as u64)
            .sum()
    }

    /// The person's number if they have stored scans.
    pub(crate) fn person(&self, id: &str) -> Option<u32> {
        let p = self.persons.find(id)?;
        (!self.person_keys[p as usize].is_empty()).then_some(p)
    }

    pub(crate) fn stay(&self, venue: u32) -> i64 {
        self.stays.get(venue as usize).copied().unwrap_or(0) as i64
    }

    /// The in-scan keys at `venue` that can shape a visit overlapping `[start, exposed_end)`:
    /// those in `[start - stay(venue), exposed_end]` (a superset of the persons overlapping it).
    pub(crate) fn ins_in_reach(&self, venue: u32, start: i64, exposed_end: i64) -> &[u64] {
        let Some(ins) = self.venue_ins.get(venue as usize) else {
            return &[];
        };
        let lo_ts = (start - self.stay(venue)).max(0) as u64;
        let hi_ts = exposed_end.max(0) as u64;
        &ins[ins.partition_point(|&k| (k >> 32) < lo_ts)
            ..ins.partition_point(|&k| (k >> 32) <= hi_ts)]
    }

    /// The persons with an in-scan at `venue` stamped `since` or later (future stamps included),
    /// each once.
    pub(crate) fn persons_in_since(&self, venue: u32, since: i64) -> Vec<u32> {
        let Some(ins) = self.venue_ins.get(venue as usize) else {
            return Vec::new();
        };
        let lo = since.max(0) as u64;
        let mut persons: Vec<u32> = ins[ins.partition_point(|&k| (k >> 32) < lo)..]
            .iter()
            .map(|&k| k as u32)
            .collect();
        persons.sort_unstable();
        persons.dedup();
        persons
    }

    pub(crate) fn venue_name(&self, venue: u32) -> &str {
        self.venue_ids.get(venue as usize).map_or("", |s| s)
    }

    /// All visits of a person, in the contract's emission order (ascending by start).
    pub(crate) fn raw_visits(&self, person: u32, out: &mut Vec<RawVisit>) {
        out.clear();
        visits::derive(
            &self.person_keys[person as usize],
            |v| self.stay(v),
            |v| self.venue_name(v),
            |r| out.push(r),
        );
    }

    /// Visits with `start < to` and `end >= from`, unclipped.
    pub(crate) fn visits(&self, person: u32, from: i64, to: i64) -> Vec<Visit> {
        let mut raw = Vec::new();
        self.raw_visits(person, &mut raw);
        raw.into_iter()
            .filter(|v| v.start < to && v.end >= from)
            .map(|v| self.visit(v))
            .collect()
    }

    pub(crate) fn visit(&self, v: RawVisit) -> Visit {
        Visit {
            venue: self.venue_ids[v.venue as usize].clone(),
            start: v.start,
            end: v.end,
        }
    }

    /// Records an accepted scan in the recent-events window.
    pub(crate) fn push_recent(&mut self, ev: EventRec) {
        if self.recent_cap == 0 {
            return;
        }
        if self.recent.len() == self.recent_cap {
            if let Some(old) = self.recent.pop_front() {
                self.recent_floor = old.seq + 1;
            }
        }
        self.recent.push_back(ev);
    }

    pub(crate) fn event(&self, e: &EventRec) -> ScanEvent {
        ScanEvent {
            seq: e.seq,
            person: Arc::from(self.persons.get(e.person)),
            venue: self.venue_ids[e.venue as usize].clone(),
            ts: e.ts as i64,
            action: if e.out { Action::Out } else { Action::In },
        }
    }

    /// The inferred exits collected since the last call, at the venues `watched` holds, as live
    /// events; collects on afterwards only if `again`.
    pub(crate) fn take_exits(
        &mut self,
        watched: Option<&rustc_hash::FxHashMap<u32, u32>>,
        again: bool,
    ) -> Vec<ExitEvent> {
        let raw = self.occupancy.collect_exits(again);
        let Some(watched) = watched else {
            return Vec::new();
        };
        raw.into_iter()
            .filter(|e| watched.contains_key(&e.venue))
            .filter_map(|e| {
                Some(ExitEvent {
                    person: Arc::from(self.persons.get(e.person)),
                    venue: self.venue_ids.get(e.venue as usize)?.clone(),
                    ts: e.ts,
                    reason: e.reason,
                })
            })
            .collect()
    }

    /// In-scans stored with `ts` in each of the `hours` whole hours before `now`'s hour and in
    /// that hour itself (up to `now`), oldest first: `hours + 1` counts.
    pub(crate) fn ins_per_hour(&self, now: i64, hours: u32) -> Vec<u64> {
        self.hourly.per_hour(now, hours)
    }

    /// The latest `n` events at `venue`, oldest first.
    pub(crate) fn recent_at(&self, venue: u32, n: usize) -> Vec<ScanEvent> {
        let mut out: Vec<ScanEvent> = self
            .recent
            .iter()
            .rev()
            .filter(|e| e.venue == venue)
            .take(n)
            .map(|e| self.event(e))
            .collect();
        out.reverse();
        out
    }

    /// Events at `venue` with `seq > after`, and whether none older than the window were asked for.
    pub(crate) fn events_after(&self, venue: u32, after: u64) -> (Vec<ScanEvent>, bool) {
        let complete = after.saturating_add(1) >= self.recent_floor;
        let start = self.recent.partition_point(|e| e.seq <= after);
        let out = self
            .recent
            .range(start..)
            .filter(|e| e.venue == venue)
            .map(|e| self.event(e))
            .collect();
        (out, complete)
    }

    /// Approximate heap bytes of the indexes (for memory reports).
    pub(crate) fn heap_bytes(&self) -> usize {
        let keys: usize = self
            .person_keys
            .iter()
            .map(|k| k.capacity() * 8)
            .sum::<usize>()
            + self.person_keys.capacity() * 24;
        let ins: usize = self
            .venue_ins
            .iter()
            .map(|k| k.capacity() * 8)
            .sum::<usize>()
            + self.venue_ins.capacity() * 24;
        keys + ins
            + self.persons.heap_bytes()
            + self.occupancy.heap_bytes()
            + self.recent.capacity() * std::mem::size_of::<EventRec>()
    }
}
