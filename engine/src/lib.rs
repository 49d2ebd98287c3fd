//! The check-in engine: a durable, memory-mapped scan log with in-memory indexes rebuilt at open,
//! live occupancy, and contact tracing exactly as `CONTRACT.md` sections 2–5 define them.
//!
//! The engine knows nothing of HTTP, JSON or Prometheus. Callers hand it decoded scans
//! ([`ScanItem`]) and get typed answers back; wire formats and metrics live in the `api` crate.
//!
//! Threads: one writer thread owns the log tail and applies batches to the indexes (callers feed it
//! through a crossbeam channel); one sync thread makes appended ranges durable in groups and
//! completes the waiting callers; one ticker thread expires occupancy deadlines every 250 ms and
//! purges data older than the retention period. Readers take a shared lock on the indexes.
#![deny(unsafe_code)]

mod audit;
mod change;
mod clock;
mod engine;
mod error;
mod index;
mod intern;
mod journal;
mod log;
mod mmap;
mod occupancy;
mod registry;
mod trace;
mod types;
mod visits;

pub use change::{AppliedScan, ChangeListener, PersonKey, StoreChange, VenueKey};
pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{
    Completion, Config, DroppedTail, Durability, Engine, EventListener, PurgeReport,
    RecoveryReport, SyncObserver,
};
pub use error::{Error, Result};
pub use log::{decode_record_for_fuzzing, inspect_segment, SegmentSummary};
pub use types::*;
