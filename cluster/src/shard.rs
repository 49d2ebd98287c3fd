//! A shard replica: consumes its subjects of the stream with a durable consumer into an engine
//! of its own, and answers the HTTP nodes' queries over NATS request/reply.
//!
//! The local store is a cache of the stream: at start the replica empties its data directory,
//! recreates its consumer from the stream's first message and replays (not yet: resuming from a
//! local checkpoint). It joins the shard's queue group only once it has applied everything that
//! was pending when it started, so a replica that is catching up never answers.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use std::sync::Mutex;

use crate::contacts::best_exposure;
use crate::error::{ClusterError, Result};
use crate::wire::{Exposure, Op, Query, Reply, WireScan, WireVenue, WireVisit};
use crate::{query_subject, scan_subject, VENUES_SUBJECT};

/// How a shard replica runs.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Comma-separated NATS URLs.
    pub cluster: String,
    pub shard: u32,
    pub shards: u32,
    pub replica: u32,
    pub data: PathBuf,
    /// Server default stay (must equal the HTTP nodes' `--default-stay`).
    pub default_stay_s: u32,
    pub retention_days: u32,
}

/// How long a query waits for the shard to reach the asking node's latest write.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

struct State {
    engine: engine::Engine,
    /// Stream sequence of the last message applied.
    applied: AtomicU64,
    /// Persons with any stored scan at each venue (the candidates of a trace's overlap round).
    at_venue: Mutex<HashMap<String, HashSet<String>>>,
}

/// Runs a replica until `shutdown` completes.
pub async fn run(
    config: ShardConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    if config.data.exists() {
        std::fs::remove_dir_all(&config.data)
            .map_err(|e| ClusterError::JetStream(format!("cannot empty the cache dir: {e}")))?;
    }
    let mut ec = engine::Config::new(&config.data);
    // The stream is the durable copy; the local store is a cache rebuilt from it.
    ec.durability = engine::Durability::Os;
    ec.default_stay_s = config.default_stay_s;
    ec.retention_days = config.retention_days;
    let engine = tokio::task::spawn_blocking(move || engine::Engine::open(ec))
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))??;
    let state = Arc::new(State {
        engine,
        applied: AtomicU64::new(0),
        at_venue: Mutex::new(HashMap::new()),
    });

    let name = format!("shard-{}-{}", config.shard, config.replica);
    let client = crate::node::connect(&config.cluster, &name).await?;
    let js = jetstream::new(client.clone());
    let stream = crate::node::ensure_stream(&js).await?;
    // Rebuilt from the stream: a fresh durable consumer from the first message.
    let _ = stream.delete_consumer(&name).await;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::All,
            filter_subjects: vec![scan_subject(config.shard), VENUES_SUBJECT.to_string()],
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    let mut consumer = consumer;
    let pending_at_start = consumer
        .info()
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?
        .num_pending;
    tracing::info!(%name, pending = pending_at_start, "replaying the shard's subjects");
    let started = Instant::now();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let mut ready_tx = Some(ready_tx);
    if pending_at_start == 0 {
        if let Some(tx) = ready_tx.take() {
            let _ = tx.send(());
        }
    }

    let apply = {
        let state = Arc::clone(&state);
        let name = name.clone();
        async move {
            let mut since_ack = 0u32;
            // The message stream survives reconnects; should it end or fail to start, start it
            // again (redelivered messages are exact duplicates, which the engine ignores).
            loop {
                let mut messages = match consumer.messages().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot pull from the consumer; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                while let Some(msg) = messages.next().await {
                    let msg = match msg {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "consumer error; continuing");
                            continue;
                        }
                    };
                    let (seq, pending) = match msg.info() {
                        Ok(i) => (i.stream_sequence, i.pending),
                        Err(e) => {
                            tracing::warn!(error = %e, "message without JetStream info; skipped");
                            continue;
                        }
                    };
                    apply_message(&state, msg.subject.as_str(), &msg.payload).await?;
                    state.applied.fetch_max(seq, Ordering::AcqRel);
                    since_ack += 1;
                    if pending == 0 || since_ack >= 256 {
                        since_ack = 0;
                        if let Err(e) = msg.ack().await {
                            tracing::warn!(error = %e, "ack failed (redelivery is harmless)");
                        }
                    }
                    if pending == 0 {
                        if let Some(tx) = ready_tx.take() {
                            tracing::info!(
                                %name,
                                seq,
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "caught up with the stream"
                            );
                            let _ = tx.send(());
                        }
                    }
                }
                tracing::warn!("the consumer's message stream ended; pulling again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            #[allow(unreachable_code)]
            Ok::<(), ClusterError>(())
        }
    };

    let serve = {
        let state = Arc::clone(&state);
        let client = client.clone();
        let subject = query_subject(config.shard);
        let group = format!("shard-{}", config.shard);
        async move {
            let _ = ready_rx.await;
            let mut sub = client
                .queue_subscribe(subject, group)
                .await
                .map_err(|e| ClusterError::Connect(e.to_string()))?;
            tracing::info!("serving queries");
            while let Some(msg) = sub.next().await {
                let Some(reply_to) = msg.reply.clone() else {
                    continue;
                };
                let state = Arc::clone(&state);
                let client = client.clone();
                tokio::spawn(async move {
                    let reply = match serde_json::from_slice::<Query>(&msg.payload) {
                        Ok(q) => answer(&state, q).await,
                        Err(e) => Reply::Error(format!("undecodable query: {e}")),
                    };
                    let body = serde_json::to_vec(&reply).unwrap_or_default();
                    if let Err(e) = client.publish(reply_to, body.into()).await {
                        tracing::warn!(error = %e, "cannot send a reply");
                    }
                });
            }
            Ok::<(), ClusterError>(())
        }
    };

    let result = tokio::select! {
        r = apply => r,
        r = serve => r,
        () = shutdown => Ok(()),
    };
    let engine = state.engine.clone();
    let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    result
}

