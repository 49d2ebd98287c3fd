//! Memory-mapped, preallocated segment files: the only module of the engine with `unsafe` code.
//!
//! A [`MappedFile`] maps a whole file of fixed length, read-write and shared, so that bytes
//! written into it land in the OS page cache at once (surviving a crash of the process) and are
//! made durable by `msync` of the written range (surviving power loss).
//!
//! # Who may touch the mapping
//! - The file is created and preallocated with `posix_fallocate` before it is mapped, so writing
//!   into the mapping never needs new disk blocks (no SIGBUS on a full disk) and the mapping never
//!   reaches past the end of the file.
//! - The data directory is locked (`flock`) by one engine at a time, and the engine never truncates
//!   a mapped file; a file is only removed (retention) after its mapping is dropped. Another
//!   process that truncates our files behind our back breaks this contract as it would break any
//!   database.
//! - Writes go only through [`MappedFile::write_at`], called by the single writer thread on ranges
//!   past everything any reader reads ([`MappedFile::bytes`] is used at recovery, before the writer
//!   starts, and by read-only inspection of files no writer has open).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use memmap2::{Mmap, MmapOptions, MmapRaw};

/// Reserves `len` bytes of disk for `file` (and extends it to `len` if shorter).
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
    // SAFETY: posix_fallocate only reads its integer arguments and acts on an fd we own for the
    // duration of the call; no memory is shared with the kernel.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        // Some file systems do not support fallocate: fall back to a sparse extension.
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len as u64),
        err => Err(io::Error::from_raw_os_error(err)),
    }
}

/// A writable shared mapping of a whole, preallocated file.
pub(crate) struct MappedFile {
    map: MmapRaw,
    len: usize,
    _file: File,
}

impl MappedFile {
    /// Maps all of `file` (whose length must already be its final capacity).
    pub(crate) fn map(file: File) -> io::Result<MappedFile> {
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        Ok(MappedFile {
            map,
            len,
            _file: file,
        })
    }

    /// Capacity in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Reads the whole mapping.
    ///
    /// Callers use this only while no write to the same range can happen: at recovery (before the
    /// writer thread exists) and on ranges the writer has finished with.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes long, lives as long as `self`, and the file is never
        // truncated while mapped (module docs). The writer only writes ranges no reader is reading
        // at the same time (module docs), so no `&[u8]` observes a concurrent write.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.len) }
    }

    /// Copies `data` into the mapping at `offset`. Panics if the range is out of bounds, which the
    /// log's space accounting rules out.
    pub(crate) fn write_at(&self, offset: usize, data: &[u8]) {
        let end = offset
            .checked_add(data.len())
            .filter(|&end| end <= self.len);
        assert!(end.is_some(), "write past the end of a segment");
        // SAFETY: bounds are checked above; the destination is inside our own mapping, which
        // cannot overlap `data` (a heap or stack buffer); only the single writer thread writes,
        // and no reader holds a slice over this range (module docs).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(offset),
                data.len(),
            );
        }
    }

    /// Makes `[offset, offset + len)` durable (`msync(MS_SYNC)`).
    pub(crate) fn sync_range(&self, offset: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.map.flush_range(offset, len)
    }
}

/// A read-only mapping of a file, for offline inspection of segments.
pub(crate) struct ReadOnlyMap {
    map: Option<Mmap>,
}

impl ReadOnlyMap {
    pub(crate) fn open(file: &File) -> io::Result<ReadOnlyMap> {
        if file.metadata()?.len() == 0 {
            return Ok(ReadOnlyMap { map: None });
        }
        // SAFETY: read-only private view; the inspected file must not be truncated while mapped,
        // which holds for segments of a stopped or locked store (module docs).
        let map = unsafe { Mmap::map(file)? };
        Ok(ReadOnlyMap { map: Some(map) })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}
