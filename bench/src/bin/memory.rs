//! Memory, recovery, trace-latency and disk-fsync figures at scale, in one run.
//!
//! `cargo run --release -p checkin-bench --bin memory -- --scans 10000000`
//!
//! 1. Measures the disk's `write + fdatasync` latency (4 KiB and 32 KiB, 200 rounds: appending,
//!    overwriting written blocks, overwriting `fallocate`d blocks) and the engine's own group-commit
//!    durations (`on_sync`) over 200,000 scans in Durability::Fsync. `--probe-only` stops there.
//! 2. Generates the data set (compact, before the baseline), opens a fresh store (Durability::Os)
//!    in the cache directory of `target/bench-stores`, reads VmRSS/RssAnon/RssFile, ingests every
//!    scan in batches of 1,000 with 4 in flight, reads them again and reports bytes per stored scan
//!    and `index_heap_bytes()`.
//! 3. Shuts the engine down and runs itself again with `--reopen`, in a fresh process: that child
//!    times `Engine::open` (recovery), reports RSS after recovery, and times 2,000 depth-1 and
//!    500 depth-2 traces of random persons (per-query percentiles).
//!
//! The store is left in place, marked complete, so the criterion benches reuse it.

use std::fs::OpenOptions;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use checkin_bench::*;
use engine::Durability;

struct Args {
    scans: u64,
    reopen: bool,
    skip_load: bool,
    probe_only: bool,
    traces: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        scans: 10_000_000,
        reopen: false,
        skip_load: false,
        probe_only: false,
        traces: 2_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scans" => a.scans = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.scans),
            "--traces" => a.traces = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.traces),
            "--reopen" => a.reopen = true,
            "--skip-load" => a.skip_load = true,
            "--probe-only" => a.probe_only = true,
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    a
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// How the probe file's blocks exist before the timed writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prep {
    /// Appending to an empty file (every sync also commits the new size).
    Append,
    /// Overwriting blocks written (zeros) and synced beforehand: pure data sync.
    Prewritten,
    /// Overwriting blocks preallocated by `fallocate(1)` (unwritten extents, like the engine's
    /// `posix_fallocate`d segments): every sync also converts extents in the journal.
    Fallocated,
}

/// Latency of writing `size` bytes at the next offset and `fdatasync`ing, on the benchmark disk.
fn fsync_latency(size: usize, rounds: usize, prep: Prep) -> std::io::Result<[Duration; 4]> {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir_in(scratch_root())?;
    let path = dir.path().join("fsync-probe");
    let total = (size * rounds) as u64;
    match prep {
        Prep::Append => {}
        Prep::Prewritten => {
            let mut f = std::fs::File::create(&path)?;
            f.write_all(&vec![0u8; total as usize])?;
            f.sync_all()?;
        }
        Prep::Fallocated => {
            let ok = Command::new("fallocate")
                .args(["-l", &total.to_string()])
                .arg(&path)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(std::io::Error::other("fallocate(1) unavailable"));
            }
            std::fs::File::open(&path)?.sync_all()?;
        }
    }
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)?;
    let buf = vec![0xA5u8; size];
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Instant::now();
        f.write_all_at(&buf, (i * size) as u64)?;
        f.sync_data()?;
        times.push(t.elapsed());
    }
    Ok(percentiles(times))
}

