//! Cluster mode (`--cluster`, contract section 14, docs/cluster.md): the routes whose data lives
//! in the shards. Scans are validated here as in single-node mode, then published to JetStream
//! (the answer waits for every publish acknowledgement); visits, occupancy and traces are asked
//! of the shards (`cluster::Node`). Venues are registered here and published; every HTTP node
//! follows the whole stream (`crate::cluster_replica`), so all of them validate alike and each
//! holds a replica of the health domain. Audit entries go to the cluster's audit stream
//! (`cluster::audit`) instead of the node's `audit.log`.

use std::sync::Arc;

use bytes::Bytes;
use engine::{
    is_valid_person_id, is_valid_venue_id, Action, AuditEntry, Engine, IngestOutcome, RejectReason,
    Rejection, ScanItem, TraceRequest,
};
use hyper::StatusCode;
use serde::Serialize;

use crate::app::App;
use crate::handlers::{engine_err, json, raw, Answer};
use crate::problem::ApiError;

pub use cluster::Node;

/// The contract's clock-skew allowance for scans from the future.
const FUTURE_SKEW_S: i64 = 300;

/// Connects an HTTP node to the cluster, whose layout must be `layout` ([`cluster::Layout`]).
pub async fn connect(urls: &str, layout: cluster::Layout) -> Result<Node, cluster::ClusterError> {
    Node::connect(urls, layout).await
}

/// Sends every audit entry of this node to the cluster's audit stream (the engine's local
/// `audit.log` gets none), so `GET /v1/audit` on any node shows every node's entries.
pub(crate) fn forward_audit(node: &Node, engine: &Engine) {
    struct ToStream(cluster::audit::AuditPublisher);
    impl engine::AuditForward for ToStream {
        fn submit(&self, entry: AuditEntry, done: engine::AuditDone) {
            self.0.submit(entry.into(), move |r| {
                done(r.map_err(|e| engine::Error::Forward(e.to_string())))
            });
        }
    }
    let publisher = cluster::audit::AuditPublisher::start(node.clone());
    engine.forward_audit(Arc::new(ToStream(publisher)));
}

/// Store counts over every shard (`GET /v1/stats` in cluster mode).
pub(crate) async fn shard_totals(node: &Node) -> Result<cluster::node::ShardTotals, ApiError> {
    node.stats().await.map_err(cluster_err)
}

/// `GET /v1/audit` in cluster mode: every node's lookups, from the audit stream, and the changes
/// this node's replica derived from the stream's commands into its store's `audit.log` (the same
/// on every node), by time.
pub(crate) async fn audit_since(
    app: &App,
    node: &Node,
    since: i64,
) -> Result<Vec<AuditEntry>, ApiError> {
    let engine = app.engine().clone();
    let (lookups, changes) = tokio::join!(
        node.audit_since(since),
        crate::handlers::blocking(move || engine.audit_since(since))
    );
    // The two sources are disjoint by construction: the stream's entries of a change route
    // (published there by HTTP nodes before 2026-12-02) are left out, the replica derives them.
    let change_patterns: Vec<&str> = crate::routes::ROUTES
        .iter()
        .filter(|r| r.id.cluster_path() == crate::routes::ClusterPath::HealthWrite)
        .map(|r| r.pattern)
        .collect();
    let mut entries: Vec<AuditEntry> = lookups
        .map_err(cluster_err)?
        .into_iter()
        .filter(|e| !change_patterns.contains(&e.action.as_str()))
        .map(Into::into)
        .collect();
    entries.extend(changes?.map_err(engine_err)?);
    entries.sort_by_key(|e| e.ts); // stable: each source keeps its own order within a second
    Ok(entries)
}

fn cluster_err(e: cluster::ClusterError) -> ApiError {
    match e {
        cluster::ClusterError::Engine(e) => engine_err(e),
        other => ApiError::Unavailable(other.to_string()),
    }
}

