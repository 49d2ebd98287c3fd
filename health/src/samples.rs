//! Test samples and their results (contract section 11): tubes of one person or a pool, the lab's
//! result and its corrections, each member's result, the case a one-person positive registers,
//! and which pooled positives are still unresolved.
//!
//! A result and the case it registers or discards are two transactions (the health database's
//! and the case's); a crash between them is repaired at open (`reconcile`), so a stored positive
//! always ends with its case and a stored correction always ends with that case discarded. The
//! result of a one-person sample is stored with a mark ([`UNSETTLED`]) that is removed once its
//! case agrees with it; only marked samples are repaired, so a restart never re-decides a
//! result that was settled (a positive refused a case because the person had another active
//! case, say, once that case has recovered).

use std::collections::BTreeMap;

use parking_lot::Mutex;
use redb::TableDefinition;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::health::Health;

/// Samples by id (postcard `Sample`).
const SAMPLES: TableDefinition<&str, &[u8]> = TableDefinition::new("samples");
/// One-person samples whose result is stored and whose case may not agree with it yet, by id
/// (no value).
const UNSETTLED: TableDefinition<&str, &[u8]> = TableDefinition::new("samples_unsettled");

/// Default `--max-pool`.
pub const DEFAULT_MAX_POOL: usize = 10;
/// Samples and results are kept this long after `collected_at`.
pub const SAMPLE_RETENTION_DAYS: i64 = 180;

/// The kind of test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SampleKind {
    Pcr,
    Antigen,
}

impl SampleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SampleKind::Pcr => "pcr",
            SampleKind::Antigen => "antigen",
        }
    }

    pub fn parse(s: &str) -> Option<SampleKind> {
        match s {
            "pcr" => Some(SampleKind::Pcr),
            "antigen" => Some(SampleKind::Antigen),
            _ => None,
        }
    }
}

/// What the lab enters for a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LabResult {
    Positive,
    Negative,
    Invalid,
}

impl LabResult {
    pub const ALL: [LabResult; 3] = [LabResult::Positive, LabResult::Negative, LabResult::Invalid];

    pub fn as_str(self) -> &'static str {
        match self {
            LabResult::Positive => "positive",
            LabResult::Negative => "negative",
            LabResult::Invalid => "invalid",
        }
    }

    pub fn parse(s: &str) -> Option<LabResult> {
        LabResult::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One person's result of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberResult {
    Pending,
    Positive,
    Negative,
    Invalid,
    /// A positive pool: the member must be re-sampled alone.
    PoolPositive,
}

impl MemberResult {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberResult::Pending => "pending",
            MemberResult::Positive => "positive",
            MemberResult::Negative => "negative",
            MemberResult::Invalid => "invalid",
            MemberResult::PoolPositive => "pool_positive",
        }
    }
}

/// A stored sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub id: String,
    pub kind: SampleKind,
    /// As given (distinct).
    pub persons: Vec<String>,
    pub collected_at: i64,
    pub site: Option<String>,
    /// `None` while pending.
    pub result: Option<LabResult>,
    pub resulted_at: Option<i64>,
}

impl Sample {
    pub fn pooled(&self) -> bool {
        self.persons.len() > 1
    }

    /// The result each member has.
    pub fn member_result(&self) -> MemberResult {
        match (self.result, self.pooled()) {
            (None, _) => MemberResult::Pending,
            (Some(LabResult::Positive), true) => MemberResult::PoolPositive,
            (Some(LabResult::Positive), false) => MemberResult::Positive,
            (Some(LabResult::Negative), _) => MemberResult::Negative,
            (Some(LabResult::Invalid), _) => MemberResult::Invalid,
        }
    }

    /// The id of the case a one-person positive of this sample registers.
    pub fn case_id(&self) -> String {
        format!("{}{}", crate::case::SAMPLE_CASE_PREFIX, self.id)
    }
}

/// A sample registration (`POST /v1/samples`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSample {
    pub id: String,
    pub kind: SampleKind,
    pub persons: Vec<String>,
    pub collected_at: Option<i64>,
    pub site: Option<String>,
}

