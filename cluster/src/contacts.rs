//! The overlap arithmetic of contract section 5, for one candidate person against a set of
//! sources (the case's clipped visits for F1, each F1's clipped visits for F2).

use crate::wire::{Exposure, Source, WireVisit};

/// A case's (or an F1's) visits as the contract uses them: unclipped length `>= min_stay_s`,
/// clipped to `[from, to]`, zero-length ones dropped, ascending by start then venue.
pub fn clip(visits: &[WireVisit], min_stay_s: i64, from: i64, to: i64) -> Vec<WireVisit> {
    let mut out: Vec<WireVisit> = visits
        .iter()
        .filter(|v| v.end - v.start >= min_stay_s)
        .filter_map(|v| {
            let start = v.start.max(from);
            let end = v.end.min(to);
            (end > start).then(|| WireVisit {
                venue: v.venue.clone(),
                start,
                end,
            })
        })
        .collect();
    out.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.venue.cmp(&b.venue)));
    out
}

/// Exposure of one candidate (visits `theirs`, unclipped) to one source: the sum of overlaps,
/// first overlap start, last overlap end, venues of the positive pairs (sorted, distinct).
pub fn exposure_to(
    source: &[WireVisit],
    theirs: &[WireVisit],
    linger_s: i64,
) -> Option<(i64, i64, i64, Vec<String>)> {
    let mut sum = 0i64;
    let mut first = i64::MAX;
    let mut last = i64::MIN;
    let mut venues: Vec<String> = Vec::new();
    for c in source {
        let c_end = c.end + linger_s;
        for q in theirs.iter().filter(|q| q.venue == c.venue) {
            let lo = c.start.max(q.start);
            let hi = c_end.min(q.end);
            if hi > lo {
                sum += hi - lo;
                first = first.min(lo);
                last = last.max(hi);
                venues.push(c.venue.clone());
            }
        }
    }
    if sum == 0 {
        return None;
    }
    venues.sort_unstable();
    venues.dedup();
    Some((sum, first, last, venues))
}

/// The best source for one candidate: the largest exposure `>= threshold`, ties by the smallest
/// source id (byte order).
pub fn best_exposure(
    person: &str,
    theirs: &[WireVisit],
    sources: &[Source],
    linger_s: i64,
    threshold: i64,
) -> Option<Exposure> {
    let mut best: Option<Exposure> = None;
    for s in sources {
        if s.person == person {
            continue;
        }
        let Some((sum, first, last, venues)) = exposure_to(&s.visits, theirs, linger_s) else {
            continue;
        };
        if sum < threshold {
            continue;
        }
        let better = match &best {
            None => true,
            Some(b) => sum > b.exposure_s || (sum == b.exposure_s && s.person < b.source),
        };
        if better {
            best = Some(Exposure {
                person: person.to_string(),
                source: s.person.clone(),
                exposure_s: sum,
                first_contact: first,
                last_contact: last,
                venues,
            });
        }
    }
    best
}

/// Contract order of contact lists: exposure descending, then person id ascending.
pub fn sort_contacts(list: &mut [Exposure]) {
    list.sort_by(|a, b| {
        b.exposure_s
            .cmp(&a.exposure_s)
            .then_with(|| a.person.cmp(&b.person))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(venue: &str, start: i64, end: i64) -> WireVisit {
        WireVisit {
            venue: venue.into(),
            start,
            end,
        }
    }

    #[test]
    fn overlap_sums_pairs_at_the_same_venue_with_linger() {
        let case = [v("A", 100, 200), v("B", 300, 400)];
        let q = [v("A", 150, 260), v("B", 390, 500), v("C", 0, 1000)];
        let (sum, first, last, venues) = exposure_to(&case, &q, 30).expect("exposed");
        // A: [150, 230) = 80; B: [390, 430) = 40.
        assert_eq!((sum, first, last), (120, 150, 430));
        assert_eq!(venues, vec!["A".to_string(), "B".to_string()]);
    }

    #[test]
    fn best_source_breaks_ties_by_smallest_id() {
        let sources = vec![
            Source {
                person: "q2".into(),
                visits: vec![v("A", 0, 100)],
            },
            Source {
                person: "q1".into(),
                visits: vec![v("A", 0, 100)],
            },
        ];
        let e = best_exposure("r", &[v("A", 0, 100)], &sources, 0, 1).expect("exposed");
        assert_eq!((e.source.as_str(), e.exposure_s), ("q1", 100));
        assert!(best_exposure("r", &[v("A", 0, 100)], &sources, 0, 101).is_none());
    }

    #[test]
    fn clip_drops_short_and_empty_visits() {
        let visits = [v("A", 0, 50), v("B", 100, 300), v("C", 400, 500)];
        let clipped = clip(&visits, 60, 150, 400);
        assert_eq!(clipped, vec![v("B", 150, 300)]);
    }
}
