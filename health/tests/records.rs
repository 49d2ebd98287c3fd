//! Samples and results (pooled propagation, corrections, the cases they register, discard and
//! restore), pool-positive resolution, declarations and follow-ups, the health pass (one test per
//! rule and their order), the summary, notices and areas, through the `Health` API over a real
//! engine.
#![allow(clippy::unwrap_used)]

#[path = "../../engine/tests/model/mod.rs"]
mod model;

use engine::Action;
use health::*;
use model::{Harness, Scan, T0};

const DAY: i64 = 86_400;

struct World {
    h: Harness,
    health: Health,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let venues = vec![
        ("SITE".to_string(), Some(3600)),
        ("V".to_string(), Some(3600)),
    ];
    let h = Harness::open(&venues, 3600);
    let dir = tempfile::tempdir().unwrap();
    let health = Health::open(h.engine.clone(), HealthConfig::new(dir.path())).unwrap();
    World {
        h,
        health,
        _dir: dir,
    }
}

fn sample(id: &str, persons: &[&str], collected_at: i64) -> NewSample {
    NewSample {
        id: id.into(),
        kind: SampleKind::Pcr,
        persons: persons.iter().map(|p| p.to_string()).collect(),
        collected_at: Some(collected_at),
        site: Some("SITE".into()),
    }
}

#[test]
fn sample_registration_retries_and_conflicts() {
    let w = world();
    let (s, created) = w
        .health
        .register_sample(sample("T1", &["a", "b"], T0 - 60))
        .unwrap();
    assert!(created);
    assert!(s.pooled());
    assert_eq!(s.member_result(), MemberResult::Pending);
    // Same id, kind, site and set of persons (another order), same collected_at: a retry.
    let (again, created) = w
        .health
        .register_sample(sample("T1", &["b", "a"], T0 - 60))
        .unwrap();
    assert!(!created);
    assert_eq!(again, s);
    // Without collected_at it still matches.
    let mut no_time = sample("T1", &["a", "b"], 0);
    no_time.collected_at = None;
    assert!(!w.health.register_sample(no_time).unwrap().1);
    for other in [
        sample("T1", &["a"], T0 - 60),
        sample("T1", &["a", "b"], T0 - 61),
        NewSample {
            kind: SampleKind::Antigen,
            ..sample("T1", &["a", "b"], T0 - 60)
        },
        NewSample {
            site: None,
            ..sample("T1", &["a", "b"], T0 - 60)
        },
    ] {
        assert!(matches!(
            w.health.register_sample(other),
            Err(Error::Conflict(_))
        ));
    }
    // Bad input.
    let eleven: Vec<String> = (0..11).map(|i| format!("p{i}")).collect();
    let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
    for bad in [
        sample("T/2", &["a"], T0),
        sample("T2", &[], T0),
        sample("T2", &eleven, T0),
        sample("T2", &["a", "a"], T0),
        sample("T2", &["not a person"], T0),
        sample("T2", &["a"], T0 + 301),
        sample("T2", &["a"], T0 - 22 * DAY),
        NewSample {
            site: Some("NOWHERE".into()),
            ..sample("T2", &["a"], T0)
        },
    ] {
        assert!(matches!(
            w.health.register_sample(bad),
            Err(Error::Invalid(_))
        ));
    }
    assert!(w.health.sample("T2").is_none());
}

#[test]
fn a_pooled_positive_marks_every_member_and_registers_no_case() {
    let w = world();
    w.health
        .register_sample(sample("POOL", &["a", "b", "c"], T0 - 3600))
        .unwrap();
    let (s, changed) = w
        .health
        .enter_result("POOL", LabResult::Positive, Some(T0 - 60))
        .unwrap();
    assert!(changed);
    assert_eq!(s.result, Some(LabResult::Positive));
    for p in ["a", "b", "c"] {
        let r = w.health.results(p);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].result, MemberResult::PoolPositive);
        assert!(r[0].pooled);
        assert!(w.health.has_unresolved_pool_positive(p));
        assert_eq!(w.health.pass(p).basis, PassBasis::PoolPositive);
    }
    assert!(w.health.cases(None, None).is_empty());
    // Resolution: a later one-person sample with a definite result; `invalid` resolves nothing,
    // and one collected before the pool resolves nothing either.
    w.health
        .register_sample(sample("A-EARLY", &["a"], T0 - 7200))
        .unwrap();
    w.health
        .enter_result("A-EARLY", LabResult::Negative, Some(T0 - 60))
        .unwrap();
    assert!(w.health.has_unresolved_pool_positive("a"));
    w.health
        .register_sample(sample("A-INV", &["a"], T0 - 30))
        .unwrap();
    w.health
        .enter_result("A-INV", LabResult::Invalid, None)
        .unwrap();
    assert!(w.health.has_unresolved_pool_positive("a"));
    w.health
        .register_sample(sample("A-NEG", &["a"], T0 - 20))
        .unwrap();
    w.health
        .enter_result("A-NEG", LabResult::Negative, None)
        .unwrap();
    assert!(!w.health.has_unresolved_pool_positive("a"));
    // Results list ascending by collected_at, then id.
    let ids: Vec<String> = w
        .health
        .results("a")
        .into_iter()
        .map(|r| r.sample)
        .collect();
    assert_eq!(ids, ["A-EARLY", "POOL", "A-INV", "A-NEG"]);
    // A pooled negative gives each member `negative`.
    w.health
        .register_sample(sample("POOL2", &["x", "y"], T0 - 100))
        .unwrap();
    w.health
        .enter_result("POOL2", LabResult::Negative, None)
        .unwrap();
    assert_eq!(w.health.results("y")[0].result, MemberResult::Negative);
}

