//! Tiers (contract section 10): which counted cases list each person as F1 or F2, which persons
//! have an active case, and a person's tier at a given time by the contract's first-rule-that-
//! holds order.

use std::sync::Arc;

use engine::TraceResult;
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
    /// Replaces the listings of `slot` (from its previous trace `old`) with those of `new`
    /// (`None`: the case no longer counts). Appends every person whose listings changed.
    pub(crate) fn set_contacts(
        &mut self,
        slot: Slot,
        old: Option<&TraceResult>,
        new: Option<&TraceResult>,
        changed: &mut Vec<Arc<str>>,
    ) {
        let listings = |t: &TraceResult| -> Vec<(Arc<str>, Listing)> {
            let f1 = t.f1.iter().map(|c| {
                (
                    c.person.clone(),
                    Listing {
                        slot,
                        tier: Tier::F1,
                        first_contact: c.first_contact,
                        last_contact: c.last_contact,
                    },
                )
            });
            let f2 = t.f2.iter().map(|c| {
                (
                    c.person.clone(),
                    Listing {
                        slot,
                        tier: Tier::F2,
                        first_contact: c.first_contact,
                        last_contact: c.last_contact,
                    },
                )
            });
            f1.chain(f2).collect()
        };
        let old = old.map(listings).unwrap_or_default();
        let new = new.map(listings).unwrap_or_default();
        let new_of: FxHashMap<&Arc<str>, &Listing> = new.iter().map(|(p, l)| (p, l)).collect();
        for (person, listing) in &old {
            if new_of.get(person) == Some(&listing) {
                continue;
            }
            if let Some(list) = self.contacts.get_mut(person) {
                list.retain(|l| l.slot != slot);
                if list.is_empty() {
                    self.contacts.remove(person);
                }
            }
            changed.push(person.clone());
        }
        let old_of: FxHashMap<&Arc<str>, &Listing> = old.iter().map(|(p, l)| (p, l)).collect();
        for (person, listing) in new {
            if old_of.get(&person) == Some(&&listing) {
                continue;
            }
            let list = self.contacts.entry(person.clone()).or_default();
            list.retain(|l| l.slot != slot);
            list.push(listing);
            changed.push(person);
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

    /// When each of `person`'s listings lapses, after `now`.
    pub(crate) fn lapses(
        &self,
        person: &str,
        now: i64,
        f1_quarantine_s: i64,
        f2_quarantine_s: i64,
        out: &mut Vec<i64>,
    ) {
        for l in self.contacts.get(person).into_iter().flatten() {
            let q = if l.tier == Tier::F1 {
                f1_quarantine_s
            } else {
                f2_quarantine_s
            };
            let at = l.last_contact.saturating_add(q);
            if at > now {
                out.push(at);
            }
        }
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
