//! A shard replica: consumes its subjects of the stream into an engine of its own, and answers
//! the HTTP nodes' queries over NATS request/reply.
//!
//! The local store is a cache of the stream: at start the replica empties its data directory
//! and replays from the stream's first message (not yet: resuming from a local checkpoint). The
//! replica itself keeps the stream sequence it has applied and pulls through an ephemeral
//! consumer of its own that it checks ([`consume`]: delivery gaps, servers that stop answering);
//! at any doubt it creates a new consumer from the applied sequence, so a message lost while a
//! NATS server dies is delivered again rather than skipped, and a consumer on a dead server is
//! replaced rather than waited for. The replica joins the shard's queue group only once it
//! has applied everything that was pending when it started, so a replica that is catching up
//! never answers. It answers [`crate::status_subject`] at once, with its applied sequence.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde::Serialize;

use crate::error::{ClusterError, Result};
use crate::wire::{
    Exposure, Op, Query, ReplicaStatus, Reply, ShardTotals, Source, WireScan, WireVenue, WireVisit,
};
use crate::{query_subject, scan_subject, status_subject, VENUES_SUBJECT};

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
    /// Whether the replica is in the shard's queue group.
    serving: AtomicBool,
}

/// Runs a replica until `shutdown` completes.
pub async fn run(
    config: ShardConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let name = format!("shard-{}-{}", config.shard, config.replica);
    let client = crate::node::connect(&config.cluster, &name).await?;
    let js = jetstream::new(client.clone());
    let layout = crate::Layout {
        shards: config.shards,
        default_stay_s: config.default_stay_s,
        retention_days: config.retention_days,
    };
    let stream = crate::node::ensure_stream(&js, &layout).await?;
    let stream_created_ns = stream.cached_info().created.unix_timestamp_nanos();

    // Resume from the checkpoint when it is this shard's, of this stream; else start empty.
    let resume = crate::checkpoint::load(&config.data).filter(|cp| {
        cp.shard == config.shard
            && cp.shards == config.shards
            && cp.stream_created_ns == stream_created_ns
    });
    if resume.is_none() && config.data.exists() {
        std::fs::remove_dir_all(&config.data)
            .map_err(|e| ClusterError::JetStream(format!("cannot empty the cache dir: {e}")))?;
    }
    let mut ec = engine::Config::new(&config.data);
    // The stream is the durable copy; the local store is a cache of it, flushed before each
    // checkpoint.
    ec.durability = engine::Durability::Os;
    ec.default_stay_s = config.default_stay_s;
    ec.retention_days = config.retention_days;
    // The HTTP node that published a scan checked its time with its own clock; applied later or
    // on a host whose clock differs, the same check here would drop an acknowledged scan.
    ec.times_checked_upstream = true;
    let engine = tokio::task::spawn_blocking(move || engine::Engine::open(ec))
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))??;
    let applied = resume.as_ref().map_or(0, |cp| cp.applied);
    tracing::info!(
        %name,
        applied,
        scans = engine.stats().scans,
        "{}",
        if resume.is_some() { "resuming from the checkpoint" } else { "starting from the first message" }
    );
    let state = Arc::new(State {
        engine,
        applied: AtomicU64::new(applied),
        serving: AtomicBool::new(false),
    });

    let subjects = vec![scan_subject(config.shard), VENUES_SUBJECT.to_string()];
    // Both replicas of the shard purge its expired scans from the stream (the second finds
    // nothing left to delete).
    let retention = crate::retention::run(
        stream.clone(),
        scan_subject(config.shard),
        config.retention_days,
    );
    let started = Instant::now();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let apply = {
        let state = Arc::clone(&state);
        let name = name.clone();
        async move {
            let mut ready_tx = Some(ready_tx);
            let mut ready = |seq: u64| {
                if let Some(tx) = ready_tx.take() {
                    tracing::info!(
                        %name,
                        seq,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "caught up with the stream"
                    );
                    let _ = tx.send(());
                }
            };
            loop {
                let from = state.applied.load(Ordering::Acquire);
                match consume(&state, &stream, &name, &subjects, &mut ready).await {
                    Ok(why) => tracing::warn!(
                        %name,
                        from,
                        applied = state.applied.load(Ordering::Acquire),
                        why,
                        "consumer left; recreating it from the applied sequence"
                    ),
                    Err(e @ (ClusterError::Engine(_) | ClusterError::Decode { .. })) => {
                        return Err(e)
                    }
                    Err(e) => tracing::warn!(%name, error = %e, "consumer failed; recreating it"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
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
            // A replica rebuilt from the stream (which keeps a day past retention) holds scans
            // the running replicas have purged: purge once before answering, not at the
            // engine's first minute tick.
            let engine = state.engine.clone();
            match tokio::task::spawn_blocking(move || engine.purge_expired()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "purge before serving failed"),
                Err(e) => tracing::warn!(error = %e, "purge before serving failed"),
            }
            let mut sub = client
                .queue_subscribe(subject, group)
                .await
                .map_err(|e| ClusterError::Connect(e.to_string()))?;
            state.serving.store(true, Ordering::Release);
            tracing::info!(
                applied = state.applied.load(Ordering::Acquire),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "serving queries"
            );
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
                    send_json(&client, reply_to, &reply).await;
                });
            }
            Ok::<(), ClusterError>(())
        }
    };

    let status = {
        let state = Arc::clone(&state);
        let client = client.clone();
        let subject = status_subject(config.shard, config.replica);
        let (shard, replica) = (config.shard, config.replica);
        async move {
            let mut sub = client
                .subscribe(subject)
                .await
                .map_err(|e| ClusterError::Connect(e.to_string()))?;
            while let Some(msg) = sub.next().await {
                let Some(reply_to) = msg.reply else {
                    continue;
                };
                let status = ReplicaStatus {
                    shard,
                    replica,
                    applied: state.applied.load(Ordering::Acquire),
                    serving: state.serving.load(Ordering::Acquire),
                };
                send_json(&client, reply_to, &status).await;
            }
            Ok::<(), ClusterError>(())
        }
    };

    let checkpoints = keep_checkpoints(
        Arc::clone(&state),
        crate::checkpoint::Checkpoint {
            shard: config.shard,
            shards: config.shards,
            stream_created_ns,
            applied,
        },
        config.data.clone(),
    );

    let result = tokio::select! {
        r = apply => r,
        r = serve => r,
        r = status => r,
        () = checkpoints => Ok(()),
        () = retention => Ok(()),
        () = shutdown => Ok(()),
    };
    let engine = state.engine.clone();
    let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    result
}

