//! The audit log: an append-only, durable record of who looked up whom (`audit.log`).
//!
//! Every entry is made durable (fsync in `Fsync` mode) before the caller answers the lookup it
//! records. Entries go through one writer thread (`checkin-audit`) that takes every entry queued
//! at that moment and writes them with one `pwrite` and one flush: concurrent lookups share a
//! flush without waking a thread each. Entries are never purged by retention: they are the
//! authority's record of access to personal data.
//!
//! In cluster mode the entries are not the node's to keep: the server installs an
//! [`AuditForward`] ([`crate::Engine::forward_audit`]) and every entry goes to it instead
//! (the cluster's replicated audit stream), with the same "durable before `done`" promise.
//! The local `audit.log` then holds only what the server puts there itself
//! ([`crate::Engine::audit_submit_local`]: the entries it derives from the cluster's stream).
//!
//! An entry whose change was made but which `audit.log` refused (a full disk: the journal then
//! refuses every later append until a restart) is owed: [`AuditLog::owe`] keeps it in
//! `audit-owed.log` beside it, a file of its own opened for each such entry, and the next open
//! moves every owed entry into `audit.log` (skipping one that the failed write had stored after
//! all) and removes the file. So a change is never left without its entry once space returns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use rkyv::rancor;

use crate::error::{Error, Result};
use crate::journal::{self, Journal};
use crate::types::AuditEntry;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
struct AuditRecord {
    ts: i64,
    who: String,
    action: String,
    subject: String,
}

/// Called once an entry is durable, or with why it could not be stored.
pub type AuditDone = Box<dyn FnOnce(Result<()>) + Send>;

/// Where audit entries go instead of the local `audit.log` (cluster mode: a replicated stream).
/// `submit` must call `done` exactly once, after the entry is durable there or with why not
/// ([`Error::Forward`]); it must not block.
pub trait AuditForward: Send + Sync {
    /// Stores one entry elsewhere.
    fn submit(&self, entry: AuditEntry, done: AuditDone);
}

/// One queued entry: its encoded frame and who waits for it.
struct Job {
    frame: Vec<u8>,
    done: AuditDone,
}

/// Most entries one write carries.
const MAX_BATCH: usize = 4096;

/// The file of entries owed to `audit.log` ([`AuditLog::owe`]).
pub(crate) const OWED_FILE: &str = "audit-owed.log";

/// The audit log of a data directory.
pub(crate) struct AuditLog {
    journal: Arc<Journal>,
    /// `None` once stopped: later entries are refused with [`Error::ShuttingDown`].
    queue: Mutex<Option<Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Set once, in cluster mode: every later entry but the local ones goes there instead.
    forward: OnceLock<Arc<dyn AuditForward>>,
    /// `audit-owed.log`, written by one [`AuditLog::owe`] at a time.
    owed: Mutex<PathBuf>,
    /// Whether `audit-owed.log` may hold entries that are in `audit.log` already: a move at open
    /// that failed part way, or one whose append succeeded and whose removal did not. The next
    /// move then matches them ([`Leftovers::Matched`]) instead of appending them again.
    owed_may_be_moved: AtomicBool,
    fsync: bool,
}

fn decode(payload: &[u8]) -> std::result::Result<AuditEntry, String> {
    let r = rkyv::from_bytes::<AuditRecord, rancor::Error>(payload)
        .map_err(|e| format!("audit frame does not validate: {e}"))?;
    Ok(AuditEntry {
        ts: r.ts,
        who: r.who,
        action: r.action,
        subject: r.subject,
    })
}

impl AuditLog {
    /// Why its journal refuses every append until reopened, if it does.
    pub(crate) fn poisoned(&self) -> Option<String> {
        self.journal.poisoned()
    }

