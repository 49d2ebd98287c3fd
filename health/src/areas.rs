//! Areas (contract section 12): the province's districts and communes as a tree, with their
//! populations, stored in the health database; and the risk-level arithmetic of the 2021 national
//! rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A registered area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Area {
    pub id: String,
    pub name: String,
    pub population: u64,
    pub parent: Option<String>,
}

/// An area registration (`POST /v1/areas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaInput {
    pub id: String,
    pub name: String,
    pub population: i64,
    pub parent: Option<String>,
}

/// An area with its figures now (`GET /v1/areas`).
#[derive(Debug, Clone, PartialEq)]
pub struct AreaView {
    pub area: Area,
    pub cases_7d: u64,
    pub rate_per_100k: f64,
    pub dose1_coverage: f64,
    pub level: u8,
}

/// Longest accepted area name, in bytes.
pub const MAX_AREA_NAME_BYTES: usize = 200;

/// The level of an area: 1 if the 7-day rate per 100,000 is under 20, 2 under 50, 3 under 150,
/// else 4; then one higher (at most 4) if first-dose coverage is under 70 %.
pub fn risk_level(rate_per_100k: f64, dose1_coverage: f64) -> u8 {
    let base = if rate_per_100k < 20.0 {
        1
    } else if rate_per_100k < 50.0 {
        2
    } else if rate_per_100k < 150.0 {
        3
    } else {
        4
    };
    if dose1_coverage < 0.7 {
        (base + 1).min(4)
    } else {
        base
    }
}

/// The registered areas, by id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Areas {
    by_id: BTreeMap<String, Area>,
}

impl Areas {
    pub(crate) fn from_stored(areas: Vec<Area>) -> Areas {
        Areas {
            by_id: areas.into_iter().map(|a| (a.id.clone(), a)).collect(),
        }
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Area> {
        self.by_id.values()
    }

    /// `id` and every area above it (the area itself first). Stops at a cycle or an unknown id.
    pub(crate) fn self_and_ancestors(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = Some(id.to_string());
        while let Some(a) = cur {
            if out.contains(&a) || !self.by_id.contains_key(&a) {
                break;
            }
            cur = self.by_id.get(&a).and_then(|x| x.parent.clone());
            out.push(a);
        }
        out
    }

    /// Checks a registration against the areas registered so far and each other, all or none:
    /// ids, names, populations, parents registered before or in the same request, no cycle.
    /// Returns the areas to store.
    pub(crate) fn validate(&self, inputs: &[AreaInput]) -> Result<Vec<Area>> {
        if inputs.is_empty() {
            return Err(Error::Invalid("no area given".into()));
        }
        let mut next = self.by_id.clone();
        let mut out = Vec::with_capacity(inputs.len());
        for (i, a) in inputs.iter().enumerate() {
            let at = |m: String| Error::Invalid(format!("area {i} ({}): {m}", a.id));
            if !engine::is_valid_venue_id(&a.id) {
                return Err(at("id must be 1-64 bytes of [A-Za-z0-9._:-]".into()));
            }
            if a.name.trim().is_empty() || a.name.len() > MAX_AREA_NAME_BYTES {
                return Err(at(format!(
                    "name must be 1-{MAX_AREA_NAME_BYTES} bytes of text"
                )));
            }
            if a.population < 1 {
                return Err(at("population must be an integer >= 1".into()));
            }
            if a.parent.as_deref() == Some(a.id.as_str()) {
                return Err(at("an area cannot be its own parent".into()));
            }
            let area = Area {
                id: a.id.clone(),
                name: a.name.clone(),
                population: a.population as u64,
                parent: a.parent.clone(),
            };
            next.insert(area.id.clone(), area.clone());
            out.push(area);
        }
        // Parents must exist (registered before or in this request) and the tree must stay a tree.
        let all = Areas { by_id: next };
        for a in &out {
            if let Some(p) = &a.parent {
                if !all.contains(p) {
                    return Err(Error::Invalid(format!(
                        "area {}: parent {p} is not a registered area",
                        a.id
                    )));
                }
            }
            let mut seen = vec![a.id.clone()];
            let mut cur = a.parent.clone();
            while let Some(p) = cur {
                if seen.contains(&p) {
                    return Err(Error::Invalid(format!(
                        "area {}: its parents form a cycle",
                        a.id
                    )));
                }
                cur = all.by_id.get(&p).and_then(|x| x.parent.clone());
                seen.push(p);
            }
        }
        Ok(out)
    }

    pub(crate) fn apply(&mut self, areas: &[Area]) {
        for a in areas {
            self.by_id.insert(a.id.clone(), a.clone());
        }
    }
}

impl crate::Health {
    /// Registers or updates areas, all or none, durably (`POST /v1/areas`). Returns how many.
    pub fn register_areas(&self, inputs: Vec<AreaInput>) -> Result<usize> {
        let inner = &self.inner;
        let mut areas = inner.areas.write();
        let stored = areas.validate(&inputs)?;
        inner.store.put_all(
            crate::store::AREAS,
            stored.iter().map(|a| (a.id.as_str(), a)),
        )?;
        areas.apply(&stored);
        drop(areas);
        inner.vaccinations.areas_changed();
        Ok(stored.len())
    }

