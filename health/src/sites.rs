//! Exposure sites (contract section 10, public): the counted cases' visits as coarse intervals,
//! merged per venue, with no exact time and no person id.

use std::collections::BTreeMap;
use std::sync::Arc;

use engine::Visit;

/// Published times are multiples of this (15 minutes).
pub const SITE_GRANULARITY_S: i64 = 900;

/// One exposure site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposureSite {
    pub venue: Arc<str>,
    pub name: String,
    pub province: Option<String>,
    pub start: i64,
    pub end: i64,
}

/// Floors `start` and ceils `end` to the granularity.
fn coarsen(start: i64, end: i64) -> (i64, i64) {
    let g = SITE_GRANULARITY_S;
    (start.div_euclid(g) * g, -((-end).div_euclid(g)) * g)
}

/// The sites of `visits` (each case's visits after `min_stay_s`, clipped to its window), each
/// exposing `[start, end + linger)`: coarsened, merged per venue where they overlap or touch, and
/// kept while `end > since`. Sorted by start descending, then venue id. `describe` gives a
/// venue's name and province.
pub(crate) fn exposure_sites<'a>(
    visits: impl Iterator<Item = &'a Visit>,
    linger_s: i64,
    since: i64,
    describe: impl Fn(&str) -> (String, Option<String>),
) -> Vec<ExposureSite> {
    let mut by_venue: BTreeMap<Arc<str>, Vec<(i64, i64)>> = BTreeMap::new();
    for v in visits {
        by_venue
            .entry(v.venue.clone())
            .or_default()
            .push(coarsen(v.start, v.end.saturating_add(linger_s)));
    }
    let mut out = Vec::new();
    for (venue, mut intervals) in by_venue {
        intervals.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::new();
        for (s, e) in intervals {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let (name, province) = describe(&venue);
        for (start, end) in merged.into_iter().filter(|(_, e)| *e > since) {
            out.push(ExposureSite {
                venue: venue.clone(),
                name: name.clone(),
                province: province.clone(),
                start,
                end,
            });
        }
    }
    out.sort_by(|a, b| b.start.cmp(&a.start).then_with(|| a.venue.cmp(&b.venue)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(venue: &str, start: i64, end: i64) -> Visit {
        Visit {
            venue: Arc::from(venue),
            start,
            end,
        }
    }

    fn describe(v: &str) -> (String, Option<String>) {
        (format!("Venue {v}"), None)
    }

    #[test]
    fn sites_are_coarsened_merged_when_touching_and_sorted() {
        let visits = [
            visit("B", 1000, 1100), // -> [900, 1800)
            visit("B", 1800, 1801), // -> [1800, 2700): touches, merged
            visit("B", 5000, 5400), // -> [4500, 5400): apart
            visit("A", 900, 1800),  // exact multiples stay
            visit("C", 100, 200),   // -> [0, 900): ends at 900
        ];
        let sites = exposure_sites(visits.iter(), 0, 900, describe);
        let got: Vec<(&str, i64, i64)> =
            sites.iter().map(|s| (&*s.venue, s.start, s.end)).collect();
        // C ends at 900, not after `since`: left out.
        assert_eq!(
            got,
            vec![("B", 4500, 5400), ("A", 900, 1800), ("B", 900, 2700)]
        );
        assert_eq!(sites[0].name, "Venue B");
    }

    #[test]
    fn linger_extends_before_coarsening() {
        let visits = [visit("A", 1000, 1100)];
        let sites = exposure_sites(visits.iter(), 1000, 0, describe);
        assert_eq!((sites[0].start, sites[0].end), (900, 2700));
    }

    #[test]
    fn negative_times_round_outwards() {
        assert_eq!(coarsen(-1, 1), (-900, 900));
        assert_eq!(coarsen(-900, -900), (-900, -900));
    }
}
