//! Health declarations and follow-ups (contract section 11), the health pass, the public summary
//! and notices (section 12).
//!
//! The pass and the certificates look a person's recovered cases up in an index of each
//! person's case slots, brought up to date from the case list as it grows (slots are only ever
//! appended, and a slot's person never changes), instead of walking every case.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use redb::TableDefinition;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::case::CaseStatus;
use crate::client_keys::{ClientKey, Keyed, RecordKind, CLIENT_KEYS};
use crate::error::{Error, Result};
use crate::exposure::Slot;
use crate::health::{tier_slot, CaseEntry, Health};
use crate::store::{Store, LAST_DECLARATION, LAST_NOTICE};
use crate::tiers::Tier;

const DECLARATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("declarations");
const NOTICES: TableDefinition<&str, &[u8]> = TableDefinition::new("notices");

/// Longest notice title and body, and travel place names, in bytes.
pub const MAX_NOTICE_TITLE_BYTES: usize = 200;
pub const MAX_NOTICE_BODY_BYTES: usize = 20_000;
pub const MAX_PLACE_BYTES: usize = 100;
/// Most travel entries in one declaration.
pub const MAX_TRAVEL: usize = 50;
/// The most symptom codes a declaration may list (there are six; repeats are kept once).
pub const MAX_SYMPTOM_CODES: usize = 32;

/// A symptom code of a declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Symptom {
    Fever,
    Cough,
    ShortnessOfBreath,
    LossOfTasteOrSmell,
    SoreThroat,
    Fatigue,
}

impl Symptom {
    pub const ALL: [Symptom; 6] = [
        Symptom::Fever,
        Symptom::Cough,
        Symptom::ShortnessOfBreath,
        Symptom::LossOfTasteOrSmell,
        Symptom::SoreThroat,
        Symptom::Fatigue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Symptom::Fever => "fever",
            Symptom::Cough => "cough",
            Symptom::ShortnessOfBreath => "shortness_of_breath",
            Symptom::LossOfTasteOrSmell => "loss_of_taste_or_smell",
            Symptom::SoreThroat => "sore_throat",
            Symptom::Fatigue => "fatigue",
        }
    }

    pub fn parse(s: &str) -> Option<Symptom> {
        Symptom::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One trip of a declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Travel {
    pub from: String,
    pub to: String,
    /// `YYYY-MM-DD`.
    pub date: String,
}

/// A stored health declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declaration {
    pub id: String,
    pub person: String,
    pub ts: i64,
    /// As given (distinct).
    pub symptoms: Vec<Symptom>,
    pub exposure: bool,
    pub travel: Vec<Travel>,
}

/// A declaration as sent (`POST /v1/declarations`); symptom codes are checked here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewDeclaration {
    pub person: String,
    pub ts: Option<i64>,
    pub symptoms: Vec<String>,
    pub exposure: bool,
    pub travel: Vec<Travel>,
}

/// A person to follow up (`GET /v1/followups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followup {
    pub person: String,
    pub tier: Tier,
    /// The union over the last 14 days, sorted by code.
    pub symptoms: Vec<Symptom>,
    pub last_declared: i64,
}

/// The kind of a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoticeKind {
    Directive,
    News,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Directive => "directive",
            NoticeKind::News => "news",
        }
    }

    pub fn parse(s: &str) -> Option<NoticeKind> {
        match s {
            "directive" => Some(NoticeKind::Directive),
            "news" => Some(NoticeKind::News),
            _ => None,
        }
    }
}

/// A portal notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// `N` + a zero-padded counter, so ids sort in publication order.
    pub id: String,
    pub kind: NoticeKind,
    pub title: String,
    pub body: String,
    pub published_at: i64,
}

/// A gate's colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PassColor {
    Green,
    Yellow,
    Red,
}

impl PassColor {
    pub const ALL: [PassColor; 3] = [PassColor::Green, PassColor::Yellow, PassColor::Red];

    pub fn as_str(self) -> &'static str {
        match self {
            PassColor::Green => "green",
            PassColor::Yellow => "yellow",
            PassColor::Red => "red",
        }
    }
}

/// Why a pass has its colour (section 12's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PassBasis {
    Case,
    F1,
    PoolPositive,
    Vaccinated,
    Recovered,
    PartiallyVaccinated,
    NegativeTest,
    NoRecord,
    F2,
}

