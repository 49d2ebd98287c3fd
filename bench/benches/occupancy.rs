//! Live occupancy: ingestion while the clock follows the scans (every scan is "now", so each one
//! moves a person's live state), and occupancy queries on cached stores.
//!
//! - `live_in_order_b1000`: in-order data set (no late scans, no retries), batches of 1,000, the
//!   manual clock set to each batch's newest timestamp before it is ingested (Durability::Os).
//! - `live_with_late_b1000`: the standard data set (3.5% late, 1% retries): late scans take the
//!   replay path.
//! - `live_in_order_b1`: one scan per call, in order.
//! - `query/venue`, `query/top10`: `occupancy(venue)` and `top_occupancy(10)` on cached stores.
//!
//! `BENCH_SCANS` sets the ingestion size (default 1,000,000); `BENCH_STORE_SCANS` the stores.

use std::time::{Duration, Instant};

use checkin_bench::*;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use engine::{Durability, ScanItem};

fn max_ts(b: &[ScanItem]) -> i64 {
    b.iter()
        .filter_map(|s| s.as_ref().ok().and_then(|s| s.ts))
        .max()
        .unwrap_or(NOW)
}

/// Times `iters` fresh-store live ingestions (clock following the scans).
fn run_live(p: &Params, batches: &[Vec<ScanItem>], iters: u64) -> Duration {
    let clocks: Vec<i64> = batches
        .iter()
        .scan(i64::MIN, |m, b| {
            *m = (*m).max(max_ts(b));
            Some(*m)
        })
        .collect();
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = tempfile::tempdir_in(scratch_root()).expect("scratch dir");
        let (e, clock) = fresh_engine(dir.path(), p, Durability::Os).expect("open");
        let work: Vec<Vec<ScanItem>> = batches.to_vec();
        let t = Instant::now();
        for (b, now) in work.into_iter().zip(&clocks) {
            clock.set(*now);
            std::hint::black_box(e.ingest(b).expect("ingest"));
        }
        total += t.elapsed();
        std::hint::black_box(e.stats().present);
        e.shutdown().expect("shutdown");
    }
    total
}

fn occupancy(c: &mut Criterion) {
    let n = env_sizes("BENCH_SCANS", &[1_000_000])[0];
    let label = size_label(n);
    let mut g = c.benchmark_group("occupancy");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);

    let p_in = Params::standard(n).in_order();
    let ds_in = Dataset::build(&p_in, 1_000);
    g.throughput(Throughput::Elements(ds_in.len() as u64));
    g.bench_function(BenchmarkId::new("live_in_order_b1000", &label), |b| {
        b.iter_custom(|iters| run_live(&p_in, &ds_in.batches, iters))
    });
    let k = 100_000usize.min(ds_in.len());
    let singles: Vec<Vec<ScanItem>> = ds_in
        .batches
        .iter()
        .flatten()
        .take(k)
        .map(|s| vec![s.clone()])
        .collect();
    drop(ds_in);
    g.throughput(Throughput::Elements(k as u64));
    g.bench_function(
        BenchmarkId::new("live_in_order_b1", size_label(k as u64)),
        |b| b.iter_custom(|iters| run_live(&p_in, &singles, iters)),
    );
    drop(singles);

    let p = Params::standard(n);
    let ds = Dataset::build(&p, 1_000);
    g.throughput(Throughput::Elements(ds.len() as u64));
    g.bench_function(BenchmarkId::new("live_with_late_b1000", &label), |b| {
        b.iter_custom(|iters| run_live(&p, &ds.batches, iters))
    });
    drop(ds);
    g.finish();

    let mut g = c.benchmark_group("occupancy_query");
    for n in env_sizes("BENCH_STORE_SCANS", &[1_000_000, 10_000_000]) {
        let p = Params::standard(n);
        let (e, _clock, _) = cached_store(&p).expect("store");
        eprintln!(
            "store {}: present now {} at {} venues",
            size_label(n),
            e.stats().present,
            p.venues
        );
        let ids: Vec<String> = (0..p.venues).step_by(7).map(venue_id).collect();
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("venue", size_label(n)), |b| {
            b.iter(|| {
                i = (i + 1) % ids.len();
                std::hint::black_box(e.occupancy(&ids[i]))
            })
        });
        g.bench_function(BenchmarkId::new("top10", size_label(n)), |b| {
            b.iter(|| std::hint::black_box(e.top_occupancy(10)))
        });
    }
    g.finish();
}

criterion_group!(benches, occupancy);
criterion_main!(benches);
