//! The [`Health`] handle: cases in the health database, their standing traces, the tier table and
//! the exposure index, and the operations the API serves over them.
//!
//! Locks: `writes` serializes case changes (a registration's check-then-store is atomic);
//! `state` (a read-write lock) holds the derived state; each case's live trace has its own mutex,
//! always taken *before* `state` (a refresh computes under the case's mutex with `state` free,
//! then applies its changes under `state`'s write lock, and tells tier events under its read
//! lock, so status reads wait only while listings change). `exposure` is taken last; `told`
//! (what listeners were told) after `state`. A registration derives its first trace
//! with no lock held and installs it only if no later derivation of the same case was installed
//! first (each derivation takes a ticket before it reads the scan store); scans stored meanwhile
//! are held back for the case and refreshed once it is installed.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use engine::{Engine, LiveChanges, LiveTrace, PersonKey, StoreChange, TraceResult, Visit};
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;

use crate::areas::Areas;
use crate::case::{self, Case, CaseChange, CaseId, CaseStatus, CaseView, NewCase};
use crate::error::{Error, Result};
use crate::exposure::{ExposureIndex, Slot};
use crate::policy::Policy;
use crate::records::Records;
use crate::samples::Samples;
use crate::sites::{self, ExposureSite};
use crate::standing;
use crate::store::Store;
use crate::tiers::{CaseFacts, PersonStatus, Tier, TierTable};
use crate::tracker::{self, Msg};
use crate::vaccinations::Vaccinations;

/// Settings of the health domain.
#[derive(Clone)]
pub struct HealthConfig {
    /// The health database file (`health.redb` in the data directory by default); the dose log
    /// is beside it, with the extension `doses.log`.
    pub db_path: PathBuf,
    pub policy: Policy,
    /// Keep standing traces current as scans arrive. Always on in the server; tests turn it off
    /// to show that the model comparison catches a stale trace.
    #[doc(hidden)]
    pub freshness: bool,
    /// Most persons in one pooled sample (`--max-pool`).
    pub max_pool: usize,
    /// Where the domain's "now" comes from (case registration times, validation windows,
    /// lapses); the engine's clock when `None`. Cluster mode pins it to each command's stamp
    /// while the command is applied, so every node's replica records the same times.
    pub clock: Option<Arc<dyn engine::Clock>>,
    /// Drop expired samples and declarations when the domain opens (by the clock at that
    /// moment). A cluster replica turns it off: a purge there must happen at the same point of
    /// the stream on every node ([`Health::purge_expired_on_a_new_day`]), not when one restarts.
    pub purge_at_open: bool,
    /// At open, register the case of every one-person positive sample that has none (the repair
    /// of a crash between storing a result and registering its case). A cluster replica turns
    /// it off: its store is cut back to a checkpoint taken between two commands, so there is no
    /// such crash to repair, and a repair at a restart (by that moment's cases, not the result's)
    /// would register a case on that node alone.
    pub reconcile_at_open: bool,
}

impl HealthConfig {
    /// The default policy, with the database in `data_dir/health.redb`.
    pub fn new(data_dir: impl Into<PathBuf>) -> HealthConfig {
        HealthConfig {
            db_path: data_dir.into().join("health.redb"),
            policy: Policy::default(),
            freshness: true,
            max_pool: crate::samples::DEFAULT_MAX_POOL,
            clock: None,
            purge_at_open: true,
            reconcile_at_open: true,
        }
    }
}

/// Receives each change of a person's tier (including lapses). Runs under the lock of what was
/// told (on the health thread or a case change's caller): it must not block.
pub type TierListener = Box<dyn Fn(&PersonStatus) + Send + Sync>;
/// Receives how long a pass of re-derivations took from the first scan notice that caused it
/// until its last trace was installed.
pub type UpdateObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// Counts for the metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthStats {
    /// Cases by status, in [`CaseStatus::ALL`] order.
    pub cases: [u64; 3],
    /// Persons in F0, F1 and F2 now (as of the last lapse check, at most a second ago).
    pub tiers: [u64; 3],
    /// Standing traces re-derived because newly stored scans may have changed them.
    pub rederived_by_scans: u64,
    /// Standing traces re-derived after a retention purge or a venue change.
    pub rederived_by_store: u64,
    /// Exposure-index windows held.
    pub windows: u64,
}

