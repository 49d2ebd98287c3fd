//! Cluster mode: this HTTP node's replica of the stream, which holds the health domain.
//!
//! Cases, tiers, samples, results, doses, declarations, areas and notices need every scan (a
//! standing trace checks each arriving scan against the counted cases' exposure windows), so
//! every HTTP node follows the whole `CHECKIN` stream into its own engine and `checkin-health`:
//! venue registrations, scan batches and health commands ([`cluster::HEALTH_SUBJECT`]), one
//! message at a time, in stream order. The local store is a cache of the stream: at start it is
//! cut back to its last checkpoint and follows the stream from there, or is emptied and rebuilt
//! from the first message when there is none (`replica_checkpoint`, `main.rs`).
//!
//! A change to the health domain is not applied where it arrives. The node that takes the
//! request authenticates and authorizes it, reads its body, stamps it with its time and
//! publishes it as a [`HealthCommand`]; every node's follower applies it when it reaches it in
//! the stream, by running the route's own handler with the domain's clock pinned to the stamp
//! ([`CommandClock`]). Two nodes that applied the same stream therefore hold the same cases and
//! records, and a conflict between two nodes' requests is decided by stream order. The taking
//! node answers with the outcome its own follower computed, so a write is read back at once
//! through the node that took it.
//!
//! The audit entry of a change (a case registered or changed, a result entered) is derived from
//! its command, not written by the node that took it: the command is durable in the stream
//! before the change is acknowledged, and every node's follower records the entry (stamped with
//! the command's time, `who` its caller) into its store's `audit.log` when the handler's outcome
//! is a change (`handlers::audit_change`). So a change is audited exactly once in every node's
//! `GET /v1/audit` however the nodes die and replay: an HTTP node killed between publishing a
//! command and answering it leaves the change audited, a retry answered `200` or a `409` is
//! not a change and leaves no entry. Lookups, which change nothing, go to the audit stream
//! (`cluster::audit`) instead.
//!
//! A message this node cannot store for a reason of its own (a full disk, shutting down) is not
//! passed over: the follower stops before it and follows again from it ([`CommandDeferred`] for
//! a health command whose handler answered `503`), so a replica never goes on without a change
//! the other nodes made.
//!
//! Reads of the health domain (and the live venue feed, fed by the replica's engine) are
//! answered from the replica once it has caught up with the stream as it was at start; before
//! that they answer `503` with `Retry-After`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster::shard::SubmittedScans;
use cluster::wire::HealthCommand;
use engine::Clock as _;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Either, Full};
use hyper::header::{HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::access::{Principal, Role};
use crate::app::App;
use crate::body::{read_body, Req};
use crate::cluster_mode::Node;
use crate::handlers::Answer;
use crate::problem::{ApiError, Body};
use crate::routes::{self, Match, RouteId, RouteSpec};

/// How long the taking node waits for its follower to apply its command before answering `503`
/// (the command is in the stream by then and will be applied; its outcome can be read back).
const OUTCOME_WAIT: Duration = Duration::from_secs(30);
/// A command of this node not applied this long after it was sent was never stored.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Waiting commands past which old ones are looked for.
const PRUNE_AT: usize = 1024;
/// Longest a handler's answer to an applied command may take to collect.
const COLLECT_WAIT: Duration = Duration::from_secs(10);
/// Scan batches handed to the engine before the oldest must be stored.
const SCANS_IN_FLIGHT: usize = 8;
/// How long the stream may pause before the batches in flight are waited for.
const PAUSE: Duration = Duration::from_millis(2);
/// How long the follower waits before following again after an error.
const FOLLOW_RETRY: Duration = Duration::from_secs(1);
/// How long a quiet stream is waited on before the follower looks whether a checkpoint is due.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// How long a read of the health domain waits for this node's replica to apply a change
/// acknowledged through another node before answering `503` (the shards' reads wait as long).
const READ_WAIT: Duration = Duration::from_secs(5);

/// The health domain's clock in cluster mode: the system clock, except while the follower applies
/// a command, when it shows the command's stamp.
#[derive(Debug, Default)]
pub struct CommandClock {
    /// The pinned time; `i64::MIN` when not pinned.
    pinned: AtomicI64,
}

impl CommandClock {
    /// An unpinned clock.
    pub fn new() -> CommandClock {
        CommandClock {
            pinned: AtomicI64::new(i64::MIN),
        }
    }

    fn pin(&self, now: i64) {
        self.pinned.store(now, Ordering::SeqCst);
    }

    fn unpin(&self) {
        self.pinned.store(i64::MIN, Ordering::SeqCst);
    }
}

impl engine::Clock for CommandClock {
    fn now(&self) -> i64 {
        match self.pinned.load(Ordering::SeqCst) {
            i64::MIN => engine::SystemClock.now(),
            pinned => pinned,
        }
    }
}

/// What [`App::with_cluster`] needs to make this node a cluster node.
pub struct ClusterSetup {
    pub node: Node,
    /// The health domain's clock ([`health::HealthConfig::clock`]).
    pub clock: Arc<CommandClock>,
    /// The stream sequence the store holds (its checkpoint, `replica_checkpoint::resume`), or 0
    /// for an empty store.
    pub resumed_at: u64,
    /// Where and how often to snapshot the replica (`replica_snapshot`); `None`: never.
    pub snapshots: Option<SnapshotPolicy>,
    /// How long the replica may stay stopped at one message by a failure of its own before the
    /// server stops by itself ([`Stall`]); `None`: never.
    pub stall_exit: Option<Duration>,
}

/// Snapshots of the replica for seeding new nodes (`replica_snapshot`).
#[derive(Debug, Clone)]
pub struct SnapshotPolicy {
    /// `DATA/cluster-snapshots`.
    pub dir: std::path::PathBuf,
    /// Time between two snapshots; the first is taken with the first checkpoint.
    pub every: Duration,
}

/// What a taking node gets back from its follower: the handler's answer.
struct Outcome {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// The replica's progress and the requests waiting for their outcome.
pub(crate) struct Replica {
    clock: Arc<CommandClock>,
    /// Stream sequence of the last message applied.
    applied: AtomicU64,
    /// Woken whenever `applied` moves (reads waiting for a sequence, [`ready_to_read`]).
    applied_moved: tokio::sync::Notify,
    /// The stream's last sequence as the follower last heard it: the latest message received
    /// plus the messages pending after it ([`Replica::behind`]).
    stream_end: AtomicU64,
    /// Whether the follower has reached the stream's last sequence as it was at start.
    caught_up: AtomicBool,
    next_request: AtomicU64,
    /// This node's commands not applied yet, by request number, with when they were sent. An
    /// entry whose receiver is gone (the request timed out) stays, so the change is still
    /// counted in this node's metrics when it is applied; entries older than [`FORGET_AFTER`]
    /// (a publish that was never stored) are dropped.
    waiting: Mutex<HashMap<u64, (Instant, oneshot::Sender<Outcome>)>>,
    /// `--replica-stall-exit` ([`ClusterSetup::stall_exit`]).
    stall_exit: Option<Duration>,
}

impl Replica {
    /// A replica whose store holds the stream up to sequence `applied` (0 for an empty store).
    pub(crate) fn new(clock: Arc<CommandClock>, applied: u64) -> Replica {
        Replica {
            clock,
            applied: AtomicU64::new(applied),
            applied_moved: tokio::sync::Notify::new(),
            stream_end: AtomicU64::new(applied),
            caught_up: AtomicBool::new(false),
            next_request: AtomicU64::new(0),
            waiting: Mutex::new(HashMap::new()),
            stall_exit: None,
        }
    }

    /// The same, stopping the server when it stays stuck for `stall_exit` (`None`: never).
    pub(crate) fn with_stall_exit(mut self, stall_exit: Option<Duration>) -> Replica {
        self.stall_exit = stall_exit;
        self
    }

    /// How long the replica may stay stuck before the server stops by itself.
    pub(crate) fn stall_exit(&self) -> Option<Duration> {
        self.stall_exit
    }

    /// The time of the command being applied (the pinned clock), else the system's.
    pub(crate) fn command_time(&self) -> i64 {
        self.clock.now()
    }

    /// Stream sequence of the last message the replica applied.
    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Notes that the replica has applied the stream up to `seq`.
    fn set_applied(&self, seq: u64) {
        self.applied.store(seq, Ordering::Release);
        self.applied_moved.notify_waiters();
    }

    /// Waits until the replica has applied the stream up to `seq`, for at most `within`;
    /// whether it has.
    async fn wait_applied(&self, seq: u64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let moved = self.applied_moved.notified();
            tokio::pin!(moved);
            // Registered before the check: a move between the check and the wait still wakes.
            moved.as_mut().enable();
            if self.applied() >= seq {
                return true;
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return self.applied() >= seq;
            }
        }
    }

    /// Whether the replica has caught up with the stream as it was at start.
    pub(crate) fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Notes that the stream holds at least `seq` plus `pending` messages.
    fn note_stream_end(&self, seq: u64, pending: u64) {
        self.stream_end
            .fetch_max(seq.saturating_add(pending), Ordering::AcqRel);
    }

    /// How many of the stream's messages, as the follower last heard of them, the replica has
    /// not applied yet: how far this node's health domain is behind the cluster.
    pub(crate) fn behind(&self) -> u64 {
        self.stream_end
            .load(Ordering::Acquire)
            .saturating_sub(self.applied())
    }
}

/// Refuses a read of the health domain until the replica has caught up with the stream.
pub(crate) fn ready(replica: &Replica) -> Result<(), ApiError> {
    if replica.is_caught_up() {
        Ok(())
    } else {
        Err(ApiError::Unavailable(format!(
            "this node is still catching up with the cluster's stream (at sequence {})",
            replica.applied()
        )))
    }
}

/// Refuses a read of the health domain, as [`ready`] does, and otherwise waits (up to
/// [`READ_WAIT`], then `503`) until the replica has applied stream sequence `seq`: the last
/// health command acknowledged to any HTTP node that this node heard of
/// ([`Node::health_seq_to_read`]), so that a change answered through another node a moment ago
/// is read here too.
pub(crate) async fn ready_to_read(replica: &Replica, seq: u64) -> Result<(), ApiError> {
    ready(replica)?;
    if replica.wait_applied(seq, READ_WAIT).await {
        Ok(())
    } else {
        Err(ApiError::Unavailable(format!(
            "this node has not applied a change acknowledged through another node yet (at \
             sequence {} of {seq})",
            replica.applied()
        )))
    }
}

/// Starts the follower of the whole stream (a task that restarts itself after errors, and
/// stops the server when it stays stopped at one message by a failure of this node's own for
/// [`Replica::stall_exit`]).
pub(crate) fn follow(
    app: &App,
    node: &Node,
    replica: Arc<Replica>,
    snapshots: Option<SnapshotPolicy>,
) {
    let (app, node) = (app.clone(), node.clone());
    tokio::spawn(async move {
        let mut checkpoints = Checkpoints::new(replica.applied(), snapshots);
        let mut stall = Stall::default();
        loop {
            match follow_once(&app, &node, &replica, &mut checkpoints).await {
                Ok(()) => stall.progress(),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        applied = replica.applied(),
                        "stream follower stopped; following again in 1 s"
                    );
                    let stalled = stall.failed(replica.applied(), is_local(&*e), Instant::now());
                    if let (Some(limit), Some(stalled)) = (replica.stall_exit(), stalled) {
                        if stalled >= limit && !app.is_shutting_down() {
                            app.stop_for(format!(
                                "this node's replica has not got past stream sequence {} for \
                                 {} s ({e}); a restart reopens its stores and resumes from its \
                                 checkpoint",
                                replica.applied() + 1,
                                stalled.as_secs()
                            ));
                            return;
                        }
                    }
                }
            }
            if app.is_shutting_down() {
                return;
            }
            tokio::time::sleep(FOLLOW_RETRY).await;
        }
    });
}

