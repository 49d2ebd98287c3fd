//! Cases and standing traces at scale (contract section 10, issue "Cases, tiers and exposure
//! sites"), in one run over one data set:
//!
//! `cargo run --release -p checkin-bench --bin standing -- --scans 10000000 --cases 1000`
//!
//! 1. **Build.** Generates the bench data set (`Params::standard(scans)`, arrival order) and splits
//!    it: the first `scans - tail` scans are the *base*, ingested into a fresh store
//!    (Durability::Fsync, batches of `--batch`, `--in-flight` in flight) in a temporary directory
//!    under `--tmp`; the last `--tail` scans (the latest arrivals) are kept in memory for the
//!    ingestion figures. `--scenario` decides the clock (see [`Scenario`]).
//! 2. **Registration.** Opens `health::Health` over the base store and registers `--cases` cases
//!    one at a time (`Health::register_case`: the durable redb commit and the first depth-2
//!    standing trace), for seeded random persons with a visit inside their case window
//!    (`sampled_at` 6–30 h before the registration time, `isolated_at` = that time). Timing
//!    breakdown: a depth-2 `Engine::trace` of a sample of the same windows, and registrations of
//!    persons with no scans on an empty store (the redb commit alone).
//! 3. **Tier lookups.** `Health::status` of a mix of F0, F1, F2 and `none` persons (a quarter each,
//!    classified by their status first), `--lookups` per repetition, HDR histogram.
//! 4. **Ingestion.** `--reps` repetitions of three runs on fresh copies of the base store, in
//!    rotating order: the engine alone, `Health` with no case, `Health` with the cases. Each run
//!    ingests the same tail (Fsync, same batch size and in-flight count) and reports scans/s up to
//!    the last acknowledgement, then the time until `Health::settle` returns (traces current).
//!    Alongside, in every mode alike: every `--late-interval-ms` a late scan pair (in and out) of a
//!    new person at a case visit's venue and time, overlapping it by at least 900 s, is ingested
//!    with `Engine::ingest`; with the cases, the time from its acknowledgement until
//!    `Health::on_tier_change` reports that person F1 is one sample. And a `Health::status` lookup
//!    every `--load-lookup-interval-us`.
//! 5. **Naive vs exposure index.** On one copy with the cases: for `--compare-batches` tail
//!    batches spread over the tail (those between are ingested and applied unmeasured), ingest
//!    the batch, time `Health::settle` (the exposure index re-derives the cases the batch may
//!    change), then time re-running every case's depth-2 trace from scratch (`Engine::trace` over
//!    each case window), and check that both agree.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checkin_bench::*;
use clap::Parser;
use engine::{Action, Durability, Engine, ManualClock, ScanInput, ScanItem, TraceRequest};
use hdrhistogram::Histogram;
use health::{Health, HealthConfig, NewCase, Tier};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Standing-trace figures at scale.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Scans in the data set (base + tail).
    #[arg(long, default_value_t = 10_000_000)]
    scans: u64,
    /// Cases to register.
    #[arg(long, default_value_t = 1_000)]
    cases: usize,
    /// Scans held back from the base and ingested in the ingestion runs (the latest arrivals).
    #[arg(long, default_value_t = 1_000_000)]
    tail: u64,
    /// Scans per ingestion batch.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Batches in flight during ingestion.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Repetitions of the lookup and ingestion measurements.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Tier lookups per repetition.
    #[arg(long, default_value_t = 1_000_000)]
    lookups: usize,
    /// Pause between two late-scan samples, in milliseconds (0: none).
    #[arg(long, default_value_t = 5)]
    late_interval_ms: u64,
    /// Most late-scan samples per run.
    #[arg(long, default_value_t = 1_000)]
    late_max: usize,
    /// Tail batches of the naive-vs-exposure-index comparison.
    #[arg(long, default_value_t = 5)]
    compare_batches: usize,
    /// Registrations of persons with no scans on an empty store (the redb commit alone).
    #[arg(long, default_value_t = 200)]
    commit_probes: usize,
    /// Where the temporary stores go.
    #[arg(long, default_value = "/tmp")]
    tmp: PathBuf,
    /// Phases to run (build and registration always run): lookups, ingest, compare.
    #[arg(long, value_delimiter = ',', default_value = "lookups,ingest,compare")]
    phases: Vec<String>,
    /// Seed of the case and sample choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// `live`: the clock follows the data (set to the newest scan of each batch before it is
    /// submitted), cases are registered at the end of the base, so only the tail's late uploads
    /// fall inside case windows. `backlog`: the clock stays at the data's end, cases are
    /// registered there, and the whole tail lies inside every case window (1.5 days of scans
    /// arriving after the cases were registered: a stress case).
    #[arg(long, default_value = "live")]
    scenario: Scenario,
    /// Pause between two tier lookups made during the late-scan runs (0: none made).
    #[arg(long, default_value_t = 500)]
    load_lookup_interval_us: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Live,
    Backlog,
}

fn fmt_ns(ns: u64) -> String {
    fmt_d(Duration::from_nanos(ns))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).max(1));
}