#[test]
fn a_one_person_positive_registers_a_case_and_corrections_discard_and_restore_it() {
    let w = world();
    // The person was at V with a contact.
    w.h.engine
        .ingest(vec![
            Scan::new("pos", "V", T0 - 5000, Action::In).item(),
            Scan::new("near", "V", T0 - 4900, Action::In).item(),
        ])
        .unwrap();
    w.health
        .register_sample(sample("S1", &["pos"], T0 - 600))
        .unwrap();
    assert!(matches!(
        w.health
            .enter_result("S1", LabResult::Positive, Some(T0 - 601)),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        w.health
            .enter_result("S1", LabResult::Positive, Some(T0 + 301)),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        w.health.enter_result("NOPE", LabResult::Positive, None),
        Err(Error::NotFound(_))
    ));
    w.health
        .enter_result("S1", LabResult::Positive, Some(T0 - 60))
        .unwrap();
    let case = w.health.case("sample:S1").unwrap();
    assert_eq!(case.case.source, "sample:S1");
    assert_eq!(case.case.sampled_at, T0 - 600);
    assert_eq!(case.case.isolated_at, T0 - 60);
    assert_eq!(case.case.status, CaseStatus::Active);
    assert_eq!(case.f1, 1);
    assert_eq!(w.health.status("near").tier, Tier::F1);
    assert_eq!(w.health.pass("pos").basis, PassBasis::Case);
    // The same result again changes nothing.
    let (_, changed) = w
        .health
        .enter_result("S1", LabResult::Positive, None)
        .unwrap();
    assert!(!changed);
    // A correction discards the case.
    w.health
        .enter_result("S1", LabResult::Negative, None)
        .unwrap();
    assert_eq!(
        w.health.case("sample:S1").unwrap().case.status,
        CaseStatus::Discarded
    );
    assert_eq!(w.health.status("near").tier, Tier::None);
    assert_eq!(w.health.results("pos")[0].result, MemberResult::Negative);
    // Positive again: the same case is active again, with its contacts.
    w.health
        .enter_result("S1", LabResult::Positive, None)
        .unwrap();
    let again = w.health.case("sample:S1").unwrap();
    assert_eq!(again.case.status, CaseStatus::Active);
    assert_eq!(again.f1, 1);
    assert_eq!(w.health.status("near").tier, Tier::F1);
    // A person who already has an active case gets no second one.
    w.health
        .register_sample(sample("S2", &["pos"], T0 - 300))
        .unwrap();
    w.health
        .enter_result("S2", LabResult::Positive, None)
        .unwrap();
    assert!(w.health.case("sample:S2").is_none());
}

#[test]
fn a_restart_keeps_samples_results_and_their_cases() {
    let venues = vec![("SITE".to_string(), Some(3600))];
    let h = Harness::open(&venues, 3600);
    let dir = tempfile::tempdir().unwrap();
    let health = Health::open(h.engine.clone(), HealthConfig::new(dir.path())).unwrap();
    health
        .register_sample(sample("S1", &["pos"], T0 - 600))
        .unwrap();
    health
        .enter_result("S1", LabResult::Positive, None)
        .unwrap();
    health
        .register_sample(sample("P1", &["a", "b"], T0 - 600))
        .unwrap();
    // Discarded by hand (registered in error): a restart must not bring it back.
    health
        .register_sample(sample("S3", &["other"], T0 - 600))
        .unwrap();
    health
        .enter_result("S3", LabResult::Positive, None)
        .unwrap();
    health
        .update_case("sample:S3", CaseChange::Discard)
        .unwrap();
    health.shutdown();
    drop(health);
    let again = Health::open(h.engine.clone(), HealthConfig::new(dir.path())).unwrap();
    assert_eq!(
        again.sample("S1").unwrap().result,
        Some(LabResult::Positive)
    );
    assert_eq!(again.sample("P1").unwrap().result, None);
    assert_eq!(again.status("pos").tier, Tier::F0);
    assert_eq!(
        again.case("sample:S3").unwrap().case.status,
        CaseStatus::Discarded
    );
}

