//! Vaccinations (contract section 11): dose records, single, bulk and imported, with a reason for
//! every rejected row; who is fully or partially vaccinated; first-dose coverage by area.
//!
//! Doses live in the dose log beside the health database (`dose_log`: an append-only file, one
//! checksummed frame per request, synced before the request is answered, however many rows it
//! holds); a rejected row stores nothing, an exact duplicate (of a stored dose or of an earlier
//! row of the same request) is accepted and stored once, and the same dose number with any other
//! field is a `conflict`. Stores written before the log kept the doses in the health database's
//! `vaccination_doses` table (a row per `(person, dose number)`, postcard values): the first open
//! moves them into the log, syncs it, then drops the table (a crash in between leaves rows in
//! both, read once).
//!
//! Everything the lookups need is kept in memory and rebuilt at open: each person's doses
//! (ascending by number, at most ten), the fully-vaccinated times of all persons (for the
//! summary "as of now"), and how many persons have each distinct set of dose areas (for
//! `dose1_by_area`, which walks each set's areas and their ancestors once, so its cost is the
//! number of distinct sets, not of persons). Vaccine codes and area ids are interned.
//!
//! Writes are serialized by one mutex, which holds the log (the check for conflicts and the
//! store are atomic); readers take the state's read lock only.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::areas::Areas;
use crate::dose_log::{DoseLog, LoggedDose};
use crate::error::{Error, Result};

/// Doses of stores written before the dose log, by `(person, dose number)`; values are postcard
/// [`StoredDose`]s. Read (and dropped) once, at the first open.
const DOSES: TableDefinition<(&str, u8), &[u8]> = TableDefinition::new("vaccination_doses");

/// The earliest accepted `administered_at`: 2020-12-01T00:00:00Z.
pub const MIN_ADMINISTERED_AT: i64 = 1_606_780_800;
/// Highest dose number.
pub const MAX_DOSE: u8 = 10;
/// Longest `lot` or `site`, in bytes (longer is `invalid_row`).
pub const MAX_DOSE_TEXT_BYTES: usize = 256;

/// A vaccine the server accepts (`docs/vaccines.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vaccine {
    /// The code sent in `vaccine` (the EU DCC `mp` value where one exists).
    pub code: &'static str,
    /// The product's name.
    pub name: &'static str,
    /// One dose completes the primary series.
    pub single_dose: bool,
}

/// Every accepted vaccine, in the order of `docs/vaccines.md`.
pub const VACCINES: &[Vaccine] = &[
    Vaccine {
        code: "EU/1/20/1528",
        name: "Comirnaty (Pfizer-BioNTech)",
        single_dose: false,
    },
    Vaccine {
        code: "EU/1/20/1507",
        name: "Spikevax (Moderna)",
        single_dose: false,
    },
    Vaccine {
        code: "EU/1/21/1529",
        name: "Vaxzevria (AstraZeneca)",
        single_dose: false,
    },
    Vaccine {
        code: "EU/1/20/1525",
        name: "Jcovden (Janssen)",
        single_dose: true,
    },
    Vaccine {
        code: "BBIBP-CorV",
        name: "Covilo (Sinopharm Vero Cell)",
        single_dose: false,
    },
    Vaccine {
        code: "CoronaVac",
        name: "CoronaVac (Sinovac)",
        single_dose: false,
    },
    Vaccine {
        code: "Covaxin",
        name: "Covaxin (Bharat Biotech)",
        single_dose: false,
    },
    Vaccine {
        code: "Sputnik-V",
        name: "Sputnik V (Gamaleya)",
        single_dose: false,
    },
    Vaccine {
        code: "Abdala",
        name: "Abdala (CIGB)",
        single_dose: false,
    },
    Vaccine {
        code: "Hayat-Vax",
        name: "Hayat-Vax (Gulf Pharmaceutical Industries, Sinopharm)",
        single_dose: false,
    },
];

/// The accepted vaccine with this code (exact, case-sensitive).
pub fn vaccine(code: &str) -> Option<&'static Vaccine> {
    VACCINES.iter().find(|v| v.code == code)
}

fn is_single_dose(code: &str) -> bool {
    vaccine(code).is_some_and(|v| v.single_dose)
}

/// Why a dose record was not accepted. The names are the contract's reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DoseReject {
    InvalidPerson,
    InvalidDose,
    UnknownVaccine,
    InvalidTs,
    InFuture,
    UnknownArea,
    Conflict,
    InvalidRow,
}

impl DoseReject {
    /// Every reason, in a stable order (for metrics that pre-create their series).
    pub const ALL: [DoseReject; 8] = [
        DoseReject::InvalidPerson,
        DoseReject::InvalidDose,
        DoseReject::UnknownVaccine,
        DoseReject::InvalidTs,
        DoseReject::InFuture,
        DoseReject::UnknownArea,
        DoseReject::Conflict,
        DoseReject::InvalidRow,
    ];

    /// The contract's reason code.
    pub fn code(self) -> &'static str {
        match self {
            DoseReject::InvalidPerson => "invalid_person",
            DoseReject::InvalidDose => "invalid_dose",
            DoseReject::UnknownVaccine => "unknown_vaccine",
            DoseReject::InvalidTs => "invalid_ts",
            DoseReject::InFuture => "in_future",
            DoseReject::UnknownArea => "unknown_area",
            DoseReject::Conflict => "conflict",
            DoseReject::InvalidRow => "invalid_row",
        }
    }

    /// The reason with this code.
    pub fn parse(code: &str) -> Option<DoseReject> {
        DoseReject::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for DoseReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One dose record as a client sent it, after its JSON or CSV types were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoseInput {
    pub person: String,
    pub dose: i64,
    pub vaccine: String,
    pub administered_at: i64,
    pub lot: Option<String>,
    pub site: Option<String>,
    pub area: Option<String>,
}

/// One record of a request: a dose to check, or one the caller already rejected while decoding
/// it (a field of the wrong type, a CSV row of the wrong length). Indexes in
/// [`DoseOutcome::rejected`] are positions in the request, so callers can mix both.
pub type DoseItem = Result<DoseInput, DoseReject>;

/// What became of a request once its accepted doses are durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoseOutcome {
    /// Accepted records, exact duplicates included.
    pub accepted: u32,
    /// Rejected records by index, ascending.
    pub rejected: Vec<(usize, DoseReject)>,
}

/// A stored dose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dose {
    pub person: String,
    pub dose: u8,
    pub vaccine: String,
    pub administered_at: i64,
    pub lot: Option<String>,
    pub site: Option<String>,
    pub area: Option<String>,
}

/// The value of a row of [`DOSES`].
#[derive(Debug, Serialize, Deserialize)]
struct StoredDose {
    vaccine: String,
    administered_at: i64,
    lot: Option<String>,
    site: Option<String>,
    area: Option<String>,
}

/// [`StoredDose`] borrowed (postcard encodes both alike; the tests write old tables with it).
#[derive(Serialize)]
struct StoredDoseRef<'a> {
    vaccine: &'a str,
    administered_at: i64,
    lot: Option<&'a str>,
    site: Option<&'a str>,
    area: Option<&'a str>,
}