async fn apply_message(state: &Arc<State>, subject: &str, payload: &[u8]) -> Result<()> {
    if subject == VENUES_SUBJECT {
        let venues: Vec<WireVenue> =
            postcard::from_bytes(payload).map_err(|e| ClusterError::Decode {
                what: "venue batch",
                reason: e.to_string(),
            })?;
        let specs: Vec<engine::VenueSpec> = venues.into_iter().map(Into::into).collect();
        let engine = state.engine.clone();
        let r = tokio::task::spawn_blocking(move || engine.register_venues(specs))
            .await
            .map_err(|e| ClusterError::JetStream(e.to_string()))?;
        if let Err(e) = r {
            // The HTTP node validated them; a refusal here is logged, not fatal.
            tracing::warn!(error = %e, "venue registration from the stream refused");
        }
        return Ok(());
    }
    let scans: Vec<WireScan> = match postcard::from_bytes(payload) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, subject, "undecodable scan batch in the stream; skipped");
            return Ok(());
        }
    };
    {
        let mut at = state.at_venue.lock().map_err(|_| poisoned())?;
        for s in &scans {
            at.entry(s.venue.clone())
                .or_default()
                .insert(s.person.clone());
        }
    }
    let items: Vec<engine::ScanItem> = scans
        .into_iter()
        .map(|s| {
            Ok(engine::ScanInput {
                person: s.person,
                venue: s.venue,
                ts: Some(s.ts),
                action: if s.out {
                    engine::Action::Out
                } else {
                    engine::Action::In
                },
            })
        })
        .collect();
    let (tx, rx) = tokio::sync::oneshot::channel();
    state.engine.submit(
        items,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    let outcome = rx
        .await
        .map_err(|_| ClusterError::JetStream("the engine stopped".into()))??;
    if !outcome.rejected.is_empty() {
        // Scans past retention by now, for example; they would have been purged anyway.
        tracing::debug!(rejected = outcome.rejected.len(), "scans refused on replay");
    }
    Ok(())
}

fn poisoned() -> ClusterError {
    ClusterError::JetStream("a shard lock was poisoned".into())
}

async fn answer(state: &Arc<State>, q: Query) -> Reply {
    let deadline = Instant::now() + CATCH_UP_WAIT;
    while state.applied.load(Ordering::Acquire) < q.min_seq {
        if Instant::now() >= deadline {
            return Reply::Error(format!(
                "not caught up to sequence {} within {CATCH_UP_WAIT:?}",
                q.min_seq
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || answer_now(&state, q.op))
        .await
        .unwrap_or_else(|e| Reply::Error(e.to_string()))
}

fn wire_visits(v: Vec<engine::Visit>) -> Vec<WireVisit> {
    v.into_iter()
        .map(|v| WireVisit {
            venue: v.venue.to_string(),
            start: v.start,
            end: v.end,
        })
        .collect()
}

fn answer_now(state: &State, op: Op) -> Reply {
    let engine = &state.engine;
    match op {
        Op::Visits { persons, from, to } => Reply::Visits(
            persons
                .iter()
                .map(|p| engine.visits(p, from, to).map(wire_visits))
                .collect(),
        ),
        Op::Occupancy { venue } => Reply::Occupancy(engine.occupancy(&venue)),
        Op::Top { n } => Reply::Top(
            engine
                .top_occupancy(n)
                .into_iter()
                .map(|(v, c)| (v.to_string(), c))
                .collect(),
        ),
        Op::Stats => {
            let s = engine.stats();
            Reply::Stats {
                scans: s.scans,
                persons: s.persons,
            }
        }
        Op::Exposures {
            sources,
            linger_s,
            threshold,
            exclude,
        } => {
            let exclude: HashSet<&str> = exclude.iter().map(String::as_str).collect();
            let mut venues: HashSet<&str> = HashSet::new();
            let mut lo = i64::MAX;
            let mut hi = i64::MIN;
            for s in &sources {
                for v in &s.visits {
                    venues.insert(&v.venue);
                    lo = lo.min(v.start);
                    hi = hi.max(v.end + linger_s);
                }
            }
            if venues.is_empty() {
                return Reply::Exposures(Vec::new());
            }
            let candidates: Vec<String> = {
                let Ok(at) = state.at_venue.lock() else {
                    return Reply::Error("a shard lock was poisoned".into());
                };
                let mut c: HashSet<&String> = HashSet::new();
                for v in &venues {
                    if let Some(ps) = at.get(*v) {
                        c.extend(ps.iter().filter(|p| !exclude.contains(p.as_str())));
                    }
                }
                c.into_iter().cloned().collect()
            };
            let mut out: Vec<Exposure> = Vec::new();
            for p in candidates {
                let Some(theirs) = engine.visits(&p, lo, hi) else {
                    continue;
                };
                let theirs = wire_visits(theirs);
                if let Some(e) = best_exposure(&p, &theirs, &sources, linger_s, threshold) {
                    out.push(e);
                }
            }
            Reply::Exposures(out)
        }
    }
}
