//! The HTTP node's side of cluster mode: publishing validated scans and venue registrations to
//! JetStream (acknowledged only after every publish acknowledgement), and answering reads by
//! fan-out to the shards.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::contacts::{clip, holds_contact, merge_best, sort_contacts};
use crate::error::{ClusterError, Result};
use crate::paging::{json_len, runs, MIN_MESSAGE_BYTES};
use crate::wire::{Exposure, Op, Query, Reply, Source, WireScan, WireVenue, WireVisit};
use crate::{
    query_subject, scan_subject, shard_of, ACKED_SUBJECT, HEALTH_SUBJECT, MAX_SCANS_PER_MESSAGE,
    REPLICAS, STREAM, VENUES_SUBJECT,
};

/// How long a read keeps retrying a shard (no responders, timeouts) before it gives up with
/// [`ClusterError::ShardUnavailable`] (the HTTP layer answers 503 with `Retry-After`).
pub const READ_RETRY_FOR: Duration = Duration::from_secs(8);
/// How often a publish is retried (same `Nats-Msg-Id`, so JetStream stores it once).
pub(crate) const PUBLISH_TRIES: usize = 4;

pub use crate::wire::ShardTotals;

/// A connection to the cluster, as an HTTP node uses it. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    shards: u32,
    /// Random per process: the first half of every `Nats-Msg-Id` this node sets.
    node_id: String,
    next_msg: AtomicU64,
    /// Per shard, the stream sequence of the latest publish to it acknowledged to this node or
    /// announced by another (reads wait for the shard to have applied it).
    last_seq: Vec<AtomicU64>,
    /// The latest acknowledged venue registration (every shard consumes it).
    venue_seq: AtomicU64,
    /// The latest health command acknowledged to this node or announced by another (reads of
    /// the health domain wait for this node's replica to have applied it).
    health_seq: AtomicU64,
    /// Stream sequence up to which this node's replica (and so its venue registry) has applied
    /// the stream ([`Node::note_replica_applied`]).
    replica_applied: AtomicU64,
    /// Creation time of the stream, unix nanoseconds.
    stream_created_ns: i128,
    /// The operator's cap on the bytes of one query or answer ([`Node::limit_message_bytes`]).
    message_bytes_cap: AtomicUsize,
    /// Shard answers that came as more than one page: the pages after the first.
    continued_answers: AtomicU64,
}

/// Connects to NATS (comma-separated URLs), retrying the first connection.
pub async fn connect(urls: &str, name: &str) -> Result<async_nats::Client> {
    let addrs: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if addrs.is_empty() {
        return Err(ClusterError::Connect("no NATS URL given".into()));
    }
    async_nats::ConnectOptions::new()
        .name(name)
        .request_timeout(Some(Duration::from_secs(2)))
        .retry_on_initial_connect()
        .connect(&addrs[..])
        .await
        .map_err(|e| ClusterError::Connect(e.to_string()))
}

/// The settings every process of a cluster must share, or its answers are silently wrong: the
/// number of shards (a person's scans would go to two subjects), the default stay (visits
/// derived on the shards and on the HTTP nodes would differ) and the retention (a node would
/// accept scans the shards purge). Kept in the stream's metadata by the process that creates it;
/// every later process checks its own against them and refuses to start on a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub shards: u32,
    pub default_stay_s: u32,
    pub retention_days: u32,
}

impl Layout {
    const KEYS: [&'static str; 3] = [
        "checkin.shards",
        "checkin.default_stay_s",
        "checkin.retention_days",
    ];

    fn values(&self) -> [u32; 3] {
        [self.shards, self.default_stay_s, self.retention_days]
    }

