//! The check-in engine: a durable, memory-mapped scan log with in-memory indexes rebuilt at open,
//! live occupancy, and contact tracing exactly as `CONTRACT.md` sections 2–5 define them.
//!
//! The engine knows nothing of HTTP, JSON or Prometheus. Callers hand it decoded scans
//! ([`ScanItem`]) and get typed answers back; wire formats and metrics live in the `api` crate.
//!
//! Threads: one writer thread owns the log tail and applies batches to the indexes (callers feed it
//! through a crossbeam channel; `writer`); one sync thread makes appended ranges durable in groups
//! and completes the waiting callers (`sync`); one ticker thread expires occupancy deadlines every
//! 250 ms (`ticker`) and purges data older than the retention period (`purge`). Readers take a
//! shared lock on the indexes. `engine` is the public [`Engine`] handle; `open` and `recovery`
//! bring a data directory up.
#![deny(unsafe_code)]

mod audit;
mod change;
mod checkpoint;
mod clock;
mod engine;
mod error;
mod hourly;
mod index;
mod intern;
mod journal;
mod live_trace;
mod log;
mod mmap;
mod occupancy;
mod open;
mod purge;
mod recovery;
mod registry;
mod sync;
mod ticker;
mod trace;
mod types;
mod visits;
mod writer;

pub use audit::{AuditDone, AuditForward};
pub use change::{AppliedScan, ChangeListener, PersonKey, StoreChange, StoredScans, VenueKey};
pub use checkpoint::{cut_back, unshare, DurableEnds};
pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{
    Completion, Config, DroppedTail, Durability, Engine, EventListener, ExitListener, PurgeReport,
    RecoveryReport, SyncObserver,
};
pub use error::{Error, Result};
pub use live_trace::{Degree, Listing, ListingChange, LiveChanges, LiveTrace};
pub use log::{decode_record_for_fuzzing, inspect_segment, SegmentSummary};
pub use types::*;
