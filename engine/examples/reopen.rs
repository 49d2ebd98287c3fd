//! Opens a data directory and prints what recovery found and how long it took:
//! `cargo run --release -p checkin-engine --example reopen -- DIR [NOW]`.

use std::sync::Arc;

use engine::{Config, Durability, Engine, ManualClock, SystemClock};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: reopen DIR [NOW]")?;
    let mut config = Config::new(dir);
    config.durability = Durability::Os;
    config.clock = match args.next() {
        Some(now) => Arc::new(ManualClock::new(now.parse()?)),
        None => Arc::new(SystemClock),
    };
    for _ in 0..3 {
        let engine = Engine::open(config.clone())?;
        let r = engine.recovery_report();
        println!(
            "opened in {:?} (segments {}, records {}, scans {}, dropped {}); index heap {} MiB",
            r.elapsed,
            r.segments,
            r.records,
            r.scans,
            r.dropped.len(),
            engine.index_heap_bytes() >> 20
        );
        for (phase, took) in &r.phases {
            println!("  {phase}: {took:?}");
        }
    }
    Ok(())
}