/// One of a person's results (`GET /v1/persons/{id}/results`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonResult {
    pub sample: String,
    pub kind: SampleKind,
    pub collected_at: i64,
    pub site: Option<String>,
    pub pooled: bool,
    pub result: MemberResult,
    pub resulted_at: Option<i64>,
}

/// Every sample in memory, with each person's samples.
#[derive(Default)]
pub(crate) struct Samples {
    inner: Mutex<SamplesState>,
    /// Held from storing a result to settling its case ([`Health::enter_result`]), so two
    /// results entered at once for one sample settle in the order they were stored (else the
    /// first could register its case after the second, a correction, found none to discard).
    settling: Mutex<()>,
}

#[derive(Default)]
struct SamplesState {
    by_id: BTreeMap<String, Sample>,
    by_person: FxHashMap<String, Vec<String>>,
}

impl SamplesState {
    fn insert(&mut self, s: Sample) {
        if !self.by_id.contains_key(&s.id) {
            for p in &s.persons {
                self.by_person
                    .entry(p.clone())
                    .or_default()
                    .push(s.id.clone());
            }
        }
        self.by_id.insert(s.id.clone(), s);
    }

    fn remove(&mut self, id: &str) {
        if let Some(s) = self.by_id.remove(id) {
            for p in &s.persons {
                if let Some(list) = self.by_person.get_mut(p) {
                    list.retain(|x| x != id);
                    if list.is_empty() {
                        self.by_person.remove(p);
                    }
                }
            }
        }
    }

    fn of_person(&self, person: &str) -> impl Iterator<Item = &Sample> {
        self.by_person
            .get(person)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }
}

impl Samples {
    pub(crate) fn load(store: &crate::store::Store) -> Result<Samples> {
        let mut st = SamplesState::default();
        for s in store.all::<Sample>(SAMPLES)? {
            st.insert(s);
        }
        Ok(Samples {
            inner: Mutex::new(st),
            settling: Mutex::new(()),
        })
    }
}

fn valid_sample_id(id: &str) -> bool {
    engine::is_valid_venue_id(id)
}

impl Health {
    /// Registers a sample (`POST /v1/samples`), durably. Returns it and whether it was created
    /// (`false`: an identical retry).
    pub fn register_sample(&self, request: NewSample) -> Result<(Sample, bool)> {
        let inner = &self.inner;
        let now = inner.now();
        if !valid_sample_id(&request.id) {
            return Err(Error::Invalid(
                "id must be 1-64 bytes of [A-Za-z0-9._:-]".into(),
            ));
        }
        if request.persons.is_empty() || request.persons.len() > inner.max_pool {
            return Err(Error::Invalid(format!(
                "persons must list 1 to {} persons",
                inner.max_pool
            )));
        }
        for (i, p) in request.persons.iter().enumerate() {
            if !engine::is_valid_person_id(p) {
                return Err(Error::Invalid(format!(
                    "persons[{i}] must be 1-64 bytes of [A-Za-z0-9._:+-]"
                )));
            }
            if request.persons[..i].contains(p) {
                return Err(Error::Invalid(format!(
                    "persons[{i}] ({p}) is listed twice"
                )));
            }
        }
        if let Some(site) = &request.site {
            if inner.engine.venue(site).is_none() {
                return Err(Error::Invalid(format!(
                    "site {site} is not a registered venue"
                )));
            }
        }
        let oldest = now - i64::from(inner.engine.config().retention_days) * 86_400;
        if let Some(t) = request.collected_at {
            if t < oldest || t > now + 300 {
                return Err(Error::Invalid(format!(
                    "collected_at must be within [{oldest}, {}]",
                    now + 300
                )));
            }
        }
        // A sample's case outlives the sample (cases are kept, samples 180 days): an id whose
        // case is still there was another tube's, and a result for this one would find that
        // person's case (and a correction discard it).
        let earlier_case = self
            .case(&format!(
                "{}{}",
                crate::case::SAMPLE_CASE_PREFIX,
                request.id
            ))
            .map(|c| c.case.person);
        let mut st = inner.samples.inner.lock();
        if let (None, Some(person)) = (st.by_id.get(&request.id), &earlier_case) {
            let whose = if request.persons.contains(person) {
                "an earlier sample of the same person"
            } else {
                "another person's earlier sample"
            };
            return Err(Error::Conflict(format!(
                "sample id {} was used before ({whose}, since purged, whose case sample:{} is \
                 kept); give this sample a new id",
                request.id, request.id
            )));
        }
        if let Some(existing) = st.by_id.get(&request.id) {
            let same_persons = {
                let mut a = existing.persons.clone();
                let mut b = request.persons.clone();
                a.sort();
                b.sort();
                a == b
            };
            if existing.kind == request.kind
                && existing.site == request.site
                && same_persons
                && request
                    .collected_at
                    .is_none_or(|t| t == existing.collected_at)
            {
                return Ok((existing.clone(), false));
            }
            return Err(Error::Conflict(format!(
                "sample {} is already registered with other fields",
                request.id
            )));
        }
        let sample = Sample {
            id: request.id,
            kind: request.kind,
            persons: request.persons,
            collected_at: request.collected_at.unwrap_or(now),
            site: request.site,
            result: None,
            resulted_at: None,
        };
        inner
            .store
            .put_all(SAMPLES, [(sample.id.as_str(), &sample)])?;
        st.insert(sample.clone());
        Ok((sample, true))
    }

