//! Segment recovery at open: every log segment is read, validated and replayed into the indexes
//! (in two passes, so every list is sized once). A segment file cut short before its header is
//! removed; a damaged header is rewritten from the file name; a torn or corrupt tail is reported
//! and never served (and zeroed in the newest segment, which the writer appends to next). The
//! writer's starting position and the active segment's person dictionary are handed back.

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::engine::{Config, DroppedTail, RecoveryReport};
use crate::error::{Error, Result};
use crate::index::{EventRec, Index};
use crate::log::{self, ReadStop, Segment};
use crate::registry::Registry;
use crate::types::*;
use crate::visits;
use crate::writer::Active;

/// What recovery hands to the writer.
pub(crate) struct Recovered {
    pub(crate) segments: Vec<Arc<Segment>>,
    pub(crate) active: Option<Active>,
    pub(crate) next_seq: u64,
    /// Local person number → global, for the active segment.
    pub(crate) active_locals: Vec<u32>,
}

/// Replays every segment into `index`.
pub(crate) fn recover_segments(
    dir: &Path,
    config: &Config,
    registry: &Registry,
    index: &mut Index,
    cutoff: i64,
    report: &mut RecoveryReport,
) -> Result<Recovered> {
    let started = Instant::now();
    let mut files = Vec::new();
    for (id, path) in log::list_segments(dir)? {
        let len = fs::metadata(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len();
        if len < log::HEADER_LEN as u64 {
            // A segment whose creation was cut short before its header: it holds nothing. It is
            // removed before the newest segment is chosen, so the one before it (which may have
            // a torn tail of its own) is recovered as the newest and written on.
            tracing::warn!(path = %path.display(), len, "removing a segment file shorter than its header");
            report.dropped.push(DroppedTail {
                path: path.clone(),
                offset: 0,
                bytes: len,
                reason: "segment file shorter than its header".into(),
            });
            fs::remove_file(&path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            continue;
        }
        files.push((id, path));
    }
    let mut out = Recovered {
        segments: Vec::new(),
        active: None,
        next_seq: 1,
        active_locals: Vec::new(),
    };
    let venues = registry.len() as u32;
    let count = files.len();
    let mut next_seq = 1u64;
    let mut person_counts: Vec<u32> = Vec::new();
    let mut venue_counts: Vec<u32> = vec![0; venues as usize];
    let mut loaded: Vec<(Arc<Segment>, Vec<u32>, usize)> = Vec::new();
    for (i, (id, path)) in files.into_iter().enumerate() {
        let newest = i + 1 == count;
        let seg = Segment::open(&path, id)?;
        match log::decode_header(seg.map.bytes()) {
            Ok(h) if h.id == id => next_seq = next_seq.max(h.base_seq),
            Ok(h) => {
                return Err(Error::Corrupt {
                    path,
                    offset: 0,
                    reason: format!("header names segment {} but the file name says {id}", h.id),
                })
            }
            Err(reason) => {
                // Records carry their own checksums, so a damaged header loses nothing by itself:
                // rewrite it from the file name and read on.
                tracing::warn!(path = %path.display(), %reason, "segment header damaged; rewriting it from the file name");
                seg.map.write_at(
                    0,
                    &log::encode_header(id, seg.capacity() as u64, config.clock.now(), next_seq),
                );
                seg.map
                    .sync_range(0, log::HEADER_LEN)
                    .map_err(|e| Error::io(format!("rewriting header of {}", path.display()), e))?;
                report.dropped.push(DroppedTail {
                    path: path.clone(),
                    offset: 0,
                    bytes: 0,
                    reason: format!("segment header damaged ({reason}); rewritten, no record lost"),
                });
            }
        }
        let mut locals: Vec<u32> = Vec::new();
        let mut records = 0u64;
        let mut max_ts = i64::MIN;
        let stop = log::read_records(seg.map.bytes(), |rec| {
            let b = rec.batch;
            if b.first_new_person.to_native() as usize != locals.len() {
                return Err("person dictionary numbering gap".into());
            }
            let new_count = b.new_persons.len();
            for p in b.new_persons.iter() {
                if !is_valid_person_id(p.as_str()) {
                    return Err("invalid person id in dictionary".into());
                }
            }
            for s in b.scans.iter() {
                let ts = s.ts.to_native();
                if (s.person.to_native() as usize) >= locals.len() + new_count {
                    return Err("scan names an unknown person number".into());
                }
                if s.venue.to_native() & !log::OUT_BIT >= venues {
                    return Err("scan names an unregistered venue number".into());
                }
                if u32::try_from(ts).is_err() {
                    return Err("scan timestamp out of range".into());
                }
            }
            for p in b.new_persons.iter() {
                locals.push(index.intern(p.as_str()));
            }
            if person_counts.len() < index.person_keys.len() {
                person_counts.resize(index.person_keys.len(), 0);
            }
            let base = rec.base_seq;
            // First pass: count, so the second can size every list exactly once.
            for s in b.scans.iter() {
                let ts = s.ts.to_native();
                max_ts = max_ts.max(ts);
                if ts >= cutoff {
                    let raw_venue = s.venue.to_native();
                    person_counts[locals[s.person.to_native() as usize] as usize] += 1;
                    if raw_venue & log::OUT_BIT == 0 {
                        venue_counts[raw_venue as usize] += 1;
                    }
                }
            }
            records += 1;
            next_seq = next_seq.max(base + b.scans.len() as u64);
            Ok(())
        });
        report.records += records;
        seg.note_ts(max_ts);
        let end = match stop {
            ReadStop::End { offset } => offset,
            ReadStop::Damaged { offset, reason } => {
                let bytes = seg.capacity() - offset;
                if newest {
                    tracing::warn!(path = %path.display(), offset, %reason, "dropping a torn or corrupt tail record");
                    zero_tail(&seg, offset)?;
                } else {
                    tracing::error!(path = %path.display(), offset, %reason, "corruption inside an older segment: the rest of this segment is not served");
                }
                report.dropped.push(DroppedTail {
                    path: path.clone(),
                    offset: offset as u64,
                    bytes: bytes as u64,
                    reason,
                });
                offset
            }
        };
        report.segments += 1;
        let seg = Arc::new(seg);
        seg.synced.store(end, Ordering::Release);
        out.segments.push(seg.clone());
        if newest {
            out.active = Some(Active {
                segment: seg.clone(),
                offset: end,
            });
        }
        loaded.push((seg, locals, end));
    }

    report
        .phases
        .push(("read and validate segments", started.elapsed()));
    let started = Instant::now();
    // Second pass: every list has its final size reserved; fill them in log order.
    for (p, &n) in person_counts.iter().enumerate() {
        index.person_keys[p].reserve_exact(n as usize);
    }
    for (v, &n) in venue_counts.iter().enumerate() {
        if let Some(ins) = index.venue_ins.get_mut(v) {
            ins.reserve_exact(n as usize);
        }
    }
    // Persons on one thread, venues and the recent-events window on this one: both read the
    // same (mapped, already validated) records and write disjoint lists.
    let Index {
        person_keys,
        venue_ins,
        ..
    } = &mut *index;
    let loaded_ref = &loaded;
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for (seg, locals, end) in loaded_ref {
                for_each_loaded_scan(seg, locals, *end, cutoff, |_, person, raw_venue, ts| {
                    person_keys[person as usize].push(visits::person_key(
                        ts as u32,
                        raw_venue & !log::OUT_BIT,
                        raw_venue & log::OUT_BIT != 0,
                    ));
                });
            }
        });
        for (seg, locals, end) in loaded_ref {
            for_each_loaded_scan(seg, locals, *end, cutoff, |_, person, raw_venue, ts| {
                if raw_venue & log::OUT_BIT == 0 {
                    if let Some(ins) = venue_ins.get_mut(raw_venue as usize) {
                        ins.push(((ts as u64) << 32) | person as u64);
                    }
                }
            });
        }
    });
    // The recent-events window: only the newest records matter, so walk back from the end.
    let want = index.recent_cap;
    let mut tail: Vec<EventRec> = Vec::new();
    for (seg, locals, end) in loaded.iter().rev() {
        let mut recs: Vec<EventRec> = Vec::new();
        for_each_loaded_scan(seg, locals, *end, cutoff, |seq, person, raw_venue, ts| {
            recs.push(EventRec {
                seq,
                person,
                venue: raw_venue & !log::OUT_BIT,
                ts: ts as u32,
                out: raw_venue & log::OUT_BIT != 0,
            });
        });
        recs.append(&mut tail);
        tail = recs;
        if tail.len() >= want {
            break;
        }
    }
    let skip = tail.len().saturating_sub(want);
    // Events before the window are not replayable: say so to resuming clients.
    index.recent_floor = tail.get(skip).map_or(next_seq, |e| e.seq);
    for ev in tail.into_iter().skip(skip) {
        index.push_recent(ev);
    }
    if let Some((_, locals, _)) = loaded.pop().filter(|_| out.active.is_some()) {
        out.active_locals = locals;
    }
    out.next_seq = next_seq;
    report.phases.push(("fill indexes", started.elapsed()));
    Ok(out)
}