    /// Opens `audit.log`, cutting off a torn tail. Returns the dropped bytes and reason, if any.
    pub(crate) fn open(dir: &Path, fsync: bool) -> Result<(AuditLog, Option<(u64, String)>)> {
        let (journal, content) = Journal::open(&dir.join("audit.log"), fsync)?;
        let (end, damage) = journal::read_frames(&content, |p| decode(p).map(|_| ()));
        let dropped = journal.settle(content.len(), end, damage)?;
        drop(content);
        let owed = dir.join(OWED_FILE);
        let mut owed_may_be_moved = false;
        match move_owed(&journal, &owed, fsync, Leftovers::Matched) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                entries = n,
                "moved audit entries owed since a failed write into audit.log"
            ),
            // The file stays: a move refused for room is tried again while the server runs
            // (`Engine::audit_owed_pending`); one that poisoned the journal (a failed sync)
            // waits for the next open, and audited requests answer 503 until then.
            Err(e) => {
                owed_may_be_moved = true;
                tracing::error!(error = %e, "could not move the owed audit entries into audit.log")
            }
        }
        let journal = Arc::new(journal);
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer_journal = journal.clone();
        let writer = std::thread::Builder::new()
            .name("checkin-audit".into())
            .spawn(move || write_loop(&writer_journal, &rx))
            .map_err(|e| Error::io("spawning thread checkin-audit", e))?;
        Ok((
            AuditLog {
                journal,
                queue: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                forward: OnceLock::new(),
                owed: Mutex::new(owed),
                owed_may_be_moved: AtomicBool::new(owed_may_be_moved),
                fsync,
            },
            dropped,
        ))
    }

    /// Appends one entry and returns once it is durable.
    pub(crate) fn append(&self, entry: AuditEntry) -> Result<()> {
        crate::error::wait_for(|done| self.submit(entry, done))
    }

    /// Queues one entry; `done` is called once it is durable, or with the error that kept it
    /// from being stored (possibly on this thread, at once).
    pub(crate) fn submit(&self, entry: AuditEntry, done: AuditDone) {
        if let Some(forward) = self.forward.get() {
            return forward.submit(entry, done);
        }
        self.submit_local(entry, done);
    }

    /// Queues one entry to this `audit.log`, forward or not; `done` as for [`AuditLog::submit`].
    pub(crate) fn submit_local(&self, entry: AuditEntry, done: AuditDone) {
        let frame = match encode(entry) {
            Ok(f) => f,
            Err(e) => return done(Err(e)),
        };
        let job = Job { frame, done };
        let refused = match self.queue.lock().as_ref() {
            Some(tx) => tx.send(job).err().map(|e| e.into_inner()),
            None => Some(job),
        };
        if let Some(job) = refused {
            (job.done)(Err(Error::ShuttingDown));
        }
    }

    /// Durably keeps `entry`, which `audit.log` refused although its change was made, in
    /// `audit-owed.log`; the next open moves it into `audit.log`. A file of its own, opened for
    /// this entry and written without the journal's zero-filled steps ahead of the frames, so
    /// that it needs room for this one frame only and can succeed while `audit.log` refuses.
    pub(crate) fn owe(&self, entry: AuditEntry) -> Result<()> {
        use std::io::Read as _;
        use std::os::unix::fs::FileExt as _;
        let frame = encode(entry)?;
        let path = self.owed.lock();
        let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
        let created = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&*path)
            .map_err(|e| io("opening", e))?;
        if created && self.fsync {
            // the name first, so that a failure after the frame is durable cannot make the
            // caller's retry write the entry twice
            if let Some(dir) = path.parent() {
                crate::log::sync_dir(dir)?;
            }
        }
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).map_err(|e| io("reading", e))?;
        let mut content = rkyv::util::AlignedVec::<16>::with_capacity(raw.len());
        content.extend_from_slice(&raw);
        // a torn frame of a failed attempt is cut off, not written after
        let (end, _) = journal::read_frames(&content, |p| decode(p).map(|_| ()));
        let end = end as u64;
        if end < raw.len() as u64 {
            file.set_len(end).map_err(|e| io("truncating", e))?;
        }
        file.write_all_at(&frame, end)
            .map_err(|e| io("appending to", e))?;
        if self.fsync {
            if let Err(e) = file.sync_data() {
                // Not durable, so not owed: cut off, or the caller's retry would find it in the
                // page cache and write it a second time.
                let _ = file.set_len(end);
                return Err(io("syncing", e));
            }
        }
        Ok(())
    }

    /// Moves the owed entries into `audit.log` now (while the server runs, once `audit.log`
    /// takes appends again); returns how many. A refused append of this process left nothing
    /// that counts in `audit.log` (its logical end did not move, and the next append overwrote
    /// whatever reached the file), so every owed entry is appended, unless an earlier move may
    /// have appended some already (`owed_may_be_moved`: they are matched then); one refused by a
    /// failed sync poisons the journal, and its entries wait for the next open.
    pub(crate) fn settle_owed(&self) -> Result<usize> {
        let path = self.owed.lock();
        if let Some(p) = self.journal.poisoned() {
            return Err(Error::Poisoned(p));
        }
        let leftovers = if self.owed_may_be_moved.load(Ordering::Acquire) {
            Leftovers::Matched
        } else {
            Leftovers::None
        };
        let moved = move_owed(&self.journal, &path, self.fsync, leftovers);
        // After an error the append may have been made (its removal failing after it).
        self.owed_may_be_moved
            .store(moved.is_err(), Ordering::Release);
        moved
    }

    /// Whether entries are owed: kept in `audit-owed.log`, not yet moved into `audit.log`.
    pub(crate) fn owed_pending(&self) -> bool {
        self.owed.lock().exists()
    }

    /// Sends every later entry to `forward` instead of `audit.log` (but those of
    /// [`AuditLog::submit_local`]); `false` if one was set.
    pub(crate) fn set_forward(&self, forward: Arc<dyn AuditForward>) -> bool {
        self.forward.set(forward).is_ok()
    }

    /// Writes every entry appended so far to disk; returns where the frames end.
    pub(crate) fn sync_to_disk(&self) -> Result<u64> {
        self.journal.sync_to_disk()
    }

    /// Entries of the local `audit.log` with `ts >= since`, oldest first (in append order among
    /// equal times: owed entries, moved in after newer ones, take their place by time).
    pub(crate) fn since(&self, since: i64) -> Result<Vec<AuditEntry>> {
        let content = self.journal.read_all()?;
        let mut out = Vec::new();
        journal::read_frames(&content, |p| {
            let e = decode(p)?;
            if e.ts >= since {
                out.push(e);
            }
            Ok(())
        });
        // stable, and nearly linear on a log that is in order but for a few moved entries
        out.sort_by_key(|e| e.ts);
        Ok(out)
    }

    /// Stores every entry queued so far, then stops the writer thread. Idempotent.
    pub(crate) fn stop(&self) {
        drop(self.queue.lock().take());
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `audit.log` can hold frames of the writes that were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leftovers {
    /// At open: frames a refused write put in the file before it failed are read back with the
    /// rest, so each owed entry is matched against one identical entry at or after its time.
    Matched,
    /// While running: they are past the logical end, overwritten by the next append.
    None,
}

/// Moves the entries of `owed` (if the file exists) into `journal` and removes the file; returns
/// how many were appended (see [`Leftovers`] for the ones that are not).
fn move_owed(journal: &Journal, owed: &Path, fsync: bool, leftovers: Leftovers) -> Result<usize> {
    if !owed.exists() {
        return Ok(0);
    }
    let entries = {
        let (_, content) = Journal::open(owed, fsync)?;
        let mut entries = Vec::new();
        // a torn last frame was never durable, so no request waited on it
        journal::read_frames(&content, |p| {
            entries.push(decode(p)?);
            Ok(())
        });
        entries
    };
    let mut appended = 0;
    if let Some(oldest) = entries.iter().map(|e| e.ts).min() {
        let mut held: HashMap<AuditEntry, usize> = HashMap::new();
        if leftovers == Leftovers::Matched {
            let content = journal.read_all()?;
            journal::read_frames(&content, |p| {
                let e = decode(p)?;
                if e.ts >= oldest {
                    *held.entry(e).or_default() += 1;
                }
                Ok(())
            });
        }
        let mut frames = Vec::new();
        for e in entries {
            match held.get_mut(&e) {
                Some(n) if *n > 0 => *n -= 1,
                _ => {
                    frames.extend_from_slice(&encode(e)?);
                    appended += 1;
                }
            }
        }
        if !frames.is_empty() {
            journal.append(&frames)?;
        }
    }
    if let Err(e) = std::fs::remove_file(owed) {
        // Emptied instead, so that a later move does not append its entries again; the open
        // matches them against audit.log if even that fails.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(owed)
            .and_then(|f| f.sync_data())
            .map_err(|_| Error::io(format!("removing {}", owed.display()), e))?;
        return Ok(appended);
    }
    if fsync {
        if let Some(dir) = owed.parent() {
            crate::log::sync_dir(dir)?;
        }
    }
    Ok(appended)
}

/// The writer thread: one write and one flush for everything queued, until the queue closes.
fn write_loop(journal: &Journal, rx: &Receiver<Job>) {
    let mut frames = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        frames.clear();
        for job in &batch {
            frames.extend_from_slice(&job.frame);
        }
        let stored = journal.append(&frames);
        for job in batch {
            (job.done)(match &stored {
                Ok(()) => Ok(()),
                Err(e) => Err(e.for_each_waiter()),
            });
        }
    }
}