/// Whether the follower stopped for a failure of this node's own (its store, its health
/// database), which following again may never mend, rather than of the cluster (NATS).
fn is_local(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    e.downcast_ref::<CommandDeferred>().is_some()
        || matches!(
            e.downcast_ref::<cluster::ClusterError>(),
            Some(cluster::ClusterError::Engine(_))
        )
}

/// How long the follower has been stopped at one message by failures of this node's own.
#[derive(Debug, Default)]
struct Stall {
    /// The applied sequence and when the first of the failures in a row at it happened.
    since: Option<(u64, Instant)>,
}

impl Stall {
    /// The follower ended without an error.
    fn progress(&mut self) {
        self.since = None;
    }

    /// The follower stopped with an error at `applied`: how long it has been stopped at that
    /// sequence by failures of its own, or `None` when this one is not its own (or the follower
    /// got further since the last).
    fn failed(&mut self, applied: u64, local: bool, now: Instant) -> Option<Duration> {
        if !local {
            self.since = None;
            return None;
        }
        match self.since {
            Some((at, since)) if at == applied => Some(now.duration_since(since)),
            _ => {
                self.since = Some((applied, now));
                Some(Duration::ZERO)
            }
        }
    }
}

/// Why the follower stopped (it follows again from the last applied message).
type FollowError = Box<dyn std::error::Error + Send + Sync>;

