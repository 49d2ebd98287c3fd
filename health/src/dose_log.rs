//! The vaccinations' durable store: an append-only file beside the health database
//! (`health.doses.log` next to `health.redb`), one frame per request that stores doses. Every
//! dose is also kept in memory (rebuilt from this file at open), and a stored dose is never
//! changed or removed, so the file needs no index: a request costs one write and one
//! `fdatasync`, not a B-tree insert per dose.
//!
//! Layout: the 8 bytes [`MAGIC`], then frames `[len u32 LE][crc32c u32 LE][payload]`, the
//! checksum covering the length's bytes and the payload; a payload is the request's new doses,
//! each a postcard [`LoggedDose`], back to back. A frame is written whole and synced before its
//! request is answered, and the next frame is written only after that, so only the last frame
//! can be torn by a crash: at open the frames are read in order, and the first that is cut
//! short, has a zero or implausible length, or fails its checksum ends the log; it and whatever
//! follows were never acknowledged, so they are dropped with a warning and the file is cut there
//! (as the engine does with a torn segment tail). A frame whose checksum holds but whose doses do
//! not decode is corruption of acknowledged data: the open fails rather than drop it.
//!
//! A write or sync that fails makes the log refuse every later write (until a restart reads
//! back what is on disk), after trying to cut the failed frame off again, so that a request
//! answered with an error is not read back at the next open.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The first bytes of a dose log (format version 1).
pub(crate) const MAGIC: &[u8; 8] = b"CKDOSES1";
/// Frames longer than this are taken for a torn length (a request of 100,000 doses with the
/// longest texts stays far below it).
const MAX_FRAME: u32 = 1 << 30;
/// A frame's header: its payload's length and checksum.
const HEADER: usize = 8;

/// One dose as the log holds it (borrowed for writing and for reading back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LoggedDose<'a> {
    pub(crate) person: &'a str,
    pub(crate) dose: u8,
    pub(crate) vaccine: &'a str,
    pub(crate) administered_at: i64,
    pub(crate) lot: Option<&'a str>,
    pub(crate) site: Option<&'a str>,
    pub(crate) area: Option<&'a str>,
}

/// The file of a dose log for the health database at `db_path`.
pub(crate) fn path_for(db_path: &Path) -> PathBuf {
    db_path.with_extension("doses.log")
}

/// The open log, positioned at its end.
pub(crate) struct DoseLog {
    file: File,
    path: PathBuf,
    /// Bytes of valid frames (where the next frame goes).
    len: u64,
    /// A write failed: refuse every later one.
    failed: bool,
    /// The frame being built, reused between requests.
    buf: Vec<u8>,
}

fn frame_crc(len: u32, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload)
}

/// Reads up to `buf.len()` bytes; fewer only at the end of the file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

