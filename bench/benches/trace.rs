//! Contact-trace latency on cached stores (built once under `target/bench-stores`, reopened after).
//!
//! Each iteration traces the next of 1,000 seeded random persons (persons with stored scans) over
//! the default 14-day window, so criterion's per-iteration time is a mean over persons; the
//! `memory` binary reports true per-query percentiles. `BENCH_STORE_SCANS` picks store sizes
//! (default `1000000,10000000`).

use checkin_bench::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};

fn trace(c: &mut Criterion) {
    for n in env_sizes("BENCH_STORE_SCANS", &[1_000_000, 10_000_000]) {
        let p = Params::standard(n);
        let (e, _clock, info) = cached_store(&p).expect("store");
        eprintln!(
            "store {}: built {} open {:?} build {:?}",
            size_label(n),
            info.built,
            info.open_wall,
            info.build_wall
        );
        let persons = pick_persons(&e, &p, 1_000, 7);
        let mut g = c.benchmark_group("trace");
        for depth in [1u8, 2] {
            if depth == 2 {
                // Depth 2 takes milliseconds to seconds: few, flat samples.
                g.sample_size(10).sampling_mode(SamplingMode::Flat);
            }
            let reqs: Vec<_> = persons
                .iter()
                .map(|id| trace_request(id, p.now, depth))
                .collect();
            let mut i = 0usize;
            g.bench_function(
                BenchmarkId::new(format!("depth{depth}"), size_label(n)),
                |b| {
                    b.iter(|| {
                        i = (i + 1) % reqs.len();
                        std::hint::black_box(e.trace(&reqs[i]))
                    })
                },
            );
        }
        g.finish();
        let mut g = c.benchmark_group("trace");
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("visits", size_label(n)), |b| {
            b.iter(|| {
                i = (i + 1) % persons.len();
                std::hint::black_box(e.visits(&persons[i], p.now - 14 * 86_400, p.now))
            })
        });
        g.finish();
    }
}

criterion_group!(benches, trace);
criterion_main!(benches);
