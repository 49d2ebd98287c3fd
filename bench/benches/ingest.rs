//! Ingestion throughput: log append, interning, indexes and occupancy, end to end through the
//! public API, into a fresh store per iteration (on the target disk, never tmpfs).
//!
//! - `os|fsync/ingest_b1000`: `engine.ingest(batch)` from one thread, batches of 1,000.
//! - `os|fsync/submit_b1000_inflight{4,8}`: `submit` with several batches in flight.
//! - `os|fsync/ingest_b1`: one scan per call (per-scan latency-bound ingestion).
//! - `fsync/submit_b1_inflight64`: one scan per call, 64 calls in flight (a busy server).
//!
//! `BENCH_SCANS` sets the data-set size (default 1,000,000). Throughput is in scans (elements).

use std::time::{Duration, Instant};

use checkin_bench::*;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use engine::{Durability, ScanItem};

/// Times `iters` fresh-store ingestions of `batches` (cloned outside the timing).
fn run(
    p: &Params,
    batches: &[Vec<ScanItem>],
    durability: Durability,
    in_flight: usize,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = tempfile::tempdir_in(scratch_root()).expect("scratch dir");
        let (e, _clock) = fresh_engine(dir.path(), p, durability).expect("open");
        let work: Vec<Vec<ScanItem>> = batches.to_vec();
        let t = Instant::now();
        if in_flight == 0 {
            for b in work {
                std::hint::black_box(e.ingest(b).expect("ingest"));
            }
        } else {
            std::hint::black_box(ingest_pipelined(&e, work, in_flight).expect("ingest"));
        }
        total += t.elapsed();
        e.shutdown().expect("shutdown");
    }
    total
}

fn ingest(c: &mut Criterion) {
    let n = env_sizes("BENCH_SCANS", &[1_000_000])[0];
    let p = Params::standard(n);
    let ds = Dataset::build(&p, 1_000);
    eprintln!("data set: {} items, {:?}", ds.len(), ds.stats);
    let label = size_label(n);

    let mut g = c.benchmark_group("ingest");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(ds.len() as u64));
    for (name, d, in_flight) in [
        ("os/ingest_b1000", Durability::Os, 0usize),
        ("os/submit_b1000_inflight4", Durability::Os, 4),
        ("fsync/ingest_b1000", Durability::Fsync, 0),
        ("fsync/submit_b1000_inflight4", Durability::Fsync, 4),
        ("fsync/submit_b1000_inflight8", Durability::Fsync, 8),
    ] {
        g.bench_function(BenchmarkId::new(name, &label), |b| {
            b.iter_custom(|iters| run(&p, &ds.batches, d, in_flight, iters))
        });
    }

    // One scan per call: the first scans of the same data set.
    let singles = |k: usize| -> Vec<Vec<ScanItem>> {
        ds.batches
            .iter()
            .flatten()
            .take(k)
            .map(|s| vec![s.clone()])
            .collect()
    };
    for (name, d, in_flight, k) in [
        ("os/ingest_b1", Durability::Os, 0usize, 100_000usize),
        ("os/submit_b1_inflight64", Durability::Os, 64, 100_000),
        ("fsync/ingest_b1", Durability::Fsync, 0, 2_000),
        ("fsync/submit_b1_inflight64", Durability::Fsync, 64, 50_000),
    ] {
        let work = singles(k);
        g.throughput(Throughput::Elements(k as u64));
        g.bench_function(BenchmarkId::new(name, size_label(k as u64)), |b| {
            b.iter_custom(|iters| run(&p, &work, d, in_flight, iters))
        });
    }
    g.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
