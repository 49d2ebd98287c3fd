//! The health database: an embedded redb file (`health.redb` in the data directory) holding the
//! records that are updated in place. Every write is one ACID transaction committed with
//! `Durability::Immediate` (fsync) before the caller is answered.
//!
//! Values are postcard-encoded serde structs; keys are the records' ids.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::case::Case;
use crate::error::{Error, Result};

const CASES: TableDefinition<&str, &[u8]> = TableDefinition::new("cases");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_CASE: &str = "next_case";

/// The open health database.
pub(crate) struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) `path`. redb recovers a file left by a crash on open.
    pub(crate) fn open(path: &Path) -> Result<Store> {
        let db = Database::create(path)
            .map_err(|e| Error::store(&format!("opening {}", path.display()), e))?;
        let txn = db
            .begin_write()
            .map_err(|e| Error::store("starting a transaction", e))?;
        {
            txn.open_table(CASES)
                .map_err(|e| Error::store("creating the cases table", e))?;
            txn.open_table(META)
                .map_err(|e| Error::store("creating the meta table", e))?;
        }
        txn.commit()
            .map_err(|e| Error::store("committing the tables", e))?;
        Ok(Store { db })
    }

    /// Every stored case.
    pub(crate) fn cases(&self) -> Result<Vec<Case>> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| Error::store("starting a read", e))?;
        let table = txn
            .open_table(CASES)
            .map_err(|e| Error::store("opening the cases table", e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| Error::store("reading cases", e))? {
            let (key, value) = row.map_err(|e| Error::store("reading a case", e))?;
            let case: Case = postcard::from_bytes(value.value())
                .map_err(|e| Error::store(&format!("decoding case {}", key.value()), e))?;
            out.push(case);
        }
        Ok(out)
    }

    /// Durably writes (inserts or replaces) `case`; with `next_case`, also the counter of
    /// server-made ids, in the same transaction.
    pub(crate) fn put_case(&self, case: &Case, next_case: Option<u64>) -> Result<()> {
        let bytes = postcard::to_allocvec(case).map_err(|e| Error::store("encoding a case", e))?;
        let txn = self
            .db
            .begin_write()
            .map_err(|e| Error::store("starting a transaction", e))?;
        {
            let mut table = txn
                .open_table(CASES)
                .map_err(|e| Error::store("opening the cases table", e))?;
            table
                .insert(case.id.as_str(), bytes.as_slice())
                .map_err(|e| Error::store("writing a case", e))?;
            if let Some(n) = next_case {
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| Error::store("opening the meta table", e))?;
                meta.insert(NEXT_CASE, n)
                    .map_err(|e| Error::store("writing the case counter", e))?;
            }
        }
        txn.commit()
            .map_err(|e| Error::store("committing a case", e))
    }

    /// The next number for a server-made case id (1 on a new database).
    pub(crate) fn next_case_number(&self) -> Result<u64> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| Error::store("starting a read", e))?;
        let meta = txn
            .open_table(META)
            .map_err(|e| Error::store("opening the meta table", e))?;
        Ok(meta
            .get(NEXT_CASE)
            .map_err(|e| Error::store("reading the case counter", e))?
            .map_or(1, |v| v.value()))
    }
}