    /// Whether `id` is a registered area.
    pub fn is_area(&self, id: &str) -> bool {
        self.inner.areas.read().contains(id)
    }

    /// Every area with its figures at `now`, sorted by id (`GET /v1/areas`).
    pub fn area_views(&self) -> Vec<AreaView> {
        let inner = &self.inner;
        let now = inner.now();
        let areas = inner.areas.read();
        // Cases not discarded, sampled in (now - 7 days, now], by their area and every area above.
        let mut cases_7d: BTreeMap<String, u64> = BTreeMap::new();
        for (area, sampled_at) in self.counted_case_areas() {
            if sampled_at > now - 7 * 86_400 && sampled_at <= now {
                for a in areas.self_and_ancestors(&area) {
                    *cases_7d.entry(a).or_default() += 1;
                }
            }
        }
        let dose1 = inner
            .vaccinations
            .dose1_by_area(&|a: &str| areas.self_and_ancestors(a));
        areas
            .all()
            .map(|a| {
                let cases = cases_7d.get(&a.id).copied().unwrap_or(0);
                let pop = a.population.max(1) as f64;
                let rate = cases as f64 * 100_000.0 / pop;
                let coverage = dose1.get(&a.id).copied().unwrap_or(0) as f64 / pop;
                AreaView {
                    area: a.clone(),
                    cases_7d: cases,
                    rate_per_100k: rate,
                    dose1_coverage: coverage,
                    level: risk_level(rate, coverage),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(id: &str, parent: Option<&str>) -> AreaInput {
        AreaInput {
            id: id.into(),
            name: format!("Area {id}"),
            population: 1000,
            parent: parent.map(Into::into),
        }
    }

    #[test]
    fn levels_follow_the_thresholds() {
        // Each threshold, just under and at it, with coverage at and under 70 %.
        for (rate, level) in [
            (0.0, 1),
            (19.999, 1),
            (20.0, 2),
            (49.999, 2),
            (50.0, 3),
            (149.999, 3),
            (150.0, 4),
            (1e9, 4),
        ] {
            assert_eq!(risk_level(rate, 0.7), level, "rate {rate}");
            assert_eq!(risk_level(rate, 0.69999), (level + 1).min(4), "rate {rate}");
        }
    }

    #[test]
    fn parents_must_exist_and_never_cycle() {
        let mut areas = Areas::default();
        let stored = areas
            .validate(&[input("ST", None), input("ST-1", Some("ST"))])
            .unwrap();
        areas.apply(&stored);
        assert_eq!(areas.self_and_ancestors("ST-1"), ["ST-1", "ST"]);
        // A child in the same request before its parent is fine.
        assert!(areas
            .validate(&[input("X-1", Some("X")), input("X", None)])
            .is_ok());
        assert!(areas.validate(&[input("Y-1", Some("Y"))]).is_err());
        assert!(areas.validate(&[input("ST", Some("ST-1"))]).is_err());
        assert!(areas.validate(&[input("A", Some("A"))]).is_err());
        assert!(areas.validate(&[input("bad id", None)]).is_err());
        let mut zero = input("Z", None);
        zero.population = 0;
        assert!(areas.validate(&[zero]).is_err());
        // One bad area rejects the request whole.
        assert!(areas
            .validate(&[input("OK", None), input("bad/", None)])
            .is_err());
        assert!(!areas.contains("OK"));
    }
}