    fn metadata(&self) -> std::collections::HashMap<String, String> {
        Layout::KEYS
            .iter()
            .zip(self.values())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The layout `metadata` records; `None` for a stream created before layouts were kept.
    fn from_metadata(metadata: &std::collections::HashMap<String, String>) -> Option<Layout> {
        let get = |k: &str| metadata.get(k).and_then(|v| v.parse::<u32>().ok());
        Some(Layout {
            shards: get(Layout::KEYS[0])?,
            default_stay_s: get(Layout::KEYS[1])?,
            retention_days: get(Layout::KEYS[2])?,
        })
    }

    /// `Ok` when `self` (this process's settings) equals `cluster` (the stream's).
    fn check(&self, cluster: &Layout) -> Result<()> {
        if self == cluster {
            return Ok(());
        }
        Err(ClusterError::Layout(format!(
            "this process's settings differ from the cluster's: the stream {STREAM} was set up \
             with {} shards, --default-stay {} and --retention-days {}, and this process has {} \
             shards, --default-stay {} and --retention-days {}; every HTTP node and shard replica \
             must be started with the cluster's (changing them needs a new stream)",
            cluster.shards,
            cluster.default_stay_s,
            cluster.retention_days,
            self.shards,
            self.default_stay_s,
            self.retention_days
        )))
    }
}

/// Creates the stream if it does not exist (3 replicas, file storage, a 2-minute duplicate
/// window for `Nats-Msg-Id`, `layout` in its metadata), and checks `layout` against the one it
/// was set up with ([`Layout`]).
pub async fn ensure_stream(
    js: &jetstream::Context,
    layout: &Layout,
) -> Result<jetstream::stream::Stream> {
    let config = jetstream::stream::Config {
        name: STREAM.to_string(),
        subjects: stream_subjects(),
        num_replicas: REPLICAS,
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        metadata: layout.metadata(),
        ..Default::default()
    };
    let stream = retry_create(|| js.get_or_create_stream(config.clone()), "stream").await?;
    let mut have = stream.cached_info().config.clone();
    if let Some(cluster) = Layout::from_metadata(&have.metadata) {
        layout.check(&cluster)?;
    }
    // A stream created before health commands were in it, or before layouts were kept: add
    // their subject, and this process's layout (the first to start after the upgrade sets it).
    let old_subjects = !have.subjects.iter().any(|s| s == HEALTH_SUBJECT);
    let no_layout = Layout::from_metadata(&have.metadata).is_none();
    if old_subjects || no_layout {
        have.subjects = stream_subjects();
        have.metadata.extend(layout.metadata());
        retry_create(
            || js.update_stream(have.clone()),
            "stream's subjects and layout",
        )
        .await?;
        let stream = retry_create(|| js.get_stream(STREAM), "stream").await?;
        if let Some(cluster) = Layout::from_metadata(&stream.cached_info().config.metadata) {
            layout.check(&cluster)?;
        }
        return Ok(stream);
    }
    Ok(stream)
}

fn stream_subjects() -> Vec<String> {
    vec![
        "ck.scans.*".to_string(),
        VENUES_SUBJECT.to_string(),
        HEALTH_SUBJECT.to_string(),
    ]
}

/// Runs a JetStream management call until it succeeds, for up to a minute (the cluster may
/// be electing a leader).
pub(crate) async fn retry_create<
    T,
    E: std::fmt::Display,
    F: std::future::Future<Output = std::result::Result<T, E>>,
>(
    mut call: impl FnMut() -> F,
    what: &str,
) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match call().await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                tracing::info!(error = %e, "waiting for JetStream to create the {what}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(ClusterError::JetStream(e.to_string())),
        }
    }
}

