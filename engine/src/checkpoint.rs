//! Cutting a data directory back to a durable point: where the log and the journals ended when
//! [`crate::Engine::sync_to_disk`] made them durable ([`DurableEnds`]).
//!
//! A cluster-mode replica records the ends with the stream sequence they stand for; after a
//! crash it cuts the store back to them ([`cut_back`]) before opening it, and applies the stream
//! from the next sequence, so that nothing written after the checkpoint is found twice or in the
//! wrong order (a scan naming a venue the cut registry no longer holds, an audit entry derived
//! again). Only the bytes past the ends go: segments after the last one are deleted, the last
//! one is zeroed from its end (its clean end, as the writer leaves it), and the journals are
//! truncated at theirs. A cut never goes below its own ends, so the same bytes under another
//! name (a snapshot of this store, taken at an earlier checkpoint, hard-links its files) stay
//! whole; a store that is itself a hard-linked copy of such a snapshot, whose cut would go below
//! what the other name still holds, gives each file a copy of its own first ([`unshare`]).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::log;

/// Where the log and the journals ended when [`crate::Engine::sync_to_disk`] made them durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableEnds {
    /// The segment the writer appended to last (no later segment holds a record then).
    pub segment: u64,
    /// Where its last record ends; the rest of the segment is zeros.
    pub segment_end: u64,
    /// Bytes of `venues.log` holding frames.
    pub venues_log: u64,
    /// Bytes of `audit.log` holding frames.
    pub audit_log: u64,
}

/// Zeroes are written in pieces of this size.
const ZEROS: usize = 1 << 20;

/// Cuts the store in `dir` (not open) back to `ends`. Fails, changing nothing it has not
/// checked, if the store holds less than `ends` says (it is not the store the ends were taken
/// of).
pub fn cut_back(dir: &Path, ends: &DurableEnds) -> Result<()> {
    let io = |what: String, e| Error::io(what, e);
    let active = log::segment_path(dir, ends.segment);
    let size = fs::metadata(&active)
        .map_err(|e| io(format!("reading {}", active.display()), e))?
        .len();
    if size < ends.segment_end {
        return Err(too_short(&active, size, ends.segment_end));
    }
    let journals = [
        (dir.join("venues.log"), ends.venues_log),
        (dir.join("audit.log"), ends.audit_log),
    ];
    for (path, end) in &journals {
        let len = fs::metadata(path).map_or(0, |m| m.len());
        if len < *end {
            return Err(too_short(path, len, *end));
        }
    }
    let entries = fs::read_dir(dir).map_err(|e| io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| io(format!("listing {}", dir.display()), e))?
            .path();
        if log::segment_id(&path).is_some_and(|id| id > ends.segment) {
            fs::remove_file(&path).map_err(|e| io(format!("removing {}", path.display()), e))?;
        }
    }
    let file = OpenOptions::new()
        .write(true)
        .open(&active)
        .map_err(|e| io(format!("opening {}", active.display()), e))?;
    let zeros = vec![0u8; ZEROS];
    let mut at = ends.segment_end;
    while at < size {
        let n = (size - at).min(ZEROS as u64) as usize;
        file.write_all_at(&zeros[..n], at)
            .map_err(|e| io(format!("zeroing {}", active.display()), e))?;
        at += n as u64;
    }
    file.sync_all()
        .map_err(|e| io(format!("syncing {}", active.display()), e))?;
    for (path, end) in &journals {
        if !path.exists() {
            continue;
        }
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io(format!("opening {}", path.display()), e))?;
        f.set_len(*end)
            .and_then(|()| f.sync_all())
            .map_err(|e| io(format!("truncating {}", path.display()), e))?;
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(format!("syncing {}", dir.display()), e))
}

/// Makes `path` a file of its own: when another name links the same inode (a store seeded by
/// hard-linking a snapshot's files, `api::replica_snapshot`), the file is replaced by a private
/// copy, so cutting or writing it changes only this store, never the files the other name
/// stands for. A file with one link is left alone.
pub fn unshare(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let io = |what: String, e| Error::io(what, e);
    let links = fs::metadata(path)
        .map_err(|e| io(format!("reading {}", path.display()), e))?
        .nlink();
    if links <= 1 {
        return Ok(());
    }
    let mut copy_name = path.as_os_str().to_owned();
    copy_name.push(".unshared");
    let copy = std::path::PathBuf::from(copy_name);
    fs::copy(path, &copy).map_err(|e| io(format!("copying {}", path.display()), e))?;
    fs::File::open(&copy)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(format!("syncing {}", copy.display()), e))?;
    fs::rename(&copy, path).map_err(|e| io(format!("replacing {}", path.display()), e))
}

fn too_short(path: &Path, len: u64, end: u64) -> Error {
    Error::io(
        format!(
            "{} holds {len} bytes, fewer than the checkpoint's {end}",
            path.display()
        ),
        std::io::Error::from(std::io::ErrorKind::InvalidData),
    )
}
