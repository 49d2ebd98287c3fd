//! Cluster mode: snapshots of this HTTP node's replica, taken while the node keeps running, that
//! a new node is seeded with instead of rebuilding its replica from the stream's first message.
//!
//! A snapshot is taken right after one of the follower's checkpoints (`replica_checkpoint`),
//! before anything else is applied, every `--replica-snapshot-every` seconds. It goes into
//! `DATA/cluster-snapshots/SEQ/` (`SEQ`: the stream sequence it stands for, 20 digits), and
//! `DATA/cluster-snapshots/LATEST` names the newest; the newest [`KEEP`] are kept. What it holds:
//!
//! - the scan log's segments, `venues.log`, `audit.log` and `health.doses.log` as *hard links*:
//!   the store only ever appends past its durable ends, so the bytes a snapshot needs never change
//!   while the node runs (it grows past them; a seeded node cuts that off again), and a purged
//!   segment lives on in the snapshot until the snapshot is removed. The node's own cut after a
//!   crash goes back to its latest checkpoint, never below the snapshot's, so it leaves them too;
//! - `health.redb` as a *copy* (redb rewrites its pages in place), made while nothing is applied;
//! - the checkpoint itself, `replica-checkpoint.json`, and a manifest ([`MANIFEST`]): every file
//!   with the length the checkpoint needs of it. A seeded copy is checked against it at its
//!   first start (`replica_checkpoint::resume`): a copy that lost a file (a snapshot removed
//!   under a running `cp`) is rebuilt from the stream instead of serving with scans missing; and
//!   a copy made with hard links gets files of its own before it is cut (`engine::unshare`).
//!
//! A new node is seeded by *copying* (never linking or moving) the directory `LATEST` names into
//! its own `DATA/cluster-cache/` (and the signing key into `DATA/`, as on every node): at start it
//! cuts the copy back to the checkpoint and applies the stream from the next sequence. Copying a
//! snapshot while the node runs is safe for at least one snapshot interval (the newest two are
//! kept, and each is complete before `LATEST` names it); a copy that a removal cut short anyway
//! fails the manifest's check and is rebuilt.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::replica_checkpoint::{ReplicaCheckpoint, FILE as CHECKPOINT_FILE};

/// What a copy of a snapshot must hold: each file, and the bytes of it the checkpoint needs (a
/// linked file may since have grown past them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<(String, u64)>,
}

impl Manifest {
    /// Why the store in `dir` is not a whole copy of the snapshot, if it is not.
    pub fn missing_in(&self, dir: &Path) -> Option<String> {
        self.files.iter().find_map(|(name, needed)| {
            match fs::metadata(dir.join(name)).map(|m| m.len()) {
                Ok(len) if len >= *needed => None,
                Ok(len) => Some(format!("{name} holds {len} bytes of the {needed} it needs")),
                Err(e) => Some(format!("{name}: {e}")),
            }
        })
    }
}

/// The directory of snapshots, beside `cluster-cache` in the node's data directory.
pub const DIR: &str = "cluster-snapshots";
/// The file in [`DIR`] naming the newest complete snapshot.
pub const LATEST: &str = "LATEST";
/// Snapshots kept (the newest).
pub const KEEP: usize = 2;
/// The health database, copied.
const HEALTH_DB: &str = "health.redb";
/// Files the store only appends to, linked.
const APPEND_ONLY: [&str; 3] = ["venues.log", "audit.log", "health.doses.log"];
/// The engine's lock file, not part of a store.
const LOCK: &str = "LOCK";
/// Endings of what an interrupted write leaves beside a store file (`cluster::checkpoint::write_json`'s
/// temporary file, `engine::unshare`'s copy): never part of the store, not taken.
const DEBRIS: [&str; 2] = [".tmp", ".unshared"];
/// The manifest of a snapshot: what a copy of it must hold.
pub const MANIFEST: &str = "snapshot-manifest.json";
/// Where a snapshot is assembled before it is renamed into place.
const PARTIAL_PREFIX: &str = ".partial-";

/// Why a snapshot was not taken. The previous snapshots stay as they were.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the store holds {}, which a snapshot does not know how to take", path.display())]
    UnknownFile { path: PathBuf },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// A segment file's name (`NNNNNNNNNNNNNNNNNNNN.seg`) parsed back to its id.
fn segment_id(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    (stem.len() == 20).then(|| stem.parse().ok()).flatten()
}

/// The name of the snapshot standing for stream sequence `applied`.
pub fn name_of(applied: u64) -> String {
    format!("{applied:020}")
}

