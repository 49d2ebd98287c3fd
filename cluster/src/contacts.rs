//! The parts of contract section 5 the HTTP node applies itself when it traces by fan-out: the
//! clipping of a source's visits, the order of contact lists, and the split of many sources
//! over several queries with the merge of their answers. The overlaps are computed by each
//! shard's engine ([`engine::Engine::exposures_to`]).

use std::collections::HashMap;

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

/// Whether `visits` hold a visit through `last_contact`, the end of an overlap found in one of
/// them (the overlap lasts at least a second, so that visit starts before it).
pub fn holds_contact(visits: &[WireVisit], last_contact: i64) -> bool {
    visits
        .iter()
        .any(|v| v.start < last_contact && v.end >= last_contact)
}

/// Contract order of contact lists: exposure descending, then person id ascending.
pub fn sort_contacts(list: &mut [Exposure]) {
    list.sort_by(|a, b| {
        b.exposure_s
            .cmp(&a.exposure_s)
            .then_with(|| a.person.cmp(&b.person))
    });
}

/// Merges the shards' answers to queries over parts of the sources into what one query over all
/// of them gives: for each person the source with the largest exposure, ties by the smallest
/// source id (a pair's exposure does not depend on the other sources, so the best over all
/// parts is the best of the parts' bests).
pub fn merge_best(answers: impl IntoIterator<Item = Exposure>) -> Vec<Exposure> {
    let mut best: HashMap<String, Exposure> = HashMap::new();
    for e in answers {
        match best.get(&e.person) {
            Some(b)
                if b.exposure_s > e.exposure_s
                    || (b.exposure_s == e.exposure_s && b.source <= e.source) => {}
            _ => {
                best.insert(e.person.clone(), e);
            }
        }
    }
    best.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Source;

    fn exposure(person: &str, source: &str, exposure_s: i64) -> Exposure {
        Exposure {
            person: person.into(),
            source: source.into(),
            exposure_s,
            first_contact: exposure_s,
            last_contact: exposure_s + 1,
            venues: vec![format!("{source}-venue")],
        }
    }

    #[test]
    fn sources_split_under_the_limit_in_order_and_none_lost() {
        let sources: Vec<Source> = (0..50)
            .map(|i| Source {
                person: format!("f1-{i:02}"),
                visits: (0..i % 7).map(|k| v(&format!("V{k}"), k, k + 1)).collect(),
            })
            .collect();
        let limit = 600;
        let runs = crate::paging::runs(sources.clone(), limit);
        assert!(runs.len() > 1);
        for run in &runs {
            let bytes = crate::paging::json_len(run);
            assert!(bytes <= limit || run.len() == 1, "{bytes} bytes in a run");
        }
        let again: Vec<Source> = runs.into_iter().flatten().collect();
        assert_eq!(again, sources);
        assert_eq!(
            crate::paging::runs(sources.clone(), usize::MAX),
            vec![sources]
        );
        assert!(crate::paging::runs(Vec::<Source>::new(), limit).is_empty());
    }

    #[test]
    fn merged_parts_give_each_person_the_best_source_over_all() {
        let parts = vec![
            exposure("a", "s2", 900),
            exposure("b", "s2", 600),
            exposure("c", "s3", 700),
            // the second part
            exposure("a", "s1", 900),
            exposure("b", "s4", 1200),
            exposure("c", "s1", 300),
            exposure("d", "s5", 100),
        ];
        let mut merged = merge_best(parts);
        merged.sort_by(|x, y| x.person.cmp(&y.person));
        assert_eq!(
            merged,
            vec![
                // a tie: the smaller source id, with its own contact times and venues
                exposure("a", "s1", 900),
                exposure("b", "s4", 1200),
                exposure("c", "s3", 700),
                exposure("d", "s5", 100),
            ]
        );
    }

    fn v(venue: &str, start: i64, end: i64) -> WireVisit {
        WireVisit {
            venue: venue.into(),
            start,
            end,
        }
    }

    #[test]
    fn a_contact_is_held_by_the_visit_it_was_found_in_only() {
        let visits = [v("A", 0, 50), v("B", 100, 300)];
        assert!(holds_contact(&visits, 300));
        assert!(holds_contact(&visits, 101));
        // older visits only: the one of the contact is not applied here yet
        assert!(!holds_contact(&visits, 400));
        assert!(!holds_contact(&visits, 100));
        assert!(!holds_contact(&[], 10));
    }

    #[test]
    fn clip_drops_short_and_empty_visits() {
        let visits = [v("A", 0, 50), v("B", 100, 300), v("C", 400, 500)];
        let clipped = clip(&visits, 60, 150, 400);
        assert_eq!(clipped, vec![v("B", 150, 300)]);
    }
}

