//! The sync thread and its queue: the writer queues each appended range with the callers it
//! completes; the sync thread makes the ranges durable in groups (one `msync` per segment for
//! everything queued, in `Fsync` mode), then, in log order, feeds the live-event and change
//! listeners and completes the callers (with the poisoning error if a sync failed).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::change::{StoreChange, StoredScans};
use crate::engine::{Completion, Durability, Shared};
use crate::error::{Error, Result};
use crate::log::Segment;
use crate::types::*;

/// A caller to complete, with its outcome.
pub(crate) type Done = (Completion, Result<IngestOutcome>);

/// One appended range of a segment, and what to do once it is durable.
pub(crate) struct SyncItem {
    pub(crate) segment: Arc<Segment>,
    pub(crate) end: usize,
    pub(crate) done: Vec<Done>,
    pub(crate) events: Vec<ScanEvent>,
    /// Exits the item's scans (or the deadlines caught up before them) ended at watched venues.
    pub(crate) exits: Vec<ExitEvent>,
    /// Every stored scan of the item, for the change listeners (empty while there is none).
    pub(crate) applied: StoredScans,
}

/// The queued items, and whether the engine is stopping.
#[derive(Default)]
pub(crate) struct SyncQueueState {
    pub(crate) items: Vec<SyncItem>,
    pub(crate) stop: bool,
}

/// The writer-to-sync queue.
#[derive(Default)]
pub(crate) struct SyncQueue {
    pub(crate) state: Mutex<SyncQueueState>,
    pub(crate) cv: Condvar,
}

/// The sync thread: makes appended ranges durable in groups, then completes the waiters and
/// feeds the live-event listeners, in log order.
pub(crate) fn sync_loop(shared: &Shared) {
    let fsync = shared.config.durability == Durability::Fsync;
    loop {
        let items = {
            let mut st = shared.sync.state.lock();
            while st.items.is_empty() && !st.stop {
                shared.sync.cv.wait(&mut st);
            }
            if st.items.is_empty() && st.stop {
                return;
            }
            std::mem::take(&mut st.items)
        };
        let mut failure: Option<String> = shared.poison_reason();
        if fsync && failure.is_none() {
            let started = Instant::now();
            // Each segment once, up to the furthest end queued for it, in log order.
            let mut ranges: Vec<(&Arc<Segment>, usize)> = Vec::new();
            for item in &items {
                match ranges.last_mut() {
                    Some((seg, end)) if Arc::ptr_eq(seg, &item.segment) => {
                        *end = (*end).max(item.end)
                    }
                    _ => ranges.push((&item.segment, item.end)),
                }
            }
            for (seg, end) in ranges {
                let from = seg.synced.load(Ordering::Acquire);
                if end <= from {
                    continue;
                }
                let synced = match &shared.config.sync_fault {
                    Some(fault) => fault().and_then(|()| seg.map.sync_range(from, end - from)),
                    None => seg.map.sync_range(from, end - from),
                };
                if let Err(e) = synced {
                    let msg = format!("syncing {} failed: {e}", seg.path.display());
                    tracing::error!(%msg, "log poisoned");
                    shared.poison(msg.clone());
                    failure = Some(msg);
                    break;
                }
                seg.synced.store(end, Ordering::Release);
            }
            if failure.is_none() {
                let took = started.elapsed();
                for o in shared.observers.read().iter() {
                    o(took);
                }
            }
        }
        let listeners = shared.listeners.read();
        let change_listeners = shared.change_listeners.read();
        let exit_listeners = shared.exit_listeners.read();
        for item in items {
            if failure.is_none() && !item.events.is_empty() {
                for l in listeners.iter() {
                    l(&item.events);
                }
            }
            if failure.is_none() && !item.exits.is_empty() {
                for l in exit_listeners.iter() {
                    l(&item.exits);
                }
            }
            if failure.is_none() && !item.applied.is_empty() {
                for l in change_listeners.iter() {
                    l(StoreChange::Scans(&item.applied));
                }
            }
            for (done, res) in item.done {
                match &failure {
                    Some(p) => done(Err(Error::Poisoned(p.clone()))),
                    None => done(res),
                }
            }
        }
    }
}
