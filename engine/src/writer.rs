//! The writer thread: it owns the log tail. It drains the queued ingestion jobs, interns persons,
//! drops exact duplicates, inserts into the indexes, appends one record per chunk to the active
//! segment (rolling over to a new one when full), updates occupancy and the recent-events
//! window, collects the exits those scans infer at watched venues, and hands each appended range
//! to the sync thread (`sync`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use rkyv::util::AlignedVec;

use crate::change::{AppliedScan, PersonKey, StoredScans, VenueKey};
use crate::engine::{Completion, Shared};
use crate::error::{Error, Result};
use crate::index::EventRec;
use crate::log::{self, BatchRecord, ScanRecord, Segment};
use crate::sync::SyncItem;
use crate::types::*;
use crate::visits;

/// A message to the writer thread.
pub(crate) enum Msg {
    Job(Job),
    Stop,
}

/// One submitted batch, validated.
pub(crate) struct Job {
    pub(crate) scans: Vec<Validated>,
    pub(crate) outcome: IngestOutcome,
    pub(crate) done: Completion,
}

/// One accepted scan, its venue resolved to the registry's number.
pub(crate) struct Validated {
    pub(crate) person: String,
    pub(crate) venue: u32,
    pub(crate) ts: u32,
    pub(crate) out: bool,
}

/// Upper bound of the bytes one scan adds to a record (16-byte scan plus a worst-case new
/// 64-byte person id with its string header).
const MAX_SCAN_RECORD_BYTES: usize = 16 + 64 + 16;
/// Fixed overhead bound of a record (header, rkyv root, padding).
const RECORD_OVERHEAD: usize = 128;

/// The writer's position in the log.
pub(crate) struct Active {
    pub(crate) segment: Arc<Segment>,
    pub(crate) offset: usize,
}

/// The writer thread's state: the active segment, its append offset, the next scan sequence
/// number, and the active segment's person dictionary.
pub(crate) struct WriterState {
    active: Active,
    next_seq: u64,
    /// Global person number → local number + 1 in the active segment (0 = not yet in it).
    local_of: Vec<u32>,
    local_count: u32,
    buf: AlignedVec,
    record: BatchRecord,
}

impl WriterState {
    pub(crate) fn resume(active: Active, next_seq: u64, locals: Vec<u32>) -> WriterState {
        let mut local_of = Vec::new();
        for (local, &global) in locals.iter().enumerate() {
            let g = global as usize;
            if g >= local_of.len() {
                local_of.resize(g + 1, 0);
            }
            local_of[g] = local as u32 + 1;
        }
        WriterState {
            active,
            next_seq,
            local_count: locals.len() as u32,
            local_of,
            buf: AlignedVec::new(),
            record: BatchRecord::default(),
        }
    }

    /// The active segment's id and where its last record ends.
    pub(crate) fn position(&self) -> (u64, usize) {
        (self.active.segment.id, self.active.offset)
    }

