//! Read-your-writes across HTTP nodes: a scan batch or venue registration acknowledged to one
//! node raises the sequence every other node's reads of that shard wait for, and a health
//! command the sequence its reads of the health domain wait for ([`cluster::ACKED_SUBJECT`]),
//! so a read through node B right after an acknowledgement through node A sees the write. Runs three real NATS servers through `deploy/local-cluster.sh nats`
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

    // A health command through a: b's reads of the health domain wait for it, its scan reads
    // do not.
    assert_eq!(b.health_seq_to_read(), 0);
    let before = b.seq_to_read(&other);
    let command = cluster::wire::HealthCommand {
        origin: a.node_id().to_string(),
        request: 1,
        now,
        method: "POST".into(),
        target: "/v1/cases".into(),
        principal: "test".into(),
        role: None,
        venues: Vec::new(),
        headers: Vec::new(),
        body: b"{}".to_vec(),
    };
    let health_seq = a.publish_health(&command).await.expect("health command");
    assert_eq!(a.health_seq_to_read(), health_seq);
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.health_seq_to_read() < health_seq {
        assert!(
            Instant::now() < deadline,
            "b's health reads wait for {}, not {health_seq}, 5 s on",
            b.health_seq_to_read()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(b.seq_to_read(&other), before);

    // An announcement of another stream (one deleted and created again under a running node)
    // moves nothing; one of this stream, as the nodes send it, does.
    let raw = async_nats::connect(urls.split(',').next().expect("a url"))
        .await
        .expect("raw client");
    let announcement = |shard: u32, seq: u64, stream: u64| {
        let mut out = Vec::with_capacity(20);
        out.extend_from_slice(&shard.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&stream.to_le_bytes());
        bytes::Bytes::from(out)
    };
    let tag = b.stream_created_ns() as u64;
    let shard = shard_of(&other, SHARDS);
    let far = 1u64 << 40;
    raw.publish(cluster::ACKED_SUBJECT, announcement(shard, far, tag ^ 1))
        .await
        .expect("publish");
    raw.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        b.seq_to_read(&other) < far,
        "another stream's sequence taken"
    );
    raw.publish(cluster::ACKED_SUBJECT, announcement(shard, far, tag))
        .await
        .expect("publish");
    raw.flush().await.expect("flush");
    reaches(&b, &other, far).await;
}
