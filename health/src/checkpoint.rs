//! Checkpoints of the health domain's durable state, to which a store can be rolled back after a
//! crash: a persistent redb savepoint of `health.redb` and the length of the dose log beside it.
//!
//! A cluster-mode replica applies the stream's commands one at a time and, between two of them,
//! records a checkpoint with the stream sequence it stands for. After a crash it rolls the
//! database and the dose log back to that checkpoint ([`restore`]) and applies the stream from
//! the next sequence: a command applied after the checkpoint is then applied once, not twice (a
//! case registered without an id would otherwise get a second number, a dose a second frame).
//!
//! A checkpoint is taken with nothing else writing ([`Health::checkpoint`]); while a savepoint
//! exists redb keeps the pages it references, so the caller releases the older ones
//! ([`Health::release_checkpoints`]) once the newer is recorded.

use std::fs::OpenOptions;
use std::path::Path;

use redb::Database;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::health::Health;

/// What a rollback of the health domain needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckpoint {
    /// The persistent savepoint of `health.redb`.
    pub savepoint: u64,
    /// Bytes of the dose log then.
    pub dose_log_bytes: u64,
}

impl Health {
    /// Records the current state as a checkpoint. Every change so far is durable already (each
    /// is committed with an fsync); the caller makes sure no change runs meanwhile.
    pub fn checkpoint(&self) -> Result<HealthCheckpoint> {
        let db = self.inner.store.db();
        let txn = db
            .begin_write()
            .map_err(|e| Error::store("starting the checkpoint's transaction", e))?;
        let savepoint = txn
            .persistent_savepoint()
            .map_err(|e| Error::store("creating a savepoint", e))?;
        txn.commit()
            .map_err(|e| Error::store("committing a savepoint", e))?;
        let log = crate::dose_log::path_for(&self.inner.db_path);
        let dose_log_bytes = match std::fs::metadata(&log) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(Error::store(
                    &format!("reading the size of {}", log.display()),
                    e,
                ))
            }
        };
        Ok(HealthCheckpoint {
            savepoint,
            dose_log_bytes,
        })
    }

    /// Deletes every savepoint but `keep`, so that redb frees the pages only they held.
    pub fn release_checkpoints(&self, keep: u64) -> Result<()> {
        let db = self.inner.store.db();
        let txn = db
            .begin_write()
            .map_err(|e| Error::store("starting a transaction", e))?;
        let old: Vec<u64> = txn
            .list_persistent_savepoints()
            .map_err(|e| Error::store("listing the savepoints", e))?
            .filter(|&id| id != keep)
            .collect();
        for id in old {
            txn.delete_persistent_savepoint(id)
                .map_err(|e| Error::store("deleting a savepoint", e))?;
        }
        txn.commit()
            .map_err(|e| Error::store("committing the release of savepoints", e))
    }
}