/// Takes a snapshot of the store in `store` into `snapshots`, standing for `checkpoint`, which
/// [`crate::replica_checkpoint::take`] has just written with nothing applied since (blocking;
/// nothing may be applied meanwhile). Returns the snapshot's directory.
pub fn take(
    store: &Path,
    snapshots: &Path,
    checkpoint: &ReplicaCheckpoint,
) -> Result<PathBuf, SnapshotError> {
    fs::create_dir_all(snapshots).map_err(io("creating", snapshots))?;
    let name = name_of(checkpoint.applied);
    let partial = snapshots.join(format!("{PARTIAL_PREFIX}{name}"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io("removing", &partial))?;
    }
    fs::create_dir(&partial).map_err(io("creating", &partial))?;
    let mut manifest = Manifest { files: Vec::new() };
    let entries = fs::read_dir(store).map_err(io("listing", store))?;
    for entry in entries {
        let from = entry.map_err(io("listing", store))?.path();
        let Some(file) = from.file_name().and_then(|n| n.to_str()) else {
            return Err(SnapshotError::UnknownFile { path: from });
        };
        let to = partial.join(file);
        if file == LOCK
            || file == CHECKPOINT_FILE
            || file == MANIFEST
            || DEBRIS.iter().any(|d| file.ends_with(d))
        {
            continue;
        } else if file == HEALTH_DB {
            let len = fs::copy(&from, &to).map_err(io("copying", &from))?;
            fs::File::open(&to)
                .and_then(|f| f.sync_all())
                .map_err(io("syncing", &to))?;
            manifest.files.push((file.to_string(), len));
        } else if APPEND_ONLY.contains(&file) {
            fs::hard_link(&from, &to).map_err(io("linking", &from))?;
            let needed = match file {
                "venues.log" => checkpoint.venues_log,
                "audit.log" => checkpoint.audit_log,
                _ => checkpoint.health.dose_log_bytes,
            };
            manifest.files.push((file.to_string(), needed));
        } else if let Some(id) = segment_id(file) {
            // Nothing was written since the checkpoint, so no later segment exists; should one,
            // it holds nothing the checkpoint stands for.
            if id <= checkpoint.segment {
                fs::hard_link(&from, &to).map_err(io("linking", &from))?;
                // An older segment is never cut or written again: all of it.
                let needed = if id == checkpoint.segment {
                    checkpoint.segment_end
                } else {
                    fs::metadata(&to).map_err(io("reading", &to))?.len()
                };
                manifest.files.push((file.to_string(), needed));
            }
        } else {
            return Err(SnapshotError::UnknownFile { path: from });
        }
    }
    manifest.files.sort();
    cluster::checkpoint::write_json(&partial, MANIFEST, &manifest)
        .map_err(io("writing the manifest into", &partial))?;
    cluster::checkpoint::write_json(&partial, CHECKPOINT_FILE, checkpoint)
        .map_err(io("writing the checkpoint into", &partial))?;
    sync_dir(&partial)?;
    let done = snapshots.join(&name);
    if done.exists() {
        fs::remove_dir_all(&done).map_err(io("removing", &done))?;
    }
    fs::rename(&partial, &done).map_err(io("renaming", &partial))?;
    write_latest(snapshots, &name)?;
    remove_older(snapshots, checkpoint.applied)?;
    Ok(done)
}

/// The newest complete snapshot in `snapshots`, as `LATEST` names it.
pub fn latest(snapshots: &Path) -> Option<PathBuf> {
    let name = fs::read_to_string(snapshots.join(LATEST)).ok()?;
    let dir = snapshots.join(name.trim());
    dir.is_dir().then_some(dir)
}

