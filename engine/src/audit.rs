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

use std::path::Path;
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

/// The audit log of a data directory.
pub(crate) struct AuditLog {
    journal: Arc<Journal>,
    /// `None` once stopped: later entries are refused with [`Error::ShuttingDown`].
    queue: Mutex<Option<Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Set once, in cluster mode: every later entry but the local ones goes there instead.
    forward: OnceLock<Arc<dyn AuditForward>>,
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

    /// Sends every later entry to `forward` instead of `audit.log` (but those of
    /// [`AuditLog::submit_local`]); `false` if one was set.
    pub(crate) fn set_forward(&self, forward: Arc<dyn AuditForward>) -> bool {
        self.forward.set(forward).is_ok()
    }

    /// Writes every entry appended so far to disk; returns where the frames end.
    pub(crate) fn sync_to_disk(&self) -> Result<u64> {
        self.journal.sync_to_disk()
    }

    /// Entries of the local `audit.log` with `ts >= since`, oldest first (in append order).
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
