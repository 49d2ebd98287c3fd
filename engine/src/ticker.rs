//! The ticker thread: expires occupancy deadlines every 250 ms and runs a retention pass
//! (`purge`) every minute, until the engine stops.

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
        shared.index.write().tick(now);
        if last_purge.elapsed() >= PURGE_EVERY {
            last_purge = Instant::now();
            if let Err(e) = purge(shared) {
                tracing::error!(error = %e, "retention pass failed");
            }
        }
    }
}
