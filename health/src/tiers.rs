//! Tiers (contract section 10): which counted cases list each person as F1 or F2, which persons
//! have an active case, and a person's tier at a given time by the contract's first-rule-that-
//! holds order.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::exposure::Slot;

/// A person's tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    F0,
    F1,
    F2,
    None,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::F0, Tier::F1, Tier::F2, Tier::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::F0 => "F0",
            Tier::F1 => "F1",
            Tier::F2 => "F2",
            Tier::None => "none",
        }
    }
}

/// A person's tier now (`GET /v1/persons/{id}/status`, and each tier event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonStatus {
    pub person: Arc<str>,
    pub tier: Tier,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Case ids, sorted (byte order).
    pub cases: Vec<Arc<str>>,
}

impl PersonStatus {
    pub(crate) fn none(person: Arc<str>) -> PersonStatus {
        PersonStatus {
            person,
            tier: Tier::None,
            since: None,
            until: None,
            cases: Vec::new(),
        }
    }
}

/// One case listing a person as a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listing {
    slot: Slot,
    tier: Tier,
    first_contact: i64,
    last_contact: i64,
}

/// What a status computation needs to know of a case.
pub(crate) struct CaseFacts<'a> {
    pub id: &'a Arc<str>,
    pub f0_since: i64,
}

/// The listings of every counted case's contacts, and the active cases by person.
#[derive(Default)]
pub(crate) struct TierTable {
    contacts: FxHashMap<Arc<str>, Vec<Listing>>,
    active: FxHashMap<Arc<str>, Vec<Slot>>,
}

impl TierTable {
    /// Sets (or, with `None`, removes) `slot`'s listing of `person`. Returns whether it changed.
    pub(crate) fn set_listing(
        &mut self,
        person: &Arc<str>,
        slot: Slot,
        listing: Option<engine::Listing>,
    ) -> bool {
        let new = listing.map(|l| Listing {
            slot,
            tier: match l.degree {
                engine::Degree::F1 => Tier::F1,
                engine::Degree::F2 => Tier::F2,
            },
            first_contact: l.first_contact,
            last_contact: l.last_contact,
        });
        match self.contacts.get_mut(person) {
            Some(list) => {
                let old = list.iter().position(|l| l.slot == slot);
                match (old, new) {
                    (Some(i), Some(n)) => {
                        if list[i] == n {
                            return false;
                        }
                        list[i] = n;
                    }
                    (Some(i), None) => {
                        list.swap_remove(i);
                        if list.is_empty() {
                            self.contacts.remove(person);
                        }
                    }
                    (None, Some(n)) => list.push(n),
                    (None, None) => return false,
                }
                true
            }
            None => match new {
                Some(n) => {
                    self.contacts.insert(person.clone(), vec![n]);
                    true
                }
                None => false,
            },
        }
    }

    /// Marks `slot` as an active case of `person`, or not.
    pub(crate) fn set_active(&mut self, person: &Arc<str>, slot: Slot, active: bool) {
        let list = self.active.entry(person.clone()).or_default();
        list.retain(|s| *s != slot);
        if active {
            list.push(slot);
        }
        if list.is_empty() {
            self.active.remove(person);
        }
    }

    /// Every person with a listing or an active case.
    pub(crate) fn persons(&self) -> impl Iterator<Item = &Arc<str>> {
        self.contacts.keys().chain(
            self.active
                .keys()
                .filter(|p| !self.contacts.contains_key(*p)),
        )
    }

    /// The first time after `now` at which one of `person`'s listings lapses.
    pub(crate) fn next_lapse(
        &self,
        person: &str,
        now: i64,
        f1_quarantine_s: i64,
        f2_quarantine_s: i64,
    ) -> Option<i64> {
        self.contacts
            .get(person)
            .into_iter()
            .flatten()
            .map(|l| {
                let q = if l.tier == Tier::F1 {
                    f1_quarantine_s
                } else {
                    f2_quarantine_s
                };
                l.last_contact.saturating_add(q)
            })
            .filter(|&at| at > now)
            .min()
    }

    /// `person`'s tier at `now`, by the first rule of section 10 that holds.
    pub(crate) fn status<'a>(
        &self,
        person: &str,
        now: i64,
        f1_quarantine_s: i64,
        f2_quarantine_s: i64,
        facts: impl Fn(Slot) -> Option<CaseFacts<'a>>,
    ) -> PersonStatus {
        let name: Arc<str> = self
            .contacts
            .get_key_value(person)
            .map(|(k, _)| k.clone())
            .or_else(|| self.active.get_key_value(person).map(|(k, _)| k.clone()))
            .unwrap_or_else(|| Arc::from(person));
        if let Some(slots) = self.active.get(person) {
            // Normally one; the earliest-starting one if several (a restored sample case).
            let best = slots
                .iter()
                .filter_map(|s| facts(*s))
                .min_by(|a, b| a.f0_since.cmp(&b.f0_since).then_with(|| a.id.cmp(b.id)));
            if let Some(f) = best {
                return PersonStatus {
                    person: name,
                    tier: Tier::F0,
                    since: Some(f.f0_since),
                    until: None,
                    cases: vec![f.id.clone()],
                };
            }
        }
        let Some(listings) = self.contacts.get(person) else {
            return PersonStatus::none(name);
        };
        for (tier, quarantine) in [(Tier::F1, f1_quarantine_s), (Tier::F2, f2_quarantine_s)] {
            let mut since = i64::MAX;
            let mut until = i64::MIN;
            let mut cases: Vec<Arc<str>> = Vec::new();
            for l in listings.iter().filter(|l| l.tier == tier) {
                let end = l.last_contact.saturating_add(quarantine);
                if now >= end {
                    continue;
                }
                let Some(f) = facts(l.slot) else { continue };
                since = since.min(l.first_contact);
                until = until.max(end);
                cases.push(f.id.clone());
            }
            if !cases.is_empty() {
                cases.sort();
                cases.dedup();
                return PersonStatus {
                    person: name,
                    tier,
                    since: Some(since),
                    until: Some(until),
                    cases,
                };
            }
        }
        PersonStatus::none(name)
    }
}
