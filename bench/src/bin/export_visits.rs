//! Exports every visit the engine derives (contract section 3) as CSV, for the PostgreSQL peer
//! comparison in `bench/peers/`.
//!
//! ```text
//! cargo run --release -p checkin-bench --bin export_visits -- \
//!     --data COPY_OF_SERVER_DATA_DIR --persons scans.csv --out visits.csv
//! ```
//!
//! Opens `--data` with [`engine::Engine::open`] (a stopped server's data directory, or a copy of
//! it: the engine takes the directory's lock and may append to it, so pass a copy when the
//! original must stay untouched), reads the distinct person ids from the first column of
//! `--persons` (the generator's `scans.csv`, header line skipped; an NDJSON file works too), and
//! writes `person,venue,start,end` (with a header line) for every visit of every person, from
//! `engine.visits(person, i64::MIN, i64::MAX)`: persons in byte order, each person's visits
//! ascending by start, exactly as `GET /v1/persons/{id}/visits` would list them unclipped.
//!
//! Prints one summary line (persons, persons without stored scans, visits, store counts) on stderr.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use engine::{Config, Durability, Engine};

struct Args {
    data: PathBuf,
    persons: PathBuf,
    out: PathBuf,
}

const USAGE: &str = "usage: export_visits --data DIR --persons scans.csv --out visits.csv";

fn parse_args() -> Result<Args, String> {
    let (mut data, mut persons, mut out) = (None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let slot = match arg.as_str() {
            "--data" => &mut data,
            "--persons" => &mut persons,
            "--out" => &mut out,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        };
        let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
        *slot = Some(PathBuf::from(value));
    }
    match (data, persons, out) {
        (Some(data), Some(persons), Some(out)) => Ok(Args { data, persons, out }),
        _ => Err(USAGE.to_string()),
    }
}

/// Distinct person ids of a scans file: the first CSV column, or the `"person"` field of NDJSON.
fn read_persons(path: &PathBuf) -> std::io::Result<BTreeSet<String>> {
    let mut persons = BTreeSet::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        let line = line.trim();
        let id = if let Some(rest) = line.strip_prefix("{\"person\":\"") {
            rest.split('"').next()
        } else {
            line.split(',').next()
        };
        if let Some(id) = id.filter(|id| !id.is_empty() && *id != "person" && !id.starts_with('{'))
        {
            if !persons.contains(id) {
                persons.insert(id.to_string());
            }
        }
    }
    Ok(persons)
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let persons = read_persons(&args.persons)?;
    let mut config = Config::new(&args.data);
    config.durability = Durability::Os;
    let engine = Engine::open(config)?;
    let stats = engine.stats();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&args.out)?);
    writeln!(out, "person,venue,start,end")?;
    let (mut visits, mut unknown) = (0u64, 0u64);
    for person in &persons {
        match engine.visits(person, i64::MIN, i64::MAX) {
            Some(vs) => {
                for v in vs {
                    writeln!(out, "{person},{},{},{}", v.venue, v.start, v.end)?;
                    visits += 1;
                }
            }
            None => unknown += 1,
        }
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    engine.shutdown()?;
    eprintln!(
        "export_visits: {} persons ({} without stored scans), {} visits -> {} in {:.2} s \
         (store: {} scans, {} persons, {} venues)",
        persons.len(),
        unknown,
        visits,
        args.out.display(),
        started.elapsed().as_secs_f64(),
        stats.scans,
        stats.persons,
        stats.venues,
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("export_visits: {e}");
            ExitCode::FAILURE
        }
    }
}
