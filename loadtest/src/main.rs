//! `checkin-loadtest`: the command line over the library. `generate` writes a seeded dataset,
//! `ingest` registers venues and drives `POST /v1/scans`, `trace` drives `POST /v1/trace`,
//! `vaccinations-import` bulk-imports dose records (`POST /v1/vaccinations`), `pass` and
//! `certificates` drive the health-record reads of contract section 12; each run prints a report
//! (and `--json FILE` writes it). Load only ever goes to loopback addresses.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use checkin_loadtest::cases::CaseOptions;
use checkin_loadtest::dataset::{self, Formats};
use checkin_loadtest::gen::{now_unix, Params};
use checkin_loadtest::load::{
    self, Common, DepthMode, IngestOptions, Persons, Source, TraceOptions,
};
use checkin_loadtest::net::Target;
use checkin_loadtest::records::{self, DoseFormat, ReadOptions, VaccinationOptions};
use checkin_loadtest::report::{fmt_count, fmt_rate, Report};

/// Dataset generator and load driver for checkin-server (the national QR check-in service).
///
/// Typical session:
///   checkin-loadtest generate --out data
///   checkin-loadtest ingest --input data/scans.ndjson --batch 1000 -c 4
///   checkin-loadtest trace --input data/scans.ndjson --duration 10s
///
/// Load is only ever sent to loopback addresses (127.0.0.0/8, ::1, localhost); any other host is
/// refused.
#[derive(Parser, Debug)]
#[command(name = "checkin-loadtest", version, verbatim_doc_comment)]
struct Cli {
    /// Hide the progress bar (it is hidden anyway when stdout is not a terminal).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a seeded, realistic dataset: scans.ndjson (for our server), scans.csv (for peer
    /// systems) and venues.json (the POST /v1/venues array). Streams to disk: memory stays flat
    /// up to 100 million scans and beyond.
    Generate(GenerateArgs),
    /// Register the venues, then drive POST /v1/scans (closed loop over --connections, or open
    /// loop at --rate) with scans from --input or generated on the fly; with --cases-per-min,
    /// register cases (POST /v1/cases) along the way.
    Ingest(IngestArgs),
    /// Drive POST /v1/trace for random persons of the dataset.
    Trace(TraceArgs),
    /// Bulk-import the dose records of a CSV file (POST /v1/vaccinations) in requests of
    /// --batch records, as CSV or NDJSON bodies built before the clock starts, over
    /// --connections; optionally register the area tree first (--areas).
    VaccinationsImport(VaccinationsArgs),
    /// Drive GET /v1/persons/{id}/pass (audited) for random persons; the report counts the
    /// answers by colour and basis.
    Pass(ReadArgs),
    /// Drive certificate issue (GET /v1/persons/{id}/certificate, audited) or verification
    /// (POST /v1/verify of --pool certificates issued first) for random persons.
    Certificates(CertificateArgs),
    /// Fill a fresh server with a small realistic province (areas, venues, a week of scans,
    /// samples and results, doses, cases, notices) so that every web page shows something.
    Demo(DemoArgs),
}

/// `demo`: where the server is.
#[derive(Args, Debug)]
struct DemoArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin bearer token (omit for a server without a tokens file).
    #[arg(long, env = "CHECKIN_TOKEN")]
    token: Option<String>,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// The shape of the dataset (shared by generate, ingest's on-the-fly generator and trace).