fn write_latest(snapshots: &Path, name: &str) -> Result<(), SnapshotError> {
    let tmp = snapshots.join(format!("{LATEST}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(format!("{name}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("writing", &tmp))?;
    fs::rename(&tmp, snapshots.join(LATEST)).map_err(io("renaming", &tmp))?;
    sync_dir(snapshots)
}

/// Removes all but the newest [`KEEP`] snapshots up to `current` (the one just taken), any left
/// half-made, and any of a later sequence: those are of an earlier life of this store (another
/// stream, or a store rebuilt since), and kept by sequence they would outrank every new one.
fn remove_older(snapshots: &Path, current: u64) -> Result<(), SnapshotError> {
    let mut complete = Vec::new();
    for entry in fs::read_dir(snapshots).map_err(io("listing", snapshots))? {
        let path = entry.map_err(io("listing", snapshots))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with(PARTIAL_PREFIX) {
            fs::remove_dir_all(&path).map_err(io("removing", &path))?;
        } else if let (20, Ok(seq)) = (name.len(), name.parse::<u64>()) {
            if seq > current {
                fs::remove_dir_all(&path).map_err(io("removing", &path))?;
            } else {
                complete.push((seq, path));
            }
        }
    }
    complete.sort();
    let older = complete.len().saturating_sub(KEEP);
    for (_, path) in complete.into_iter().take(older) {
        fs::remove_dir_all(&path).map_err(io("removing", &path))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::replica_checkpoint::tests::{apply, case_ids, close, open, STREAM};
    use crate::replica_checkpoint::{resume, take as take_checkpoint};

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }

    /// The running node keeps applying after its snapshot, takes more checkpoints, and is
    /// killed and cut back to its own latest checkpoint: a copy of the snapshot still resumes to
    /// exactly the store the snapshot was taken of, and the node to its own.
    #[test]
    fn a_copy_of_a_running_nodes_snapshot_resumes_on_another_node() {
        let data = tempfile::tempdir().unwrap();
        let store = data.path().join("cluster-cache");
        let snapshots = data.path().join(DIR);
        let live = open(&store);
        let first = apply(&live, "A", "p");
        let cp = take_checkpoint(live.engine(), &live, STREAM, 41).unwrap();
        let at_snapshot = live.engine().stats().scans;
        let snapshot = take(&store, &snapshots, &cp).unwrap();
        assert_eq!(latest(&snapshots), Some(snapshot.clone()));
        // The node goes on: more scans (into the linked segment and new ones), a case, audit
        // entries, a dose-log-free checkpoint, and more after it.
        let second = apply(&live, "B", "q");
        take_checkpoint(live.engine(), &live, STREAM, 77).unwrap();
        apply(&live, "C", "r");
        let live_scans_at_77 = at_snapshot * 2;
        // Copied while the node runs, as an operator would.
        let seeded = tempfile::tempdir().unwrap();
        let seeded_store = seeded.path().join("cluster-cache");
        copy_dir(&snapshot, &seeded_store);
        close(live);

        // The node's own restart cuts its store back to 77, not through the snapshot's links.
        assert_eq!(resume(&store, STREAM).map(|cp| cp.applied), Some(77));
        let live = open(&store);
        assert_eq!(live.engine().stats().scans, live_scans_at_77);
        assert_eq!(case_ids(&live), vec![first.clone(), second.clone()]);
        close(live);

        assert_eq!(resume(&seeded_store, STREAM), Some(cp));
        let node = open(&seeded_store);
        assert_eq!(node.engine().stats().scans, at_snapshot);
        assert_eq!(node.engine().stats().venues, 1);
        assert_eq!(case_ids(&node), vec![first]);
        assert_eq!(node.engine().audit_since(0).unwrap().len(), 1);
        // It applies the stream from sequence 42 on: the later messages land once.
        assert_eq!(apply(&node, "B", "q"), second);
        assert_eq!(node.cases(None, None).len(), 2);
        close(node);

        // After the node's restart the snapshot itself is still whole: copied again, it resumes.
        let again = tempfile::tempdir().unwrap();
        copy_dir(&snapshot, again.path());
        assert_eq!(resume(again.path(), STREAM).map(|cp| cp.applied), Some(41));
        let node = open(again.path());
        assert_eq!(node.engine().stats().scans, at_snapshot);
        close(node);
    }

    #[test]
    fn the_newest_two_snapshots_are_kept_and_latest_names_the_newest() {
        let data = tempfile::tempdir().unwrap();
        let store = data.path().join("cluster-cache");
        let snapshots = data.path().join(DIR);
        let live = open(&store);
        // A half-made snapshot of an earlier run goes with the next snapshot.
        fs::create_dir_all(snapshots.join(format!("{PARTIAL_PREFIX}{}", name_of(3)))).unwrap();
        for (i, seq) in [10u64, 20, 30].into_iter().enumerate() {
            apply(&live, &format!("V{i}"), &format!("p{i}"));
            let cp = take_checkpoint(live.engine(), &live, STREAM, seq).unwrap();
            take(&store, &snapshots, &cp).unwrap();
        }
        close(live);
        let mut names: Vec<String> = fs::read_dir(&snapshots)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec![name_of(20), name_of(30), LATEST.to_string()]);
        assert_eq!(latest(&snapshots), Some(snapshots.join(name_of(30))));

        // The store rebuilt (or another stream): its first snapshot, of sequence 5, is kept
        // and named, and those of the store's earlier life go.
        fs::remove_dir_all(&store).unwrap();
        let rebuilt = open(&store);
        apply(&rebuilt, "W", "w");
        let cp = take_checkpoint(rebuilt.engine(), &rebuilt, STREAM, 5).unwrap();
        take(&store, &snapshots, &cp).unwrap();
        close(rebuilt);
        let mut names: Vec<String> = fs::read_dir(&snapshots)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec![name_of(5), LATEST.to_string()]);
        assert_eq!(latest(&snapshots), Some(snapshots.join(name_of(5))));
    }

    /// Seeded with hard links instead of a copy, the new node gives its files copies of their
    /// own before it cuts and writes them: the snapshot and the running node's store stay whole.
    #[test]
    fn a_store_seeded_with_links_leaves_the_snapshot_and_the_node_whole() {
        let data = tempfile::tempdir().unwrap();
        let store = data.path().join("cluster-cache");
        let snapshots = data.path().join(DIR);
        let live = open(&store);
        apply(&live, "A", "p");
        let cp = take_checkpoint(live.engine(), &live, STREAM, 41).unwrap();
        let at_snapshot = live.engine().stats().scans;
        let snapshot = take(&store, &snapshots, &cp).unwrap();
        // The running node goes on into the files the snapshot links, and checkpoints that.
        apply(&live, "B", "q");
        take_checkpoint(live.engine(), &live, STREAM, 77).unwrap();
        let live_at_77 = live.engine().stats().scans;
        close(live);

        let linked = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(&snapshot).unwrap() {
            let path = entry.unwrap().path();
            fs::hard_link(&path, linked.path().join(path.file_name().unwrap())).unwrap();
        }
        assert_eq!(resume(linked.path(), STREAM), Some(cp.clone()));
        assert!(
            !linked.path().join(MANIFEST).exists(),
            "the store is its own now"
        );
        let node = open(linked.path());
        assert_eq!(node.engine().stats().scans, at_snapshot);
        apply(&node, "C", "r");
        take_checkpoint(node.engine(), &node, STREAM, 99).unwrap();
        close(node);

        // The running node's own store, restarted, is what it checkpointed.
        assert_eq!(resume(&store, STREAM).map(|cp| cp.applied), Some(77));
        let live = open(&store);
        assert_eq!(live.engine().stats().scans, live_at_77);
        assert_eq!(live.engine().stats().venues, 2);
        close(live);

        let again = tempfile::tempdir().unwrap();
        copy_dir(&snapshot, again.path());
        assert_eq!(resume(again.path(), STREAM), Some(cp));
        let node = open(again.path());
        assert_eq!(node.engine().stats().scans, at_snapshot);
        assert_eq!(node.engine().stats().venues, 1);
        close(node);
    }

    /// A copy that lost a file (a snapshot removed under a running `cp`) is not resumed: the
    /// store is rebuilt from the stream rather than served with scans missing.
    #[test]
    fn a_copy_missing_a_segment_is_rebuilt_not_resumed() {
        let data = tempfile::tempdir().unwrap();
        let store = data.path().join("cluster-cache");
        let snapshots = data.path().join(DIR);
        let live = open(&store);
        apply(&live, "A", "p");
        let cp = take_checkpoint(live.engine(), &live, STREAM, 41).unwrap();
        let snapshot = take(&store, &snapshots, &cp).unwrap();
        close(live);
        let mut segments: Vec<PathBuf> = fs::read_dir(&snapshot)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segments.sort();
        assert!(segments.len() > 1, "the store spans several segments");
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&snapshot, copy.path());
        fs::remove_file(copy.path().join(segments[0].file_name().unwrap())).unwrap();
        assert_eq!(resume(copy.path(), STREAM), None);
        // Whole, it resumes.
        let whole = tempfile::tempdir().unwrap();
        copy_dir(&snapshot, whole.path());
        assert_eq!(resume(whole.path(), STREAM), Some(cp));
    }

    #[test]
    fn a_file_the_snapshot_does_not_know_is_refused_and_debris_is_left_out() {
        let data = tempfile::tempdir().unwrap();
        let store = data.path().join("cluster-cache");
        let snapshots = data.path().join(DIR);
        let live = open(&store);
        apply(&live, "A", "p");
        let cp = take_checkpoint(live.engine(), &live, STREAM, 5).unwrap();
        // What an interrupted unshare leaves is not part of the store: left out, not refused.
        fs::write(store.join("venues.log.unshared"), b"partial").unwrap();
        let snapshot = take(&store, &snapshots, &cp).unwrap();
        assert!(!snapshot.join("venues.log.unshared").exists());
        assert!(snapshot.join("venues.log").exists());
        fs::write(store.join("stray.bin"), b"?").unwrap();
        let err = take(&store, &snapshots, &cp).unwrap_err();
        assert!(matches!(err, SnapshotError::UnknownFile { .. }), "{err}");
        // The snapshot before stays the latest.
        assert_eq!(latest(&snapshots), Some(snapshot));
        close(live);
    }
}