/// `p50 / p99 / max` of a histogram of nanoseconds.
fn hsum(h: &Histogram<u64>) -> String {
    format!(
        "p50 {} p90 {} p99 {} p99.9 {} max {} (n {})",
        fmt_ns(h.value_at_quantile(0.5)),
        fmt_ns(h.value_at_quantile(0.9)),
        fmt_ns(h.value_at_quantile(0.99)),
        fmt_ns(h.value_at_quantile(0.999)),
        fmt_ns(h.max()),
        h.len()
    )
}

/// Median, smallest and largest.
fn mrange(xs: &[f64]) -> (f64, f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.1} k/s", r / 1e3)
    }
}

/// Copies the store in `from` to `to` (without `LOCK`; without `health.redb` unless
/// `with_cases`), every file synced so the copy's writeback does not land in the measurement.
fn copy_store(from: &Path, to: &Path, with_cases: bool) -> Res<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "LOCK" || (!with_cases && name == "health.redb") {
            continue;
        }
        let dst = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_store(&entry.path(), &dst, with_cases)?;
        } else {
            fs::copy(entry.path(), &dst)?;
            fs::File::open(&dst)?.sync_all()?;
        }
    }
    fs::File::open(to)?.sync_all()?;
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn open_engine(dir: &Path, now: i64) -> Res<(Engine, Arc<ManualClock>)> {
    let clock = Arc::new(ManualClock::new(now));
    let e = Engine::open(bench_config(dir, Durability::Fsync, clock.clone()))?;
    Ok((e, clock))
}

/// The newest scan time of a batch.
fn newest(batch: &[ScanItem]) -> i64 {
    batch
        .iter()
        .flatten()
        .filter_map(|s| s.ts)
        .max()
        .unwrap_or(i64::MIN)
}

/// The batches, with the clock moved to each one's newest scan before it is handed on (when
/// `follow`): a live system's clock, never behind the data it accepts.
fn clocked(
    batches: Vec<Vec<ScanItem>>,
    clock: Arc<ManualClock>,
    follow: bool,
) -> impl Iterator<Item = Vec<ScanItem>> {
    use engine::Clock;
    batches.into_iter().inspect(move |b| {
        if follow {
            let t = newest(b);
            if t > clock.now() {
                clock.set(t);
            }
        }
    })
}

fn trace_req(person: &str, from: i64, to: i64, policy: &health::Policy) -> TraceRequest {
    TraceRequest {
        person: person.to_string(),
        from,
        to,
        min_overlap_s: policy.min_overlap_s,
        depth: 2,
        min_stay_s: policy.min_stay_s,
        linger_s: policy.linger_s,
    }
}

/// The case windows as registered: `(id, person, from, to)`.
fn windows(h: &Health) -> Vec<(String, String, i64, i64)> {
    h.cases(None, None)
        .into_iter()
        .map(|v| (v.case.id.clone(), v.case.person.clone(), v.from, v.to))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mode {
    EngineOnly,
    NoCases,
    Cases,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::EngineOnly => "engine alone",
            Mode::NoCases => "Health, no case",
            Mode::Cases => "Health, cases",
        }
    }
}

/// A store copy opened for one run.
struct Run {
    dir: PathBuf,
    engine: Engine,
    clock: Arc<ManualClock>,
    health: Option<Health>,
    open: Duration,
    health_open: Duration,
    /// Update passes (`Health::on_update`) and their summed durations in ns.
    passes: Arc<(AtomicU64, AtomicU64)>,
}

impl Run {
    fn open(base: &Path, dir: PathBuf, now: i64, mode: Mode) -> Res<Run> {
        copy_store(base, &dir, mode == Mode::Cases)?;
        let t = Instant::now();
        let (engine, clock) = open_engine(&dir, now)?;
        let open = t.elapsed();
        let t = Instant::now();
        let health = match mode {
            Mode::EngineOnly => None,
            _ => Some(Health::open(engine.clone(), HealthConfig::new(&dir))?),
        };
        let health_open = t.elapsed();
        let passes = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        if let Some(h) = &health {
            let sink = passes.clone();
            h.on_update(Box::new(move |d| {
                sink.0.fetch_add(1, Ordering::Relaxed);
                sink.1.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
            }));
        }
        Ok(Run {
            dir,
            engine,
            clock,
            health,
            open,
            health_open,
            passes,
        })
    }

    fn close(self) -> Res<()> {
        if let Some(h) = &self.health {
            h.shutdown();
        }
        drop(self.health);
        self.engine.shutdown()?;
        drop(self.engine);
        fs::remove_dir_all(&self.dir)?;
        Ok(())
    }
}