/// A handle to the health domain. Cheap to clone.
#[derive(Clone)]
pub struct Health {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct CaseEntry {
    pub case: Case,
    pub id: CaseId,
    pub person: Arc<str>,
    pub window: (i64, i64),
    /// The standing trace (taken before `state`; see the module docs).
    pub live: Arc<Mutex<LiveTrace>>,
    /// F1 and F2 counts of the live trace, as of its last applied change.
    pub f1: usize,
    pub f2: usize,
    /// The case visits of the live trace (exposure sites).
    pub visits: Arc<[Visit]>,
    /// The ticket of the installed derivation.
    pub ticket: u64,
}

#[derive(Default)]
pub(crate) struct State {
    pub slots: Vec<CaseEntry>,
    pub by_id: FxHashMap<CaseId, Slot>,
    pub tiers: TierTable,
    /// Counted cases whose person has no stored scan yet.
    pub unseen: FxHashMap<Slot, Arc<str>>,
    /// Registrations whose first derivation is in flight (any scan may concern them).
    pub pending: FxHashMap<Slot, u32>,
}

/// What tier listeners were told, and when to tell them again.
#[derive(Default)]
pub(crate) struct Told {
    /// The last status told to tier listeners, for persons not `none`.
    published: FxHashMap<Arc<str>, PersonStatus>,
    /// How many of `published` are F0, F1 and F2 (kept with it, so counts cost nothing).
    by_tier: [u64; 3],
    /// When a person's next listing lapses: recheck them then. One entry per person.
    pub lapses: BTreeSet<(i64, Arc<str>)>,
    /// Each person's entry in `lapses`.
    pub next_lapse: FxHashMap<Arc<str>, i64>,
}

impl Told {
    /// The tier last told for `person` (`none` when never told or told `none`).
    pub fn tier(&self, person: &str) -> Tier {
        self.published.get(person).map_or(Tier::None, |s| s.tier)
    }

    /// F0, F1 and F2 persons as last told.
    pub fn counts(&self) -> [u64; 3] {
        self.by_tier
    }

    /// Whether `status` differs from what was told for its person.
    fn differs(&self, status: &PersonStatus) -> bool {
        match self.published.get(&status.person) {
            Some(before) => before != status,
            None => status.tier != Tier::None,
        }
    }

