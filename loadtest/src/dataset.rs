//! Writing a generated dataset to disk, streaming: `scans.ndjson` (our server's ingest format),
//! `scans.csv` (`person,venue,ts,action` with a header, for peer systems) and `venues.json`
//! (the array `POST /v1/venues` takes). Memory stays flat whatever the scan count.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::gen::{GenStats, Generator, Params};

/// File name of the NDJSON scans.
pub const SCANS_NDJSON: &str = "scans.ndjson";
/// File name of the CSV scans.
pub const SCANS_CSV: &str = "scans.csv";
/// File name of the venues array.
pub const VENUES_JSON: &str = "venues.json";

/// Which scan files to write (the venues file is always written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats {
    pub ndjson: bool,
    pub csv: bool,
}

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scans: u64,
    pub venues: u64,
    pub persons: u32,
    pub start_ts: i64,
    pub end_ts: i64,
    pub seed: u64,
    pub files: Vec<PathBuf>,
    pub stats: GenStats,
}

fn create(dir: &Path, name: &str, files: &mut Vec<PathBuf>) -> Result<BufWriter<File>> {
    let path = dir.join(name);
    let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    files.push(path);
    Ok(BufWriter::with_capacity(1 << 20, f))
}

/// Writes the dataset of `params` into `dir` (created if missing). `progress` is called with
/// the number of scans written so far, every 64k scans and at the end.
pub fn write_dataset(
    params: &Params,
    dir: &Path,
    formats: Formats,
    mut progress: impl FnMut(u64),
) -> Result<Summary> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    let venues = crate::gen::venues(params)?;
    {
        let mut w = create(dir, VENUES_JSON, &mut files)?;
        serde_json::to_writer_pretty(&mut w, &venues).context("writing venues")?;
        w.write_all(b"\n")?;
        w.flush().context("writing venues")?;
    }
    let mut gen = Generator::new(params)?;
    let ids = gen.ids();
    let mut nd = if formats.ndjson {
        Some(create(dir, SCANS_NDJSON, &mut files)?)
    } else {
        None
    };
    let mut csv = if formats.csv {
        let mut w = create(dir, SCANS_CSV, &mut files)?;
        w.write_all(b"person,venue,ts,action\n")?;
        Some(w)
    } else {
        None
    };
    let mut n = 0u64;
    for s in gen.by_ref() {
        if let Some(w) = nd.as_mut() {
            ids.write_json(w, &s)?;
            w.write_all(b"\n")?;
        }
        if let Some(w) = csv.as_mut() {
            ids.write_csv(w, &s)?;
            w.write_all(b"\n")?;
        }
        n += 1;
        if n & 0xFFFF == 0 {
            progress(n);
        }
    }
    for w in [nd.as_mut(), csv.as_mut()].into_iter().flatten() {
        w.flush().context("writing scans")?;
    }
    progress(n);
    Ok(Summary {
        scans: n,
        venues: venues.len() as u64,
        persons: params.persons,
        start_ts: params.start_ts(),
        end_ts: params.end_ts,
        seed: params.seed,
        files,
        stats: gen.stats().clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::{Scan, Venue};

    #[test]
    fn writes_consistent_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Params {
            persons: 500,
            venues: 50,
            scans: 3_000,
            end_ts: 1_750_000_000,
            ..Params::default()
        };
        let mut last = 0;
        let sum = write_dataset(
            &p,
            dir.path(),
            Formats {
                ndjson: true,
                csv: true,
            },
            |n| last = n,
        )
        .expect("write");
        assert_eq!(sum.scans, 3_000);
        assert_eq!(last, 3_000);
        let venues: Vec<Venue> = serde_json::from_slice(
            &std::fs::read(dir.path().join(VENUES_JSON)).expect("venues file"),
        )
        .expect("venues json");
        assert_eq!(venues.len(), 50);
        let nd = std::fs::read_to_string(dir.path().join(SCANS_NDJSON)).expect("ndjson");
        let scans: Vec<Scan> = nd
            .lines()
            .map(|l| serde_json::from_str(l).expect("scan line"))
            .collect();
        assert_eq!(scans.len(), 3_000);
        let csv = std::fs::read_to_string(dir.path().join(SCANS_CSV)).expect("csv");
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("person,venue,ts,action"));
        for (line, s) in lines.zip(&scans) {
            assert_eq!(
                line,
                format!("{},{},{},{}", s.person, s.venue, s.ts, s.action.as_str())
            );
        }
        let expect: Vec<Scan> = crate::gen::scans(&p).expect("params").collect();
        assert_eq!(scans, expect, "file equals the in-process stream");
    }
}
