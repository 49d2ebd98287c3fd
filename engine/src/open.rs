//! Opening a data directory: the directory lock, the venue registry and the audit log, the
//! indexes rebuilt by segment recovery (`recovery`), the writer's starting position, and the
//! writer, sync and ticker threads.

use std::fs::{self, OpenOptions, TryLockError};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, RwLock};
use rustc_hash::FxHashMap;

use crate::audit::AuditLog;
use crate::engine::{Config, DroppedTail, Durability, Inner, RecoveryReport, Shared};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::log::{self, Segment};
use crate::recovery::recover_segments;
use crate::registry::Registry;
use crate::sync::{sync_loop, SyncQueue};
use crate::ticker::ticker_loop;
use crate::writer::{Active, Msg, WriterState};

/// Opens (or creates) the data directory, replays every segment, rebuilds the indexes and
/// starts the engine's threads. Takes an exclusive lock on the directory: a second engine on
/// the same directory gets [`crate::Error::Locked`].
pub(crate) fn open(config: Config) -> Result<Inner> {
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
    let recovered = recover_segments(&dir, &config, &registry, &mut index, cutoff, &mut report)?;
    let t = Instant::now();
    index.finish_recovery(cutoff, now);
    report.phases.push(("sort, prune, occupancy", t.elapsed()));
    report.scans = index.scans;
    report.venues = registry.len();

    let mut recovered = recovered;
    let writer = match recovered.active.take() {
        Some(active) => WriterState::resume(active, recovered.next_seq, recovered.active_locals),
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
    let write_end = writer.position();
    let shared = Arc::new(Shared {
        config,
        registry: RwLock::new(registry),
        index: RwLock::new(index),
        tx,
        sync: SyncQueue::default(),
        listeners: RwLock::new(Vec::new()),
        exit_listeners: RwLock::new(Vec::new()),
        watched: Mutex::new(FxHashMap::default()),
        watched_total: AtomicUsize::new(0),
        observers: RwLock::new(Vec::new()),
        change_listeners: RwLock::new(Vec::new()),
        has_change_listeners: AtomicBool::new(false),
        audit,
        report,
        segments: Mutex::new(recovered.segments),
        write_end: Mutex::new(write_end),
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

    Ok(Inner {
        shared,
        threads: Mutex::new(threads),
        _lock: lock,
    })
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| Error::io(format!("spawning thread {name}"), e))
}