fn main() -> Res<()> {
    let a = Args::parse();
    let phase = |name: &str| a.phases.iter().any(|p| p == name);
    let p = Params::standard(a.scans);
    let root = tempfile::Builder::new()
        .prefix("checkin-standing-")
        .tempdir_in(&a.tmp)?;
    println!(
        "# cargo run --release -p checkin-bench --bin standing -- {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    println!("# {a:?}");
    println!(
        "# data: Params::standard({}): {} persons, {} venues, {} days ending at {}; store in {}",
        p.scans,
        p.persons,
        p.venues,
        p.days,
        p.now,
        root.path().display()
    );

    // 1. Build the base store; keep the tail.
    let live = a.scenario == Scenario::Live;
    let base = root.path().join("base");
    let start = if live {
        p.now - i64::from(p.days) * DAY
    } else {
        p.now
    };
    let (engine, clock) = open_engine(&base, start)?;
    engine.register_venues(venue_specs(&p))?;
    let total_batches = a.scans.div_ceil(a.batch as u64) as usize;
    let tail_batches = (a.tail as usize)
        .div_ceil(a.batch)
        .min(total_batches.saturating_sub(1));
    let mut stream = ScanStream::new(&p).batches(a.batch);
    let t = Instant::now();
    let base_newest = AtomicI64::new(i64::MIN);
    let follow = clock.clone();
    let totals = ingest_pipelined(
        &engine,
        stream
            .by_ref()
            .take(total_batches - tail_batches)
            .inspect(|b| {
                use engine::Clock;
                let t = newest(b);
                base_newest.fetch_max(t, Ordering::Relaxed);
                if live && t > follow.now() {
                    follow.set(t);
                }
            }),
        a.in_flight,
    )?;
    engine.flush()?;
    let built = t.elapsed();
    let tail: Vec<Vec<ScanItem>> = stream.by_ref().collect();
    // When the cases are registered (and the clock of every run starts).
    let reg_now = if live {
        base_newest.load(Ordering::Relaxed)
    } else {
        p.now
    };
    clock.set(reg_now);
    println!(
        "scenario {:?}: cases registered and runs started at {} (now - {:.1} h); {}",
        a.scenario,
        reg_now,
        (p.now - reg_now) as f64 / 3600.0,
        if live {
            "the clock follows the newest scan of each batch"
        } else {
            "the clock stays there"
        }
    );
    let tail_items: usize = tail.iter().map(Vec::len).sum();
    let (mut tail_lo, mut tail_hi, mut tail_old) = (i64::MAX, i64::MIN, 0u64);
    for s in tail.iter().flatten().flatten() {
        if let Some(ts) = s.ts {
            tail_lo = tail_lo.min(ts);
            tail_hi = tail_hi.max(ts);
            if ts <= reg_now {
                tail_old += 1;
            }
        }
    }
    println!(
        "  tail scans with ts at or before the registration time (only these can fall inside a case window): {} ({:.2}%)",
        tail_old,
        100.0 * tail_old as f64 / tail.iter().map(Vec::len).sum::<usize>().max(1) as f64
    );
    println!(
        "build: base {} scans ({} stored, {} duplicates) generated and ingested in {} (Fsync, {} in flight); tail {} scans in {} batches, ts {}..{} (now - {:.1} h .. now - {:.1} h)",
        totals.items,
        totals.accepted,
        totals.duplicates,
        fmt_d(built),
        a.in_flight,
        tail_items,
        tail.len(),
        tail_lo,
        tail_hi,
        (p.now - tail_lo) as f64 / 3600.0,
        (p.now - tail_hi) as f64 / 3600.0,
    );

    // 2. Register the cases.
    let health = Health::open(engine.clone(), HealthConfig::new(&base))?;
    let policy = *health.policy();
    let picks = pick_cases(&engine, &p, reg_now, a.cases, policy.lookback_days, a.seed);
    if picks.len() < a.cases {
        println!("warning: only {} persons qualify as cases", picks.len());
    }
    let mut reg = histogram();
    let mut reg_times = Vec::with_capacity(picks.len());
    let (mut f1s, mut f2s) = (Vec::new(), Vec::new());
    for (i, c) in picks.iter().enumerate() {
        let request = NewCase {
            id: Some(format!("bench-{i:05}")),
            person: c.person.clone(),
            sampled_at: c.sampled_at,
            ..NewCase::default()
        };
        let t = Instant::now();
        let (view, created) = health.register_case(request)?;
        let d = t.elapsed();
        assert!(created, "case {i} was not new");
        record(&mut reg, d);
        reg_times.push(d);
        f1s.push(view.f1 as f64);
        f2s.push(view.f2 as f64);
    }
    health.settle()?;
    let thirds: Vec<String> = reg_times
        .chunks(reg_times.len().div_ceil(3).max(1))
        .map(|c| fmt_d(percentiles(c.to_vec())[0]))
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "register_case ({} cases, one at a time, durable): {}; medians of each third: {}",
        picks.len(),
        hsum(&reg),
        thirds.join(" / ")
    );
    println!(
        "  contacts per case: F1 median {:.0} (mean {:.0}, max {:.0}), F2 median {:.0} (mean {:.0}, max {:.0}); exposure-index windows {}",
        mrange(&f1s).0,
        mean(&f1s),
        mrange(&f1s).2,
        mrange(&f2s).0,
        mean(&f2s),
        mrange(&f2s).2,
        health.stats().windows
    );
    let wins = windows(&health);
    // Breakdown: the depth-2 trace of the same windows, now (a sample of 100).
    let step = (wins.len() / 100).max(1);
    let mut trace_h = histogram();
    let mut reg_sample = Vec::new();
    for (i, (_, person, from, to)) in wins.iter().enumerate().step_by(step) {
        let t = Instant::now();
        black_box(engine.trace(&trace_req(person, *from, *to, &policy)));
        record(&mut trace_h, t.elapsed());
        reg_sample.push(reg_times[i]);
    }
    println!(
        "  breakdown: Engine::trace depth 2 of {} of the same windows: {}; their registrations: median {}",
        trace_h.len(),
        hsum(&trace_h),
        fmt_d(percentiles(reg_sample)[0])
    );
    if a.commit_probes > 0 {
        let probe = root.path().join("commit-probe");
        let (e, _) = open_engine(&probe, reg_now)?;
        let h = Health::open(e.clone(), HealthConfig::new(&probe))?;
        let mut ch = histogram();
        for i in 0..a.commit_probes {
            let request = NewCase {
                person: format!("probe-{i:05}"),
                sampled_at: reg_now - HOUR,
                ..NewCase::default()
            };
            let t = Instant::now();
            h.register_case(request)?;
            record(&mut ch, t.elapsed());
        }
        h.shutdown();
        drop(h);
        e.shutdown()?;
        drop(e);
        fs::remove_dir_all(&probe)?;
        println!(
            "  breakdown: register_case of persons with no scan on an empty store (redb commit, fsync): {}",
            hsum(&ch)
        );
    }

    // Who the cases list, and how much of the tail their persons make.
    let mut listed: HashMap<Arc<str>, u32> = HashMap::new();
    for (id, _, _, _) in &wins {
        if let Some(t) = health.contacts(id) {
            let persons: HashSet<&Arc<str>> =
                t.f1.iter()
                    .map(|c| &c.person)
                    .chain(t.f2.iter().map(|c| &c.person))
                    .collect();
            for q in persons {
                *listed.entry(q.clone()).or_insert(0) += 1;
            }
        }
    }
    let case_persons: HashSet<&str> = wins.iter().map(|w| w.1.as_str()).collect();
    let (mut hit, mut hit_cases) = (0u64, 0u64);
    for s in tail.iter().flatten().flatten() {
        if let Some(n) = listed.get(s.person.as_str()) {
            hit += 1;
            hit_cases += u64::from(*n);
        } else if case_persons.contains(s.person.as_str()) {
            hit += 1;
            hit_cases += 1;
        }
    }
    println!(
        "  persons listed (F1 or F2) by at least one case: {} of {} ({:.1}%), by {:.1} cases on average; tail scans whose person is a case person or listed: {:.1}% (by {:.1} cases on average)",
        listed.len(),
        p.persons,
        100.0 * listed.len() as f64 / f64::from(p.persons),
        listed.values().map(|&n| f64::from(n)).sum::<f64>() / listed.len().max(1) as f64,
        100.0 * hit as f64 / tail_items.max(1) as f64,
        hit_cases as f64 / hit.max(1) as f64
    );

    // 3. Tier lookups.
    let pools = tier_pools(&a, &p, &health, &wins, &listed);
    let spots = late_spots(&health, &engine);
    println!(
        "late scans: {} case visits fit a late scan pair (whole inside the window, >= 960 s)",
        spots.len()
    );
    if phase("lookups") {
        lookups(&a, &health, &pools)?;
    }
    drop(listed);
    health.shutdown();
    drop(health);
    engine.shutdown()?;
    drop(engine);
    println!(
        "base store: {:.0} MiB on disk",
        dir_bytes(&base) as f64 / (1 << 20) as f64
    );

    let mut run_no = 0usize;
    let mut next_dir = || {
        run_no += 1;
        root.path().join(format!("run-{run_no}"))
    };

    // 4. Ingestion with and without cases, late scans and lookups alongside.
    if phase("ingest") {
        let modes = [Mode::EngineOnly, Mode::NoCases, Mode::Cases];
        let mut rates: HashMap<&'static str, Vec<f64>> = HashMap::new();
        let mut ratios = Vec::new();
        let mut ratios_engine = Vec::new();
        let mut late_all = histogram();
        let mut cpu_per_scan: HashMap<&'static str, Vec<f64>> = HashMap::new();
        let mut look_all: HashMap<&'static str, Histogram<u64>> = HashMap::new();
        for rep in 0..a.reps {
            let mut this: HashMap<Mode, f64> = HashMap::new();
            for k in 0..modes.len() {
                let mode = modes[(rep + k) % modes.len()];
                let run = Run::open(&base, next_dir(), reg_now, mode)?;
                let out = ingest_run(&a, &run, &tail, live, &pools, &spots, rep)?;
                let mut line = format!(
                    "ingest rep {} {:<16}: {} scans in {} = {} (Fsync, batches of {}, {} in flight); open {}",
                    rep + 1,
                    mode.label(),
                    out.items,
                    fmt_d(out.acked),
                    fmt_rate(out.rate),
                    a.batch,
                    a.in_flight,
                    fmt_d(run.open)
                );
                if run.health.is_some() {
                    line += &format!(
                        ", Health::open {}; settled {} after the last ack; {} case refreshes in {} passes (summed pass time {})",
                        fmt_d(run.health_open),
                        fmt_d(out.settle),
                        out.rederived,
                        run.passes.0.load(Ordering::Relaxed),
                        fmt_ns(run.passes.1.load(Ordering::Relaxed))
                    );
                }
                println!("{line}");
                println!(
                    "  CPU until the last ack: process {:.2} s ({:.2} µs per scan), health thread {:.2} s; from there until settled: process {:.2} s, health thread {:.2} s",
                    out.cpu_ingest.process.as_secs_f64(),
                    out.cpu_ingest.process.as_secs_f64() * 1e6 / out.items.max(1) as f64,
                    out.cpu_ingest.health.as_secs_f64(),
                    out.cpu_settle.process.as_secs_f64(),
                    out.cpu_settle.health.as_secs_f64()
                );
                cpu_per_scan.entry(mode.label()).or_default().push(
                    (out.cpu_ingest.process + out.cpu_settle.process).as_secs_f64() * 1e6
                        / out.items.max(1) as f64,
                );
                println!(
                    "  {} late scan pairs ingested alongside (one every {} ms; {} more after the tail)",
                    out.late_acks, a.late_interval_ms, out.late_after
                );
                if mode == Mode::Cases {
                    println!(
                        "  late scans: ack → F1 visible {}; {} already visible at the ack; {} never F1",
                        hsum(&out.late),
                        out.late_early,
                        out.late_missing
                    );
                    late_all.add(&out.late).map_err(|e| format!("{e:?}"))?;
                }
                if !out.looked.is_empty() {
                    println!(
                        "  Health::status during the ingestion (one every {} µs): {}",
                        a.load_lookup_interval_us,
                        hsum(&out.looked)
                    );
                    look_all
                        .entry(mode.label())
                        .or_insert_with(histogram)
                        .add(&out.looked)
                        .map_err(|e| format!("{e:?}"))?;
                }
                this.insert(mode, out.rate);
                rates.entry(mode.label()).or_default().push(out.rate);
                run.close()?;
            }
            let r = this[&Mode::Cases] / this[&Mode::NoCases];
            let re = this[&Mode::Cases] / this[&Mode::EngineOnly];
            println!(
                "ingest rep {}: with cases / without: {:.1}% (vs engine alone {:.1}%)",
                rep + 1,
                100.0 * r,
                100.0 * re
            );
            ratios.push(r);
            ratios_engine.push(re);
        }
        for m in modes {
            let (med, lo, hi) = mrange(&rates[m.label()]);
            println!(
                "ingest summary {:<16}: median {} (range {} – {})",
                m.label(),
                fmt_rate(med),
                fmt_rate(lo),
                fmt_rate(hi)
            );
        }
        for m in modes {
            let (med, lo, hi) = mrange(&cpu_per_scan[m.label()]);
            println!(
                "ingest summary {:<16}: process CPU per scan until settled median {:.2} µs (range {:.2} – {:.2})",
                m.label(),
                med,
                lo,
                hi
            );
        }
        let (med, lo, hi) = mrange(&ratios);
        let (mede, loe, hie) = mrange(&ratios_engine);
        println!(
            "ingest summary ratio with {} cases / no case: median {:.1}% (range {:.1}% – {:.1}%); / engine alone: median {:.1}% ({:.1}% – {:.1}%)",
            a.cases,
            100.0 * med,
            100.0 * lo,
            100.0 * hi,
            100.0 * mede,
            100.0 * loe,
            100.0 * hie
        );
        println!(
            "late scans summary, all reps: ack → F1 visible {}",
            hsum(&late_all)
        );
        for m in [Mode::NoCases, Mode::Cases] {
            if let Some(h) = look_all.get(m.label()) {
                println!(
                    "lookups during ingestion summary, {}: {}",
                    m.label(),
                    hsum(h)
                );
            }
        }
    }

    // 6. Naive vs exposure index, batch by batch.
    if phase("compare") {
        let run = Run::open(&base, next_dir(), reg_now, Mode::Cases)?;
        compare(&a, &run, &tail, live)?;
        run.close()?;
    }
    Ok(())
}

