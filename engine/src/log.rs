//! The append-only scan log: segment files, the record format, appending and recovery reading.
//!
//! See `docs/log-format.md` for the byte layout. In short: a data directory holds segment files
//! `NNNNNNNNNNNNNNNNNNNN.seg` of fixed, preallocated capacity. Each starts with a 64-byte header,
//! followed by 16-byte-aligned records `[len u32][crc32c u32][base_seq u64][rkyv payload]`. A
//! record whose `len` is zero marks the end of the written part. A record carries a batch of scans
//! and the person-dictionary entries that batch introduces to the segment, so a segment is
//! self-contained (retention can delete it whole) and a dictionary entry is never durable later
//! than a scan that uses it.
//!
//! This module never decides what a scan means; it stores and returns [`BatchRecord`]s.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::error::{Error, Result};
use crate::mmap::{self, MappedFile};

/// Magic bytes at the start of every segment.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"CHKSEG01";
/// Format version written in segment headers.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Size of the segment header.
pub(crate) const HEADER_LEN: usize = 64;
/// Size of a record header.
pub(crate) const RECORD_HEADER_LEN: usize = 16;
/// Records start at multiples of this.
pub(crate) const RECORD_ALIGN: usize = 16;
/// Smallest segment capacity accepted.
pub(crate) const MIN_SEGMENT_BYTES: u64 = 64 << 10;

/// Bit of [`ScanRecord::venue`] that marks an `"out"` scan.
pub(crate) const OUT_BIT: u32 = 1 << 31;

/// One stored scan, as laid out in a record (16 bytes archived).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanRecord {
    pub ts: i64,
    /// Segment-local person number (see [`BatchRecord::first_new_person`]).
    pub person: u32,
    /// Registry venue number, with [`OUT_BIT`] set for `"out"`.
    pub venue: u32,
}

/// The payload of one log record: a batch of scans plus the person ids it adds to the segment's
/// dictionary. New persons get local numbers `first_new_person, first_new_person + 1, …`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct BatchRecord {
    pub first_new_person: u32,
    pub new_persons: Vec<String>,
    pub scans: Vec<ScanRecord>,
}

pub(crate) fn align_up(n: usize) -> usize {
    (n + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

fn record_crc(len: u32, base_seq: u64, payload: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(&len.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &base_seq.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

/// Segment file name for an id.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// Parses a segment file name back to its id.
pub(crate) fn segment_id(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

/// Encodes a segment header.
pub(crate) fn encode_header(
    id: u64,
    capacity: u64,
    created_ts: i64,
    base_seq: u64,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&id.to_le_bytes());
    h[24..32].copy_from_slice(&capacity.to_le_bytes());
    h[32..40].copy_from_slice(&created_ts.to_le_bytes());
    h[40..48].copy_from_slice(&base_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a header says, if it is intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub id: u64,
    pub capacity: u64,
    pub created_ts: i64,
    /// Sequence number of the first scan the segment was opened for (so numbers are never
    /// reused, even after retention removed every older segment).
    pub base_seq: u64,
}

pub(crate) fn decode_header(bytes: &[u8]) -> std::result::Result<SegmentHeader, String> {
    let h = bytes
        .get(..HEADER_LEN)
        .ok_or_else(|| "file shorter than a segment header".to_string())?;
    if &h[0..8] != SEGMENT_MAGIC {
        return Err("bad magic".into());
    }
    let crc = u32::from_le_bytes(h[60..64].try_into().map_err(|_| "short")?);
    if crc != crc32c::crc32c(&h[0..60]) {
        return Err("header checksum mismatch".into());
    }
    let version = u32::from_le_bytes(h[8..12].try_into().map_err(|_| "short")?);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    let le64 = |r: std::ops::Range<usize>| -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[r]);
        u64::from_le_bytes(b)
    };
    Ok(SegmentHeader {
        id: le64(16..24),
        capacity: le64(24..32),
        created_ts: le64(32..40) as i64,
        base_seq: le64(40..48),
    })
}

/// One record read back from a segment.
pub(crate) struct ReadRecord<'a> {
    pub payload_len: usize,
    pub base_seq: u64,
    pub batch: &'a ArchivedBatchRecord,
}

/// Why reading stopped before the end of a segment's capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadStop {
    /// A zero length: the clean end of the written part.
    End { offset: usize },
    /// A damaged record at `offset`.
    Damaged { offset: usize, reason: String },
}

/// Decodes and validates one record at `offset` of `bytes`. `Ok(None)` is the clean end.
pub(crate) fn read_record(
    bytes: &[u8],
    offset: usize,
) -> std::result::Result<Option<ReadRecord<'_>>, String> {
    let Some(head) = bytes.get(offset..offset + RECORD_HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&head[8..16]);
    let base_seq = u64::from_le_bytes(seq);
    if len == 0 {
        if crc != 0 || base_seq != 0 {
            return Err("zero length with a non-zero header".into());
        }
        return Ok(None);
    }
    let start = offset + RECORD_HEADER_LEN;
    let payload = start
        .checked_add(len as usize)
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| format!("record length {len} runs past the segment end"))?;
    if record_crc(len, base_seq, payload) != crc {
        return Err("record checksum mismatch".into());
    }
    let batch = rkyv::access::<ArchivedBatchRecord, rancor::Error>(payload)
        .map_err(|e| format!("record does not validate: {e}"))?;
    Ok(Some(ReadRecord {
        payload_len: len as usize,
        base_seq,
        batch,
    }))
}