    /// One sample.
    pub fn sample(&self, id: &str) -> Option<Sample> {
        self.inner.samples.inner.lock().by_id.get(id).cloned()
    }

    /// Enters (or corrects) a sample's result (`POST /v1/samples/{id}/result`), durably, and
    /// registers, discards or restores the case a one-person positive stands for. Returns the
    /// sample and whether its result changed.
    pub fn enter_result(
        &self,
        id: &str,
        result: LabResult,
        resulted_at: Option<i64>,
    ) -> Result<(Sample, bool)> {
        let inner = &self.inner;
        let _settling = inner.samples.settling.lock();
        let now = inner.now();
        let sample = {
            let mut st = inner.samples.inner.lock();
            let Some(existing) = st.by_id.get(id) else {
                return Err(Error::NotFound(format!("no sample {id}")));
            };
            if existing.result == Some(result) {
                // A retry. Its case is settled unless the request that stored the result failed
                // before settling it (a full disk, say): then this one settles it, and it is
                // the change the first one was not.
                if existing.pooled() || !inner.store.contains(UNSETTLED, id)? {
                    return Ok((existing.clone(), false));
                }
                let unsettled = existing.clone();
                drop(st);
                self.settle_sample_case(&unsettled, true)?;
                self.unmark(&unsettled.id);
                return Ok((unsettled, true));
            }
            let at = resulted_at.unwrap_or(now);
            if at < existing.collected_at {
                return Err(Error::Invalid(format!(
                    "resulted_at must not be before collected_at ({})",
                    existing.collected_at
                )));
            }
            if at > now + 300 {
                return Err(Error::Invalid(
                    "resulted_at is more than 300 s in the future".into(),
                ));
            }
            let mut updated = existing.clone();
            updated.result = Some(result);
            updated.resulted_at = Some(at);
            if updated.pooled() {
                inner
                    .store
                    .put_all(SAMPLES, [(updated.id.as_str(), &updated)])?;
            } else {
                inner
                    .store
                    .put_marked(SAMPLES, UNSETTLED, &updated.id, &updated)?;
            }
            st.insert(updated.clone());
            updated
        };
        self.settle_sample_case(&sample, true)?;
        if !sample.pooled() {
            self.unmark(&sample.id);
        }
        Ok((sample, true))
    }

    /// The case of sample `id` agrees with its result: nothing to repair at open. A mark left
    /// by a failure here is only repaired again (the case already agrees).
    fn unmark(&self, id: &str) {
        if let Err(e) = self.inner.store.delete_all(UNSETTLED, [id]) {
            tracing::warn!(error = %e, sample = id, "the settled mark of a sample was not removed");
        }
    }

