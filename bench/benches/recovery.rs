//! Reopening a data directory: `Engine::open` replays every log segment and rebuilds the indexes
//! and occupancy. Stores are the cached ones under `target/bench-stores` (built on first use), so
//! this measures a warm page cache. `BENCH_STORE_SCANS` picks sizes (default `1000000,10000000`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use checkin_bench::*;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use engine::{Durability, Engine, ManualClock};

fn recovery(c: &mut Criterion) {
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    for n in env_sizes("BENCH_STORE_SCANS", &[1_000_000, 10_000_000]) {
        let p = Params::standard(n);
        let dir = store_dir(&p);
        {
            let (e, _clock, info) = load_store(&dir, &p).expect("store");
            let scans = e.stats().scans;
            eprintln!(
                "store {}: {} scans, built {}, first open {:?}",
                size_label(n),
                scans,
                info.built,
                info.open_wall
            );
            g.throughput(Throughput::Elements(scans));
        }
        let mut reported = Vec::new();
        g.bench_function(BenchmarkId::new("open", size_label(n)), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let clock = Arc::new(ManualClock::new(p.now));
                    let t = Instant::now();
                    let e = Engine::open(bench_config(&dir, Durability::Os, clock)).expect("open");
                    total += t.elapsed();
                    reported.push(e.recovery_report().elapsed);
                    drop(e);
                }
                total
            })
        });
        eprintln!(
            "recovery_report().elapsed over {} opens: median {:?}",
            reported.len(),
            percentiles(reported)[0]
        );
    }
    g.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
