//! The standing traces and tiers against a brute-force model (contract section 10): after every
//! step of a random interleaving of scan batches (late, duplicated, out of order), case
//! registrations, recoveries, discards and clock advances, every person's tier, every case's
//! contacts and the exposure sites equal what recomputing every case's trace from all scans
//! gives. The model's trace is the engine suite's independent one (`engine/tests/model`); the
//! tier rules and the exposure-site rules are transcribed here from the contract.
//!
//! `a_stale_trace_is_caught` shows the comparison fails when the freshness mechanism is off.
#![allow(clippy::unwrap_used)]

#[path = "../../engine/tests/model/mod.rs"]
mod model;

use std::collections::BTreeMap;

use engine::{Action, TraceRequest, TraceResult};
use health::{CaseChange, CaseStatus, Health, HealthConfig, NewCase, Policy, Tier};
use model::{Harness, Model, Scan, PERSONS, T0, VENUES};
use proptest::prelude::*;

/// Scans fall in `[T0 + LO, T0 + HI]`; the clock starts at `T0 + HI`.
const LO: i64 = -4 * 3600;
const HI: i64 = 2 * 3600;

#[derive(Debug, Clone)]
enum Op {
    /// Scans (raw: person, venue, offset, out), stored in this order; `dup` re-sends them.
    Scans(Vec<(usize, usize, i64, bool)>, bool),
    Register {
        person: usize,
        sampled: i64,
        onset: Option<i64>,
        isolated: Option<i64>,
    },
    Recover(usize),
    Discard(usize),
    Advance(i64),
}

#[derive(Debug, Clone)]
struct MCase {
    id: String,
    person: String,
    sampled_at: i64,
    onset: Option<i64>,
    isolated_at: i64,
    status: CaseStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MStatus {
    tier: Tier,
    since: Option<i64>,
    until: Option<i64>,
    cases: Vec<String>,
}

struct World {
    model: Model,
    cases: Vec<MCase>,
    policy: Policy,
}

impl World {
    fn window(&self, c: &MCase) -> (i64, i64) {
        let first = c.onset.map_or(c.sampled_at, |o| o.min(c.sampled_at));
        (
            first - i64::from(self.policy.lookback_days) * 86_400,
            c.isolated_at,
        )
    }

    /// The case's trace recomputed from every scan (section 5 over the case window).
    fn trace(&self, c: &MCase) -> Option<TraceResult> {
        let (from, to) = self.window(c);
        if from > to {
            return None;
        }
        self.model.trace(&TraceRequest {
            person: c.person.clone(),
            from,
            to,
            min_overlap_s: self.policy.min_overlap_s,
            depth: 2,
            min_stay_s: self.policy.min_stay_s,
            linger_s: self.policy.linger_s,
        })
    }

    /// Section 10's tier rules, first that holds.
    fn status(&self, person: &str, now: i64, traces: &BTreeMap<String, TraceResult>) -> MStatus {
        if let Some(c) = self
            .cases
            .iter()
            .find(|c| c.status == CaseStatus::Active && c.person == person)
        {
            return MStatus {
                tier: Tier::F0,
                since: Some(c.onset.map_or(c.sampled_at, |o| o.min(c.sampled_at))),
                until: None,
                cases: vec![c.id.clone()],
            };
        }
        let f1_q = i64::from(self.policy.f1_quarantine_days) * 86_400;
        let f2_q = i64::from(self.policy.f2_quarantine_days) * 86_400;
        for tier in [Tier::F1, Tier::F2] {
            let mut hits: Vec<(String, i64, i64)> = Vec::new();
            for c in self
                .cases
                .iter()
                .filter(|c| c.status != CaseStatus::Discarded)
            {
                let Some(t) = traces.get(&c.id) else { continue };
                let found = if tier == Tier::F1 {
                    t.f1.iter()
                        .find(|x| &*x.person == person)
                        .map(|x| (x.first_contact, x.last_contact + f1_q))
                } else {
                    t.f2.iter()
                        .find(|x| &*x.person == person)
                        .map(|x| (x.first_contact, x.last_contact + f2_q))
                };
                if let Some((first, until)) = found {
                    if now < until {
                        hits.push((c.id.clone(), first, until));
                    }
                }
            }
            if !hits.is_empty() {
                let mut cases: Vec<String> = hits.iter().map(|h| h.0.clone()).collect();
                cases.sort();
                return MStatus {
                    tier,
                    since: hits.iter().map(|h| h.1).min(),
                    until: hits.iter().map(|h| h.2).max(),
                    cases,
                };
            }
        }
        MStatus {
            tier: Tier::None,
            since: None,
            until: None,
            cases: Vec::new(),
        }
    }