/// A dose in memory.
#[derive(Debug, Clone)]
struct Rec {
    dose: u8,
    vaccine: Arc<str>,
    administered_at: i64,
    lot: Option<Box<str>>,
    site: Option<Box<str>>,
    area: Option<Arc<str>>,
}

/// A record that passed every check but the conflict check: what would be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    person: String,
    dose: u8,
    vaccine: &'static str,
    administered_at: i64,
    lot: Option<String>,
    site: Option<String>,
    area: Option<String>,
}

impl StoredDose {
    fn borrowed(&self) -> StoredDoseRef<'_> {
        StoredDoseRef {
            vaccine: &self.vaccine,
            administered_at: self.administered_at,
            lot: self.lot.as_deref(),
            site: self.site.as_deref(),
            area: self.area.as_deref(),
        }
    }
}

impl Candidate {
    fn logged(&self) -> LoggedDose<'_> {
        LoggedDose {
            person: &self.person,
            dose: self.dose,
            vaccine: self.vaccine,
            administered_at: self.administered_at,
            lot: self.lot.as_deref(),
            site: self.site.as_deref(),
            area: self.area.as_deref(),
        }
    }
}

impl Rec {
    fn same_as(&self, d: &StoredDoseRef<'_>) -> bool {
        &*self.vaccine == d.vaccine
            && self.administered_at == d.administered_at
            && self.lot.as_deref() == d.lot
            && self.site.as_deref() == d.site
            && self.area.as_deref() == d.area
    }

    fn matches(&self, c: &Candidate) -> bool {
        &*self.vaccine == c.vaccine
            && self.administered_at == c.administered_at
            && self.lot.as_deref() == c.lot.as_deref()
            && self.site.as_deref() == c.site.as_deref()
            && self.area.as_deref() == c.area.as_deref()
    }
}

/// An empty text means absent (a CSV's empty cell and a JSON `""` are the same record).
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl Candidate {
    /// The contract's rules, in the documented order: person, dose, vaccine, time, area, then
    /// the lengths of `lot` and `site`.
    fn check(d: DoseInput, now: i64, areas: &Areas) -> Result<Candidate, DoseReject> {
        if !engine::is_valid_person_id(&d.person) {
            return Err(DoseReject::InvalidPerson);
        }
        let dose = match u8::try_from(d.dose) {
            Ok(n) if (1..=MAX_DOSE).contains(&n) => n,
            _ => return Err(DoseReject::InvalidDose),
        };
        let vaccine = vaccine(&d.vaccine).ok_or(DoseReject::UnknownVaccine)?.code;
        if d.administered_at < MIN_ADMINISTERED_AT {
            return Err(DoseReject::InvalidTs);
        }
        if d.administered_at > now.saturating_add(engine::FUTURE_SKEW_S) {
            return Err(DoseReject::InFuture);
        }
        let area = non_empty(d.area);
        if let Some(a) = &area {
            if !areas.contains(a) {
                return Err(DoseReject::UnknownArea);
            }
        }
        let lot = non_empty(d.lot);
        let site = non_empty(d.site);
        if [&lot, &site]
            .iter()
            .any(|t| t.as_ref().is_some_and(|t| t.len() > MAX_DOSE_TEXT_BYTES))
        {
            return Err(DoseReject::InvalidRow);
        }
        Ok(Candidate {
            person: d.person,
            dose,
            vaccine,
            administered_at: d.administered_at,
            lot,
            site,
            area,
        })
    }
}

/// The in-memory indexes.
#[derive(Default)]
struct State {
    /// Each person's doses, ascending by number.
    persons: FxHashMap<Arc<str>, Vec<Rec>>,
    /// How many persons became fully vaccinated at each time.
    full_times: BTreeMap<i64, u64>,
    /// Persons with a fully-vaccinated time.
    fully: u64,
    /// How many persons have each distinct (sorted) set of dose areas; persons whose doses name
    /// no area are not counted.
    area_sets: FxHashMap<Box<[Arc<str>]>, u64>,
    /// Interned vaccine codes and area ids.
    pool: FxHashSet<Arc<str>>,
    doses: u64,
}

/// The earliest `administered_at` of a dose numbered 2 or higher, or of a single-dose vaccine.
fn full_at<'a>(recs: impl IntoIterator<Item = &'a Rec>) -> Option<i64> {
    recs.into_iter()
        .filter(|r| r.dose >= 2 || is_single_dose(&r.vaccine))
        .map(|r| r.administered_at)
        .min()
}

fn area_set<'a>(recs: impl IntoIterator<Item = &'a Rec>) -> Box<[Arc<str>]> {
    let mut set: Vec<Arc<str>> = recs.into_iter().filter_map(|r| r.area.clone()).collect();
    set.sort();
    set.dedup();
    set.into_boxed_slice()
}

impl State {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.pool.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.pool.insert(a.clone());
        a
    }

    /// Adds a dose not stored before (its `(person, dose)` is new).
    fn add(&mut self, person: &str, dose: u8, d: &StoredDoseRef<'_>) {
        let rec = Rec {
            dose,
            vaccine: self.intern(d.vaccine),
            administered_at: d.administered_at,
            lot: d.lot.map(Box::from),
            site: d.site.map(Box::from),
            area: d.area.map(|a| self.intern(a)),
        };
        let (before_full, before_set) = match self.persons.get(person) {
            Some(recs) => (full_at(recs), area_set(recs)),
            None => (None, Box::default()),
        };
        if !self.persons.contains_key(person) {
            self.persons.insert(Arc::from(person), Vec::new());
        }
        let Some(recs) = self.persons.get_mut(person) else {
            return;
        };
        match recs.binary_search_by_key(&dose, |r| r.dose) {
            Ok(i) => recs[i] = rec,
            Err(i) => {
                recs.insert(i, rec);
                self.doses += 1;
            }
        }
        let (after_full, after_set) = (full_at(&*recs), area_set(&*recs));
        if before_full != after_full {
            if let Some(t) = before_full {
                self.untime(t);
            }
            if let Some(t) = after_full {
                *self.full_times.entry(t).or_default() += 1;
                self.fully += 1;
            }
        }
        if before_set != after_set {
            if !before_set.is_empty() {
                if let Some(n) = self.area_sets.get_mut(&before_set) {
                    *n -= 1;
                    if *n == 0 {
                        self.area_sets.remove(&before_set);
                    }
                }
            }
            if !after_set.is_empty() {
                *self.area_sets.entry(after_set).or_default() += 1;
            }
        }
    }

    fn untime(&mut self, t: i64) {
        if let Some(n) = self.full_times.get_mut(&t) {
            *n -= 1;
            if *n == 0 {
                self.full_times.remove(&t);
            }
            self.fully -= 1;
        }
    }

    fn find(&self, person: &str, dose: u8) -> Option<&Rec> {
        let recs = self.persons.get(person)?;
        recs.binary_search_by_key(&dose, |r| r.dose)
            .ok()
            .map(|i| &recs[i])
    }
}

/// The vaccination records and their in-memory indexes.
pub(crate) struct Vaccinations {
    state: RwLock<State>,
    /// Serializes writes (the conflict check and the store are one step), and the log they go to.
    writes: Mutex<DoseLog>,
    /// `dose1_by_area`'s last answer; cleared (under the state's write lock) by every write and
    /// by `areas_changed`.
    by_area: Mutex<Option<HashMap<String, u64>>>,
}

