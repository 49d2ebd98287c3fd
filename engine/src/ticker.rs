//! The ticker thread: expires occupancy deadlines every 250 ms (handing the exits they infer at
//! watched venues to the exit listeners) and runs a retention pass (`purge`) every minute, until
//! the engine stops.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::engine::Shared;
use crate::purge::purge;

/// How often the ticker expires deadlines.
const TICK: Duration = Duration::from_millis(250);
/// How often the ticker runs a retention pass.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// The ticker thread: occupancy deadlines every 250 ms, retention every minute.
pub(crate) fn ticker_loop(shared: &Shared) {
    let mut last_purge = Instant::now();
    loop {
        {
            let (lock, cv) = &shared.ticker_stop;
            let mut stopped = lock.lock();
            if !*stopped {
                cv.wait_for(&mut stopped, TICK);
            }
            if *stopped {
                return;
            }
        }
        let now = shared.config.clock.now();
        // Exits at deadlines are collected only while someone watches a venue.
        let watched = (shared.watched_total.load(Ordering::Acquire) > 0)
            .then(|| shared.watched.lock().clone());
        let exits = {
            let mut idx = shared.index.write();
            idx.occupancy.collect_exits(watched.is_some());
            idx.tick(now);
            idx.take_exits(watched.as_ref(), false)
        };
        if !exits.is_empty() {
            for l in shared.exit_listeners.read().iter() {
                l(&exits);
            }
        }
        if last_purge.elapsed() >= PURGE_EVERY {
            last_purge = Instant::now();
            if let Err(e) = purge(shared) {
                tracing::error!(error = %e, "retention pass failed");
            }
        }
    }
}
