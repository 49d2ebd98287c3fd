//! The `checkin-import` binary: flags, then [`checkin_import::import`] (or the generator), the
//! report, and the exit status (0 done, 1 failed, 2 done with rejected rows under
//! `--fail-on-reject`).

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use checkin_import::{gen, send, Options};
use clap::{Args, Parser, Subcommand};

/// Streams a CSV file of dose records to a checkin-server's POST /v1/vaccinations in chunks,
/// retrying 503s with backoff, and reports accepted and rejected rows by reason.
#[derive(Parser, Debug)]
#[command(
    name = "checkin-import",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(flatten)]
    import: ImportArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// The CSV file: a header row naming person, dose, vaccine, administered_at (and lot, site,
    /// area if present), in any order, then one dose a row (RFC 4180).
    #[arg(required = true)]
    file: Option<PathBuf>,
    /// The server.
    #[arg(long, env = "CHECKIN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token of a vaccinator or admin (not needed by a server without a tokens file).
    #[arg(long, env = "CHECKIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Rows per request (at most 100,000, the server's limit).
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    chunk: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    concurrency: u32,
    /// Attempts of one request (503, refused connection, timeout) before giving up.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    attempts: u32,
    /// Seconds to wait for one answer.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Rejected rows to list in the report (all are counted).
    #[arg(long, default_value_t = 20)]
    list: usize,
    /// Skip the first N data rows (to resume an import that stopped; retries of rows already
    /// stored are harmless anyway).
    #[arg(long, default_value_t = 0)]
    skip: u64,
    /// Register these areas first (a JSON array for POST /v1/areas; needs an admin token).
    #[arg(long)]
    areas: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Exit with status 2 if any row was rejected.
    #[arg(long)]
    fail_on_reject: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a realistic, seeded dose-record CSV (and its area tree) for testing.
    Generate(GenerateArgs),
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// The CSV file to write (`-`: stdout).
    #[arg(long, short)]
    out: PathBuf,
    /// Also write the area tree the rows name, as a JSON array for POST /v1/areas.
    #[arg(long)]
    areas_out: Option<PathBuf>,
    /// Data rows, exactly.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraction of rows that are bad (of every reason the server gives) or exact duplicates.
    #[arg(long, default_value_t = 0.01)]
    bad: f64,
    /// The import's clock (unix seconds; default now): `in_future` rows are dated after it.
    #[arg(long)]
    now: Option<i64>,
    /// Districts of the generated province.
    #[arg(long, default_value_t = 11, value_parser = clap::value_parser!(u32).range(1..=99))]
    districts: u32,
    /// Number of the first person id (`p` + at least 6 digits).
    #[arg(long, default_value_t = 0)]
    first_person: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Generate(args)) => generate(&args).map(|()| ExitCode::SUCCESS),
        None => run_import(&cli.import),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("checkin-import: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let Some(file) = &args.file else {
        anyhow::bail!("no file given");
    };
    let options = Options {
        url: args.url.clone(),
        token: args.token.clone(),
        chunk: args.chunk as usize,
        concurrency: args.concurrency as usize,
        attempts: args.attempts,
        timeout: Duration::from_secs(args.timeout.max(1)),
        list_rejected: args.list,
        skip: args.skip,
        progress: !args.quiet,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        if let Some(areas) = &args.areas {
            let json =
                std::fs::read(areas).with_context(|| format!("cannot read {}", areas.display()))?;
            let n = send::register_areas(&options, json.into()).await?;
            eprintln!(
                "checkin-import: {n} areas registered from {}",
                areas.display()
            );
        }
        match checkin_import::import(file, &options).await {
            Ok(report) => {
                print_report(&report, args.json);
                Ok(if args.fail_on_reject && report.rejected > 0 {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                })
            }
            Err(failed) => {
                if failed.report.rows > 0 {
                    eprintln!("checkin-import: stopped; what the server acknowledged before:");
                    print_report(&failed.report, args.json);
                }
                Err(anyhow::Error::new(failed.error))
            }
        }
    })
}

fn print_report(report: &checkin_import::Report, json: bool) {
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
}

fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let now = args.now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    let options = gen::Options {
        rows: args.rows,
        seed: args.seed,
        bad: args.bad.clamp(0.0, 1.0),
        now,
        districts: args.districts,
        first_person: args.first_person,
    };
    let expected = if args.out.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
        let e = gen::generate(&options, &mut out)?;
        out.flush()?;
        e
    } else {
        let file = std::fs::File::create(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let e = gen::generate(&options, &mut out)
            .with_context(|| format!("writing {}", args.out.display()))?;
        out.flush()?;
        e
    };
    if let Some(path) = &args.areas_out {
        let areas = gen::areas(args.seed, args.districts);
        std::fs::write(path, serde_json::to_vec_pretty(&areas)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // What the server must answer, for scripts and tests.
    eprintln!("{}", serde_json::to_string(&expected)?);
    Ok(())
}