/// Doses moved from the old table into the log per frame.
const MIGRATE_FRAME: usize = 100_000;

impl Vaccinations {
    /// Why doses cannot be stored until a restart, if that is so (a write of the dose log
    /// failed). A write in progress holds the log: it is not looked at then.
    pub(crate) fn write_failure(&self) -> Option<String> {
        let log = self.writes.try_lock()?;
        log.has_failed().then(|| {
            "a write of the dose log failed; doses are refused until a restart".to_string()
        })
    }

    /// Loads the stored doses: those of the log at `log_path` (created if absent), then those
    /// of the old `vaccination_doses` table of `db`, if a store written before the log has one;
    /// those are appended to the log (synced) before the table is dropped.
    pub(crate) fn load(db: &Database, log_path: &std::path::Path) -> Result<Vaccinations> {
        let mut st = State::default();
        let mut log = DoseLog::open(log_path, |d| st.add(d.person, d.dose, &d.fields()))?;
        Self::migrate(db, &mut st, &mut log)?;
        tracing::info!(
            doses = st.doses,
            persons = st.persons.len(),
            "vaccinations loaded"
        );
        Ok(Vaccinations {
            state: RwLock::new(st),
            writes: Mutex::new(log),
            by_area: Mutex::new(None),
        })
    }

    /// Moves the rows of the old doses table into the log, then drops the table.
    fn migrate(db: &Database, st: &mut State, log: &mut DoseLog) -> Result<()> {
        let txn = db
            .begin_read()
            .map_err(|e| Error::store("starting a read", e))?;
        let table = match txn.open_table(DOSES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(Error::store("opening the doses table", e)),
        };
        // rows not in the log yet (all of them, unless a move was cut short before), appended
        // a frame at a time
        let mut moved: Vec<(String, u8, StoredDose)> = Vec::new();
        let (mut rows, mut appended): (u64, u64) = (0, 0);
        let mut flush = |moved: &mut Vec<(String, u8, StoredDose)>| -> Result<()> {
            log.append(moved.iter().map(|(person, dose, d)| LoggedDose {
                person,
                dose: *dose,
                vaccine: &d.vaccine,
                administered_at: d.administered_at,
                lot: d.lot.as_deref(),
                site: d.site.as_deref(),
                area: d.area.as_deref(),
            }))?;
            appended += moved.len() as u64;
            moved.clear();
            Ok(())
        };
        for row in table.iter().map_err(|e| Error::store("reading doses", e))? {
            let (key, value) = row.map_err(|e| Error::store("reading a dose", e))?;
            let (person, dose) = key.value();
            let d: StoredDose = postcard::from_bytes(value.value()).map_err(|e| {
                Error::store(&format!("decoding dose {dose} of person {person}"), e)
            })?;
            rows += 1;
            if st
                .find(person, dose)
                .is_some_and(|r| r.same_as(&d.borrowed()))
            {
                continue;
            }
            st.add(person, dose, &d.borrowed());
            moved.push((person.to_owned(), dose, d));
            if moved.len() == MIGRATE_FRAME {
                flush(&mut moved)?;
            }
        }
        flush(&mut moved)?;
        drop(table);
        drop(txn);
        let txn = db
            .begin_write()
            .map_err(|e| Error::store("starting a transaction", e))?;
        txn.delete_table(DOSES)
            .map_err(|e| Error::store("dropping the old doses table", e))?;
        txn.commit()
            .map_err(|e| Error::store("committing the drop of the old doses table", e))?;
        tracing::info!(
            rows,
            moved = appended,
            "doses moved from the health database into the dose log"
        );
        Ok(())
    }
}

impl LoggedDose<'_> {
    fn fields(&self) -> StoredDoseRef<'_> {
        StoredDoseRef {
            vaccine: self.vaccine,
            administered_at: self.administered_at,
            lot: self.lot,
            site: self.site,
            area: self.area,
        }
    }
}

impl Vaccinations {
    /// Called after areas are registered or re-parented: coverage is recounted on next read.
    pub(crate) fn areas_changed(&self) {
        *self.by_area.lock() = None;
    }

    /// Distinct persons with a dose whose area is each area or below it. `self_and_ancestors`
    /// maps a dose's area to itself and every area above it.
    pub(crate) fn dose1_by_area(
        &self,
        self_and_ancestors: &dyn Fn(&str) -> Vec<String>,
    ) -> HashMap<String, u64> {
        let st = self.state.read();
        let mut cache = self.by_area.lock();
        if let Some(map) = &*cache {
            return map.clone();
        }
        let mut map: HashMap<String, u64> = HashMap::new();
        let mut closure: Vec<String> = Vec::new();
        for (set, &n) in &st.area_sets {
            closure.clear();
            for a in set.iter() {
                closure.extend(self_and_ancestors(a));
            }
            closure.sort();
            closure.dedup();
            for a in closure.drain(..) {
                *map.entry(a).or_default() += n;
            }
        }
        *cache = Some(map.clone());
        map
    }
}

/// Requests of fewer records are checked on the calling thread alone.
const PARALLEL_CHECK_MIN: usize = 4_096;
/// Most threads that check one request's records.
const MAX_CHECK_THREADS: usize = 4;
/// Persons installed per hold of the state's write lock: bounds how long a reader waits.
const INSTALL_SLICE: usize = 4_096;

/// Checks every item (the contract's field rules; not conflicts), in order, on up to
/// [`MAX_CHECK_THREADS`] threads for a large request.
fn check_all(
    items: Vec<DoseItem>,
    now: i64,
    areas: &RwLock<Areas>,
) -> Vec<Result<Candidate, DoseReject>> {
    let check_chunk = |chunk: Vec<DoseItem>| -> Vec<Result<Candidate, DoseReject>> {
        let areas = areas.read();
        chunk
            .into_iter()
            .map(|item| item.and_then(|d| Candidate::check(d, now, &areas)))
            .collect()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_CHECK_THREADS);
    if items.len() < PARALLEL_CHECK_MIN || threads == 1 {
        return check_chunk(items);
    }
    let check_chunk = &check_chunk;
    let per = items.len().div_ceil(threads);
    let mut items = items;
    let mut chunks: Vec<Vec<DoseItem>> = Vec::with_capacity(threads);
    while items.len() > per {
        let rest = items.split_off(per);
        chunks.push(std::mem::replace(&mut items, rest));
    }
    let last = items;
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || check_chunk(chunk)))
            .collect();
        let mine = check_chunk(last);
        let mut out = Vec::with_capacity(per * (handles.len() + 1));
        for handle in handles {
            match handle.join() {
                Ok(part) => out.extend(part),
                // a check panicked: carry the panic to the caller, as on one thread
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out.extend(mine);
        out
    })
}

/// A person's sorted, distinct dose areas.
type AreaSet = Box<[Arc<str>]>;

/// One person's new doses, prepared outside the state's write lock: what [`State::install`]
/// does to the indexes, worked out beforehand.
struct PersonUpdate {
    /// The map's key if the person has doses already, else a new one.
    person: Arc<str>,
    /// New doses, ascending by number, none of whose numbers is stored.
    recs: Vec<Rec>,
    full: (Option<i64>, Option<i64>),
    /// The area sets before and after, when they differ.
    sets: Option<(AreaSet, AreaSet)>,
}