/// Up to 20,000 persons of each tier (F0, F1, F2, none), classified by `Health::status`.
fn tier_pools(
    a: &Args,
    p: &Params,
    health: &Health,
    wins: &[(String, String, i64, i64)],
    listed: &HashMap<Arc<str>, u32>,
) -> [Vec<String>; 4] {
    let mut rng = StdRng::seed_from_u64(a.seed ^ 0x100C);
    let mut pools: [Vec<String>; 4] = Default::default();
    let cap = 20_000;
    let mut candidates: Vec<String> = wins.iter().map(|w| w.1.clone()).collect();
    candidates.extend(listed.keys().take(4 * cap).map(|k| k.to_string()));
    for _ in 0..cap {
        candidates.push(person_id(rng.gen_range(0..p.persons)));
    }
    let mut distinct = HashSet::new();
    candidates.retain(|c| distinct.insert(c.clone()));
    for c in candidates {
        let t = tier_slot(health.status(&c).tier);
        if pools[t].len() < cap {
            pools[t].push(c);
        }
    }
    println!(
        "lookups: pools F0 {} F1 {} F2 {} none {} (classified by Health::status)",
        pools[0].len(),
        pools[1].len(),
        pools[2].len(),
        pools[3].len()
    );
    if pools.iter().any(Vec::is_empty) {
        println!("warning: a tier has no person; lookups skip it");
    }
    pools
}

