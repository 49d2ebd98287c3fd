//! `checkin-server`: parses flags, opens the store and serves until SIGTERM/SIGINT.
//! Everything else lives in the `api` library so tests can run the same server in-process.

use anyhow::Context;
use api::cli::{resolve_listen, Cli};
use api::{Access, App, KeySource, TokenSet};
use clap::Parser;
use engine::Engine;
use health::Health;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: log files and journald get plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let access = match &cli.tokens {
        Some(path) => {
            let tokens = TokenSet::load(path)?;
            tracing::info!(path = %path.display(), tokens = tokens.len(), "tokens file loaded");
            Access::Tokens(tokens)
        }
        None => Access::Open,
    };
    let addrs = resolve_listen(&cli.listen, access.is_open())?;
    if access.is_open() {
        tracing::warn!(
            "OPEN MODE: no --tokens file, so every request is allowed without authentication \
             (audit name 'open'); listening on loopback only. Pass --tokens FILE in production."
        );
    }

    let cluster_node = match &cli.cluster {
        Some(urls) => {
            let layout = cluster::Layout {
                shards: cli.cluster_shards,
                default_stay_s: cli.default_stay,
                retention_days: cli.retention_days,
            };
            let node = api::cluster_mode::connect(urls, layout)
                .await
                .context("cannot join the cluster")?;
            if cli.cluster_message_bytes > 0 {
                node.limit_message_bytes(cli.cluster_message_bytes);
            }
            tracing::info!(
                shards = cli.cluster_shards,
                "cluster mode: connected to NATS JetStream"
            );
            Some(node)
        }
        None => None,
    };
    let mut config = cli.engine_config();
    let mut health_config = cli.health_config();
    let command_clock = cluster_node
        .as_ref()
        .map(|_| std::sync::Arc::new(api::cluster_replica::CommandClock::new()));
    let mut resumed_at = 0;
    if let (Some(clock), Some(node)) = (&command_clock, &cluster_node) {
        // The node's store and health domain are a replica of the stream: cut back to its last
        // checkpoint, or emptied and rebuilt from the stream's first message (docs/cluster.md);
        // the signing key stays in the data directory.
        let cache = cli.data.join("cluster-cache");
        let resumed = {
            let (cache, created) = (cache.clone(), node.stream_created_ns());
            tokio::task::spawn_blocking(move || api::replica_checkpoint::resume(&cache, created))
                .await?
        };
        match &resumed {
            Some(cp) => {
                resumed_at = cp.applied;
                tracing::info!(
                    applied = cp.applied,
                    "cluster mode: the local store resumes from its checkpoint"
                );
            }
            None if cache.exists() => {
                std::fs::remove_dir_all(&cache).with_context(|| {
                    format!("cannot empty the stream cache {}", cache.display())
                })?;
            }
            None => {}
        }
        config.data_dir = cache.clone();
        config.durability = engine::Durability::Os;
        // Scans come from the stream, checked when they were accepted (as on the shards).
        config.times_checked_upstream = true;
        health_config.db_path = cache.join("health.redb");
        health_config.clock = Some(clock.clone());
        health_config.purge_at_open = false;
        health_config.reconcile_at_open = false;
        tracing::info!(
            cache = %cache.display(),
            "cluster mode: the local store is a cache of the stream"
        );
    }
    let data = config.data_dir.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(config))
        .await?
        .with_context(|| format!("cannot open the data directory {}", data.display()))?;
    let report = engine.recovery_report();
    tracing::info!(
        data = %data.display(),
        segments = report.segments,
        records = report.records,
        scans = report.scans,
        venues = report.venues,
        dropped_tails = report.dropped.len(),
        elapsed_ms = report.elapsed.as_millis() as u64,
        "recovered the store"
    );
    for tail in &report.dropped {
        tracing::warn!(
            path = %tail.path.display(),
            offset = tail.offset,
            bytes = tail.bytes,
            reason = %tail.reason,
            "dropped a damaged log tail: a torn write was never acknowledged; a corrupted record (damage on disk) loses the scans it held"
        );
    }

    let (signing_key, key_source) = api::load_signing_key(cli.signing_key.as_deref(), &cli.data)
        .context("cannot load the certificate signing key")?;
    tracing::info!(
        kid = signing_key.kid(),
        source = key_source.as_str(),
        path = %key_source.path().display(),
        "certificate signing key ready"
    );
    if let KeySource::Flag(path) = &key_source {
        use std::os::unix::fs::PermissionsExt as _;
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            tracing::warn!(
                path = %path.display(),
                "the signing key file is readable by other users; chmod 600 it"
            );
        }
    }

    let listener = tokio::net::TcpListener::bind(&addrs[..])
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let health = {
        let engine = engine.clone();
        let path = health_config.db_path.clone();
        tokio::task::spawn_blocking(move || Health::open(engine, health_config))
            .await?
            .with_context(|| format!("cannot open the health database {}", path.display()))?
    };
    let app = App::new(engine, health, access, cli.server_options())?.with_certificates(
        signing_key,
        cli.issuer.clone(),
        cli.certificate_days,
    )?;
    tracing::info!(
        listen = %listener.local_addr()?,
        durability = ?cli.durability,
        default_stay_s = cli.default_stay,
        retention_days = cli.retention_days,
        segment_bytes = cli.segment_bytes,
        open_mode = app.is_open(),
        "checkin-server started"
    );
    let app = app.with_cluster(cluster_node.zip(command_clock).map(|(node, clock)| {
        api::cluster_replica::ClusterSetup {
            node,
            clock,
            resumed_at,
            stall_exit: (cli.replica_stall_exit > 0)
                .then(|| std::time::Duration::from_secs(cli.replica_stall_exit)),
            snapshots: (cli.replica_snapshot_every > 0).then(|| {
                api::cluster_replica::SnapshotPolicy {
                    dir: cli.data.join(api::replica_snapshot::DIR),
                    every: std::time::Duration::from_secs(cli.replica_snapshot_every),
                }
            }),
        }
    }));
    let stop = {
        let app = app.clone();
        async move {
            tokio::select! {
                () = shutdown_signal() => {}
                why = app.stopped() => tracing::error!(%why, "stopping by itself"),
            }
        }
    };
    api::serve(listener, app.clone(), stop).await?;
    if let Some(why) = app.stop_reason() {
        anyhow::bail!("stopped by itself: {why}");
    }
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
