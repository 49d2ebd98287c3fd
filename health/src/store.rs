//! The health database: an embedded redb file (`health.redb` in the data directory) holding the
//! records that are updated in place. Every write is one ACID transaction committed with
//! `Durability::Immediate` (fsync) before the caller is answered.
//!
//! Values are postcard-encoded serde structs; keys are the records' ids.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::case::Case;
use crate::error::{Error, Result};

const CASES: TableDefinition<&str, &[u8]> = TableDefinition::new("cases");
/// Areas by id (postcard `Area`).
pub(crate) const AREAS: TableDefinition<&str, &[u8]> = TableDefinition::new("areas");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_CASE: &str = "next_case";
/// The number of the last declaration stored (ids are never given twice, even once purged).
pub(crate) const LAST_DECLARATION: &str = "last_declaration";
/// The number of the last notice stored.
pub(crate) const LAST_NOTICE: &str = "last_notice";
/// The last UTC day (unix day number) expired records were purged on (`Health::purge_expired_on_a_new_day`).
const PURGED_DAY: &str = "purged_day";

/// A raw row to write: its table, key and value.
type Row<'a> = (
    TableDefinition<'a, &'static str, &'static [u8]>,
    &'a str,
    &'a [u8],
);

/// The open health database.
pub(crate) struct Store {
    db: Database,
    /// Why the last write failed, until one succeeds ([`Store::write_failure`]).
    failed: parking_lot::Mutex<Option<String>>,
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
        Ok(Store {
            db,
            failed: parking_lot::Mutex::new(None),
        })
    }

    /// Runs a write, noting whether it failed: after an I/O error redb refuses every later
    /// transaction until the database is reopened, which only a restart does.
    fn recorded<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        let r = write();
        *self.failed.lock() = r.as_ref().err().map(ToString::to_string);
        r
    }

    /// Why the last write failed, if it did and none has succeeded since.
    pub(crate) fn write_failure(&self) -> Option<String> {
        self.failed.lock().clone()
    }

    /// The database, for modules that keep tables of their own (each opens its tables in its
    /// own transactions).
    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Every value of a `&str -> postcard` table, in key order (empty if the table was never
    /// written).
    pub(crate) fn all<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>> {
        Ok(self.rows(table)?.into_iter().map(|(_, v)| v).collect())
    }

    /// Every row of a `&str -> postcard` table with its key, in key order (empty if the table was
    /// never written).
    pub(crate) fn rows<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, T)>> {
        self.read(table, Vec::new(), |t| {
            let mut out = Vec::new();
            for row in t.iter().map_err(|e| Error::store("reading a table", e))? {
                let (key, value) = row.map_err(|e| Error::store("reading a row", e))?;
                let key = key.value().to_string();
                let value = postcard::from_bytes(value.value())
                    .map_err(|e| Error::store(&format!("decoding record {key}"), e))?;
                out.push((key, value));
            }
            Ok(out)
        })
    }

    /// The value under `key` in a `&str -> postcard` table, if any.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>> {
        self.read(table, None, |t| {
            let Some(value) = t.get(key).map_err(|e| Error::store("reading a row", e))? else {
                return Ok(None);
            };
            postcard::from_bytes(value.value())
                .map(Some)
                .map_err(|e| Error::store(&format!("decoding record {key}"), e))
        })
    }

    /// Runs `f` over `table` in a read transaction; `absent` when the table was never written.
    fn read<R>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        absent: R,
        f: impl FnOnce(redb::ReadOnlyTable<&str, &[u8]>) -> Result<R>,
    ) -> Result<R> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| Error::store("starting a read", e))?;
        match txn.open_table(table) {
            Ok(t) => f(t),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(absent),
            Err(e) => Err(Error::store("opening a table", e)),
        }
    }

    /// Durably writes `(key, value)` rows into a `&str -> postcard` table, in one transaction.
    pub(crate) fn put_all<'k, T: Serialize + 'k>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        rows: impl IntoIterator<Item = (&'k str, &'k T)>,
    ) -> Result<()> {
        self.recorded(|| {
            let txn = self
                .db
                .begin_write()
                .map_err(|e| Error::store("starting a transaction", e))?;
            {
                let mut t = txn
                    .open_table(table)
                    .map_err(|e| Error::store("opening a table", e))?;
                for (key, value) in rows {
                    let bytes = postcard::to_allocvec(value)
                        .map_err(|e| Error::store("encoding a record", e))?;
                    t.insert(key, bytes.as_slice())
                        .map_err(|e| Error::store("writing a record", e))?;
                }
            }
            txn.commit()
                .map_err(|e| Error::store("committing records", e))
        })
    }

    /// Durably writes `value` under `key` in `table`, and `key` (with no value) in `marks`, in one
    /// transaction.
    pub(crate) fn put_marked<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        marks: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<()> {
        let bytes =
            postcard::to_allocvec(value).map_err(|e| Error::store("encoding a record", e))?;
        self.put_rows(&[(table, key, &bytes), (marks, key, &[])])
    }

    /// Durably writes `value` under `key` in `table`, the meta counter `counter` set to its
    /// number, and `beside` (an encoded row of another table) if any, in one transaction: all or
    /// nothing is stored.
    pub(crate) fn put_numbered<T: Serialize>(
        &self,
        (table, key, value): (TableDefinition<&str, &[u8]>, &str, &T),
        counter: (&'static str, u64),
        beside: Option<Row<'_>>,
    ) -> Result<()> {
        let bytes =
            postcard::to_allocvec(value).map_err(|e| Error::store("encoding a record", e))?;
        let mut rows = vec![(table, key, bytes.as_slice())];
        rows.extend(beside);
        self.put_rows_counted(&rows, Some(counter))
    }

    /// Durably writes raw `(table, key, value)` rows in one transaction.
    fn put_rows(&self, rows: &[Row<'_>]) -> Result<()> {
        self.put_rows_counted(rows, None)
    }

    /// [`Store::put_rows`], and a meta counter set in the same transaction.
    fn put_rows_counted(&self, rows: &[Row<'_>], counter: Option<(&str, u64)>) -> Result<()> {
        self.recorded(|| {
            let txn = self
                .db
                .begin_write()
                .map_err(|e| Error::store("starting a transaction", e))?;
            for &(table, key, value) in rows {
                let mut t = txn
                    .open_table(table)
                    .map_err(|e| Error::store("opening a table", e))?;
                t.insert(key, value)
                    .map_err(|e| Error::store("writing a record", e))?;
            }
            if let Some((name, n)) = counter {
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| Error::store("opening the meta table", e))?;
                meta.insert(name, n)
                    .map_err(|e| Error::store("writing a counter", e))?;
            }
            txn.commit()
                .map_err(|e| Error::store("committing records", e))
        })
    }

    /// A counter of the meta table ([`Store::put_numbered`]); 0 if never written.
    pub(crate) fn counter(&self, name: &str) -> Result<u64> {
        Ok(self.meta(name, "reading a counter")?.unwrap_or(0))
    }

    /// Whether `key` is in `table`.
    pub(crate) fn contains(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<bool> {
        self.read(table, false, |t| {
            Ok(t.get(key)
                .map_err(|e| Error::store("reading a row", e))?
                .is_some())
        })
    }

    /// The keys of a table (none when it does not exist yet).
    pub(crate) fn keys(&self, table: TableDefinition<&str, &[u8]>) -> Result<Vec<String>> {
        self.read(table, Vec::new(), |t| {
            let mut out = Vec::new();
            for row in t.iter().map_err(|e| Error::store("reading a table", e))? {
                let (key, _) = row.map_err(|e| Error::store("reading a row", e))?;
                out.push(key.value().to_string());
            }
            Ok(out)
        })
    }

    /// Durably removes `keys` from a `&str -> postcard` table, in one transaction.
    pub(crate) fn delete_all<'k>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<()> {
        self.recorded(|| {
            let txn = self
                .db
                .begin_write()
                .map_err(|e| Error::store("starting a transaction", e))?;
            {
                let mut t = txn
                    .open_table(table)
                    .map_err(|e| Error::store("opening a table", e))?;
                for key in keys {
                    t.remove(key)
                        .map_err(|e| Error::store("removing a record", e))?;
                }
            }
            txn.commit()
                .map_err(|e| Error::store("committing a removal", e))
        })
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
        self.recorded(|| {
            let bytes =
                postcard::to_allocvec(case).map_err(|e| Error::store("encoding a case", e))?;
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
        })
    }

    /// The last day expired records were purged on (0 before the first purge).
    pub(crate) fn purged_day(&self) -> Result<u64> {
        Ok(self.meta(PURGED_DAY, "reading the purge day")?.unwrap_or(0))
    }

    pub(crate) fn set_purged_day(&self, day: u64) -> Result<()> {
        self.recorded(|| {
            let txn = self
                .db
                .begin_write()
                .map_err(|e| Error::store("starting a transaction", e))?;
            {
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| Error::store("opening the meta table", e))?;
                meta.insert(PURGED_DAY, day)
                    .map_err(|e| Error::store("writing the purge day", e))?;
            }
            txn.commit()
                .map_err(|e| Error::store("committing the purge day", e))
        })
    }

    /// The next number for a server-made case id (1 on a new database).
    pub(crate) fn next_case_number(&self) -> Result<u64> {
        Ok(self
            .meta(NEXT_CASE, "reading the case counter")?
            .unwrap_or(1))
    }

    /// A number of the meta table, `None` if it was never written.
    fn meta(&self, key: &str, what: &'static str) -> Result<Option<u64>> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| Error::store("starting a read", e))?;
        let meta = txn
            .open_table(META)
            .map_err(|e| Error::store("opening the meta table", e))?;
        Ok(meta
            .get(key)
            .map_err(|e| Error::store(what, e))?
            .map(|v| v.value()))
    }
}
