//! The health thread: applies the store's change notices to the standing traces (through the
//! exposure index, re-deriving only the cases a scan may change) and tells tier lapses when they
//! fall due.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use engine::AppliedScan;
use rustc_hash::FxHashSet;

use crate::exposure::Slot;
use crate::health::Inner;

/// How often lapses are checked when nothing else happens (the contract allows 60 s).
const LAPSE_TICK: Duration = Duration::from_secs(1);

pub(crate) enum Msg {
    /// Scans stored, and when the notice was sent.
    Scans(Vec<AppliedScan>, Instant),
    /// A purge or a venue change: every counted case is re-derived.
    StoreChanged,
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

/// What one wake-up of the thread collected.
#[derive(Default)]
struct Pass {
    by_scans: FxHashSet<Slot>,
    everything: bool,
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
                for scan in &scans {
                    st.exposure.hits(scan, |slot| {
                        self.by_scans.insert(slot);
                    });
                }
                self.by_scans.extend(st.pending.keys().copied());
                for (&slot, person) in &st.unseen {
                    if inner.engine.person_key(person).is_some() {
                        self.by_scans.insert(slot);
                    }
                }
                false
            }
            Msg::StoreChanged => {
                self.everything = true;
                false
            }
            Msg::Settle(tx) => {
                self.settles.push(tx);
                false
            }
            Msg::Stop => true,
        }
    }

    /// Re-derives what the pass collected, then tells the lapses due.
    fn apply(&mut self, inner: &Inner) {
        let now = inner.engine.now();
        let store_slots: Vec<Slot> = if self.everything {
            let st = inner.state.read();
            (0..st.slots.len() as Slot)
                .filter(|s| st.slots[*s as usize].case.status.counts())
                .collect()
        } else {
            Vec::new()
        };
        let mut scan_slots: Vec<Slot> = self
            .by_scans
            .iter()
            .copied()
            .filter(|s| !store_slots.contains(s))
            .collect();
        scan_slots.sort_unstable();
        for &slot in &scan_slots {
            inner.rederive(slot, now);
        }
        for &slot in &store_slots {
            inner.rederive(slot, now);
        }
        inner
            .rederived_by_scans
            .fetch_add(scan_slots.len() as u64, Ordering::Relaxed);
        inner
            .rederived_by_store
            .fetch_add(store_slots.len() as u64, Ordering::Relaxed);
        if !scan_slots.is_empty() {
            if let Some(first) = self.first_notice {
                let took = first.elapsed();
                for o in inner.observers.read().iter() {
                    o(took);
                }
            }
        }
        let mut st = inner.state.write();
        let mut due = Vec::new();
        while let Some(first) = st.lapses.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, person)) = st.lapses.pop_first() {
                due.push(person);
            }
        }
        if !due.is_empty() {
            inner.publish(&mut st, due, now);
        }
    }
}
