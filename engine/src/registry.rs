//! The venue registry: venue ids, names, provinces and stays, durable in `venues.log`.
//!
//! Venues get dense numbers in order of first registration; those numbers are what the scan log
//! and the indexes store, so they never change and a venue is never forgotten (venues are not
//! personal data and retention does not apply to them). Re-registering updates name, province
//! and stay by appending a newer frame; the last frame of an id wins at recovery.

use std::path::Path;
use std::sync::Arc;

use compact_str::CompactString;
use rkyv::rancor;
use rustc_hash::FxHashMap;

use crate::error::Result;
use crate::journal::{self, Journal};
use crate::types::{is_valid_venue_id, VenueSpec, VenueSpecError, MAX_STAY_S, MAX_VENUE_TEXT};

/// One registration as stored.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct VenueRecord {
    pub id: String,
    pub name: String,
    pub province: Option<String>,
    pub stay: Option<u32>,
}

/// A venue in memory.
#[derive(Debug, Clone)]
pub(crate) struct Venue {
    pub id: Arc<str>,
    pub name: String,
    pub province: Option<String>,
    pub stay: Option<u32>,
}

/// All registered venues.
pub(crate) struct Registry {
    journal: Journal,
    /// Keyed by an inline copy of the id (ids of up to 24 bytes live in the table itself): a
    /// lookup, one per scan stored, then compares without following a pointer elsewhere in
    /// memory, which at 100 k venues missed the cache on every scan.
    by_id: FxHashMap<CompactString, u32>,
    venues: Vec<Venue>,
}

/// Checks a whole registration request; the first invalid venue refuses it.
pub(crate) fn validate(specs: &[VenueSpec]) -> std::result::Result<(), VenueSpecError> {
    for (index, s) in specs.iter().enumerate() {
        if !is_valid_venue_id(&s.id) {
            return Err(VenueSpecError::InvalidId { index });
        }
        if s.name.is_empty() || s.name.len() > MAX_VENUE_TEXT {
            return Err(VenueSpecError::InvalidName { index });
        }
        if s.province
            .as_ref()
            .is_some_and(|p| p.len() > MAX_VENUE_TEXT)
        {
            return Err(VenueSpecError::InvalidProvince { index });
        }
        if s.default_stay_s.is_some_and(|d| d == 0 || d > MAX_STAY_S) {
            return Err(VenueSpecError::InvalidStay { index });
        }
    }
    Ok(())
}

impl Registry {
    /// Why its journal refuses every append until reopened, if it does.
    pub(crate) fn poisoned(&self) -> Option<String> {
        self.journal.poisoned()
    }

    /// Opens `venues.log` in `dir`, replaying every intact frame. Returns the registry and a
    /// description of a dropped damaged tail, if any.
    pub(crate) fn open(dir: &Path, fsync: bool) -> Result<(Registry, Option<(u64, String)>)> {
        let (journal, content) = Journal::open(&dir.join("venues.log"), fsync)?;
        let mut reg = Registry {
            journal,
            by_id: FxHashMap::default(),
            venues: Vec::new(),
        };
        let mut records = Vec::new();
        let (end, damage) = journal::read_frames(&content, |payload| {
            let rec = rkyv::from_bytes::<VenueRecord, rancor::Error>(payload)
                .map_err(|e| format!("venue frame does not validate: {e}"))?;
            records.push(rec);
            Ok(())
        });
        for rec in records {
            reg.apply(rec);
        }
        let dropped = reg.journal.settle(content.len(), end, damage)?;
        Ok((reg, dropped))
    }

    fn apply(&mut self, rec: VenueRecord) -> u32 {
        if let Some(&n) = self.by_id.get(rec.id.as_str()) {
            let v = &mut self.venues[n as usize];
            v.name = rec.name;
            v.province = rec.province;
            v.stay = rec.stay;
            return n;
        }
        let n = self.venues.len() as u32;
        let id: Arc<str> = Arc::from(rec.id.as_str());
        self.by_id.insert(CompactString::from(rec.id.as_str()), n);
        self.venues.push(Venue {
            id,
            name: rec.name,
            province: rec.province,
            stay: rec.stay,
        });
        n
    }

    /// Durably registers already-validated specs; returns their numbers.
    pub(crate) fn register(&mut self, specs: Vec<VenueSpec>) -> Result<Vec<u32>> {
        let mut frames = Vec::new();
        let records: Vec<VenueRecord> = specs
            .into_iter()
            .map(|s| VenueRecord {
                id: s.id,
                name: s.name,
                province: s.province,
                stay: s.default_stay_s,
            })
            .collect();
        for rec in &records {
            let bytes = rkyv::to_bytes::<rancor::Error>(rec).map_err(|e| crate::Error::Io {
                context: "encoding a venue record".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
            journal::encode_frame(&bytes, &mut frames);
        }
        self.journal.append(&frames)?;
        Ok(records.into_iter().map(|r| self.apply(r)).collect())
    }

    /// Writes every registration appended so far to disk; returns where the frames end.
    pub(crate) fn sync_to_disk(&self) -> Result<u64> {
        self.journal.sync_to_disk()
    }

    pub(crate) fn find(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    pub(crate) fn get(&self, n: u32) -> Option<&Venue> {
        self.venues.get(n as usize)
    }

    pub(crate) fn len(&self) -> usize {
        self.venues.len()
    }

    pub(crate) fn venues(&self) -> &[Venue] {
        &self.venues
    }
}
