//! The cluster's audit log of lookups (contract section 8 in cluster mode): a lookup's entry is
//! not kept by the HTTP node that made it but in a JetStream stream of its own ([`AUDIT_STREAM`],
//! 3 replicas, file storage, never expired), so every node answers `GET /v1/audit` with every
//! node's lookups and a lost node loses none.
//!
//! Writes go through one batching task per HTTP node ([`AuditPublisher`]): every entry queued
//! while a publish is in flight goes into the next message, and each waiter is told once
//! JetStream acknowledged the message holding its entry (durable on a quorum of fsyncing
//! servers). A message JetStream did not acknowledge within [`PUBLISH_TRIES`] tries is refused
//! to its waiters and then published again, under the same `Nats-Msg-Id`, until it is stored:
//! an unacknowledged publish may have been stored all the same, so a refused entry is made
//! stored always rather than sometimes (a lookup refused with `503` is then on record as an
//! attempted access). Reads ([`Node::audit_since`]) replay the stream from shortly before
//! `since`. The entries of health-domain changes are not published here: every HTTP node
//! derives them from the changes' commands in the main stream (`api::cluster_replica`).

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::{ClusterError, Result};
use crate::node::{Node, PUBLISH_TRIES};
use crate::REPLICAS;

/// The stream of audit entries.
pub const AUDIT_STREAM: &str = "CHECKIN_AUDIT";
/// Its one subject.
pub const AUDIT_SUBJECT: &str = "ck.audit";
/// Most entries in one message.
const MAX_ENTRIES_PER_MESSAGE: usize = 4096;
/// Publishes of audit batches in flight at once per HTTP node.
const IN_FLIGHT: usize = 4;
/// Pause between rounds of publishing the batches whose waiters were refused ([`store_late`]).
const LATE_RETRY: Duration = Duration::from_secs(1);
/// How long a read of the audit stream waits for each message of a batch before it answers
/// that the stream did not answer (`GET /v1/audit` then answers `503`).
const READ_WAIT: Duration = Duration::from_secs(5);
/// How far before `since` a read starts replaying, by the servers' message times: an entry's
/// `ts` is the HTTP node's clock, the message's time the NATS server's, and the two may differ
/// by this much without an entry being missed.
pub const CLOCK_MARGIN_S: i64 = 600;

/// One audit entry as it is stored in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAudit {
    pub ts: i64,
    pub who: String,
    pub action: String,
    pub subject: String,
}

impl From<engine::AuditEntry> for WireAudit {
    fn from(e: engine::AuditEntry) -> WireAudit {
        WireAudit {
            ts: e.ts,
            who: e.who,
            action: e.action,
            subject: e.subject,
        }
    }
}

impl From<WireAudit> for engine::AuditEntry {
    fn from(e: WireAudit) -> engine::AuditEntry {
        engine::AuditEntry {
            ts: e.ts,
            who: e.who,
            action: e.action,
            subject: e.subject,
        }
    }
}

/// Creates the audit stream if it does not exist (retried while JetStream elects a leader).
pub(crate) async fn ensure_audit_stream(js: &jetstream::Context) -> Result<()> {
    let config = jetstream::stream::Config {
        name: AUDIT_STREAM.to_string(),
        subjects: vec![AUDIT_SUBJECT.to_string()],
        num_replicas: REPLICAS,
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    crate::node::retry_create(|| js.get_or_create_stream(config.clone()), "audit stream").await?;
    Ok(())
}

type Waiter = Box<dyn FnOnce(Result<()>) + Send>;

/// The HTTP node's queue of audit entries on their way to the stream. Cheap to clone.
#[derive(Clone)]
pub struct AuditPublisher {
    queue: mpsc::UnboundedSender<(WireAudit, Waiter)>,
}

impl AuditPublisher {
    /// Starts the batching task on the current tokio runtime; it ends when the last clone of
    /// the publisher is dropped.
    pub fn start(node: Node) -> AuditPublisher {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(publish_loop(node, rx));
        AuditPublisher { queue }
    }

    /// Queues one entry; `done` is called once it is durable in the stream, or with why not.
    pub fn submit(&self, entry: WireAudit, done: impl FnOnce(Result<()>) + Send + 'static) {
        if let Err(mpsc::error::SendError((_, done))) = self.queue.send((entry, Box::new(done))) {
            done(Err(ClusterError::Publish(
                "the audit publisher has stopped".into(),
            )));
        }
    }
}

async fn publish_loop(node: Node, mut rx: mpsc::UnboundedReceiver<(WireAudit, Waiter)>) {
    let (late, refused) = mpsc::unbounded_channel();
    tokio::spawn(store_late(node.clone(), refused));
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    loop {
        // Take what is queued (waiting for the first entry only when nothing is in flight, or
        // for a slot when all are busy).
        let first = if in_flight.len() >= IN_FLIGHT {
            in_flight.next().await;
            continue;
        } else if in_flight.is_empty() {
            match rx.recv().await {
                Some(job) => job,
                None => return,
            }
        } else {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                _ = in_flight.next() => continue,
            }
        };
        let mut entries = vec![first.0];
        let mut waiters = vec![first.1];
        while entries.len() < MAX_ENTRIES_PER_MESSAGE {
            match rx.try_recv() {
                Ok((e, w)) => {
                    entries.push(e);
                    waiters.push(w);
                }
                Err(_) => break,
            }
        }
        let node = node.clone();
        let late = late.clone();
        in_flight.push(async move {
            let payload: Bytes = match postcard::to_stdvec(&entries) {
                Ok(payload) => payload.into(),
                Err(e) => {
                    for w in waiters {
                        w(Err(ClusterError::Decode {
                            what: "audit batch",
                            reason: e.to_string(),
                        }));
                    }
                    return;
                }
            };
            let id = node.next_msg_id();
            let stored = node
                .publish_as(AUDIT_SUBJECT, payload.clone(), &id, PUBLISH_TRIES)
                .await;
            for w in waiters {
                w(match &stored {
                    Ok(_) => Ok(()),
                    Err(e) => Err(ClusterError::Publish(e.to_string())),
                });
            }
            if stored.is_err() {
                // The waiters were refused, but the message may have been stored anyway: it is
                // stored for certain, later, under the same id. (The late task outlives this
                // loop, so the send cannot fail.)
                let _ = late.send(LateBatch { payload, id });
            }
        });
    }
    while in_flight.next().await.is_some() {}
}