/// Rolls the health database at `db_path` and its dose log back to `checkpoint`, before the
/// domain is opened on them.
pub fn restore(db_path: &Path, checkpoint: &HealthCheckpoint) -> Result<()> {
    let db = Database::create(db_path)
        .map_err(|e| Error::store(&format!("opening {}", db_path.display()), e))?;
    let mut txn = db
        .begin_write()
        .map_err(|e| Error::store("starting a transaction", e))?;
    let savepoint = txn
        .get_persistent_savepoint(checkpoint.savepoint)
        .map_err(|e| Error::store("finding the checkpoint's savepoint", e))?;
    txn.restore_savepoint(&savepoint)
        .map_err(|e| Error::store("restoring the checkpoint's savepoint", e))?;
    drop(savepoint);
    txn.commit()
        .map_err(|e| Error::store("committing the restored savepoint", e))?;
    drop(db);
    let log = crate::dose_log::path_for(db_path);
    let file = match OpenOptions::new().write(true).open(&log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && checkpoint.dose_log_bytes == 0 => {
            return Ok(())
        }
        Err(e) => return Err(Error::store(&format!("opening {}", log.display()), e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::store(&format!("reading the size of {}", log.display()), e))?
        .len();
    if len < checkpoint.dose_log_bytes {
        return Err(Error::Store(format!(
            "{} holds {len} bytes, fewer than the checkpoint's {}",
            log.display(),
            checkpoint.dose_log_bytes
        )));
    }
    if len > checkpoint.dose_log_bytes {
        file.set_len(checkpoint.dose_log_bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::store(&format!("cutting {} back", log.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::sync::Arc;

    use engine::{Config, Durability, Engine, ManualClock};

    use super::*;
    use crate::{DoseInput, HealthConfig, NewCase};

    pub(crate) const T0: i64 = 1_800_000_000;

    /// A domain over a fresh engine in `dir` (the clock at [`T0`]).
    pub(crate) fn open(dir: &Path) -> Health {
        let mut c = Config::new(dir);
        c.durability = Durability::Os;
        c.clock = Arc::new(ManualClock::new(T0));
        c.segment_bytes = 1 << 20;
        let engine = Engine::open(c).unwrap();
        Health::open(engine, HealthConfig::new(dir)).unwrap()
    }

    pub(crate) fn close(health: Health) {
        health.shutdown();
        health.engine().shutdown().unwrap();
    }

    fn case_without_id(health: &Health, person: &str) -> String {
        let (view, created) = health
            .register_case(NewCase {
                id: None,
                person: person.into(),
                sampled_at: T0 - 3_600,
                onset: None,
                isolated_at: None,
                area: None,
                note: None,
            })
            .unwrap();
        assert!(created);
        view.case.id.to_string()
    }

    fn dose(health: &Health, person: &str) {
        let outcome = health
            .record_doses(vec![Ok(DoseInput {
                person: person.into(),
                dose: 1,
                vaccine: crate::VACCINES[0].code.into(),
                administered_at: T0 - 60,
                lot: None,
                site: None,
                area: None,
            })])
            .unwrap();
        assert_eq!(outcome.accepted, 1, "{outcome:?}");
    }

    #[test]
    fn a_restore_undoes_every_change_after_the_checkpoint_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let health = open(dir.path());
        let first = case_without_id(&health, "p1");
        dose(&health, "p1");
        let cp = health.checkpoint().unwrap();
        // After the checkpoint: a case numbered by the counter, a dose, and a newer savepoint
        // the crash leaves unrecorded.
        let second = case_without_id(&health, "p2");
        dose(&health, "p2");
        let later = health.checkpoint().unwrap();
        assert_ne!(later.savepoint, cp.savepoint);
        assert!(later.dose_log_bytes > cp.dose_log_bytes);
        close(health);

        restore(&dir.path().join("health.redb"), &cp).unwrap();
        let health = open(dir.path());
        let ids: Vec<String> = health
            .cases(None, None)
            .into_iter()
            .map(|v| v.case.id.to_string())
            .collect();
        assert_eq!(ids, vec![first.clone()]);
        assert_eq!(health.doses("p1").len(), 1);
        assert!(health.doses("p2").is_empty());
        // Applied again, the change after the checkpoint gets the number it got the first time.
        assert_eq!(case_without_id(&health, "p2"), second);
        dose(&health, "p2");
        assert_eq!(health.doses("p2").len(), 1);
        // Releasing keeps the named savepoint only, and a restore to it still works.
        let again = health.checkpoint().unwrap();
        health.release_checkpoints(again.savepoint).unwrap();
        close(health);
        assert!(restore(&dir.path().join("health.redb"), &cp).is_err());
        restore(&dir.path().join("health.redb"), &again).unwrap();
        let health = open(dir.path());
        assert_eq!(health.cases(None, None).len(), 2);
        assert_eq!(health.doses("p2").len(), 1);
        close(health);
    }
}