async fn follow_once(
    app: &App,
    node: &Node,
    replica: &Replica,
    checkpoints: &mut Checkpoints,
) -> Result<(), FollowError> {
    use async_nats::jetstream::consumer;
    let mut stream = node.jetstream().get_stream(cluster::STREAM).await?;
    let last = stream.info().await?.state.last_sequence;
    replica.note_stream_end(last, 0);
    let from = replica.applied() + 1;
    if !replica.is_caught_up() && replica.applied() >= last {
        mark_caught_up(replica);
    }
    let consumer: consumer::OrderedPullConsumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    // Scan batches are handed to the engine without waiting (it stores them in order), up to
    // SCANS_IN_FLIGHT at once, so decoding the next one overlaps storing this one; everything
    // handed over is stored before a venue registration or a command is applied, when the
    // stream pauses, and before `applied` moves past it.
    let mut in_flight: VecDeque<(u64, Option<SubmittedScans>)> = VecDeque::new();
    let mut seen = replica.applied();
    let mut throttle = Throttle::new();
    loop {
        if checkpoints.is_due(replica.applied()) {
            // Between two messages, with everything handed over stored: nothing is applied
            // while the checkpoint is taken.
            settle(node, replica, &mut in_flight, 0, last).await?;
            checkpoints.take(app, node, replica.applied()).await;
        }
        let next = if in_flight.is_empty() {
            match tokio::time::timeout(IDLE_CHECK, messages.next()).await {
                Ok(next) => next,
                // Quiet: look whether a checkpoint is due.
                Err(_) => continue,
            }
        } else {
            match tokio::time::timeout(PAUSE, messages.next()).await {
                Ok(next) => next,
                Err(_) => {
                    settle(node, replica, &mut in_flight, 0, last).await?;
                    continue;
                }
            }
        };
        let Some(msg) = next else { break };
        let msg = msg?;
        let (seq, pending) = {
            let info = msg.info()?;
            (info.stream_sequence, info.pending)
        };
        replica.note_stream_end(seq, pending);
        if seq <= seen {
            continue;
        }
        seen = seq;
        let subject = msg.subject.as_str();
        if cluster::is_scan_subject(subject) {
            throttle.before_batch(app, msg.payload.len()).await;
            in_flight.push_back((
                seq,
                cluster::shard::submit_scans(app.engine(), subject, &msg.payload),
            ));
            settle(node, replica, &mut in_flight, SCANS_IN_FLIGHT, last).await?;
            continue;
        }
        settle(node, replica, &mut in_flight, 0, last).await?;
        apply(app, node, replica, subject, &msg.payload).await?;
        note_applied(node, replica, seq, last);
    }
    settle(node, replica, &mut in_flight, 0, last).await?;
    Ok(())
}