fn tier_slot(t: Tier) -> usize {
    match t {
        Tier::F0 => 0,
        Tier::F1 => 1,
        Tier::F2 => 2,
        Tier::None => 3,
    }
}

/// A random person of a random tier (`None` if that tier's pool is empty).
fn pick_person<'a>(rng: &mut StdRng, pools: &'a [Vec<String>; 4]) -> Option<(usize, &'a str)> {
    let t = rng.gen_range(0..4);
    let pool = &pools[t];
    if pool.is_empty() {
        return None;
    }
    Some((t, pool[rng.gen_range(0..pool.len())].as_str()))
}

/// Tier lookups of a mix of persons, a quarter per tier, with nothing else running.
fn lookups(a: &Args, health: &Health, pools: &[Vec<String>; 4]) -> Res<()> {
    let mut rng = StdRng::seed_from_u64(a.seed ^ 0x5747);
    let mut p99s = Vec::new();
    for rep in 0..a.reps {
        let mut all = histogram();
        let mut per: [Histogram<u64>; 4] = [histogram(), histogram(), histogram(), histogram()];
        for _ in 0..a.lookups {
            let Some((t, person)) = pick_person(&mut rng, pools) else {
                continue;
            };
            let start = Instant::now();
            let s = health.status(person);
            let d = start.elapsed();
            black_box(s);
            record(&mut all, d);
            record(&mut per[t], d);
        }
        println!(
            "lookups rep {}: Health::status {}; p99 by tier F0 {} F1 {} F2 {} none {}",
            rep + 1,
            hsum(&all),
            fmt_ns(per[0].value_at_quantile(0.99)),
            fmt_ns(per[1].value_at_quantile(0.99)),
            fmt_ns(per[2].value_at_quantile(0.99)),
            fmt_ns(per[3].value_at_quantile(0.99)),
        );
        p99s.push(all.value_at_quantile(0.99) as f64);
    }
    let (med, lo, hi) = mrange(&p99s);
    println!(
        "lookups summary: p99 median {} (range {} – {})",
        fmt_ns(med as u64),
        fmt_ns(lo as u64),
        fmt_ns(hi as u64)
    );
    Ok(())
}