#[derive(Args, Debug, Clone)]
struct DatasetArgs {
    /// Number of persons (ids p000000, p000001, ...).
    #[arg(long, default_value_t = 100_000)]
    persons: u32,
    /// Number of venues (ids V-00000, V-00001, ...).
    #[arg(long, default_value_t = 10_000)]
    venues: u32,
    /// Length of the time window in days, ending at --end-ts. Keep it under the server's
    /// retention (21 days by default) or old scans are rejected as too_old.
    #[arg(long, default_value_t = 14)]
    days: u32,
    /// End of the window, unix seconds (default: now).
    #[arg(long, allow_negative_numbers = true)]
    end_ts: Option<i64>,
    /// Seed: the same seed and flags give the same dataset, byte for byte.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Zipf exponent of venue popularity for errands (shops, markets, restaurants, ...;
    /// 0 = all venues equally popular, 1 = classic Zipf).
    #[arg(long, default_value_t = 0.8)]
    zipf: f64,
    /// Zipf exponent of workplace size (offices, factories, schools). At 0.5 the largest
    /// employer has about 1% of the workforce; raise it for mega-factories.
    #[arg(long, default_value_t = 0.5)]
    work_zipf: f64,
    /// Share of visits whose check-out is forgotten (no "out" scan; the server auto-checks-out
    /// after the venue's default stay).
    #[arg(long, default_value_t = 0.25)]
    forget_out: f64,
    /// Share of visits with a second "in" scan at the same venue during the stay.
    #[arg(long, default_value_t = 0.05)]
    rescan: f64,
    /// Share of scans sent twice (exact duplicates, as client retries make).
    #[arg(long, default_value_t = 0.02)]
    duplicates: f64,
    /// Share of scans uploaded late (phone offline), i.e. emitted after later scans.
    #[arg(long, default_value_t = 0.05)]
    late: f64,
    /// Longest upload delay of a late scan, in seconds (delays are log-uniform from 60 s).
    #[arg(long, default_value_t = 43_200)]
    late_max: i64,
    /// Share of persons with a workplace (office, factory, school).
    #[arg(long, default_value_t = 0.6)]
    employed: f64,
    /// Local time offset from UTC in hours (shapes the daily rhythm; Vietnam is +7).
    #[arg(long, default_value_t = 7.0, allow_negative_numbers = true)]
    utc_offset_h: f64,
}