/// Everything a request adds to the in-memory indexes.
struct Prepared {
    updates: Vec<PersonUpdate>,
    /// Vaccine codes and area ids not interned yet.
    interned: Vec<Arc<str>>,
}

impl State {
    /// Prepares the indexes' change for `fresh` (candidates whose `(person, dose)` is new and
    /// distinct, in ascending `(person, dose)` order), taking their texts. Needs only a read
    /// lock.
    fn prepare(&self, fresh: Vec<Candidate>) -> Prepared {
        let mut new_pool: FxHashSet<Arc<str>> = FxHashSet::default();
        let mut intern = |s: &str| -> Arc<str> {
            if let Some(a) = self.pool.get(s).or_else(|| new_pool.get(s)) {
                return a.clone();
            }
            let a: Arc<str> = Arc::from(s);
            new_pool.insert(a.clone());
            a
        };
        let mut updates: Vec<PersonUpdate> = Vec::new();
        let mut fresh = fresh.into_iter().peekable();
        while let Some(first) = fresh.next() {
            let (person, stored) = match self.persons.get_key_value(first.person.as_str()) {
                Some((key, stored)) => (key.clone(), stored.as_slice()),
                None => (Arc::from(first.person.as_str()), &[][..]),
            };
            let mut recs = vec![first.into_rec(&mut intern)];
            while let Some(c) = fresh.next_if(|c| *c.person == *person) {
                recs.push(c.into_rec(&mut intern));
            }
            // none of the new numbers is stored: the person's doses after are both lists
            let full = (full_at(stored), full_at(stored.iter().chain(&recs)));
            let sets = if recs.iter().all(|r| r.area.is_none()) {
                None
            } else {
                let (before_set, after_set) =
                    (area_set(stored), area_set(stored.iter().chain(&recs)));
                (before_set != after_set).then_some((before_set, after_set))
            };
            updates.push(PersonUpdate {
                person,
                recs,
                full,
                sets,
            });
        }
        Prepared {
            updates,
            interned: new_pool.into_iter().collect(),
        }
    }

    /// Installs prepared updates (made against this state, which no writer changed since).
    fn install(&mut self, updates: impl Iterator<Item = PersonUpdate>) {
        for u in updates {
            match self.persons.entry(u.person) {
                Entry::Vacant(e) => {
                    self.doses += u.recs.len() as u64;
                    e.insert(u.recs);
                }
                Entry::Occupied(mut e) => {
                    let recs = e.get_mut();
                    for rec in u.recs {
                        match recs.binary_search_by_key(&rec.dose, |r| r.dose) {
                            Ok(i) => recs[i] = rec,
                            Err(i) => {
                                recs.insert(i, rec);
                                self.doses += 1;
                            }
                        }
                    }
                }
            }
            let (before_full, after_full) = u.full;
            if before_full != after_full {
                if let Some(t) = before_full {
                    self.untime(t);
                }
                if let Some(t) = after_full {
                    *self.full_times.entry(t).or_default() += 1;
                    self.fully += 1;
                }
            }
            if let Some((before_set, after_set)) = u.sets {
                if !before_set.is_empty() {
                    if let Some(n) = self.area_sets.get_mut(&before_set) {
                        *n -= 1;
                        if *n == 0 {
                            self.area_sets.remove(&before_set);
                        }
                    }
                }
                if !after_set.is_empty() {
                    *self.area_sets.entry(after_set).or_default() += 1;
                }
            }
        }
    }
}

impl Candidate {
    fn into_rec(self, intern: &mut impl FnMut(&str) -> Arc<str>) -> Rec {
        Rec {
            dose: self.dose,
            vaccine: intern(self.vaccine),
            administered_at: self.administered_at,
            lot: self.lot.map(String::into_boxed_str),
            site: self.site.map(String::into_boxed_str),
            area: self.area.as_deref().map(&mut *intern),
        }
    }
}

