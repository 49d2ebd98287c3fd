//! Change notices for the layers above the store: which scans were stored, and when stored data
//! was purged or venue stays changed.
//!
//! The health domain keeps standing traces current by checking every stored scan against the
//! exposure windows of the counted cases. It needs every stored scan (not only those at watched
//! venues, as the live feed has), in a form that costs the writer almost nothing: the engine's own
//! person and venue numbers, wrapped in [`PersonKey`] and [`VenueKey`], instead of strings.

use std::ops::Deref;
use std::sync::Arc;

/// The engine's number for a person id, stable for the life of the process (and across purges).
/// Resolve one with [`crate::Engine::person_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonKey(pub(crate) u32);

/// The engine's number for a registered venue, stable for the life of the process.
/// Resolve one with [`crate::Engine::venue_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VenueKey(pub(crate) u32);

impl PersonKey {
    /// The raw number, for use as a dense array index.
    pub fn index(self) -> u32 {
        self.0
    }
}

impl VenueKey {
    /// The raw number, for use as a dense array index.
    pub fn index(self) -> u32 {
        self.0
    }
}

/// One scan that was stored (exact duplicates are not reported), already in the indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedScan {
    pub person: PersonKey,
    pub venue: VenueKey,
    pub ts: i64,
    pub out: bool,
}

/// The scans of one appended record, in log order, built once by the writer and shared: a
/// listener that keeps them clones the handle (a reference count), so the sync thread, which
/// runs the listeners before it acknowledges the record, copies nothing.
#[derive(Debug, Clone, Default)]
pub struct StoredScans(Arc<Vec<AppliedScan>>);

impl StoredScans {
    pub(crate) fn new(scans: Vec<AppliedScan>) -> StoredScans {
        StoredScans(Arc::new(scans))
    }
}

impl Deref for StoredScans {
    type Target = [AppliedScan];
    fn deref(&self) -> &[AppliedScan] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a StoredScans {
    type Item = &'a AppliedScan;
    type IntoIter = std::slice::Iter<'a, AppliedScan>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// What changed in the store.
#[derive(Debug, Clone, Copy)]
pub enum StoreChange<'a> {
    /// Scans stored and durable, in log order. Every query started after this notice sees them.
    Scans(&'a StoredScans),
    /// Scans with `ts < cutoff` were removed from the indexes.
    Purged { cutoff: i64 },
    /// A venue was registered or its stay changed: visits at it may have changed.
    VenuesChanged,
}

/// A listener of [`StoreChange`]s. It runs on an engine thread (the sync thread, the ticker, or a
/// venue registration's caller) and must not block.
pub type ChangeListener = Box<dyn Fn(StoreChange<'_>) + Send + Sync>;