impl DoseLog {
    /// Opens the log at `path` (creating it, durably, if absent), calls `each` with every stored
    /// dose in the order written, drops a torn tail, and returns the log ready for appends.
    pub(crate) fn open(path: &Path, mut each: impl FnMut(LoggedDose<'_>)) -> Result<DoseLog> {
        let io_err =
            |what: &str, e: io::Error| Error::store(&format!("{what} {}", path.display()), e);
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(|e| io_err("creating", e))?;
                f.write_all_at(MAGIC, 0)
                    .and_then(|()| f.sync_all())
                    .and_then(|()| sync_parent(path))
                    .map_err(|e| io_err("writing the header of", e))?;
                return Ok(DoseLog {
                    file: f,
                    path: path.to_owned(),
                    len: MAGIC.len() as u64,
                    failed: false,
                    buf: Vec::new(),
                });
            }
            Err(e) => return Err(io_err("opening", e)),
        };
        let size = file
            .metadata()
            .map_err(|e| io_err("reading the size of", e))?
            .len();
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut magic = [0u8; 8];
        let got = read_full(&mut reader, &mut magic).map_err(|e| io_err("reading", e))?;
        if got < MAGIC.len() {
            // cut short while it was created (nothing was ever stored in it): write it again
            if magic[..got] != MAGIC[..got] {
                return Err(Error::Store(format!(
                    "{} is not a dose log",
                    path.display()
                )));
            }
            drop(reader);
            file.set_len(0)
                .and_then(|()| file.write_all_at(MAGIC, 0))
                .and_then(|()| file.sync_all())
                .map_err(|e| io_err("writing the header of", e))?;
            return Ok(DoseLog {
                file,
                path: path.to_owned(),
                len: MAGIC.len() as u64,
                failed: false,
                buf: Vec::new(),
            });
        }
        if &magic != MAGIC {
            return Err(Error::Store(format!(
                "{} is not a dose log (or of another version)",
                path.display()
            )));
        }
        let mut pos = MAGIC.len() as u64;
        let mut payload: Vec<u8> = Vec::new();
        let mut torn: Option<&'static str> = None;
        loop {
            let mut header = [0u8; HEADER];
            let got = read_full(&mut reader, &mut header).map_err(|e| io_err("reading", e))?;
            if got == 0 {
                break;
            }
            if got < HEADER {
                torn = Some("a frame header cut short");
                break;
            }
            let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
            let len = u32::from_le_bytes([l0, l1, l2, l3]);
            let crc = u32::from_le_bytes([c0, c1, c2, c3]);
            if len == 0 || len > MAX_FRAME {
                torn = Some("a frame of zero or implausible length");
                break;
            }
            // a length past the end of the file is a torn header: nothing to allocate for it
            if u64::from(len) > size.saturating_sub(pos + HEADER as u64) {
                torn = Some("a frame cut short");
                break;
            }
            payload.resize(len as usize, 0);
            let got = read_full(&mut reader, &mut payload).map_err(|e| io_err("reading", e))?;
            if got < payload.len() {
                torn = Some("a frame cut short");
                break;
            }
            if frame_crc(len, &payload) != crc {
                torn = Some("a frame failing its checksum");
                break;
            }
            let mut rest = payload.as_slice();
            while !rest.is_empty() {
                let (dose, after) =
                    postcard::take_from_bytes::<LoggedDose<'_>>(rest).map_err(|e| {
                        Error::store(
                            &format!(
                                "decoding a checksummed frame at byte {pos} of {}",
                                path.display()
                            ),
                            e,
                        )
                    })?;
                each(dose);
                rest = after;
            }
            pos += (HEADER + payload.len()) as u64;
        }
        drop(reader);
        if let Some(reason) = torn.filter(|_| pos < size) {
            tracing::warn!(
                path = %path.display(),
                offset = pos,
                dropped_bytes = size - pos,
                reason,
                "dropping the dose log's torn tail (never acknowledged)"
            );
            file.set_len(pos)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_err("cutting the torn tail of", e))?;
        }
        Ok(DoseLog {
            file,
            path: path.to_owned(),
            len: pos,
            failed: false,
            buf: Vec::new(),
        })
    }

    /// Durably appends `doses` as one frame (nothing when there are none): when this returns
    /// `Ok`, they are on disk and read back at every later open.
    pub(crate) fn append<'a>(
        &mut self,
        doses: impl IntoIterator<Item = LoggedDose<'a>>,
    ) -> Result<()> {
        self.encode(doses)?;
        self.commit()
    }

    /// Builds the next frame from `doses` (in memory; [`DoseLog::commit`] writes it).
    pub(crate) fn encode<'a>(
        &mut self,
        doses: impl IntoIterator<Item = LoggedDose<'a>>,
    ) -> Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(&[0u8; HEADER]);
        for dose in doses {
            buf =
                postcard::to_extend(&dose, buf).map_err(|e| Error::store("encoding a dose", e))?;
        }
        self.buf = buf;
        Ok(())
    }

    /// Whether an earlier write failed, so that no more doses are stored until a restart.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed
    }

    /// Durably writes the frame [`DoseLog::encode`] built (nothing if it holds no dose).
    pub(crate) fn commit(&mut self) -> Result<()> {
        if self.failed {
            return Err(Error::Store(format!(
                "an earlier write of {} failed; no more doses are stored until a restart",
                self.path.display()
            )));
        }
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.write_frame(&mut buf);
        buf.clear();
        // keep a request's buffer for the next one, but not a huge one
        if buf.capacity() <= 32 << 20 {
            self.buf = buf;
        }
        result
    }

    fn write_frame(&mut self, buf: &mut [u8]) -> Result<()> {
        let Some(payload_len) = buf.len().checked_sub(HEADER).filter(|&n| n > 0) else {
            return Ok(());
        };
        let len = u32::try_from(payload_len)
            .ok()
            .filter(|&n| n <= MAX_FRAME)
            .ok_or_else(|| Error::Store(format!("{payload_len} bytes of doses in one frame")))?;
        let crc = frame_crc(len, &buf[HEADER..]);
        buf[..4].copy_from_slice(&len.to_le_bytes());
        buf[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        match self
            .file
            .write_all_at(buf, self.len)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                // cut the frame off again, so the failed request is not read back at the next open
                let cut = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data());
                if let Err(cut) = cut {
                    tracing::error!(path = %self.path.display(), error = %cut, "could not cut off a failed dose log frame");
                }
                Err(Error::store(
                    &format!("writing doses to {}", self.path.display()),
                    e,
                ))
            }
        }
    }

    /// Bytes of valid frames, the header included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dose(person: &str, n: u8) -> LoggedDose<'_> {
        LoggedDose {
            person,
            dose: n,
            vaccine: "EU/1/20/1528",
            administered_at: 1_700_000_000 + i64::from(n),
            lot: n.is_multiple_of(2).then_some("FE12"),
            site: Some("Commune 3, \"clinic\""),
            area: None,
        }
    }

    fn read_all(path: &Path) -> (Vec<(String, u8)>, DoseLog) {
        let mut got = Vec::new();
        let log = DoseLog::open(path, |d| got.push((d.person.to_string(), d.dose))).unwrap();
        (got, log)
    }

    #[test]
    fn frames_are_read_back_in_order_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.doses.log");
        let (got, mut log) = read_all(&path);
        assert!(got.is_empty());
        log.append([dose("a", 1), dose("b", 1)]).unwrap();
        log.append(std::iter::empty()).unwrap();
        let first = log.len();
        log.append([dose("a", 2)]).unwrap();
        let good = log.len();
        drop(log);
        let want = vec![("a".into(), 1), ("b".into(), 1), ("a".into(), 2)];
        assert_eq!(read_all(&path).0, want);
        // Every kind of torn tail: cut inside a header, inside a payload, a bad checksum, zeros.
        // the last frame (of one dose)
        let frame = std::fs::read(&path).unwrap()[first as usize..].to_vec();
        let mut bad_crc = frame.clone();
        bad_crc[HEADER] ^= 1;
        for tail in [
            frame[..3].to_vec(),
            frame[..frame.len() - 1].to_vec(),
            bad_crc,
            vec![0u8; 4096],
            // a torn header claiming far more than the file holds
            [&(MAX_FRAME - 1).to_le_bytes()[..], &[7u8; 20]].concat(),
        ] {
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.truncate(good as usize);
            bytes.extend_from_slice(&tail);
            std::fs::write(&path, &bytes).unwrap();
            let (got, mut log) = read_all(&path);
            assert_eq!(got, want);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
            // and the log goes on from there
            log.append([dose("c", 1)]).unwrap();
            drop(log);
            let (got, _) = read_all(&path);
            assert_eq!(got.last(), Some(&("c".to_string(), 1)));
            assert_eq!(got.len(), 4);
        }
    }

    #[test]
    fn a_header_cut_short_at_creation_is_rewritten_and_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.doses.log");
        std::fs::write(&path, &MAGIC[..3]).unwrap();
        let (got, mut log) = read_all(&path);
        assert!(got.is_empty());
        log.append([dose("a", 1)]).unwrap();
        drop(log);
        assert_eq!(read_all(&path).0, vec![("a".to_string(), 1)]);
        std::fs::write(&path, b"not a dose log at all").unwrap();
        assert!(DoseLog::open(&path, |_| {}).is_err());
        assert!(std::fs::read(&path).unwrap().starts_with(b"not a dose log"));
    }

    #[test]
    fn a_checksummed_frame_that_does_not_decode_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.doses.log");
        let payload = [0xffu8; 5];
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&5u32.to_le_bytes());
        bytes.extend_from_slice(&frame_crc(5, &payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        std::fs::write(&path, &bytes).unwrap();
        assert!(DoseLog::open(&path, |_| {}).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