/// Answers a request with `value` as JSON (a reply that cannot be sent is logged: the asker
/// retries or times out).
async fn send_json(client: &async_nats::Client, to: async_nats::Subject, value: &impl Serialize) {
    let body = serde_json::to_vec(value).unwrap_or_default();
    if let Err(e) = client.publish(to, body.into()).await {
        tracing::warn!(error = %e, "cannot send a reply");
    }
}

/// Every [`crate::checkpoint::CHECKPOINT_EVERY`] while the replica has applied more: flushes the
/// engine, then records the sequence applied before the flush (`last` holds the shard, the
/// stream and the sequence of the previous checkpoint).
async fn keep_checkpoints(
    state: Arc<State>,
    mut last: crate::checkpoint::Checkpoint,
    dir: PathBuf,
) {
    loop {
        tokio::time::sleep(crate::checkpoint::CHECKPOINT_EVERY).await;
        let seq = state.applied.load(Ordering::Acquire);
        if seq == last.applied {
            continue;
        }
        let next = crate::checkpoint::Checkpoint {
            applied: seq,
            ..last.clone()
        };
        let (state, dir, cp) = (Arc::clone(&state), dir.clone(), next.clone());
        let stored = tokio::task::spawn_blocking(move || {
            state.engine.sync_to_disk()?;
            crate::checkpoint::store(&dir, &cp).map_err(|e| engine::Error::Io {
                context: "writing the checkpoint".into(),
                source: e,
            })
        })
        .await;
        match stored {
            Ok(Ok(())) => last = next,
            Ok(Err(e)) => tracing::warn!(error = %e, "checkpoint not written"),
            Err(e) => tracing::warn!(error = %e, "checkpoint task failed"),
        }
    }
}

