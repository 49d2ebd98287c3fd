//! The health thread: applies the store's change notices to the standing traces (through the
//! exposure index, refreshing in each case only the persons whose scans may change it) and tells
//! tier lapses when they fall due. A pass starts [`PASS_GATHER`] after the notice that woke the
//! thread, so that it takes the notices of many records at once.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use engine::{Engine, LiveChanges, LiveTrace};
use engine::{PersonKey, StoredScans};
use parking_lot::{Mutex, MutexGuard};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::exposure::Slot;
use crate::health::Inner;

/// How often lapses are checked when nothing else happens (the contract allows 60 s).
const LAPSE_TICK: Duration = Duration::from_secs(1);
/// Cases refreshed under one hold of the indexes before their changes are applied.
const REFRESH_GROUP: usize = 32;
/// How long a pass waits after the scan notice that woke the thread before it takes what is
/// queued: during ingestion the notices of many records go into one pass, so a case hit by
/// several is refreshed once, and the thread is not woken by the sync thread for each record
/// (the listener runs before the callers are acknowledged). A `Settle`, a `Wake` or `Stop`
/// ends the wait at once ([`Inner::hurry`]).
pub(crate) const PASS_GATHER: Duration = Duration::from_millis(25);

pub(crate) enum Msg {
    /// Scans stored, and when the notice was sent.
    Scans(StoredScans, Instant),
    /// A purge or a venue change: every counted case is derived again.
    StoreChanged,
    /// A case was installed with held-back work (`Inner::deferred`).
    Wake,
    /// Answer once everything before this message is applied.
    Settle(Sender<()>),
    Stop,
}