/// How soon a snapshot that failed is tried again.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(60);

/// When the follower last took a checkpoint (`replica_checkpoint`), and of which sequence;
/// when it last took a snapshot (`replica_snapshot`).
struct Checkpoints {
    taken_at: Instant,
    applied: u64,
    snapshots: Option<SnapshotPolicy>,
    /// `None` until the first snapshot of this run.
    snapshot_at: Option<Instant>,
}

impl Checkpoints {
    fn new(applied: u64, snapshots: Option<SnapshotPolicy>) -> Checkpoints {
        Checkpoints {
            taken_at: Instant::now(),
            applied,
            snapshots,
            snapshot_at: None,
        }
    }

    /// The snapshot directory, when a snapshot is due with the next checkpoint.
    fn snapshot_due(&self) -> Option<std::path::PathBuf> {
        let policy = self.snapshots.as_ref()?;
        match self.snapshot_at {
            Some(at) if at.elapsed() < policy.every => None,
            _ => Some(policy.dir.clone()),
        }
    }

    fn is_due(&self, applied: u64) -> bool {
        applied > self.applied
            && self.taken_at.elapsed() >= crate::replica_checkpoint::CHECKPOINT_EVERY
    }

    /// Takes a checkpoint of sequence `applied`, and a snapshot of it when one is due; a failure
    /// is logged and retried next time.
    async fn take(&mut self, app: &App, node: &Node, applied: u64) {
        let (app, created) = (app.clone(), node.stream_created_ns());
        let snapshot_into = self.snapshot_due();
        let started = Instant::now();
        let taken = tokio::task::spawn_blocking(move || {
            let cp = crate::replica_checkpoint::take(app.engine(), app.health(), created, applied)?;
            // Still with nothing applied since the checkpoint.
            let snapshot = snapshot_into.map(|dir| {
                let store = &app.engine().config().data_dir;
                let at = Instant::now();
                crate::replica_snapshot::take(store, &dir, &cp).map(|path| (path, at.elapsed()))
            });
            Ok::<_, crate::replica_checkpoint::CheckpointError>(snapshot)
        })
        .await;
        self.taken_at = Instant::now();
        match taken {
            Ok(Ok(snapshot)) => {
                self.applied = applied;
                tracing::debug!(
                    applied,
                    took_ms = started.elapsed().as_millis() as u64,
                    "replica checkpoint written"
                );
                match snapshot {
                    Some(Ok((path, took))) => {
                        self.snapshot_at = Some(Instant::now());
                        tracing::info!(
                            applied,
                            path = %path.display(),
                            took_ms = took.as_millis() as u64,
                            "replica snapshot written"
                        );
                    }
                    Some(Err(e)) => {
                        // Tried again a minute later (or at the interval, if that is shorter).
                        self.snapshot_at = self.snapshots.as_ref().and_then(|p| {
                            Instant::now()
                                .checked_sub(p.every)
                                .map(|t| t + SNAPSHOT_RETRY.min(p.every))
                        });
                        tracing::warn!(error = %e, applied, "replica snapshot not written");
                    }
                    None => {}
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, applied, "replica checkpoint not written"),
            Err(e) => tracing::warn!(error = %e, "replica checkpoint task failed"),
        }
    }
}

/// While this node is taking scans, its replica applies at most this many bytes of scan batches
/// per [`THROTTLE_WINDOW`]: acknowledging scans comes first, and the replica catches up after a
/// burst. 512 KiB a 100 ms is ~100 k scans/s at ~50 bytes a scan, twice the stream rate of a
/// national peak (50 k scans/s), so a node under steady national load still keeps up.
const BYTES_PER_WINDOW_DURING_INTAKE: usize = 512 << 10;
const THROTTLE_WINDOW: Duration = Duration::from_millis(100);

/// Counts the scan bytes of a window; sleeps out the window when the node is taking scans and
/// the window's share is used.
struct Throttle {
    window_start: Instant,
    bytes: usize,
}

impl Throttle {
    fn new() -> Throttle {
        Throttle {
            window_start: Instant::now(),
            bytes: 0,
        }
    }

