//! A shard replica's checkpoint: the stream sequence up to which its local engine holds every
//! applied message durably, so that a restarted replica reopens its store and consumes from
//! there instead of replaying the whole stream.
//!
//! The replica writes it every [`CHECKPOINT_EVERY`]: it reads its applied sequence, flushes
//! the engine (everything applied by then is on disk), then replaces `checkpoint.json`
//! atomically (write, fsync, rename, fsync the directory). At start a checkpoint counts only if
//! it names the same shard, the same number of shards and the same stream (its creation time:
//! a stream deleted and created again starts its sequences over); otherwise the store is
//! emptied and rebuilt from the first message. Messages after the checkpoint that the store
//! already held are applied again, which changes nothing: exact duplicate scans are ignored
//! and venue registrations are idempotent.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often a replica writes its checkpoint.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// The file, in the replica's data directory.
pub const FILE: &str = "checkpoint.json";

/// What a checkpoint says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub shard: u32,
    pub shards: u32,
    /// Creation time of the stream, unix nanoseconds.
    pub stream_created_ns: i128,
    /// Every message of the replica's subjects up to this stream sequence is in its store.
    pub applied: u64,
}

/// The checkpoint in `dir`, if there is a readable one.
pub fn load(dir: &Path) -> Option<Checkpoint> {
    let bytes = std::fs::read(dir.join(FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Replaces the checkpoint in `dir` atomically and durably.
pub fn store(dir: &Path, cp: &Checkpoint) -> std::io::Result<()> {
    write_json(dir, FILE, cp)
}

/// Replaces `dir/file` with `value` as JSON, atomically and durably: written beside it, synced,
/// renamed over it, and the directory synced.
pub fn write_json(dir: &Path, file: &str, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = dir.join(format!("{file}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(file))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_checkpoint_is_loaded_back_and_a_damaged_one_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()), None);
        let cp = Checkpoint {
            shard: 1,
            shards: 4,
            stream_created_ns: 1_796_000_000_123_456_789,
            applied: 42,
        };
        store(dir.path(), &cp).expect("store");
        assert_eq!(load(dir.path()), Some(cp.clone()));
        std::fs::write(dir.path().join(FILE), b"{\"shard\":1,").expect("write");
        assert_eq!(load(dir.path()), None);
    }
}