/// A batch whose waiters were refused, on its way to the stream all the same.
struct LateBatch {
    payload: Bytes,
    id: String,
}

/// Publishes the batches whose waiters were told they failed until JetStream stores them, in
/// the order they were refused, one at a time and under each one's own `Nats-Msg-Id` (so a first
/// publish that was stored after all is not stored twice while it is within the stream's
/// duplicate window). One task for every refused batch of the node: during an outage the
/// retries are one publish at a time and one warning a round, however many lookups are
/// refused, and the batches go out in order once the stream takes them again. Ends when the
/// publisher is gone and nothing is left to store.
async fn store_late(node: Node, mut refused: mpsc::UnboundedReceiver<LateBatch>) {
    let mut pending: VecDeque<LateBatch> = VecDeque::new();
    let mut since: Option<std::time::Instant> = None;
    let mut stored = 0u64;
    loop {
        let batch = match pending.pop_front() {
            Some(batch) => batch,
            None => match refused.recv().await {
                Some(batch) => batch,
                None => return,
            },
        };
        while let Ok(later) = refused.try_recv() {
            pending.push_back(later);
        }
        let started = *since.get_or_insert_with(std::time::Instant::now);
        match node
            .publish_as(
                AUDIT_SUBJECT,
                batch.payload.clone(),
                &batch.id,
                PUBLISH_TRIES,
            )
            .await
        {
            Ok(_) => {
                stored += 1;
                if pending.is_empty() {
                    tracing::info!(
                        batches = stored,
                        after_s = started.elapsed().as_secs(),
                        "audit entries refused at first are all in the audit stream now"
                    );
                    since = None;
                    stored = 0;
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    msg_id = %batch.id,
                    batches_waiting = pending.len() + 1,
                    "audit entries refused at first still not stored; retrying"
                );
                pending.push_front(batch);
                tokio::time::sleep(LATE_RETRY).await;
            }
        }
    }
}

impl Node {
    /// Every node's audit entries with `ts >= since`, by `ts` (entries with the same `ts` in
    /// the stream's order).
    pub async fn audit_since(&self, since: i64) -> Result<Vec<WireAudit>> {
        let js = self.jetstream();
        let stream = js
            .get_stream(AUDIT_STREAM)
            .await
            .map_err(|e| ClusterError::JetStream(e.to_string()))?;
        let start = time::OffsetDateTime::from_unix_timestamp(since.saturating_sub(CLOCK_MARGIN_S))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let deliver_policy = if since <= CLOCK_MARGIN_S {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartTime { start_time: start }
        };
        let reader = stream
            .create_consumer(consumer::pull::Config {
                deliver_policy,
                ack_policy: consumer::AckPolicy::None,
                memory_storage: true,
                num_replicas: 1,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::JetStream(e.to_string()))?;
        let mut pending = reader.cached_info().num_pending;
        let mut out = Vec::new();
        while pending > 0 {
            let mut batch = reader
                .fetch()
                .max_messages(usize::try_from(pending.min(512)).unwrap_or(512))
                .messages()
                .await
                .map_err(|e| ClusterError::JetStream(e.to_string()))?;
            let mut got = 0u64;
            // A pull whose server died (the reader lives on one) is never answered: give up
            // rather than hang the request.
            while let Some(msg) = tokio::time::timeout(READ_WAIT, batch.next())
                .await
                .map_err(|_| {
                    ClusterError::JetStream("the audit stream did not answer a read in time".into())
                })?
            {
                let msg = msg.map_err(|e| ClusterError::JetStream(e.to_string()))?;
                got += 1;
                let entries: Vec<WireAudit> =
                    postcard::from_bytes(&msg.payload).map_err(|e| ClusterError::Decode {
                        what: "audit batch",
                        reason: e.to_string(),
                    })?;
                out.extend(entries.into_iter().filter(|e| e.ts >= since));
            }
            if got == 0 {
                return Err(ClusterError::JetStream(
                    "the audit stream stopped delivering before its end".into(),
                ));
            }
            pending = pending.saturating_sub(got);
        }
        // It would go by itself after `inactive_threshold`; no need to keep it that long.
        let name = reader.cached_info().name.clone();
        let _ = stream.delete_consumer(&name).await;
        out.sort_by_key(|e| e.ts);
        Ok(out)
    }
}