    async fn before_batch(&mut self, app: &App, bytes: usize) {
        let elapsed = self.window_start.elapsed();
        if elapsed >= THROTTLE_WINDOW {
            self.window_start = Instant::now();
            self.bytes = 0;
        } else if self.bytes >= BYTES_PER_WINDOW_DURING_INTAKE
            && app.inner.scans_in_flight.load(Ordering::Relaxed) > 0
        {
            tokio::time::sleep(THROTTLE_WINDOW - elapsed).await;
            self.window_start = Instant::now();
            self.bytes = 0;
        }
        self.bytes += bytes;
    }
}

/// Waits for handed-over scan batches, oldest first, until at most `keep` are in flight.
async fn settle(
    node: &Node,
    replica: &Replica,
    in_flight: &mut VecDeque<(u64, Option<SubmittedScans>)>,
    keep: usize,
    last: u64,
) -> cluster::Result<()> {
    while in_flight.len() > keep {
        let Some((seq, stored)) = in_flight.pop_front() else {
            break;
        };
        if let Some(stored) = stored {
            stored.wait().await?;
        }
        note_applied(node, replica, seq, last);
    }
    Ok(())
}

fn note_applied(node: &Node, replica: &Replica, seq: u64, last: u64) {
    replica.set_applied(seq);
    node.note_replica_applied(seq);
    if seq >= last && !replica.is_caught_up() {
        mark_caught_up(replica);
    }
}

fn mark_caught_up(replica: &Replica) {
    replica.caught_up.store(true, Ordering::Release);
    tracing::info!(
        applied = replica.applied(),
        "caught up with the cluster's stream: serving the health domain"
    );
}

/// Applies a venue registration or a health command (scan batches go through
/// [`cluster::shard::submit_scans`]).
async fn apply(
    app: &App,
    node: &Node,
    replica: &Replica,
    subject: &str,
    payload: &[u8],
) -> Result<(), FollowError> {
    if subject == cluster::VENUES_SUBJECT {
        match cluster::shard::apply_venues(app.engine(), payload).await {
            Err(e @ cluster::ClusterError::Decode { .. }) => {
                // Following again would stop at it forever.
                tracing::error!(error = %e, "undecodable venue batch in the stream; skipped");
                Ok(())
            }
            other => Ok(other?),
        }
    } else if subject == cluster::HEALTH_SUBJECT {
        let command: HealthCommand = match postcard::from_bytes(payload) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "undecodable health command in the stream; skipped");
                return Ok(());
            }
        };
        apply_command(app, node.node_id(), replica, command).await?;
        Ok(())
    } else {
        tracing::warn!(
            subject,
            "a message on a subject this node does not know; skipped"
        );
        Ok(())
    }
}

/// A health command this node's replica could not apply for a reason of its own (its handler
/// answered `503`, or the day's purge before it failed): the follower must not move past it.
#[derive(Debug, thiserror::Error)]
#[error("the health command {method} {target} was not applied on this node's replica ({why}); it is applied again")]
pub(crate) struct CommandDeferred {
    method: String,
    target: String,
    why: String,
}

impl CommandDeferred {
    /// `command` deferred for `why`, counted in the metric.
    fn counted(app: &App, command: HealthCommand, why: String) -> CommandDeferred {
        app.inner.metrics.note_replica_command_deferred();
        CommandDeferred {
            method: command.method,
            target: command.target,
            why,
        }
    }
}