impl PassBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            PassBasis::Case => "case",
            PassBasis::F1 => "f1",
            PassBasis::PoolPositive => "pool_positive",
            PassBasis::Vaccinated => "vaccinated",
            PassBasis::Recovered => "recovered",
            PassBasis::PartiallyVaccinated => "partially_vaccinated",
            PassBasis::NegativeTest => "negative_test",
            PassBasis::NoRecord => "no_record",
            PassBasis::F2 => "f2",
        }
    }
}

/// A health pass (`GET /v1/persons/{id}/pass`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub person: String,
    pub color: PassColor,
    pub basis: PassBasis,
    pub as_of: i64,
}

/// The public summary (`GET /v1/summary`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub as_of: i64,
    pub cases_active: u64,
    pub cases_new_24h: u64,
    pub cases_7d: u64,
    pub f1: u64,
    pub f2: u64,
    pub present: u64,
    pub scans_24h: u64,
    pub samples_24h: u64,
    pub positive_24h: u64,
    pub dose1: u64,
    pub fully_vaccinated: u64,
}

/// Declarations (by person) and notices, in memory.
#[derive(Default)]
pub(crate) struct Records {
    inner: Mutex<RecordsState>,
    /// Taken only under the health state's read lock, and nothing is taken under it.
    case_slots: RwLock<CaseSlots>,
}

/// Each person's case slots, ascending, for the first `seen` slots of the case list.
#[derive(Default)]
struct CaseSlots {
    seen: usize,
    by_person: FxHashMap<Arc<str>, Vec<Slot>>,
}

impl Records {
    /// `f` of `person`'s case slots, ascending, among `slots` (the health state's case list,
    /// read-locked by the caller).
    fn with_case_slots<R>(
        &self,
        slots: &[CaseEntry],
        person: &str,
        f: impl FnOnce(&[Slot]) -> R,
    ) -> R {
        {
            let index = self.case_slots.read();
            if index.seen == slots.len() {
                return f(index.by_person.get(person).map_or(&[], Vec::as_slice));
            }
        }
        let mut index = self.case_slots.write();
        let from = index.seen;
        for (i, e) in slots.iter().enumerate().skip(from) {
            let Ok(slot) = Slot::try_from(i) else { break };
            index
                .by_person
                .entry(e.person.clone())
                .or_default()
                .push(slot);
            index.seen = i + 1;
        }
        f(index.by_person.get(person).map_or(&[], Vec::as_slice))
    }
}

#[derive(Default)]
struct RecordsState {
    declarations: BTreeMap<String, Declaration>,
    by_person: BTreeMap<String, Vec<String>>,
    next_declaration: u64,
    notices: BTreeMap<String, Notice>,
    next_notice: u64,
}

impl RecordsState {
    fn insert_declaration(&mut self, d: Declaration) {
        self.by_person
            .entry(d.person.clone())
            .or_default()
            .push(d.id.clone());
        self.declarations.insert(d.id.clone(), d);
    }
}

