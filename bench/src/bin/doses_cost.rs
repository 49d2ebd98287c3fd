//! What `Health::record_doses` costs per record in process, batch after batch, as the store
//! grows: the ceiling under `POST /v1/vaccinations` (every request's doses go through it, one
//! request at a time, under the vaccinations' write mutex). Figures in docs/BENCHMARKS.md
//! ("Health records").
//!
//! `cargo run --release -p checkin-bench --bin doses_cost -- [ROWS] [BATCH]` (defaults 2,300,000
//! and 100,000) generates ROWS valid dose records with `checkin-import`'s generator (seed 7, no
//! bad rows, the same rows as `bench/peers/vaccinations.sh` and `bench/records/reads.sh`), opens
//! a fresh engine (Durability::Fsync) and health database in a temporary directory, registers the
//! generator's areas, and records the rows in batches of BATCH on this thread. For each batch it
//! prints the wall time of `record_doses` (check, one redb write transaction committed with
//! `Durability::Immediate`, in-memory indexes) and this thread's CPU time in it
//! (`/proc/thread-self/schedstat`), so that waiting for the fsync and for a shared CPU show
//! apart, and the whole process's CPU time in it (`/proc/self/stat`, 10 ms ticks: the threads
//! `record_doses` checks and prepares on are not this thread); then the medians.

use std::time::{Duration, Instant};

use checkin_import::gen;
use engine::{Config, Durability, Engine};
use health::{AreaInput, DoseInput, Health, HealthConfig};

/// Nanoseconds this thread has run on a CPU.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// CPU time of the whole process (user + system, all threads), in clock ticks of 10 ms.
fn process_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // the fields after the command's closing parenthesis; utime and stime are the 12th and 13th
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args.next().map_or(Ok(2_300_000), |a| a.parse())?;
    let batch: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let options = gen::Options {
        rows,
        seed: 7,
        bad: 0.0,
        now,
        ..gen::Options::default()
    };
    let t0 = Instant::now();
    let mut csv = Vec::new();
    let expected = gen::generate(&options, &mut csv)?;
    let mut items = Vec::with_capacity(rows as usize);
    let mut rdr = csv::ReaderBuilder::new().from_reader(csv.as_slice());
    let cell =
        |r: &csv::StringRecord, i: usize| r.get(i).filter(|s| !s.is_empty()).map(str::to_string);
    for rec in rdr.records() {
        let r = rec?;
        items.push(DoseInput {
            person: r.get(0).unwrap_or_default().to_string(),
            dose: r.get(1).unwrap_or_default().parse()?,
            vaccine: r.get(2).unwrap_or_default().to_string(),
            administered_at: r.get(3).unwrap_or_default().parse()?,
            lot: cell(&r, 4),
            site: cell(&r, 5),
            area: cell(&r, 6),
        });
    }
    drop(csv);
    println!(
        "doses_cost: {} rows ({} persons) generated and parsed in {:.1} s; batches of {batch}; load {}",
        items.len(),
        expected.persons,
        t0.elapsed().as_secs_f64(),
        checkin_bench::load_average()
    );
    let dir = tempfile::tempdir()?;
    let mut config = Config::new(dir.path());
    config.durability = Durability::Fsync;
    let engine = Engine::open(config)?;
    let health = Health::open(engine, HealthConfig::new(dir.path()))?;
    let areas = gen::areas(options.seed, options.districts)
        .into_iter()
        .map(|a| AreaInput {
            id: a.id,
            name: a.name,
            population: a.population as i64,
            parent: a.parent,
        })
        .collect();
    health.register_areas(areas)?;
    let (mut walls, mut cpus, mut procs) = (Vec::new(), Vec::new(), Vec::new());
    let mut stored = 0usize;
    let mut in_record = Duration::ZERO;
    let mut rest = items.into_iter();
    loop {
        let chunk: Vec<_> = rest.by_ref().take(batch.max(1)).map(Ok).collect();
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        let (c0, p0, t) = (thread_cpu(), process_cpu(), Instant::now());
        let outcome = health.record_doses(chunk)?;
        let (wall, cpu) = (t.elapsed(), thread_cpu().saturating_sub(c0));
        let all = process_cpu().saturating_sub(p0);
        in_record += wall;
        if outcome.accepted as usize != n {
            return Err(format!("{} of {n} accepted", outcome.accepted).into());
        }
        stored += n;
        let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        println!(
            "batch ending at {stored:>9} stored: wall {:>7.1} ms ({:>5.2} µs/record, {:>7.0} records/s), this thread's CPU {:>7.1} ms ({:>5.2} µs/record), process CPU {:>5.2} µs/record",
            wall.as_secs_f64() * 1e3,
            us(wall),
            n as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e3,
            us(cpu),
            us(all)
        );
        walls.push(us(wall));
        cpus.push(us(cpu));
        procs.push(us(all));
    }
    let total = in_record.as_secs_f64();
    let (w, c, a) = (median(walls), median(cpus), median(procs));
    println!(
        "median per record: wall {w:.2} µs ({:.0} records/s), this thread's CPU {c:.2} µs, process CPU {a:.2} µs; all {stored} in {total:.1} s of record_doses ({:.0} records/s)",
        1e6 / w,
        stored as f64 / total
    );
    let (dose1, fully) = health.vaccination_counts(now);
    println!("dose1 {dose1}, fully vaccinated {fully}");
    Ok(())
}