/// The thread's loop; ends at `Stop` or when the domain is dropped.
pub(crate) fn run(inner: Weak<Inner>, rx: Receiver<Msg>) {
    loop {
        let first = match rx.recv_timeout(LAPSE_TICK) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if let Some(Msg::Scans(_, at)) = &first {
            // Without a strong hold on the domain, so that dropping it meanwhile (and the
            // engine it holds, with its directory lock) is not delayed by the wait.
            if !gather(&inner, *at + PASS_GATHER) {
                return;
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let mut pass = Pass::default();
        let mut stop = false;
        if let Some(m) = first {
            stop |= pass.take(&inner, m);
        }
        while !stop {
            match rx.try_recv() {
                Ok(m) => stop |= pass.take(&inner, m),
                Err(_) => break,
            }
        }
        pass.apply(&inner);
        for s in pass.settles {
            let _ = s.send(());
        }
        if stop {
            return;
        }
    }
}

/// Waits until `until` for more notices to queue, or until someone hurries the thread;
/// `false` if the domain was dropped meanwhile.
fn gather(inner: &Weak<Inner>, until: Instant) -> bool {
    loop {
        match inner.upgrade() {
            None => return false,
            Some(i) if i.hurried.swap(false, Ordering::AcqRel) => return true,
            Some(_) => {}
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::park_timeout(until - now);
    }
}

/// What one wake-up of the thread collected.
#[derive(Default)]
struct Pass {
    /// Per case, the persons whose scans may have changed it.
    touched: FxHashMap<Slot, Vec<PersonKey>>,
    everything: bool,
    rederive: FxHashSet<Slot>,
    first_notice: Option<Instant>,
    settles: Vec<Sender<()>>,
}

impl Pass {
    /// Takes one message; `true` at `Stop`.
    fn take(&mut self, inner: &Inner, msg: Msg) -> bool {
        match msg {
            Msg::Scans(scans, at) => {
                self.first_notice = Some(self.first_notice.map_or(at, |f| f.min(at)));
                let st = inner.state.read();
                let exposure = inner.exposure.read();
                for scan in &scans {
                    exposure.hits(scan, |slot| {
                        let list = self.touched.entry(slot).or_default();
                        if list.last() != Some(&scan.person) {
                            list.push(scan.person);
                        }
                    });
                }
                if !st.pending.is_empty() {
                    let mut held = inner.held_back.lock();
                    for &slot in st.pending.keys() {
                        held.entry(slot)
                            .or_default()
                            .persons
                            .extend(scans.iter().map(|s| s.person));
                    }
                }
                for (&slot, person) in &st.unseen {
                    if inner.engine.person_key(person).is_some() {
                        self.touched.entry(slot).or_default();
                    }
                }
                false
            }
            Msg::StoreChanged => {
                self.everything = true;
                let st = inner.state.read();
                if !st.pending.is_empty() {
                    let mut held = inner.held_back.lock();
                    for &slot in st.pending.keys() {
                        held.entry(slot).or_default().rederive = true;
                    }
                }
                false
            }
            Msg::Wake => false,
            Msg::Settle(tx) => {
                self.settles.push(tx);
                false
            }
            Msg::Stop => true,
        }
    }

    /// Refreshes what the pass collected, then tells the lapses due.
    fn apply(&mut self, inner: &Inner) {
        for (slot, held) in std::mem::take(&mut *inner.deferred.lock()) {
            if held.rederive {
                self.rederive.insert(slot);
            }
            self.touched.entry(slot).or_default().extend(held.persons);
        }
        if self.everything {
            let st = inner.state.read();
            self.rederive.extend(
                (0..st.slots.len() as Slot).filter(|s| st.slots[*s as usize].case.status.counts()),
            );
        }
        let mut slots: Vec<Slot> = self
            .touched
            .keys()
            .copied()
            .filter(|s| !self.rederive.contains(s))
            .collect();
        slots.sort_unstable();
        let mut refreshed = 0u64;
        for group in slots.chunks(REFRESH_GROUP) {
            let work: Vec<(Slot, Vec<PersonKey>)> = group
                .iter()
                .map(|&slot| {
                    let mut persons = self.touched.remove(&slot).unwrap_or_default();
                    persons.sort_unstable();
                    persons.dedup();
                    (slot, persons)
                })
                .collect();
            refreshed += update_group(inner, work, |engine, lives| {
                engine.refresh_live_traces(lives)
            });
        }
        let mut rederived = 0u64;
        let mut again: Vec<Slot> = self.rederive.drain().collect();
        again.sort_unstable();
        for group in again.chunks(REFRESH_GROUP) {
            let work = group.iter().map(|&slot| (slot, Vec::new())).collect();
            rederived += update_group(inner, work, |engine, lives| {
                lives
                    .iter_mut()
                    .map(|(live, _)| engine.rederive_live_trace(live))
                    .collect()
            });
        }
        inner
            .rederived_by_scans
            .fetch_add(refreshed, Ordering::Relaxed);
        inner
            .rederived_by_store
            .fetch_add(rederived, Ordering::Relaxed);
        if refreshed > 0 {
            if let Some(first) = self.first_notice {
                let took = first.elapsed();
                for o in inner.observers.read().iter() {
                    o(took);
                }
            }
        }
        let now = inner.now();
        let st = inner.state.read();
        let mut due = Vec::new();
        {
            let mut told = inner.told.lock();
            while let Some(first) = told.lapses.first() {
                if first.0 > now {
                    break;
                }
                if let Some((_, person)) = told.lapses.pop_first() {
                    told.next_lapse.remove(&person);
                    due.push(person);
                }
            }
        }
        if !due.is_empty() {
            inner.publish(&st, due, now);
        }
    }
}

/// Updates a group of cases with `update` (the engine's refresh of the persons named for each
/// under one hold of the indexes, or derivations from scratch), each case under its own mutex,
/// taken in slot order, with `state` free; then applies each one's changes, and tells the tier
/// changes of the whole group (each person once). Skips cases that do not count or whose first derivation is in flight (their scans
/// are held back). Returns how many were updated.
fn update_group(
    inner: &Inner,
    work: Vec<(Slot, Vec<PersonKey>)>,
    update: impl FnOnce(&Engine, &mut [(&mut LiveTrace, &[PersonKey])]) -> Vec<LiveChanges>,
) -> u64 {
    let lives: Vec<(Slot, Arc<Mutex<LiveTrace>>, Vec<PersonKey>)> = {
        let st = inner.state.read();
        work.into_iter()
            .filter_map(|(slot, persons)| {
                st.slots
                    .get(slot as usize)
                    .map(|e| (slot, e.live.clone(), persons))
            })
            .collect()
    };
    let mut locked: Vec<(Slot, MutexGuard<'_, LiveTrace>, &[PersonKey])> = lives
        .iter()
        .map(|(slot, live, persons)| (*slot, live.lock(), persons.as_slice()))
        .collect();
    {
        let st = inner.state.read();
        locked.retain(|(slot, _, _)| {
            st.slots[*slot as usize].case.status.counts() && !st.pending.contains_key(slot)
        });
    }
    let results = {
        let mut work: Vec<(&mut LiveTrace, &[PersonKey])> = locked
            .iter_mut()
            .map(|(_, live, persons)| (&mut **live, *persons))
            .collect();
        update(&inner.engine, &mut work)
    };
    let now = inner.now();
    // The persons whose listings changed in any case of the group, told once each at the end
    // (a person is often listed by several of the cases refreshed together).
    let mut changed = Vec::new();
    for ((slot, live, _), changes) in locked.iter().zip(results) {
        if changes.is_empty() {
            continue;
        }
        inner.exposure.write().apply(*slot, &changes);
        let mut st = inner.state.write();
        inner.apply_changes(&mut st, *slot, live, &changes, &mut changed);
    }
    if !changed.is_empty() {
        inner.publish(&inner.state.read(), changed, now);
    }
    locked.len() as u64
}