/// Iterates the records of a segment body, calling `f` for each, and says where and why it
/// stopped. Also checks that the bytes after a clean end are zero up to the next record slot
/// (a torn write may leave a zero length in front of garbage).
pub(crate) fn read_records<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(ReadRecord<'a>) -> std::result::Result<(), String>,
) -> ReadStop {
    let mut offset = HEADER_LEN;
    loop {
        match read_record(bytes, offset) {
            Ok(Some(rec)) => {
                let next = align_up(offset + RECORD_HEADER_LEN + rec_len(bytes, offset));
                if let Err(reason) = f(rec) {
                    return ReadStop::Damaged { offset, reason };
                }
                offset = next;
            }
            Ok(None) => {
                // Clean end, unless something non-zero follows (a torn write of a later record
                // whose header page did not reach the disk).
                let tail = bytes.get(offset..).unwrap_or(&[]);
                let probe = &tail[..tail.len().min(64 << 10)];
                if probe.iter().any(|&b| b != 0) {
                    return ReadStop::Damaged {
                        offset,
                        reason: "non-zero bytes after the end marker".into(),
                    };
                }
                return ReadStop::End { offset };
            }
            Err(reason) => return ReadStop::Damaged { offset, reason },
        }
    }
}

fn rec_len(bytes: &[u8], offset: usize) -> usize {
    let h = &bytes[offset..offset + 4];
    u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize
}

/// An open segment file.
pub(crate) struct Segment {
    pub id: u64,
    pub path: PathBuf,
    pub map: MappedFile,
    /// Largest scan timestamp stored in this segment (for retention).
    pub max_ts: AtomicI64,
    /// Bytes known durable (sync thread).
    pub synced: AtomicUsize,
}

impl Segment {
    /// Opens an existing segment file for reading and appending.
    pub(crate) fn open(path: &Path, id: u64) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening segment {}", path.display()), e))?;
        let map = MappedFile::map(file)
            .map_err(|e| Error::io(format!("mapping segment {}", path.display()), e))?;
        Ok(Segment {
            id,
            path: path.to_path_buf(),
            map,
            max_ts: AtomicI64::new(i64::MIN),
            synced: AtomicUsize::new(0),
        })
    }

    /// Creates, preallocates and maps a new segment, writes and syncs its header, and syncs the
    /// directory so the file itself survives power loss.
    pub(crate) fn create(
        dir: &Path,
        id: u64,
        capacity: u64,
        now: i64,
        base_seq: u64,
    ) -> Result<Segment> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating segment {}", path.display()), e))?;
        if let Err(e) = mmap::preallocate(&file, capacity) {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(Error::io(
                format!("preallocating {capacity} bytes for {}", path.display()),
                e,
            ));
        }
        let map = MappedFile::map(file)
            .map_err(|e| Error::io(format!("mapping segment {}", path.display()), e))?;
        map.write_at(0, &encode_header(id, capacity, now, base_seq));
        map.sync_range(0, HEADER_LEN)
            .map_err(|e| Error::io(format!("syncing header of {}", path.display()), e))?;
        sync_dir(dir)?;
        Ok(Segment {
            id,
            path,
            map,
            max_ts: AtomicI64::new(i64::MIN),
            synced: AtomicUsize::new(HEADER_LEN),
        })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn note_ts(&self, ts: i64) {
        self.max_ts.fetch_max(ts, Ordering::Relaxed);
    }
}

/// fsyncs a directory, so that files created or removed in it stay so after power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// Serializes a batch into `buf` (cleared first) and returns the record header that goes in front
/// of it. The record occupies `align_up(RECORD_HEADER_LEN + buf.len())` bytes; padding is the
/// zeroes already in the preallocated segment.
pub(crate) fn encode_record(
    batch: &BatchRecord,
    base_seq: u64,
    mut buf: AlignedVec,
) -> std::result::Result<([u8; RECORD_HEADER_LEN], AlignedVec), rancor::Error> {
    buf.clear();
    let payload = rkyv::api::high::to_bytes_in::<_, rancor::Error>(batch, buf)?;
    let len32 = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut header = [0u8; RECORD_HEADER_LEN];
    header[0..4].copy_from_slice(&len32.to_le_bytes());
    header[4..8].copy_from_slice(&record_crc(len32, base_seq, &payload).to_le_bytes());
    header[8..16].copy_from_slice(&base_seq.to_le_bytes());
    Ok((header, payload))
}