/// Case visits whole inside their window, long enough for a 900 s overlap: `(venue, start,
/// length)` of the late scan pairs.
fn late_spots(health: &Health, engine: &Engine) -> Vec<(String, i64, i64)> {
    let mut spots = Vec::new();
    for (id, _, from, to) in windows(health) {
        let Some(t) = health.contacts(&id) else {
            continue;
        };
        for v in &t.visits {
            let stay = engine
                .venue(&v.venue)
                .map_or(0, |i| i64::from(i.default_stay_s));
            let d = (v.end - v.start).min(stay).min(HOUR);
            if v.start > from && v.end < to && d >= 960 {
                spots.push((v.venue.to_string(), v.start, d));
            }
        }
    }
    spots
}

/// CPU time used so far by this process and by its `checkin-health` threads, from
/// `/proc/self/stat` and `/proc/self/task/*/stat` (utime + stime, in clock ticks of 10 ms:
/// `getconf CLK_TCK` is 100 on the benchmark machine).
#[derive(Clone, Copy, Default)]
struct Cpu {
    process: Duration,
    health: Duration,
}

fn stat_cpu(path: &Path) -> Option<(String, Duration)> {
    let text = fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((comm, Duration::from_millis(ticks * 10)))
}

fn cpu_now() -> Cpu {
    let process = stat_cpu(Path::new("/proc/self/stat")).map_or(Duration::ZERO, |c| c.1);
    let mut health = Duration::ZERO;
    for task in fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Some((comm, d)) = stat_cpu(&task.path().join("stat")) {
            if comm == "checkin-health" {
                health += d;
            }
        }
    }
    Cpu { process, health }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            process: self.process.saturating_sub(o.process),
            health: self.health.saturating_sub(o.health),
        }
    }
}

/// What one ingestion run measured.
struct IngestOut {
    items: u64,
    acked: Duration,
    rate: f64,
    settle: Duration,
    rederived: u64,
    /// CPU until the last acknowledgement, and from there until settled.
    cpu_ingest: Cpu,
    cpu_settle: Cpu,
    late: Histogram<u64>,
    late_acks: usize,
    late_after: usize,
    late_early: usize,
    late_missing: usize,
    looked: Histogram<u64>,
}

