//! The cluster's audit stream keeps an entry whose publish was refused to its waiter: with two
//! of the three NATS servers killed, an entry cannot be stored and its waiter is told so (a
//! lookup is then answered `503`), but the unacknowledged publish may have been stored all the
//! same, so the publisher keeps publishing the entry, under the same `Nats-Msg-Id`, until it is
//! stored: the entry ends up in the stream exactly once, not sometimes. Runs three real NATS servers through
//! `deploy/local-cluster.sh nats` (fails, not skips, without `nats-server`).

use std::time::{Duration, Instant};

use cluster::audit::{AuditPublisher, WireAudit};
use cluster::Node;

mod support;

use support::Servers;

fn entry(subject: &str) -> WireAudit {
    WireAudit {
        ts: 1_700_000_000,
        who: "open".into(),
        action: "/v1/cases".into(),
        subject: subject.into(),
    }
}

async fn submit(publisher: &AuditPublisher, e: WireAudit) -> cluster::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    publisher.submit(e, move |r| {
        let _ = tx.send(r);
    });
    rx.await.expect("the publisher answers every waiter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_refused_while_jetstream_has_no_quorum_is_stored_once_it_has() {
    let (servers, urls) = Servers::start();
    let layout = cluster::Layout {
        shards: 1,
        default_stay_s: 7_200,
        retention_days: 21,
    };
    let node = Node::connect(&urls, layout).await.expect("connect");
    let publisher = AuditPublisher::start(node.clone());
    submit(&publisher, entry("p-before"))
        .await
        .expect("stored while every server is up");

    // No quorum for the R3 audit stream: the entry cannot be stored, and its waiter hears so.
    servers.kill9("nats-2");
    servers.kill9("nats-3");
    let refused = submit(&publisher, entry("p-refused")).await;
    assert!(
        refused.is_err(),
        "an R3 stream with one of three servers cannot have stored it"
    );
    // More refused entries, submitted at once (so in batches of their own or shared): all go
    // through the one late queue.
    let more = ["p-refused-2", "p-refused-3", "p-refused-4"];
    let refusals =
        futures_util::future::join_all(more.iter().map(|p| submit(&publisher, entry(p)))).await;
    assert!(refusals.iter().all(Result::is_err), "{refusals:?}");

    servers.restart("nats-2");
    servers.restart("nats-3");
    let deadline = Instant::now() + Duration::from_secs(90);
    let subjects = loop {
        let read = node.audit_since(0).await;
        if let Ok(entries) = &read {
            if ["p-refused"]
                .iter()
                .chain(&more)
                .all(|p| entries.iter().any(|e| e.subject == *p))
            {
                break entries
                    .iter()
                    .map(|e| e.subject.clone())
                    .collect::<Vec<_>>();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the refused entries never reached the audit stream: {read:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Once each: each late publish went under its refused batch's message id. The first
    // refused entry was refused (and queued) before the others were submitted.
    assert_eq!(subjects.len(), 5, "{subjects:?}");
    assert_eq!(subjects[..2], ["p-before", "p-refused"], "{subjects:?}");
    let mut rest = subjects[2..].to_vec();
    rest.sort();
    assert_eq!(rest, more, "{subjects:?}");
}