impl DatasetArgs {
    fn params(&self, scans: u64) -> Params {
        Params {
            persons: self.persons,
            venues: self.venues,
            scans,
            days: self.days,
            end_ts: self.end_ts.unwrap_or_else(now_unix),
            seed: self.seed,
            zipf: self.zipf,
            work_zipf: self.work_zipf,
            forget_out: self.forget_out,
            rescan: self.rescan,
            duplicates: self.duplicates,
            late: self.late,
            late_max_s: self.late_max,
            employed: self.employed,
            utc_offset_s: (self.utc_offset_h * 3600.0).round() as i64,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Output directory (created if missing).
    #[arg(long, short, default_value = "dataset")]
    out: PathBuf,
    /// Exact number of scans to write.
    #[arg(long, default_value_t = 1_000_000)]
    scans: u64,
    /// Scan file formats to write, comma-separated (venues.json is always written).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Format::Ndjson, Format::Csv])]
    format: Vec<Format>,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    dataset: DatasetArgs,
}

/// Where to send load and how hard.
#[derive(Args, Debug)]
struct LoadArgs {
    /// Base URL of checkin-server. Loopback only: 127.0.0.0/8, [::1] or localhost.
    #[arg(long, env = "CHECKIN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token sent as "Authorization: Bearer <token>" (needed when the server runs
    /// with --tokens: scanner or admin for ingest plus admin for venues, epidemiologist for
    /// trace).
    #[arg(long, env = "CHECKIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Keep-alive HTTP/1.1 connections. Closed loop: this many requests in flight; open loop:
    /// the pool that serves the schedule.
    #[arg(long, short = 'c', default_value_t = 4)]
    connections: usize,
    /// Send every request over ONE cleartext HTTP/2 connection (prior knowledge); --connections
    /// is then the number of requests in flight on it (HTTP/2 streams, at most 100), not of
    /// sockets.
    #[arg(long)]
    http2: bool,
    /// Open loop: start this many requests per second whatever the server's speed (latency is
    /// measured from each request's scheduled start). Default: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this long (e.g. 30s, 2m, 500ms; a bare number is seconds).
    #[arg(long, short, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Per-request timeout (connect, send and the whole answer).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Requests still in flight when --duration ends get this long to finish; then they are
    /// abandoned and reported as "cut off at end of run".
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    grace: Duration,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct IngestArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Scans per request: 1 sends one JSON object per request; more sends an NDJSON body
    /// (Content-Type: application/x-ndjson). At most 100000.
    #[arg(long, short, default_value_t = 100)]
    batch: usize,
    /// Stop after sending this many scans.
    #[arg(long)]
    scans: Option<u64>,
    /// NDJSON scans file to send (lines sent verbatim, in file order). Without it scans are
    /// generated on the fly, with the window ending now so the server accepts them.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Venues JSON array to register first (default: venues.json next to --input; the
    /// generator's venues when generating on the fly).
    #[arg(long)]
    venues_file: Option<PathBuf>,
    /// Do not register venues (the server already knows them).
    #[arg(long)]
    no_register: bool,
    /// Venues per POST /v1/venues request.
    #[arg(long, default_value_t = 1000)]
    venue_chunk: usize,
    /// On-the-fly generation only: scans the generator plans over the window (default:
    /// --scans, else 10,000,000). Only what is sent is ever generated.
    #[arg(long)]
    dataset_scans: Option<u64>,
    #[command(flatten)]
    cases: CaseArgs,
    #[command(flatten)]
    dataset: DatasetArgs,
}

/// Case registration while ingesting (contract section 10).
#[derive(Args, Debug)]
struct CaseArgs {
    /// While ingesting, register this many cases per minute (POST /v1/cases, evenly spaced,
    /// one at a time on a connection of their own, or a stream of the one with --http2), each
    /// for a person (drawn with --seed) the run has already sent scans for, sampled at that
    /// person's latest sent scan. Every case starts a standing trace on the server, so the
    /// report shows ingestion with N of them. 0 = none.
    #[arg(long, default_value_t = 0.0, value_name = "N")]
    cases_per_min: f64,
    /// Bearer token for POST /v1/cases (epidemiologist or admin; default: --token).
    #[arg(long, env = "CHECKIN_CASE_TOKEN", hide_env_values = true)]
    case_token: Option<String>,
    /// Case ids are PREFIX-1, PREFIX-2, ... (default lt-<seed>-<unix start time>, unique per
    /// run; retries reuse the id, so they are idempotent).
    #[arg(long, value_name = "PREFIX")]
    case_ids: Option<String>,
    /// The server's --retention-days: case sampled_at times are clamped to within it.
    #[arg(long, default_value_t = 21)]
    server_retention_days: u32,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    #[value(name = "1")]
    One,
    #[value(name = "2")]
    Two,
    /// Half depth 1, half depth 2, at random.
    Mixed,
}

#[derive(Args, Debug)]
struct TraceArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Trace depth: 1 (close contacts), 2 (their contacts too) or mixed.
    #[arg(long, value_enum, default_value_t = Depth::Mixed)]
    depth: Depth,
    /// Stop after this many traces.
    #[arg(long)]
    requests: Option<u64>,
    /// Pick persons from this NDJSON or CSV scans file (ids seen in its first
    /// --sample-lines lines). Default: the generator's ids p000000..p{persons-1}.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Lines of --input scanned for person ids.
    #[arg(long, default_value_t = 1_000_000)]
    sample_lines: u64,
    /// Persons of the generated dataset (when no --input).
    #[arg(long, default_value_t = 100_000)]
    persons: u32,
    /// Venues of the generated dataset (only sets the id width; when no --input).
    #[arg(long, default_value_t = 10_000)]
    venues: u32,
    /// Seed of the person and depth choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Trace window start, unix seconds (server default: to - 14 days).
    #[arg(long, allow_negative_numbers = true)]
    from: Option<i64>,
    /// Trace window end, unix seconds (server default: now).
    #[arg(long, allow_negative_numbers = true)]
    to: Option<i64>,
    /// Minimum overlap in seconds (server default: 900).
    #[arg(long)]
    min_overlap: Option<i64>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum DoseFormatArg {
    /// text/csv: the file's header row, then its rows' bytes unchanged.
    Csv,
    /// application/x-ndjson: one JSON object per row.
    Ndjson,
}

#[derive(Args, Debug)]
struct VaccinationsArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// The dose-record CSV file (header: person, dose, vaccine, administered_at, and optionally
    /// lot, site, area; e.g. from `checkin-import generate`).
    #[arg(long, short)]
    input: PathBuf,
    /// How the records are sent.
    #[arg(long, value_enum, default_value_t = DoseFormatArg::Csv)]
    format: DoseFormatArg,
    /// Records per request, at most 100000 (a body is also cut before it passes 15 MiB, under
    /// the server's 16 MiB limit).
    #[arg(long, short, default_value_t = 100_000)]
    batch: usize,
    /// Send only the first N records of the file.
    #[arg(long)]
    rows: Option<u64>,
    /// A JSON array of areas to register first with POST /v1/areas (e.g. `checkin-import
    /// generate --areas-out`; needs an admin token). Rows naming unregistered areas are
    /// rejected as unknown_area.
    #[arg(long)]
    areas: Option<PathBuf>,
}

/// Who a person read asks about, and how long to go on.
#[derive(Args, Debug)]
struct ReadArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Stop after this many requests.
    #[arg(long)]
    requests: Option<u64>,
    /// Pick persons from this NDJSON or CSV file (ids seen in its first --sample-lines lines).
    /// Default: the generator's ids p000000..p{persons-1}.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Lines of --input scanned for person ids.
    #[arg(long, default_value_t = 1_000_000)]
    sample_lines: u64,
    /// Persons of the generated dataset (when no --input).
    #[arg(long, default_value_t = 100_000)]
    persons: u32,
    /// Venues of the generated dataset (only sets the id width; when no --input).
    #[arg(long, default_value_t = 10_000)]
    venues: u32,
    /// Seed of the person choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum CertMode {
    /// GET /v1/persons/{id}/certificate: every answer is signed for its request.
    Issue,
    /// POST /v1/verify of certificates issued before the timed run.
    Verify,
}