/// Ingests the tail (pipelined, on its own thread) while this thread ingests a late scan pair of
/// a new person at a case visit every `--late-interval-ms`, and another thread looks tiers up
/// every `--load-lookup-interval-us`. The same late scans (seeded by `rep`) in every mode.
fn ingest_run(
    a: &Args,
    run: &Run,
    tail: &[Vec<ScanItem>],
    live: bool,
    pools: &[Vec<String>; 4],
    spots: &[(String, i64, i64)],
    rep: usize,
) -> Res<IngestOut> {
    let engine = &run.engine;
    let health = run.health.as_ref();
    let seen: Arc<Mutex<HashMap<Arc<str>, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let prefix = format!("late-{rep}-");
    if let Some(h) = health {
        let sink = seen.clone();
        let pre = prefix.clone();
        h.on_tier_change(Box::new(move |s| {
            if s.tier == Tier::F1 && s.person.starts_with(pre.as_str()) {
                if let Ok(mut m) = sink.lock() {
                    m.entry(s.person.clone()).or_insert_with(Instant::now);
                }
            }
        }));
    }
    let before = health.map(|h| h.stats().rederived_by_scans).unwrap_or(0);
    let mut rng = StdRng::seed_from_u64(a.seed ^ 0x1A7E ^ rep as u64);
    let running = AtomicBool::new(true);
    let batches = clocked(tail.to_vec(), run.clock.clone(), live);
    let mut acks: Vec<(String, Instant)> = Vec::new();
    let mut late_after = 0usize;
    let cpu0 = cpu_now();
    let (acked, totals, looked, cpu1) =
        std::thread::scope(|s| -> Res<(Duration, IngestTotals, Histogram<u64>, Cpu)> {
            let bg = s.spawn(|| {
                let t = Instant::now();
                let totals = ingest_pipelined(engine, batches, a.in_flight);
                let cpu = cpu_now();
                running.store(false, Ordering::Release);
                (t.elapsed(), totals, cpu)
            });
            let reader = s.spawn(|| {
                let mut h = histogram();
                let Some(health) = health else { return h };
                if a.load_lookup_interval_us == 0 {
                    return h;
                }
                let mut rng = StdRng::seed_from_u64(a.seed ^ 0x4EAD ^ rep as u64);
                while running.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_micros(a.load_lookup_interval_us));
                    let Some((_, person)) = pick_person(&mut rng, pools) else {
                        continue;
                    };
                    let t = Instant::now();
                    black_box(health.status(person));
                    record(&mut h, t.elapsed());
                }
                h
            });
            while a.late_interval_ms > 0
                && !spots.is_empty()
                && running.load(Ordering::Acquire)
                && acks.len() < a.late_max
            {
                std::thread::sleep(Duration::from_millis(a.late_interval_ms));
                let (venue, start, d) = &spots[rng.gen_range(0..spots.len())];
                let person = format!("{prefix}{:05}", acks.len() + late_after);
                let scan = |ts: i64, action: Action| -> ScanItem {
                    Ok(ScanInput {
                        person: person.clone(),
                        venue: venue.clone(),
                        ts: Some(ts),
                        action,
                    })
                };
                let items = vec![scan(*start, Action::In), scan(start + d, Action::Out)];
                let o = engine.ingest(items)?;
                let at = Instant::now();
                if o.accepted() != 2 {
                    return Err(format!("late scan refused: {:?}", o.rejected).into());
                }
                if running.load(Ordering::Acquire) {
                    acks.push((person, at));
                } else {
                    late_after += 1;
                }
            }
            let (took, totals, cpu) = bg.join().map_err(|_| "ingestion thread panicked")?;
            let looked = reader.join().map_err(|_| "lookup thread panicked")?;
            Ok((took, totals?, looked, cpu))
        })?;
    let t = Instant::now();
    if let Some(h) = health {
        h.settle()?;
    }
    let settle = t.elapsed();
    let cpu2 = cpu_now();
    let rederived = health.map(|h| h.stats().rederived_by_scans).unwrap_or(0) - before;
    let mut late = histogram();
    let (mut late_early, mut late_missing) = (0usize, 0usize);
    if health.is_some_and(|h| h.stats().cases[0] > 0) {
        let seen = seen.lock().map_err(|_| "poisoned")?;
        for (person, at_ack) in &acks {
            match seen.get(person.as_str()) {
                Some(at) => {
                    if at < at_ack {
                        late_early += 1;
                    }
                    record(&mut late, at.saturating_duration_since(*at_ack));
                }
                None => late_missing += 1,
            }
        }
    }
    Ok(IngestOut {
        items: totals.items,
        acked,
        rate: totals.items as f64 / acked.as_secs_f64(),
        settle,
        rederived,
        cpu_ingest: cpu1 - cpu0,
        cpu_settle: cpu2 - cpu1,
        late,
        late_acks: acks.len(),
        late_after,
        late_early,
        late_missing,
        looked,
    })
}

