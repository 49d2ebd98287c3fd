//! Retention: removes whole log segments whose every scan is older than the retention period,
//! prunes the indexes of older scans, and tells the change listeners.

use std::fs;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::change::StoreChange;
use crate::engine::{notify, PurgeReport, Shared};
use crate::error::{Error, Result};
use crate::log::{self, Segment};

/// Removes whole segments whose every scan is older than the retention period, then prunes the
/// indexes of scans older than it.
pub(crate) fn purge(shared: &Shared) -> Result<PurgeReport> {
    let now = shared.config.clock.now();
    let cutoff = now - shared.config.retention_days as i64 * 86_400;
    let removable: Vec<Arc<Segment>> = {
        let mut segs = shared.segments.lock();
        let keep_from = segs.len().saturating_sub(1);
        let (old, _) = segs.split_at(keep_from);
        let doomed: Vec<Arc<Segment>> = old
            .iter()
            .filter(|s| s.max_ts.load(Ordering::Relaxed) < cutoff)
            .cloned()
            .collect();
        segs.retain(|s| !doomed.iter().any(|d| Arc::ptr_eq(d, s)));
        doomed
    };
    let mut report = PurgeReport::default();
    for seg in &removable {
        fs::remove_file(&seg.path)
            .map_err(|e| Error::io(format!("removing {}", seg.path.display()), e))?;
        report.segments_removed += 1;
        tracing::info!(path = %seg.path.display(), "retention removed a segment");
    }
    if !removable.is_empty() {
        log::sync_dir(&shared.config.data_dir)?;
    }
    report.scans_pruned = shared.index.write().prune_before(cutoff);
    if report.scans_pruned > 0 {
        notify(shared, StoreChange::Purged { cutoff });
    }
    Ok(report)
}
