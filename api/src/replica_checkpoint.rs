//! Cluster mode: checkpoints of this HTTP node's replica (`cluster_replica`), so that a
//! restarted node resumes from its own store instead of rebuilding it from the stream's first
//! message.
//!
//! The follower takes one every [`CHECKPOINT_EVERY`] between two messages, with nothing applied
//! meanwhile: it syncs the store to disk ([`engine::Engine::sync_to_disk`]: the scan log, the
//! venue registry and the `audit.log` of derived change entries, with where each ends), records
//! a savepoint of the health database and the dose log's length
//! ([`health::Health::checkpoint`]), and replaces `replica-checkpoint.json` in the store's
//! directory with those and the stream sequence they stand for. Only then is the previous
//! savepoint released, so the file always names a savepoint that exists.
//!
//! At start ([`resume`]) a checkpoint of the same stream (its creation time: a stream deleted
//! and created again starts its sequences over) cuts the store back to exactly that point
//! ([`engine::cut_back`], [`health::checkpoint::restore`]): whatever was applied after it is
//! gone, and the follower applies it again from the next sequence, once. Unlike a shard's
//! scans, the health domain's commands are not idempotent when replayed onto a store that
//! already holds them (a case registered without an id would get a second number, its audit
//! entry would be derived twice), which is why the cut is exact rather than "at least". Any
//! doubt (no checkpoint, another stream, a store shorter than the checkpoint says) empties the
//! store, which is then rebuilt from the first message as before.

use std::path::Path;
use std::time::Duration;

use engine::{DurableEnds, Engine};
use health::checkpoint::HealthCheckpoint;
use health::Health;
use serde::{Deserialize, Serialize};

/// How often the follower takes a checkpoint while it applies messages.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// The file, in the replica's store directory.
pub const FILE: &str = "replica-checkpoint.json";

/// What a checkpoint records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaCheckpoint {
    /// Creation time of the stream, unix nanoseconds.
    pub stream_created_ns: i128,
    /// Every message up to this stream sequence is in the store, and none after it.
    pub applied: u64,
    /// The scan log's last segment and where its records end.
    pub segment: u64,
    pub segment_end: u64,
    /// Bytes of `venues.log` and `audit.log` holding frames.
    pub venues_log: u64,
    pub audit_log: u64,
    /// The health database's savepoint and the dose log's length.
    pub health: HealthCheckpoint,
}

impl ReplicaCheckpoint {
    fn ends(&self) -> DurableEnds {
        DurableEnds {
            segment: self.segment,
            segment_end: self.segment_end,
            venues_log: self.venues_log,
            audit_log: self.audit_log,
        }
    }
}

/// The checkpoint of the store in `dir`, if there is one of this stream, with the store (not
/// open yet) cut back to it. `None` means the store must be emptied and rebuilt; why is logged.
pub fn resume(dir: &Path, stream_created_ns: i128) -> Option<ReplicaCheckpoint> {
    let bytes = match std::fs::read(dir.join(FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the replica's checkpoint; rebuilding the store");
            return None;
        }
    };
    let cp: ReplicaCheckpoint = match serde_json::from_slice(&bytes) {
        Ok(cp) => cp,
        Err(e) => {
            tracing::warn!(error = %e, "the replica's checkpoint does not parse; rebuilding the store");
            return None;
        }
    };
    if cp.stream_created_ns != stream_created_ns {
        tracing::info!("the replica's checkpoint is of another stream; rebuilding the store");
        return None;
    }
    if let Err(why) = take_seeded_copy(dir) {
        tracing::warn!(%why, "the store is an incomplete copy of a snapshot; rebuilding it");
        return None;
    }
    if let Err(e) = engine::cut_back(dir, &cp.ends()) {
        tracing::warn!(error = %e, "cannot cut the store back to its checkpoint; rebuilding it");
        return None;
    }
    if let Err(e) = health::checkpoint::restore(&dir.join("health.redb"), &cp.health) {
        tracing::warn!(error = %e, "cannot roll the health database back to its checkpoint; rebuilding the store");
        return None;
    }
    Some(cp)
}

