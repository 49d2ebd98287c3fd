//! Runs depth-1 (or depth-2) traces for many persons of a store, for profiling:
//! `cargo run --release -p checkin-engine --example trace_loop -- DIR NOW DEPTH COUNT [IDS]`.
//! Person ids are the bench crate's (`vn` + scrambled number, 1 M persons) unless `IDS` is
//! `loadtest:PERSONS`, the load generator's `p000000`-style ids.

use std::sync::Arc;
use std::time::Instant;

use engine::{Config, Durability, Engine, ManualClock, TraceRequest};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, now, depth, count, ids) = match args.as_slice() {
        [d, n, de, c] => (d, n, de, c, None),
        [d, n, de, c, ids] => (d, n, de, c, Some(ids.as_str())),
        _ => return Err("usage: trace_loop DIR NOW DEPTH COUNT [loadtest:PERSONS]".into()),
    };
    let now: i64 = now.parse()?;
    let mut config = Config::new(dir);
    config.durability = Durability::Os;
    config.clock = Arc::new(ManualClock::new(now));
    let engine = Engine::open(config)?;
    let depth: u8 = depth.parse()?;
    let count: usize = count.parse()?;
    let persons: Vec<String> = match ids.and_then(|s| s.strip_prefix("loadtest:")) {
        // The load generator's ids: "p" and the number, zero-padded to the width of the largest.
        Some(n) => {
            let n: u64 = n.parse()?;
            let width = (n.max(2) - 1).to_string().len().max(6);
            (0..count as u64)
                .map(|i| format!("p{:0width$}", (i * 7919) % n))
                .collect()
        }
        // The bench crate's ids: "vn" and a scramble of the person number.
        None => (0..count as u64)
            .map(|i| {
                let n = (i * 7919) % 1_000_000;
                format!("vn{:010x}", n.wrapping_mul(0x5_DEEC_E66D) & ((1 << 40) - 1))
            })
            .collect(),
    };
    let mut times = Vec::new();
    let mut f1 = 0usize;
    for p in &persons {
        let req = TraceRequest::new(p.clone(), None, None, None, Some(depth), None, None, now)?;
        let t = Instant::now();
        if let Some(r) = engine.trace(&req) {
            f1 += r.f1.len();
            times.push(t.elapsed());
        }
    }
    times.sort();
    if times.is_empty() {
        return Err("no person found".into());
    }
    println!(
        "{} traces, median {:?}, mean {:?}, p90 {:?}, mean F1 {:.1}",
        times.len(),
        times[times.len() / 2],
        times.iter().sum::<std::time::Duration>() / times.len() as u32,
        times[times.len() * 9 / 10],
        f1 as f64 / times.len() as f64
    );
    Ok(())
}
