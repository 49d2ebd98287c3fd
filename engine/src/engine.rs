//! The public face of the engine: opening a data directory, ingesting, querying, shutting down.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::Result;
use crate::types::*;

/// How an acknowledged scan is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledge after `fdatasync`/`msync` of the appended range (group committed): survives
    /// power loss.
    #[default]
    Fsync,
    /// Acknowledge once the scan is in the shared mapping (the OS page cache): survives a crash of
    /// the process, not of the machine.
    Os,
}

/// Settings of an engine instance.
#[derive(Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// Stay of venues that do not name their own (seconds).
    pub default_stay_s: u32,
    pub retention_days: u32,
    /// Capacity of one log segment file, in bytes (preallocated).
    pub segment_bytes: u64,
    /// How many recent accepted scans are kept in memory for live-feed replay.
    pub recent_events: usize,
    pub clock: Arc<dyn Clock>,
}

impl Config {
    /// The defaults: fsync durability, 7200 s stay, 21 days retention, 64 MiB segments.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            durability: Durability::Fsync,
            default_stay_s: DEFAULT_STAY_S,
            retention_days: DEFAULT_RETENTION_DAYS,
            segment_bytes: 64 << 20,
            recent_events: 1 << 20,
            clock: Arc::new(SystemClock),
        }
    }
}

/// A damaged tail that recovery dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTail {
    pub path: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
}

/// What opening the data directory found.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub scans: u64,
    pub venues: usize,
    pub dropped: Vec<DroppedTail>,
    pub elapsed: Duration,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub segments_removed: usize,
    pub scans_pruned: u64,
}

/// A listener for accepted, durable scans. It runs on the engine's sync thread: it must not block.
pub type EventListener = Box<dyn Fn(&[ScanEvent]) + Send + Sync>;
/// A callback completing one submitted batch.
pub type Completion = Box<dyn FnOnce(Result<IngestOutcome>) + Send>;

/// A handle to an open store. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
}

#[allow(unused_variables, clippy::todo)]
impl Engine {
    /// Opens (or creates) the data directory, replays every segment and rebuilds the indexes.
    /// Takes an exclusive lock on the directory: a second engine on the same directory gets
    /// [`crate::Error::Locked`].
    pub fn open(config: Config) -> Result<Engine> {
        let _ = Inner { config };
        todo!()
    }

    /// What recovery found when this engine opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        todo!()
    }

    /// The engine clock's current unix time.
    pub fn now(&self) -> i64 {
        self.inner.config.clock.now()
    }

    /// The settings this engine runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Registers or updates venues, all or none, durably. Returns how many were registered.
    pub fn register_venues(&self, specs: Vec<VenueSpec>) -> Result<usize> {
        todo!()
    }

    /// A registered venue with its live occupancy; `None` if not registered.
    pub fn venue(&self, id: &str) -> Option<VenueInfo> {
        todo!()
    }

    /// Persons present at a venue now; `None` if the venue is not registered.
    pub fn occupancy(&self, venue: &str) -> Option<u32> {
        todo!()
    }

    /// The `n` venues with most persons present, ties by id (byte order). Venues with nobody
    /// present are included only to fill up `n` when fewer are occupied.
    pub fn top_occupancy(&self, n: usize) -> Vec<(Arc<str>, u32)> {
        todo!()
    }

    /// Validates, stores and indexes a batch, then blocks until the accepted scans are durable.
    pub fn ingest(&self, batch: Vec<ScanItem>) -> Result<IngestOutcome> {
        todo!()
    }

    /// Like [`Engine::ingest`] without blocking: `done` runs (on an engine thread) once the
    /// accepted scans are durable, or with the error that prevented it.
    pub fn submit(&self, batch: Vec<ScanItem>, done: Completion) {
        todo!()
    }

    /// A person's visits with `start < to` and `end >= from`, unclipped, ascending by start;
    /// `None` if the person has no stored scan.
    pub fn visits(&self, person: &str, from: i64, to: i64) -> Option<Vec<Visit>> {
        todo!()
    }

    /// Contact trace (contract section 5); `None` if the case person has no stored scan.
    pub fn trace(&self, request: &TraceRequest) -> Option<TraceResult> {
        todo!()
    }

    /// Store-wide counts.
    pub fn stats(&self) -> Stats {
        todo!()
    }

    /// Adds a listener that receives every accepted scan once it is durable, in `seq` order.
    pub fn subscribe(&self, listener: EventListener) {
        todo!()
    }

    /// The latest `last` accepted scans at `venue` still held in memory, oldest first.
    pub fn recent_events(&self, venue: &str, last: usize) -> Vec<ScanEvent> {
        todo!()
    }

    /// Accepted scans at `venue` with `seq > after`, oldest first, and whether the answer is
    /// complete (false when older events than the in-memory window were asked for).
    pub fn events_after(&self, venue: &str, after: u64) -> (Vec<ScanEvent>, bool) {
        todo!()
    }

    /// Adds an observer of group commits: called with the duration of each sync.
    pub fn on_sync(&self, observer: Box<dyn Fn(Duration) + Send + Sync>) {
        todo!()
    }

    /// Appends an audit entry and returns once it is durable.
    pub fn audit_append(&self, entry: AuditEntry) -> Result<()> {
        todo!()
    }

    /// Audit entries with `ts >= since`, oldest first.
    pub fn audit_since(&self, since: i64) -> Result<Vec<AuditEntry>> {
        todo!()
    }

    /// `Ok` while the log can acknowledge; the poisoning error after a failed sync.
    pub fn health(&self) -> Result<()> {
        todo!()
    }

    /// Makes everything appended so far durable.
    pub fn flush(&self) -> Result<()> {
        todo!()
    }

    /// Removes whole segments older than the retention period and prunes their index entries.
    /// The ticker thread calls this periodically; tests and operators may call it directly.
    pub fn purge_expired(&self) -> Result<PurgeReport> {
        todo!()
    }

    /// Stops the engine's threads after making everything durable. Further ingestion fails with
    /// [`crate::Error::ShuttingDown`]. Idempotent.
    pub fn shutdown(&self) -> Result<()> {
        todo!()
    }
}