#[test]
fn pass_rules_hold_in_order() {
    let w = world();
    let now = T0;
    // Rule 8: nothing at all.
    assert_eq!(w.health.pass("nobody").color, PassColor::Red);
    assert_eq!(w.health.pass("nobody").basis, PassBasis::NoRecord);
    assert_eq!(w.health.pass("nobody").as_of, now);
    // Rule 7: a negative of a sample collected at or after now - 72 h (not one before).
    w.health
        .register_sample(sample("NEG-OLD", &["t"], now - 72 * 3600 - 1))
        .unwrap();
    w.health
        .enter_result("NEG-OLD", LabResult::Negative, None)
        .unwrap();
    assert_eq!(w.health.pass("t").basis, PassBasis::NoRecord);
    w.health
        .register_sample(sample("NEG", &["t"], now - 72 * 3600))
        .unwrap();
    w.health
        .enter_result("NEG", LabResult::Negative, None)
        .unwrap();
    let p = w.health.pass("t");
    assert_eq!(
        (p.color, p.basis),
        (PassColor::Yellow, PassBasis::NegativeTest)
    );
    // Rule 5 beats 7: a recovered case within 180 days.
    w.health
        .register_case(NewCase {
            id: Some("R".into()),
            person: "t".into(),
            sampled_at: now - 20 * DAY,
            ..NewCase::default()
        })
        .unwrap();
    // Rule 1 while active.
    let p = w.health.pass("t");
    assert_eq!((p.color, p.basis), (PassColor::Red, PassBasis::Case));
    w.health
        .update_case(
            "R",
            CaseChange::Recover {
                at: Some(now - 10 * DAY),
            },
        )
        .unwrap();
    let p = w.health.pass("t");
    assert_eq!((p.color, p.basis), (PassColor::Green, PassBasis::Recovered));
    // Rule 3 beats 5: an unresolved pool positive.
    w.health
        .register_sample(sample("POOL", &["t", "u"], now - 3600))
        .unwrap();
    w.health
        .enter_result("POOL", LabResult::Positive, None)
        .unwrap();
    let p = w.health.pass("t");
    assert_eq!(
        (p.color, p.basis),
        (PassColor::Red, PassBasis::PoolPositive)
    );
    // A later one-person negative resolves it: back to recovered.
    w.health
        .register_sample(sample("T-ALONE", &["t"], now - 60))
        .unwrap();
    w.health
        .enter_result("T-ALONE", LabResult::Negative, None)
        .unwrap();
    assert_eq!(w.health.pass("t").basis, PassBasis::Recovered);
    // A recovery older than 180 days does not count.
    w.h.clock.set(now - 10 * DAY + 181 * DAY);
    assert_ne!(w.health.pass("t").basis, PassBasis::Recovered);
}

#[test]
fn f1_is_red_and_f2_turns_green_to_yellow() {
    let w = world();
    w.h.engine
        .ingest(vec![
            Scan::new("case", "V", T0 - 10_000, Action::In).item(),
            Scan::new("f1", "V", T0 - 10_000, Action::In).item(),
            Scan::new("f1", "SITE", T0 - 5_000, Action::In).item(),
            Scan::new("f2", "SITE", T0 - 5_000, Action::In).item(),
        ])
        .unwrap();
    w.health
        .register_case(NewCase {
            person: "case".into(),
            sampled_at: T0 - 100,
            ..NewCase::default()
        })
        .unwrap();
    assert_eq!(w.health.status("f1").tier, Tier::F1);
    assert_eq!(w.health.status("f2").tier, Tier::F2);
    let p = w.health.pass("f1");
    assert_eq!((p.color, p.basis), (PassColor::Red, PassBasis::F1));
    // F2 with only a negative test stays yellow with its own basis (the downgrade is for green).
    w.health
        .register_sample(sample("N", &["f2"], T0 - 60))
        .unwrap();
    w.health
        .enter_result("N", LabResult::Negative, None)
        .unwrap();
    assert_eq!(w.health.pass("f2").basis, PassBasis::NegativeTest);
    // F2 and green (recovered) becomes yellow, basis f2.
    w.health
        .register_case(NewCase {
            id: Some("OLD".into()),
            person: "f2".into(),
            sampled_at: T0 - 15 * DAY,
            isolated_at: Some(T0 - 15 * DAY),
            ..NewCase::default()
        })
        .unwrap();
    w.health
        .update_case(
            "OLD",
            CaseChange::Recover {
                at: Some(T0 - 5 * DAY),
            },
        )
        .unwrap();
    let p = w.health.pass("f2");
    assert_eq!((p.color, p.basis), (PassColor::Yellow, PassBasis::F2));
}

