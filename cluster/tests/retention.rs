//! Retention deletes a shard's expired scan messages from the `CHECKIN` stream, and nothing
//! else: not the other shard's scans, not the venue registrations stored before them, not the
//! scans stored after the cutoff. A replica started afterwards rebuilds from what is left
//! without taking the deleted messages for lost ones. Runs three real NATS servers through
//! `deploy/local-cluster.sh nats` (fails, not skips, without `nats-server`).

use std::time::{Duration, Instant};

use cluster::retention::purge_scans_before;
use cluster::shard::{self, ShardConfig};
use cluster::wire::WireScan;
use cluster::{scan_subject, shard_of, Node};

mod support;

use support::Servers;

const SHARDS: u32 = 2;

/// `n` persons of shard `k`, named after `tag`.
fn persons_of(k: u32, tag: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{tag}-{i}"))
        .filter(|p| shard_of(p, SHARDS) == k)
        .take(n)
        .collect()
}

fn scans_in(persons: &[String], venue: &str, ts: i64) -> Vec<WireScan> {
    persons
        .iter()
        .map(|p| WireScan {
            person: p.clone(),
            venue: venue.into(),
            ts,
            out: false,
        })
        .collect()
}

fn venue(id: &str) -> engine::VenueSpec {
    engine::VenueSpec {
        id: id.into(),
        name: id.into(),
        province: None,
        default_stay_s: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_scans_leave_the_stream_and_a_new_replica_rebuilds_without_them() {
    let (_servers, urls) = Servers::start();
    let layout = cluster::Layout {
        shards: SHARDS,
        default_stay_s: 7_200,
        retention_days: 21,
    };
    let node = Node::connect(&urls, layout).await.expect("connect");
    // A process started with other settings is refused, saying which.
    let other = cluster::Layout {
        shards: SHARDS + 1,
        ..layout
    };
    let refused = Node::connect(&urls, other)
        .await
        .err()
        .expect("a node with another shard count joined the cluster");
    assert!(
        refused
            .to_string()
            .contains(&format!("set up with {SHARDS} shards")),
        "{refused}"
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ts = now - 3_600;

    // Stored before the cutoff: a venue and two messages of scans for each shard.
    node.publish_venues(&[venue("V-old")]).await.expect("venue");
    let old = [
        [persons_of(0, "old-a", 20), persons_of(1, "old-a", 20)].concat(),
        [persons_of(0, "old-b", 20), persons_of(1, "old-b", 20)].concat(),
    ];
    for persons in &old {
        node.publish_scans(scans_in(persons, "V-old", ts))
            .await
            .expect("old scans");
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let cutoff = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Stored after it: scans of both shards at the old venue.
    let new0 = persons_of(0, "new", 20);
    let new1 = persons_of(1, "new", 20);
    node.publish_scans(scans_in(&[new0.clone(), new1].concat(), "V-old", ts + 60))
        .await
        .expect("new scans");

    let mut stream = node
        .jetstream()
        .get_stream(cluster::STREAM)
        .await
        .expect("stream");
    let before = stream.info().await.expect("info").state.messages;
    let purged = purge_scans_before(&mut stream, &scan_subject(0), cutoff)
        .await
        .expect("purge shard 0");
    assert_eq!(purged.purged, 2, "shard 0's two old messages: {purged:?}");
    let after = stream.info().await.expect("info").state.messages;
    assert_eq!(after, before - 2);
    // Again: nothing left to delete (both replicas of a shard run it).
    let again = purge_scans_before(&mut stream, &scan_subject(0), cutoff)
        .await
        .expect("purge again");
    assert_eq!(again.purged, 0);

    // A new replica of shard 0 rebuilds from the stream: it knows the venue registered before
    // the cutoff (the new scans name it), serves the new scans and none of the deleted ones.
    let data = tempfile::tempdir().expect("temp dir");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let replica = tokio::spawn(shard::run(
        ShardConfig {
            cluster: urls.clone(),
            shard: 0,
            shards: SHARDS,
            replica: 1,
            data: data.path().join("shard-0-1"),
            default_stay_s: 7_200,
            retention_days: 21,
        },
        async {
            let _ = stopped.await;
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    let served = loop {
        match node.visits(&new0[0], 0, i64::MAX).await {
            Ok(Some(v)) if !v.is_empty() => break v,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "shard 0's new replica never served: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].venue, "V-old");
    for p in &new0 {
        let v = node.visits(p, 0, i64::MAX).await.expect("visits");
        assert_eq!(v.map(|v| v.len()), Some(1), "{p}");
    }
    for p in persons_of(0, "old-a", 20)
        .iter()
        .chain(&persons_of(0, "old-b", 20))
    {
        let v = node.visits(p, 0, i64::MAX).await.expect("visits");
        // Unknown to the shard (as to a single server that never stored a scan of theirs).
        assert_eq!(v, None, "{p}'s scans were deleted");
    }
    // Shard 1's old messages were not touched by shard 0's purge.
    let shard1 = purge_scans_before(&mut stream, &scan_subject(1), cutoff)
        .await
        .expect("purge shard 1");
    assert_eq!(shard1.purged, 2);
    let _ = stop.send(());
    replica
        .await
        .expect("replica task")
        .expect("the replica ran without error");
}