    pub(crate) fn run(mut self, shared: &Shared, rx: Receiver<Msg>) {
        let cap = self.scans_per_record(shared);
        let mut stop = false;
        while !stop {
            let Ok(first) = rx.recv() else { break };
            let mut jobs = Vec::new();
            let mut n = 0;
            match first {
                Msg::Stop => stop = true,
                Msg::Job(j) => {
                    n += j.scans.len();
                    jobs.push(j);
                }
            }
            while !stop && n < cap {
                match rx.try_recv() {
                    Ok(Msg::Job(j)) => {
                        n += j.scans.len();
                        jobs.push(j);
                    }
                    Ok(Msg::Stop) => stop = true,
                    Err(_) => break,
                }
            }
            if !jobs.is_empty() {
                self.process(shared, jobs, cap);
            }
        }
        // Anything still queued after Stop is refused.
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Job(j) = msg {
                (j.done)(Err(Error::ShuttingDown));
            }
        }
    }

    fn scans_per_record(&self, shared: &Shared) -> usize {
        let usable = (shared.config.segment_bytes as usize / 2).saturating_sub(log::HEADER_LEN);
        (usable.saturating_sub(RECORD_OVERHEAD) / MAX_SCAN_RECORD_BYTES).max(1)
    }

    /// Stores a group of jobs, in chunks of at most `cap` scans (one record each).
    fn process(&mut self, shared: &Shared, jobs: Vec<Job>, cap: usize) {
        if let Some(p) = shared.poison_reason() {
            for j in jobs {
                (j.done)(Err(Error::Poisoned(p.clone())));
            }
            return;
        }
        let mut outcomes: Vec<IngestOutcome> = Vec::with_capacity(jobs.len());
        let mut dones: Vec<Option<Completion>> = Vec::with_capacity(jobs.len());
        let mut scans: Vec<(usize, Validated)> = Vec::new();
        for (j, job) in jobs.into_iter().enumerate() {
            outcomes.push(job.outcome);
            dones.push(Some(job.done));
            scans.extend(job.scans.into_iter().map(|s| (j, s)));
        }
        // The job whose last scan is at each position completes with that chunk; jobs with no
        // scans complete with the first chunk after them (or the final flush item).
        let mut last_of_job = vec![usize::MAX; dones.len()];
        for (i, (j, _)) in scans.iter().enumerate() {
            last_of_job[*j] = i;
        }
        let mut next_job = 0usize;
        let mut start = 0usize;
        loop {
            let end = (start + cap).min(scans.len());
            let chunk = &scans[start..end];
            let bound = RECORD_OVERHEAD
                + chunk
                    .iter()
                    .map(|(_, s)| 16 + s.person.len() + 16)
                    .sum::<usize>();
            if let Err(e) = self.ensure_space(shared, bound) {
                tracing::error!(error = %e, "cannot append to the log");
                for d in dones.iter_mut().skip(next_job).filter_map(Option::take) {
                    d(Err(e.for_each_waiter()));
                }
                return;
            }
            let (events, applied, exits) = self.append_chunk(shared, chunk, &mut outcomes);
            let mut done = Vec::new();
            while next_job < dones.len()
                && (last_of_job[next_job] == usize::MAX || last_of_job[next_job] < end)
            {
                if let Some(d) = dones[next_job].take() {
                    done.push((d, Ok(std::mem::take(&mut outcomes[next_job]))));
                }
                next_job += 1;
            }
            *shared.write_end.lock() = self.position();
            let item = SyncItem {
                segment: self.active.segment.clone(),
                end: self.active.offset,
                done,
                events,
                applied,
                exits,
            };
            {
                let mut st = shared.sync.state.lock();
                st.items.push(item);
            }
            shared.sync.cv.notify_one();
            start = end;
            if start >= scans.len() {
                break;
            }
        }
    }

    /// Makes room for a record of at most `bound` bytes, rolling over to a new segment if needed.
    fn ensure_space(&mut self, shared: &Shared, bound: usize) -> Result<()> {
        let seg = &self.active.segment;
        if self.active.offset + bound <= seg.capacity() {
            return Ok(());
        }
        let id = seg.id + 1;
        let config = &shared.config;
        let new = Arc::new(Segment::create(
            &config.data_dir,
            id,
            config.segment_bytes,
            config.clock.now(),
            self.next_seq,
        )?);
        if bound + log::HEADER_LEN > new.capacity() {
            return Err(Error::NoSpace(format!(
                "a record of {bound} bytes does not fit in a segment"
            )));
        }
        shared.segments.lock().push(new.clone());
        self.active = Active {
            segment: new,
            offset: log::HEADER_LEN,
        };
        self.local_of.iter_mut().for_each(|l| *l = 0);
        self.local_count = 0;
        Ok(())
    }

    /// Indexes a chunk and appends its new scans as one record. Returns the live-feed events and
    /// the stored scans for the change listeners.
    fn append_chunk(
        &mut self,
        shared: &Shared,
        chunk: &[(usize, Validated)],
        outcomes: &mut [IngestOutcome],
    ) -> (Vec<ScanEvent>, StoredScans, Vec<ExitEvent>) {
        let now = shared.config.clock.now();
        // Live events (scans and inferred exits) are built only while someone watches a venue.
        let watched = (shared.watched_total.load(Ordering::Acquire) > 0)
            .then(|| shared.watched.lock().clone());
        let mut idx = shared.index.write();
        idx.occupancy.collect_exits(watched.is_some());
        // Catch up on deadlines and future scans due by now, so that occupancy right after this
        // batch is exact rather than up to one ticker period behind.
        idx.tick(now);
        let mut record = std::mem::take(&mut self.record);
        record.first_new_person = self.local_count;
        record.new_persons.clear();
        record.scans.clear();
        let mut applied: Vec<(u32, u64)> = Vec::with_capacity(chunk.len());
        let mut max_ts = 0u32;
        for (j, s) in chunk {
            let pid = idx.intern(&s.person);
            let Some(key) = idx.insert(pid, s.venue, s.ts, s.out, now) else {
                outcomes[*j].duplicates += 1;
                continue;
            };
            let g = pid as usize;
            if g >= self.local_of.len() {
                self.local_of.resize(g + 1, 0);
            }
            if self.local_of[g] == 0 {
                self.local_count += 1;
                self.local_of[g] = self.local_count;
                record.new_persons.push(s.person.clone());
            }
            record.scans.push(ScanRecord {
                ts: s.ts as i64,
                person: self.local_of[g] - 1,
                venue: s.venue | if s.out { log::OUT_BIT } else { 0 },
            });
            applied.push((pid, key));
            max_ts = max_ts.max(s.ts);
        }
        let mut events = Vec::new();
        let mut stored = StoredScans::default();
        if !record.scans.is_empty() {
            let base_seq = self.next_seq;
            match log::encode_record(&record, base_seq, std::mem::take(&mut self.buf)) {
                Ok((header, payload)) => {
                    let seg = &self.active.segment;
                    let off = self.active.offset;
                    seg.map.write_at(off, &header);
                    seg.map.write_at(off + log::RECORD_HEADER_LEN, &payload);
                    self.active.offset = off + log::record_size(payload.len());
                    seg.note_ts(max_ts as i64);
                    self.next_seq += record.scans.len() as u64;
                    self.buf = payload;
                }
                Err(e) => {
                    // Only an allocation failure can get here; refuse to go on rather than
                    // acknowledge what is not in the log.
                    shared.poison(format!("encoding a log record failed: {e}"));
                }
            }
            if shared.has_change_listeners.load(Ordering::Acquire) {
                stored = StoredScans::new(
                    applied
                        .iter()
                        .map(|&(pid, key)| AppliedScan {
                            person: PersonKey(pid),
                            venue: VenueKey(visits::key_venue(key)),
                            ts: i64::from(visits::key_ts(key)),
                            out: visits::key_is_out(key),
                        })
                        .collect(),
                );
            }
            for (i, (pid, key)) in applied.iter().enumerate() {
                idx.occupancy_on_scan(*pid, *key, now);
                let ev = EventRec {
                    seq: base_seq + i as u64,
                    person: *pid,
                    venue: visits::key_venue(*key),
                    ts: visits::key_ts(*key),
                    out: visits::key_is_out(*key),
                };
                idx.push_recent(ev);
                if watched.as_ref().is_some_and(|w| w.contains_key(&ev.venue)) {
                    events.push(idx.event(&ev));
                }
            }
        }
        let exits = idx.take_exits(watched.as_ref(), false);
        self.record = record;
        (events, stored, exits)
    }
}
