//! The accept loop: HTTP/1.1 connections with keep-alive, a connection limit, header and body
//! deadlines, and graceful shutdown.
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

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
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
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true);
    let last_warn = AtomicU64::new(0);
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
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
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

/// Answers one request on a connection over the limit with 503 and closes it. The request head
/// is read first so the client sees the answer rather than a reset.
fn refuse(stream: TcpStream) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .keep_alive(false);
    let conn = builder.serve_connection(
        TokioIo::new(stream),
        service_fn(|_req| async {
            Ok::<_, Infallible>(
                ApiError::Unavailable(
                    "the server is at its connection limit; retry shortly".into(),
                )
                .into_response(),
            )
        }),
    );
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
    });
}

/// Logs a warning at most once every ten seconds (no log line per connection under overload).
fn warn_limited(last: &AtomicU64, message: &str) {
    if crate::problem::once_per_10s(last) {
        tracing::warn!("{message}");
    }
}
