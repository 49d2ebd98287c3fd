//! `checkin-shard`: one replica of one shard in cluster mode (docs/cluster.md).

use clap::Parser;

/// One replica of one shard: consumes the shard's subjects of the JetStream stream into a local
/// engine and answers the HTTP nodes' queries.
#[derive(Debug, Parser)]
#[command(name = "checkin-shard", version)]
struct Cli {
    /// NATS URLs, comma-separated.
    #[arg(long, env = "CHECKIN_CLUSTER")]
    cluster: String,
    /// This shard's number, `0..shards`.
    #[arg(long, env = "CHECKIN_SHARD")]
    shard: u32,
    /// Number of shards (the same on every process of the cluster).
    #[arg(long, env = "CHECKIN_SHARDS")]
    shards: u32,
    /// Replica number (names its consumer and its status subject `ck.status.K.R`).
    #[arg(long, env = "CHECKIN_REPLICA", default_value_t = 1)]
    replica: u32,
    /// Local cache directory: reopened at start from its checkpoint, or emptied and rebuilt
    /// from the stream when the checkpoint is not this shard's or this stream's.
    #[arg(long, env = "CHECKIN_DATA")]
    data: std::path::PathBuf,
    /// Default stay in seconds (must equal the HTTP nodes' `--default-stay`).
    #[arg(long, env = "CHECKIN_DEFAULT_STAY", default_value_t = 7200)]
    default_stay: u32,
    /// Retention in days (must equal the HTTP nodes').
    #[arg(long, env = "CHECKIN_RETENTION_DAYS", default_value_t = 21)]
    retention_days: u32,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if cli.shard >= cli.shards {
        anyhow::bail!("--shard must be below --shards");
    }
    let config = cluster::shard::ShardConfig {
        cluster: cli.cluster,
        shard: cli.shard,
        shards: cli.shards,
        replica: cli.replica,
        data: cli.data,
        default_stay_s: cli.default_stay,
        retention_days: cli.retention_days,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async move {
            let shutdown = async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
            };
            cluster::shard::run(config, shutdown).await
        })?;
    Ok(())
}
