//! Read-your-writes across HTTP nodes: a scan batch or venue registration acknowledged to one
//! node raises the sequence every other node's reads of that shard wait for
//! ([`cluster::ACKED_SUBJECT`]), so a read through node B right after an acknowledgement through
//! node A sees the write. Runs three real NATS servers through `deploy/local-cluster.sh nats`
//! (fails, not skips, without `nats-server`).

use std::time::{Duration, Instant};

use cluster::wire::WireScan;
use cluster::{shard_of, Node};

mod support;

use support::Servers;

const SHARDS: u32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_acknowledged_to_one_node_is_waited_for_by_the_others_reads() {
    let (_servers, urls) = Servers::start();
    let layout = cluster::Layout {
        shards: SHARDS,
        default_stay_s: 7_200,
        retention_days: 21,
    };
    let a = Node::connect(&urls, layout).await.expect("connect a");
    let b = Node::connect(&urls, layout).await.expect("connect b");
    let persons: Vec<String> = (0..)
        .map(|i| format!("p{i}"))
        .filter(|p| shard_of(p, SHARDS) == 1)
        .take(3)
        .collect();
    let other = (0..)
        .map(|i| format!("q{i}"))
        .find(|p| shard_of(p, SHARDS) == 0)
        .expect("a person of shard 0");
    let reaches = |node: &Node, person: &str, seq: u64| {
        let deadline = Instant::now() + Duration::from_secs(5);
        let node = node.clone();
        let person = person.to_string();
        async move {
            while node.seq_to_read(&person) < seq {
                assert!(
                    Instant::now() < deadline,
                    "the other node waits for {} of {person}, not {seq}, 5 s on",
                    node.seq_to_read(&person)
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    // A venue registration through a: every shard's reads through b wait for it.
    let venue_seq = a
        .publish_venues(&[engine::VenueSpec {
            id: "V1".into(),
            name: "V1".into(),
            province: None,
            default_stay_s: None,
        }])
        .await
        .expect("venue");
    reaches(&b, &persons[0], venue_seq).await;
    reaches(&b, &other, venue_seq).await;

    // Scans of shard 1 through a: b's reads of shard 1 wait for them, of shard 0 not.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let scans = persons
        .iter()
        .map(|p| WireScan {
            person: p.clone(),
            venue: "V1".into(),
            ts: now - 60,
            out: false,
        })
        .collect();
    a.publish_scans(scans).await.expect("scans");
    let acked = a.seq_to_read(&persons[0]);
    assert!(acked > venue_seq, "{acked} after {venue_seq}");
    reaches(&b, &persons[2], acked).await;
    assert_eq!(b.seq_to_read(&other), venue_seq);
    // and the other way round
    b.publish_scans(vec![WireScan {
        person: other.clone(),
        venue: "V1".into(),
        ts: now - 30,
        out: false,
    }])
    .await
    .expect("scan through b");
    reaches(&a, &other, b.seq_to_read(&other)).await;
    assert!(a.seq_to_read(&other) > venue_seq);
}