impl crate::Health {
    /// Records doses (`POST /v1/vaccinations`): checks every record, then stores the accepted
    /// ones that are not stored yet in one durable transaction before returning. Nothing is
    /// stored from a rejected record; if the store fails, nothing of the request is stored.
    ///
    /// The field checks run before the write mutex is taken (on several threads for a large
    /// request); under it, the conflict checks, then the request's frame of the dose log is
    /// built, and written and synced on another thread while this one prepares the in-memory
    /// indexes' change under the state's read lock; last that change is installed under the
    /// write lock, [`INSTALL_SLICE`] persons at a time, so readers wait for a slice, never for a
    /// whole request. A reader may see some of a request's persons before the others (each
    /// person's new doses all at once), only after the request is durable.
    pub fn record_doses(&self, items: Vec<DoseItem>) -> Result<DoseOutcome> {
        let inner = &self.inner;
        let v = &inner.vaccinations;
        let now = inner.now();
        let mut checked = check_all(items, now, &inner.areas);
        let mut log = v.writes.lock();
        let mut outcome = DoseOutcome::default();
        // positions in `checked` of the rows to store
        let mut fresh: Vec<usize> = Vec::new();
        {
            // (person, dose) of `fresh` rows -> their position in `checked`
            let mut seen: FxHashMap<(&str, u8), usize> = FxHashMap::default();
            let st = v.state.read();
            for (index, c) in checked.iter().enumerate() {
                let c = match c {
                    Ok(c) => c,
                    Err(reason) => {
                        outcome.rejected.push((index, *reason));
                        continue;
                    }
                };
                let key = (c.person.as_str(), c.dose);
                let same = match seen.get(&key) {
                    Some(&i) => Some(matches!(&checked[i], Ok(earlier) if earlier == c)),
                    None => st.find(&c.person, c.dose).map(|r| r.matches(c)),
                };
                match same {
                    Some(true) => outcome.accepted += 1,
                    Some(false) => outcome.rejected.push((index, DoseReject::Conflict)),
                    None => {
                        seen.insert(key, index);
                        fresh.push(index);
                        outcome.accepted += 1;
                    }
                }
            }
        }
        if fresh.is_empty() {
            return Ok(outcome);
        }
        let mut rows: Vec<Candidate> = fresh
            .iter()
            .filter_map(|&i| {
                let taken = std::mem::replace(checked.get_mut(i)?, Err(DoseReject::InvalidRow));
                taken.ok()
            })
            .collect();
        drop(checked);
        // the log and the indexes group by person
        rows.sort_unstable_by(|a, b| (a.person.as_str(), a.dose).cmp(&(b.person.as_str(), b.dose)));
        log.encode(rows.iter().map(Candidate::logged))?;
        // the write and its sync, while the indexes' change is prepared (taking the rows' texts)
        let (stored, prepared) = std::thread::scope(|scope| {
            let log = &mut *log;
            let writing = scope.spawn(move || log.commit());
            let prepared = v.state.read().prepare(rows);
            (writing.join(), prepared)
        });
        match stored {
            Ok(stored) => stored?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
        let mut updates = prepared.updates.into_iter().peekable();
        let mut interned = Some(prepared.interned);
        while updates.peek().is_some() {
            let mut st = v.state.write();
            if let Some(new) = interned.take() {
                st.pool.extend(new);
            }
            st.install(updates.by_ref().take(INSTALL_SLICE));
            *v.by_area.lock() = None;
        }
        Ok(outcome)
    }

    /// A person's doses, ascending by dose number (empty for a person with none).
    pub fn doses(&self, person: &str) -> Vec<Dose> {
        let st = self.inner.vaccinations.state.read();
        let Some(recs) = st.persons.get(person) else {
            return Vec::new();
        };
        recs.iter()
            .map(|r| Dose {
                person: person.to_string(),
                dose: r.dose,
                vaccine: r.vaccine.to_string(),
                administered_at: r.administered_at,
                lot: r.lot.as_deref().map(String::from),
                site: r.site.as_deref().map(String::from),
                area: r.area.as_deref().map(String::from),
            })
            .collect()
    }

    /// When the person became fully vaccinated: the earliest `administered_at` of a dose
    /// numbered 2 or higher, or of any dose of a single-dose vaccine (`None`: not fully
    /// vaccinated by any dose recorded).
    pub fn fully_vaccinated_at(&self, person: &str) -> Option<i64> {
        let st = self.inner.vaccinations.state.read();
        full_at(st.persons.get(person)?)
    }

    /// The earliest `administered_at` of any of the person's doses.
    pub fn first_dose_at(&self, person: &str) -> Option<i64> {
        let st = self.inner.vaccinations.state.read();
        st.persons
            .get(person)?
            .iter()
            .map(|r| r.administered_at)
            .min()
    }

    /// `(dose1, fully_vaccinated)` for the summary: distinct persons with a dose, and persons
    /// fully vaccinated at or before `now`.
    pub fn vaccination_counts(&self, now: i64) -> (u64, u64) {
        let st = self.inner.vaccinations.state.read();
        let later: u64 = match now.checked_add(1) {
            Some(after) => st.full_times.range(after..).map(|(_, n)| n).sum(),
            None => 0,
        };
        (st.persons.len() as u64, st.fully - later)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{AreaInput, Health, HealthConfig};
    use engine::{Config, Durability as EngineDurability, Engine, ManualClock};

    const T0: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    struct World {
        health: Health,
        clock: Arc<ManualClock>,
        dir: tempfile::TempDir,
    }

    fn open_in(dir: tempfile::TempDir, clock: Arc<ManualClock>) -> World {
        let mut c = Config::new(dir.path());
        c.durability = EngineDurability::Os;
        c.clock = clock.clone();
        c.segment_bytes = 1 << 20;
        let engine = Engine::open(c).unwrap();
        let health = Health::open(engine, HealthConfig::new(dir.path())).unwrap();
        World { health, clock, dir }
    }

    fn world() -> World {
        open_in(tempfile::tempdir().unwrap(), Arc::new(ManualClock::new(T0)))
    }

    impl World {
        /// Shuts down and reopens engine and health over the same directory.
        fn reopen(self) -> World {
            let World { health, clock, dir } = self;
            health.shutdown();
            health.engine().shutdown().unwrap();
            drop(health);
            open_in(dir, clock)
        }

        fn areas(&self, tree: &[(&str, Option<&str>, u64)]) {
            let inputs = tree
                .iter()
                .map(|(id, parent, pop)| AreaInput {
                    id: (*id).into(),
                    name: format!("Area {id}"),
                    population: *pop as i64,
                    parent: parent.map(Into::into),
                })
                .collect();
            self.health.register_areas(inputs).unwrap();
        }

        fn record(&self, items: Vec<DoseItem>) -> DoseOutcome {
            self.health.record_doses(items).unwrap()
        }
    }

    fn dose(person: &str, n: i64, vaccine: &str, at: i64) -> DoseInput {
        DoseInput {
            person: person.into(),
            dose: n,
            vaccine: vaccine.into(),
            administered_at: at,
            lot: None,
            site: None,
            area: None,
        }
    }

    fn in_area(mut d: DoseInput, area: &str) -> DoseInput {
        d.area = Some(area.into());
        d
    }

    const PFIZER: &str = "EU/1/20/1528";
    const JANSSEN: &str = "EU/1/20/1525";

    #[test]
    fn reasons_have_the_contract_codes() {
        let codes: Vec<&str> = DoseReject::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(
            codes,
            [
                "invalid_person",
                "invalid_dose",
                "unknown_vaccine",
                "invalid_ts",
                "in_future",
                "unknown_area",
                "conflict",
                "invalid_row"
            ]
        );
        for r in DoseReject::ALL {
            assert_eq!(DoseReject::parse(r.code()), Some(r));
        }
        // The contract's ten codes, exactly one of them single-dose.
        for code in [
            "EU/1/20/1528",
            "EU/1/20/1507",
            "EU/1/21/1529",
            "EU/1/20/1525",
            "BBIBP-CorV",
            "CoronaVac",
            "Covaxin",
            "Sputnik-V",
            "Abdala",
            "Hayat-Vax",
        ] {
            assert!(vaccine(code).is_some(), "{code}");
        }
        let single: Vec<&str> = VACCINES
            .iter()
            .filter(|v| v.single_dose)
            .map(|v| v.code)
            .collect();
        assert_eq!(single, [JANSSEN]);
    }

    #[test]
    fn the_vaccine_list_is_documented() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vaccines.md"))
                .unwrap();
        for v in VACCINES {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", v.code)))
                .unwrap_or_else(|| panic!("docs/vaccines.md has no row for {}", v.code));
            let doses = if v.single_dose { "| 1 |" } else { "| 2 |" };
            assert!(row.contains(doses), "{row}");
        }
    }

    #[test]
    fn every_reason_is_given_and_nothing_rejected_is_stored() {
        let w = world();
        w.areas(&[("ST", None, 1000)]);
        let mut long_lot = dose("p9", 1, PFIZER, T0);
        long_lot.lot = Some("x".repeat(MAX_DOSE_TEXT_BYTES + 1));
        let items: Vec<DoseItem> = vec![
            Ok(dose("bad person", 1, PFIZER, T0)),
            Ok(dose("", 1, PFIZER, T0)),
            Ok(dose("p1", 0, PFIZER, T0)),
            Ok(dose("p1", 11, PFIZER, T0)),
            Ok(dose("p1", -1, PFIZER, T0)),
            Ok(dose("p1", 1, "pfizer", T0)),
            Ok(dose("p1", 1, "", T0)),
            Ok(dose("p1", 1, PFIZER, MIN_ADMINISTERED_AT - 1)),
            Ok(dose("p1", 1, PFIZER, T0 + 301)),
            Ok(in_area(dose("p1", 1, PFIZER, T0), "NOWHERE")),
            Err(DoseReject::InvalidRow),
            Ok(long_lot),
            // Accepted: the bounds themselves.
            Ok(dose("p2", 1, PFIZER, MIN_ADMINISTERED_AT)),
            Ok(in_area(dose("p2", 10, PFIZER, T0 + 300), "ST")),
        ];
        let out = w.record(items);
        use DoseReject::*;
        assert_eq!(
            out.rejected,
            vec![
                (0, InvalidPerson),
                (1, InvalidPerson),
                (2, InvalidDose),
                (3, InvalidDose),
                (4, InvalidDose),
                (5, UnknownVaccine),
                (6, UnknownVaccine),
                (7, InvalidTs),
                (8, InFuture),
                (9, UnknownArea),
                (10, InvalidRow),
                (11, InvalidRow),
            ]
        );
        assert_eq!(out.accepted, 2);
        assert!(w.health.doses("p1").is_empty());
        assert!(w.health.doses("p9").is_empty());
        let p2: Vec<u8> = w.health.doses("p2").iter().map(|d| d.dose).collect();
        assert_eq!(p2, [1, 10]);
        assert_eq!(w.health.vaccination_counts(T0 + 300), (1, 1));
        // The dose at now + 300 is not yet given at now.
        assert_eq!(w.health.vaccination_counts(T0), (1, 0));
        // The checks follow the clock.
        w.clock.advance(1);
        assert_eq!(
            w.record(vec![Ok(dose("p3", 1, PFIZER, T0 + 301))]).accepted,
            1
        );
    }

    #[test]
    fn duplicates_are_stored_once_and_conflicts_refused() {
        let w = world();
        w.areas(&[("ST", None, 1000)]);
        let mut a = in_area(dose("p1", 1, PFIZER, T0 - 30 * DAY), "ST");
        a.lot = Some("FE1234".into());
        a.site = Some("Commune 3, clinic".into());
        let mut other_lot = a.clone();
        other_lot.lot = Some("FE9999".into());
        let mut no_lot = a.clone();
        no_lot.lot = None;
        let mut other_area = a.clone();
        other_area.area = None;
        let mut other_time = a.clone();
        other_time.administered_at += 1;
        let mut other_vaccine = a.clone();
        other_vaccine.vaccine = "CoronaVac".into();
        // Within one request: the duplicate is accepted, every variant conflicts.
        let out = w.record(vec![
            Ok(a.clone()),
            Ok(a.clone()),
            Ok(other_lot.clone()),
            Ok(no_lot.clone()),
            Ok(other_area.clone()),
            Ok(other_time.clone()),
            Ok(other_vaccine.clone()),
            Ok(dose("p1", 2, PFIZER, T0 - 5 * DAY)),
        ]);
        assert_eq!(out.accepted, 3);
        let conflicts: Vec<usize> = out
            .rejected
            .iter()
            .map(|(i, r)| {
                assert_eq!(*r, DoseReject::Conflict);
                *i
            })
            .collect();
        assert_eq!(conflicts, [2, 3, 4, 5, 6]);
        assert_eq!(w.health.doses("p1").len(), 2);
        // Against what is stored, also after a restart.
        let w = w.reopen();
        let out = w.record(vec![
            Ok(other_lot),
            Ok(a.clone()),
            Ok(other_vaccine),
            Ok(dose("p1", 2, PFIZER, T0 - 5 * DAY)),
        ]);
        assert_eq!(out.accepted, 2);
        assert_eq!(
            out.rejected,
            vec![(0, DoseReject::Conflict), (2, DoseReject::Conflict)]
        );
        let doses = w.health.doses("p1");
        assert_eq!(doses.len(), 2);
        assert_eq!(doses[0].lot.as_deref(), Some("FE1234"));
        assert_eq!(doses[0].site.as_deref(), Some("Commune 3, clinic"));
        assert_eq!(doses[0].area.as_deref(), Some("ST"));
        // An empty text is the same as an absent one.
        let mut empty_lot = dose("p1", 2, PFIZER, T0 - 5 * DAY);
        empty_lot.lot = Some(String::new());
        empty_lot.area = Some(String::new());
        assert_eq!(w.record(vec![Ok(empty_lot)]).accepted, 1);
    }

    #[test]
    fn fully_vaccinated_by_a_second_dose_or_a_single_dose_vaccine() {
        let w = world();
        let t = T0 - 100 * DAY;
        w.record(vec![
            // Two doses, recorded out of order.
            Ok(dose("two", 2, PFIZER, t + 21 * DAY)),
            Ok(dose("two", 1, PFIZER, t)),
            // One dose of a two-dose vaccine.
            Ok(dose("one", 1, "Sputnik-V", t)),
            // The single-dose vaccine.
            Ok(dose("jj", 1, JANSSEN, t + 5 * DAY)),
            // A booster only (its first dose typed in elsewhere): dose 3 counts.
            Ok(dose("boost", 3, "EU/1/20/1507", t + 200 * DAY / 2)),
            // Mixed: the earliest qualifying dose wins.
            Ok(dose("mix", 1, "CoronaVac", t)),
            Ok(dose("mix", 2, JANSSEN, t + 10 * DAY)),
            Ok(dose("mix", 3, PFIZER, t + 90 * DAY)),
        ]);
        let h = &w.health;
        assert_eq!(h.fully_vaccinated_at("two"), Some(t + 21 * DAY));
        assert_eq!(h.first_dose_at("two"), Some(t));
        assert_eq!(h.fully_vaccinated_at("one"), None);
        assert_eq!(h.first_dose_at("one"), Some(t));
        assert_eq!(h.fully_vaccinated_at("jj"), Some(t + 5 * DAY));
        assert_eq!(h.fully_vaccinated_at("boost"), Some(t + 100 * DAY));
        assert_eq!(h.fully_vaccinated_at("mix"), Some(t + 10 * DAY));
        assert_eq!(h.fully_vaccinated_at("nobody"), None);
        assert_eq!(h.first_dose_at("nobody"), None);
        let doses: Vec<u8> = h.doses("two").iter().map(|d| d.dose).collect();
        assert_eq!(doses, [1, 2]);
        // Counts as of a time: nobody is fully vaccinated before t + 5 days.
        assert_eq!(h.vaccination_counts(T0), (5, 4));
        assert_eq!(h.vaccination_counts(t + 5 * DAY - 1), (5, 0));
        assert_eq!(h.vaccination_counts(t + 5 * DAY), (5, 1));
        assert_eq!(h.vaccination_counts(t + 21 * DAY), (5, 3));
        assert_eq!(h.vaccination_counts(i64::MAX), (5, 4));
        // A dose 2 of "one" later makes them fully vaccinated from then.
        w.record(vec![Ok(dose("one", 2, "Sputnik-V", T0 - DAY))]);
        assert_eq!(h.fully_vaccinated_at("one"), Some(T0 - DAY));
        assert_eq!(h.vaccination_counts(T0), (5, 5));
        // The same after a restart.
        let w = w.reopen();
        assert_eq!(w.health.vaccination_counts(T0), (5, 5));
        assert_eq!(w.health.fully_vaccinated_at("mix"), Some(t + 10 * DAY));
    }

    #[test]
    fn dose1_by_area_counts_each_person_once_per_area_and_above() {
        let w = world();
        // Province P; districts D1, D2; communes C11, C12 under D1 and C21 under D2.
        w.areas(&[
            ("P", None, 10_000),
            ("D1", Some("P"), 6_000),
            ("D2", Some("P"), 4_000),
            ("C11", Some("D1"), 3_000),
            ("C12", Some("D1"), 3_000),
            ("C21", Some("D2"), 4_000),
        ]);
        let t = T0 - 50 * DAY;
        w.record(vec![
            // a: two doses in C11 (one person, counted once).
            Ok(in_area(dose("a", 1, PFIZER, t), "C11")),
            Ok(in_area(dose("a", 2, PFIZER, t + 21 * DAY), "C11")),
            // b: dose 1 in C11, dose 2 in C12: once in each commune, once in D1 and P.
            Ok(in_area(dose("b", 1, PFIZER, t), "C11")),
            Ok(in_area(dose("b", 2, PFIZER, t + 21 * DAY), "C12")),
            // c: C11 and C21: once in each branch, once in P.
            Ok(in_area(dose("c", 1, PFIZER, t), "C11")),
            Ok(in_area(dose("c", 2, PFIZER, t + 21 * DAY), "C21")),
            // d: at district level only.
            Ok(in_area(dose("d", 1, "Abdala", t), "D2")),
            // e: no area at all: counted nowhere.
            Ok(dose("e", 1, "Abdala", t)),
        ]);
        let by_area = |w: &World| {
            let mut v: Vec<(String, u64)> = w
                .health
                .area_views()
                .into_iter()
                .map(|a| {
                    let n = (a.dose1_coverage * a.area.population as f64).round() as u64;
                    (a.area.id, n)
                })
                .collect();
            v.sort();
            v
        };
        let want = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
            pairs.iter().map(|(a, n)| ((*a).to_string(), *n)).collect()
        };
        assert_eq!(
            by_area(&w),
            want(&[
                ("C11", 3),
                ("C12", 1),
                ("C21", 1),
                ("D1", 3),
                ("D2", 2),
                ("P", 4)
            ])
        );
        // Coverage is counts over population.
        let views = w.health.area_views();
        let p = views.iter().find(|a| a.area.id == "P").unwrap();
        assert!((p.dose1_coverage - 4.0 / 10_000.0).abs() < 1e-12);
        // A new dose is counted at once (the cached answer is dropped).
        w.record(vec![Ok(in_area(dose("e", 2, "Abdala", t + DAY), "C12"))]);
        assert_eq!(
            by_area(&w),
            want(&[
                ("C11", 3),
                ("C12", 2),
                ("C21", 1),
                ("D1", 4),
                ("D2", 2),
                ("P", 5)
            ])
        );
        // Re-parenting C21 under D1 moves its persons.
        w.areas(&[("C21", Some("D1"), 4_000)]);
        assert_eq!(
            by_area(&w),
            want(&[
                ("C11", 3),
                ("C12", 2),
                ("C21", 1),
                ("D1", 4),
                ("D2", 1),
                ("P", 5)
            ])
        );
        // And it is all rebuilt at open.
        let w = w.reopen();
        assert_eq!(
            by_area(&w),
            want(&[
                ("C11", 3),
                ("C12", 2),
                ("C21", 1),
                ("D1", 4),
                ("D2", 1),
                ("P", 5)
            ])
        );
    }