#[test]
fn declarations_and_followups() {
    let w = world();
    let decl = |person: &str, ts: i64, symptoms: &[&str], exposure: bool| NewDeclaration {
        person: person.into(),
        ts: Some(ts),
        symptoms: symptoms.iter().map(|s| s.to_string()).collect(),
        exposure,
        travel: vec![],
    };
    let d = w
        .health
        .declare(decl("s1", T0 - 100, &["fever", "cough", "fever"], true))
        .unwrap();
    assert_eq!(d.symptoms, [Symptom::Fever, Symptom::Cough]);
    assert!(d.id.starts_with('D'));
    for bad in [
        decl("s1", T0, &["headache"], false),
        decl("bad person", T0, &[], false),
        decl("s1", T0 + 301, &[], false),
        decl("s1", T0 - 22 * DAY, &[], false),
        NewDeclaration {
            travel: vec![Travel {
                from: "Soc Trang".into(),
                to: "Can Tho".into(),
                date: "2026-02-30".into(),
            }],
            ..decl("s1", T0, &[], false)
        },
        NewDeclaration {
            travel: vec![Travel {
                from: "".into(),
                to: "Can Tho".into(),
                date: "2026-02-03".into(),
            }],
            ..decl("s1", T0, &[], false)
        },
    ] {
        assert!(matches!(w.health.declare(bad), Err(Error::Invalid(_))));
    }
    // s2: symptoms but no other reason; s3: symptoms 15 days ago (too old) and exposure now;
    // s4: symptoms and an unresolved pool positive; s5: symptoms and F1.
    w.health
        .declare(decl("s2", T0 - 50, &["fatigue"], false))
        .unwrap();
    w.health
        .declare(decl("s3", T0 - 15 * DAY, &["fever"], false))
        .unwrap();
    w.health.declare(decl("s3", T0 - 10, &[], true)).unwrap();
    w.health
        .declare(decl("s4", T0 - 30, &["sore_throat"], false))
        .unwrap();
    w.health
        .register_sample(sample("P", &["s4", "zz"], T0 - 1000))
        .unwrap();
    w.health
        .enter_result("P", LabResult::Positive, None)
        .unwrap();
    w.h.engine
        .ingest(vec![
            Scan::new("k", "V", T0 - 9000, Action::In).item(),
            Scan::new("s5", "V", T0 - 9000, Action::In).item(),
        ])
        .unwrap();
    w.health
        .register_case(NewCase {
            person: "k".into(),
            sampled_at: T0 - 100,
            ..NewCase::default()
        })
        .unwrap();
    w.health
        .declare(decl(
            "s5",
            T0 - 100,
            &["loss_of_taste_or_smell", "cough"],
            false,
        ))
        .unwrap();
    let f = w.health.followups();
    let got: Vec<(&str, Tier, Vec<Symptom>, i64)> = f
        .iter()
        .map(|x| {
            (
                x.person.as_str(),
                x.tier,
                x.symptoms.clone(),
                x.last_declared,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("s4", Tier::None, vec![Symptom::SoreThroat], T0 - 30),
            (
                "s1",
                Tier::None,
                vec![Symptom::Fever, Symptom::Cough],
                T0 - 100
            ),
            (
                "s5",
                Tier::F1,
                vec![Symptom::Cough, Symptom::LossOfTasteOrSmell],
                T0 - 100
            ),
        ]
    );
}

#[test]
fn summary_counts_what_the_contract_lists() {
    let w = world();
    w.h.engine
        .ingest(vec![
            Scan::new("c", "V", T0 - 3000, Action::In).item(),
            Scan::new("f", "V", T0 - 3000, Action::In).item(),
            Scan::new("old", "V", T0 - 2 * DAY, Action::In).item(),
        ])
        .unwrap();
    w.health
        .register_case(NewCase {
            person: "c".into(),
            sampled_at: T0 - 60,
            ..NewCase::default()
        })
        .unwrap();
    w.health
        .register_case(NewCase {
            id: Some("OLD".into()),
            person: "x".into(),
            sampled_at: T0 - 8 * DAY,
            ..NewCase::default()
        })
        .unwrap();
    w.health
        .register_case(NewCase {
            id: Some("GONE".into()),
            person: "y".into(),
            sampled_at: T0 - 60,
            ..NewCase::default()
        })
        .unwrap();
    w.health.update_case("GONE", CaseChange::Discard).unwrap();
    w.health
        .register_sample(sample("S", &["q"], T0 - 100))
        .unwrap();
    w.health
        .register_sample(sample("POOL", &["q", "r"], T0 - 100))
        .unwrap();
    w.health
        .enter_result("POOL", LabResult::Positive, None)
        .unwrap();
    w.health
        .register_sample(sample("OLD-S", &["q"], T0 - 2 * DAY))
        .unwrap();
    let s = w.health.summary();
    assert_eq!(s.as_of, T0);
    assert_eq!(s.cases_active, 2);
    assert_eq!(
        s.cases_new_24h, 2,
        "OLD counts (registered now), GONE does not"
    );
    assert_eq!(s.cases_7d, 1, "only c: OLD was sampled 8 days ago");
    assert_eq!((s.f1, s.f2), (1, 0));
    assert_eq!(s.scans_24h, 2);
    assert_eq!(s.samples_24h, 2);
    assert_eq!(s.positive_24h, 1);
    assert_eq!(s.present, w.h.engine.stats().present);
}

#[test]
fn notices_newest_first_and_only_once_published() {
    let w = world();
    let n1 = w
        .health
        .publish_notice(
            NoticeKind::Directive,
            "Chỉ thị 16".into(),
            "Ở nhà.".into(),
            None,
        )
        .unwrap();
    let n2 = w
        .health
        .publish_notice(NoticeKind::News, "Tin".into(), "".into(), Some(T0 + 3600))
        .unwrap();
    let n3 = w
        .health
        .publish_notice(NoticeKind::News, "Cũng lúc đó".into(), "x".into(), Some(T0))
        .unwrap();
    let ids: Vec<String> = w.health.notices().into_iter().map(|n| n.id).collect();
    assert_eq!(
        ids,
        [n1.id.clone(), n3.id.clone()],
        "ties by id, future hidden"
    );
    w.h.clock.set(T0 + 3600);
    let ids: Vec<String> = w.health.notices().into_iter().map(|n| n.id).collect();
    assert_eq!(ids, [n2.id, n1.id, n3.id]);
    assert!(matches!(
        w.health
            .publish_notice(NoticeKind::News, " ".into(), "x".into(), None),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn areas_count_cases_below_them() {
    let w = world();
    w.health
        .register_areas(vec![
            AreaInput {
                id: "ST".into(),
                name: "Sóc Trăng".into(),
                population: 100_000,
                parent: None,
            },
            AreaInput {
                id: "ST-1".into(),
                name: "TP Sóc Trăng".into(),
                population: 10_000,
                parent: Some("ST".into()),
            },
        ])
        .unwrap();
    for (i, area) in ["ST-1", "ST-1", "ST"].iter().enumerate() {
        w.health
            .register_case(NewCase {
                person: format!("p{i}"),
                sampled_at: T0 - 60,
                area: Some(area.to_string()),
                ..NewCase::default()
            })
            .unwrap();
    }
    assert!(matches!(
        w.health.register_case(NewCase {
            person: "q".into(),
            sampled_at: T0,
            area: Some("NOPE".into()),
            ..NewCase::default()
        }),
        Err(Error::Invalid(_))
    ));
    let views = w.health.area_views();
    let st = views.iter().find(|v| v.area.id == "ST").unwrap();
    let st1 = views.iter().find(|v| v.area.id == "ST-1").unwrap();
    assert_eq!((st.cases_7d, st1.cases_7d), (3, 2));
    assert!((st.rate_per_100k - 3.0).abs() < 1e-9);
    assert!((st1.rate_per_100k - 20.0).abs() < 1e-9);
    // No doses: coverage 0, so one level up.
    assert_eq!((st.level, st1.level), (2, 3));
}

fn dose(person: &str, n: i64, vaccine: &str, at: i64, area: Option<&str>) -> DoseItem {
    Ok(DoseInput {
        person: person.into(),
        dose: n,
        vaccine: vaccine.into(),
        administered_at: at,
        lot: None,
        site: None,
        area: area.map(Into::into),
    })
}

#[test]
fn vaccination_rules_of_the_pass_and_their_order() {
    let w = world();
    let now = T0;
    // Rule 6: a dose at least 14 days ago (not 13).
    let out = w
        .health
        .record_doses(vec![dose("v", 1, "EU/1/20/1528", now - 13 * DAY, None)])
        .unwrap();
    assert_eq!(out.accepted, 1);
    assert_eq!(w.health.pass("v").basis, PassBasis::NoRecord);
    w.h.clock.set(now + DAY);
    let p = w.health.pass("v");
    assert_eq!(
        (p.color, p.basis),
        (PassColor::Yellow, PassBasis::PartiallyVaccinated)
    );
    // Rule 6 beats 7.
    w.health.register_sample(sample("NV", &["v"], now)).unwrap();
    w.health
        .enter_result("NV", LabResult::Negative, None)
        .unwrap();
    assert_eq!(w.health.pass("v").basis, PassBasis::PartiallyVaccinated);
    // Rule 4: dose 2 at least 14 days ago.
    w.health
        .record_doses(vec![dose("v", 2, "EU/1/20/1528", now - 5 * DAY, None)])
        .unwrap();
    assert_eq!(w.health.pass("v").basis, PassBasis::PartiallyVaccinated);
    w.h.clock.set(now + 9 * DAY);
    let p = w.health.pass("v");
    assert_eq!(
        (p.color, p.basis),
        (PassColor::Green, PassBasis::Vaccinated)
    );
    // A single-dose vaccine makes one fully vaccinated with its first dose.
    w.health
        .record_doses(vec![dose("j", 1, "EU/1/20/1525", now - 14 * DAY, None)])
        .unwrap();
    assert_eq!(w.health.pass("j").basis, PassBasis::Vaccinated);
    // Rule 3 beats 4: an unresolved pool positive.
    w.health
        .register_sample(sample("PV", &["v", "k"], now + 9 * DAY - 60))
        .unwrap();
    w.health
        .enter_result("PV", LabResult::Positive, None)
        .unwrap();
    assert_eq!(w.health.pass("v").basis, PassBasis::PoolPositive);
    let s = w.health.summary();
    assert_eq!((s.dose1, s.fully_vaccinated), (2, 2));
}

#[test]
fn first_dose_coverage_counts_distinct_persons_below_an_area() {
    let w = world();
    w.health
        .register_areas(vec![
            AreaInput {
                id: "P".into(),
                name: "Province".into(),
                population: 4,
                parent: None,
            },
            AreaInput {
                id: "D".into(),
                name: "District".into(),
                population: 2,
                parent: Some("P".into()),
            },
            AreaInput {
                id: "C".into(),
                name: "Commune".into(),
                population: 1,
                parent: Some("D".into()),
            },
        ])
        .unwrap();
    w.health
        .record_doses(vec![
            dose("a", 1, "CoronaVac", T0 - DAY, Some("C")),
            // The same person again in another area below P: counted once for P.
            dose("a", 2, "CoronaVac", T0, Some("D")),
            dose("b", 1, "CoronaVac", T0, Some("P")),
        ])
        .unwrap();
    let views = w.health.area_views();
    let cov = |id: &str| {
        views
            .iter()
            .find(|v| v.area.id == id)
            .unwrap()
            .dose1_coverage
    };
    assert!((cov("C") - 1.0).abs() < 1e-9);
    assert!((cov("D") - 0.5).abs() < 1e-9);
    assert!((cov("P") - 0.5).abs() < 1e-9);
    // Coverage of at least 0.7 takes the +1 away.
    assert_eq!(views.iter().find(|v| v.area.id == "C").unwrap().level, 1);
    assert_eq!(views.iter().find(|v| v.area.id == "P").unwrap().level, 2);
}

/// Recoveries (the pass's rule 5, the certificates' `r`) are each person's own, also for cases
/// registered after the first lookups (the per-person index of cases catches up with them).
#[test]
fn recoveries_are_each_persons_own_as_cases_are_added() {
    let w = world();
    let now = T0;
    let case = |id: &str, person: &str, sampled: i64| {
        w.health
            .register_case(NewCase {
                id: Some(id.into()),
                person: person.into(),
                sampled_at: sampled,
                ..NewCase::default()
            })
            .unwrap();
    };
    let recover = |id: &str, at: i64| {
        w.health
            .update_case(id, CaseChange::Recover { at: Some(at) })
            .unwrap();
    };
    assert!(w.health.recoveries("a").is_empty());
    case("A1", "a", now - 19 * DAY);
    case("B1", "b", now - 19 * DAY);
    assert!(w.health.recoveries("a").is_empty(), "active, not recovered");
    recover("A1", now - 17 * DAY);
    assert_eq!(w.health.recoveries("a"), [(now - 19 * DAY, now - 17 * DAY)]);
    assert!(w.health.recoveries("b").is_empty());
    assert_eq!(w.health.pass("a").basis, PassBasis::Recovered);
    assert_ne!(w.health.pass("b").basis, PassBasis::Recovered);
    // cases after the index was first built
    case("C1", "c", now - 15 * DAY);
    recover("C1", now - 5 * DAY);
    case("A2", "a", now - 12 * DAY);
    recover("A2", now - 2 * DAY);
    assert_eq!(w.health.recoveries("c"), [(now - 15 * DAY, now - 5 * DAY)]);
    assert_eq!(
        w.health.recoveries("a"),
        [
            (now - 19 * DAY, now - 17 * DAY),
            (now - 12 * DAY, now - 2 * DAY)
        ]
    );
    assert_eq!(w.health.pass("c").basis, PassBasis::Recovered);
    // a discarded case is no recovery
    w.health.update_case("C1", CaseChange::Discard).unwrap();
    assert!(w.health.recoveries("c").is_empty());
    assert!(w.health.recoveries("b").is_empty());
}

/// A cluster replica purges expired records at the first command of a new day, by the command's
/// time (`purge_expired_on_a_new_day`), not when it reopens: every node then purges at the same
/// point of the stream. The purged day is stored, so a reopened domain does not purge again.
#[test]
fn expired_records_go_once_a_day_and_not_at_open_when_told_so() {
    let venues = vec![("SITE".to_string(), Some(3600))];
    let h = Harness::open(&venues, 3600);
    let dir = tempfile::tempdir().unwrap();
    let config = || HealthConfig {
        purge_at_open: false,
        ..HealthConfig::new(dir.path())
    };
    let health = Health::open(h.engine.clone(), config()).unwrap();
    health
        .register_sample(sample("OLD", &["a"], T0 - 60))
        .unwrap();
    health
        .declare(NewDeclaration {
            person: "a".into(),
            ts: Some(T0 - 100),
            symptoms: vec!["fever".into()],
            exposure: false,
            travel: vec![],
        })
        .unwrap();
    // Purged once on this day (nothing has expired yet), then not again the same day.
    assert_eq!(health.purge_expired_on_a_new_day().unwrap(), 0);
    health.shutdown();
    drop(health);

    // 200 days later the domain opens without purging.
    h.clock.advance(200 * DAY);
    let health = Health::open(h.engine.clone(), config()).unwrap();
    assert!(health.sample("OLD").is_some());
    assert_eq!(
        health.followups().len(),
        0,
        "the declaration is too old to count"
    );
    // The first call of the day purges the sample and the declaration; the second nothing.
    assert!(health.purge_is_due());
    assert_eq!(health.purge_expired_on_a_new_day().unwrap(), 2);
    assert!(!health.purge_is_due());
    assert!(health.sample("OLD").is_none());
    assert_eq!(health.purge_expired_on_a_new_day().unwrap(), 0);
    // A new sample, then a reopen on the same day: the stored day holds, nothing goes.
    health
        .register_sample(sample("NEW", &["b"], T0 + 200 * DAY - 60))
        .unwrap();
    health.shutdown();
    drop(health);
    let health = Health::open(h.engine.clone(), config()).unwrap();
    assert_eq!(health.purge_expired_on_a_new_day().unwrap(), 0);
    assert!(health.sample("NEW").is_some());
    health.shutdown();
    drop(health);

    // The default (single server) purges at open.
    h.clock.advance(200 * DAY);
    let health = Health::open(h.engine.clone(), HealthConfig::new(dir.path())).unwrap();
    assert!(health.sample("NEW").is_none());
    health.shutdown();
    drop(health);
}

/// A positive one-person sample of a person who already had an active case registers no case of
/// its own, and a reopen after that case recovered must not register one by the cases of the
/// moment: not on the single server (the result was settled, so the repair at open leaves it
/// alone), and not on a cluster replica (`reconcile_at_open: false`; it would on that node
/// alone, the other nodes never would).
#[test]
fn a_reopened_domain_registers_no_sample_case_the_result_did_not_make() {
    for reconcile_at_open in [true, false] {
        reopened_after_a_refused_sample_case(reconcile_at_open);
    }
}

fn reopened_after_a_refused_sample_case(reconcile_at_open: bool) {
    let venues = vec![("SITE".to_string(), Some(3600))];
    let h = Harness::open(&venues, 3600);
    let dir = tempfile::tempdir().unwrap();
    let config = || HealthConfig {
        purge_at_open: false,
        reconcile_at_open,
        ..HealthConfig::new(dir.path())
    };
    let health = Health::open(h.engine.clone(), config()).unwrap();
    health
        .register_case(NewCase {
            id: Some("C1".into()),
            person: "p".into(),
            sampled_at: T0 - 2 * DAY,
            ..NewCase::default()
        })
        .unwrap();
    health
        .register_sample(sample("S", &["p"], T0 - 3600))
        .unwrap();
    health
        .enter_result("S", LabResult::Positive, Some(T0 - 60))
        .unwrap();
    assert!(health.case("sample:S").is_none(), "p already had a case");
    health
        .update_case("C1", CaseChange::Recover { at: Some(T0 - 30) })
        .unwrap();
    let ids = |health: &Health| -> Vec<String> {
        health
            .cases(None, None)
            .iter()
            .map(|c| c.case.id.clone())
            .collect()
    };
    let before = ids(&health);
    health.shutdown();
    drop(health);

    let health = Health::open(h.engine.clone(), config()).unwrap();
    assert_eq!(
        ids(&health),
        before,
        "reconcile_at_open: {reconcile_at_open}"
    );
    assert!(health.case("sample:S").is_none());
    health.shutdown();
}

#[test]
fn a_client_key_gives_back_its_record_until_the_purge_after_a_day() {
    let w = world();
    let request = || NewDeclaration {
        person: "k".into(),
        ts: None,
        symptoms: vec!["fever".into()],
        exposure: false,
        travel: vec![],
    };
    let key = ClientKey::new("app", "K-1").unwrap();
    let (d, stored) = w.health.declare_once(request(), Some(&key)).unwrap();
    assert!(stored);
    let (again, stored) = w.health.declare_once(request(), Some(&key)).unwrap();
    assert!(!stored);
    assert_eq!(again, d);
    // another caller's same key is its own
    let theirs = ClientKey::new("admin", "K-1").unwrap();
    let (other, stored) = w.health.declare_once(request(), Some(&theirs)).unwrap();
    assert!(stored);
    assert_ne!(other.id, d.id);
    // the same key for another request
    let changed = NewDeclaration {
        exposure: true,
        ..request()
    };
    assert!(matches!(
        w.health.declare_once(changed, Some(&key)),
        Err(Error::Conflict(_))
    ));
    // a notice's keys are apart from the declarations'
    let (n, stored) = w
        .health
        .publish_notice_once(NoticeKind::News, "t".into(), "b".into(), None, Some(&key))
        .unwrap();
    assert!(stored);
    let (n2, stored) = w
        .health
        .publish_notice_once(NoticeKind::News, "t".into(), "b".into(), None, Some(&key))
        .unwrap();
    assert!(!stored);
    assert_eq!(n2, n);
    assert_eq!(w.health.notices().len(), 1);
    // kept through the next day's purge (less than CLIENT_KEY_KEEP_S old) ...
    w.h.clock.advance(CLIENT_KEY_KEEP_S / 2 + DAY / 2);
    w.health.purge_expired_on_a_new_day().unwrap();
    assert!(!w.health.declare_once(request(), Some(&key)).unwrap().1);
    // ... and dropped by the purge of the day after: the key then stores a new declaration
    w.h.clock.advance(DAY);
    w.health.purge_expired_on_a_new_day().unwrap();
    let (later, stored) = w.health.declare_once(request(), Some(&key)).unwrap();
    assert!(stored);
    assert_ne!(later.id, d.id);
    for bad in ["", "with space", "é", &"x".repeat(MAX_CLIENT_KEY_BYTES + 1)] {
        assert!(matches!(ClientKey::new("app", bad), Err(Error::Invalid(_))));
    }
}

#[test]
fn declaration_ids_are_never_given_twice_even_once_purged() {
    let venues = vec![("SITE".to_string(), Some(3600))];
    let h = Harness::open(&venues, 3600);
    let dir = tempfile::tempdir().unwrap();
    let health = Health::open(h.engine.clone(), HealthConfig::new(dir.path())).unwrap();
    let decl = |ts: i64| NewDeclaration {
        person: "d".into(),
        ts: Some(ts),
        symptoms: vec!["fever".into()],
        exposure: false,
        travel: vec![],
    };
    let d1 = health.declare(decl(T0)).unwrap();
    // the newest id, back-dated to the edge of retention: the next day's purge drops it
    let d2 = health.declare(decl(T0 - 21 * DAY + 3600)).unwrap();
    h.clock.advance(DAY);
    assert!(health.purge_expired_on_a_new_day().unwrap() >= 1);
    let n1 = health
        .publish_notice(NoticeKind::News, "t".into(), "b".into(), None)
        .unwrap();
    health.shutdown();
    drop(health);

    let health = Health::open(h.engine.clone(), HealthConfig::new(dir.path())).unwrap();
    let d3 = health.declare(decl(T0 + DAY)).unwrap();
    assert!(d3.id > d2.id, "{} after {} and {}", d3.id, d1.id, d2.id);
    let n2 = health
        .publish_notice(NoticeKind::News, "t2".into(), "b".into(), None)
        .unwrap();
    assert!(n2.id > n1.id);
    let too_many = NewDeclaration {
        symptoms: vec!["fever".into(); MAX_SYMPTOM_CODES + 1],
        ..decl(T0 + DAY)
    };
    assert!(matches!(health.declare(too_many), Err(Error::Invalid(_))));
    health.shutdown();
}

#[test]
fn a_purged_sample_id_whose_case_is_kept_is_not_given_again() {
    let w = world();
    w.health
        .register_sample(sample("S", &["p"], T0 - 3600))
        .unwrap();
    w.health
        .enter_result("S", LabResult::Positive, Some(T0 - 60))
        .unwrap();
    assert_eq!(w.health.case("sample:S").unwrap().case.person, "p");
    // 181 days on, the sample is purged and its case kept
    w.h.clock.advance(181 * DAY);
    w.health.purge_expired_on_a_new_day().unwrap();
    assert!(w.health.sample("S").is_none());
    assert!(w.health.case("sample:S").is_some());
    for persons in [&["q"][..], &["p"][..]] {
        let again = w
            .health
            .register_sample(sample("S", persons, T0 + 181 * DAY - 60));
        assert!(
            matches!(again, Err(Error::Conflict(_))),
            "{persons:?}: {again:?}"
        );
    }
    // a new id is taken, and its positive registers q's own case
    w.health
        .register_sample(sample("S2", &["q"], T0 + 181 * DAY - 60))
        .unwrap();
    w.health
        .enter_result("S2", LabResult::Positive, None)
        .unwrap();
    assert_eq!(w.health.case("sample:S2").unwrap().case.person, "q");
}