/// How long a scan batch naming a venue this node does not know waits for the node's venue
/// follower to reach the stream's latest venue registration before refusing it.
const VENUE_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// Validates as `Engine::submit` does (same reasons, same order), publishes the accepted scans
/// and answers once JetStream acknowledged them all.
pub(crate) async fn submit(
    app: &App,
    node: &Node,
    items: Vec<ScanItem>,
) -> Result<IngestOutcome, ApiError> {
    /// Counts the request in `scans_in_flight` until it is answered.
    struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    app.inner
        .scans_in_flight
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _in_flight = InFlight(&app.inner.scans_in_flight);
    let engine = app.engine();
    let retention_s = i64::from(engine.config().retention_days) * 86_400;
    let mut now = engine.now();
    // One venue lookup per scan: each is a hash probe and a compare that miss the cache, and
    // at full intake they were a sixth of an HTTP node's CPU when done twice.
    let mut verdicts: Vec<Result<(), RejectReason>> = items
        .iter()
        .map(|i| check(engine, i, now, now - retention_s))
        .collect();
    // A venue registered through another node is in the stream before that node answered; make
    // sure this node's registry has followed it before calling it unknown.
    if verdicts.contains(&Err(RejectReason::UnknownVenue)) {
        match node.wait_latest_venues_applied(VENUE_CATCH_UP).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ApiError::Unavailable(
                    "the venue registry is catching up with the cluster".into(),
                ))
            }
            Err(e) => return Err(cluster_err(e)),
        }
        // One clock for the whole batch, as on the single server: every scan checked again.
        now = engine.now();
        for (verdict, item) in verdicts.iter_mut().zip(&items) {
            *verdict = check(engine, item, now, now - retention_s);
        }
    }
    let mut outcome = IngestOutcome::default();
    let mut accepted = Vec::with_capacity(items.len());
    for (index, (item, verdict)) in items.into_iter().zip(verdicts).enumerate() {
        match verdict.and(item) {
            Ok(s) => {
                let out = s.action == Action::Out;
                if out {
                    outcome.accepted_out += 1;
                } else {
                    outcome.accepted_in += 1;
                }
                accepted.push(cluster::wire::WireScan {
                    person: s.person,
                    venue: s.venue,
                    ts: s.ts.unwrap_or(now),
                    out,
                });
            }
            Err(reason) => outcome.rejected.push(Rejection { index, reason }),
        }
    }
    if !accepted.is_empty() {
        node.publish_scans(accepted).await.map_err(cluster_err)?;
    }
    Ok(outcome)
}

/// Why a decoded scan is refused, if it is (the single server's rules, [`engine`]'s writer).
fn check(engine: &Engine, item: &ScanItem, now: i64, oldest: i64) -> Result<(), RejectReason> {
    let s = item.as_ref().map_err(|r| *r)?;
    if !is_valid_person_id(&s.person) {
        return Err(RejectReason::InvalidPerson);
    }
    if !is_valid_venue_id(&s.venue) {
        return Err(RejectReason::InvalidVenue);
    }
    if engine.venue_key(&s.venue).is_none() {
        return Err(RejectReason::UnknownVenue);
    }
    let ts = s.ts.unwrap_or(now);
    if ts < oldest {
        return Err(RejectReason::TooOld);
    }
    if ts > now + FUTURE_SKEW_S {
        return Err(RejectReason::InFuture);
    }
    if u32::try_from(ts).is_err() {
        return Err(RejectReason::InvalidTs);
    }
    Ok(())
}

/// Validates venues, publishes them for the shards and every HTTP node's replica, and answers
/// once JetStream acknowledged them. This node registers them the way every node does, when its
/// replica applies the message: registered here first, a venue whose publish then failed would
/// stay in this node's registry alone (its scans acknowledged here, refused by every shard), and
/// one that succeeded would take effect here ahead of its place in the stream. The answer waits
/// (up to [`VENUE_CATCH_UP`]) until the replica has applied it, so a read through this node right
/// after it finds the venue as registered; a read that does not find a venue waits the same way
/// ([`known_venue`]).
pub(crate) async fn register_venues(
    node: &Node,
    specs: Vec<engine::VenueSpec>,
) -> Result<usize, ApiError> {
    Engine::validate_venues(&specs).map_err(engine_err)?;
    node.publish_venues(&specs).await.map_err(cluster_err)?;
    // The registration is durable: a replica still catching up registers it later.
    let _ = node.wait_latest_venues_applied(VENUE_CATCH_UP).await;
    Ok(specs.len())
}

/// Whether `venue` is registered, waiting (up to [`VENUE_CATCH_UP`]) for this node's registry to
/// apply the stream's latest venue registration before saying it is not: a venue registered
/// through another node, or while this node's replica replays the stream, is in the stream
/// before that node answered.
pub(crate) async fn known_venue(app: &App, node: &Node, venue: &str) -> Result<bool, ApiError> {
    if app.engine().venue_key(venue).is_some() {
        return Ok(true);
    }
    match node.wait_latest_venues_applied(VENUE_CATCH_UP).await {
        Ok(true) => Ok(app.engine().venue_key(venue).is_some()),
        Ok(false) => Err(ApiError::Unavailable(
            "the venue registry is catching up with the cluster".into(),
        )),
        Err(e) => Err(cluster_err(e)),
    }
}

async fn audit(engine: &Engine, entry: AuditEntry) -> Result<(), ApiError> {
    crate::handlers::audit_outcome(|done| engine.audit_submit(entry, done))
        .stored()
        .await
}

#[derive(Serialize)]
struct VisitOut<'a> {
    venue: &'a str,
    start: i64,
    end: i64,
}

#[derive(Serialize)]
struct PersonVisitsOut<'a> {
    person: &'a str,
    visits: Vec<VisitOut<'a>>,
}

/// `GET /v1/persons/{id}/visits` from the person's shard.
pub(crate) async fn person_visits(
    app: &App,
    node: &Node,
    person: &str,
    from: i64,
    to: i64,
    entry: AuditEntry,
) -> Answer {
    let (audited, visits) = tokio::join!(audit(app.engine(), entry), node.visits(person, from, to));
    audited?;
    let visits = visits
        .map_err(cluster_err)?
        .ok_or_else(|| ApiError::NotFound(format!("no scans of person '{person}'")))?;
    json(
        StatusCode::OK,
        &PersonVisitsOut {
            person,
            visits: visits
                .iter()
                .map(|v| VisitOut {
                    venue: &v.venue,
                    start: v.start,
                    end: v.end,
                })
                .collect(),
        },
    )
}

