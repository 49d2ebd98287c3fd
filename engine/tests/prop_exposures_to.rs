//! `Engine::exposures_to`, the trace step a shard runs in cluster mode (docs/cluster.md), against
//! the brute-force model: the persons of a random world are split over two engines, as the
//! cluster splits them over shards, and a trace is computed by fan-out as the HTTP node does it
//! (the case's visits from its engine, clipped; the F1 step on both engines with the case as the
//! one source; the F2 step with every F1's visits, clipped to its first contact, as the
//! sources). The merged F1 and F2 lists must equal the model's trace, field by field and in the
//! contract's order.
#![allow(clippy::unwrap_used)]

mod model;

use engine::{Engine, ExposureSource, SourcedExposure, TraceRequest, Visit};
use model::strategies::any_world;
use model::*;
use proptest::prelude::*;

/// An F1 contact as (person, exposure, first contact, last contact, venues).
type F1Row = (String, i64, i64, i64, Vec<String>);
/// An F2 contact as (person, via, exposure, first contact, last contact).
type F2Row = (String, String, i64, i64, i64);

/// The section 5 clipping of a source's visits: unclipped length `>= min_stay`, clipped to
/// `[from, to]`, empty ones dropped.
fn clip_source(visits: &[Visit], min_stay: i64, from: i64, to: i64) -> Vec<Visit> {
    visits
        .iter()
        .filter(|v| v.end - v.start >= min_stay)
        .filter_map(|v| {
            let (start, end) = (v.start.max(from), v.end.min(to));
            (end > start).then(|| Visit {
                venue: v.venue.clone(),
                start,
                end,
            })
        })
        .collect()
}

/// One trace step on every shard, merged: each person lives on one shard, so the lists are
/// disjoint.
fn step(
    shards: &[&Engine],
    sources: &[ExposureSource],
    r: &TraceRequest,
    exclude: &[&str],
) -> Vec<(SourcedExposure, String)> {
    let mut out: Vec<(SourcedExposure, String)> = shards
        .iter()
        .flat_map(|e| e.exposures_to(sources, r.linger_s, r.min_overlap_s, exclude))
        .map(|x| {
            let via = sources[x.source].person.clone();
            (x, via)
        })
        .collect();
    out.sort_by(|a, b| {
        b.0.exposure_s
            .cmp(&a.0.exposure_s)
            .then_with(|| a.0.person.cmp(&b.0.person))
    });
    out
}

/// A depth-1 or depth-2 trace by fan-out; `None` if the case has no scans.
fn fan_out_trace(
    shards: &[&Engine],
    shard_of: &dyn Fn(&str) -> usize,
    r: &TraceRequest,
) -> Option<(Vec<F1Row>, Vec<F2Row>)> {
    let case_visits = shards[shard_of(&r.person)].visits(&r.person, r.from, r.to)?;
    let case = ExposureSource {
        person: r.person.clone(),
        visits: clip_source(&case_visits, r.min_stay_s, r.from, r.to),
    };
    let f1 = step(shards, std::slice::from_ref(&case), r, &[&r.person]);
    let mut f2 = Vec::new();
    if r.depth >= 2 && !f1.is_empty() {
        let sources: Vec<ExposureSource> = f1
            .iter()
            .map(|(x, _)| {
                let p: &str = &x.person;
                let visits = shards[shard_of(p)]
                    .visits(p, x.first_contact, r.to)
                    .unwrap_or_default();
                ExposureSource {
                    person: p.to_string(),
                    visits: clip_source(&visits, r.min_stay_s, x.first_contact, r.to),
                }
            })
            .filter(|s| !s.visits.is_empty())
            .collect();
        let mut exclude: Vec<&str> = f1.iter().map(|(x, _)| &*x.person).collect();
        exclude.push(&r.person);
        f2 = step(shards, &sources, r, &exclude);
    }
    Some((
        f1.into_iter()
            .map(|(x, _)| {
                (
                    x.person.to_string(),
                    x.exposure_s,
                    x.first_contact,
                    x.last_contact,
                    x.venues.iter().map(|v| v.to_string()).collect(),
                )
            })
            .collect(),
        f2.into_iter()
            .map(|(x, via)| {
                (
                    x.person.to_string(),
                    via,
                    x.exposure_s,
                    x.first_contact,
                    x.last_contact,
                )
            })
            .collect(),
    ))
}

proptest! {
    #![proptest_config(model::strategies::config(96))]

    #[test]
    fn a_trace_by_fan_out_over_two_engines_equals_the_model(
        w in any_world(-3000, 300, 48),
        seed in any::<u64>(),
        min in prop_oneof![Just(0i64), Just(1i64), Just(60i64), Just(300i64), 1i64..400, Just(900i64)],
        min_stay in prop_oneof![3 => Just(0i64), 1 => 1i64..=700],
        linger in prop_oneof![3 => Just(0i64), 1 => 1i64..=900],
    ) {
        let model = w.model();
        let shard_of = |p: &str| w.persons.iter().position(|q| q == p).unwrap_or(0) % 2;
        let halves: Vec<Vec<Scan>> = (0..2)
            .map(|k| w.scans.iter().filter(|s| shard_of(&s.person) == k).cloned().collect())
            .collect();
        let engines: Vec<Harness> = halves
            .iter()
            .map(|scans| {
                let h = Harness::open(&w.venues, w.default_stay_s);
                ingest_batches(&h.engine, &shuffle_and_split(scans, seed, 3));
                h
            })
            .collect();
        let shards: Vec<&Engine> = engines.iter().map(|h| &h.engine).collect();
        for p in &w.persons {
            for depth in [1u8, 2] {
                let r = request_v2(p, FAR_PAST, FAR_FUTURE, min, depth, min_stay, linger);
                let want = model.trace(&r).map(|t| {
                    (
                        t.f1.iter()
                            .map(|c| (
                                c.person.to_string(),
                                c.exposure_s,
                                c.first_contact,
                                c.last_contact,
                                c.venues.iter().map(|v| v.to_string()).collect(),
                            ))
                            .collect::<Vec<_>>(),
                        t.f2.iter()
                            .map(|c| (
                                c.person.to_string(),
                                c.via.to_string(),
                                c.exposure_s,
                                c.first_contact,
                                c.last_contact,
                            ))
                            .collect::<Vec<_>>(),
                    )
                });
                let got = fan_out_trace(&shards, &shard_of, &r);
                prop_assert_eq!(
                    got, want,
                    "trace of {} min {} depth {} min_stay {} linger {}",
                    p, min, depth, min_stay, linger
                );
            }
        }
    }
}
