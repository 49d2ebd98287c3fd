//! Small append-only files of checksummed frames: the venue registry and the audit log.
//!
//! A frame is `[len u32][crc32c u32][8 zero bytes][payload][zero padding to 16]`, the payload an
//! rkyv archive. Appends are written with `write(2)` and made durable with `fdatasync`, group
//! committed: concurrent appenders share one sync. Opening reads every frame, stops at the first
//! torn or corrupt one, truncates the file there (logging what was dropped) and returns the
//! payloads. These files are small next to the scan log, so they are read with plain I/O.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use parking_lot::{Condvar, Mutex};
use rkyv::util::AlignedVec;

use crate::error::{Error, Result};

const FRAME_HEADER: usize = 16;
const ALIGN: usize = 16;

fn align_up(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// Wraps `payload` in a frame, appending to `out`.
pub(crate) fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(payload);
    out.resize(out.len() + align_up(payload.len()) - payload.len(), 0);
}

/// Calls `f` for each intact frame's payload; returns the end offset of the intact prefix and,
/// if reading stopped before the end of `bytes`, why.
pub(crate) fn read_frames<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(&'a [u8]) -> std::result::Result<(), String>,
) -> (usize, Option<String>) {
    let mut off = 0;
    while off < bytes.len() {
        let Some(h) = bytes.get(off..off + FRAME_HEADER) else {
            return (off, Some("truncated frame header".into()));
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let start = off + FRAME_HEADER;
        let Some(payload) = start.checked_add(len).and_then(|e| bytes.get(start..e)) else {
            return (off, Some("truncated frame".into()));
        };
        let want = crc32c::crc32c_append(crc32c::crc32c(&(len as u32).to_le_bytes()), payload);
        if want != crc || len == 0 {
            return (off, Some("frame checksum mismatch".into()));
        }
        if let Err(e) = f(payload) {
            return (off, Some(e));
        }
        off = start + align_up(len);
    }
    (off.min(bytes.len()), None)
}

struct SyncState {
    written: u64,
    synced: u64,
    syncing: bool,
    poisoned: Option<String>,
}

/// An append-only frame file with group-committed durability.
pub(crate) struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    sync_file: File,
    state: Mutex<SyncState>,
    synced_cv: Condvar,
    fsync: bool,
}

impl Journal {
    /// Opens (creating if absent) `path`, returning the journal and the file's whole content
    /// (16-byte aligned) with the intact length and any damage found after it. The caller decodes
    /// frames with [`read_frames`] and then calls [`Journal::truncate_to`] if damage was found.
    pub(crate) fn open(path: &Path, fsync: bool) -> Result<(Journal, AlignedVec<16>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mut content = AlignedVec::<16>::with_capacity(raw.len());
        content.extend_from_slice(&raw);
        let sync_file = file
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = raw.len() as u64;
        Ok((
            Journal {
                path: path.to_path_buf(),
                file: Mutex::new(file),
                sync_file,
                state: Mutex::new(SyncState {
                    written: len,
                    synced: len,
                    syncing: false,
                    poisoned: None,
                }),
                synced_cv: Condvar::new(),
                fsync,
            },
            content,
        ))
    }

    /// Cuts a damaged tail off (recovery).
    pub(crate) fn truncate_to(&self, len: u64) -> Result<()> {
        let file = self.file.lock();
        file.set_len(len)
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io(format!("truncating {}", self.path.display()), e))?;
        let mut st = self.state.lock();
        st.written = len;
        st.synced = len;
        Ok(())
    }

    /// Appends already-framed bytes and returns once they are durable (per the durability mode).
    pub(crate) fn append(&self, frames: &[u8]) -> Result<()> {
        let end = {
            let mut file = self.file.lock();
            if let Some(p) = &self.state.lock().poisoned {
                return Err(Error::Poisoned(p.clone()));
            }
            file.write_all(frames)
                .map_err(|e| Error::io(format!("appending to {}", self.path.display()), e))?;
            let mut st = self.state.lock();
            st.written += frames.len() as u64;
            st.written
        };
        if !self.fsync {
            return Ok(());
        }
        let mut st = self.state.lock();
        loop {
            if let Some(p) = &st.poisoned {
                return Err(Error::Poisoned(p.clone()));
            }
            if st.synced >= end {
                return Ok(());
            }
            if st.syncing {
                self.synced_cv.wait(&mut st);
                continue;
            }
            st.syncing = true;
            let target = st.written;
            drop(st);
            let res = self.sync_file.sync_data();
            st = self.state.lock();
            st.syncing = false;
            match res {
                Ok(()) => st.synced = st.synced.max(target),
                Err(e) => {
                    st.poisoned = Some(format!("fsync of {} failed: {e}", self.path.display()))
                }
            }
            self.synced_cv.notify_all();
        }
    }

    /// Reads the file's current content (for audit queries).
    pub(crate) fn read_all(&self) -> Result<AlignedVec<16>> {
        let _guard = self.file.lock();
        let raw = std::fs::read(&self.path)
            .map_err(|e| Error::io(format!("reading {}", self.path.display()), e))?;
        let mut content = AlignedVec::<16>::with_capacity(raw.len());
        content.extend_from_slice(&raw);
        Ok(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        let (j, content) = Journal::open(&path, true).unwrap();
        assert!(content.is_empty());
        let mut buf = Vec::new();
        encode_frame(b"hello", &mut buf);
        encode_frame(b"world!", &mut buf);
        j.append(&buf).unwrap();
        j.append(&[1, 0, 0, 0, 9]).unwrap(); // a torn frame
        drop(j);
        let (j, content) = Journal::open(&path, true).unwrap();
        let mut seen = Vec::new();
        let (end, damage) = read_frames(&content, |p| {
            seen.push(p.to_vec());
            Ok(())
        });
        assert_eq!(seen, vec![b"hello".to_vec(), b"world!".to_vec()]);
        assert_eq!(end, 64);
        assert!(damage.is_some());
        j.truncate_to(end as u64).unwrap();
        drop(j);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64);
    }
}
