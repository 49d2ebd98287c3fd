//! `checkin-loadtest ingest --cases-per-min` against the real `checkin-server` binary, with
//! tokens (admin for venues and scans, epidemiologist for cases): the cases the report counts
//! are the cases the server lists, each for a person the run had sent scans for and sampled at
//! one of that person's scans, F0 with a standing trace; a 409 for a person who already has an
//! active case is counted apart, not as an error; and the CLI's `--json` report says the same.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use checkin_loadtest::gen::{self, Params};
use checkin_loadtest::load::{Common, Source};
use checkin_loadtest::net::Target;
use checkin_loadtest::{run_ingest_with_cases, CaseOptions, IngestOptions};
use checkin_tests::{http, Launch, ServerProcess};

const ADMIN: &str = "lt-admin-token";
const EPI: &str = "lt-epi-token";

fn tokens_file(dir: &Path) -> PathBuf {
    let entry = |name: &str, role: &str, token: &str| {
        format!(
            "[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n\n",
            api::token_digest_hex(token)
        )
    };
    let path = dir.join("tokens.toml");
    let text = entry("root", "admin", ADMIN) + &entry("cdc", "epidemiologist", EPI);
    std::fs::write(&path, text).unwrap();
    path
}

fn get_as(server: &ServerProcess, path: &str, token: &str) -> Value {
    let auth = format!("Bearer {token}");
    let r = http::request(server.addr, "GET", path, &[("Authorization", &auth)], b"").unwrap();
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json()
}

/// The server's cases whose id starts with `prefix-`, by id.
fn cases_with_prefix(server: &ServerProcess, prefix: &str) -> BTreeMap<String, Value> {
    let all = get_as(server, "/v1/cases", EPI);
    all["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"].as_str().unwrap().starts_with(&format!("{prefix}-")))
        .map(|c| (c["id"].as_str().unwrap().to_string(), c.clone()))
        .collect()
}

fn common(server: &ServerProcess) -> Common {
    let mut c = Common::new(Target::parse(&format!("http://{}", server.addr)).unwrap());
    c.token = Some(ADMIN.into());
    c.connections = 2;
    // Open loop: the run lasts its duration whatever the machine's speed.
    c.rate = Some(20.0);
    c.duration = Some(Duration::from_secs(3));
    c
}

fn case_options(per_min: f64, prefix: &str) -> CaseOptions {
    CaseOptions {
        token: Some(EPI.into()),
        id_prefix: Some(prefix.into()),
        ..CaseOptions::new(per_min)
    }
}

/// `checkin-loadtest` next to the test executable, built once (like `server_bin`).
fn loadtest_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let profile = dir.file_name().unwrap().to_string_lossy().to_string();
        let target = dir.parent().unwrap().to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-q",
            "-p",
            "checkin-loadtest",
            "--bin",
            "checkin-loadtest",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target);
        if profile != "debug" {
            cmd.args(["--profile", &profile]);
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "building checkin-loadtest: {status}");
        let bin = dir.join("checkin-loadtest");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

