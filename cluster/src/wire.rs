//! What goes over NATS: scan batches and venue registrations in the stream (postcard), queries
//! and replies between HTTP nodes and shards (JSON).

use serde::{Deserialize, Serialize};

/// One validated scan as it is stored in the stream (`ts` already resolved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireScan {
    pub person: String,
    pub venue: String,
    pub ts: i64,
    pub out: bool,
}

/// A change to the health domain as it is stored in the stream ([`crate::HEALTH_SUBJECT`]):
/// the HTTP request that asked for it, already authenticated and authorized by the node that
/// took it, with that node's time. Every node's replica applies it by running the same handler
/// with the domain's clock pinned to `now`, so all replicas make the same change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCommand {
    /// The taking node's [`crate::Node::node_id`].
    pub origin: String,
    /// Numbered per origin: the taking node waits for the outcome of this one.
    pub request: u64,
    /// Unix seconds at the taking node.
    pub now: i64,
    pub method: String,
    /// Path and query, as requested.
    pub target: String,
    /// The caller's token name, role (tokens-file spelling; `None` in open mode) and venues.
    pub principal: String,
    pub role: Option<String>,
    pub venues: Vec<String>,
    /// The request headers the handlers read (`content-type`, `content-encoding`,
    /// `idempotency-key`).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// One venue registration as it is stored in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireVenue {
    pub id: String,
    pub name: String,
    pub province: Option<String>,
    pub default_stay_s: Option<u32>,
}

impl From<&engine::VenueSpec> for WireVenue {
    fn from(v: &engine::VenueSpec) -> WireVenue {
        WireVenue {
            id: v.id.clone(),
            name: v.name.clone(),
            province: v.province.clone(),
            default_stay_s: v.default_stay_s,
        }
    }
}

impl From<WireVenue> for engine::VenueSpec {
    fn from(v: WireVenue) -> engine::VenueSpec {
        engine::VenueSpec {
            id: v.id,
            name: v.name,
            province: v.province,
            default_stay_s: v.default_stay_s,
        }
    }
}

/// A visit `[start, end)` at a venue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireVisit {
    pub venue: String,
    pub start: i64,
    pub end: i64,
}

/// The visits that expose others: the case's (for F1) or one F1's (for F2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub person: String,
    pub visits: Vec<WireVisit>,
}

/// A query to one shard. `min_seq`: the shard first waits until it has applied the stream up
/// to this sequence (the asking node's latest acknowledged publish to that shard).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Query {
    pub min_seq: u64,
    pub op: Op,
}

/// What a query asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    /// Visits of each person with `start < to` and `end >= from`; `None` for a person without
    /// stored scans. With `reply_bytes`, the answer is those of the first persons whose visits
    /// fit in that many bytes of JSON (at least one person): the asker asks again for the rest.
    Visits {
        persons: Vec<String>,
        from: i64,
        to: i64,
        #[serde(default)]
        reply_bytes: Option<usize>,
    },
    /// Persons present at a venue now.
    Occupancy { venue: String },
    /// The `n` venues with most persons present.
    Top { n: usize },
    /// Every venue with someone present, and how many (venues with nobody are left out, so
    /// the answer stays small however many venues are registered).
    Present,
    /// [`Op::Present`] a page at a time: the venues with someone present whose ids come after
    /// `after`, ascending by id, as many as fit in `reply_bytes` of JSON (a
    /// [`Reply::PresentPage`]).
    PresentAfter {
        after: Option<String>,
        reply_bytes: usize,
    },
    /// The shard's persons exposed by `sources`: for each person not in `exclude`, the source
    /// with the largest exposure `>= threshold` (ties: smallest source id). With `reply_bytes`,
    /// a page of them (a [`Reply::ExposurePage`]): the persons after `after`, ascending by
    /// id, as many as fit in that many bytes of JSON.
    Exposures {
        sources: Vec<Source>,
        linger_s: i64,
        threshold: i64,
        exclude: Vec<String>,
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        reply_bytes: Option<usize>,
    },
    /// Store counts.
    Stats,
}

/// A shard's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Visits(Vec<Option<Vec<WireVisit>>>),
    Occupancy(Option<u32>),
    Top(Vec<(String, u32)>),
    Exposures(Vec<Exposure>),
    /// A page of an `Exposures` query asked with `reply_bytes`, ascending by person id; `more`:
    /// persons after the last one remain (ask again with `after` set to it).
    ExposurePage {
        exposures: Vec<Exposure>,
        more: bool,
    },
    /// A page of [`Op::PresentAfter`], ascending by venue id; `more`: venues after the last one
    /// remain.
    PresentPage {
        venues: Vec<(String, u32)>,
        more: bool,
    },
    Stats(ShardTotals),
    /// The shard could not answer (not caught up in time, or an internal error).
    Error(String),
}

/// Store counts of one shard (its [`Reply::Stats`]), or summed over every shard
/// ([`crate::Node::stats`]). On the wire as the struct variant it replaced, so shards and HTTP
/// nodes of the release before read each other's answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTotals {
    pub scans: u64,
    pub persons: u64,
    /// Bytes of the shard replica's own log (a shard of an older release sends none).
    #[serde(default)]
    pub log_bytes: u64,
    /// Persons present now, all venues together.
    #[serde(default)]
    pub present: u64,
}

impl ShardTotals {
    /// Adds another shard's counts.
    pub fn add(&mut self, other: &ShardTotals) {
        self.scans += other.scans;
        self.persons += other.persons;
        self.log_bytes += other.log_bytes;
        self.present += other.present;
    }
}

/// One exposed person and the source that exposed it most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    pub person: String,
    pub source: String,
    pub exposure_s: i64,
    pub first_contact: i64,
    pub last_contact: i64,
    /// Sorted distinct venues of the pairs with positive overlap.
    pub venues: Vec<String>,
}

/// A replica's answer on its status subject ([`crate::status_subject`]): how far it has applied
/// the stream and whether it answers queries yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub shard: u32,
    pub replica: u32,
    /// Stream sequence of the last message of its subjects it has applied (0: none yet).
    pub applied: u64,
    /// In the shard's queue group (caught up with what was pending when it started).
    pub serving: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stats_reply_reads_as_the_struct_variant_it_replaced() {
        // What a shard of the release before sends (it had no log_bytes or present yet).
        let old: Reply =
            serde_json::from_str(r#"{"Stats":{"scans":7,"persons":3}}"#).expect("old stats");
        let Reply::Stats(t) = old else {
            panic!("not stats: {old:?}")
        };
        assert_eq!(
            t,
            ShardTotals {
                scans: 7,
                persons: 3,
                log_bytes: 0,
                present: 0
            }
        );
        let now = serde_json::to_value(Reply::Stats(ShardTotals {
            scans: 1,
            persons: 2,
            log_bytes: 3,
            present: 4,
        }))
        .expect("json");
        assert_eq!(
            now,
            serde_json::json!({"Stats": {"scans": 1, "persons": 2, "log_bytes": 3, "present": 4}})
        );
    }
}
