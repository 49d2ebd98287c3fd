//! The public face of the engine: opening a data directory, ingesting, querying, shutting down.
//!
//! [`Engine`] is a cheap handle over the state its threads share (`Shared`). The work behind
//! it lives in modules of its own: `open` (the directory lock, the registry and audit log, the
//! threads), `recovery` (replaying the log segments into the indexes), `writer` (the writer
//! thread), `sync` (group commits and completions), `ticker` (occupancy deadlines) and `purge`
//! (retention). This module keeps the public types, the queries, validation on the caller's
//! thread, and shutdown.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex, RwLock};
use rustc_hash::FxHashMap;

use crate::audit::AuditLog;
use crate::change::{ChangeListener, PersonKey, StoreChange, VenueKey};
use crate::checkpoint::DurableEnds;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::live_trace::{LiveChanges, LiveTrace};
use crate::log::Segment;
use crate::open;
use crate::purge::purge;
use crate::registry::{self, Registry};
use crate::sync::SyncQueue;
use crate::trace;
use crate::types::*;
use crate::writer::{Job, Msg, Validated};

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
    /// The scans come from a log that checked their times when it accepted them (a cluster
    /// replica applying the stream): skip the too-old and in-future checks, which this store's
    /// own clock, and its applying them later (a replica rebuilt or catching up), would answer
    /// differently from the node that accepted them. Off by default.
    pub times_checked_upstream: bool,
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
            times_checked_upstream: false,
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
/// A listener for exits the server inferred at watched venues ([`Engine::on_exit`]). It runs on
/// the engine's sync or ticker thread: it must not block.
pub type ExitListener = Box<dyn Fn(&[ExitEvent]) + Send + Sync>;
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
pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) _lock: File,
}

/// State shared by the handle and the engine's threads.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) registry: RwLock<Registry>,
    pub(crate) index: RwLock<Index>,
    pub(crate) tx: Sender<Msg>,
    pub(crate) sync: SyncQueue,
    pub(crate) listeners: RwLock<Vec<EventListener>>,
    /// Listeners of inferred exits at watched venues ([`Engine::on_exit`]).
    pub(crate) exit_listeners: RwLock<Vec<ExitListener>>,
    /// Watch counts per venue number ([`Engine::watch_venue`]), and their total for the hot path:
    /// live events are built only for watched venues.
    pub(crate) watched: Mutex<FxHashMap<u32, u32>>,
    pub(crate) watched_total: AtomicUsize,
    pub(crate) observers: RwLock<Vec<SyncObserver>>,
    /// Listeners of stored scans, purges and venue changes ([`Engine::on_change`]); the flag
    /// spares the writer the per-scan notices while there is none.
    pub(crate) change_listeners: RwLock<Vec<ChangeListener>>,
    pub(crate) has_change_listeners: AtomicBool,
    pub(crate) audit: AuditLog,
    pub(crate) report: RecoveryReport,
    /// Live segments, ascending; the last one is the writer's.
    pub(crate) segments: Mutex<Vec<Arc<Segment>>>,
    /// Where the writer's last record ends: the active segment's id and offset.
    pub(crate) write_end: Mutex<(u64, usize)>,
    /// Why the log is poisoned, if it is; `is_poisoned` mirrors it for the hot path.
    pub(crate) poisoned: Mutex<Option<String>>,
    pub(crate) is_poisoned: AtomicBool,
    pub(crate) shutting_down: AtomicBool,
    /// Wakes the ticker early at shutdown.
    pub(crate) ticker_stop: (Mutex<bool>, Condvar),
}

impl Shared {
    /// Why the log refuses to acknowledge, if it does (one atomic load when it does not).
    pub(crate) fn poison_reason(&self) -> Option<String> {
        if !self.is_poisoned.load(Ordering::Acquire) {
            return None;
        }
        self.poisoned.lock().clone()
    }

    /// Poisons the log: nothing more is acknowledged until it is reopened.
    pub(crate) fn poison(&self, reason: String) {
        let mut p = self.poisoned.lock();
        if p.is_none() {
            *p = Some(reason);
        }
        self.is_poisoned.store(true, Ordering::Release);
    }
}