#[derive(Args, Debug)]
struct CertificateArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// Issue or verify.
    #[arg(long, value_enum, default_value_t = CertMode::Issue)]
    mode: CertMode,
    /// Issue: ask for the QR code (?format=svg) instead of the JSON answer.
    #[arg(long)]
    svg: bool,
    /// Verify: certificates of random persons to issue first (untimed); each verification
    /// picks one of them at random.
    #[arg(long, default_value_t = 2_000)]
    pool: usize,
}

/// Parses `30`, `30s`, `500ms`, `2m`, `1h` (a bare number is seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 30s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 30.0 * 86_400.0 {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn show_progress(quiet: bool) -> bool {
    !quiet && std::io::stdout().is_terminal()
}

/// Streams one HTTP/2 connection to checkin-server may carry at once (its SETTINGS).
const SERVER_H2_STREAMS: usize = 100;

fn common(load: &LoadArgs, quiet: bool, default_duration: Option<Duration>) -> Result<Common> {
    if load.http2 && load.connections > SERVER_H2_STREAMS {
        bail!(
            "--http2 sends all requests on one connection, and checkin-server takes at most \
             {SERVER_H2_STREAMS} at once on it: use --connections {SERVER_H2_STREAMS} or fewer"
        );
    }
    let target = Target::parse(&load.url)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: finishing in-flight requests, then reporting");
            flag.store(true, Ordering::Relaxed);
        }
    });
    Ok(Common {
        target,
        token: load.token.clone(),
        connections: load.connections,
        http2: load.http2,
        rate: load.rate,
        duration: load.duration.or(default_duration),
        timeout: load.timeout,
        progress: show_progress(quiet),
        stop,
        grace: load.grace,
    })
}