/// `POST /v1/trace` by fan-out. The case's visits come from this node's replica when it holds
/// every scan a read of the case's shard would see ([`replica_answers_for_shard`]: then the
/// replica's engine answers them as the shard would, with the same scans and the same visit
/// rule), else from the shard; the overlap rounds always go to every shard.
pub(crate) async fn trace(
    app: &App,
    node: &Node,
    request: TraceRequest,
    entry: AuditEntry,
) -> Answer {
    let started = std::time::Instant::now();
    let local_case_visits = app
        .inner
        .replica
        .get()
        .filter(|replica| {
            replica_answers_for_shard(
                replica.is_caught_up(),
                replica.behind(),
                replica.applied(),
                node.seq_to_read(&request.person),
            )
        })
        .map(|_| {
            app.engine()
                .visits(&request.person, request.from, request.to)
                .map(cluster::shard::wire_visits)
        });
    let traced = async {
        match local_case_visits {
            Some(case_visits) => node.trace_from(&request, case_visits).await,
            None => node.trace(&request).await,
        }
    };
    let (audited, result) = tokio::join!(audit(app.engine(), entry), traced);
    audited?;
    let result = result
        .map_err(cluster_err)?
        .ok_or_else(|| ApiError::NotFound(format!("no scans of person '{}'", request.person)))?;
    app.inner
        .metrics
        .observe_trace(request.depth, started.elapsed());
    Ok(raw(
        StatusCode::OK,
        "application/json",
        Bytes::from(crate::trace_body::trace_body(&result)),
    ))
}

/// Whether this node's replica may answer a read in place of a shard: it has caught up with the
/// stream since the node started, no message it has heard of is left to apply (so it is not
/// rebuilding, and not held back behind a burst of scans through the other node), and it has
/// applied this node's latest publish to the shard. `seq_to_read` alone is not enough: it counts
/// only this node's own publishes, so it is 0 on a node that has not written to the shard since
/// its start, while its replica may still be replaying the stream.
fn replica_answers_for_shard(caught_up: bool, behind: u64, applied: u64, seq_to_read: u64) -> bool {
    caught_up && behind == 0 && applied >= seq_to_read
}

/// Persons present at a venue, summed over shards (a registered venue no shard has seen yet is 0).
pub(crate) async fn occupancy(app: &App, node: &Node, venue: &str) -> Result<u32, ApiError> {
    if !known_venue(app, node, venue).await? {
        return Err(ApiError::NotFound(format!("unknown venue '{venue}'")));
    }
    Ok(node
        .occupancy(venue)
        .await
        .map_err(cluster_err)?
        .unwrap_or(0))
}

/// `Ok` once this node's venue registry holds every venue of the stream as of its start: its
/// replica has caught up (a restarted or new node replays the stream first, minutes at national
/// scale); until then `503` with `Retry-After`, and the other HTTP nodes answer. A venue
/// registered through another node since is known here milliseconds later.
pub(crate) fn venues_complete(app: &App) -> Result<(), ApiError> {
    match app.inner.replica.get() {
        Some(replica) => crate::cluster_replica::ready(replica),
        None => Ok(()),
    }
}

/// The `n` venues with most persons present, over all shards; venues with nobody present (from
/// this node's registry) fill the list when fewer have someone, as on the single server.
pub(crate) async fn top_occupancy(
    app: &App,
    node: &Node,
    n: usize,
) -> Result<Vec<(Arc<str>, u32)>, ApiError> {
    venues_complete(app)?;
    let engine = app.engine().clone();
    Ok(node
        .top_occupancy(n, move || {
            engine
                .venue_ids()
                .into_iter()
                .map(|v| v.to_string())
                .collect()
        })
        .await
        .map_err(cluster_err)?
        .into_iter()
        .map(|(v, c)| (Arc::from(v), c))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::replica_answers_for_shard;

    #[test]
    fn the_replica_answers_a_read_only_when_it_holds_what_the_shard_would() {
        // Caught up, nothing heard of left to apply, this node's last publish applied.
        assert!(replica_answers_for_shard(true, 0, 120, 120));
        assert!(replica_answers_for_shard(true, 0, 120, 0));
        // A node that has written nothing since its start (seq_to_read 0) while its replica is
        // still rebuilding, or replaying after a restart, or behind a burst: the shard answers.
        assert!(!replica_answers_for_shard(false, 0, 0, 0));
        assert!(!replica_answers_for_shard(false, 9_000, 1_000, 0));
        assert!(!replica_answers_for_shard(true, 37, 120, 0));
        // Its own latest publish to the shard not applied yet.
        assert!(!replica_answers_for_shard(true, 0, 119, 120));
    }
}
