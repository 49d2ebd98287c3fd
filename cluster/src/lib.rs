//! Cluster mode (contract section 14) on NATS JetStream.
//!
//! Every accepted scan and venue registration is published to one JetStream stream
//! ([`STREAM`], 3 replicas, file storage, servers with `sync_interval: always`) before the HTTP
//! node answers. Scans go to the subject of their person's shard ([`scan_subject`]); venue
//! registrations to [`VENUES_SUBJECT`], which every shard also consumes, in stream order, so a
//! shard always knows a venue before the first scan validated against it.
//!
//! A shard process ([`shard`], binary `checkin-shard`) consumes its subjects with a pull
//! consumer into an `engine` of its own (a cache of the stream, reopened at start from its
//! checkpoint, [`checkpoint`]) and
//! answers queries over NATS request/reply on [`query_subject`] in a queue group, so either
//! replica of a shard answers. The HTTP node ([`node::Node`]) validates, publishes, and answers
//! reads by fan-out: visits from the person's shard, occupancy summed over shards, traces in
//! rounds (the case's visits, candidate overlaps from every shard, the F1s' visits, F2 overlaps).
//! Audit entries go to a stream of their own ([`audit`]). The stream never expires as a whole:
//! the shards delete their expired scans from it by subject ([`retention`]). Changes to the health domain go to
//! [`HEALTH_SUBJECT`] as commands ([`wire::HealthCommand`]); every HTTP node follows the whole
//! stream into a replica of its own (scans, venues and commands, in stream order), from which it
//! answers the health domain's reads.
//! [`contacts`] holds the clipping and ordering of section 5 that the HTTP node applies; the
//! overlaps themselves are each shard engine's (`Engine::exposures_to`).

pub mod audit;
pub mod checkpoint;
pub mod contacts;
pub mod error;
pub mod node;
pub mod paging;
pub mod retention;
pub mod shard;
pub mod status;
pub mod wire;

pub use error::{ClusterError, Result};
pub use node::{Layout, Node};

/// The JetStream stream that holds every scan and venue registration.
pub const STREAM: &str = "CHECKIN";
/// The subject of venue registrations (every shard consumes it).
pub const VENUES_SUBJECT: &str = "ck.venues";
/// The subject of health-domain commands (cases, samples, results, doses, declarations, areas,
/// notices): every HTTP node's replica of the health domain applies them in stream order.
pub const HEALTH_SUBJECT: &str = "ck.health";
/// Largest body of one health-domain command (the servers' `max_payload` is 8 MB).
pub const MAX_COMMAND_BODY: usize = 7 << 20;
/// The core NATS subject (not stored in any stream) on which every HTTP node announces the
/// stream sequence of each scan batch, venue registration and health command JetStream
/// acknowledged to it, so that the other nodes' reads wait for it too ([`Node::seq_to_read`],
/// [`Node::health_seq_to_read`]): a read through one node right after an acknowledgement
/// through another.
pub const ACKED_SUBJECT: &str = "ck.acked";
/// Number of JetStream replicas of the stream.
pub const REPLICAS: usize = 3;
/// Largest number of scans in one published message.
pub const MAX_SCANS_PER_MESSAGE: usize = 8192;

/// The subject of shard `k`'s scans.
pub fn scan_subject(k: u32) -> String {
    format!("{SCANS_PREFIX}{k}")
}

const SCANS_PREFIX: &str = "ck.scans.";

/// Whether `subject` is a shard's scan subject.
pub fn is_scan_subject(subject: &str) -> bool {
    subject.starts_with(SCANS_PREFIX)
}

/// The request/reply subject of shard `k`'s queries.
pub fn query_subject(k: u32) -> String {
    format!("ck.q.{k}")
}

/// The subject on which replica `r` of shard `k` answers with its [`wire::ReplicaStatus`] (not a
/// queue group: this replica only, from the moment it starts).
pub fn status_subject(k: u32, r: u32) -> String {
    format!("ck.status.{k}.{r}")
}

/// The shard of a person: FNV-1a of the id bytes, modulo the number of shards. Stable across
/// processes and releases (it decides where a person's scans live).
pub fn shard_of(person: &str, shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in person.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u32
}