/// How long one pull waits for messages on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// How long past [`PULL_EXPIRES`] the replica waits for the server before it takes the
/// consumer for lost (its NATS server was killed, say) and creates another.
const PULL_GRACE: Duration = Duration::from_secs(2);

/// Consumes the replica's subjects from the stream sequence after `applied` with an ephemeral
/// pull consumer of its own (no acks, in memory, one replica), applying each message in order.
/// Returns, with why, as soon as anything suggests a message could be missed: a gap in the
/// consumer's delivery sequence (a message lost in transit), no answer from the server, an error
/// from it, or, when idle, a consumer that says it delivered more than was applied. The caller
/// then creates a new consumer from `applied`: nothing is skipped and nothing applied twice.
async fn consume(
    state: &Arc<State>,
    stream: &jetstream::stream::Stream,
    name: &str,
    subjects: &[String],
    ready: &mut impl FnMut(u64),
) -> Result<&'static str> {
    let after = state.applied.load(Ordering::Acquire);
    let deliver_policy = if after == 0 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        }
    };
    let config = consumer::pull::Config {
        // A fresh name per consumer: the previous one may live on for a while on a server.
        name: Some(format!("{name}-{:08x}", rand::random::<u32>())),
        filter_subjects: subjects.to_vec(),
        deliver_policy,
        ack_policy: consumer::AckPolicy::None,
        num_replicas: 1,
        memory_storage: true,
        inactive_threshold: Duration::from_secs(30),
        ..Default::default()
    };
    let mut c: consumer::PullConsumer =
        match tokio::time::timeout(PULL_GRACE * 2, stream.create_consumer(config)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(ClusterError::JetStream(e.to_string())),
            Err(_) => return Ok("creating the consumer timed out"),
        };
    tracing::info!(%name, after, pending = c.cached_info().num_pending, "consuming");
    if c.cached_info().num_pending == 0 {
        ready(after);
    }
    let mut delivered = 0u64;
    loop {
        let batch = c.batch().max_messages(512).expires(PULL_EXPIRES).messages();
        let mut batch = match tokio::time::timeout(PULL_GRACE, batch).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return Err(ClusterError::JetStream(e.to_string())),
            Err(_) => return Ok("a pull request timed out"),
        };
        let mut got = 0u32;
        loop {
            let msg = match tokio::time::timeout(PULL_EXPIRES + PULL_GRACE, batch.next()).await {
                Err(_) => return Ok("no answer from the server"),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(ClusterError::JetStream(e.to_string())),
                Ok(Some(Ok(m))) => m,
            };
            let info = msg
                .info()
                .map_err(|e| ClusterError::JetStream(format!("message without info: {e}")))?;
            if info.consumer_sequence != delivered + 1 {
                return Ok("a gap in the consumer's deliveries");
            }
            delivered = info.consumer_sequence;
            let (seq, pending) = (info.stream_sequence, info.pending);
            if seq > state.applied.load(Ordering::Acquire) {
                apply_message(state, msg.subject.as_str(), &msg.payload).await?;
                state.applied.store(seq, Ordering::Release);
            }
            got += 1;
            if pending == 0 {
                ready(seq);
            }
        }
        if got == 0 {
            // Idle: make sure the last delivery was not lost in transit (no later message
            // would reveal that gap).
            let info = match tokio::time::timeout(PULL_GRACE, c.info()).await {
                Ok(Ok(i)) => i.clone(),
                Ok(Err(e)) => return Err(ClusterError::JetStream(e.to_string())),
                Err(_) => return Ok("consumer info timed out"),
            };
            if info.delivered.consumer_sequence != delivered {
                return Ok("the consumer delivered more than was received");
            }
            if info.num_pending == 0 {
                ready(state.applied.load(Ordering::Acquire));
            }
        }
    }
}