    #[test]
    fn every_accepted_dose_survives_a_reopen() {
        let w = world();
        w.areas(&[("ST", None, 1000)]);
        let mut items = Vec::new();
        for p in 0..3000 {
            let n = 1 + (p % 3) as i64;
            for d in 1..=n {
                let mut x = dose(&format!("p{p:05}"), d, PFIZER, T0 - (100 - d) * DAY);
                x.lot = (p % 2 == 0).then(|| format!("L{p}"));
                if p % 5 == 0 {
                    x.area = Some("ST".into());
                }
                items.push(Ok(x));
            }
            if p % 100 == 0 {
                items.push(Ok(dose(&format!("p{p:05}"), 1, "nope", T0)));
            }
        }
        let total = items.len();
        let out = w.record(items);
        assert_eq!(out.rejected.len(), 30);
        assert_eq!(out.accepted as usize, total - 30);
        let before: Vec<Vec<Dose>> = (0..3000)
            .map(|p| w.health.doses(&format!("p{p:05}")))
            .collect();
        let counts = w.health.vaccination_counts(T0);
        let w = w.reopen();
        for (p, doses) in before.iter().enumerate() {
            assert_eq!(&w.health.doses(&format!("p{p:05}")), doses);
        }
        assert_eq!(w.health.vaccination_counts(T0), counts);
        assert_eq!(counts, (3000, 2000));
    }

