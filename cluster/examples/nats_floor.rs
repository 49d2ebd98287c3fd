//! The floors under a cluster read, measured against running NATS servers: a core NATS
//! request/reply round trip to a responder in another connection (what one query round to a
//! shard costs before the shard does any work), and an acknowledged publish to a 3-replica
//! file-storage stream (what an audit entry costs before the answer), and the two at once on
//! one connection, as an audited read makes them.
//!
//! Usage: `cargo run --release -p checkin-cluster --example nats_floor -- NATS_URLS [N [SUBJECT
//! PAYLOAD]...]`
//! (`NATS_URLS` comma-separated, as in `DIR/conf/nats-urls` of `deploy/local-cluster.sh`).
//! Prints `KIND p50_ms p90_ms` for N (default 2,000) operations of each kind, one at a time.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use futures_util::StreamExt;

fn percentiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (at(0.5).as_secs_f64() * 1e3, at(0.9).as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let urls = args.next().context("usage: nats_floor NATS_URLS [N]")?;
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let servers: Vec<String> = urls.split(',').map(str::to_string).collect();

    let responder = async_nats::connect(servers.clone()).await?;
    let asker = async_nats::connect(servers.clone()).await?;
    let mut sub = responder.subscribe("floor.echo").await?;
    let answer = responder.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = answer.publish(reply, msg.payload).await;
            }
        }
    });
    responder.flush().await?;
    // The subscription's interest reaches the asker's server over the cluster's routes a moment
    // later: wait for the first answer before timing.
    let payload = bytes::Bytes::from(vec![b'x'; 200]);
    let warm_until = Instant::now() + Duration::from_secs(10);
    while asker.request("floor.echo", payload.clone()).await.is_err() {
        anyhow::ensure!(
            Instant::now() < warm_until,
            "no answer from the responder within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let payload = bytes::Bytes::from(vec![b'x'; 200]);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        asker.request("floor.echo", payload.clone()).await?;
        times.push(started.elapsed());
    }
    let (p50, p90) = percentiles(times);
    println!("request_reply {p50:.3} {p90:.3}");

    // Optional SUBJECT PAYLOAD pairs after N: the same round trip to a running shard's
    // subjects, to see what a shard adds over the bare round trip.
    let rest: Vec<String> = args.collect();
    for pair in rest.chunks(2) {
        let [subject, body] = pair else {
            anyhow::bail!("after N come SUBJECT PAYLOAD pairs");
        };
        let body = bytes::Bytes::from(body.clone().into_bytes());
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            asker.request(subject.clone(), body.clone()).await?;
            times.push(started.elapsed());
        }
        let (p50, p90) = percentiles(times);
        println!("ask {subject} {p50:.3} {p90:.3}");
    }

    let js = jetstream::new(asker.clone());
    let _ = js.delete_stream("FLOOR_R3").await;
    js.create_stream(jetstream::stream::Config {
        name: "FLOOR_R3".into(),
        subjects: vec!["floor.r3".into()],
        num_replicas: 3,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        js.publish("floor.r3", payload.clone()).await?.await?;
        times.push(started.elapsed());
    }
    let (p50, p90) = percentiles(times);
    println!("publish_r3 {p50:.3} {p90:.3}");

    // Both at once on the same connection, as an audited read does them (the audit entry's
    // publish alongside the query round): the larger of the two when they overlap.
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (published, answered) = tokio::join!(
            async { js.publish("floor.r3", payload.clone()).await?.await },
            asker.request("floor.echo", payload.clone())
        );
        published?;
        answered?;
        times.push(started.elapsed());
    }
    let (p50, p90) = percentiles(times);
    println!("publish_r3_with_request_reply {p50:.3} {p90:.3}");
    js.delete_stream("FLOOR_R3").await?;
    Ok(())
}