    /// Makes the case of a one-person sample agree with its result. `restore`: a discarded case
    /// of a positive becomes active again (a correction corrected); at open, where nothing new
    /// happened, a discarded case stays discarded.
    fn settle_sample_case(&self, sample: &Sample, restore: bool) -> Result<()> {
        if sample.pooled() {
            return Ok(());
        }
        let (Some(result), Some(resulted_at)) = (sample.result, sample.resulted_at) else {
            return Ok(());
        };
        let person = &sample.persons[0];
        if result == LabResult::Positive {
            if !restore && self.case(&sample.case_id()).is_some() {
                return Ok(());
            }
            self.register_sample_case(&sample.case_id(), person, sample.collected_at, resulted_at)
        } else {
            self.discard_sample_case(&sample.case_id())
        }
    }

    /// A person's results, ascending by `collected_at`, then sample id.
    pub fn results(&self, person: &str) -> Vec<PersonResult> {
        let st = self.inner.samples.inner.lock();
        let mut out: Vec<PersonResult> = st
            .of_person(person)
            .map(|s| PersonResult {
                sample: s.id.clone(),
                kind: s.kind,
                collected_at: s.collected_at,
                site: s.site.clone(),
                pooled: s.pooled(),
                result: s.member_result(),
                resulted_at: s.resulted_at,
            })
            .collect();
        out.sort_by(|a, b| {
            a.collected_at
                .cmp(&b.collected_at)
                .then_with(|| a.sample.cmp(&b.sample))
        });
        out
    }

    /// Whether `person` has a `pool_positive` not yet resolved by a later one-person sample
    /// whose result is positive or negative.
    pub fn has_unresolved_pool_positive(&self, person: &str) -> bool {
        let st = self.inner.samples.inner.lock();
        let samples: Vec<&Sample> = st.of_person(person).collect();
        samples
            .iter()
            .filter(|s| s.member_result() == MemberResult::PoolPositive)
            .any(|pool| {
                !samples.iter().any(|s| {
                    !s.pooled()
                        && s.collected_at > pool.collected_at
                        && matches!(
                            s.member_result(),
                            MemberResult::Positive | MemberResult::Negative
                        )
                })
            })
    }

    /// Whether `person` has a `negative` result of a sample collected at or after `since`.
    pub fn has_negative_since(&self, person: &str, since: i64) -> bool {
        let st = self.inner.samples.inner.lock();
        let found = st
            .of_person(person)
            .any(|s| s.member_result() == MemberResult::Negative && s.collected_at >= since);
        found
    }

    /// `(samples collected after since, samples whose current result is positive with
    /// resulted_at after since)` (the summary's 24-hour figures).
    pub fn sample_counts_since(&self, since: i64) -> (u64, u64) {
        let st = self.inner.samples.inner.lock();
        let collected = st.by_id.values().filter(|s| s.collected_at > since).count() as u64;
        let positive = st
            .by_id
            .values()
            .filter(|s| {
                s.result == Some(LabResult::Positive) && s.resulted_at.is_some_and(|t| t > since)
            })
            .count() as u64;
        (collected, positive)
    }

    /// Every one-person positive or negative result of `person`: (kind, collected_at, positive).
    pub fn definite_results(&self, person: &str) -> Vec<(SampleKind, i64, bool)> {
        self.results(person)
            .into_iter()
            .filter(|r| !r.pooled)
            .filter_map(|r| match r.result {
                MemberResult::Positive => Some((r.kind, r.collected_at, true)),
                MemberResult::Negative => Some((r.kind, r.collected_at, false)),
                _ => None,
            })
            .collect()
    }

    /// Drops samples collected more than 180 days ago (memory and database).
    pub(crate) fn purge_samples(&self) -> Result<usize> {
        let inner = &self.inner;
        let cutoff = inner.now() - SAMPLE_RETENTION_DAYS * 86_400;
        let mut st = inner.samples.inner.lock();
        let old: Vec<String> = st
            .by_id
            .values()
            .filter(|s| s.collected_at < cutoff)
            .map(|s| s.id.clone())
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        inner
            .store
            .delete_all(SAMPLES, old.iter().map(String::as_str))?;
        for id in &old {
            st.remove(id);
        }
        Ok(old.len())
    }