/// When the store in `dir` is a copy of a snapshot (`replica_snapshot`) at its first start:
/// checks it holds every file of the snapshot's manifest, gives every file that is hard-linked
/// elsewhere a copy of its own (a copy made with links would otherwise cut and write the
/// snapshot's files, and through them the running node's), and removes the manifest, so that
/// the store is this node's own from here on. A store without a manifest is left alone.
fn take_seeded_copy(dir: &Path) -> Result<(), String> {
    let path = dir.join(crate::replica_snapshot::MANIFEST);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let manifest: crate::replica_snapshot::Manifest =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(why) = manifest.missing_in(dir) {
        return Err(why);
    }
    for (name, _) in &manifest.files {
        engine::unshare(&dir.join(name)).map_err(|e| e.to_string())?;
    }
    std::fs::remove_file(&path)
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| format!("removing {}: {e}", path.display()))?;
    tracing::info!(
        files = manifest.files.len(),
        "the store is a whole copy of a snapshot"
    );
    Ok(())
}

/// Why a checkpoint was not taken. The previous checkpoint stays the one a restart resumes from.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("syncing the store: {0}")]
    SyncStore(#[source] engine::Error),
    #[error("checkpointing the health database: {0}")]
    HealthSavepoint(#[source] health::Error),
    #[error("writing {FILE}: {0}")]
    WriteFile(#[source] std::io::Error),
    #[error("releasing older savepoints: {0}")]
    ReleaseSavepoints(#[source] health::Error),
}

/// Takes a checkpoint of the store standing for stream sequence `applied` (blocking). Nothing
/// may be applied to the store meanwhile.
pub fn take(
    engine: &Engine,
    health: &Health,
    stream_created_ns: i128,
    applied: u64,
) -> Result<ReplicaCheckpoint, CheckpointError> {
    let ends = engine.sync_to_disk().map_err(CheckpointError::SyncStore)?;
    let health_cp = health
        .checkpoint()
        .map_err(CheckpointError::HealthSavepoint)?;
    let cp = ReplicaCheckpoint {
        stream_created_ns,
        applied,
        segment: ends.segment,
        segment_end: ends.segment_end,
        venues_log: ends.venues_log,
        audit_log: ends.audit_log,
        health: health_cp,
    };
    cluster::checkpoint::write_json(&engine.config().data_dir, FILE, &cp)
        .map_err(CheckpointError::WriteFile)?;
    health
        .release_checkpoints(health_cp.savepoint)
        .map_err(CheckpointError::ReleaseSavepoints)?;
    Ok(cp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::sync::Arc;

    use engine::{Action, AuditEntry, Config, Durability, ManualClock, ScanInput, VenueSpec};
    use health::{HealthConfig, NewCase};

    use super::*;

    pub(crate) const T0: i64 = 1_800_000_000;
    pub(crate) const STREAM: i128 = 1_796_000_000_123_456_789;

    pub(crate) fn open(dir: &Path) -> Health {
        let mut c = Config::new(dir);
        c.durability = Durability::Os;
        c.clock = Arc::new(ManualClock::new(T0));
        c.segment_bytes = 64 << 10;
        let engine = Engine::open(c).unwrap();
        Health::open(engine, HealthConfig::new(dir)).unwrap()
    }

    pub(crate) fn close(health: Health) {
        health.shutdown();
        health.engine().shutdown().unwrap();
    }

    /// What a replica applies: a venue, its scans, a case numbered by the counter, the case's
    /// audit entry.
    pub(crate) fn apply(health: &Health, venue: &str, person: &str) -> String {
        let engine = health.engine();
        engine
            .register_venues(vec![VenueSpec {
                id: venue.into(),
                name: venue.into(),
                province: None,
                default_stay_s: None,
            }])
            .unwrap();
        let scans = (0..3_000)
            .map(|i| {
                Ok(ScanInput {
                    person: format!("{person}-{i}"),
                    venue: venue.into(),
                    ts: Some(T0 - 7_000 + i),
                    action: Action::In,
                })
            })
            .collect::<Vec<_>>();
        for chunk in scans.chunks(500) {
            engine.ingest(chunk.to_vec()).unwrap();
        }
        let (view, created) = health
            .register_case(NewCase {
                id: None,
                person: format!("{person}-0"),
                sampled_at: T0 - 3_600,
                onset: None,
                isolated_at: None,
                area: None,
                note: None,
            })
            .unwrap();
        assert!(created);
        engine
            .audit_append(AuditEntry {
                ts: T0,
                who: "lab".into(),
                action: "POST /v1/cases".into(),
                subject: view.case.id.to_string(),
            })
            .unwrap();
        view.case.id.to_string()
    }

    pub(crate) fn case_ids(health: &Health) -> Vec<String> {
        health
            .cases(None, None)
            .into_iter()
            .map(|v| v.case.id.to_string())
            .collect()
    }

    /// What a stopped replica left in `dir`: venue A's messages, a checkpoint of them (sequence
    /// 41), then venue B's messages applied after it.
    struct Stopped {
        checkpoint: ReplicaCheckpoint,
        scans_at_checkpoint: u64,
        first_case: String,
        second_case: String,
    }

    fn checkpoint_then_more(dir: &Path) -> Stopped {
        let health = open(dir);
        let first_case = apply(&health, "A", "p");
        let checkpoint = take(health.engine(), &health, STREAM, 41).unwrap();
        let scans_at_checkpoint = health.engine().stats().scans;
        let second_case = apply(&health, "B", "q");
        close(health);
        Stopped {
            checkpoint,
            scans_at_checkpoint,
            first_case,
            second_case,
        }
    }

    #[test]
    fn a_resumed_store_is_exactly_the_store_the_checkpoint_was_taken_of() {
        let dir = tempfile::tempdir().unwrap();
        // Applied after the checkpoint, then the process dies.
        let stopped = checkpoint_then_more(dir.path());
        let (first, second) = (stopped.first_case, stopped.second_case);

        // Another stream's checkpoint does not count (and leaves the store alone).
        assert_eq!(resume(dir.path(), STREAM + 1), None);
        assert_eq!(resume(dir.path(), STREAM), Some(stopped.checkpoint));
        let health = open(dir.path());
        let engine = health.engine();
        assert_eq!(engine.stats().scans, stopped.scans_at_checkpoint);
        assert_eq!(engine.stats().venues, 1);
        let cases = case_ids(&health);
        assert_eq!(cases, vec![first.clone()]);
        let audit = engine.audit_since(0).unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].subject, first);
        // Replayed from the next sequence, the later messages land once, as they did.
        assert_eq!(apply(&health, "B", "q"), second);
        assert_eq!(health.cases(None, None).len(), 2);
        assert_eq!(health.engine().audit_since(0).unwrap().len(), 2);
        close(health);
    }

    /// A new node seeded with a copy of a stopped node's store resumes from the copied
    /// checkpoint: nothing in the store names its node or its path.
    #[test]
    fn a_copy_of_a_stopped_nodes_store_resumes_on_another_node() {
        let stopped = tempfile::tempdir().unwrap();
        let stopped_node = checkpoint_then_more(stopped.path());

        let new_node = tempfile::tempdir().unwrap();
        let copy = new_node.path().join("cluster-cache");
        std::fs::create_dir(&copy).unwrap();
        for entry in std::fs::read_dir(stopped.path()).unwrap() {
            let from = entry.unwrap().path();
            std::fs::copy(&from, copy.join(from.file_name().unwrap())).unwrap();
        }
        drop(stopped);
        assert_eq!(resume(&copy, STREAM), Some(stopped_node.checkpoint));
        let health = open(&copy);
        assert_eq!(
            health.engine().stats().scans,
            stopped_node.scans_at_checkpoint
        );
        assert_eq!(case_ids(&health), vec![stopped_node.first_case]);
        // Its own checkpoints go into the copy.
        apply(&health, "C", "r");
        take(health.engine(), &health, STREAM, 99).unwrap();
        close(health);
        assert_eq!(resume(&copy, STREAM).map(|cp| cp.applied), Some(99));
    }

    #[test]
    fn no_checkpoint_or_a_damaged_one_means_rebuilding() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resume(dir.path(), STREAM), None);
        std::fs::write(dir.path().join(FILE), b"{\"applied\":").unwrap();
        assert_eq!(resume(dir.path(), STREAM), None);
    }
}