/// Runs a command's handler with the clock pinned to its stamp, and hands the outcome to the
/// request waiting for it on this node (`node_id`), if any.
///
/// A `503` outcome is not final: every `503` a handler can give (the health database or the
/// store cannot write right now, the server is shutting down) is this node's own and passes,
/// while the other nodes applied the command. Passing over it would leave this replica without
/// the change for good, so the command is [`CommandDeferred`]: the follower stops before it and
/// follows again from it (the handlers are safe to run again: a registration is idempotent by
/// id, and an entry only counts as a change the first time). Its waiter keeps waiting.
async fn apply_command(
    app: &App,
    node_id: &str,
    replica: &Replica,
    command: HealthCommand,
) -> Result<(), CommandDeferred> {
    let ours = command.origin == node_id;
    let taken_here = ours && replica.waiting.lock().contains_key(&command.request);
    replica.clock.pin(command.now);
    // Expired records go at the first command of each day, on every node at the same point of
    // the stream (not when a node restarts, which `purge_at_open: false` leaves out).
    // A purge that fails defers the command: applied without it, this node would purge at a
    // later command than the others.
    if app.health().purge_is_due() {
        let purging = app.clone();
        let failed = match tokio::task::spawn_blocking(move || {
            purging.health().purge_expired_on_a_new_day()
        })
        .await
        {
            Ok(Ok(n)) => {
                tracing::info!(records = n, "purged expired samples and declarations");
                None
            }
            Ok(Err(e)) => Some(format!("purging expired records failed: {e}")),
            Err(e) => Some(format!("the purge task failed: {e}")),
        };
        if let Some(why) = failed {
            replica.clock.unpin();
            return Err(CommandDeferred::counted(app, command, why));
        }
    }
    let resp = run_command(app, &command, taken_here).await;
    let outcome = collect(resp).await;
    replica.clock.unpin();
    if outcome.status == StatusCode::SERVICE_UNAVAILABLE {
        return Err(CommandDeferred::counted(
            app,
            command,
            "its handler answered 503".into(),
        ));
    }
    if outcome.status.is_server_error() {
        // Not this node's state: the command itself cannot be applied (no such route, an
        // answer that could not be read), on any node.
        tracing::warn!(
            status = outcome.status.as_u16(),
            target = %command.target,
            "a health command failed on this node's replica"
        );
    }
    if ours {
        if let Some((_, tx)) = replica.waiting.lock().remove(&command.request) {
            let _ = tx.send(outcome);
        }
    }
    Ok(())
}

