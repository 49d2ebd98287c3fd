//! Live venue feeds: `GET /v1/venues/{id}/events` as Server-Sent Events.
//!
//! Each open feed holds an `engine::VenueWatch`, so the engine builds live events only for venues
//! someone watches, and calls [`Hub::publish`] on its sync thread with them. That call must
//! never block or slow ingestion, so it only does a non-blocking `send` into a bounded tokio
//! broadcast channel per venue that has subscribers (and returns at once when nobody listens).
//! Each subscriber has its own task that turns events into SSE frames; a subscriber that falls
//! behind loses the oldest events and is told so with a `: dropped N events` comment, and can
//! resume from the last `id:` it saw with `Last-Event-ID`.
//!
//! v2: exits the server infers (a visit that reached its deadline, or that a check-in elsewhere
//! closed) travel on the same channel as `event: exit` frames without an `id:` (they are not in
//! the log, so `Last-Event-ID` keeps pointing at the last scan and a resume replays scans only).
//!
//! Resume without a gap: the task subscribes to the live channel *before* it reads the replay
//! from the engine, then skips live events whose `seq` it has already sent.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use engine::{Engine, ExitEvent, ScanEvent};
use http_body_util::channel::{Channel, Sender};
use tokio::sync::{broadcast, watch};

/// Events buffered per venue channel before a slow subscriber starts losing them.
pub const VENUE_CHANNEL_CAPACITY: usize = 1024;
/// Most events `?last=N` may ask for.
pub const MAX_REPLAY: usize = 10_000;

/// One live event of a venue feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// An accepted scan.
    Scan(ScanEvent),
    /// An exit the server inferred.
    Exit(ExitEvent),
}

/// Per-venue broadcast channels of live events.
#[derive(Default)]
pub struct Hub {
    venues: DashMap<Arc<str>, broadcast::Sender<FeedEvent>>,
    subscribers: AtomicUsize,
}

impl Hub {
    /// Hands a durable batch to the subscribers of its venues. Never blocks.
    pub fn publish(&self, events: &[ScanEvent]) {
        if self.subscribers.load(Ordering::Relaxed) == 0 {
            return;
        }
        for ev in events {
            if let Some(tx) = self.venues.get(&*ev.venue) {
                // An error only means every receiver went away meanwhile.
                let _ = tx.send(FeedEvent::Scan(ev.clone()));
            }
        }
    }

    /// Hands inferred exits to the subscribers of their venues. Never blocks.
    pub fn publish_exits(&self, exits: &[ExitEvent]) {
        if self.subscribers.load(Ordering::Relaxed) == 0 {
            return;
        }
        for ex in exits {
            if let Some(tx) = self.venues.get(&*ex.venue) {
                let _ = tx.send(FeedEvent::Exit(ex.clone()));
            }
        }
    }

    fn subscribe(self: &Arc<Hub>, venue: &str) -> Subscription {
        let rx = self
            .venues
            .entry(Arc::from(venue))
            .or_insert_with(|| broadcast::channel(VENUE_CHANNEL_CAPACITY).0)
            .subscribe();
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            hub: Arc::clone(self),
            venue: Arc::from(venue),
            rx: Some(rx),
        }
    }

    /// Live subscribers, all venues together.
    #[cfg(test)]
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }
}

/// A subscriber's receiver; dropping it removes the venue's channel once nobody listens.
struct Subscription {
    hub: Arc<Hub>,
    venue: Arc<str>,
    rx: Option<broadcast::Receiver<FeedEvent>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        self.hub
            .venues
            .remove_if(&self.venue, |_, tx| tx.receiver_count() == 0);
        self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a new feed starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Live events only.
    Live,
    /// The latest `n` events first (`?last=N`).
    Last(usize),
    /// Everything after this seq (`Last-Event-ID`).
    After(u64),
}

/// Starts a feed for `venue`: returns the response body; a task writes into it until the client
/// goes away or `shutdown` turns true.
pub fn open_feed(
    engine: Engine,
    hub: &Arc<Hub>,
    venue: String,
    start: Start,
    keepalive: Duration,
    shutdown: watch::Receiver<bool>,
) -> Channel<Bytes> {
    let (tx, body) = Channel::new(16);
    let sub = hub.subscribe(&venue);
    // While the feed runs, the engine builds live events for this venue (and only watched ones).
    let watch = engine.watch_venue(&venue);
    tokio::spawn(async move {
        run_feed(engine, sub, venue, start, keepalive, shutdown, tx).await;
        drop(watch);
    });
    body
}