/// Naive (every case re-traced after each batch) vs the exposure index, batch by batch.
fn compare(a: &Args, run: &Run, tail: &[Vec<ScanItem>], live: bool) -> Res<()> {
    use engine::Clock;
    let health = run.health.as_ref().ok_or("the comparison needs Health")?;
    let engine = &run.engine;
    let policy = *health.policy();
    let wins = windows(health);
    println!(
        "compare: Health::open with {} cases (every standing trace derived) {}",
        wins.len(),
        fmt_d(run.health_open)
    );
    let (mut ing, mut inc, mut naive) = (Vec::new(), Vec::new(), Vec::new());
    // Measured batches spread evenly over the tail; the batches between them are ingested
    // (pipelined) and applied unmeasured.
    let k = a.compare_batches.clamp(1, tail.len().max(1));
    let measured: Vec<usize> = (0..k).map(|i| i * tail.len() / k).collect();
    let mut next = 0usize;
    for (i, &at) in measured.iter().enumerate() {
        if at > next {
            let between = clocked(tail[next..at].to_vec(), run.clock.clone(), live);
            let t = Instant::now();
            ingest_pipelined(engine, between, a.in_flight)?;
            health.settle()?;
            println!(
                "compare: batches {}..{} ingested and applied unmeasured in {}",
                next + 1,
                at,
                fmt_d(t.elapsed())
            );
        }
        next = at + 1;
        let batch = &tail[at];
        if live {
            let t = newest(batch);
            if t > run.clock.now() {
                run.clock.set(t);
            }
        }
        let before = health.stats().rederived_by_scans;
        // The answers before the batch: which cases the batch changed.
        let held: Vec<Option<Arc<engine::TraceResult>>> =
            wins.iter().map(|w| health.contacts(&w.0)).collect();
        let items = batch.len();
        let t = Instant::now();
        engine.ingest(batch.clone())?;
        let t_ing = t.elapsed();
        let t = Instant::now();
        health.settle()?;
        let t_inc = t.elapsed();
        let rederived = health.stats().rederived_by_scans - before;
        let mut t_naive = Duration::ZERO;
        let mut t_rederived = Duration::ZERO;
        let mut differ = 0usize;
        let mut changed = 0usize;
        for ((id, person, from, to), old) in wins.iter().zip(&held) {
            let t = Instant::now();
            let fresh = engine.trace(&trace_req(person, *from, *to, &policy));
            let took = t.elapsed();
            t_naive += took;
            let standing = health.contacts(id);
            let replaced = match (old, &standing) {
                (Some(o), Some(s)) => o != s,
                _ => true,
            };
            if replaced {
                changed += 1;
                t_rederived += took;
            }
            let same = match (&fresh, &standing) {
                (Some(f), Some(s)) => **s == *f,
                (None, Some(s)) => s.visits.is_empty() && s.f1.is_empty() && s.f2.is_empty(),
                _ => false,
            };
            if !same {
                differ += 1;
            }
        }
        println!(
            "compare batch {} (tail batch {}): {} scans ingested in {}; exposure index: settle {} ({} of {} cases refreshed; fresh traces of the {} whose answer changed take {}); naive: {} traces {} ({:.1}× the exposure index); standing traces differing from a fresh trace: {}",
            i + 1,
            at + 1,
            items,
            fmt_d(t_ing),
            fmt_d(t_inc),
            rederived,
            wins.len(),
            changed,
            fmt_d(t_rederived),
            wins.len(),
            fmt_d(t_naive),
            t_naive.as_secs_f64() / t_inc.as_secs_f64().max(1e-9),
            differ
        );
        ing.push(t_ing.as_secs_f64());
        inc.push(t_inc.as_secs_f64());
        naive.push(t_naive.as_secs_f64());
    }
    let (ing_m, _, _) = mrange(&ing);
    let (inc_m, inc_lo, inc_hi) = mrange(&inc);
    let (nai_m, nai_lo, nai_hi) = mrange(&naive);
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    println!(
        "compare summary over {} batches of {}: keeping traces current per batch: exposure index median {} ({} – {}), naive median {} ({} – {}); naive / index: {:.1}× (medians), {:.1}× (totals); ingestion each allows (one batch at a time, ingest + keep current, median batch): index {}, naive {}",
        inc.len(),
        a.batch,
        fmt_d(Duration::from_secs_f64(inc_m)),
        fmt_d(Duration::from_secs_f64(inc_lo)),
        fmt_d(Duration::from_secs_f64(inc_hi)),
        fmt_d(Duration::from_secs_f64(nai_m)),
        fmt_d(Duration::from_secs_f64(nai_lo)),
        fmt_d(Duration::from_secs_f64(nai_hi)),
        nai_m / inc_m.max(1e-9),
        sum(&naive) / sum(&inc).max(1e-9),
        fmt_rate(a.batch as f64 / (ing_m + inc_m)),
        fmt_rate(a.batch as f64 / (ing_m + nai_m)),
    );
    Ok(())
}