/// Calls `f(seq, global person, raw venue (with the out bit), ts)` for each scan within retention
/// in the first `end` bytes of a segment that recovery already validated.
fn for_each_loaded_scan(
    seg: &Segment,
    locals: &[u32],
    end: usize,
    cutoff: i64,
    mut f: impl FnMut(u64, u32, u32, i64),
) {
    log::read_records(&seg.map.bytes()[..end], |rec| {
        for (k, s) in rec.batch.scans.iter().enumerate() {
            let ts = s.ts.to_native();
            if ts >= cutoff {
                let person = locals[s.person.to_native() as usize];
                f(rec.base_seq + k as u64, person, s.venue.to_native(), ts);
            }
        }
        Ok(())
    });
}

/// Zeroes a segment from `offset` to its end, so appends continue on clean ground.
fn zero_tail(seg: &Segment, offset: usize) -> Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let cap = seg.capacity();
    let mut off = offset;
    while off < cap {
        let n = CHUNK.min(cap - off);
        // Skip pages that are already zero, so a large clean tail is not rewritten.
        if seg.map.bytes()[off..off + n].iter().any(|&b| b != 0) {
            seg.map.write_at(off, &zeros[..n]);
        }
        off += n;
    }
    seg.map
        .sync_range(offset, cap - offset)
        .map_err(|e| Error::io(format!("zeroing the tail of {}", seg.path.display()), e))
}