async fn run_feed(
    engine: Engine,
    mut sub: Subscription,
    venue: String,
    start: Start,
    keepalive: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut tx: Sender<Bytes>,
) {
    let Some(mut rx) = sub.rx.take() else {
        return;
    };
    let mut last_sent: Option<u64> = None;
    let mut frame = String::with_capacity(256);
    frame.push_str(": connected\n\n");

    let (replay, complete) = {
        let engine = engine.clone();
        let venue = venue.clone();
        // A failed replay task counts as an incomplete replay: (no events, complete = false).
        tokio::task::spawn_blocking(move || match start {
            Start::Live => (Vec::new(), true),
            Start::Last(n) => (engine.recent_events(&venue, n), true),
            Start::After(seq) => engine.events_after(&venue, seq),
        })
        .await
        .unwrap_or_default()
    };
    if !complete {
        frame.push_str(
            ": some events were missed: they are older than the server keeps in memory\n\n",
        );
    }
    for ev in &replay {
        write_event(&mut frame, ev);
        last_sent = Some(ev.seq);
    }
    if tx
        .send_data(Bytes::from(std::mem::take(&mut frame)))
        .await
        .is_err()
    {
        return;
    }

    if *shutdown.borrow() {
        return;
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            msg = rx.recv() => {
                match msg {
                    Ok(ev) => {
                        write_feed_event(&mut frame, &ev, &mut last_sent);
                        // Batch whatever else is already queued into the same write.
                        while frame.len() < 64 * 1024 {
                            match rx.try_recv() {
                                Ok(ev) => write_feed_event(&mut frame, &ev, &mut last_sent),
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
                }
            }
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

/// Appends a live event: a scan not sent yet (by seq), or an inferred exit.
fn write_feed_event(out: &mut String, ev: &FeedEvent, last_sent: &mut Option<u64>) {
    match ev {
        FeedEvent::Scan(ev) => {
            if last_sent.is_none_or(|s| ev.seq > s) {
                *last_sent = Some(ev.seq);
                write_event(out, ev);
            }
        }
        FeedEvent::Exit(ex) => write_exit(out, ex),
    }
}

/// Appends one inferred exit: `event: exit`, no `id:`, `data:` the exit as JSON.
fn write_exit(out: &mut String, ex: &ExitEvent) {
    // Ids are restricted to [A-Za-z0-9._:+-], so they need no JSON escaping.
    let _ = write!(
        out,
        "event: exit\ndata: {{\"person\":\"{person}\",\"venue\":\"{venue}\",\"ts\":{ts},\"reason\":\"{reason}\"}}\n\n",
        person = ex.person,
        venue = ex.venue,
        ts = ex.ts,
        reason = ex.reason.as_str(),
    );
}

/// Appends one event frame: `id:` is the seq, `data:` the scan as JSON.
fn write_event(out: &mut String, ev: &ScanEvent) {
    // Ids are restricted to [A-Za-z0-9._:+-], so they need no JSON escaping.
    let _ = write!(
        out,
        "id: {seq}\ndata: {{\"seq\":{seq},\"person\":\"{person}\",\"venue\":\"{venue}\",\"ts\":{ts},\"action\":\"{action}\"}}\n\n",
        seq = ev.seq,
        person = ev.person,
        venue = ev.venue,
        ts = ev.ts,
        action = ev.action.as_str(),
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_are_sse_frames_with_json_data() {
        let mut s = String::new();
        write_event(
            &mut s,
            &ScanEvent {
                seq: 42,
                person: Arc::from("p+1"),
                venue: Arc::from("V:1"),
                ts: 1_700_000_000,
                action: engine::Action::Out,
            },
        );
        let mut lines = s.lines();
        assert_eq!(lines.next(), Some("id: 42"));
        let data = lines.next().and_then(|l| l.strip_prefix("data: ")).unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"seq":42,"person":"p+1","venue":"V:1","ts":1_700_000_000,"action":"out"})
        );
        assert!(s.ends_with("\n\n"));
    }

    #[test]
    fn exits_are_named_events_without_an_id() {
        let mut s = String::new();
        let mut last = Some(7);
        write_feed_event(
            &mut s,
            &FeedEvent::Exit(ExitEvent {
                person: Arc::from("p1"),
                venue: Arc::from("V1"),
                ts: 1_700_000_100,
                reason: engine::ExitReason::Deadline,
            }),
            &mut last,
        );
        assert_eq!(last, Some(7), "an exit does not move the resume point");
        let mut lines = s.lines();
        assert_eq!(lines.next(), Some("event: exit"));
        let data = lines.next().and_then(|l| l.strip_prefix("data: ")).unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"person":"p1","venue":"V1","ts":1_700_000_100,"reason":"deadline"})
        );
        assert!(!s.contains("id:"));
    }

    #[tokio::test]
    async fn publishing_without_subscribers_is_a_no_op_and_channels_are_removed() {
        let hub = Arc::new(Hub::default());
        let ev = ScanEvent {
            seq: 1,
            person: Arc::from("p"),
            venue: Arc::from("V"),
            ts: 1,
            action: engine::Action::In,
        };
        hub.publish(std::slice::from_ref(&ev));
        let mut sub = hub.subscribe("V");
        assert_eq!(hub.subscriber_count(), 1);
        hub.publish(std::slice::from_ref(&ev));
        let got = sub.rx.as_mut().unwrap().recv().await.unwrap();
        assert_eq!(got, FeedEvent::Scan(ev));
        drop(sub);
        assert_eq!(hub.subscriber_count(), 0);
        assert!(hub.venues.is_empty());
    }
}