fn finish(report: &Report, json: Option<&PathBuf>) -> Result<()> {
    print!("{report}");
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn generate(args: GenerateArgs, quiet: bool) -> Result<()> {
    let params = args.dataset.params(args.scans);
    params.validate()?;
    let formats = Formats {
        ndjson: args.format.contains(&Format::Ndjson),
        csv: args.format.contains(&Format::Csv),
    };
    let pb = ProgressBar::with_draw_target(
        Some(args.scans),
        if show_progress(quiet) {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner:.green} {elapsed_precise} [{bar:30.cyan/blue}] {human_pos}/{human_len} scans  {per_sec}  eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    let t0 = Instant::now();
    let summary = dataset::write_dataset(&params, &args.out, formats, |n| pb.set_position(n))?;
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "wrote {} scans of {} persons at {} venues, {} .. {} (seed {}) in {:.2} s ({} scans/s)",
        fmt_count(summary.scans),
        fmt_count(u64::from(summary.persons)),
        fmt_count(summary.venues),
        summary.start_ts,
        summary.end_ts,
        summary.seed,
        secs,
        fmt_rate(summary.scans as f64 / secs.max(1e-9))
    );
    let st = &summary.stats;
    println!(
        "  visits {} ({} to work), forgotten check-outs {}, re-scans {}, duplicates {}, late \
         uploads {}, still inside at the end {}",
        fmt_count(st.outings),
        fmt_count(st.work_outings),
        fmt_count(st.forgotten_out),
        fmt_count(st.rescans),
        fmt_count(st.duplicates),
        fmt_count(st.late),
        fmt_count(st.after_end)
    );
    for f in &summary.files {
        println!("  {}", f.display());
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn ingest(args: IngestArgs, quiet: bool) -> Result<()> {
    let on_the_fly = args.input.is_none();
    if args.venues_file.is_some() && on_the_fly {
        bail!("--venues-file goes with --input; on the fly the generator's venues are used");
    }
    // Always bounded: an on-the-fly run without --scans or --duration lasts 10 s.
    let default_duration = (on_the_fly && args.scans.is_none() && args.load.duration.is_none())
        .then_some(Duration::from_secs(10));
    let common = common(&args.load, quiet, default_duration)?;
    let source = match &args.input {
        Some(path) => Source::File {
            scans: path.clone(),
            venues: args.venues_file.clone(),
        },
        None => {
            let planned = args.dataset_scans.or(args.scans).unwrap_or(10_000_000);
            // The window ends now (unless --end-ts) so the server accepts the scans.
            let params = args.dataset.params(planned);
            params.validate()?;
            Source::Generate(params)
        }
    };
    let cases = CaseOptions {
        per_min: args.cases.cases_per_min,
        seed: args.dataset.seed,
        retention_days: args.cases.server_retention_days,
        token: args.cases.case_token.clone(),
        id_prefix: args.cases.case_ids.clone(),
    };
    let report = load::run_ingest_with_cases(
        IngestOptions {
            common,
            source,
            batch: args.batch,
            scans: args.scans,
            register_venues: !args.no_register,
            venue_chunk: args.venue_chunk,
        },
        cases,
    )
    .await?;
    finish(&report, args.load.json.as_ref())
}

async fn trace(args: TraceArgs, quiet: bool) -> Result<()> {
    let default_duration = (args.requests.is_none() && args.load.duration.is_none())
        .then_some(Duration::from_secs(10));
    let common = common(&args.load, quiet, default_duration)?;
    let persons = match &args.input {
        Some(path) => Persons::File {
            path: path.clone(),
            max_lines: args.sample_lines,
        },
        None => Persons::Generated {
            persons: args.persons,
            venues: args.venues,
        },
    };
    let depth = match args.depth {
        Depth::One => DepthMode::One,
        Depth::Two => DepthMode::Two,
        Depth::Mixed => DepthMode::Mixed,
    };
    let report = load::run_trace(TraceOptions {
        common,
        persons,
        depth,
        requests: args.requests,
        seed: args.seed,
        from: args.from,
        to: args.to,
        min_overlap_s: args.min_overlap,
    })
    .await?;
    finish(&report, args.load.json.as_ref())
}

async fn vaccinations_import(args: VaccinationsArgs, quiet: bool) -> Result<()> {
    let common = common(&args.load, quiet, None)?;
    let format = match args.format {
        DoseFormatArg::Csv => DoseFormat::Csv,
        DoseFormatArg::Ndjson => DoseFormat::Ndjson,
    };
    let t0 = Instant::now();
    let data = records::read_dose_file(&args.input)?;
    let bodies = records::dose_bodies(&data, format, args.batch, args.rows)?;
    drop(data);
    let rows: u64 = bodies.iter().map(|b| b.rows).sum();
    let bytes: usize = bodies.iter().map(|b| b.body.len()).sum();
    println!(
        "prepared {} records of {} in {} {} bodies ({:.1} MiB, at most {} records each) in {:.2} s (not timed)",
        fmt_count(rows),
        args.input.display(),
        fmt_count(bodies.len() as u64),
        format.as_str(),
        bytes as f64 / f64::from(1u32 << 20),
        fmt_count(args.batch as u64),
        t0.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.areas {
        let n = records::register_areas(&common, path).await?;
        println!("areas registered: {} from {}", fmt_count(n), path.display());
    }
    let report = records::run_vaccinations(
        VaccinationOptions {
            common,
            format,
            batch: args.batch,
        },
        bodies,
    )
    .await?;
    finish(&report, args.load.json.as_ref())
}

fn read_options(args: &ReadArgs, quiet: bool) -> Result<ReadOptions> {
    let default_duration = (args.requests.is_none() && args.load.duration.is_none())
        .then_some(Duration::from_secs(10));
    let persons = match &args.input {
        Some(path) => Persons::File {
            path: path.clone(),
            max_lines: args.sample_lines,
        },
        None => Persons::Generated {
            persons: args.persons,
            venues: args.venues,
        },
    };
    Ok(ReadOptions {
        common: common(&args.load, quiet, default_duration)?,
        persons,
        requests: args.requests,
        seed: args.seed,
    })
}

async fn pass(args: ReadArgs, quiet: bool) -> Result<()> {
    let report = records::run_pass(read_options(&args, quiet)?).await?;
    finish(&report, args.load.json.as_ref())
}

async fn certificates(args: CertificateArgs, quiet: bool) -> Result<()> {
    let opts = read_options(&args.read, quiet)?;
    let report = match args.mode {
        CertMode::Issue => records::run_certificates(opts, args.svg).await?,
        CertMode::Verify => {
            if args.svg {
                bail!("--svg goes with --mode issue");
            }
            let fetched = records::fetch_certificates(
                &opts.common,
                &opts.persons,
                args.pool,
                opts.seed,
                opts.common.connections,
            )
            .await?;
            let chars: usize = fetched.hc1.iter().map(String::len).sum();
            println!(
                "issued {} certificates to verify in {:.2} s (not timed), mean hc1 {:.0} characters",
                fmt_count(fetched.hc1.len() as u64),
                fetched.elapsed.as_secs_f64(),
                chars as f64 / fetched.hc1.len().max(1) as f64
            );
            records::run_verify(opts, &fetched.hc1).await?
        }
    };
    finish(&report, args.read.load.json.as_ref())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Generate(a) => generate(a, cli.quiet),
        Cmd::Ingest(a) => runtime().and_then(|rt| rt.block_on(ingest(a, cli.quiet))),
        Cmd::Trace(a) => runtime().and_then(|rt| rt.block_on(trace(a, cli.quiet))),
        Cmd::VaccinationsImport(a) => {
            runtime().and_then(|rt| rt.block_on(vaccinations_import(a, cli.quiet)))
        }
        Cmd::Pass(a) => runtime().and_then(|rt| rt.block_on(pass(a, cli.quiet))),
        Cmd::Certificates(a) => runtime().and_then(|rt| rt.block_on(certificates(a, cli.quiet))),
        Cmd::Demo(a) => checkin_loadtest::demo::run(&a.url, a.token, a.seed, now_unix()).map(|r| {
            println!(
                "demo data sent to {}: {} areas, {} venues, {} scans, {} samples, {} doses, {} cases, {} notices; open {}/",
                a.url, r.areas, r.venues, r.scans, r.samples, r.doses, r.cases, r.notices, a.url
            )
        }),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in ["", "x", "10 parsecs", "0", "-3", "1e9"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "checkin-loadtest",
            "ingest",
            "--batch",
            "1000",
            "-c",
            "8",
            "--duration",
            "5s",
            "--persons",
            "10",
        ])
        .expect("parses");
        match cli.cmd {
            Cmd::Ingest(a) => {
                assert_eq!(a.batch, 1000);
                assert_eq!(a.load.connections, 8);
                assert_eq!(a.load.duration, Some(Duration::from_secs(5)));
                assert_eq!(a.dataset.persons, 10);
                assert_eq!(a.cases.cases_per_min, 0.0, "no cases unless asked");
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "checkin-loadtest",
            "ingest",
            "--cases-per-min",
            "30",
            "--case-ids",
            "run7",
            "--server-retention-days",
            "14",
        ])
        .expect("parses");
        match cli.cmd {
            Cmd::Ingest(a) => {
                assert_eq!(a.cases.cases_per_min, 30.0);
                assert_eq!(a.cases.case_ids.as_deref(), Some("run7"));
                assert_eq!(a.cases.server_retention_days, 14);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["checkin-loadtest", "trace", "--depth", "1", "-q"])
            .expect("parses");
        assert!(cli.quiet);
        assert!(matches!(
            cli.cmd,
            Cmd::Trace(TraceArgs {
                depth: Depth::One,
                ..
            })
        ));
        let cli = Cli::try_parse_from([
            "checkin-loadtest",
            "vaccinations-import",
            "-i",
            "doses.csv",
            "--format",
            "ndjson",
            "-c",
            "2",
        ])
        .expect("parses");
        match cli.cmd {
            Cmd::VaccinationsImport(a) => {
                assert_eq!(a.format, DoseFormatArg::Ndjson);
                assert_eq!(a.batch, 100_000, "a national import's batch by default");
                assert_eq!(a.load.connections, 2);
                assert!(a.areas.is_none() && a.rows.is_none());
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["checkin-loadtest", "pass", "--persons", "1000000"])
            .expect("parses");
        assert!(matches!(
            cli.cmd,
            Cmd::Pass(ReadArgs {
                persons: 1_000_000,
                ..
            })
        ));
        let cli = Cli::try_parse_from([
            "checkin-loadtest",
            "certificates",
            "--mode",
            "verify",
            "--pool",
            "50",
            "-d",
            "3s",
        ])
        .expect("parses");
        match cli.cmd {
            Cmd::Certificates(a) => {
                assert_eq!(a.mode, CertMode::Verify);
                assert_eq!(a.pool, 50);
                assert_eq!(a.read.load.duration, Some(Duration::from_secs(3)));
                assert!(!a.svg);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["checkin-loadtest", "generate", "--format", "csv"])
            .expect("parses");
        assert!(
            matches!(cli.cmd, Cmd::Generate(GenerateArgs { ref format, .. }) if format == &[Format::Csv])
        );
    }
}