/// Split into runs and merged, a shard's answers are the answer to one query over all sources,
/// on a real engine with ties between sources (two F1s with the same overlap with a person).
#[cfg(test)]
mod against_the_engine {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use engine::{Action, Config, Durability, Engine, ManualClock, ScanInput, VenueSpec};

    use super::*;
    use crate::wire::Source;

    const T0: i64 = 1_800_000_000;

    /// An engine with 300 persons in at six venues at times on a 600 s grid (many equal
    /// overlaps), 20 of them present now, and 40 of the persons as sources (the F1s).
    fn engine_with_ties() -> (tempfile::TempDir, Engine, Vec<Source>) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::new(dir.path());
        c.durability = Durability::Os;
        c.clock = Arc::new(ManualClock::new(T0));
        let engine = Engine::open(c).unwrap();
        let venues: Vec<VenueSpec> = (0..6)
            .map(|i| VenueSpec {
                id: format!("V{i}"),
                name: format!("venue {i}"),
                province: None,
                default_stay_s: Some(1_800),
            })
            .collect();
        engine.register_venues(venues).unwrap();
        // 300 persons, each in at three venues at times on a 600 s grid: many equal overlaps.
        let scans = (0..900)
            .map(|i: i64| {
                Ok(ScanInput {
                    person: format!("p{:03}", i % 300),
                    venue: format!("V{}", (i * 7) % 6),
                    ts: Some(T0 - 40_000 + (i % 37) * 600 + (i / 300) * 9_000),
                    action: Action::In,
                })
            })
            .collect::<Vec<_>>();
        engine.ingest(scans).unwrap();
        let present = (0..20)
            .map(|i: i64| {
                Ok(ScanInput {
                    person: format!("p{:03}", i * 3),
                    venue: format!("V{}", i % 5),
                    ts: Some(T0 - 100 - i),
                    action: Action::In,
                })
            })
            .collect::<Vec<_>>();
        engine.ingest(present).unwrap();
        // 40 of them as sources (the F1s), the others' persons as candidates.
        let sources: Vec<Source> = (0..40)
            .map(|i| {
                let person = format!("p{:03}", i * 7);
                let visits = engine
                    .visits(&person, 0, i64::MAX)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| WireVisit {
                        venue: v.venue.to_string(),
                        start: v.start,
                        end: v.end,
                    })
                    .collect();
                Source { person, visits }
            })
            .collect();
        (dir, engine, sources)
    }

    #[test]
    fn split_and_merged_equals_one_query() {
        let (_dir, engine, sources) = engine_with_ties();
        let exclude: Vec<String> = sources.iter().map(|s| s.person.clone()).collect();
        let sorted = |mut list: Vec<Exposure>| {
            list.sort_by(|a, b| a.person.cmp(&b.person));
            list
        };
        let whole = sorted(crate::shard::exposures(
            &engine,
            sources.clone(),
            300,
            60,
            &exclude,
        ));
        assert!(whole.len() > 100, "{} persons exposed", whole.len());
        for limit in [200, 1_000, 5_000] {
            let runs = crate::paging::runs(sources.clone(), limit);
            assert!(runs.len() > 1);
            let parts = runs
                .into_iter()
                .flat_map(|run| crate::shard::exposures(&engine, run, 300, 60, &exclude));
            assert_eq!(sorted(merge_best(parts)), whole, "runs of {limit} bytes");
        }
        engine.shutdown().unwrap();
    }

    /// Asked a page at a time, a shard's answers (exposures, visits, venues with someone
    /// present) are its whole answer, each page within the budget.
    #[test]
    fn pages_of_an_answer_are_the_whole_answer() {
        use crate::shard::answer_from;
        use crate::wire::{Op, Reply};
        let (_dir, engine, sources) = engine_with_ties();
        let exclude: Vec<String> = sources.iter().take(5).map(|s| s.person.clone()).collect();
        let ask = |after: Option<String>, reply_bytes: Option<usize>| {
            answer_from(
                &engine,
                Op::Exposures {
                    sources: sources.clone(),
                    linger_s: 300,
                    threshold: 60,
                    exclude: exclude.clone(),
                    after,
                    reply_bytes,
                },
            )
        };
        let Reply::Exposures(mut whole) = ask(None, None) else {
            panic!("not exposures")
        };
        whole.sort_by(|a, b| a.person.cmp(&b.person));
        assert!(whole.len() > 100, "{} persons exposed", whole.len());
        assert!(!whole.iter().any(|e| exclude.contains(&e.person)));
        let budget = 1_500;
        let mut paged: Vec<Exposure> = Vec::new();
        let mut pages = 0;
        loop {
            let reply = ask(paged.last().map(|e| e.person.clone()), Some(budget));
            let sent = serde_json::to_vec(&reply).unwrap().len();
            let Reply::ExposurePage { exposures, more } = reply else {
                panic!("not a page")
            };
            assert!(sent <= budget || exposures.len() == 1, "{sent} bytes");
            assert!(!exposures.is_empty());
            paged.extend(exposures);
            pages += 1;
            if !more {
                break;
            }
        }
        assert!(pages > 5, "{pages} pages");
        assert_eq!(paged, whole);

        let mut persons: Vec<String> = (0..300).map(|i| format!("p{i:03}")).collect();
        persons.insert(150, "nobody".into());
        let visits = |persons: &[String], reply_bytes| {
            let Reply::Visits(list) = answer_from(
                &engine,
                Op::Visits {
                    persons: persons.to_vec(),
                    from: 0,
                    to: i64::MAX,
                    reply_bytes,
                },
            ) else {
                panic!("not visits")
            };
            list
        };
        let whole = visits(&persons, None);
        assert_eq!(whole.len(), persons.len());
        assert!(whole[150].is_none());
        let mut rest: &[String] = &persons;
        let mut paged = Vec::new();
        pages = 0;
        while !rest.is_empty() {
            let page = visits(rest, Some(800));
            assert!(!page.is_empty() && page.len() <= rest.len());
            let sent = serde_json::to_vec(&Reply::Visits(page.clone()))
                .unwrap()
                .len();
            assert!(sent <= 800 || page.len() == 1, "{sent} bytes");
            rest = &rest[page.len()..];
            paged.extend(page);
            pages += 1;
        }
        assert!(pages > 5, "{pages} pages");
        assert_eq!(paged, whole);

        let Reply::Top(mut present) = answer_from(&engine, Op::Present) else {
            panic!("not present venues")
        };
        present.sort();
        assert!(present.len() >= 5, "{present:?}");
        let mut paged: Vec<(String, u32)> = Vec::new();
        pages = 0;
        loop {
            let Reply::PresentPage { venues, more } = answer_from(
                &engine,
                Op::PresentAfter {
                    after: paged.last().map(|(v, _)| v.clone()),
                    reply_bytes: 90,
                },
            ) else {
                panic!("not a page of venues")
            };
            paged.extend(venues);
            pages += 1;
            if !more {
                break;
            }
        }
        assert!(pages > 1, "{pages} pages");
        assert_eq!(paged, present);
        engine.shutdown().unwrap();
    }
}