/// Stores a numbered record, its counter and the client's key (if it sent one) in one
/// transaction, so that a crash keeps all three or none.
fn store_numbered<T: Serialize>(
    store: &Store,
    record: (TableDefinition<&str, &[u8]>, &str, &T),
    counter: (&'static str, u64),
    keyed: Option<Keyed>,
    now: i64,
) -> Result<()> {
    let key_row = keyed.map(|k| k.into_row(record.1, now)).transpose()?;
    store.put_numbered(
        record,
        counter,
        key_row
            .as_ref()
            .map(|(row, value)| (CLIENT_KEYS, row.as_str(), value.as_slice())),
    )
}

fn number_of(id: &str, prefix: &str) -> u64 {
    id.strip_prefix(prefix)
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
}

impl Records {
    pub(crate) fn load(store: &crate::store::Store) -> Result<Records> {
        // Stores written before the counters were kept have them as their highest ids.
        let mut st = RecordsState {
            next_declaration: store.counter(LAST_DECLARATION)?,
            next_notice: store.counter(LAST_NOTICE)?,
            ..RecordsState::default()
        };
        for d in store.all::<Declaration>(DECLARATIONS)? {
            st.next_declaration = st.next_declaration.max(number_of(&d.id, "D"));
            st.insert_declaration(d);
        }
        for n in store.all::<Notice>(NOTICES)? {
            st.next_notice = st.next_notice.max(number_of(&n.id, "N"));
            st.notices.insert(n.id.clone(), n);
        }
        Ok(Records {
            inner: Mutex::new(st),
            case_slots: RwLock::default(),
        })
    }
}

/// Whether `date` is a real `YYYY-MM-DD` calendar date.
fn is_date(date: &str) -> bool {
    let b = date.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = date.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

impl Health {
    /// Stores a health declaration (`POST /v1/declarations`), durably.
    pub fn declare(&self, request: NewDeclaration) -> Result<Declaration> {
        self.declare_once(request, None).map(|(d, _)| d)
    }

    /// [`Health::declare`] with the client's idempotency key, if it sent one: a key already
    /// stored with the same request gives back the declaration it stored, and `false` (nothing
    /// stored now); with another request it is a `Conflict`.
    pub fn declare_once(
        &self,
        request: NewDeclaration,
        key: Option<&ClientKey>,
    ) -> Result<(Declaration, bool)> {
        let inner = &self.inner;
        let keyed = key
            .map(|k| Keyed::new(k, RecordKind::Declaration, &request))
            .transpose()?;
        let now = inner.now();
        // The key first (under the lock the store takes too): a retry gets its declaration even
        // when a check that depends on the time would refuse the request by now.
        let mut st = inner.records.inner.lock();
        // a declaration the purge has dropped since is stored again, as a new one
        if let Some(d) = Keyed::replay(keyed.as_ref(), &inner.store, &st.declarations)? {
            return Ok((d, false));
        }
        if request.symptoms.len() > MAX_SYMPTOM_CODES {
            return Err(Error::Invalid(format!(
                "at most {MAX_SYMPTOM_CODES} symptom codes"
            )));
        }
        if !engine::is_valid_person_id(&request.person) {
            return Err(Error::Invalid(
                "person must be 1-64 bytes of [A-Za-z0-9._:+-]".into(),
            ));
        }
        let ts = request.ts.unwrap_or(now);
        let oldest = now - i64::from(inner.engine.config().retention_days) * 86_400;
        if ts < oldest || ts > now + 300 {
            return Err(Error::Invalid(format!(
                "ts must be within [{oldest}, {}]",
                now + 300
            )));
        }
        let mut symptoms = Vec::new();
        for code in &request.symptoms {
            let s = Symptom::parse(code).ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown symptom '{}'; codes: fever, cough, shortness_of_breath, \
                     loss_of_taste_or_smell, sore_throat, fatigue",
                    code.escape_debug()
                ))
            })?;
            if !symptoms.contains(&s) {
                symptoms.push(s);
            }
        }
        if request.travel.len() > MAX_TRAVEL {
            return Err(Error::Invalid(format!(
                "at most {MAX_TRAVEL} travel entries"
            )));
        }
        for (i, t) in request.travel.iter().enumerate() {
            for (name, v) in [("from", &t.from), ("to", &t.to)] {
                if v.trim().is_empty() || v.len() > MAX_PLACE_BYTES {
                    return Err(Error::Invalid(format!(
                        "travel[{i}].{name} must be a province name of 1-{MAX_PLACE_BYTES} bytes"
                    )));
                }
            }
            if !is_date(&t.date) {
                return Err(Error::Invalid(format!(
                    "travel[{i}].date must be a date YYYY-MM-DD"
                )));
            }
        }
        let n = st.next_declaration + 1;
        let d = Declaration {
            id: format!("D{n:09}"),
            person: request.person,
            ts,
            symptoms,
            exposure: request.exposure,
            travel: request.travel,
        };
        store_numbered(
            &inner.store,
            (DECLARATIONS, &d.id, &d),
            (LAST_DECLARATION, n),
            keyed,
            now,
        )?;
        st.next_declaration = n;
        st.insert_declaration(d.clone());
        Ok((d, true))
    }

    /// Drops declarations older than the scan retention.
    pub(crate) fn purge_declarations(&self) -> Result<usize> {
        let inner = &self.inner;
        let cutoff = inner.now() - i64::from(inner.engine.config().retention_days) * 86_400;
        let mut st = inner.records.inner.lock();
        let old: Vec<String> = st
            .declarations
            .values()
            .filter(|d| d.ts < cutoff)
            .map(|d| d.id.clone())
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        inner
            .store
            .delete_all(DECLARATIONS, old.iter().map(String::as_str))?;
        for id in &old {
            if let Some(d) = st.declarations.remove(id) {
                if let Some(list) = st.by_person.get_mut(&d.person) {
                    list.retain(|x| x != id);
                    if list.is_empty() {
                        st.by_person.remove(&d.person);
                    }
                }
            }
        }
        Ok(old.len())
    }

    /// The persons to follow up now (`GET /v1/followups`): a symptom declared in the last 14 days
    /// and, besides, tier F1 or F2 now, a declared exposure in those 14 days, or an unresolved
    /// `pool_positive`. By `last_declared` descending, then person id.
    pub fn followups(&self) -> Vec<Followup> {
        let now = self.inner.now();
        let since = now - 14 * 86_400;
        let candidates: Vec<(String, BTreeSet<Symptom>, bool, i64)> = {
            let st = self.inner.records.inner.lock();
            st.by_person
                .iter()
                .filter_map(|(person, ids)| {
                    let recent: Vec<&Declaration> = ids
                        .iter()
                        .filter_map(|id| st.declarations.get(id))
                        .filter(|d| d.ts >= since && d.ts <= now)
                        .collect();
                    let symptoms: BTreeSet<Symptom> = recent
                        .iter()
                        .flat_map(|d| d.symptoms.iter().copied())
                        .collect();
                    if symptoms.is_empty() {
                        return None;
                    }
                    let exposure = recent.iter().any(|d| d.exposure);
                    let last = recent.iter().map(|d| d.ts).max()?;
                    Some((person.clone(), symptoms, exposure, last))
                })
                .collect()
        };
        let mut out: Vec<Followup> = candidates
            .into_iter()
            .filter_map(|(person, symptoms, exposure, last)| {
                let tier = self.status(&person).tier;
                let contact = matches!(tier, Tier::F1 | Tier::F2);
                (contact || exposure || self.has_unresolved_pool_positive(&person)).then(|| {
                    Followup {
                        person,
                        tier,
                        symptoms: symptoms.into_iter().collect(),
                        last_declared: last,
                    }
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.last_declared
                .cmp(&a.last_declared)
                .then_with(|| a.person.cmp(&b.person))
        });
        out
    }

    /// A person's health pass now, by the first of section 12's rules that holds, then the F2
    /// downgrade.
    pub fn pass(&self, person: &str) -> Pass {
        let now = self.inner.now();
        let status = self.status(person);
        let day = 86_400;
        let (color, basis) = if status.tier == Tier::F0 {
            (PassColor::Red, PassBasis::Case)
        } else if status.tier == Tier::F1 {
            (PassColor::Red, PassBasis::F1)
        } else if self.has_unresolved_pool_positive(person) {
            (PassColor::Red, PassBasis::PoolPositive)
        } else if self
            .fully_vaccinated_at(person)
            .is_some_and(|t| t <= now - 14 * day)
        {
            (PassColor::Green, PassBasis::Vaccinated)
        } else if self.recovered_since(person, now - 180 * day) {
            (PassColor::Green, PassBasis::Recovered)
        } else if self
            .first_dose_at(person)
            .is_some_and(|t| t <= now - 14 * day)
        {
            (PassColor::Yellow, PassBasis::PartiallyVaccinated)
        } else if self.has_negative_since(person, now - 72 * 3600) {
            (PassColor::Yellow, PassBasis::NegativeTest)
        } else {
            (PassColor::Red, PassBasis::NoRecord)
        };
        let (color, basis) = if status.tier == Tier::F2 && color == PassColor::Green {
            (PassColor::Yellow, PassBasis::F2)
        } else {
            (color, basis)
        };
        Pass {
            person: person.to_string(),
            color,
            basis,
            as_of: now,
        }
    }

    /// Whether `person` has a recovered case with `recovered_at >= since`.
    fn recovered_since(&self, person: &str, since: i64) -> bool {
        self.recoveries(person)
            .iter()
            .any(|(_, recovered_at)| *recovered_at >= since)
    }

    /// `(sampled_at, recovered_at)` of each of `person`'s recovered cases.
    pub fn recoveries(&self, person: &str) -> Vec<(i64, i64)> {
        let st = self.inner.state.read();
        self.inner
            .records
            .with_case_slots(&st.slots, person, |mine| {
                mine.iter()
                    .filter_map(|&s| st.slots.get(s as usize))
                    .filter(|e| &*e.person == person && e.case.status == CaseStatus::Recovered)
                    .filter_map(|e| e.case.recovered_at.map(|r| (e.case.sampled_at, r)))
                    .collect()
            })
    }

    /// The public summary now.
    pub fn summary(&self) -> Summary {
        let inner = &self.inner;
        let now = inner.now();
        let mut s = Summary {
            as_of: now,
            ..Summary::default()
        };
        {
            let st = inner.state.read();
            for e in &st.slots {
                let c = &e.case;
                if c.status == CaseStatus::Active {
                    s.cases_active += 1;
                }
                if c.status.counts() {
                    if c.registered_at > now - 86_400 {
                        s.cases_new_24h += 1;
                    }
                    if c.sampled_at > now - 7 * 86_400 {
                        s.cases_7d += 1;
                    }
                }
            }
            // Counted as told to tier listeners (the health thread tells a change within
            // milliseconds of storing it), plus the lapses due by now not told yet.
            let told = inner.told.lock();
            let mut counts = told.counts();
            for (_, person) in told.lapses.iter().take_while(|(at, _)| *at <= now) {
                if let Some(i) = tier_slot(told.tier(person)) {
                    counts[i] -= 1;
                }
                if let Some(i) = tier_slot(inner.status_of(&st, person, now).tier) {
                    counts[i] += 1;
                }
            }
            s.f1 = counts[1];
            s.f2 = counts[2];
        }
        let stats = inner.engine.stats();
        s.present = stats.present;
        s.scans_24h = {
            let mut cached = inner.scans_24h.lock();
            match *cached {
                Some((at, n)) if at == now => n,
                _ => {
                    let n = inner.engine.scans_after(now - 86_400);
                    *cached = Some((now, n));
                    n
                }
            }
        };
        let (samples, positive) = self.sample_counts_since(now - 86_400);
        s.samples_24h = samples;
        s.positive_24h = positive;
        let (dose1, fully) = self.vaccination_counts(now);
        s.dose1 = dose1;
        s.fully_vaccinated = fully;
        s
    }

    /// Publishes a notice (`POST /v1/notices`), durably.
    pub fn publish_notice(
        &self,
        kind: NoticeKind,
        title: String,
        body: String,
        published_at: Option<i64>,
    ) -> Result<Notice> {
        self.publish_notice_once(kind, title, body, published_at, None)
            .map(|(n, _)| n)
    }

    /// [`Health::publish_notice`] with the client's idempotency key, if it sent one (as
    /// [`Health::declare_once`]).
    pub fn publish_notice_once(
        &self,
        kind: NoticeKind,
        title: String,
        body: String,
        published_at: Option<i64>,
        key: Option<&ClientKey>,
    ) -> Result<(Notice, bool)> {
        let inner = &self.inner;
        let keyed = key
            .map(|k| {
                Keyed::new(
                    k,
                    RecordKind::Notice,
                    &(kind.as_str(), &title, &body, published_at),
                )
            })
            .transpose()?;
        if title.trim().is_empty() || title.len() > MAX_NOTICE_TITLE_BYTES {
            return Err(Error::Invalid(format!(
                "title must be 1-{MAX_NOTICE_TITLE_BYTES} bytes of text"
            )));
        }
        if body.len() > MAX_NOTICE_BODY_BYTES {
            return Err(Error::Invalid(format!(
                "body must be at most {MAX_NOTICE_BODY_BYTES} bytes"
            )));
        }
        let mut st = inner.records.inner.lock();
        if let Some(n) = Keyed::replay(keyed.as_ref(), &inner.store, &st.notices)? {
            return Ok((n, false));
        }
        let now = inner.now();
        let n = st.next_notice + 1;
        let notice = Notice {
            id: format!("N{n:06}"),
            kind,
            title,
            body,
            published_at: published_at.unwrap_or(now),
        };
        store_numbered(
            &inner.store,
            (NOTICES, &notice.id, &notice),
            (LAST_NOTICE, n),
            keyed,
            now,
        )?;
        st.next_notice = n;
        st.notices.insert(notice.id.clone(), notice.clone());
        Ok((notice, true))
    }

    /// Notices published by now, newest first, ties by id.
    pub fn notices(&self) -> Vec<Notice> {
        let now = self.inner.now();
        let st = self.inner.records.inner.lock();
        let mut out: Vec<Notice> = st
            .notices
            .values()
            .filter(|n| n.published_at <= now)
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            b.published_at
                .cmp(&a.published_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_calendar_dates() {
        assert!(is_date("2026-12-01"));
        assert!(is_date("2024-02-29"));
        assert!(!is_date("2023-02-29"));
        assert!(!is_date("2026-13-01"));
        assert!(!is_date("2026-1-01"));
        assert!(!is_date("2026-12-00"));
        assert!(!is_date("20261201"));
        assert!(!is_date("2026-12-+1"));
    }

    #[test]
    fn symptom_codes_round_trip() {
        for s in Symptom::ALL {
            assert_eq!(Symptom::parse(s.as_str()), Some(s));
        }
        assert_eq!(Symptom::parse("headache"), None);
    }
}