async fn apply_message(state: &Arc<State>, subject: &str, payload: &[u8]) -> Result<()> {
    if subject == VENUES_SUBJECT {
        match apply_venues(&state.engine, payload).await {
            // Skipped as every HTTP node's replica skips it (and as an undecodable scan batch
            // is): stopping here would stop the shard at it on every restart.
            Err(e @ ClusterError::Decode { .. }) => {
                tracing::error!(error = %e, "undecodable venue batch in the stream; skipped");
                Ok(())
            }
            other => other,
        }
    } else {
        apply_scans(&state.engine, subject, payload).await
    }
}

/// Applies a venue registration of the stream to `engine`. A refusal of the venues themselves is
/// logged, not fatal (the HTTP node validated them, so every replica refuses them alike); an
/// undecodable payload is an error, and so is a registration this engine could not store (a
/// full disk, shutting down): it was not applied, and the caller applies it again rather than
/// go on without the venues.
pub async fn apply_venues(engine: &engine::Engine, payload: &[u8]) -> Result<()> {
    let venues: Vec<WireVenue> =
        postcard::from_bytes(payload).map_err(|e| ClusterError::Decode {
            what: "venue batch",
            reason: e.to_string(),
        })?;
    let specs: Vec<engine::VenueSpec> = venues.into_iter().map(Into::into).collect();
    let engine = engine.clone();
    let r = tokio::task::spawn_blocking(move || engine.register_venues(specs))
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    match r {
        Ok(_) => Ok(()),
        Err(e @ engine::Error::InvalidVenue(_)) => {
            tracing::warn!(error = %e, "venue registration from the stream refused");
            Ok(())
        }
        Err(e) => Err(ClusterError::Engine(e)),
    }
}

/// Applies a scan batch of the stream (subject `subject`) to `engine` and waits until it is
/// stored. Scans refused on replay (past retention by now) are dropped; an undecodable batch is
/// logged and skipped.
pub async fn apply_scans(engine: &engine::Engine, subject: &str, payload: &[u8]) -> Result<()> {
    match submit_scans(engine, subject, payload) {
        Some(stored) => stored.wait().await,
        None => Ok(()),
    }
}

/// A scan batch handed to the engine, not yet stored.
pub struct SubmittedScans(tokio::sync::oneshot::Receiver<engine::Result<engine::IngestOutcome>>);

impl SubmittedScans {
    /// Waits until the batch is stored.
    pub async fn wait(self) -> Result<()> {
        let outcome = self
            .0
            .await
            .map_err(|_| ClusterError::JetStream("the engine stopped".into()))??;
        if !outcome.rejected.is_empty() {
            // Scans past retention by now, for example; they would have been purged anyway.
            tracing::debug!(rejected = outcome.rejected.len(), "scans refused on replay");
        }
        Ok(())
    }
}

