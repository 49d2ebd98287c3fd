//! The accept loop: HTTP/1.1 connections with keep-alive, and cleartext HTTP/2 for clients that
//! open with its preface (prior knowledge, so one connection can carry many requests at once), a
//! connection limit, header and body deadlines, and graceful shutdown.
//!
//! Shutdown order: stop accepting (the listener is dropped), end the live feeds, let every
//! connection finish the request it is serving (idle keep-alive connections close at once), wait
//! at most `drain_timeout`, then flush and shut the engine down. Every request that was answered
//! `200` for scans was durable before its answer; the final flush covers everything else.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::app::App;
use crate::problem::ApiError;

/// Why [`serve`] ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The final flush or shutdown of the store failed: some scans may not be durable.
    #[error("flushing the store at shutdown failed: {0}")]
    Engine(#[from] engine::Error),
    /// The shutdown task itself failed.
    #[error("the shutdown task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Serves `app` on `listener` until `shutdown` completes, then drains and shuts the engine down.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let opts = app.options().clone();
    let limit = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        // A vanished HTTP/2 peer is found by pings, as HTTP/1.1's is by its header deadline.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let last_warn = AtomicU64::new(0);
    let portal = crate::web::portal::keep_warm(app.clone());
    let purge = app
        .cluster()
        .is_none()
        .then(|| tokio::spawn(purge_daily(app.clone(), opts.purge_check_every)));
    if app.engine().audit_owed_pending() {
        // the open could not move them (audit.log's disk still full): tried again while running
        tokio::spawn(crate::handlers::settle_owed(app.clone()));
    }
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn_limited(&last_warn, &format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            warn_limited(
                &last_warn,
                &format!(
                    "connection limit of {} reached: refusing new connections with 503",
                    opts.max_connections
                ),
            );
            refuse(stream);
            continue;
        };
        let conn_app = app.clone();
        let service = service_fn(move |req| {
            let app = conn_app.clone();
            async move { app.handle(req).await }
        });
        let watcher = graceful.watcher();
        let (http1, http2) = (http1.clone(), http2.clone());
        let first_bytes_within = opts.header_read_timeout;
        tokio::spawn(async move {
            let ended = match sniff(&stream, first_bytes_within).await {
                Some(Protocol::Http1) => {
                    watcher
                        .watch(http1.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(Protocol::Http2) => {
                    watcher
                        .watch(http2.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                // Closed, or silent past the header deadline: nothing to answer.
                None => Ok(()),
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    portal.abort();
    if let Some(purge) = purge {
        purge.abort();
    }
    tracing::info!(
        connections = graceful.count(),
        "shutting down: no new connections, finishing in-flight requests"
    );
    app.end_feeds();
    if tokio::time::timeout(opts.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_s = opts.drain_timeout.as_secs(),
            "some connections did not finish in time; closing them"
        );
    }
    let engine = app.engine().clone();
    tokio::task::spawn_blocking(move || {
        engine.flush()?;
        engine.shutdown()
    })
    .await??;
    tracing::info!("stopped: every acknowledged scan is durable");
    Ok(())
}

/// Single server: expired samples and declarations go on the first look of each new day (by
/// the health domain's clock), as they do at start, so a server that runs for months does not
/// keep serving them until its next restart.
async fn purge_daily(app: App, every: Duration) {
    loop {
        tokio::time::sleep(every.max(Duration::from_millis(10))).await;
        if !app.health().purge_is_due() {
            continue;
        }
        let purging = app.clone();
        match tokio::task::spawn_blocking(move || purging.health().purge_expired_on_a_new_day())
            .await
        {
            Ok(Ok(n)) => tracing::info!(records = n, "purged expired samples and declarations"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "purging expired records failed; tried again later")
            }
            Err(e) => tracing::warn!(error = %e, "the purge task failed"),
        }
    }
}

/// Concurrent requests one HTTP/2 connection may carry: RFC 9113's recommended minimum, which
/// clients assume before the server's SETTINGS arrive (a lower value refuses the streams of a
/// client that starts with a burst). Each request may hold a body of up to 16 MiB in memory, so
/// this also bounds what one connection can make the server buffer.
const H2_MAX_STREAMS: u32 = 100;

/// The protocol a connection speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Tells HTTP/2 (its client preface, `PRI * HTTP/2.0...`) from HTTP/1.1 by peeking at the first
/// bytes, without consuming them. Three bytes decide it (`PRI` against `POST`, `PUT`, `PATCH`).
/// `None` when the peer closes, fails, or sends nothing within `within`.
async fn sniff(stream: &TcpStream, within: Duration) -> Option<Protocol> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + within;
    let mut head = [0u8; 3];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut head))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if !PREFACE.starts_with(&head[..n]) {
            return Some(Protocol::Http1);
        }
        if n == head.len() {
            return Some(Protocol::Http2);
        }
        // "P" or "PR" so far: a peek would return the same bytes at once, so wait a little.
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Answers one request on a connection over the limit with 503 and closes it. The request head
/// is read first so the client sees the answer rather than a reset.
fn refuse(stream: TcpStream) {
    let service = service_fn(|_req| async {
        Ok::<_, Infallible>(
            ApiError::Unavailable("the server is at its connection limit; retry shortly".into())
                .into_response(),
        )
    });
    tokio::spawn(async move {
        let within = Duration::from_secs(5);
        let answered = async {
            match sniff(&stream, within).await {
                Some(Protocol::Http1) => {
                    let mut http1 = http1::Builder::new();
                    http1
                        .timer(TokioTimer::new())
                        .header_read_timeout(within)
                        .keep_alive(false);
                    let _ = http1.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(Protocol::Http2) => {
                    // Every stream the client opens within the time below gets the same 503.
                    let mut http2 = http2::Builder::new(TokioExecutor::new());
                    http2.timer(TokioTimer::new());
                    let _ = http2.serve_connection(TokioIo::new(stream), service).await;
                }
                None => {}
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), answered).await;
    });
}

/// Logs a warning at most once every ten seconds (no log line per connection under overload).
fn warn_limited(last: &AtomicU64, message: &str) {
    if crate::problem::once_per_10s(last) {
        tracing::warn!("{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A connected (client, server) pair on loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    const WITHIN: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn sniff_tells_http2_preface_from_http1_methods() {
        for (first, expected) in [
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], Protocol::Http2),
            (b"POST /v1/scans HTTP/1.1\r\n", Protocol::Http1),
            (b"PUT /v1/venues HTTP/1.1\r\n", Protocol::Http1),
            (b"PATCH / HTTP/1.1\r\n", Protocol::Http1),
            (b"GET /healthz HTTP/1.1\r\n", Protocol::Http1),
            (b"\x16\x03\x01", Protocol::Http1),
        ] {
            let (mut client, server) = pair().await;
            client.write_all(first).await.unwrap();
            assert_eq!(sniff(&server, WITHIN).await, Some(expected), "{first:?}");
            // Peeking consumed nothing: the protocol's parser still sees every byte.
            let mut buf = vec![0u8; first.len()];
            server.try_read(&mut buf).unwrap();
            assert_eq!(buf, first);
        }
    }

    #[tokio::test]
    async fn sniff_waits_for_a_split_preface() {
        let (mut client, server) = pair().await;
        client.write_all(b"PR").await.unwrap();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(b"I * HTTP/2.0\r\n").await.unwrap();
            client
        });
        assert_eq!(sniff(&server, WITHIN).await, Some(Protocol::Http2));
        drop(late.await.unwrap());
    }

    #[tokio::test]
    async fn sniff_gives_up_on_silent_or_closed_peers() {
        let (_client, server) = pair().await;
        let started = tokio::time::Instant::now();
        assert_eq!(sniff(&server, WITHIN).await, None);
        assert!(started.elapsed() >= WITHIN);

        let (mut client, server) = pair().await;
        client.write_all(b"P").await.unwrap();
        assert_eq!(
            sniff(&server, WITHIN).await,
            None,
            "a lone 'P' never completes"
        );

        let (client, server) = pair().await;
        drop(client);
        assert_eq!(sniff(&server, WITHIN).await, None);
    }
}