impl Engine {
    /// Opens (or creates) the data directory, replays every segment and rebuilds the indexes.
    /// Takes an exclusive lock on the directory: a second engine on the same directory gets
    /// [`crate::Error::Locked`].
    pub fn open(config: Config) -> Result<Engine> {
        let inner = open::open(config)?;
        Ok(Engine {
            inner: Arc::new(inner),
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
    /// Checks venue specs as [`Engine::register_venues`] does, registering nothing (a cluster
    /// node checks them before it publishes them; its replica registers them from the stream).
    pub fn validate_venues(specs: &[VenueSpec]) -> Result<()> {
        registry::validate(specs)?;
        Ok(())
    }

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
            if let Some(old) = old.filter(|&o| o != stay) {
                // Open visits there may end sooner or later now, and visits there that a
                // shorter stay had ended may be open again: every in-scan within the longer
                // of the two stays.
                let reach = i64::from(old.max(stay));
                let mut persons = idx.occupancy.persons_open_at(n);
                persons.extend(idx.persons_in_since(n, now - reach));
                persons.sort_unstable();
                persons.dedup();
                for p in persons {
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
    /// The venues with someone present and how many, in no particular order (a cluster shard's
    /// share of `GET /v1/occupancy?top=N`).
    pub fn present_venues(&self) -> Vec<(Arc<str>, u32)> {
        let idx = self.shared().index.read();
        let counts = idx.occupancy.counts();
        idx.venue_ids
            .iter()
            .zip(counts.iter())
            .filter(|(_, &c)| c > 0)
            .map(|(id, &c)| (id.clone(), c))
            .collect()
    }

    /// Every registered venue's id, in no particular order.
    pub fn venue_ids(&self) -> Vec<Arc<str>> {
        self.shared().index.read().venue_ids.clone()
    }

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
        let check_times = !shared.config.times_checked_upstream;
        let mut outcome = IngestOutcome::default();
        let mut scans = Vec::with_capacity(batch.len());
        {
            let reg = shared.registry.read();
            for (index, item) in batch.into_iter().enumerate() {
                match validate_scan(item, &reg, now, oldest, check_times) {
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

    /// One step of a trace whose sources are stored elsewhere (cluster mode: the case's
    /// visits, or its F1s', from their shards): every person of this store, except `exclude`,
    /// exposed `>= threshold` seconds to some source, with the best source. The arithmetic is
    /// [`Engine::trace`]'s, on this store's persons.
    pub fn exposures_to(
        &self,
        sources: &[crate::ExposureSource],
        linger_s: i64,
        threshold: i64,
        exclude: &[&str],
    ) -> Vec<crate::SourcedExposure> {
        let raw: Vec<Vec<crate::visits::RawVisit>> = {
            let registry = self.shared().registry.read();
            sources
                .iter()
                .map(|s| {
                    s.visits
                        .iter()
                        .filter_map(|v| {
                            registry
                                .find(&v.venue)
                                .map(|venue| crate::visits::RawVisit {
                                    venue,
                                    start: v.start,
                                    end: v.end,
                                })
                        })
                        .collect()
                })
                .collect()
        };
        let idx = self.shared().index.read();
        let with_own: Vec<(Option<u32>, Vec<crate::visits::RawVisit>)> = sources
            .iter()
            .zip(raw)
            .map(|(s, r)| (idx.person(&s.person), r))
            .collect();
        let names: Vec<&str> = sources.iter().map(|s| s.person.as_str()).collect();
        let exclude: rustc_hash::FxHashSet<u32> =
            exclude.iter().filter_map(|p| idx.person(p)).collect();
        trace::foreign_exposures(idx, &with_own, &names, linger_s, threshold, &exclude)
    }

    /// Derives a live trace of `request` (always depth 2) now, reporting every listing and
    /// window (see [`LiveTrace`]).
    pub fn live_trace(&self, request: &TraceRequest) -> (LiveTrace, LiveChanges) {
        crate::live_trace::derive(&self.shared().index, self.max_stay_s(), request)
    }

    /// Brings `trace` up to date after scans of `persons` were stored (see [`LiveTrace`]).
    pub fn refresh_live_trace(&self, trace: &mut LiveTrace, persons: &[PersonKey]) -> LiveChanges {
        let mut out = self.refresh_live_traces(&mut [(trace, persons)]);
        out.pop().unwrap_or_default()
    }

    /// [`Engine::refresh_live_trace`] for many traces at once, under one hold of the indexes
    /// (which a waiting writer is let through every couple of milliseconds): one answer per
    /// trace, in order.
    pub fn refresh_live_traces(
        &self,
        work: &mut [(&mut LiveTrace, &[PersonKey])],
    ) -> Vec<LiveChanges> {
        crate::live_trace::refresh_many(&self.shared().index, self.max_stay_s(), work)
    }

    /// Derives `trace` again from scratch (after a purge or a venue change).
    pub fn rederive_live_trace(&self, trace: &mut LiveTrace) -> LiveChanges {
        crate::live_trace::rederive(&self.shared().index, self.max_stay_s(), trace)
    }

    /// Stored scans with `ts > after` (one binary search per person).
    pub fn scans_after(&self, after: i64) -> u64 {
        self.shared().index.read().scans_after(after)
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

    /// Adds a listener of the exits the server infers at watched venues ([`Engine::watch_venue`]):
    /// a visit that reached its deadline, or that a check-in at another venue closed. Exits that
    /// a stored scan causes come after that scan is durable and after its own live event; exits
    /// at a deadline come from the ticker within a second of it.
    pub fn on_exit(&self, listener: ExitListener) {
        self.shared().exit_listeners.write().push(listener);
    }

    /// In-scans stored per hour: the `hours` whole hours before the current one, then the
    /// current hour up to now, oldest first (`hours + 1` counts; hours are UTC hours).
    pub fn checkins_per_hour(&self, hours: u32) -> Vec<u64> {
        let now = self.now();
        self.shared().index.read().ins_per_hour(now, hours)
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

    /// Durably keeps an entry that `audit.log` refused although the change it records was made
    /// (`audit-owed.log`, a file of its own); the next open moves it into `audit.log`. Blocks
    /// for the write and its sync.
    pub fn audit_owe(&self, entry: AuditEntry) -> Result<()> {
        self.shared().audit.owe(entry)
    }

    /// Whether audit entries are owed (kept in `audit-owed.log`, not yet in `audit.log`): after
    /// an open whose move of them was refused, the caller tries [`Engine::audit_settle_owed`]
    /// again while it runs.
    pub fn audit_owed_pending(&self) -> bool {
        self.shared().audit.owed_pending()
    }

    /// Moves the entries [`Engine::audit_owe`] kept into `audit.log` now; returns how many (`0`
    /// when none is owed). Fails while `audit.log` refuses appends; the entries then stay owed
    /// (and the next open moves them).
    pub fn audit_settle_owed(&self) -> Result<usize> {
        self.shared().audit.settle_owed()
    }

    /// Queues an audit entry without blocking; `done` is called once it is durable, or with why
    /// it was not stored (then possibly at once, on this thread). Entries queued together share
    /// one write and one flush.
    pub fn audit_submit(&self, entry: AuditEntry, done: impl FnOnce(Result<()>) + Send + 'static) {
        self.shared().audit.submit(entry, Box::new(done));
    }

    /// Queues an audit entry to this store's own `audit.log` even when a forward is set
    /// ([`Engine::forward_audit`]); otherwise as [`Engine::audit_submit`]. In cluster mode the
    /// store is a cache of the cluster's stream, and its `audit.log` holds the entries the server
    /// derives from that stream.
    pub fn audit_submit_local(
        &self,
        entry: AuditEntry,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        self.shared().audit.submit_local(entry, Box::new(done));
    }

    /// Sends every later audit entry to `forward` instead of this store's `audit.log` (cluster
    /// mode), except those of [`Engine::audit_submit_local`]. Set once; `false` if a forward was
    /// already set.
    pub fn forward_audit(&self, forward: Arc<dyn crate::AuditForward>) -> bool {
        self.shared().audit.set_forward(forward)
    }

    /// Audit entries of this store's own `audit.log` with `ts >= since`, oldest first.
    pub fn audit_since(&self, since: i64) -> Result<Vec<AuditEntry>> {
        self.shared().audit.since(since)
    }

    /// `Ok` while the log can acknowledge; the poisoning error after a failed sync.
    pub fn health(&self) -> Result<()> {
        self.log_health()?;
        let journals = [
            ("audit.log", self.shared().audit.poisoned()),
            ("venues.log", self.shared().registry.read().poisoned()),
        ];
        match journals
            .into_iter()
            .find_map(|(name, p)| p.map(|p| (name, p)))
        {
            Some((name, p)) => Err(Error::Poisoned(format!("{name}: {p}"))),
            None => Ok(()),
        }
    }

    /// [`Engine::health`] of the scan log alone.
    fn log_health(&self) -> Result<()> {
        match self.shared().poison_reason() {
            Some(p) => Err(Error::Poisoned(p)),
            None => Ok(()),
        }
    }

    /// Makes everything appended so far durable.
    pub fn flush(&self) -> Result<()> {
        self.ingest(Vec::new()).map(|_| ())
    }

    /// Makes everything stored so far durable on disk whatever the durability mode (in `Os` mode
    /// nothing else syncs): the scans the writer has taken, the venue registry and the audit log.
    /// Returns where the log and the two journals end then, so that a cluster replica's
    /// checkpoint can cut them back to this point after a crash ([`crate::cut_back`]). The ends match the scans only if nothing is
    /// ingested, registered or audited meanwhile (a replica's follower is the only writer).
    pub fn sync_to_disk(&self) -> Result<DurableEnds> {
        self.flush()?;
        let shared = self.shared();
        let (segment, segment_end) = *shared.write_end.lock();
        let segments = shared.segments.lock().clone();
        let sync_err = |seg: &Segment, e| Error::io(format!("syncing {}", seg.path.display()), e);
        for (i, seg) in segments.iter().enumerate() {
            let len = seg.map.len();
            let active = i + 1 == segments.len();
            if !active && seg.synced.load(Ordering::Acquire) >= len {
                continue;
            }
            seg.map.sync_range(0, len).map_err(|e| sync_err(seg, e))?;
            if !active {
                // A closed segment is never written again.
                seg.synced.store(len, Ordering::Release);
            }
        }
        let venues_log = shared.registry.read().sync_to_disk()?;
        let audit_log = shared.audit.sync_to_disk()?;
        Ok(DurableEnds {
            segment,
            segment_end: segment_end as u64,
            venues_log,
            audit_log,
        })
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

fn validate_scan(
    item: ScanItem,
    reg: &Registry,
    now: i64,
    oldest: i64,
    check_times: bool,
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
    if check_times && ts < oldest {
        return Err(RejectReason::TooOld);
    }
    if check_times && ts > now + FUTURE_SKEW_S {
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

/// Tells every change listener.
pub(crate) fn notify(shared: &Shared, change: StoreChange<'_>) {
    for l in shared.change_listeners.read().iter() {
        l(change);
    }
}
