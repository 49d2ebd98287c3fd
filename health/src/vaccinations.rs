//! Vaccinations (contract section 11): dose records, single, bulk and imported, with a reason for
//! every rejected row; who is fully or partially vaccinated; first-dose coverage by area.
//!
//! (Being built: the skeleton gives the rest of the crate its interface.)

use redb::Database;

use crate::error::Result;

/// The vaccination records and their in-memory indexes.
#[derive(Default)]
pub(crate) struct Vaccinations {}

impl Vaccinations {
    /// Loads the stored doses.
    pub(crate) fn load(_db: &Database) -> Result<Vaccinations> {
        Ok(Vaccinations::default())
    }
}

impl Vaccinations {
    /// Called after areas are registered or re-parented: coverage is recounted on next read.
    pub(crate) fn areas_changed(&self) {}

    /// Distinct persons with a dose whose area is each area or below it. `self_and_ancestors`
    /// maps a dose's area to itself and every area above it.
    pub(crate) fn dose1_by_area(
        &self,
        _self_and_ancestors: &dyn Fn(&str) -> Vec<String>,
    ) -> std::collections::HashMap<String, u64> {
        std::collections::HashMap::new()
    }
}