/// Hands a scan batch of the stream to `engine` without waiting for it to be stored (the engine
/// stores batches in the order they are handed over); `None` for an undecodable batch, which is
/// logged and skipped.
pub fn submit_scans(
    engine: &engine::Engine,
    subject: &str,
    payload: &[u8],
) -> Option<SubmittedScans> {
    let scans: Vec<WireScan> = match postcard::from_bytes(payload) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, subject, "undecodable scan batch in the stream; skipped");
            return None;
        }
    };
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
    engine.submit(
        items,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    Some(SubmittedScans(rx))
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

/// Visits as a shard sends them (`Op::Visits`).
pub fn wire_visits(v: Vec<engine::Visit>) -> Vec<WireVisit> {
    v.into_iter()
        .map(|v| WireVisit {
            venue: v.venue.to_string(),
            start: v.start,
            end: v.end,
        })
        .collect()
}

fn answer_now(state: &State, op: Op) -> Reply {
    answer_from(&state.engine, op)
}

/// A shard's answer to `op` from its engine.
pub fn answer_from(engine: &engine::Engine, op: Op) -> Reply {
    match op {
        Op::Visits {
            persons,
            from,
            to,
            reply_bytes,
        } => {
            let visits = persons
                .iter()
                .map(|p| engine.visits(p, from, to).map(wire_visits));
            match reply_bytes {
                // The first persons' visits that fit: the asker asks again for the rest.
                Some(budget) => Reply::Visits(crate::paging::fill(visits, budget).0),
                None => Reply::Visits(visits.collect()),
            }
        }
        Op::Occupancy { venue } => Reply::Occupancy(engine.occupancy(&venue)),
        Op::PresentAfter { after, reply_bytes } => {
            let mut venues: Vec<(String, u32)> = engine
                .present_venues()
                .into_iter()
                .filter(|(v, _)| after.as_deref().is_none_or(|a| &**v > a))
                .map(|(v, c)| (v.to_string(), c))
                .collect();
            venues.sort_unstable();
            let (venues, more) = crate::paging::fill(venues, reply_bytes);
            Reply::PresentPage { venues, more }
        }
        Op::Present => Reply::Top(
            engine
                .present_venues()
                .into_iter()
                .map(|(v, c)| (v.to_string(), c))
                .collect(),
        ),
        Op::Top { n } => Reply::Top(
            engine
                .top_occupancy(n)
                .into_iter()
                .map(|(v, c)| (v.to_string(), c))
                .collect(),
        ),
        Op::Stats => {
            let s = engine.stats();
            Reply::Stats(ShardTotals {
                scans: s.scans,
                persons: s.persons,
                log_bytes: s.log_bytes,
                present: s.present,
            })
        }
        Op::Exposures {
            sources,
            linger_s,
            threshold,
            exclude,
            after,
            reply_bytes,
        } => {
            let mut all = exposures(engine, sources, linger_s, threshold, &exclude);
            match reply_bytes {
                None => Reply::Exposures(all),
                Some(budget) => {
                    // Computed whole for every page (a page is a query of its own, possibly to
                    // the other replica), then cut after `after`: the pages together are the
                    // one answer, each person once.
                    if let Some(after) = after.as_deref() {
                        all.retain(|e| e.person.as_str() > after);
                    }
                    all.sort_unstable_by(|a, b| a.person.cmp(&b.person));
                    let (exposures, more) = crate::paging::fill(all, budget);
                    Reply::ExposurePage { exposures, more }
                }
            }
        }
    }
}

/// A shard's answer to `Op::Exposures`: [`engine::Engine::exposures_to`] over the sources given.
pub fn exposures(
    engine: &engine::Engine,
    sources: Vec<Source>,
    linger_s: i64,
    threshold: i64,
    exclude: &[String],
) -> Vec<Exposure> {
    let sources: Vec<engine::ExposureSource> = sources
        .into_iter()
        .map(|s| engine::ExposureSource {
            person: s.person,
            visits: s
                .visits
                .into_iter()
                .map(|v| engine::Visit {
                    venue: v.venue.into(),
                    start: v.start,
                    end: v.end,
                })
                .collect(),
        })
        .collect();
    let exclude: Vec<&str> = exclude.iter().map(String::as_str).collect();
    engine
        .exposures_to(&sources, linger_s, threshold, &exclude)
        .into_iter()
        .map(|e| Exposure {
            person: e.person.to_string(),
            source: sources[e.source].person.clone(),
            exposure_s: e.exposure_s,
            first_contact: e.first_contact,
            last_contact: e.last_contact,
            venues: e.venues.iter().map(|v| v.to_string()).collect(),
        })
        .collect()
}