async fn run_command(app: &App, command: &HealthCommand, taken_here: bool) -> Response<Body> {
    let path = command.target.split('?').next().unwrap_or_default();
    let (spec, param) = match routes::find(&command.method, path) {
        Match::Found(spec, param) => (spec, param),
        _ => {
            return ApiError::Internal(format!(
                "the stream holds a command for no route: {} {}",
                command.method, command.target
            ))
            .into_response()
        }
    };
    let mut builder = Request::builder()
        .method(command.method.as_str())
        .uri(command.target.as_str());
    for (name, value) in &command.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            builder = builder.header(n, v);
        }
    }
    let req = match builder.body(Either::Right(Full::new(Bytes::from(command.body.clone())))) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::Internal(format!("a command's request does not build: {e}"))
                .into_response()
        }
    };
    let principal = Arc::new(Principal {
        name: Arc::from(command.principal.as_str()),
        role: command
            .role
            .as_deref()
            .and_then(|r| Role::ALL.into_iter().find(|x| x.as_str() == r)),
        venues: command.venues.iter().cloned().collect(),
    });
    app.dispatch(spec, param, principal, req, taken_here)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn collect(resp: Response<Body>) -> Outcome {
    let (parts, body) = resp.into_parts();
    let body = match tokio::time::timeout(COLLECT_WAIT, body.collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        _ => {
            return Outcome {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers: hyper::HeaderMap::new(),
                body: Bytes::from_static(b"the answer to an applied command could not be read"),
            }
        }
    };
    Outcome {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A change to the health domain in cluster mode: published as a command, answered with the
/// outcome this node's follower computes when it applies it.
pub(crate) async fn write(
    app: &App,
    node: &Node,
    replica: &Replica,
    spec: &'static RouteSpec,
    principal: &Principal,
    req: Req,
) -> Answer {
    // What can be refused without the domain's state is refused here, before it reaches the
    // log: a media type the route does not take, a JSON body that does not parse.
    let json = if spec.id == RouteId::RecordVaccinations {
        crate::dose_decode::dose_format(req.headers())? == crate::dose_decode::DoseFormat::Json
    } else {
        crate::body::body_format(req.headers(), false)?;
        true
    };
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, app.body_timeouts()).await?;
    if json {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            return Err(ApiError::BadRequest(format!(
                "the body is not a valid request: {e}"
            )));
        }
    }
    if body.len() > cluster::MAX_COMMAND_BODY {
        return Err(ApiError::TooLarge(format!(
            "in cluster mode a {} {} body is at most {} MiB (it goes into the replicated log as \
             one message); split the request",
            spec.method,
            spec.pattern,
            cluster::MAX_COMMAND_BODY >> 20
        )));
    }
    let headers = [
        CONTENT_TYPE,
        CONTENT_ENCODING,
        HeaderName::from_static(crate::records::IDEMPOTENCY_KEY),
    ]
    .iter()
    .filter_map(|h| {
        parts
            .headers
            .get(h)
            .map(|v| (h.as_str().to_string(), v.as_bytes().to_vec()))
    })
    .collect();
    let request = replica.next_request.fetch_add(1, Ordering::Relaxed);
    let command = HealthCommand {
        origin: node.node_id().to_string(),
        request,
        now: engine::SystemClock.now(),
        method: parts.method.as_str().to_string(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string()),
        principal: principal.name.to_string(),
        role: principal.role.map(|r| r.as_str().to_string()),
        venues: principal.venues.iter().cloned().collect(),
        headers,
        body: body.to_vec(),
    };
    let (tx, rx) = oneshot::channel();
    {
        let mut waiting = replica.waiting.lock();
        let now = Instant::now();
        if waiting.len() >= PRUNE_AT {
            waiting.retain(|_, (sent, _)| now.duration_since(*sent) < FORGET_AFTER);
        }
        waiting.insert(request, (now, tx));
    }
    if let Err(e) = node.publish_health(&command).await {
        // Not acknowledged: it may still have been stored, and is then applied (and audited by
        // every node that applies it).
        return Err(ApiError::Unavailable(format!(
            "the change could not be written to the cluster's log: {e}"
        )));
    }
    let outcome = match tokio::time::timeout(OUTCOME_WAIT, rx).await {
        Ok(Ok(o)) => o,
        _ => {
            return Err(ApiError::Unavailable(
                "the change is in the cluster's log but this node has not applied it yet; \
                 read it back shortly"
                    .into(),
            ))
        }
    };
    let mut resp = Response::new(Either::Left(Full::new(outcome.body)));
    *resp.status_mut() = outcome.status;
    *resp.headers_mut() = outcome.headers;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_domain_and_readyz_answer_503_until_the_replica_has_caught_up() {
        // /readyz is refused exactly as the health domain's reads are.
        assert_eq!(
            RouteId::Readyz.cluster_path(),
            routes::ClusterPath::HealthRead
        );
        // So is the audit log, whose change entries the replica derives.
        assert_eq!(
            RouteId::Audit.cluster_path(),
            routes::ClusterPath::HealthRead
        );
        assert_eq!(RouteId::Healthz.cluster_path(), routes::ClusterPath::Node);
        let replica = Replica::new(Arc::new(CommandClock::new()), 0);
        replica.set_applied(17);
        let refused = ready(&replica).expect_err("not caught up yet");
        let resp = refused.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key(hyper::header::RETRY_AFTER));
        mark_caught_up(&replica);
        assert!(ready(&replica).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_waits_until_the_replica_has_applied_a_change_acknowledged_elsewhere() {
        let replica = Arc::new(Replica::new(Arc::new(CommandClock::new()), 0));
        replica.set_applied(40);
        mark_caught_up(&replica);
        // Applied already: no wait.
        assert!(ready_to_read(&replica, 40).await.is_ok());
        // Sequence 42 was acknowledged through another node: the read answers once the
        // follower applies it, not before.
        let follower = Arc::clone(&replica);
        let apply = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            follower.set_applied(41);
            tokio::time::sleep(Duration::from_millis(100)).await;
            follower.set_applied(42);
        });
        let started = Instant::now();
        assert!(ready_to_read(&replica, 42).await.is_ok());
        assert!(replica.applied() >= 42, "answered at {}", replica.applied());
        assert!(started.elapsed() >= Duration::from_millis(250));
        apply.await.unwrap();
        // Never applied: `503` with `Retry-After` after the wait.
        assert!(!replica.wait_applied(43, Duration::from_millis(50)).await);
        let started = Instant::now();
        let resp = ready_to_read(&replica, 43)
            .await
            .expect_err("sequence 43 is not applied")
            .into_response();
        assert!(started.elapsed() >= READ_WAIT);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key(hyper::header::RETRY_AFTER));
    }

    #[test]
    fn behind_is_the_stream_end_last_heard_of_minus_the_applied_sequence() {
        // Resumed from a checkpoint at 40: nothing heard of beyond it yet.
        let replica = Replica::new(Arc::new(CommandClock::new()), 40);
        assert_eq!(replica.behind(), 0);
        // The stream's last sequence at the follower's start.
        replica.note_stream_end(100, 0);
        assert_eq!(replica.behind(), 60);
        // Message 41 arrives with 80 more after it (more was stored meanwhile).
        replica.note_stream_end(41, 80);
        note_applied_seq(&replica, 41);
        assert_eq!(replica.behind(), 80);
        // An older view (a re-created consumer delivering again) does not lower the end.
        replica.note_stream_end(41, 3);
        assert_eq!(replica.behind(), 80);
        note_applied_seq(&replica, 121);
        assert_eq!(replica.behind(), 0);
    }

    fn note_applied_seq(replica: &Replica, seq: u64) {
        replica.applied.store(seq, Ordering::Release);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_whose_audit_entry_cannot_be_written_stops_the_server_after_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(dir.path());
        let replica = Arc::new(
            Replica::new(Arc::new(CommandClock::new()), 0)
                .with_stall_exit(Some(Duration::from_secs(2))),
        );
        assert!(app.inner.replica.set(Arc::clone(&replica)).is_ok());
        // The store stops: the case is registered in the health database, its audit entry can
        // never be written. Applied again, the command would find the case and write no entry,
        // so the replica keeps trying, then stops the server rather than go on without it.
        app.engine().shutdown().unwrap();
        let started = Instant::now();
        let deferred = apply_command(&app, "n1", &replica, register_case("c-1", "p1")).await;
        assert!(
            deferred.is_err(),
            "a change without its audit entry is no outcome"
        );
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "gave up at once"
        );
        let why = app.stop_reason().expect("the server is asked to stop");
        assert!(why.contains("audit entry of an applied change"), "{why}");
        assert!(app.health().case("c-1").is_some());
    }

    #[test]
    fn a_stall_is_failures_of_this_node_in_a_row_at_one_sequence() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut stall = Stall::default();
        assert_eq!(stall.failed(10, true, at(0)), Some(Duration::ZERO));
        assert_eq!(
            stall.failed(10, true, at(30)),
            Some(Duration::from_secs(30))
        );
        // Got further: a new stall starts at the new sequence.
        assert_eq!(stall.failed(11, true, at(31)), Some(Duration::ZERO));
        assert_eq!(
            stall.failed(11, true, at(45)),
            Some(Duration::from_secs(14))
        );
        // A failure of the cluster (NATS) is no stall of this node's, and ends the one in a row.
        assert_eq!(stall.failed(11, false, at(46)), None);
        assert_eq!(stall.failed(11, true, at(50)), Some(Duration::ZERO));
        stall.progress();
        assert_eq!(stall.failed(11, true, at(90)), Some(Duration::ZERO));
    }

    #[test]
    fn a_deferred_command_and_a_store_error_are_this_nodes_own_failures() {
        let deferred: FollowError = Box::new(CommandDeferred {
            method: "POST".into(),
            target: "/v1/cases".into(),
            why: "its handler answered 503".into(),
        });
        assert!(is_local(&*deferred));
        let store: FollowError = Box::new(cluster::ClusterError::Engine(engine::Error::NoSpace(
            "venues.log".into(),
        )));
        assert!(is_local(&*store));
        let nats: FollowError = Box::new(cluster::ClusterError::JetStream("timed out".into()));
        assert!(!is_local(&*nats));
    }

    /// An App over a fresh store (single-node, open mode), as a replica's follower drives it.
    fn app_in(dir: &std::path::Path) -> App {
        let health = crate::replica_checkpoint::tests::open(dir);
        let engine = health.engine().clone();
        App::new(
            engine,
            health,
            crate::access::Access::Open,
            crate::app::ServerOptions::default(),
        )
        .expect("metrics register")
    }

    /// `POST /v1/cases` of `id` for `person` as node `n1` published it, request 1.
    fn register_case(id: &str, person: &str) -> HealthCommand {
        let now = crate::replica_checkpoint::tests::T0;
        HealthCommand {
            origin: "n1".into(),
            request: 1,
            now,
            method: "POST".into(),
            target: "/v1/cases".into(),
            principal: "open".into(),
            role: None,
            venues: Vec::new(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: serde_json::json!({"id": id, "person": person, "sampled_at": now - 3600})
                .to_string()
                .into_bytes(),
        }
    }

    fn waiting_for(replica: &Replica, request: u64) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        replica.waiting.lock().insert(request, (Instant::now(), tx));
        rx
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_applied_answers_its_waiter_once_and_a_replay_is_not_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(dir.path());
        let replica = Replica::new(Arc::new(CommandClock::new()), 0);
        let mut rx = waiting_for(&replica, 1);
        // Another node's command with the same number is not this waiter's.
        let mut theirs = register_case("c-0", "p0");
        theirs.origin = "n2".into();
        apply_command(&app, "n1", &replica, theirs).await.unwrap();
        assert!(rx.try_recv().is_err(), "answered by another node's command");

        apply_command(&app, "n1", &replica, register_case("c-1", "p1"))
            .await
            .unwrap();
        assert_eq!(rx.try_recv().unwrap().status, StatusCode::CREATED);
        assert!(replica.waiting.lock().is_empty());
        // Applied again (a follower that restarts before its checkpoint): the same case, no
        // change, nobody waiting.
        apply_command(&app, "n1", &replica, register_case("c-1", "p1"))
            .await
            .unwrap();
        assert_eq!(app.health().cases(None, None).len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_refused_with_503_is_deferred_not_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(dir.path());
        let replica = Replica::new(Arc::new(CommandClock::new()), 0);
        let mut rx = waiting_for(&replica, 1);
        // The store stops: the change's audit entry cannot be written, and the handler answers
        // 503.
        app.engine().shutdown().unwrap();
        let deferred = apply_command(&app, "n1", &replica, register_case("c-1", "p1"))
            .await
            .expect_err("a 503 is not an outcome to move past");
        assert!(
            deferred.to_string().contains("POST /v1/cases"),
            "{deferred}"
        );
        // Its waiter still waits for the command's real outcome (and was not told the 503).
        assert!(rx.try_recv().is_err());
        assert!(replica.waiting.lock().contains_key(&1));
        let metrics = app
            .inner
            .metrics
            .render(&engine::Stats::default(), &health::HealthStats::default())
            .unwrap();
        assert!(
            metrics.contains("checkin_cluster_replica_commands_deferred_total 1"),
            "{metrics}"
        );
    }
}