    /// Large requests (checked on several threads, installed in slices) give the outcome a plain
    /// sequential model gives, row by row: every reason at its index, duplicates within the
    /// request and of stored rows accepted once, conflicts refused; and the indexes they leave
    /// are those a reopen rebuilds from the stored rows alone.
    #[test]
    fn large_requests_match_a_sequential_model_and_a_reopen() {
        let mut w = world();
        w.areas(&[
            ("R", None, 10_000),
            ("A", Some("R"), 5_000),
            ("B", Some("R"), 5_000),
        ]);
        let mut model: HashMap<(String, u8), DoseInput> = HashMap::new();
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let vaccines = [PFIZER, JANSSEN, "CoronaVac"];
        for request in 0..3 {
            let len = [2 * PARALLEL_CHECK_MIN + 7, INSTALL_SLICE * 3 + 1, 9_001][request];
            let mut items: Vec<DoseItem> = Vec::with_capacity(len);
            let mut expected = DoseOutcome::default();
            for index in 0..len {
                let person = format!("p{}", next(3_000));
                let n = 1 + next(3) as i64;
                let mut d = dose(
                    &person,
                    n,
                    vaccines[next(3) as usize],
                    T0 - 86_400 * next(4) as i64,
                );
                d.area = ["", "A", "B"][next(3) as usize].to_string().into();
                d.lot = (next(2) == 0).then(|| format!("L{}", next(2)));
                let bad = match next(40) {
                    0 => Some(DoseReject::InvalidPerson),
                    1 => Some(DoseReject::UnknownArea),
                    2 => Some(DoseReject::InvalidRow),
                    3 => Some(DoseReject::InvalidDose),
                    _ => None,
                };
                match bad {
                    Some(DoseReject::InvalidPerson) => d.person = "no spaces".into(),
                    Some(DoseReject::UnknownArea) => d.area = Some("NOWHERE".into()),
                    Some(DoseReject::InvalidDose) => d.dose = 0,
                    _ => {}
                }
                if let Some(reason) = bad {
                    expected.rejected.push((index, reason));
                    items.push(if reason == DoseReject::InvalidRow {
                        Err(reason)
                    } else {
                        Ok(d)
                    });
                    continue;
                }
                if d.area.as_deref() == Some("") {
                    d.area = None;
                }
                let key = (d.person.clone(), d.dose as u8);
                match model.get(&key) {
                    Some(stored) if *stored == d => expected.accepted += 1,
                    Some(_) => expected.rejected.push((index, DoseReject::Conflict)),
                    None => {
                        model.insert(key, d.clone());
                        expected.accepted += 1;
                    }
                }
                items.push(Ok(d));
            }
            assert_eq!(w.record(items), expected, "request {request}");
        }
        let persons: Vec<String> = (0..3_000).map(|i| format!("p{i}")).collect();
        let snapshot = |w: &World| {
            let doses: Vec<Vec<Dose>> = persons.iter().map(|p| w.health.doses(p)).collect();
            let tree = w.health.inner.areas.read();
            let mut areas: Vec<(String, u64)> = w
                .health
                .inner
                .vaccinations
                .dose1_by_area(&|a: &str| tree.self_and_ancestors(a))
                .into_iter()
                .collect();
            areas.sort();
            (doses, w.health.vaccination_counts(T0), areas)
        };
        let before = snapshot(&w);
        let stored: usize = before.0.iter().map(Vec::len).sum();
        assert_eq!(stored, model.len());
        for ((person, n), d) in &model {
            let got = w.health.doses(person);
            let rec = got.iter().find(|g| g.dose == *n).unwrap();
            assert_eq!(
                (
                    rec.vaccine.as_str(),
                    rec.administered_at,
                    &rec.lot,
                    &rec.area
                ),
                (d.vaccine.as_str(), d.administered_at, &d.lot, &d.area)
            );
        }
        w = w.reopen();
        assert_eq!(snapshot(&w), before);
    }