    /// Records `status` as told for its person.
    fn record(&mut self, status: PersonStatus) {
        let tier = status.tier;
        let before = match tier {
            Tier::None => self.published.remove(&status.person),
            _ => self.published.insert(status.person.clone(), status),
        };
        if let Some(i) = before.as_ref().and_then(|b| tier_slot(b.tier)) {
            self.by_tier[i] -= 1;
        }
        if let Some(i) = tier_slot(tier) {
            self.by_tier[i] += 1;
        }
    }
}

/// The place of a listed tier in `Told::by_tier`.
pub(crate) fn tier_slot(tier: Tier) -> Option<usize> {
    match tier {
        Tier::F0 => Some(0),
        Tier::F1 => Some(1),
        Tier::F2 => Some(2),
        Tier::None => None,
    }
}

/// Scans stored while a case's first derivation was in flight, to refresh once it is installed.
#[derive(Default)]
pub(crate) struct HeldBack {
    pub persons: Vec<PersonKey>,
    /// A purge or venue change happened meanwhile: derive again from scratch.
    pub rederive: bool,
}

pub(crate) struct Inner {
    pub engine: Engine,
    /// The domain's clock ([`HealthConfig::clock`]).
    clock: Option<Arc<dyn engine::Clock>>,
    pub policy: Policy,
    pub store: Store,
    /// The health database's file (the dose log is beside it).
    pub db_path: PathBuf,
    /// The registered areas (section 12).
    pub areas: RwLock<Areas>,
    /// Dose records and their indexes (section 11).
    pub vaccinations: Vaccinations,
    /// Samples and results (section 11).
    pub samples: Samples,
    pub max_pool: usize,
    /// Declarations and notices (sections 11, 12).
    pub records: Records,
    /// The summary's `scans_24h` and the second it was counted at: counting walks every
    /// person's scans, so it is done at most once a second.
    pub scans_24h: Mutex<Option<(i64, u64)>>,
    writes: Mutex<WriteState>,
    pub state: RwLock<State>,
    /// The exposure index: read for every scan notice, written when a trace's windows change.
    /// Taken last (never held while another lock is taken).
    pub exposure: RwLock<ExposureIndex>,
    /// Tier events told; taken after `state` (publishers hold `state` for reading).
    pub told: Mutex<Told>,
    /// Scans held back for cases whose first derivation is in flight (taken under `state`'s
    /// read lock by the health thread, emptied under its write lock by the installer).
    pub held_back: Mutex<FxHashMap<Slot, HeldBack>>,
    /// Held-back work of cases installed since, for the health thread.
    pub deferred: Mutex<Vec<(Slot, HeldBack)>>,
    ticket: AtomicU64,
    pub tx: Sender<Msg>,
    /// Set (with an unpark) when a message must not wait for the pass to gather notices
    /// (`tracker::PASS_GATHER`).
    pub hurried: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    listeners: RwLock<Vec<TierListener>>,
    pub observers: RwLock<Vec<UpdateObserver>>,
    pub rederived_by_scans: AtomicU64,
    pub rederived_by_store: AtomicU64,
    /// The last day expired records were purged on (as stored in the database's meta table).
    purged_day: AtomicU64,
}

struct WriteState {
    next_case: u64,
}

impl Health {
    /// Opens the health database, loads every case and derives the standing trace of every
    /// counted case before returning, so that the first answer is already current.
    pub fn open(engine: Engine, config: HealthConfig) -> Result<Health> {
        config.policy.validate()?;
        let config_purge_at_open = config.purge_at_open;
        let config_reconcile_at_open = config.reconcile_at_open;
        let started = Instant::now();
        let store = Store::open(&config.db_path)?;
        let mut cases = store.cases()?;
        cases.sort_by(|a, b| {
            a.registered_at
                .cmp(&b.registered_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let next_case = store.next_case_number()?;
        let purged_day = store.purged_day()?;
        let areas = Areas::from_stored(store.all(crate::store::AREAS)?);
        let vaccinations =
            Vaccinations::load(store.db(), &crate::dose_log::path_for(&config.db_path))?;
        let samples = Samples::load(&store)?;
        let records = Records::load(&store)?;
        let mut state = State::default();
        for case in cases {
            let slot = state.slots.len() as Slot;
            let entry = new_entry(case, &config.policy);
            if entry.case.status == CaseStatus::Active {
                state.tiers.set_active(&entry.person, slot, true);
            }
            state.by_id.insert(entry.id.clone(), slot);
            state.slots.push(entry);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            engine: engine.clone(),
            clock: config.clock.clone(),
            policy: config.policy,
            store,
            db_path: config.db_path.clone(),
            areas: RwLock::new(areas),
            vaccinations,
            samples,
            max_pool: config.max_pool.max(1),
            records,
            scans_24h: Mutex::new(None),
            writes: Mutex::new(WriteState { next_case }),
            state: RwLock::new(state),
            exposure: RwLock::new(ExposureIndex::default()),
            told: Mutex::new(Told::default()),
            held_back: Mutex::new(FxHashMap::default()),
            deferred: Mutex::new(Vec::new()),
            ticket: AtomicU64::new(0),
            tx: tx.clone(),
            hurried: AtomicBool::new(false),
            thread: Mutex::new(None),
            listeners: RwLock::new(Vec::new()),
            observers: RwLock::new(Vec::new()),
            rederived_by_scans: AtomicU64::new(0),
            rederived_by_store: AtomicU64::new(0),
            purged_day: AtomicU64::new(purged_day),
        });
        if config.freshness {
            // Registered before the first derivation, so no scan stored from here on is missed.
            engine.on_change(Box::new(move |change| {
                let msg = match change {
                    StoreChange::Scans(scans) => Msg::Scans(scans.clone(), Instant::now()),
                    StoreChange::Purged { .. } | StoreChange::VenuesChanged => Msg::StoreChanged,
                };
                // A send fails only once the tracker has stopped.
                let _ = tx.send(msg);
            }));
        }
        let worker = Arc::downgrade(&inner);
        let handle = std::thread::Builder::new()
            .name("checkin-health".into())
            .spawn(move || tracker::run(worker, rx))
            .map_err(|e| Error::store("spawning the health thread", e))?;
        *inner.thread.lock() = Some(handle);
        let counted: Vec<Slot> = {
            let st = inner.state.read();
            (0..st.slots.len() as Slot)
                .filter(|s| st.slots[*s as usize].case.status.counts())
                .collect()
        };
        let now = inner.now();
        inner.derive_all(&counted);
        let health = Health { inner };
        if config_reconcile_at_open {
            health.reconcile_samples()?;
        }
        if config_purge_at_open {
            health.purge_samples()?;
            health.purge_declarations()?;
        }
        let inner = health.inner;
        {
            // F0 persons with no counted contacts still need their first event state.
            let st = inner.state.read();
            let persons: Vec<Arc<str>> = st.tiers.persons().cloned().collect();
            inner.publish(&st, persons, now);
        }
        tracing::info!(
            cases = inner.state.read().slots.len(),
            derived = counted.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "health domain open"
        );
        Ok(Health { inner })
    }

    /// Drops expired samples (collected over 180 days ago) and declarations (older than the scan
    /// retention) by the domain's clock, the first time it is called on a UTC day later than the
    /// last day it purged on; the day is kept in the database, so it moves with the health
    /// checkpoints. A cluster replica calls it before each command it applies, with the clock
    /// pinned to the command's stamp: every node purges at the same point of the stream,
    /// whenever each was restarted. Returns how many records went.
    pub fn purge_expired_on_a_new_day(&self) -> Result<usize> {
        if !self.purge_is_due() {
            return Ok(0);
        }
        let day = self.today();
        let n = self.purge_samples()? + self.purge_declarations()?;
        crate::client_keys::purge(&self.inner.store, self.inner.now())?;
        self.inner.store.set_purged_day(day)?;
        self.inner.purged_day.store(day, Ordering::Release);
        Ok(n)
    }

    /// Whether [`Health::purge_expired_on_a_new_day`] would purge now (no database access).
    pub fn purge_is_due(&self) -> bool {
        self.today() > self.inner.purged_day.load(Ordering::Acquire)
    }

    fn today(&self) -> u64 {
        u64::try_from(self.inner.now().div_euclid(86_400)).unwrap_or(0)
    }

    /// The scan store this domain reads.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The case policy in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The domain's current unix time, seconds ([`HealthConfig::clock`]).
    pub fn now(&self) -> i64 {
        self.inner.now()
    }

    /// Registers a case (`POST /v1/cases`): durable before it returns, with its standing trace
    /// derived. Returns the case and whether it was created (`false`: an identical retry).
    pub fn register_case(&self, request: NewCase) -> Result<(CaseView, bool)> {
        let inner = &self.inner;
        let now = inner.now();
        request.validate(now, inner.engine.config().retention_days)?;
        if let Some(area) = &request.area {
            if !inner.areas.read().contains(area) {
                return Err(Error::Invalid(format!(
                    "area {area} is not a registered area"
                )));
            }
        }
        let slot = {
            let mut writes = inner.writes.lock();
            if let Some(id) = &request.id {
                let st = inner.state.read();
                if let Some(&slot) = st.by_id.get(id.as_str()) {
                    let entry = &st.slots[slot as usize];
                    if request.matches(&entry.case) {
                        return Ok((inner.view(entry), false));
                    }
                    return Err(Error::Conflict(format!(
                        "case {id} is already registered with other fields"
                    )));
                }
            }
            if let Some(active) = inner.active_case_of(&request.person) {
                return Err(Error::Conflict(format!(
                    "person {} already has an active case: {active}",
                    request.person
                )));
            }
            let (id, next_case) = match &request.id {
                Some(id) => (id.clone(), None),
                None => {
                    let st = inner.state.read();
                    let mut n = writes.next_case;
                    while st.by_id.contains_key(format!("case-{n}").as_str()) {
                        n += 1;
                    }
                    (format!("case-{n}"), Some(n + 1))
                }
            };
            let case = Case {
                id,
                person: request.person.clone(),
                sampled_at: request.sampled_at,
                onset: request.onset,
                isolated_at: request.isolated_at.unwrap_or(now),
                isolated_at_given: request.isolated_at.is_some(),
                area: request.area.clone(),
                note: request.note.clone(),
                source: "manual".into(),
                status: CaseStatus::Active,
                registered_at: now,
                recovered_at: None,
            };
            inner.store.put_case(&case, next_case)?;
            if let Some(n) = next_case {
                writes.next_case = n;
            }
            inner.insert_case(case, now)
        };
        inner.derive_pending(slot);
        let st = inner.state.read();
        Ok((inner.view(&st.slots[slot as usize]), true))
    }

    /// Cases ascending by `registered_at`, then id; `status` and `since` (`registered_at >=`)
    /// filter.
    pub fn cases(&self, status: Option<CaseStatus>, since: Option<i64>) -> Vec<CaseView> {
        let inner = &self.inner;
        let st = inner.state.read();
        let mut out: Vec<CaseView> = st
            .slots
            .iter()
            .filter(|e| status.is_none_or(|s| e.case.status == s))
            .filter(|e| since.is_none_or(|t| e.case.registered_at >= t))
            .map(|e| inner.view(e))
            .collect();
        out.sort_by(|a, b| {
            a.case
                .registered_at
                .cmp(&b.case.registered_at)
                .then_with(|| a.case.id.cmp(&b.case.id))
        });
        out
    }

    /// One case.
    pub fn case(&self, id: &str) -> Option<CaseView> {
        let st = self.inner.state.read();
        let slot = *st.by_id.get(id)?;
        Some(self.inner.view(&st.slots[slot as usize]))
    }

    /// The standing trace of a case now. A discarded case counts for nobody: its answer has the
    /// case's window and no visits or contacts.
    pub fn contacts(&self, id: &str) -> Option<Arc<TraceResult>> {
        let st = self.inner.state.read();
        let slot = *st.by_id.get(id)?;
        let e = &st.slots[slot as usize];
        if !e.case.status.counts() {
            let (from, to) = e.window;
            return Some(Arc::new(standing::empty_trace(
                &e.person,
                from,
                to,
                &self.inner.policy,
            )));
        }
        let live = e.live.clone();
        drop(st);
        let result = live.lock().result();
        Some(Arc::new(result))
    }

    /// Changes a case's status (`PATCH /v1/cases/{id}`), durably.
    pub fn update_case(&self, id: &str, change: CaseChange) -> Result<CaseView> {
        self.change_case(id, change).map(|(view, _)| view)
    }

    /// [`Health::update_case`], and whether this call changed the case's status (decided under
    /// the write lock, so of several identical requests at once exactly one did).
    pub fn change_case(&self, id: &str, change: CaseChange) -> Result<(CaseView, bool)> {
        let inner = &self.inner;
        let _writes = inner.writes.lock();
        let now = inner.now();
        let (slot, mut case) = {
            let st = inner.state.read();
            let slot = *st
                .by_id
                .get(id)
                .ok_or_else(|| Error::NotFound(format!("no case {id}")))?;
            (slot, st.slots[slot as usize].case.clone())
        };
        let Some((status, recovered_at)) = case::transition(&case, change, now)? else {
            let st = inner.state.read();
            return Ok((inner.view(&st.slots[slot as usize]), false));
        };
        let status_changed = status != case.status;
        case.status = status;
        case.recovered_at = recovered_at;
        inner.store.put_case(&case, None)?;
        let live = inner.state.read().slots[slot as usize].live.clone();
        // The case's mutex before `state`: no refresh of it runs while it stops counting.
        let mut live = live.lock();
        let cleared = (!status.counts()).then(|| {
            // A restored case (a corrected correction) starts again from no listings.
            let changes = live.clear();
            inner.exposure.write().apply(slot, &changes);
            changes
        });
        let mut st = inner.state.write();
        let person = st.slots[slot as usize].person.clone();
        st.slots[slot as usize].case = case;
        st.tiers
            .set_active(&person, slot, status == CaseStatus::Active);
        let mut changed = vec![person];
        if let Some(changes) = cleared {
            st.unseen.remove(&slot);
            inner.apply_changes(&mut st, slot, &live, &changes, &mut changed);
        }
        drop(live);
        inner.publish(&st, changed, now);
        Ok((inner.view(&st.slots[slot as usize]), status_changed))
    }

    /// A person's tier now (`GET /v1/persons/{id}/status`).
    pub fn status(&self, person: &str) -> PersonStatus {
        let inner = &self.inner;
        let now = inner.now();
        let st = inner.state.read();
        inner.status_of(&st, person, now)
    }

    /// Exposure sites with `end > since` (section 10).
    pub fn exposure_sites(&self, since: i64) -> Vec<ExposureSite> {
        let inner = &self.inner;
        let st = inner.state.read();
        let visits = st
            .slots
            .iter()
            .filter(|e| e.case.status.counts())
            .flat_map(|e| e.visits.iter());
        sites::exposure_sites(visits, inner.policy.linger_s, since, |venue| {
            match inner.engine.venue(venue) {
                Some(v) => (v.name.to_string(), v.province.map(|p| p.to_string())),
                None => (venue.to_string(), None),
            }
        })
    }

    /// Adds a listener of tier changes.
    pub fn on_tier_change(&self, listener: TierListener) {
        self.inner.listeners.write().push(listener);
    }

    /// Adds an observer of standing-trace update passes.
    pub fn on_update(&self, observer: UpdateObserver) {
        self.inner.observers.write().push(observer);
    }

    /// Counts for the metrics endpoint.
    pub fn stats(&self) -> HealthStats {
        let inner = &self.inner;
        let st = inner.state.read();
        let mut out = HealthStats::default();
        for e in &st.slots {
            out.cases[e.case.status as usize] += 1;
        }
        out.tiers = inner.told.lock().counts();
        out.rederived_by_scans = inner.rederived_by_scans.load(Ordering::Relaxed);
        out.rederived_by_store = inner.rederived_by_store.load(Ordering::Relaxed);
        out.windows = inner.exposure.read().len() as u64;
        out
    }

    /// Blocks until every store change notified before this call has been applied to the
    /// standing traces and tier lapses due now have been told (tests, benchmarks, shutdown).
    pub fn settle(&self) -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner
            .tx
            .send(Msg::Settle(tx))
            .map_err(|_| Error::ShuttingDown)?;
        self.inner.hurry();
        rx.recv().map_err(|_| Error::ShuttingDown)
    }

    /// Registers (or restores) the case of a one-person positive sample: id `sample:<sample id>`,
    /// `sampled_at` = collection, `isolated_at` = result time, no date bounds. Nothing happens
    /// when the case exists and is not discarded, or when the person has another active case.
    pub(crate) fn register_sample_case(
        &self,
        case_id: &str,
        person: &str,
        collected_at: i64,
        resulted_at: i64,
    ) -> Result<()> {
        let inner = &self.inner;
        let now = inner.now();
        let slot = {
            let _writes = inner.writes.lock();
            let existing = inner.state.read().by_id.get(case_id).copied();
            let active_other = inner.active_case_of(person);
            match existing {
                Some(slot) => {
                    let mut case = inner.state.read().slots[slot as usize].case.clone();
                    if case.status != CaseStatus::Discarded || active_other.is_some() {
                        return Ok(());
                    }
                    case.status = CaseStatus::Active;
                    case.recovered_at = None;
                    inner.store.put_case(&case, None)?;
                    let mut st = inner.state.write();
                    let person = st.slots[slot as usize].person.clone();
                    st.slots[slot as usize].case = case;
                    st.tiers.set_active(&person, slot, true);
                    *st.pending.entry(slot).or_insert(0) += 1;
                    inner.publish(&st, vec![person], now);
                    slot
                }
                None => {
                    if active_other.is_some() {
                        return Ok(());
                    }
                    let case = Case {
                        id: case_id.to_string(),
                        person: person.to_string(),
                        sampled_at: collected_at,
                        onset: None,
                        isolated_at: resulted_at,
                        isolated_at_given: true,
                        area: None,
                        note: None,
                        source: case_id.to_string(),
                        status: CaseStatus::Active,
                        registered_at: now,
                        recovered_at: None,
                    };
                    inner.store.put_case(&case, None)?;
                    inner.insert_case(case, now)
                }
            }
        };
        inner.derive_pending(slot);
        Ok(())
    }

    /// Discards the case a corrected positive had registered, if it exists and is not already.
    pub(crate) fn discard_sample_case(&self, case_id: &str) -> Result<()> {
        let exists = self
            .inner
            .state
            .read()
            .by_id
            .get(case_id)
            .map(|&s| self.inner.state.read().slots[s as usize].case.status);
        match exists {
            Some(CaseStatus::Active | CaseStatus::Recovered) => {
                self.update_case(case_id, CaseChange::Discard).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    /// `(area, sampled_at)` of every case not discarded that names an area.
    pub(crate) fn counted_case_areas(&self) -> Vec<(String, i64)> {
        let st = self.inner.state.read();
        st.slots
            .iter()
            .filter(|e| e.case.status.counts())
            .filter_map(|e| e.case.area.clone().map(|a| (a, e.case.sampled_at)))
            .collect()
    }

    /// Why this domain cannot store changes until the server restarts, if so: the health
    /// database's last write failed (after an I/O error redb refuses every later one until it is
    /// reopened), or the dose log's did. `/healthz` and `/readyz` answer `503` with it.
    pub fn write_failure(&self) -> Option<String> {
        if let Some(e) = self.inner.store.write_failure() {
            return Some(format!("the health database's last write failed ({e})"));
        }
        self.inner.vaccinations.write_failure()
    }

    /// Stops the health thread. Idempotent; every case change was already durable.
    pub fn shutdown(&self) {
        self.inner.stop();
    }
}

fn new_entry(case: Case, policy: &Policy) -> CaseEntry {
    let window = case.window(policy);
    let person: Arc<str> = Arc::from(case.person.as_str());
    let live = LiveTrace::empty(&standing::request(&person, window, policy));
    CaseEntry {
        id: Arc::from(case.id.as_str()),
        person,
        window,
        live: Arc::new(Mutex::new(live)),
        f1: 0,
        f2: 0,
        visits: Arc::from(Vec::new()),
        ticket: 0,
        case,
    }
}

impl Inner {
    /// The domain's current unix time, seconds.
    pub(crate) fn now(&self) -> i64 {
        match &self.clock {
            Some(c) => c.now(),
            None => self.engine.now(),
        }
    }

    /// Ends the health thread's wait for more notices (after a message that must not wait).
    pub(crate) fn hurry(&self) {
        self.hurried.store(true, Ordering::Release);
        if let Some(h) = &*self.thread.lock() {
            h.thread().unpark();
        }
    }

    fn stop(&self) {
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            let _ = self.tx.send(Msg::Stop);
            self.hurried.store(true, Ordering::Release);
            h.thread().unpark();
            // The last handle can be dropped on the health thread itself; it ends on Stop.
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    fn view(&self, e: &CaseEntry) -> CaseView {
        let counts = e.case.status.counts();
        CaseView {
            case: e.case.clone(),
            from: e.window.0,
            to: e.window.1,
            f1: if counts { e.f1 } else { 0 },
            f2: if counts { e.f2 } else { 0 },
        }
    }

    fn active_case_of(&self, person: &str) -> Option<CaseId> {
        let st = self.state.read();
        st.slots
            .iter()
            .find(|e| e.case.status == CaseStatus::Active && &*e.person == person)
            .map(|e| e.id.clone())
    }

    /// Adds a newly stored case to the state, pending its first derivation.
    fn insert_case(&self, case: Case, now: i64) -> Slot {
        let mut st = self.state.write();
        let slot = st.slots.len() as Slot;
        let entry = new_entry(case, &self.policy);
        let person = entry.person.clone();
        let active = entry.case.status == CaseStatus::Active;
        st.by_id.insert(entry.id.clone(), slot);
        st.slots.push(entry);
        *st.pending.entry(slot).or_insert(0) += 1;
        if active {
            st.tiers.set_active(&person, slot, true);
            self.publish(&st, vec![person], now);
        }
        slot
    }

    /// Derives the first standing trace of a case marked pending, installs it and clears the
    /// mark; scans held back for it meanwhile go to the health thread.
    fn derive_pending(&self, slot: Slot) {
        let ticket = self.ticket.fetch_add(1, Ordering::AcqRel) + 1;
        let request = self.request_of(slot);
        let (fresh, changes) = self.engine.live_trace(&request);
        let mut changed = Vec::new();
        let st = self.install_pending(slot, ticket, fresh, changes, &mut changed);
        let st = parking_lot::RwLockWriteGuard::downgrade(st);
        self.publish(&st, changed, self.now());
    }

    /// Installs a derivation of a pending case made elsewhere unless a later one was installed
    /// first or the case stopped counting, and clears one pending mark. Returns the state, still
    /// locked, for the caller to publish `changed`.
    fn install_pending(
        &self,
        slot: Slot,
        ticket: u64,
        fresh: LiveTrace,
        changes: LiveChanges,
        changed: &mut Vec<Arc<str>>,
    ) -> parking_lot::RwLockWriteGuard<'_, State> {
        let live = self.state.read().slots[slot as usize].live.clone();
        let mut live = live.lock();
        // Status and ticket change only under the case's mutex, held here.
        let install = {
            let st = self.state.read();
            let e = &st.slots[slot as usize];
            ticket > e.ticket && e.case.status.counts()
        };
        let changes = install.then(|| {
            let changes = live.replace(fresh, changes);
            self.exposure.write().apply(slot, &changes);
            changes
        });
        let mut st = self.state.write();
        if let Some(changes) = changes {
            st.slots[slot as usize].ticket = ticket;
            self.apply_changes(&mut st, slot, &live, &changes, changed);
        }
        drop(live);
        if let Some(n) = st.pending.get_mut(&slot) {
            *n -= 1;
            if *n == 0 {
                st.pending.remove(&slot);
                if let Some(held) = self.held_back.lock().remove(&slot) {
                    self.deferred.lock().push((slot, held));
                    // A send fails only once the tracker has stopped.
                    let _ = self.tx.send(Msg::Wake);
                    self.hurry();
                }
            }
        }
        st
    }

    /// The trace request of `slot`'s case.
    pub(crate) fn request_of(&self, slot: Slot) -> engine::TraceRequest {
        let st = self.state.read();
        let e = &st.slots[slot as usize];
        standing::request(&e.person, e.window, &self.policy)
    }

    /// Derives the standing traces of `slots` from scratch (at open) on every core, as pending
    /// registrations (scans stored meanwhile are held back), and installs them; the caller then
    /// tells every listed person's state once.
    fn derive_all(&self, slots: &[Slot]) {
        let work: Vec<(Slot, u64, engine::TraceRequest)> = {
            let mut st = self.state.write();
            slots
                .iter()
                .map(|&s| {
                    *st.pending.entry(s).or_insert(0) += 1;
                    let e = &st.slots[s as usize];
                    let ticket = self.ticket.fetch_add(1, Ordering::AcqRel) + 1;
                    (
                        s,
                        ticket,
                        standing::request(&e.person, e.window, &self.policy),
                    )
                })
                .collect()
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let next = std::sync::atomic::AtomicUsize::new(0);
        type Built = (Slot, u64, LiveTrace, LiveChanges);
        let done: Mutex<Vec<Built>> = Mutex::new(Vec::with_capacity(work.len()));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((slot, ticket, request)) = work.get(i) else {
                        break;
                    };
                    let (fresh, changes) = self.engine.live_trace(request);
                    done.lock().push((*slot, *ticket, fresh, changes));
                });
            }
        });
        let mut changed = Vec::new();
        for (slot, ticket, fresh, changes) in done.into_inner() {
            drop(self.install_pending(slot, ticket, fresh, changes, &mut changed));
            // The caller tells every listed person's state once, at the end.
            changed.clear();
        }
    }