/// The frame of one entry.
fn encode(entry: AuditEntry) -> Result<Vec<u8>> {
    let rec = AuditRecord {
        ts: entry.ts,
        who: entry.who,
        action: entry.action,
        subject: entry.subject,
    };
    let bytes = rkyv::to_bytes::<rancor::Error>(&rec).map_err(|e| Error::Io {
        context: "encoding an audit record".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut frame = Vec::with_capacity(bytes.len() + 32);
    journal::encode_frame(&bytes, &mut frame);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(ts: i64, subject: &str) -> AuditEntry {
        AuditEntry {
            ts,
            who: "lab".into(),
            action: "/v1/cases".into(),
            subject: subject.into(),
        }
    }

    #[test]
    fn owed_entries_are_moved_into_the_log_at_open_once() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(dir.path(), true).unwrap();
        log.append(entry(10, "a")).unwrap();
        // "a" was stored by the write that failed; "b" was not; "b" twice: two changes
        log.owe(entry(10, "a")).unwrap();
        log.owe(entry(11, "b")).unwrap();
        log.owe(entry(11, "b")).unwrap();
        assert!(dir.path().join(OWED_FILE).exists());
        assert_eq!(log.since(0).unwrap(), [entry(10, "a")]);
        log.stop();
        drop(log);

        let (log, _) = AuditLog::open(dir.path(), true).unwrap();
        assert_eq!(
            log.since(0).unwrap(),
            [entry(10, "a"), entry(11, "b"), entry(11, "b")]
        );
        assert!(!dir.path().join(OWED_FILE).exists());
        log.append(entry(12, "c")).unwrap();
        log.stop();
        drop(log);
        // nothing is moved twice
        let (log, _) = AuditLog::open(dir.path(), true).unwrap();
        assert_eq!(log.since(11).unwrap().len(), 3);
        // while running: every owed entry is appended (a refused write left nothing that counts)
        assert_eq!(log.settle_owed().unwrap(), 0);
        log.owe(entry(13, "d")).unwrap();
        assert_eq!(log.settle_owed().unwrap(), 1);
        assert!(!dir.path().join(OWED_FILE).exists());
        assert_eq!(log.since(13).unwrap(), [entry(13, "d")]);
    }

    /// An owed entry needs room for its own frame only (no zero-filled step ahead of it, which a
    /// nearly full disk may not have), and a torn frame a failed attempt left is cut off before
    /// the next is written, so that every later entry is read back.
    #[test]
    fn an_owed_entry_takes_the_room_of_its_frame_and_a_torn_one_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(dir.path(), true).unwrap();
        let owed = dir.path().join(OWED_FILE);
        log.owe(entry(10, "a")).unwrap();
        let one = std::fs::metadata(&owed).unwrap().len();
        assert_eq!(one, encode(entry(10, "a")).unwrap().len() as u64);
        // a torn second frame
        let torn = encode(entry(11, "b")).unwrap();
        let mut bytes = std::fs::read(&owed).unwrap();
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&owed, &bytes).unwrap();
        log.owe(entry(12, "c")).unwrap();
        log.append(entry(30, "z")).unwrap();
        assert_eq!(log.settle_owed().unwrap(), 2);
        // moved in after "z", answered by time
        assert_eq!(
            log.since(0).unwrap(),
            [entry(10, "a"), entry(12, "c"), entry(30, "z")]
        );
    }

    /// A move that may have appended some owed entries already (one at open that failed part
    /// way, or one whose removal of the file failed after its append) is followed by one that
    /// matches them against `audit.log`, so that the running retries do not append them again.
    #[test]
    fn after_a_move_that_may_have_appended_the_next_matches_the_owed_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(dir.path(), true).unwrap();
        // "a" is in audit.log and still in the owed file (the file's removal failed), "b" only
        // owed
        log.append(entry(10, "a")).unwrap();
        log.owe(entry(10, "a")).unwrap();
        log.owe(entry(11, "b")).unwrap();
        log.owed_may_be_moved.store(true, Ordering::Release);
        assert_eq!(log.settle_owed().unwrap(), 1);
        assert_eq!(log.since(0).unwrap(), [entry(10, "a"), entry(11, "b")]);
        assert!(!log.owed_may_be_moved.load(Ordering::Acquire));
        // a later move of this process's own refusals appends every entry again
        log.owe(entry(11, "b")).unwrap();
        assert_eq!(log.settle_owed().unwrap(), 1);
        assert_eq!(
            log.since(0).unwrap(),
            [entry(10, "a"), entry(11, "b"), entry(11, "b")]
        );
    }
}
