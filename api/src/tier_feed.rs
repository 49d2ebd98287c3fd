//! `GET /v1/tiers/events`: every change of a person's tier as Server-Sent Events.
//!
//! The health domain calls [`TierHub::publish`] under its state lock, so publishing only
//! serializes the change and does a non-blocking `send` into one bounded tokio broadcast channel
//! (nothing at all while nobody listens). Each event carries an increasing `id:`; a subscriber
//! that falls behind loses the oldest events and is told so with a `: dropped N events` comment
//! (it can then re-read the persons it cares about from `GET /v1/persons/{id}/status`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use health::PersonStatus;
use http_body_util::channel::{Channel, Sender};
use tokio::sync::{broadcast, watch};

/// Events buffered before a slow subscriber starts losing them.
pub const TIER_CHANNEL_CAPACITY: usize = 8192;

/// The broadcast channel of tier changes, as ready-made SSE frames.
pub struct TierHub {
    tx: broadcast::Sender<Arc<str>>,
    next_id: AtomicU64,
}

impl Default for TierHub {
    fn default() -> TierHub {
        TierHub {
            tx: broadcast::channel(TIER_CHANNEL_CAPACITY).0,
            next_id: AtomicU64::new(1),
        }
    }
}

impl TierHub {
    /// Hands one change to the subscribers. Never blocks.
    pub fn publish(&self, status: &PersonStatus) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = String::with_capacity(160);
        let _ = write!(frame, "id: {id}\ndata: ");
        frame.push_str(&crate::outbreak::status_json(status));
        frame.push_str("\n\n");
        // An error only means every receiver went away meanwhile.
        let _ = self.tx.send(Arc::from(frame));
    }

    /// Starts a feed: returns the response body; a task writes into it until the client goes
    /// away or `shutdown` turns true.
    pub fn open_feed(
        &self,
        keepalive: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Channel<Bytes> {
        let (tx, body) = Channel::new(16);
        let rx = self.tx.subscribe();
        tokio::spawn(run_feed(rx, keepalive, shutdown, tx));
        body
    }
}

async fn run_feed(
    mut rx: broadcast::Receiver<Arc<str>>,
    keepalive: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut tx: Sender<Bytes>,
) {
    if tx
        .send_data(Bytes::from_static(b": connected\n\n"))
        .await
        .is_err()
        || *shutdown.borrow()
    {
        return;
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    let mut frame = String::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            msg = rx.recv() => match msg {
                Ok(ev) => {
                    frame.push_str(&ev);
                    while frame.len() < 64 * 1024 {
                        match rx.try_recv() {
                            Ok(ev) => frame.push_str(&ev),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                let _ = write!(frame, ": dropped {n} events\n\n");
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let _ = write!(frame, ": dropped {n} events\n\n");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = ticker.tick() => frame.push_str(": keep-alive\n\n"),
        }
        if !frame.is_empty()
            && tx
                .send_data(Bytes::from(std::mem::take(&mut frame)))
                .await
                .is_err()
        {
            break;
        }
    }
}
