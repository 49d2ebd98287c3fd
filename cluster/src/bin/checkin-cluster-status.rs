//! `checkin-cluster-status`: where every shard replica of a cluster stands against the stream
//! (docs/cluster.md), and optionally waits until they have all caught up.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

/// Prints one line per shard replica: serving or not, the stream sequence it has applied and
/// the one it must reach. With --wait, waits until every listed replica serves and has caught
/// up (exit status 1 if not within that time) and prints how long that took.
#[derive(Debug, Parser)]
#[command(name = "checkin-cluster-status", version)]
struct Cli {
    /// NATS URLs, comma-separated.
    #[arg(long, env = "CHECKIN_CLUSTER")]
    cluster: String,
    /// Number of shards.
    #[arg(long, env = "CHECKIN_SHARDS", default_value_t = 2)]
    shards: u32,
    /// Replicas per shard (numbered from 1).
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    /// Only these replicas (`K-R`, comma-separated), e.g. `0-1`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Wait up to this many seconds until every listed replica has caught up.
    #[arg(long)]
    wait: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut replicas = Vec::new();
    for k in 0..cli.shards {
        for r in 1..=cli.replicas {
            let name = format!("{k}-{r}");
            if cli.only.is_empty() || cli.only.contains(&name) {
                replicas.push((k, r));
            }
        }
    }
    anyhow::ensure!(
        !replicas.is_empty(),
        "--only names no replica of this cluster"
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let client = cluster::node::connect(&cli.cluster, "checkin-cluster-status")
                .await
                .context("connecting to NATS")?;
            let js = async_nats::jetstream::new(client.clone());
            let started = Instant::now();
            loop {
                let mut all = true;
                let mut lines = Vec::new();
                for &(k, r) in &replicas {
                    let s = cluster::status::standing(&client, &js, k, r).await?;
                    all &= s.caught_up();
                    lines.push(match &s.status {
                        Some(st) => format!(
                            "shard-{k}-{r} {} applied={} target={} behind={}",
                            if st.serving { "serving" } else { "catching-up" },
                            st.applied,
                            s.target,
                            s.target.saturating_sub(st.applied)
                        ),
                        None => format!("shard-{k}-{r} no-answer target={}", s.target),
                    });
                }
                match cli.wait {
                    None => {
                        lines.iter().for_each(|l| println!("{l}"));
                        return Ok(());
                    }
                    Some(_) if all => {
                        lines.iter().for_each(|l| println!("{l}"));
                        println!("caught up after {:.3} s", started.elapsed().as_secs_f64());
                        return Ok(());
                    }
                    Some(secs) if started.elapsed() > Duration::from_secs(secs) => {
                        lines.iter().for_each(|l| eprintln!("{l}"));
                        anyhow::bail!("not caught up within {secs} s");
                    }
                    Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
}
