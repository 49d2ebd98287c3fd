//! Where each shard replica stands against the stream: the stream sequence a replica of shard
//! `k` must have applied to hold every message of its subjects ([`shard_target`]) and what the
//! replica says it has applied ([`replica_status`], its `ck.status.K.R` subject). Used by the
//! `checkin-cluster-status` tool, the benchmarks and the tests to wait until replicas have
//! caught up, observed rather than assumed.

use std::time::Duration;

use async_nats::jetstream;

use crate::error::{ClusterError, Result};
use crate::wire::ReplicaStatus;
use crate::{scan_subject, status_subject, STREAM, VENUES_SUBJECT};

/// The stream sequence of the last message of shard `k`'s subjects (its scans and the venue
/// registrations), 0 if there is none.
pub async fn shard_target(js: &jetstream::Context, k: u32) -> Result<u64> {
    let stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    let mut last = 0;
    for subject in [scan_subject(k), VENUES_SUBJECT.to_string()] {
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => last = last.max(m.sequence),
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                ) => {}
            Err(e) => return Err(ClusterError::JetStream(e.to_string())),
        }
    }
    Ok(last)
}

/// What replica `r` of shard `k` says of itself; `None` if it does not answer within 2 s (not
/// running, or not connected).
pub async fn replica_status(client: &async_nats::Client, k: u32, r: u32) -> Option<ReplicaStatus> {
    let msg = tokio::time::timeout(
        Duration::from_secs(2),
        client.request(status_subject(k, r), bytes::Bytes::new()),
    )
    .await
    .ok()?
    .ok()?;
    serde_json::from_slice(&msg.payload).ok()
}

/// One replica against its shard's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub shard: u32,
    pub replica: u32,
    /// The shard's target sequence ([`shard_target`]).
    pub target: u64,
    /// `None`: the replica did not answer.
    pub status: Option<ReplicaStatus>,
}

impl Standing {
    /// Serving and has applied everything of its subjects stored when the target was read.
    pub fn caught_up(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.serving && s.applied >= self.target)
    }
}

/// The standing of one replica now.
pub async fn standing(
    client: &async_nats::Client,
    js: &jetstream::Context,
    k: u32,
    r: u32,
) -> Result<Standing> {
    let target = shard_target(js, k).await?;
    Ok(Standing {
        shard: k,
        replica: r,
        target,
        status: replica_status(client, k, r).await,
    })
}
