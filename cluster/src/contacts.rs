//! The parts of contract section 5 the HTTP node applies itself when it traces by fan-out: the
//! clipping of a source's visits and the order of contact lists. The overlaps are computed by
//! each shard's engine ([`engine::Engine::exposures_to`]).

use crate::wire::{Exposure, WireVisit};

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
    fn clip_drops_short_and_empty_visits() {
        let visits = [v("A", 0, 50), v("B", 100, 300), v("C", 400, 500)];
        let clipped = clip(&visits, 60, 150, 400);
        assert_eq!(clipped, vec![v("B", 150, 300)]);
    }
}
