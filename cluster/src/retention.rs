//! Retention of the stream's scans: each shard replica deletes from the `CHECKIN` stream the
//! scan messages of its own subject that are older than the retention period and a margin
//! ([`purge_scans_before`], run every [`PURGE_EVERY`] by [`run`]).
//!
//! The stream itself has no `max_age`: venue registrations and health commands
//! ([`crate::VENUES_SUBJECT`], [`crate::HEALTH_SUBJECT`]) must never expire, since every
//! replica is rebuilt from them, so scans are expired by subject. Without this the stream, and
//! the replay of a new replica, would grow with every scan ever taken.
//!
//! A message is deleted once its JetStream timestamp (when it was stored) is older than the
//! retention period plus [`MARGIN`]. Its scans were validated when it was published: none was
//! older than the retention period then, and none newer than the future-skew allowance
//! ([`engine::FUTURE_SKEW_S`], minutes), so once the margin (a day) has passed each of them is
//! older than the retention period, and every engine already refuses or purges it. The margin
//! also covers the servers' clocks and the order of timestamps after a leader change. Consumers
//! count their own deliveries, so the deleted messages leave no gap that a replica would take
//! for a lost message (`shard::consume`, the HTTP replica's ordered consumer).

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

use crate::error::{ClusterError, Result};

/// How often a shard replica purges its expired scans.
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// How long after a replica's start its first purge runs.
const FIRST_PURGE_AFTER: Duration = Duration::from_secs(60);
/// How much older than the retention period a message is before it is deleted.
pub const MARGIN: Duration = Duration::from_secs(86_400);
/// How many times the lookup of the first message to keep is tried before this purge gives up.
const LOOKUP_ATTEMPTS: u32 = 5;
/// How long between two tries of the lookup.
const LOOKUP_RETRY: Duration = Duration::from_millis(250);
/// How long the lookup of the first message to keep waits for the server.
const LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// What one purge deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgedScans {
    /// Messages of the subject stored before this stream sequence were deleted.
    pub before_seq: u64,
    /// How many.
    pub purged: u64,
}

/// Deletes the messages of `subject` that the stream stored before `cutoff` (every one of them
/// if none is as new). Messages stored after the call began are never deleted.
pub async fn purge_scans_before(
    stream: &mut jetstream::stream::Stream,
    subject: &str,
    cutoff: time::OffsetDateTime,
) -> Result<PurgedScans> {
    let js_err = |what: &str, e: &dyn std::fmt::Display| {
        ClusterError::JetStream(format!("retention: {what}: {e}"))
    };
    // Read first: whatever is stored later has a higher sequence and is kept.
    let last = stream
        .info()
        .await
        .map_err(|e| js_err("reading the stream's state", &e))?
        .state
        .last_sequence;
    // A consumer just created can answer its first pull with `503` (no responders yet, on a
    // server that has not set it up). Each try uses a consumer of its own, so a message one try
    // received and lost cannot make the next start after it.
    let mut attempt = 1;
    let first_kept = loop {
        match first_kept_after(stream, subject, cutoff).await {
            Ok(first) => break first,
            Err(e) if attempt < LOOKUP_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "retention lookup failed; asking again");
                attempt += 1;
                tokio::time::sleep(LOOKUP_RETRY).await;
            }
            Err(e) => return Err(e),
        }
    };
    let before_seq = first_kept.unwrap_or(last + 1).min(last + 1);
    let purged = stream
        .purge()
        .filter(subject)
        .sequence(before_seq)
        .await
        .map_err(|e| js_err("purging", &e))?
        .purged;
    Ok(PurgedScans { before_seq, purged })
}

/// Purges `subject`'s scans older than `retention_days` plus [`MARGIN`] every
/// [`PURGE_EVERY`], forever; a failed purge is logged and tried again at the next.
pub async fn run(mut stream: jetstream::stream::Stream, subject: String, retention_days: u32) {
    let mut wait = FIRST_PURGE_AFTER;
    loop {
        tokio::time::sleep(wait).await;
        wait = PURGE_EVERY;
        let keep_for = Duration::from_secs(u64::from(retention_days) * 86_400) + MARGIN;
        let cutoff = time::OffsetDateTime::now_utc() - keep_for;
        match purge_scans_before(&mut stream, &subject, cutoff).await {
            Ok(p) if p.purged > 0 => tracing::info!(
                %subject,
                purged = p.purged,
                before_seq = p.before_seq,
                "retention: expired scan messages deleted from the stream"
            ),
            Ok(_) => tracing::debug!(%subject, "retention: no scan message has expired"),
            Err(e) => tracing::warn!(%subject, error = %e, "retention: purge failed"),
        }
    }
}

/// The stream sequence of `subject`'s first message stored at or after `cutoff`, if any, through
/// a lookup consumer of its own.
async fn first_kept_after(
    stream: &jetstream::stream::Stream,
    subject: &str,
    cutoff: time::OffsetDateTime,
) -> Result<Option<u64>> {
    let js_err = |what: &str, e: &dyn std::fmt::Display| {
        ClusterError::JetStream(format!("retention: {what}: {e}"))
    };
    let config = consumer::pull::Config {
        name: Some(format!("retention-{:08x}", rand::random::<u32>())),
        filter_subject: subject.to_string(),
        deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: cutoff },
        ack_policy: consumer::AckPolicy::None,
        num_replicas: 1,
        memory_storage: true,
        inactive_threshold: Duration::from_secs(10),
        ..Default::default()
    };
    let c: consumer::PullConsumer = stream
        .create_consumer(config)
        .await
        .map_err(|e| js_err("creating the lookup consumer", &e))?;
    let first = if c.cached_info().num_pending == 0 {
        Ok(None)
    } else {
        first_sequence(&c).await.map(Some)
    };
    // The consumer expires by itself after its inactive threshold if this fails.
    let _ = stream.delete_consumer(&c.cached_info().name).await;
    first
}

/// The stream sequence of the first message the lookup consumer `c` delivers.
async fn first_sequence(c: &consumer::PullConsumer) -> Result<u64> {
    let js_err = |what: &str, e: &dyn std::fmt::Display| {
        ClusterError::JetStream(format!("retention: {what}: {e}"))
    };
    let mut msgs = c
        .fetch()
        .max_messages(1)
        .expires(LOOKUP_WAIT)
        .messages()
        .await
        .map_err(|e| js_err("fetching the first message to keep", &e))?;
    match tokio::time::timeout(LOOKUP_WAIT * 2, msgs.next()).await {
        Ok(Some(Ok(m))) => Ok(m
            .info()
            .map_err(|e| js_err("reading the first kept message's info", &e))?
            .stream_sequence),
        Ok(Some(Err(e))) => Err(js_err("fetching the first message to keep", &e)),
        // It said a message was pending but none came: change nothing this time.
        Ok(None) | Err(_) => Err(ClusterError::JetStream(
            "retention: the first message to keep did not arrive".into(),
        )),
    }
}
