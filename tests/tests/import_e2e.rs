//! `checkin-import` end to end against an in-process server with tokens: a generated file of a
//! few thousand rows (bad rows of every reason, exact duplicates, quoted Vietnamese sites) is
//! imported in chunks; the report's accepted and rejected counts by reason equal what the
//! generator says the server must answer, each listed rejection names the right row and line of
//! the file, the server holds the doses (summary, a person's doses), and importing the same file
//! again changes nothing. Also: a file whose header lacks a column sends nothing, a vaccinator
//! token may not register areas, and a scanner token is refused on the first chunk.
#![allow(clippy::unwrap_used)]

mod api_support;

use std::collections::BTreeMap;
use std::path::Path;

use api_support::*;
use checkin_import::gen;
use checkin_import::{ImportError, Options};
use serde_json::Value;

fn options(s: &Server, token: &str, chunk: usize) -> Options {
    Options {
        url: format!("http://{}", s.addr),
        token: Some(token.to_string()),
        chunk,
        concurrency: 2,
        attempts: 3,
        list_rejected: 10_000,
        progress: false,
        ..Options::default()
    }
}

/// The file's data rows, as the server reads them (cells, and the line each starts on).
fn rows(path: &Path) -> Vec<Vec<String>> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .unwrap();
    rdr.records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_file_imports_with_every_reason_reported_by_row() {
    let s = Server::start_with_tokens().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doses.csv");
    let areas_file = dir.path().join("areas.json");
    let g = gen::Options {
        rows: 4_000,
        seed: 11,
        bad: 0.05,
        now: T0,
        districts: 3,
        ..gen::Options::default()
    };
    let expected = {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        gen::generate(&g, &mut out).unwrap()
    };
    std::fs::write(
        &areas_file,
        serde_json::to_vec(&gen::areas(g.seed, g.districts)).unwrap(),
    )
    .unwrap();
    // Areas need an admin token.
    let json = std::fs::read(&areas_file).unwrap();
    let refused =
        checkin_import::send::register_areas(&options(&s, VACCINATOR, 1), json.clone().into())
            .await
            .unwrap_err();
    assert!(
        matches!(refused, ImportError::Areas { status: 403, .. }),
        "{refused}"
    );
    let n = checkin_import::send::register_areas(&options(&s, ADMIN, 1), json.into())
        .await
        .unwrap();
    assert_eq!(n as usize, gen::areas(g.seed, g.districts).len());

    let report = checkin_import::import(&file, &options(&s, VACCINATOR, 700))
        .await
        .unwrap();
    assert_eq!(report.rows, 4_000);
    assert_eq!(report.chunks, 6);
    assert_eq!(report.accepted, expected.accepted);
    assert_eq!(report.by_reason, expected.rejected);
    assert_eq!(report.rejected, expected.rejected_total());
    assert!(report.rejected > 100, "{report:?}");

    // Every listed rejection names its row (data rows from 0) and the line it starts on, and
    // the row really has that fault.
    let data = rows(&file);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(report.first_rejected.len() as u64, report.rejected);
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for r in &report.first_rejected {
        let row = &data[r.row as usize];
        let line = lines[(r.line - 1) as usize];
        assert!(
            line.starts_with(&row[0]),
            "row {} line {}: {line}",
            r.row,
            r.line
        );
        let ok = match r.reason.as_str() {
            "invalid_person" => row[0].contains(' '),
            "invalid_dose" => row[1]
                .parse::<i64>()
                .map_or(true, |d| !(1..=10).contains(&d)),
            "unknown_vaccine" => health::vaccine(&row[2]).is_none(),
            "invalid_ts" => row[3].parse::<i64>().map_or(true, |t| t < 1_606_780_800),
            "in_future" => row[3].parse::<i64>().unwrap() > T0 + 300,
            "unknown_area" => row[6] == "ST-99-99",
            "invalid_row" => row.len() != 7,
            // A conflict: another row has the same person and dose.
            "conflict" => {
                data.iter()
                    .filter(|o| o.len() == 7 && o[0] == row[0] && o[1] == row[1])
                    .count()
                    >= 2
            }
            other => panic!("unexpected reason {other}"),
        };
        assert!(ok, "row {} rejected as {}: {row:?}", r.row, r.reason);
        *seen.entry(r.reason.clone()).or_default() += 1;
    }
    assert_eq!(seen, expected.rejected);

    // The server holds them: one distinct person per generated person with an accepted dose.
    let summary = s.get("/v1/summary").await.json();
    assert_eq!(summary["dose1"], expected.persons, "{summary}");
    let rejected: std::collections::BTreeSet<u64> =
        report.first_rejected.iter().map(|r| r.row).collect();
    let first = (0..data.len() as u64)
        .find(|i| !rejected.contains(i))
        .map(|i| &data[i as usize])
        .unwrap();
    let doses = s
        .get_as(&format!("/v1/persons/{}/vaccinations", first[0]), EPI)
        .await
        .json();
    assert!(
        doses["doses"].as_array().unwrap().iter().any(|d| d["dose"]
            .as_u64()
            .map(|n| n.to_string())
            .as_deref()
            == Some(first[1].as_str())),
        "{doses}"
    );
    let areas: Value = s.get("/v1/areas").await.json();
    let st = areas["areas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "ST")
        .unwrap()
        .clone();
    assert!(st["dose1_coverage"].as_f64().unwrap() > 0.0, "{st}");

    // Importing the same file again (a rerun after a failure) changes nothing.
    let again = checkin_import::import(&file, &options(&s, ADMIN, 1_500))
        .await
        .unwrap();
    assert_eq!(again.accepted, report.accepted);
    assert_eq!(again.by_reason, report.by_reason);
    assert_eq!(again.chunks, 3);
    assert_eq!(s.get("/v1/summary").await.json()["dose1"], expected.persons);
    // Resuming with --skip numbers rows as in the file.
    let resumed = checkin_import::import(
        &file,
        &Options {
            skip: 3_000,
            ..options(&s, ADMIN, 1_500)
        },
    )
    .await
    .unwrap();
    assert_eq!((resumed.rows, resumed.skipped), (1_000, 3_000));
    assert!(resumed.first_rejected.iter().all(|r| r.row >= 3_000));
    let tail: Vec<_> = report
        .first_rejected
        .iter()
        .filter(|r| r.row >= 3_000)
        .cloned()
        .collect();
    assert_eq!(resumed.first_rejected, tail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_stop_the_import() {
    let s = Server::start_with_tokens().await;
    let dir = tempfile::tempdir().unwrap();
    // A header without administered_at: nothing is sent.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "person,dose,vaccine,lot\np1,1,Abdala,L1\n").unwrap();
    let failed = checkin_import::import(&bad, &options(&s, VACCINATOR, 10))
        .await
        .unwrap_err();
    assert!(
        matches!(&failed.error, ImportError::Header(m) if m.contains("administered_at")),
        "{}",
        failed.error
    );
    // A token of another role: the first chunk is refused (403), the import stops.
    let good = dir.path().join("good.csv");
    std::fs::write(
        &good,
        format!(
            "person,dose,vaccine,administered_at\np1,1,Abdala,{}\n",
            T0 - 86_400
        ),
    )
    .unwrap();
    let failed = checkin_import::import(&good, &options(&s, SCANNER, 10))
        .await
        .unwrap_err();
    assert!(
        matches!(
            failed.error,
            ImportError::Refused {
                status: 403,
                first: 0,
                last: 0,
                ..
            }
        ),
        "{}",
        failed.error
    );
    assert_eq!(failed.report.accepted, 0);
    let ok = checkin_import::import(&good, &options(&s, VACCINATOR, 10))
        .await
        .unwrap();
    assert_eq!((ok.rows, ok.accepted, ok.rejected), (1, 1, 0));
}