    /// Writes `rows` into the doses table of the health database at `db_path` as the code before
    /// the dose log did (a row per `(person, dose)`, postcard values).
    fn write_old_table(db_path: &std::path::Path, rows: &[(&str, u8, StoredDoseRef<'_>)]) {
        let db = Database::create(db_path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(DOSES).unwrap();
            for (person, dose, d) in rows {
                let bytes = postcard::to_allocvec(d).unwrap();
                table.insert((*person, *dose), bytes.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn has_old_table(db_path: &std::path::Path) -> bool {
        let db = Database::create(db_path).unwrap();
        let txn = db.begin_read().unwrap();
        let found = match txn.open_table(DOSES) {
            Ok(_) => true,
            Err(redb::TableError::TableDoesNotExist(_)) => false,
            Err(e) => panic!("{e}"),
        };
        found
    }

    fn close(w: World) -> (tempfile::TempDir, Arc<ManualClock>) {
        let World { health, clock, dir } = w;
        health.shutdown();
        health.engine().shutdown().unwrap();
        drop(health);
        (dir, clock)
    }

    /// A store written before the dose log keeps its doses in the health database's table: the
    /// first open reads them, moves them into the log and drops the table; later opens read
    /// the log alone. A move cut short before the drop (rows in both) reads each dose once and
    /// appends nothing again.
    #[test]
    fn doses_of_a_store_written_before_the_log_are_moved_into_it() {
        let w = world();
        w.areas(&[("ST", None, 1000)]);
        let (dir, clock) = close(w);
        let db_path = dir.path().join("health.redb");
        let log_path = crate::dose_log::path_for(&db_path);
        std::fs::remove_file(&log_path).unwrap();
        let old = |vaccine, at, lot, area| StoredDoseRef {
            vaccine,
            administered_at: at,
            lot,
            site: Some("Commune 3, clinic"),
            area,
        };
        let t = T0 - 60 * DAY;
        let rows = [
            ("p1", 1, old(PFIZER, t, Some("FE1"), Some("ST"))),
            ("p1", 2, old(PFIZER, t + 21 * DAY, None, Some("ST"))),
            ("p2", 1, old(JANSSEN, t + DAY, None, None)),
            ("p3", 1, old("CoronaVac", t, Some("L"), None)),
        ];
        write_old_table(&db_path, &rows);
        let check = |w: &World| {
            let h = &w.health;
            let p1 = h.doses("p1");
            assert_eq!(p1.len(), 2);
            assert_eq!(p1[0].lot.as_deref(), Some("FE1"));
            assert_eq!(p1[1].area.as_deref(), Some("ST"));
            assert_eq!(p1[0].site.as_deref(), Some("Commune 3, clinic"));
            assert_eq!(h.fully_vaccinated_at("p1"), Some(t + 21 * DAY));
            assert_eq!(h.fully_vaccinated_at("p2"), Some(t + DAY));
            assert_eq!(h.first_dose_at("p3"), Some(t));
            assert_eq!(h.vaccination_counts(T0), (3, 2));
            let views = h.area_views();
            let st = views.iter().find(|a| a.area.id == "ST").unwrap();
            assert!((st.dose1_coverage - 1.0 / 1000.0).abs() < 1e-12);
        };
        let w = open_in(dir, clock);
        check(&w);
        // The moved rows conflict and deduplicate as stored rows do.
        let mut same = dose("p1", 1, PFIZER, t);
        same.lot = Some("FE1".into());
        same.site = Some("Commune 3, clinic".into());
        same.area = Some("ST".into());
        let mut other = same.clone();
        other.lot = Some("FE2".into());
        let out = w.record(vec![
            Ok(same),
            Ok(other),
            Ok(dose("p3", 2, "CoronaVac", t + 28 * DAY)),
        ]);
        assert_eq!(out.accepted, 2);
        assert_eq!(out.rejected, vec![(1, DoseReject::Conflict)]);
        let (dir, clock) = close(w);
        assert!(!has_old_table(&db_path));
        let log_len = std::fs::metadata(&log_path).unwrap().len();
        let w = open_in(dir, clock);
        assert_eq!(w.health.vaccination_counts(T0), (3, 3));
        assert_eq!(w.health.doses("p3").len(), 2);
        // A move cut short after the log was synced, before the table was dropped.
        let (dir, clock) = close(w);
        write_old_table(&db_path, &rows);
        let w = open_in(dir, clock);
        assert_eq!(w.health.vaccination_counts(T0), (3, 3));
        assert_eq!(w.health.doses("p1").len(), 2);
        let (dir, clock) = close(w);
        assert!(!has_old_table(&db_path));
        assert_eq!(std::fs::metadata(&log_path).unwrap().len(), log_len);
        let w = open_in(dir, clock);
        assert_eq!(w.health.fully_vaccinated_at("p3"), Some(t + 28 * DAY));
        assert_eq!(w.health.vaccination_counts(T0), (3, 3));
    }

    /// What a crash in the middle of a request's write leaves at the end of the log (a part of
    /// its frame) is dropped at open: every acknowledged dose is read back, and the log goes on.
    #[test]
    fn a_torn_frame_at_the_end_of_the_log_is_dropped() {
        let w = world();
        let t = T0 - 30 * DAY;
        let items: Vec<DoseItem> = (0..500)
            .map(|p| Ok(dose(&format!("p{p:03}"), 1, PFIZER, t)))
            .collect();
        assert_eq!(w.record(items).accepted, 500);
        let (dir, clock) = close(w);
        let log_path = crate::dose_log::path_for(&dir.path().join("health.redb"));
        let good = std::fs::read(&log_path).unwrap();
        // a second request's frame, cut short by the crash
        let w = open_in(dir, clock);
        assert_eq!(w.record(vec![Ok(dose("late", 1, PFIZER, t))]).accepted, 1);
        let (dir, clock) = close(w);
        let both = std::fs::read(&log_path).unwrap();
        std::fs::write(&log_path, &both[..both.len() - 3]).unwrap();
        let w = open_in(dir, clock);
        assert_eq!(w.health.vaccination_counts(T0), (500, 0));
        assert!(w.health.doses("late").is_empty());
        assert_eq!(
            std::fs::metadata(&log_path).unwrap().len(),
            good.len() as u64
        );
        assert_eq!(w.record(vec![Ok(dose("late", 1, PFIZER, t))]).accepted, 1);
        let w = w.reopen();
        assert_eq!(w.health.vaccination_counts(T0), (501, 0));
    }

    #[test]
    fn an_empty_request_stores_nothing() {
        let w = world();
        assert_eq!(w.record(Vec::new()), DoseOutcome::default());
        assert_eq!(w.health.vaccination_counts(T0), (0, 0));
    }
}