impl Node {
    /// Connects, makes sure the stream exists with this `layout` ([`Layout`]), and serves its
    /// shards.
    pub async fn connect(urls: &str, layout: Layout) -> Result<Node> {
        let shards = layout.shards;
        let client = connect(urls, "checkin-http").await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(5));
        let stream = ensure_stream(&js, &layout).await?;
        let stream_created_ns = stream.cached_info().created.unix_timestamp_nanos();
        crate::audit::ensure_audit_stream(&js).await?;
        let node_id = format!("{:016x}", rand::random::<u64>());
        // Subscribed before the node serves, so that no announcement made after it is missed.
        let announced = client
            .subscribe(ACKED_SUBJECT)
            .await
            .map_err(|e| ClusterError::Connect(format!("subscribing to {ACKED_SUBJECT}: {e}")))?;
        let node = Node {
            inner: Arc::new(Inner {
                client,
                js,
                shards: shards.max(1),
                node_id,
                next_msg: AtomicU64::new(0),
                last_seq: (0..shards.max(1)).map(|_| AtomicU64::new(0)).collect(),
                venue_seq: AtomicU64::new(0),
                health_seq: AtomicU64::new(0),
                replica_applied: AtomicU64::new(0),
                stream_created_ns,
                message_bytes_cap: AtomicUsize::new(usize::MAX),
                continued_answers: AtomicU64::new(0),
            }),
        };
        tokio::spawn(follow_announcements(Arc::downgrade(&node.inner), announced));
        Ok(node)
    }

    /// Tells the other HTTP nodes that JetStream acknowledged sequence `seq` of `what` to this
    /// one. Best effort: a lost announcement only makes a read through another node that follows
    /// at once answer as before it (as without announcements).
    async fn announce(&self, what: Announced, seq: u64) {
        let payload = Announcement {
            what,
            seq,
            stream: stream_tag(self.inner.stream_created_ns),
        }
        .encode();
        // Bounded: the client's answer (its write is durable already) does not wait for a
        // connection to NATS that dropped after the acknowledgement to come back.
        match tokio::time::timeout(
            ANNOUNCE_WAIT,
            self.inner
                .client
                .publish(ACKED_SUBJECT, payload.to_vec().into()),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "an acknowledged sequence was not announced"),
            Err(_) => tracing::debug!("an acknowledged sequence was not announced in time"),
        }
    }

    /// When the stream was created (unix nanoseconds): a stream deleted and created again starts
    /// its sequences over, so a checkpoint counts only for the stream it was taken of.
    pub fn stream_created_ns(&self) -> i128 {
        self.inner.stream_created_ns
    }

    /// Caps the bytes of JSON this node puts in one query to a shard or asks for in one answer
    /// (at least [`MIN_MESSAGE_BYTES`]); without a cap, three quarters of the servers'
    /// `max_payload`. A read over the cap goes in several queries or pages.
    pub fn limit_message_bytes(&self, bytes: usize) {
        self.inner
            .message_bytes_cap
            .store(bytes.max(MIN_MESSAGE_BYTES), Ordering::Relaxed);
    }

    /// The budget of one query or answer: the cap, within three quarters of the `max_payload`
    /// the connected server announced (the rest is room for what the estimate leaves out).
    fn message_bytes(&self) -> usize {
        let server = self.inner.client.max_payload() / 4 * 3;
        self.inner
            .message_bytes_cap
            .load(Ordering::Relaxed)
            .min(server)
            .max(MIN_MESSAGE_BYTES)
    }

    /// Shard answers that took more than one page, counted by the pages after the first (a
    /// trace of a large cluster of cases, a top of many venues with someone present).
    pub fn continued_answers(&self) -> u64 {
        self.inner.continued_answers.load(Ordering::Relaxed)
    }

    fn note_continued(&self) {
        self.inner.continued_answers.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.inner.shards
    }

    /// The JetStream context (for consumers of the venue subject).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    pub(crate) fn next_msg_id(&self) -> String {
        let n = self.inner.next_msg.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.inner.node_id)
    }

    /// Publishes one message, retrying with the same `Nats-Msg-Id`; returns its sequence.
    pub(crate) async fn publish(&self, subject: String, payload: Bytes) -> Result<u64> {
        let id = self.next_msg_id();
        self.publish_as(&subject, payload, &id, PUBLISH_TRIES).await
    }

    /// Publishes one message under the given `Nats-Msg-Id`, trying at most `tries` times (with
    /// 0.4, 0.8, 1.6, 2, 2, ... s between tries); returns its sequence.
    pub(crate) async fn publish_as(
        &self,
        subject: &str,
        payload: Bytes,
        id: &str,
        tries: usize,
    ) -> Result<u64> {
        let mut last_err = String::new();
        for attempt in 0..tries {
            if attempt > 0 {
                let backoff = 200u64 << attempt.min(4);
                tokio::time::sleep(Duration::from_millis(backoff.min(2000))).await;
            }
            let msg = PublishMessage::build()
                .payload(payload.clone())
                .message_id(id);
            let fut: PublishAckFuture =
                match self.inner.js.send_publish(subject.to_string(), msg).await {
                    Ok(f) => f,
                    Err(e) => {
                        last_err = e.to_string();
                        continue;
                    }
                };
            match fut.await {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) => last_err = e.to_string(),
            }
        }
        Err(ClusterError::Publish(last_err))
    }

    /// Publishes validated scans, grouped by shard, up to [`MAX_SCANS_PER_MESSAGE`] a message,
    /// all in flight at once; returns once JetStream acknowledged every message.
    pub async fn publish_scans(&self, scans: Vec<WireScan>) -> Result<()> {
        let mut by_shard: BTreeMap<u32, Vec<WireScan>> = BTreeMap::new();
        for s in scans {
            by_shard
                .entry(shard_of(&s.person, self.inner.shards))
                .or_default()
                .push(s);
        }
        let mut pending = Vec::new();
        for (shard, scans) in by_shard {
            for chunk in scans.chunks(MAX_SCANS_PER_MESSAGE) {
                let payload = postcard::to_stdvec(chunk).map_err(|e| ClusterError::Decode {
                    what: "scan batch",
                    reason: e.to_string(),
                })?;
                let node = self.clone();
                pending.push(async move {
                    node.publish_acked(scan_subject(shard), Announced::Scans(shard), payload)
                        .await
                        .map(|_| ())
                });
            }
        }
        for r in futures_util::future::join_all(pending).await {
            r?;
        }
        Ok(())
    }

    /// This process's id in the cluster (random per start): the origin of its health commands.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Publishes a health-domain command; returns its stream sequence once acknowledged, and
    /// announces it, so that reads of the health domain through every HTTP node wait for it
    /// ([`Node::health_seq_to_read`]).
    pub async fn publish_health(&self, command: &crate::wire::HealthCommand) -> Result<u64> {
        let payload = postcard::to_stdvec(command).map_err(|e| ClusterError::Decode {
            what: "health command",
            reason: e.to_string(),
        })?;
        self.publish_acked(HEALTH_SUBJECT.to_string(), Announced::Health, payload)
            .await
    }

    /// The stream sequence a read of the health domain must have seen: the last health command
    /// acknowledged to this node or announced by another ([`ACKED_SUBJECT`]). A replica that has
    /// applied the stream up to it answers as the single server would after that change:
    /// read-your-writes for cases, records and doses through any HTTP node once the
    /// announcement reached it.
    pub fn health_seq_to_read(&self) -> u64 {
        self.inner.health_seq.load(Ordering::Acquire)
    }

    /// Publishes a venue registration; returns its stream sequence once acknowledged.
    pub async fn publish_venues(&self, venues: &[engine::VenueSpec]) -> Result<u64> {
        let wire: Vec<WireVenue> = venues.iter().map(WireVenue::from).collect();
        let payload = postcard::to_stdvec(&wire).map_err(|e| ClusterError::Decode {
            what: "venue batch",
            reason: e.to_string(),
        })?;
        self.publish_acked(VENUES_SUBJECT.to_string(), Announced::Venues, payload)
            .await
    }

    /// Publishes `payload`, and once JetStream acknowledged it takes its sequence into the ones
    /// this node's reads wait for and announces it to the other nodes; returns the sequence.
    async fn publish_acked(
        &self,
        subject: String,
        what: Announced,
        payload: Vec<u8>,
    ) -> Result<u64> {
        let seq = self.publish(subject, payload.into()).await?;
        self.inner.note_acked(what, seq);
        self.announce(what, seq).await;
        Ok(seq)
    }

    /// Records that this node's replica has applied the stream up to sequence `seq`, venue
    /// registrations included (called by the HTTP node's follower of the whole stream).
    pub fn note_replica_applied(&self, seq: u64) {
        self.inner.replica_applied.fetch_max(seq, Ordering::AcqRel);
    }

    /// Waits, for up to `within`, until the local venue registry has applied the stream's latest
    /// venue registration (whichever node published it); `Ok(false)` if it has not by then.
    /// Used before refusing a scan for an unknown venue: a venue registered through another
    /// node a moment ago is then known here too.
    pub async fn wait_latest_venues_applied(&self, within: Duration) -> Result<bool> {
        let deadline = Instant::now() + within;
        let stream = tokio::time::timeout(within, self.inner.js.get_stream(STREAM))
            .await
            .map_err(|_| ClusterError::JetStream("stream info timed out".into()))?
            .map_err(|e| ClusterError::JetStream(e.to_string()))?;
        let target = match tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            stream.get_last_raw_message_by_subject(VENUES_SUBJECT),
        )
        .await
        .map_err(|_| ClusterError::JetStream("venue lookup timed out".into()))?
        {
            Ok(m) => m.sequence,
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                ) =>
            {
                return Ok(true)
            }
            Err(e) => return Err(ClusterError::JetStream(e.to_string())),
        };
        while self.inner.replica_applied.load(Ordering::Acquire) < target {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(true)
    }

    fn min_seq(&self, shard: u32) -> u64 {
        let s = self.inner.last_seq[shard as usize].load(Ordering::Acquire);
        s.max(self.inner.venue_seq.load(Ordering::Acquire))
    }

    /// One query to one shard (either replica), retried for up to [`READ_RETRY_FOR`].
    async fn ask(&self, shard: u32, op: Op) -> Result<Reply> {
        let query = Query {
            min_seq: self.min_seq(shard),
            op,
        };
        let payload: Bytes = serde_json::to_vec(&query)
            .map_err(|e| ClusterError::Decode {
                what: "query",
                reason: e.to_string(),
            })?
            .into();
        let deadline = Instant::now() + READ_RETRY_FOR;
        let subject = query_subject(shard);
        loop {
            let reason = match self
                .inner
                .client
                .request(subject.clone(), payload.clone())
                .await
            {
                Ok(msg) => match serde_json::from_slice::<Reply>(&msg.payload) {
                    Ok(Reply::Error(e)) => e,
                    Ok(reply) => return Ok(reply),
                    Err(e) => {
                        return Err(ClusterError::Decode {
                            what: "shard reply",
                            reason: e.to_string(),
                        })
                    }
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(ClusterError::ShardUnavailable { shard, reason });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ask_all(&self, op: Op) -> Result<Vec<Reply>> {
        let asks = (0..self.inner.shards).map(|k| self.ask(k, op.clone()));
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .collect()
    }

    /// Visits of many persons, each from its shard; `None` for persons without scans. The
    /// persons of a shard go in queries that fit the message budget, and a shard whose answer
    /// would not fit answers the first persons' visits and is asked again for the rest.
    pub async fn visits_many(
        &self,
        persons: &[String],
        from: i64,
        to: i64,
    ) -> Result<Vec<Option<Vec<WireVisit>>>> {
        let mut by_shard: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, p) in persons.iter().enumerate() {
            by_shard
                .entry(shard_of(p, self.inner.shards))
                .or_default()
                .push(i);
        }
        let budget = self.message_bytes();
        let mut out: Vec<Option<Vec<WireVisit>>> = vec![None; persons.len()];
        let asks = by_shard.into_iter().map(|(shard, idx)| async move {
            let mut answered: Vec<(usize, Option<Vec<WireVisit>>)> = Vec::with_capacity(idx.len());
            // Runs by the ids' bytes (with their places, a little more than the query sends).
            let named: Vec<(usize, &String)> = idx.iter().map(|&i| (i, &persons[i])).collect();
            for run in runs(named, budget) {
                let run: Vec<usize> = run.into_iter().map(|(i, _)| i).collect();
                let mut rest: &[usize] = &run;
                let mut first = true;
                while !rest.is_empty() {
                    if !first {
                        self.note_continued();
                    }
                    first = false;
                    let reply = self
                        .ask(
                            shard,
                            Op::Visits {
                                persons: rest.iter().map(|&i| persons[i].clone()).collect(),
                                from,
                                to,
                                reply_bytes: Some(budget),
                            },
                        )
                        .await?;
                    let Reply::Visits(list) = reply else {
                        return Err(unexpected("visits"));
                    };
                    if list.is_empty() || list.len() > rest.len() {
                        return Err(ClusterError::Decode {
                            what: "visits",
                            reason: format!(
                                "a shard answered {} of {} persons",
                                list.len(),
                                rest.len()
                            ),
                        });
                    }
                    let (done, left) = rest.split_at(list.len());
                    answered.extend(done.iter().copied().zip(list));
                    rest = left;
                }
            }
            Ok::<_, ClusterError>(answered)
        });
        for r in futures_util::future::join_all(asks).await {
            for (i, v) in r? {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// One person's visits (section 3) from its shard.
    pub async fn visits(&self, person: &str, from: i64, to: i64) -> Result<Option<Vec<WireVisit>>> {
        Ok(self
            .visits_many(&[person.to_string()], from, to)
            .await?
            .pop()
            .flatten())
    }

    /// Persons present at a venue, summed over shards (`None` if no shard knows the venue).
    pub async fn occupancy(&self, venue: &str) -> Result<Option<u32>> {
        let replies = self
            .ask_all(Op::Occupancy {
                venue: venue.to_string(),
            })
            .await?;
        let mut total: Option<u32> = None;
        for r in replies {
            match r {
                Reply::Occupancy(Some(n)) => total = Some(total.unwrap_or(0) + n),
                Reply::Occupancy(None) => {}
                _ => return Err(unexpected("occupancy")),
            }
        }
        Ok(total)
    }

    /// The `n` venues with most persons present over all shards, ties by id. As on the single
    /// server, venues with nobody present fill the list when fewer than `n` have someone,
    /// smallest ids first, from `registered` (every registered venue id; called only then).
    pub async fn top_occupancy(
        &self,
        n: usize,
        registered: impl FnOnce() -> Vec<String>,
    ) -> Result<Vec<(String, u32)>> {
        // Each shard's top-n is not enough for a global top-n (a venue can be 11th on every
        // shard and 1st overall): every shard sends all its venues with someone present, a
        // page at a time.
        let asks = (0..self.inner.shards).map(|shard| self.present_on(shard));
        let mut sum: BTreeMap<String, u32> = BTreeMap::new();
        for list in futures_util::future::join_all(asks).await {
            for (v, c) in list? {
                *sum.entry(v).or_default() += c;
            }
        }
        let mut all: Vec<(String, u32)> = sum.into_iter().filter(|(_, c)| *c > 0).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        if all.len() < n {
            let present: HashSet<&str> = all.iter().map(|(v, _)| v.as_str()).collect();
            let mut idle: Vec<String> = registered()
                .into_iter()
                .filter(|v| !present.contains(v.as_str()))
                .collect();
            idle.sort_unstable();
            idle.truncate(n - all.len());
            all.extend(idle.into_iter().map(|v| (v, 0)));
        }
        Ok(all)
    }

    /// Every venue with someone present on one shard, and how many, in pages.
    async fn present_on(&self, shard: u32) -> Result<Vec<(String, u32)>> {
        let reply_bytes = self.message_bytes();
        self.follow_pages(
            |after| async move {
                let reply = self
                    .ask(shard, Op::PresentAfter { after, reply_bytes })
                    .await?;
                match reply {
                    Reply::PresentPage { venues, more } => Ok(Page::Part(venues, more)),
                    _ => Err(unexpected("present")),
                }
            },
            |(venue, _)| venue.clone(),
        )
        .await
    }

    /// A shard's answer put together from its pages: `page(after)` asks for the page after the
    /// key `after` (`None`: the first), and `key` is an item's key; the next page is asked after
    /// the last item's key while the shard says more follow.
    async fn follow_pages<T, F, Fut>(
        &self,
        mut page: F,
        key: impl Fn(&T) -> String,
    ) -> Result<Vec<T>>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Page<T>>>,
    {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (items, more) = match page(after.take()).await? {
                Page::Part(items, more) => (items, more),
                Page::Whole(items) => return Ok(items),
            };
            let last = items.last().map(&key);
            all.extend(items);
            match last {
                Some(last) if more => {
                    self.note_continued();
                    after = Some(last);
                }
                _ => return Ok(all),
            }
        }
    }

    /// Accepted scans stored, persons, log bytes and persons present, summed over shards (one
    /// replica of each).
    pub async fn stats(&self) -> Result<ShardTotals> {
        let mut t = ShardTotals::default();
        for r in self.ask_all(Op::Stats).await? {
            let Reply::Stats(shard) = r else {
                return Err(unexpected("stats"));
            };
            t.add(&shard);
        }
        Ok(t)
    }

    /// The stream sequence a read of `person` must have seen: the last scan batch acknowledged
    /// on the person's shard to this node or announced by another ([`ACKED_SUBJECT`]), or the
    /// last venue registration, if later. An engine that has applied the stream up to it
    /// answers reads of the person as the shard would: read-your-writes through this node, and
    /// through the other nodes once the announcement reached them (well under a millisecond on
    /// one network; an acknowledgement and a read sent at once through two nodes can still
    /// race).
    pub fn seq_to_read(&self, person: &str) -> u64 {
        self.min_seq(shard_of(person, self.inner.shards))
    }

    /// A contact trace (contract section 5) by fan-out; `None` if the case has no scans.
    pub async fn trace(&self, req: &engine::TraceRequest) -> Result<Option<engine::TraceResult>> {
        let case_visits = self.visits(&req.person, req.from, req.to).await?;
        self.trace_from(req, case_visits).await
    }

    /// A contact trace from the case's visits in `[from, to)` as its shard answers them
    /// (`None`: the case has no scans), read by the caller from an engine that has applied the
    /// stream up to [`Node::seq_to_read`] of the case: one round less than [`Node::trace`].
    pub async fn trace_from(
        &self,
        req: &engine::TraceRequest,
        case_visits: Option<Vec<WireVisit>>,
    ) -> Result<Option<engine::TraceResult>> {
        let Some(case_visits) = case_visits else {
            return Ok(None);
        };
        let case_visits = clip(&case_visits, req.min_stay_s, req.from, req.to);
        let threshold = req.min_overlap_s.max(1);
        let mut f1 = self
            .exposures(
                vec![Source {
                    person: req.person.clone(),
                    visits: case_visits.clone(),
                }],
                req.linger_s,
                threshold,
                vec![req.person.clone()],
            )
            .await?;
        sort_contacts(&mut f1);
        let mut f2 = Vec::new();
        if req.depth >= 2 && !f1.is_empty() {
            let persons: Vec<String> = f1.iter().map(|e| e.person.clone()).collect();
            // Fetch from the earliest first contact; each F1's visits are clipped to its own.
            // Up to `to` plus the linger: a contact the linger made can be with a visit that
            // starts after `to` (contributing nothing once clipped), and that visit is the one
            // that shows the replica has applied the F1's scans.
            let earliest = f1.iter().map(|e| e.first_contact).min().unwrap_or(req.from);
            let fetch_to = req.to.saturating_add(req.linger_s.max(0));
            let all = self.visits_many(&persons, earliest, fetch_to).await?;
            let mut sources: Vec<Source> = Vec::with_capacity(f1.len());
            for (e, v) in f1.iter().zip(all) {
                // The overlap round found this F1 in a visit that holds its last contact. A
                // replica without that visit (no scans of the F1 at all, or only older ones)
                // has not applied the scans acknowledged through another node a moment ago
                // that the replica of the overlap round had. Answering without that F1's
                // contacts would be silently wrong; the caller answers 503 and is asked again.
                let Some(v) = v.filter(|v| holds_contact(v, e.last_contact)) else {
                    return Err(ClusterError::ShardUnavailable {
                        shard: shard_of(&e.person, self.inner.shards),
                        reason: format!(
                            "the replica that answered has not applied the scans of F1 {} yet",
                            e.person
                        ),
                    });
                };
                let visits = clip(&v, req.min_stay_s, e.first_contact, req.to);
                if !visits.is_empty() {
                    sources.push(Source {
                        person: e.person.clone(),
                        visits,
                    });
                }
            }
            if !sources.is_empty() {
                let mut exclude: HashSet<String> = persons.into_iter().collect();
                exclude.insert(req.person.clone());
                f2 = self
                    .exposures(
                        sources,
                        req.linger_s,
                        threshold,
                        exclude.into_iter().collect(),
                    )
                    .await?;
                sort_contacts(&mut f2);
            }
        }
        Ok(Some(engine::TraceResult {
            case: req.person.as_str().into(),
            from: req.from,
            to: req.to,
            min_overlap_s: req.min_overlap_s,
            min_stay_s: req.min_stay_s,
            linger_s: req.linger_s,
            visits: case_visits.into_iter().map(to_visit).collect(),
            f1: f1
                .into_iter()
                .map(|e| engine::F1Contact {
                    person: e.person.into(),
                    exposure_s: e.exposure_s,
                    first_contact: e.first_contact,
                    last_contact: e.last_contact,
                    venues: e.venues.into_iter().map(Into::into).collect(),
                })
                .collect(),
            f2: f2
                .into_iter()
                .map(|e| engine::F2Contact {
                    person: e.person.into(),
                    via: e.source.into(),
                    exposure_s: e.exposure_s,
                    first_contact: e.first_contact,
                    last_contact: e.last_contact,
                })
                .collect(),
        }))
    }

    async fn exposures(
        &self,
        sources: Vec<Source>,
        linger_s: i64,
        threshold: i64,
        exclude: Vec<String>,
    ) -> Result<Vec<Exposure>> {
        let budget = self.message_bytes();
        // A shard answers only for its own persons, so it is sent only its part of `exclude`;
        // a part too large for the query is applied here to the answer instead (leaving a
        // person out does not change anyone else's best source).
        let mut exclude_by_shard: Vec<Vec<String>> = vec![Vec::new(); self.inner.shards as usize];
        for p in exclude {
            exclude_by_shard[shard_of(&p, self.inner.shards) as usize].push(p);
        }
        let mut filter_here: HashSet<String> = HashSet::new();
        for part in &mut exclude_by_shard {
            if json_len(part) > budget / 4 {
                filter_here.extend(std::mem::take(part));
            }
        }
        // One query per run of sources, each to every shard; the runs' answers are merged.
        let runs = runs(sources, budget / 2);
        let several = runs.len() > 1;
        let asks = runs.iter().flat_map(|sources| {
            let exclude_by_shard = &exclude_by_shard;
            (0..self.inner.shards).map(move |shard| {
                self.exposures_on(
                    shard,
                    sources,
                    linger_s,
                    threshold,
                    &exclude_by_shard[shard as usize],
                    budget,
                )
            })
        });
        let mut out = Vec::new();
        for list in futures_util::future::join_all(asks).await {
            out.extend(list?);
        }
        if !filter_here.is_empty() {
            out.retain(|e| !filter_here.contains(&e.person));
        }
        Ok(if several { merge_best(out) } else { out })
    }

    /// One shard's answer to one `Exposures` query, in pages of at most `budget` bytes.
    async fn exposures_on(
        &self,
        shard: u32,
        sources: &[Source],
        linger_s: i64,
        threshold: i64,
        exclude: &[String],
        budget: usize,
    ) -> Result<Vec<Exposure>> {
        self.follow_pages(
            |after| async move {
                let reply = self
                    .ask(
                        shard,
                        Op::Exposures {
                            sources: sources.to_vec(),
                            linger_s,
                            threshold,
                            exclude: exclude.to_vec(),
                            after,
                            reply_bytes: Some(budget),
                        },
                    )
                    .await?;
                match reply {
                    Reply::ExposurePage { exposures, more } => Ok(Page::Part(exposures, more)),
                    // A shard of the release before answers whole.
                    Reply::Exposures(list) => Ok(Page::Whole(list)),
                    _ => Err(unexpected("exposures")),
                }
            },
            |e| e.person.clone(),
        )
        .await
    }
}

/// One answer of a shard to a paged query ([`Node::follow_pages`]).
enum Page<T> {
    /// Some items, and whether more follow.
    Part(Vec<T>, bool),
    /// The whole answer in one (a shard of an earlier release).
    Whole(Vec<T>),
}

fn to_visit(v: WireVisit) -> engine::Visit {
    engine::Visit {
        venue: v.venue.into(),
        start: v.start,
        end: v.end,
    }
}

fn unexpected(what: &'static str) -> ClusterError {
    ClusterError::Decode {
        what,
        reason: "a shard answered with another kind of reply".into(),
    }
}

/// The longest an acknowledgement's answer waits to announce it ([`Node::announce`]).
const ANNOUNCE_WAIT: Duration = Duration::from_millis(100);

/// The stream an announcement is of: its creation time in unix nanoseconds, cut to 64 bits
/// (a stream deleted and created again starts its sequences anew, and a node still on the old
/// one must not make the others wait for its sequences).
fn stream_tag(created_ns: i128) -> u64 {
    created_ns as u64
}

/// What an announced sequence is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Announced {
    /// A scan batch of this shard.
    Scans(u32),
    /// A venue registration (every shard consumes it).
    Venues,
    /// A health command (every HTTP node's replica applies it).
    Health,
}

/// The shard field of a venue registration's announcement.
const VENUES_MARK: u32 = u32::MAX;
/// The shard field of a health command's announcement.
const HEALTH_MARK: u32 = u32::MAX - 1;

impl Announced {
    fn mark(self) -> u32 {
        match self {
            Announced::Scans(shard) => shard,
            Announced::Venues => VENUES_MARK,
            Announced::Health => HEALTH_MARK,
        }
    }

    fn of_mark(mark: u32) -> Announced {
        match mark {
            VENUES_MARK => Announced::Venues,
            HEALTH_MARK => Announced::Health,
            shard => Announced::Scans(shard),
        }
    }
}

/// One acknowledged sequence, as announced on [`ACKED_SUBJECT`]: 20 bytes, little-endian: the
/// shard ([`VENUES_MARK`] for a venue registration, [`HEALTH_MARK`] for a health command), the
/// sequence, and the stream's [`stream_tag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Announcement {
    what: Announced,
    seq: u64,
    stream: u64,
}

impl Announcement {
    const LEN: usize = 20;

    fn encode(self) -> [u8; Announcement::LEN] {
        let mut out = [0u8; Announcement::LEN];
        out[..4].copy_from_slice(&self.what.mark().to_le_bytes());
        out[4..12].copy_from_slice(&self.seq.to_le_bytes());
        out[12..].copy_from_slice(&self.stream.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Announcement> {
        if bytes.len() != Announcement::LEN {
            return None;
        }
        let mark = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
        let seq = u64::from_le_bytes(bytes.get(4..12)?.try_into().ok()?);
        let stream = u64::from_le_bytes(bytes.get(12..20)?.try_into().ok()?);
        Some(Announcement {
            what: Announced::of_mark(mark),
            seq,
            stream,
        })
    }
}

/// Takes every node's announcements of this node's stream (this one's too, which change
/// nothing) into the sequences this node's reads wait for, until the node is dropped; subscribes
/// again if the subscription ends while it lives.
async fn follow_announcements(
    inner: std::sync::Weak<Inner>,
    mut announced: async_nats::Subscriber,
) {
    loop {
        while let Some(msg) = announced.next().await {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            take_announcement(&inner, &msg.payload);
        }
        // The client resubscribes by itself after a reconnection; an end is unexpected.
        let client = match inner.upgrade() {
            Some(inner) => inner.client.clone(),
            None => return,
        };
        tracing::warn!(
            "the subscription to {ACKED_SUBJECT} ended: reads through this node may miss \
             writes acknowledged through another until it is back; subscribing again"
        );
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if inner.strong_count() == 0 {
                return;
            }
            match client.subscribe(ACKED_SUBJECT).await {
                Ok(s) => {
                    announced = s;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "subscribing to {ACKED_SUBJECT} again"),
            }
        }
    }
}

/// Takes one announcement into the sequences this node's reads wait for, if it is of this
/// node's stream.
fn take_announcement(inner: &Inner, payload: &[u8]) {
    let Some(a) = Announcement::decode(payload) else {
        // (debug: a node of another version during an upgrade would fill the log)
        tracing::debug!(
            bytes = payload.len(),
            "an announcement that does not decode"
        );
        return;
    };
    if a.stream != stream_tag(inner.stream_created_ns) {
        tracing::debug!(
            stream = a.stream,
            "an announcement of another stream (one deleted and created again)"
        );
        return;
    }
    inner.note_acked(a.what, a.seq);
}

impl Inner {
    /// Takes sequence `seq` of `what`, acknowledged to this node or announced by another, into
    /// the sequences this node's reads wait for.
    fn note_acked(&self, what: Announced, seq: u64) {
        let slot = match what {
            Announced::Venues => Some(&self.venue_seq),
            Announced::Health => Some(&self.health_seq),
            Announced::Scans(shard) => self.last_seq.get(shard as usize),
        };
        if let Some(slot) = slot {
            slot.fetch_max(seq, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Announcement;

    #[test]
    fn an_announcement_reads_back_and_a_wrong_length_is_refused() {
        let a = Announcement {
            what: super::Announced::Scans(3),
            seq: 1 << 40,
            stream: super::stream_tag(1_796_000_000_123_456_789),
        };
        assert_eq!(Announcement::decode(&a.encode()), Some(a));
        let venue = Announcement {
            what: super::Announced::Venues,
            seq: 7,
            stream: 1,
        };
        assert_eq!(Announcement::decode(&venue.encode()), Some(venue));
        for what in [
            super::Announced::Scans(0),
            super::Announced::Scans(7),
            super::Announced::Venues,
            super::Announced::Health,
        ] {
            assert_eq!(super::Announced::of_mark(what.mark()), what);
        }
        assert_eq!(Announcement::decode(&a.encode()[..19]), None);
        assert_eq!(Announcement::decode(&a.encode()[..12]), None);
        assert_eq!(Announcement::decode(&[0u8; 21]), None);
    }
}