/// Bytes a record with a payload of `payload_len` takes in a segment.
pub(crate) fn record_size(payload_len: usize) -> usize {
    align_up(RECORD_HEADER_LEN + payload_len)
}

/// Lists segment files of a directory, ascending by id.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let path = entry.path();
        if let Some(id) = segment_id(&path) {
            out.push((id, path));
        }
    }
    out.sort_unstable_by_key(|(id, _)| *id);
    Ok(out)
}

/// Summary of one segment file, for tools and tests (`engine::inspect_segment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Header id, or `None` if the header is damaged.
    pub id: Option<u64>,
    pub records: u64,
    pub scans: u64,
    /// Offset of the end of valid records.
    pub valid_end: u64,
    /// Offset of the last valid record, if any.
    pub last_record: Option<u64>,
    /// Why reading stopped early, if it did.
    pub damage: Option<String>,
}

/// Reads a segment file without opening a store: counts valid records and reports damage.
pub fn inspect_segment(path: &Path) -> std::io::Result<SegmentSummary> {
    let file = File::open(path)?;
    let map = mmap::ReadOnlyMap::open(&file)?;
    let bytes = map.bytes();
    let id = decode_header(bytes).ok().map(|h| h.id);
    let (mut records, mut scans) = (0u64, 0u64);
    let mut last_record = None;
    let mut next = HEADER_LEN as u64;
    let stop = read_records(bytes, |rec| {
        records += 1;
        scans += rec.batch.scans.len() as u64;
        last_record = Some(next);
        next += record_size(rec.payload_len) as u64;
        Ok(())
    });
    let (valid_end, damage) = match stop {
        ReadStop::End { offset } => (offset as u64, None),
        ReadStop::Damaged { offset, reason } => (offset as u64, Some(reason)),
    };
    Ok(SegmentSummary {
        id,
        records,
        scans,
        valid_end,
        last_record,
        damage,
    })
}

/// Validates arbitrary bytes as one record at offset 0 (fuzzing entry point): never panics.
/// Returns the number of scans in the record if it is valid.
pub fn decode_record_for_fuzzing(bytes: &[u8]) -> Option<usize> {
    // Copy into an aligned buffer, as records in a mapping are aligned.
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    match read_record(&aligned, 0) {
        Ok(Some(rec)) => Some(rec.batch.scans.len()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip_and_damage_detection() {
        let batch = BatchRecord {
            first_new_person: 0,
            new_persons: vec!["alice".into(), "bob".into()],
            scans: vec![
                ScanRecord {
                    ts: 1_700_000_000,
                    person: 0,
                    venue: 3,
                },
                ScanRecord {
                    ts: 1_700_000_100,
                    person: 1,
                    venue: 3 | OUT_BIT,
                },
            ],
        };
        let (header, payload) = encode_record(&batch, 42, AlignedVec::new()).unwrap();
        let mut rec = header.to_vec();
        rec.extend_from_slice(&payload);
        rec.resize(record_size(payload.len()), 0);
        let mut seg = AlignedVec::<16>::new();
        seg.extend_from_slice(&encode_header(7, 4096, 0, 1));
        seg.extend_from_slice(&rec);
        seg.resize(4096, 0);
        let mut seen = Vec::new();
        let stop = read_records(&seg, |r| {
            seen.push((
                r.base_seq,
                r.batch.scans.len(),
                r.batch.new_persons[1].as_str().to_owned(),
            ));
            Ok(())
        });
        assert_eq!(seen, vec![(42, 2, "bob".to_string())]);
        assert_eq!(
            stop,
            ReadStop::End {
                offset: HEADER_LEN + rec.len()
            }
        );

        // Flip one payload byte: the record is damaged, nothing is served.
        let mut bad = seg.clone();
        bad[HEADER_LEN + RECORD_HEADER_LEN + 5] ^= 0x40;
        let mut n = 0;
        let stop = read_records(&bad, |_| {
            n += 1;
            Ok(())
        });
        assert_eq!(n, 0);
        assert!(matches!(
            stop,
            ReadStop::Damaged {
                offset: HEADER_LEN,
                ..
            }
        ));
    }

    #[test]
    fn header_roundtrip() {
        let h = encode_header(9, 1 << 20, 123, 77);
        assert_eq!(
            decode_header(&h),
            Ok(SegmentHeader {
                id: 9,
                capacity: 1 << 20,
                created_ts: 123,
                base_seq: 77
            })
        );
        let mut z = h;
        z[3] = 0;
        assert!(decode_header(&z).is_err());
    }

    #[test]
    fn fuzz_entry_never_panics_on_garbage() {
        assert_eq!(decode_record_for_fuzzing(&[]), None);
        assert_eq!(decode_record_for_fuzzing(&[0xff; 40]), None);
        assert_eq!(decode_record_for_fuzzing(&[1, 0, 0, 0, 9, 9, 9, 9]), None);
    }
}