    /// Applies one update of `slot`'s live trace (held locked by the caller) to the tier table
    /// and the case's counts (its windows went to the exposure index first, outside `state`);
    /// appends the persons whose listings changed.
    pub(crate) fn apply_changes(
        &self,
        st: &mut State,
        slot: Slot,
        live: &LiveTrace,
        changes: &LiveChanges,
        changed: &mut Vec<Arc<str>>,
    ) {
        let e = &mut st.slots[slot as usize];
        e.f1 = live.f1_len();
        e.f2 = live.f2_len();
        if changes.rebuilt || changes.case_visits_changed {
            e.visits = Arc::from(live.case_visits().to_vec());
        }
        let person = e.person.clone();
        if live.case_unknown() && e.case.status.counts() {
            st.unseen.insert(slot, person);
        } else {
            st.unseen.remove(&slot);
        }
        for c in &changes.listings {
            if st.tiers.set_listing(&c.person, slot, c.listing) {
                changed.push(c.person.clone());
            }
        }
    }

    pub(crate) fn status_of(&self, st: &State, person: &str, now: i64) -> PersonStatus {
        st.tiers.status(
            person,
            now,
            self.policy.f1_quarantine_s(),
            self.policy.f2_quarantine_s(),
            |slot| {
                st.slots.get(slot as usize).map(|e| CaseFacts {
                    id: &e.id,
                    f0_since: e.case.f0_since(),
                })
            },
        )
    }

    /// Recomputes the status of `persons` at `now`, tells the listeners of every change and
    /// schedules the next lapse checks.
    pub(crate) fn publish(&self, st: &State, mut persons: Vec<Arc<str>>, now: i64) {
        let mut told = self.told.lock();
        let told = &mut *told;
        persons.sort();
        persons.dedup();
        let listeners = self.listeners.read();
        for person in persons {
            let status = self.status_of(st, &person, now);
            if told.differs(&status) {
                for l in listeners.iter() {
                    l(&status);
                }
            }
            let next = st.tiers.next_lapse(
                &person,
                now,
                self.policy.f1_quarantine_s(),
                self.policy.f2_quarantine_s(),
            );
            let held = told.next_lapse.get(&person).copied();
            if held != next {
                if let Some(at) = held {
                    told.lapses.remove(&(at, person.clone()));
                    told.next_lapse.remove(&person);
                }
                if let Some(at) = next {
                    told.lapses.insert((at, person.clone()));
                    told.next_lapse.insert(person.clone(), at);
                }
            }
            told.record(status);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}