    /// Section 10's exposure sites, as (venue, start, end).
    fn sites(&self, traces: &BTreeMap<String, TraceResult>, since: i64) -> Vec<(String, i64, i64)> {
        let mut per_venue: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
        for c in self
            .cases
            .iter()
            .filter(|c| c.status != CaseStatus::Discarded)
        {
            let Some(t) = traces.get(&c.id) else { continue };
            for v in &t.visits {
                let s = (v.start as f64 / 900.0).floor() as i64 * 900;
                let e = ((v.end + self.policy.linger_s) as f64 / 900.0).ceil() as i64 * 900;
                per_venue
                    .entry(v.venue.to_string())
                    .or_default()
                    .push((s, e));
            }
        }
        let mut out = Vec::new();
        for (venue, mut iv) in per_venue {
            iv.sort();
            let mut merged: Vec<(i64, i64)> = Vec::new();
            for (s, e) in iv {
                if let Some(last) = merged.last_mut() {
                    if s <= last.1 {
                        last.1 = last.1.max(e);
                        continue;
                    }
                }
                merged.push((s, e));
            }
            out.extend(
                merged
                    .into_iter()
                    .filter(|(_, e)| *e > since)
                    .map(|(s, e)| (venue.clone(), s, e)),
            );
        }
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }
}

/// Runs `ops` against a live engine + health domain and the model; the first difference found.
fn run(
    stays: &[u32],
    n_persons: usize,
    policy: Policy,
    ops: &[Op],
    freshness: bool,
) -> Result<(), String> {
    let venues: Vec<(String, Option<u32>)> = stays
        .iter()
        .enumerate()
        .map(|(i, &s)| (VENUES[i].to_string(), Some(s)))
        .collect();
    let h = Harness::open(&venues, 600);
    h.clock.set(T0 + HI);
    let dir = tempfile::tempdir().unwrap();
    let mut config = HealthConfig::new(dir.path());
    config.policy = policy;
    config.freshness = freshness;
    let health = Health::open(h.engine.clone(), config).unwrap();
    let mut w = World {
        model: Model::new(&venues, 600),
        cases: Vec::new(),
        policy,
    };
    let persons: Vec<String> = PERSONS[..n_persons].iter().map(|p| p.to_string()).collect();
    for (step, op) in ops.iter().enumerate() {
        let now = h.engine.now();
        match op {
            Op::Scans(raw, dup) => {
                let scans: Vec<Scan> = raw
                    .iter()
                    .map(|&(p, v, off, out)| Scan {
                        person: persons[p % n_persons].clone(),
                        venue: venues[v % venues.len()].0.clone(),
                        ts: T0 + off,
                        action: if out { Action::Out } else { Action::In },
                    })
                    .collect();
                let mut items: Vec<_> = scans.iter().map(Scan::item).collect();
                if *dup {
                    items.extend(scans.iter().map(Scan::item));
                }
                let out = h.engine.ingest(items).unwrap();
                assert!(out.rejected.is_empty(), "{:?}", out.rejected);
                for s in scans {
                    w.model.insert(s);
                }
            }
            Op::Register {
                person,
                sampled,
                onset,
                isolated,
            } => {
                let person = persons[person % n_persons].clone();
                let request = NewCase {
                    person: person.clone(),
                    sampled_at: T0 + sampled,
                    onset: onset.map(|o| T0 + o),
                    isolated_at: isolated.map(|i| T0 + i),
                    ..NewCase::default()
                };
                let has_active = w
                    .cases
                    .iter()
                    .any(|c| c.person == person && c.status == CaseStatus::Active);
                match health.register_case(request) {
                    Ok((view, created)) => {
                        if has_active || !created {
                            return Err(format!("step {step}: registered over an active case"));
                        }
                        w.cases.push(MCase {
                            id: view.case.id.clone(),
                            person,
                            sampled_at: T0 + sampled,
                            onset: onset.map(|o| T0 + o),
                            isolated_at: isolated.map_or(now, |i| T0 + i),
                            status: CaseStatus::Active,
                        });
                    }
                    Err(health::Error::Conflict(_)) if has_active => {}
                    Err(e) => return Err(format!("step {step}: register: {e}")),
                }
            }
            Op::Recover(i) | Op::Discard(i) => {
                if w.cases.is_empty() {
                    continue;
                }
                let k = i % w.cases.len();
                let c = &mut w.cases[k];
                let (change, allowed, to) = match op {
                    Op::Recover(_) => (
                        CaseChange::Recover { at: None },
                        c.status == CaseStatus::Active,
                        CaseStatus::Recovered,
                    ),
                    _ => (
                        CaseChange::Discard,
                        c.status != CaseStatus::Discarded,
                        CaseStatus::Discarded,
                    ),
                };
                let result = health.update_case(&c.id, change);
                match (allowed, result) {
                    (true, Ok(view)) => {
                        c.status = to;
                        if view.case.status != to {
                            return Err(format!("step {step}: status {:?}", view.case.status));
                        }
                    }
                    (false, Ok(_)) if c.status == to => {}
                    (false, Err(health::Error::Conflict(_))) => {}
                    (a, r) => return Err(format!("step {step}: {op:?} allowed={a} got {r:?}")),
                }
            }
            Op::Advance(s) => {
                // Stay inside the retention period, so every generated scan is still accepted.
                if now + s <= T0 + 19 * 86_400 {
                    h.clock.advance(*s);
                }
            }
        }
        health.settle().unwrap();
        if std::env::var("DEBUG_MODEL").is_ok() {
            for c in &w.cases {
                eprintln!(
                    "step {step}: {:?} live {:?} model {:?}",
                    c.id,
                    health.contacts(&c.id),
                    w.trace(c)
                );
            }
        }
        check(&h, &health, &w, &persons).map_err(|e| format!("after step {step} ({op:?}): {e}"))?;
    }
    health.shutdown();
    Ok(())
}

fn check(h: &Harness, health: &Health, w: &World, persons: &[String]) -> Result<(), String> {
    let now = h.engine.now();
    let mut traces = BTreeMap::new();
    for c in &w.cases {
        let expected = w.trace(c);
        if let Some(t) = &expected {
            traces.insert(c.id.clone(), t.clone());
        }
        let got = health.contacts(&c.id).ok_or("a case vanished")?;
        let view = health.case(&c.id).ok_or("a case vanished")?;
        if c.status == CaseStatus::Discarded {
            if !got.f1.is_empty() || !got.f2.is_empty() || view.f1 != 0 || view.f2 != 0 {
                return Err(format!("discarded case {} still has contacts", c.id));
            }
            continue;
        }
        let empty = (Vec::new(), Vec::new(), Vec::new());
        let want = expected.as_ref().map_or(empty.clone(), |t| {
            (t.visits.clone(), t.f1.clone(), t.f2.clone())
        });
        let have = (got.visits.clone(), got.f1.clone(), got.f2.clone());
        if want != have {
            return Err(format!(
                "case {} contacts differ:\n model {want:?}\n live  {have:?}",
                c.id
            ));
        }
        if (view.f1, view.f2) != (want.1.len(), want.2.len()) {
            return Err(format!("case {} counts differ", c.id));
        }
    }
    let mut listed = [0u64; 3];
    for p in persons {
        let want = w.status(p, now, &traces);
        match want.tier {
            Tier::F0 => listed[0] += 1,
            Tier::F1 => listed[1] += 1,
            Tier::F2 => listed[2] += 1,
            Tier::None => {}
        }
        let s = health.status(p);
        let have = MStatus {
            tier: s.tier,
            since: s.since,
            until: s.until,
            cases: s.cases.iter().map(|c| c.to_string()).collect(),
        };
        if want != have {
            return Err(format!("{p}: model {want:?}, live {have:?}"));
        }
    }
    let summary = health.summary();
    if (summary.f1, summary.f2) != (listed[1], listed[2]) {
        return Err(format!(
            "summary F1/F2: model {:?}, live {:?}",
            (listed[1], listed[2]),
            (summary.f1, summary.f2)
        ));
    }
    if health.stats().tiers != listed {
        return Err(format!(
            "tier counts: model {listed:?}, live {:?}",
            health.stats().tiers
        ));
    }
    let since = now - 14 * 86_400;
    let want = w.sites(&traces, since);
    let have: Vec<(String, i64, i64)> = health
        .exposure_sites(since)
        .into_iter()
        .map(|s| (s.venue.to_string(), s.start, s.end))
        .collect();
    if want != have {
        return Err(format!("exposure sites: model {want:?}, live {have:?}"));
    }
    Ok(())
}

fn raw_scan() -> impl Strategy<Value = (usize, usize, i64, bool)> {
    (
        0usize..8,
        0usize..3,
        prop_oneof![(LO / 300..=HI / 300).prop_map(|k| k * 300), LO..=HI],
        prop::bool::weighted(0.3),
    )
}

fn op() -> impl Strategy<Value = Op> {
    let offset = prop_oneof![(LO / 300..=HI / 300).prop_map(|k| k * 300), LO..=HI];
    prop_oneof![
        6 => (prop::collection::vec(raw_scan(), 1..12), prop::bool::weighted(0.2))
            .prop_map(|(s, d)| Op::Scans(s, d)),
        3 => (0usize..8, offset.clone(), prop::option::weighted(0.3, offset.clone()),
              prop::option::weighted(0.6, offset))
            .prop_map(|(person, sampled, onset, isolated)| Op::Register { person, sampled, onset, isolated }),
        1 => (0usize..8).prop_map(Op::Recover),
        1 => (0usize..8).prop_map(Op::Discard),
        1 => prop_oneof![Just(600i64), Just(4 * 86_400), Just(8 * 86_400)].prop_map(Op::Advance),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        0u32..=1,
        prop_oneof![Just(0i64), Just(60), 1i64..=900],
        prop_oneof![3 => Just(0i64), 1 => 60i64..=900],
        prop_oneof![3 => Just(0i64), 1 => 60i64..=1200],
    )
        .prop_map(
            |(lookback_days, min_overlap_s, min_stay_s, linger_s)| Policy {
                lookback_days,
                min_overlap_s,
                min_stay_s,
                linger_s,
                f1_quarantine_days: 14,
                f2_quarantine_days: 7,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn standing_traces_and_tiers_equal_the_model(
        stays in prop::collection::vec(prop_oneof![(1u32..=10).prop_map(|k| k * 60), 60u32..=1800], 3),
        n_persons in 3usize..=8,
        policy in policy(),
        ops in prop::collection::vec(op(), 1..24),
    ) {
        // Cases first in some runs, so late scans are what reveal the contacts.
        if let Err(e) = run(&stays, n_persons, policy, &ops, true) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// The scenario of a late upload: the case is registered first, a contact's scan arrives later.
fn late_upload() -> Vec<Op> {
    vec![
        Op::Scans(vec![(0, 0, -3600, false), (0, 0, -1800, true)], false),
        Op::Register {
            person: 0,
            sampled: 0,
            onset: None,
            isolated: None,
        },
        // Person 1 was at the same venue for the whole hour; their phone uploads now.
        Op::Scans(vec![(1, 0, -3600, false), (1, 0, -1800, true)], false),
        // And person 2 met person 1 afterwards, elsewhere.
        Op::Scans(vec![(1, 1, -1000, false), (2, 1, -1000, false)], false),
    ]
}

#[test]
fn a_late_upload_makes_a_contact_f1_and_their_contact_f2() {
    run(
        &[3600, 3600, 900],
        3,
        Policy::default(),
        &late_upload(),
        true,
    )
    .unwrap();
}

/// A late check-in elsewhere, shortly before an F2 contact's overlap began, ends the F2's visit
/// there: the F2 listing must go. The scan falls before the overlap and at a venue no source
/// visited, so only the F2's person window reaching `max_stay` before the overlap catches it.
#[test]
fn a_late_check_in_elsewhere_ends_an_f2_contact() {
    let ops = vec![
        // The case (person 0) and Q (person 1) at V0 for half an hour.
        Op::Scans(
            vec![
                (0, 0, -7200, false),
                (0, 0, -5400, true),
                (1, 0, -7200, false),
                (1, 0, -5400, true),
            ],
            false,
        ),
        // Q at V1 later; R (person 2) checked in at V1 before Q came and never checked out.
        Op::Scans(
            vec![
                (1, 1, -3000, false),
                (1, 1, -1000, true),
                (2, 1, -3600, false),
            ],
            false,
        ),
        Op::Register {
            person: 0,
            sampled: 0,
            onset: None,
            isolated: None,
        },
        // R's phone uploads a check-in at V2 before Q arrived at V1: R left V1 then.
        Op::Scans(vec![(2, 2, -3200, false)], false),
    ];
    run(&[3600, 3600, 3600], 3, Policy::default(), &ops, true).unwrap();
}

#[test]
fn a_stale_trace_is_caught() {
    let result = run(
        &[3600, 3600, 900],
        3,
        Policy::default(),
        &late_upload(),
        false,
    );
    eprintln!("{result:?}");
    let err = result.expect_err("with the freshness mechanism off the late contact must be missed");
    assert!(err.contains("after step 2"), "{err}");
}

#[test]
fn reopening_derives_the_same_traces() {
    let venues: Vec<(String, Option<u32>)> = vec![("V1".into(), Some(1200))];
    let h = Harness::open(&venues, 600);
    h.clock.set(T0 + HI);
    let dir = tempfile::tempdir().unwrap();
    let scans = [
        Scan::new("A", "V1", T0 - 3600, Action::In),
        Scan::new("b", "V1", T0 - 3500, Action::In),
        Scan::new("c", "V1", T0 - 3000, Action::In),
    ];
    h.engine
        .ingest(scans.iter().map(Scan::item).collect())
        .unwrap();
    let config = HealthConfig::new(dir.path());
    let health = Health::open(h.engine.clone(), config.clone()).unwrap();
    let (k, created) = health
        .register_case(NewCase {
            person: "A".into(),
            sampled_at: T0,
            ..NewCase::default()
        })
        .unwrap();
    assert!(created);
    let before = health.contacts(&k.case.id).unwrap();
    assert_eq!(
        before.f1.len(),
        1,
        "b overlapped A's deadline-bounded visit"
    );
    let status_b = health.status("b");
    health.shutdown();
    drop(health);
    let again = Health::open(h.engine.clone(), config).unwrap();
    assert_eq!(again.contacts(&k.case.id).unwrap(), before);
    assert_eq!(again.status("b"), status_b);
    assert_eq!(again.status("A").tier, Tier::F0);
}