#[test]
fn cases_registered_while_ingesting_are_the_servers_cases() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let server = ServerProcess::start(
        Launch::new(&dir.path().join("data"))
            .arg("--tokens")
            .arg(tokens.to_string_lossy()),
    );
    let params = Params {
        persons: 300,
        venues: 40,
        scans: 20_000,
        end_ts: checkin_tests::now(),
        seed: 11,
        ..Params::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();

    // 1. Batches of 50 at 20 requests/s for 3 s, 1,200 cases per minute beside them.
    let report = rt
        .block_on(run_ingest_with_cases(
            IngestOptions {
                common: common(&server),
                source: Source::Generate(params.clone()),
                batch: 50,
                scans: None,
                register_venues: true,
                venue_chunk: 100,
            },
            case_options(1_200.0, "e2e"),
        ))
        .unwrap();
    eprintln!("{report}");
    assert_eq!(report.failed_requests(), 0, "{report}");
    assert_eq!(report.scans_accepted, report.scans_sent, "{report}");
    let cases = report.cases.clone().expect("a cases summary");
    assert!(cases.attempted >= 1, "{report}");
    assert_eq!(cases.errors, 0, "{report}");
    assert_eq!(
        cases.registered + cases.active_conflicts,
        cases.attempted,
        "{report}"
    );
    // A fresh server: the first case cannot meet an active one.
    assert!(cases.registered >= 1, "{report}");
    assert_eq!(cases.latency.count, cases.attempted, "{report}");
    assert!(cases.latency.max_ms >= cases.latency.p50_ms);
    let text = report.to_string();
    assert!(text.contains("  register   p50"), "{text}");
    assert!(text.contains("scans/s"), "the ingest lines stay: {text}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["cases"]["registered"], cases.registered);
    assert_eq!(json["cases"]["active_conflicts"], cases.active_conflicts);

    // The scans sent are the generator's first `scans_sent`: every case is for one of their
    // persons, sampled at one of that person's scans (all inside the retention window).
    let mut sent: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for s in gen::scans(&params)
        .unwrap()
        .take(report.scans_sent as usize)
    {
        sent.entry(s.person).or_default().insert(s.ts);
    }
    let listed = cases_with_prefix(&server, "e2e");
    assert_eq!(
        listed.len() as u64,
        cases.registered,
        "{report}\n{listed:?}"
    );
    let mut persons = BTreeSet::new();
    for (id, c) in &listed {
        let person = c["person"].as_str().unwrap();
        assert!(persons.insert(person.to_string()), "{person} has two cases");
        let ts = c["sampled_at"].as_i64().unwrap();
        assert!(
            sent.get(person).is_some_and(|t| t.contains(&ts)),
            "{id}: {person} at {ts} is not a sent scan"
        );
        assert_eq!(c["status"], "active", "{c}");
        let one = get_as(&server, &format!("/v1/cases/{id}"), EPI);
        assert_eq!(one["person"], person);
        assert!(
            one["f1"].as_u64().is_some() && one["f2"].as_u64().is_some(),
            "{one}"
        );
        let status = get_as(&server, &format!("/v1/persons/{person}/status"), EPI);
        assert_eq!(status["tier"], "F0", "{status}");
        assert_eq!(status["cases"], json!([id]), "{status}");
    }

    // 2. Scans only for persons who now have an active case: every case is a 409, counted
    // apart (the server's own detail text), none registered, no error.
    let file = dir.path().join("again.ndjson");
    let now = checkin_tests::now();
    let lines: String = persons
        .iter()
        .map(|p| {
            json!({"person": p, "venue": "V-00000", "ts": now - 3_600, "action": "in"}).to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&file, lines.repeat(20)).unwrap();
    let mut c = common(&server);
    c.duration = Some(Duration::from_secs(1));
    let again = rt
        .block_on(run_ingest_with_cases(
            IngestOptions {
                common: c,
                source: Source::File {
                    scans: file,
                    venues: None,
                },
                batch: 5,
                scans: None,
                register_venues: false,
                venue_chunk: 100,
            },
            case_options(1_200.0, "again"),
        ))
        .unwrap();
    eprintln!("{again}");
    let cases = again.cases.clone().expect("a cases summary");
    assert!(cases.attempted >= 1, "{again}");
    assert_eq!(cases.registered, 0, "{again}");
    assert_eq!(cases.errors, 0, "{again}");
    assert_eq!(cases.active_conflicts, cases.attempted, "{again}");
    assert!(cases_with_prefix(&server, "again").is_empty());

    // 3. The command line: --cases-per-min, the case token from the environment, --json.
    let out = dir.path().join("report.json");
    let run = Command::new(loadtest_bin())
        .args(["ingest", "--url"])
        .arg(format!("http://{}", server.addr))
        .args([
            "--token",
            ADMIN,
            "--cases-per-min",
            "600",
            "--case-ids",
            "cli",
        ])
        .args([
            "--rate",
            "10",
            "--batch",
            "50",
            "-c",
            "2",
            "--duration",
            "2s",
        ])
        .args([
            "--persons",
            "300",
            "--venues",
            "40",
            "--seed",
            "13",
            "--quiet",
        ])
        .arg("--json")
        .arg(&out)
        .env("CHECKIN_CASE_TOKEN", EPI)
        .env_remove("CHECKIN_TOKEN")
        .env_remove("CHECKIN_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    eprintln!("{stdout}");
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("registered"), "{stdout}");
    assert!(stdout.contains("  register   p50"), "{stdout}");
    let json: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let cases = &json["cases"];
    let attempted = cases["attempted"].as_u64().unwrap();
    let registered = cases["registered"].as_u64().unwrap();
    assert!(attempted >= 1, "{json}");
    assert_eq!(cases["errors"], 0, "{json}");
    assert_eq!(
        registered + cases["active_conflicts"].as_u64().unwrap(),
        attempted,
        "{json}"
    );
    assert_eq!(cases["id_prefix"], "cli");
    assert_eq!(
        cases_with_prefix(&server, "cli").len() as u64,
        registered,
        "{json}"
    );
    for l in ["p50_ms", "p90_ms", "p99_ms", "max_ms"] {
        assert!(cases["latency"][l].as_f64().is_some(), "{json}");
    }
}