    /// Repairs what a crash between a result and its case may have left (at open): the samples
    /// still marked [`UNSETTLED`].
    pub(crate) fn reconcile_samples(&self) -> Result<()> {
        for id in self.inner.store.keys(UNSETTLED)? {
            let sample = self.inner.samples.inner.lock().by_id.get(&id).cloned();
            if let Some(s) = sample.filter(|s| !s.pooled() && s.result.is_some()) {
                self.settle_sample_case(&s, false)?;
            }
            self.unmark(&id);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::checkpoint::tests::{close, open, T0};

    /// Sample `id`'s positive stored with its mark, its case not settled: what a request that
    /// failed (or a process that died) between the two leaves.
    fn stored_unsettled(health: &Health, id: &str) -> Sample {
        let mut s = health.sample(id).unwrap();
        s.result = Some(LabResult::Positive);
        s.resulted_at = Some(T0 - 60);
        health
            .inner
            .store
            .put_marked(SAMPLES, UNSETTLED, id, &s)
            .unwrap();
        s
    }

    fn one_person(id: &str, person: &str) -> NewSample {
        NewSample {
            id: id.into(),
            kind: SampleKind::Pcr,
            persons: vec![person.into()],
            collected_at: Some(T0 - 3600),
            site: None,
        }
    }

    #[test]
    fn a_positive_stored_without_its_case_gets_it_at_open_and_loses_its_mark() {
        let dir = tempfile::tempdir().unwrap();
        let health = open(dir.path());
        health.register_sample(one_person("S", "p")).unwrap();
        // The crash: the result is stored with its mark, the case is not.
        stored_unsettled(&health, "S");
        assert!(health.case("sample:S").is_none());
        close(health);

        let health = open(dir.path());
        assert!(health.case("sample:S").is_some(), "repaired at open");
        assert!(health.inner.store.keys(UNSETTLED).unwrap().is_empty());
        close(health);
    }

    #[test]
    fn a_retry_of_a_result_whose_case_failed_settles_it_and_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let health = open(dir.path());
        health.register_sample(one_person("S", "p")).unwrap();
        // The first request stored the result and failed before its case (a full disk).
        let s = stored_unsettled(&health, "S");
        health.inner.samples.inner.lock().insert(s);
        // The lab's retry: the case is registered, and the answer says it changed (so the
        // change is audited); a second retry is no change.
        let (_, changed) = health
            .enter_result("S", LabResult::Positive, Some(T0 - 60))
            .unwrap();
        assert!(changed);
        assert!(health.case("sample:S").is_some());
        assert!(health.inner.store.keys(UNSETTLED).unwrap().is_empty());
        let (_, changed) = health
            .enter_result("S", LabResult::Positive, Some(T0 - 60))
            .unwrap();
        assert!(!changed);
        close(health);
    }

    #[test]
    fn results_entered_at_once_for_one_sample_leave_the_case_agreeing_with_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let health = open(dir.path());
        let samples = 60;
        for i in 0..samples {
            health
                .register_sample(one_person(&format!("S{i}"), &format!("p{i}")))
                .unwrap();
        }
        std::thread::scope(|scope| {
            for result in [LabResult::Positive, LabResult::Negative] {
                let health = &health;
                scope.spawn(move || {
                    for i in 0..samples {
                        let _ = health.enter_result(&format!("S{i}"), result, Some(T0 - 60));
                    }
                });
            }
        });
        for i in 0..samples {
            let sample = health.sample(&format!("S{i}")).unwrap();
            let counts = health
                .case(&format!("sample:S{i}"))
                .is_some_and(|c| c.case.status.counts());
            assert_eq!(
                counts,
                sample.result == Some(LabResult::Positive),
                "S{i}: result {:?}, its case counts: {counts}",
                sample.result
            );
        }
        close(health);
    }

    #[test]
    fn a_settled_result_leaves_no_mark() {
        let dir = tempfile::tempdir().unwrap();
        let health = open(dir.path());
        health.register_sample(one_person("S", "p")).unwrap();
        health
            .enter_result("S", LabResult::Positive, Some(T0 - 60))
            .unwrap();
        assert!(health.case("sample:S").is_some());
        assert!(health.inner.store.keys(UNSETTLED).unwrap().is_empty());
        close(health);
    }
}