/// Group-commit durations the engine itself reports (`on_sync`) while ingesting `n` scans in
/// Durability::Fsync, batches of 1,000, 4 in flight.
fn engine_sync_times(n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let p = Params::standard(n);
    let dir = tempfile::tempdir_in(scratch_root())?;
    let (e, _clock) = fresh_engine(dir.path(), &p, Durability::Fsync)?;
    let times = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = times.clone();
    e.on_sync(Box::new(move |d| {
        if let Ok(mut v) = sink.lock() {
            v.push(d);
        }
    }));
    let t = Instant::now();
    let totals = ingest_pipelined(&e, ScanStream::new(&p).batches(1_000), 4)?;
    let took = t.elapsed();
    e.shutdown()?;
    let v = times.lock().map(|v| v.clone()).unwrap_or_default();
    let syncs = v.len();
    let [p50, p90, p99, max] = percentiles(v);
    println!(
        "engine group commits (Fsync, {} scans, b1000, 4 in flight): {:.0} scans/s, {syncs} syncs, sync median {} p90 {} p99 {} max {}",
        totals.items,
        totals.items as f64 / took.as_secs_f64(),
        fmt_d(p50),
        fmt_d(p90),
        fmt_d(p99),
        fmt_d(max)
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let p = Params::standard(args.scans);
    let dir = store_dir(&p);
    if args.reopen {
        return reopen(&args, &p);
    }
    println!("# checkin-bench memory: {} scans", args.scans);
    println!("params: {p:?}");
    println!("store: {}", dir.display());

    for prep in [Prep::Append, Prep::Prewritten, Prep::Fallocated] {
        for size in [4_096usize, 32_768] {
            match fsync_latency(size, 200, prep) {
                Ok([p50, p90, p99, max]) => println!(
                    "disk write+fdatasync {prep:?} {size} B x200: median {} p90 {} p99 {} max {}",
                    fmt_d(p50),
                    fmt_d(p90),
                    fmt_d(p99),
                    fmt_d(max)
                ),
                Err(e) => println!("disk write+fdatasync {prep:?} {size} B: {e}"),
            }
        }
    }
    engine_sync_times(200_000)?;
    if args.probe_only {
        return Ok(());
    }

    if !args.skip_load {
        let t = Instant::now();
        let scans: Vec<Scan> = ScanStream::new(&p).collect();
        println!(
            "generated {} scans in {:.2} s",
            scans.len(),
            t.elapsed().as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&dir);
        let (e, _clock) = fresh_engine(&dir, &p, Durability::Os)?;
        let before = proc_status();
        let heap_before = e.index_heap_bytes();
        let t = Instant::now();
        let totals = ingest_pipelined(
            &e,
            scans
                .chunks(1_000)
                .map(|c| c.iter().map(Scan::item).collect()),
            4,
        )?;
        e.flush()?;
        let took = t.elapsed();
        let after = proc_status();
        let stats = e.stats();
        let heap = e.index_heap_bytes();
        let stored = stats.scans.max(1) as f64;
        println!(
            "loaded: items {} accepted {} duplicates {} rejected {} stored {} persons {} venues {} log {:.1} MiB",
            totals.items,
            totals.accepted,
            totals.duplicates,
            totals.rejected,
            stats.scans,
            stats.persons,
            stats.venues,
            stats.log_bytes as f64 / 1048576.0
        );
        println!(
            "load (Os, batches of 1000, 4 in flight, incl. item formatting): {:.2} s = {:.0} scans/s",
            took.as_secs_f64(),
            totals.items as f64 / took.as_secs_f64()
        );
        println!(
            "RSS before load: VmRSS {:.1} MiB RssAnon {:.1} MiB RssFile {:.1} MiB",
            mib(before.vm_rss_kb),
            mib(before.rss_anon_kb),
            mib(before.rss_file_kb)
        );
        println!(
            "RSS after load:  VmRSS {:.1} MiB RssAnon {:.1} MiB RssFile {:.1} MiB",
            mib(after.vm_rss_kb),
            mib(after.rss_anon_kb),
            mib(after.rss_file_kb)
        );
        println!(
            "after ingest: RssAnon delta {:.1} B/scan, VmRSS delta {:.1} B/scan, index_heap_bytes {:.1} MiB = {:.1} B/scan (delta {:.1} B/scan)",
            (after.rss_anon_kb.saturating_sub(before.rss_anon_kb) * 1024) as f64 / stored,
            (after.vm_rss_kb.saturating_sub(before.vm_rss_kb) * 1024) as f64 / stored,
            heap as f64 / 1048576.0,
            heap as f64 / stored,
            heap.saturating_sub(heap_before) as f64 / stored
        );
        e.shutdown()?;
        drop(e);
        drop(scans);
        mark_complete(&dir, &p)?;
    }

    let out = Command::new(std::env::current_exe()?)
        .args([
            "--reopen",
            "--scans",
            &args.scans.to_string(),
            "--traces",
            &args.traces.to_string(),
        ])
        .status()?;
    if !out.success() {
        return Err(format!("reopen child failed: {out}").into());
    }
    Ok(())
}

/// The child: reopen (recovery), RSS after recovery, trace latency percentiles.
fn reopen(args: &Args, p: &Params) -> Result<(), Box<dyn std::error::Error>> {
    let dir = store_dir(p);
    let before = proc_status();
    let t = Instant::now();
    let (e, _clock, info) = load_store(&dir, p)?;
    let wall = t.elapsed();
    if info.built {
        println!(
            "(store was missing: rebuilt it in {:.1} s)",
            info.build_wall.as_secs_f64()
        );
    }
    let after = proc_status();
    let r = e.recovery_report();
    let stats = e.stats();
    let stored = stats.scans.max(1) as f64;
    println!(
        "reopen: recovery_report.elapsed {} (open wall {}), segments {} records {} scans {} dropped {}",
        fmt_d(r.elapsed),
        fmt_d(info.open_wall.max(if info.built { Duration::ZERO } else { wall })),
        r.segments,
        r.records,
        r.scans,
        r.dropped.len()
    );
    println!(
        "after reopen: VmRSS {:.1} MiB RssAnon {:.1} MiB RssFile {:.1} MiB; RssAnon delta {:.1} B/scan, VmRSS delta {:.1} B/scan, index_heap_bytes {:.1} B/scan",
        mib(after.vm_rss_kb),
        mib(after.rss_anon_kb),
        mib(after.rss_file_kb),
        (after.rss_anon_kb.saturating_sub(before.rss_anon_kb) * 1024) as f64 / stored,
        (after.vm_rss_kb.saturating_sub(before.vm_rss_kb) * 1024) as f64 / stored,
        e.index_heap_bytes() as f64 / stored
    );

    let persons = pick_persons(&e, p, args.traces, 42);
    for (depth, n) in [(1u8, persons.len()), (2u8, persons.len().min(500))] {
        let mut times = Vec::with_capacity(n);
        let (mut f1, mut f2, mut visits) = (0usize, 0usize, 0usize);
        for id in &persons[..n] {
            let req = trace_request(id, p.now, depth);
            let t = Instant::now();
            let res = e.trace(&req);
            times.push(t.elapsed());
            if let Some(res) = res {
                f1 += res.f1.len();
                f2 += res.f2.len();
                visits += res.visits.len();
            }
        }
        let [p50, p90, p99, max] = percentiles(times);
        println!(
            "trace depth {depth} over 14 days, {n} random persons: median {} p90 {} p99 {} max {} (mean visits {:.1}, F1 {:.1}, F2 {:.1})",
            fmt_d(p50),
            fmt_d(p90),
            fmt_d(p99),
            fmt_d(max),
            visits as f64 / n.max(1) as f64,
            f1 as f64 / n.max(1) as f64,
            f2 as f64 / n.max(1) as f64
        );
    }
    Ok(())
}
