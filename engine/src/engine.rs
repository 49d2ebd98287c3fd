//! The public face of the engine: opening a data directory, ingesting, querying, shutting down.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex, RwLock};
use rkyv::util::AlignedVec;
use rustc_hash::FxHashMap;

use crate::audit::AuditLog;
use crate::change::{AppliedScan, ChangeListener, PersonKey, StoreChange, VenueKey};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::index::{EventRec, Index};
use crate::log::{self, BatchRecord, ReadStop, ScanRecord, Segment};
use crate::registry::{self, Registry};
use crate::trace;
use crate::types::*;
use crate::visits;

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
    /// Fault injection for tests of the failure paths: called before every group-commit sync;
    /// an `Err` is treated exactly like a failed `msync`. `None` in production.
    pub sync_fault: Option<SyncFault>,
}

/// See [`Config::sync_fault`].
pub type SyncFault = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

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
            sync_fault: None,
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
    /// Where the time went: (phase, duration), in order.
    pub phases: Vec<(&'static str, Duration)>,
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

/// An observer of group commits.
pub type SyncObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// A handle to an open store. Cheap to clone; all clones share one store. When the last clone is
/// dropped, the engine's threads are stopped after making everything durable.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Keeps live events of one venue flowing to the listeners; see [`Engine::watch_venue`].
pub struct VenueWatch {
    shared: Arc<Shared>,
    venue: u32,
}

impl Drop for VenueWatch {
    fn drop(&mut self) {
        let mut watched = self.shared.watched.lock();
        if let Some(n) = watched.get_mut(&self.venue) {
            *n -= 1;
            if *n == 0 {
                watched.remove(&self.venue);
            }
        }
        self.shared.watched_total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Owns the threads and the directory lock; dropping it stops the threads.
struct Inner {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    _lock: File,
}

/// State shared by the handle and the engine's threads.
struct Shared {
    config: Config,
    registry: RwLock<Registry>,
    index: RwLock<Index>,
    tx: Sender<Msg>,
    sync: SyncQueue,
    listeners: RwLock<Vec<EventListener>>,
    /// Watch counts per venue number ([`Engine::watch_venue`]), and their total for the hot path:
    /// live events are built only for watched venues.
    watched: Mutex<FxHashMap<u32, u32>>,
    watched_total: AtomicUsize,
    observers: RwLock<Vec<SyncObserver>>,
    /// Listeners of stored scans, purges and venue changes ([`Engine::on_change`]); the flag
    /// spares the writer the per-scan notices while there is none.
    change_listeners: RwLock<Vec<ChangeListener>>,
    has_change_listeners: AtomicBool,
    audit: AuditLog,
    report: RecoveryReport,
    /// Live segments, ascending; the last one is the writer's.
    segments: Mutex<Vec<Arc<Segment>>>,
    /// Why the log is poisoned, if it is; `is_poisoned` mirrors it for the hot path.
    poisoned: Mutex<Option<String>>,
    is_poisoned: AtomicBool,
    shutting_down: AtomicBool,
    /// Wakes the ticker early at shutdown.
    ticker_stop: (Mutex<bool>, Condvar),
}

impl Shared {
    /// Why the log refuses to acknowledge, if it does (one atomic load when it does not).
    fn poison_reason(&self) -> Option<String> {
        if !self.is_poisoned.load(Ordering::Acquire) {
            return None;
        }
        self.poisoned.lock().clone()
    }

    /// Poisons the log: nothing more is acknowledged until it is reopened.
    fn poison(&self, reason: String) {
        let mut p = self.poisoned.lock();
        if p.is_none() {
            *p = Some(reason);
        }
        self.is_poisoned.store(true, Ordering::Release);
    }
}

enum Msg {
    Job(Job),
    Stop,
}

struct Job {
    scans: Vec<Validated>,
    outcome: IngestOutcome,
    done: Completion,
}

struct Validated {
    person: String,
    venue: u32,
    ts: u32,
    out: bool,
}

type Done = (Completion, Result<IngestOutcome>);

struct SyncItem {
    segment: Arc<Segment>,
    end: usize,
    done: Vec<Done>,
    events: Vec<ScanEvent>,
    /// Every stored scan of the item, for the change listeners (empty while there is none).
    applied: Vec<AppliedScan>,
}

#[derive(Default)]
struct SyncQueueState {
    items: Vec<SyncItem>,
    stop: bool,
}

#[derive(Default)]
struct SyncQueue {
    state: Mutex<SyncQueueState>,
    cv: Condvar,
}

/// Upper bound of the bytes one scan adds to a record (16-byte scan plus a worst-case new
/// 64-byte person id with its string header).
const MAX_SCAN_RECORD_BYTES: usize = 16 + 64 + 16;
/// Fixed overhead bound of a record (header, rkyv root, padding).
const RECORD_OVERHEAD: usize = 128;
/// How often the ticker expires deadlines.
const TICK: Duration = Duration::from_millis(250);
/// How often the ticker runs a retention pass.
const PURGE_EVERY: Duration = Duration::from_secs(60);

impl Engine {
    /// Opens (or creates) the data directory, replays every segment and rebuilds the indexes.
    /// Takes an exclusive lock on the directory: a second engine on the same directory gets
    /// [`crate::Error::Locked`].
    pub fn open(config: Config) -> Result<Engine> {
        let started = Instant::now();
        let dir = config.data_dir.clone();
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating data directory {}", dir.display()), e))?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("LOCK"))
            .map_err(|e| Error::io(format!("opening {}/LOCK", dir.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(Error::Locked(dir)),
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", dir.display()), e))
            }
        }
        if config.segment_bytes < log::MIN_SEGMENT_BYTES {
            return Err(Error::Io {
                context: format!(
                    "segment size must be at least {} bytes",
                    log::MIN_SEGMENT_BYTES
                ),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        }
        let fsync = config.durability == Durability::Fsync;
        let now = config.clock.now();
        let mut report = RecoveryReport::default();

        let (registry, reg_dropped) = Registry::open(&dir, fsync)?;
        if let Some((bytes, reason)) = reg_dropped {
            tracing::warn!(bytes, %reason, "dropped a damaged tail of venues.log");
            report.dropped.push(DroppedTail {
                path: dir.join("venues.log"),
                offset: 0,
                bytes,
                reason,
            });
        }
        let (audit, audit_dropped) = AuditLog::open(&dir, fsync)?;
        if let Some((bytes, reason)) = audit_dropped {
            tracing::warn!(bytes, %reason, "dropped a damaged tail of audit.log");
            report.dropped.push(DroppedTail {
                path: dir.join("audit.log"),
                offset: 0,
                bytes,
                reason,
            });
        }

        let mut index = Index::new(now, config.recent_events);
        for (n, v) in registry.venues().iter().enumerate() {
            index.set_venue(
                n as u32,
                v.id.clone(),
                v.stay.unwrap_or(config.default_stay_s),
            );
        }
        let cutoff = now - config.retention_days as i64 * 86_400;
        report
            .phases
            .push(("registry and audit", started.elapsed()));
        let recovered =
            recover_segments(&dir, &config, &registry, &mut index, cutoff, &mut report)?;
        let t = Instant::now();
        index.finish_recovery(cutoff, now);
        report.phases.push(("sort, prune, occupancy", t.elapsed()));
        report.scans = index.scans;
        report.venues = registry.len();

        let mut recovered = recovered;
        let writer = match recovered.active.take() {
            Some(active) => {
                WriterState::resume(active, recovered.next_seq, recovered.active_locals)
            }
            None => {
                // A fresh store (or one whose every segment was cut short): start after the
                // highest id still on disk, never on an existing file.
                let id = recovered
                    .segments
                    .iter()
                    .map(|s| s.id + 1)
                    .max()
                    .unwrap_or(1);
                let seg = Arc::new(Segment::create(
                    &dir,
                    id,
                    config.segment_bytes,
                    now,
                    recovered.next_seq,
                )?);
                recovered.segments.push(seg.clone());
                WriterState::resume(
                    Active {
                        segment: seg,
                        offset: log::HEADER_LEN,
                    },
                    recovered.next_seq,
                    Vec::new(),
                )
            }
        };
        report.elapsed = started.elapsed();

        let (tx, rx) = crossbeam_channel::bounded::<Msg>(4096);
        let shared = Arc::new(Shared {
            config,
            registry: RwLock::new(registry),
            index: RwLock::new(index),
            tx,
            sync: SyncQueue::default(),
            listeners: RwLock::new(Vec::new()),
            watched: Mutex::new(FxHashMap::default()),
            watched_total: AtomicUsize::new(0),
            observers: RwLock::new(Vec::new()),
            change_listeners: RwLock::new(Vec::new()),
            has_change_listeners: AtomicBool::new(false),
            audit,
            report,
            segments: Mutex::new(recovered.segments),
            poisoned: Mutex::new(None),
            is_poisoned: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            ticker_stop: (Mutex::new(false), Condvar::new()),
        });

        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(spawn("checkin-writer", move || writer.run(&s, rx))?);
        let s = shared.clone();
        threads.push(spawn("checkin-sync", move || sync_loop(&s))?);
        let s = shared.clone();
        threads.push(spawn("checkin-ticker", move || ticker_loop(&s))?);

        Ok(Engine {
            inner: Arc::new(Inner {
                shared,
                threads: Mutex::new(threads),
                _lock: lock,
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// What recovery found when this engine opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.shared().report
    }

    /// The engine clock's current unix time.
    pub fn now(&self) -> i64 {
        self.shared().config.clock.now()
    }

    /// The settings this engine runs with.
    pub fn config(&self) -> &Config {
        &self.shared().config
    }

    /// Registers or updates venues, all or none, durably. Returns how many were registered.
    pub fn register_venues(&self, specs: Vec<VenueSpec>) -> Result<usize> {
        registry::validate(&specs)?;
        let shared = self.shared();
        if let Some(p) = shared.poison_reason() {
            return Err(Error::Poisoned(p));
        }
        let count = specs.len();
        let mut reg = shared.registry.write();
        let numbers = reg.register(specs)?;
        let now = self.now();
        let mut idx = shared.index.write();
        for n in numbers {
            let Some(v) = reg.get(n) else { continue };
            let stay = v.stay.unwrap_or(shared.config.default_stay_s);
            let old = idx.stays.get(n as usize).copied();
            idx.set_venue(n, v.id.clone(), stay);
            if old.is_some_and(|o| o != stay) {
                for p in idx.occupancy.persons_open_at(n) {
                    idx.recompute_occupancy(p, now);
                }
            }
        }
        drop(idx);
        drop(reg);
        notify(shared, StoreChange::VenuesChanged);
        Ok(count)
    }

    /// A registered venue with its live occupancy; `None` if not registered.
    pub fn venue(&self, id: &str) -> Option<VenueInfo> {
        let shared = self.shared();
        let reg = shared.registry.read();
        let n = reg.find(id)?;
        let v = reg.get(n)?;
        let present = shared.index.read().occupancy.present(n);
        Some(VenueInfo {
            id: v.id.clone(),
            name: v.name.clone(),
            province: v.province.clone(),
            default_stay_s: v.stay.unwrap_or(shared.config.default_stay_s),
            present,
        })
    }

    /// Persons present at a venue now; `None` if the venue is not registered.
    pub fn occupancy(&self, venue: &str) -> Option<u32> {
        let shared = self.shared();
        let n = shared.registry.read().find(venue)?;
        Some(shared.index.read().occupancy.present(n))
    }

    /// The `n` venues with most persons present, ties by id (byte order). When fewer than `n`
    /// venues are occupied, empty venues (by id) fill the list up to `n`.
    pub fn top_occupancy(&self, n: usize) -> Vec<(Arc<str>, u32)> {
        let idx = self.shared().index.read();
        let counts = idx.occupancy.counts();
        let mut all: Vec<(u32, &Arc<str>)> = idx
            .venue_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (counts.get(i).copied().unwrap_or(0), id))
            .collect();
        let order =
            |a: &(u32, &Arc<str>), b: &(u32, &Arc<str>)| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1));
        if n < all.len() {
            all.select_nth_unstable_by(n, order);
            all.truncate(n);
        }
        all.sort_unstable_by(order);
        all.into_iter().map(|(c, id)| (id.clone(), c)).collect()
    }

    /// Validates, stores and indexes a batch, then blocks until the accepted scans are durable.
    pub fn ingest(&self, batch: Vec<ScanItem>) -> Result<IngestOutcome> {
        crate::error::wait_for(|done| self.submit(batch, done))
    }

    /// Like [`Engine::ingest`] without blocking: `done` runs (on an engine thread, or on this one
    /// for an immediate error) once the accepted scans are durable, or with the error that
    /// prevented it. Validation happens on the calling thread.
    pub fn submit(&self, batch: Vec<ScanItem>, done: Completion) {
        let shared = self.shared();
        if shared.shutting_down.load(Ordering::Acquire) {
            return done(Err(Error::ShuttingDown));
        }
        if let Some(p) = shared.poison_reason() {
            return done(Err(Error::Poisoned(p)));
        }
        let now = self.now();
        let oldest = now - shared.config.retention_days as i64 * 86_400;
        let mut outcome = IngestOutcome::default();
        let mut scans = Vec::with_capacity(batch.len());
        {
            let reg = shared.registry.read();
            for (index, item) in batch.into_iter().enumerate() {
                match validate_scan(item, &reg, now, oldest) {
                    Ok(v) => {
                        if v.out {
                            outcome.accepted_out += 1;
                        } else {
                            outcome.accepted_in += 1;
                        }
                        scans.push(v);
                    }
                    Err(reason) => outcome.rejected.push(Rejection { index, reason }),
                }
            }
        }
        let job = Job {
            scans,
            outcome,
            done,
        };
        if let Err(err) = shared.tx.send(Msg::Job(job)) {
            if let Msg::Job(job) = err.into_inner() {
                (job.done)(Err(Error::ShuttingDown));
            }
        }
    }

    /// A person's visits with `start < to` and `end >= from`, unclipped, ascending by start;
    /// `None` if the person has no stored scan.
    pub fn visits(&self, person: &str, from: i64, to: i64) -> Option<Vec<Visit>> {
        let idx = self.shared().index.read();
        let p = idx.person(person)?;
        Some(idx.visits(p, from, to))
    }

    /// Contact trace (contract section 5); `None` if the case person has no stored scan.
    pub fn trace(&self, request: &TraceRequest) -> Option<TraceResult> {
        trace::trace(self.shared().index.read(), request)
    }

    /// Store-wide counts.
    pub fn stats(&self) -> Stats {
        let shared = self.shared();
        let venues = shared.registry.read().len() as u64;
        let log_bytes = shared
            .segments
            .lock()
            .iter()
            .map(|s| s.capacity() as u64)
            .sum();
        let idx = shared.index.read();
        Stats {
            scans: idx.scans,
            venues,
            persons: idx.active_persons,
            log_bytes,
            present: idx.occupancy.total(),
        }
    }

    /// Approximate heap bytes held by the in-memory indexes (benchmarks report it next to RSS).
    pub fn index_heap_bytes(&self) -> usize {
        self.shared().index.read().heap_bytes()
    }

    /// Adds a listener that receives every accepted scan at a watched venue
    /// ([`Engine::watch_venue`]) once it is durable, in `seq` order.
    pub fn subscribe(&self, listener: EventListener) {
        let shared = self.shared();
        shared.listeners.write().push(listener);
    }

    /// Asks for live events of `venue` while the returned guard is held (several guards may watch
    /// one venue). Unwatched venues cost the writer nothing for live events. `None` if the venue
    /// is not registered.
    pub fn watch_venue(&self, venue: &str) -> Option<VenueWatch> {
        let shared = self.shared();
        let n = shared.registry.read().find(venue)?;
        *shared.watched.lock().entry(n).or_insert(0) += 1;
        shared.watched_total.fetch_add(1, Ordering::AcqRel);
        Some(VenueWatch {
            shared: self.inner.shared.clone(),
            venue: n,
        })
    }

    /// The latest `last` accepted scans at `venue` still held in memory, oldest first.
    pub fn recent_events(&self, venue: &str, last: usize) -> Vec<ScanEvent> {
        let shared = self.shared();
        let Some(n) = shared.registry.read().find(venue) else {
            return Vec::new();
        };
        shared.index.read().recent_at(n, last)
    }

    /// Accepted scans at `venue` with `seq > after`, oldest first, and whether the answer is
    /// complete (false when older events than the in-memory window were asked for).
    pub fn events_after(&self, venue: &str, after: u64) -> (Vec<ScanEvent>, bool) {
        let shared = self.shared();
        let Some(n) = shared.registry.read().find(venue) else {
            return (Vec::new(), true);
        };
        shared.index.read().events_after(n, after)
    }

    /// Adds a listener of stored scans (every one, after it is durable and before its request is
    /// acknowledged), purges and venue changes. See [`StoreChange`].
    pub fn on_change(&self, listener: ChangeListener) {
        let shared = self.shared();
        shared.change_listeners.write().push(listener);
        shared.has_change_listeners.store(true, Ordering::Release);
    }

    /// The engine's number for a person id that has ever been stored in this process.
    pub fn person_key(&self, person: &str) -> Option<PersonKey> {
        self.shared()
            .index
            .read()
            .persons
            .find(person)
            .map(PersonKey)
    }

    /// The engine's number for a registered venue.
    pub fn venue_key(&self, venue: &str) -> Option<VenueKey> {
        self.shared().registry.read().find(venue).map(VenueKey)
    }

    /// The longest stay of any registered venue (and the default stay): no single scan changes
    /// a person's visits outside `[ts, ts + max_stay)` of its own time.
    pub fn max_stay_s(&self) -> i64 {
        let shared = self.shared();
        let idx = shared.index.read();
        i64::from(idx.max_stay.max(shared.config.default_stay_s))
    }

    /// Adds an observer of group commits: called with the duration of each sync.
    pub fn on_sync(&self, observer: SyncObserver) {
        self.shared().observers.write().push(observer);
    }

    /// Appends an audit entry and returns once it is durable.
    pub fn audit_append(&self, entry: AuditEntry) -> Result<()> {
        self.shared().audit.append(entry)
    }

    /// Queues an audit entry without blocking; `done` is called once it is durable, or with why
    /// it was not stored (then possibly at once, on this thread). Entries queued together share
    /// one write and one flush.
    pub fn audit_submit(&self, entry: AuditEntry, done: impl FnOnce(Result<()>) + Send + 'static) {
        self.shared().audit.submit(entry, Box::new(done));
    }

    /// Audit entries with `ts >= since`, oldest first.
    pub fn audit_since(&self, since: i64) -> Result<Vec<AuditEntry>> {
        self.shared().audit.since(since)
    }

    /// `Ok` while the log can acknowledge; the poisoning error after a failed sync.
    pub fn health(&self) -> Result<()> {
        match self.shared().poison_reason() {
            Some(p) => Err(Error::Poisoned(p)),
            None => Ok(()),
        }
    }

    /// Makes everything appended so far durable.
    pub fn flush(&self) -> Result<()> {
        self.ingest(Vec::new()).map(|_| ())
    }

    /// Removes whole segments older than the retention period and prunes their index entries.
    /// The ticker thread calls this every minute; tests and operators may call it directly.
    pub fn purge_expired(&self) -> Result<PurgeReport> {
        purge(self.shared())
    }

    /// Stops the engine's threads after making everything durable. Further ingestion fails with
    /// [`crate::Error::ShuttingDown`]. Idempotent.
    pub fn shutdown(&self) -> Result<()> {
        self.inner.stop()
    }
}

impl Inner {
    fn stop(&self) -> Result<()> {
        let mut threads = self.threads.lock();
        if threads.is_empty() {
            return Ok(());
        }
        let shared = &self.shared;
        shared.shutting_down.store(true, Ordering::Release);
        // The writer drains everything queued before Stop, then exits.
        let _ = shared.tx.send(Msg::Stop);
        let mut handles = std::mem::take(&mut *threads).into_iter();
        if let Some(writer) = handles.next() {
            let _ = writer.join();
        }
        {
            let mut st = shared.sync.state.lock();
            st.stop = true;
            shared.sync.cv.notify_all();
        }
        {
            let (lock, cv) = &shared.ticker_stop;
            *lock.lock() = true;
            cv.notify_all();
        }
        for h in handles {
            let _ = h.join();
        }
        shared.audit.stop();
        match shared.poison_reason() {
            Some(p) => Err(Error::Poisoned(p)),
            None => Ok(()),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(error = %e, "engine stopped with an error");
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| Error::io(format!("spawning thread {name}"), e))
}

fn validate_scan(
    item: ScanItem,
    reg: &Registry,
    now: i64,
    oldest: i64,
) -> std::result::Result<Validated, RejectReason> {
    let s = item?;
    if !is_valid_person_id(&s.person) {
        return Err(RejectReason::InvalidPerson);
    }
    if !is_valid_venue_id(&s.venue) {
        return Err(RejectReason::InvalidVenue);
    }
    let venue = reg.find(&s.venue).ok_or(RejectReason::UnknownVenue)?;
    let ts = s.ts.unwrap_or(now);
    if ts < oldest {
        return Err(RejectReason::TooOld);
    }
    if ts > now + FUTURE_SKEW_S {
        return Err(RejectReason::InFuture);
    }
    let ts = u32::try_from(ts).map_err(|_| RejectReason::InvalidTs)?;
    Ok(Validated {
        person: s.person,
        venue,
        ts,
        out: s.action == Action::Out,
    })
}

/// The writer's position in the log.
struct Active {
    segment: Arc<Segment>,
    offset: usize,
}

/// What recovery hands to the writer.
struct Recovered {
    segments: Vec<Arc<Segment>>,
    active: Option<Active>,
    next_seq: u64,
    /// Local person number → global, for the active segment.
    active_locals: Vec<u32>,
}

/// Replays every segment into `index`.
fn recover_segments(
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

/// The writer thread's state: the active segment, its append offset, the next scan sequence
/// number, and the active segment's person dictionary.
struct WriterState {
    active: Active,
    next_seq: u64,
    /// Global person number → local number + 1 in the active segment (0 = not yet in it).
    local_of: Vec<u32>,
    local_count: u32,
    buf: AlignedVec,
    record: BatchRecord,
}

impl WriterState {
    fn resume(active: Active, next_seq: u64, locals: Vec<u32>) -> WriterState {
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

    fn run(mut self, shared: &Shared, rx: Receiver<Msg>) {
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
            let (events, applied) = self.append_chunk(shared, chunk, &mut outcomes);
            let mut done = Vec::new();
            while next_job < dones.len()
                && (last_of_job[next_job] == usize::MAX || last_of_job[next_job] < end)
            {
                if let Some(d) = dones[next_job].take() {
                    done.push((d, Ok(std::mem::take(&mut outcomes[next_job]))));
                }
                next_job += 1;
            }
            let item = SyncItem {
                segment: self.active.segment.clone(),
                end: self.active.offset,
                done,
                events,
                applied,
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
    ) -> (Vec<ScanEvent>, Vec<AppliedScan>) {
        let now = shared.config.clock.now();
        let mut idx = shared.index.write();
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
            let Some(key) = idx.insert(pid, s.venue, s.ts, s.out) else {
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
        let mut stored = Vec::new();
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
            let watched = (shared.watched_total.load(Ordering::Acquire) > 0)
                .then(|| shared.watched.lock().clone());
            if shared.has_change_listeners.load(Ordering::Acquire) {
                stored = applied
                    .iter()
                    .map(|&(pid, key)| AppliedScan {
                        person: PersonKey(pid),
                        venue: VenueKey(visits::key_venue(key)),
                        ts: i64::from(visits::key_ts(key)),
                        out: visits::key_is_out(key),
                    })
                    .collect();
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
        self.record = record;
        (events, stored)
    }
}

/// The sync thread: makes appended ranges durable in groups, then completes the waiters and
/// feeds the live-event listeners, in log order.
fn sync_loop(shared: &Shared) {
    let fsync = shared.config.durability == Durability::Fsync;
    loop {
        let items = {
            let mut st = shared.sync.state.lock();
            while st.items.is_empty() && !st.stop {
                shared.sync.cv.wait(&mut st);
            }
            if st.items.is_empty() && st.stop {
                return;
            }
            std::mem::take(&mut st.items)
        };
        let mut failure: Option<String> = shared.poison_reason();
        if fsync && failure.is_none() {
            let started = Instant::now();
            // Each segment once, up to the furthest end queued for it, in log order.
            let mut ranges: Vec<(&Arc<Segment>, usize)> = Vec::new();
            for item in &items {
                match ranges.last_mut() {
                    Some((seg, end)) if Arc::ptr_eq(seg, &item.segment) => {
                        *end = (*end).max(item.end)
                    }
                    _ => ranges.push((&item.segment, item.end)),
                }
            }
            for (seg, end) in ranges {
                let from = seg.synced.load(Ordering::Acquire);
                if end <= from {
                    continue;
                }
                let synced = match &shared.config.sync_fault {
                    Some(fault) => fault().and_then(|()| seg.map.sync_range(from, end - from)),
                    None => seg.map.sync_range(from, end - from),
                };
                if let Err(e) = synced {
                    let msg = format!("syncing {} failed: {e}", seg.path.display());
                    tracing::error!(%msg, "log poisoned");
                    shared.poison(msg.clone());
                    failure = Some(msg);
                    break;
                }
                seg.synced.store(end, Ordering::Release);
            }
            if failure.is_none() {
                let took = started.elapsed();
                for o in shared.observers.read().iter() {
                    o(took);
                }
            }
        }
        let listeners = shared.listeners.read();
        let change_listeners = shared.change_listeners.read();
        for item in items {
            if failure.is_none() && !item.events.is_empty() {
                for l in listeners.iter() {
                    l(&item.events);
                }
            }
            if failure.is_none() && !item.applied.is_empty() {
                for l in change_listeners.iter() {
                    l(StoreChange::Scans(&item.applied));
                }
            }
            for (done, res) in item.done {
                match &failure {
                    Some(p) => done(Err(Error::Poisoned(p.clone()))),
                    None => done(res),
                }
            }
        }
    }
}

/// The ticker thread: occupancy deadlines every 250 ms, retention every minute.
fn ticker_loop(shared: &Shared) {
    let mut last_purge = Instant::now();
    loop {
        {
            let (lock, cv) = &shared.ticker_stop;
            let mut stopped = lock.lock();
            if !*stopped {
                cv.wait_for(&mut stopped, TICK);
            }
            if *stopped {
                return;
            }
        }
        let now = shared.config.clock.now();
        shared.index.write().tick(now);
        if last_purge.elapsed() >= PURGE_EVERY {
            last_purge = Instant::now();
            if let Err(e) = purge(shared) {
                tracing::error!(error = %e, "retention pass failed");
            }
        }
    }
}

/// Removes whole segments whose every scan is older than the retention period, then prunes the
/// indexes of scans older than it.
fn purge(shared: &Shared) -> Result<PurgeReport> {
    let now = shared.config.clock.now();
    let cutoff = now - shared.config.retention_days as i64 * 86_400;
    let removable: Vec<Arc<Segment>> = {
        let mut segs = shared.segments.lock();
        let keep_from = segs.len().saturating_sub(1);
        let (old, _) = segs.split_at(keep_from);
        let doomed: Vec<Arc<Segment>> = old
            .iter()
            .filter(|s| s.max_ts.load(Ordering::Relaxed) < cutoff)
            .cloned()
            .collect();
        segs.retain(|s| !doomed.iter().any(|d| Arc::ptr_eq(d, s)));
        doomed
    };
    let mut report = PurgeReport::default();
    for seg in &removable {
        fs::remove_file(&seg.path)
            .map_err(|e| Error::io(format!("removing {}", seg.path.display()), e))?;
        report.segments_removed += 1;
        tracing::info!(path = %seg.path.display(), "retention removed a segment");
    }
    if !removable.is_empty() {
        log::sync_dir(&shared.config.data_dir)?;
    }
    report.scans_pruned = shared.index.write().prune_before(cutoff);
    if report.scans_pruned > 0 {
        notify(shared, StoreChange::Purged { cutoff });
    }
    Ok(report)
}

/// Tells every change listener.
fn notify(shared: &Shared, change: StoreChange<'_>) {
    for l in shared.change_listeners.read().iter() {
        l(change);
    }
}
