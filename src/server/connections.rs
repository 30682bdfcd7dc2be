//! The HTTPS accept loop: a bounded number of connections, each with TCP_NODELAY, a TLS
//! handshake timeout, an HTTP/1 header-read timeout, an idle timeout, HTTP/1.1 or HTTP/2, its
//! own span, and graceful shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::state::AppState;

/// Accepts connections until `stop` completes; returns the tracker of the connections still
/// open, for the caller to drain. The listener is dropped on return: no more connections.
pub(crate) async fn accept_until(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    state: AppState,
    stop: impl Future<Output = ()>,
) -> GracefulShutdown {
    // Each connection task holds a watcher until it ends, so `GracefulShutdown::shutdown`
    // waits for them all; the tasks learn of the shutdown from `stopping` and shut their
    // connection down gracefully themselves (as `GracefulShutdown::watch` would), which lets
    // them also close a connection that has gone idle.
    let graceful = GracefulShutdown::new();
    let (stopping_tx, stopping) = watch::channel(false);
    // The limit is read once: a new server.maxConnections applies at the next start.
    let limit = state.config().server.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(limit));
    tokio::pin!(stop);
    loop {
        // A connection slot first, then accept: past the limit, clients wait in the backlog.
        let permit = tokio::select! {
            biased;
            () = &mut stop => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let config = state.config();
        let handshake_timeout = config.server.tls_handshake_timeout.0;
        let header_read_timeout = config.server.header_read_timeout.0;
        let watcher = graceful.watcher();
        let mut stopping = stopping.clone();
        let acceptor = acceptor.clone();
        let app = app.clone();
        let span = tracing::info_span!("conn", %peer);
        tokio::spawn(
            async move {
                let _permit = permit;
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::info!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(timeout = ?handshake_timeout, "TLS handshake timed out (server.tlsHandshakeTimeout)");
                        return;
                    }
                };
                let activity = Arc::new(Activity::new());
                let service = Tracked { inner: TowerToHyperService::new(app), activity: Arc::clone(&activity) };
                let mut builder = auto::Builder::new(SpanExecutor);
                builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
                builder.http2().timer(TokioTimer::new());
                let connection = builder.serve_connection(TokioIo::new(tls), service);
                tokio::pin!(connection);
                // No request for server.headerReadTimeout: close. hyper does this for an idle
                // HTTP/1.1 keep-alive connection, but not before it has seen the first bytes
                // (telling HTTP/1.1 from HTTP/2 waits for them, unbounded) nor for HTTP/2, so
                // silent connections would otherwise hold their slot for ever. An idle HTTP/2
                // connection gets a GOAWAY; one whose client does not finish that exchange (it
                // waits for a PING answer) is dropped after another headerReadTimeout.
                let idle_timeout = header_read_timeout;
                let mut closing = false;
                let mut drop_if_idle_at: Option<Instant> = None;
                loop {
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(e) = result {
                                tracing::debug!(error = %e, "connection closed with an error");
                            }
                            break;
                        }
                        _ = stopping.wait_for(|s| *s), if !closing => {
                            connection.as_mut().graceful_shutdown();
                            closing = true;
                            drop_if_idle_at = None;
                        }
                        () = tokio::time::sleep_until(activity.idle_deadline(idle_timeout)), if !closing => {
                            if activity.is_idle_past(idle_timeout) {
                                tracing::debug!(timeout = ?idle_timeout, "closing an idle connection (server.headerReadTimeout)");
                                connection.as_mut().graceful_shutdown();
                                closing = true;
                                drop_if_idle_at = Some(Instant::now() + idle_timeout);
                            }
                        }
                        () = sleep_until_some(drop_if_idle_at) => {
                            if activity.is_idle_past(idle_timeout) {
                                tracing::debug!("dropping an idle connection that did not close");
                                break;
                            }
                            drop_if_idle_at = Some(Instant::now() + idle_timeout);
                        }
                    }
                }
                drop(watcher);
            }
            .instrument(span),
        );
    }
    let _ = stopping_tx.send(true);
    graceful
}

/// Sleeps until `at`, or for ever when there is none.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A connection's requests in flight, and since when it has had none.
#[derive(Debug)]
struct Activity {
    inflight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity { inflight: AtomicUsize::new(0), idle_since: Mutex::new(Instant::now()) }
    }

    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the connection is next worth checking: `timeout` after it went idle, or a
    /// `timeout` from now while a request is in flight.
    fn idle_deadline(&self, timeout: Duration) -> Instant {
        if self.inflight.load(Ordering::Acquire) > 0 { Instant::now() + timeout } else { self.idle_since() + timeout }
    }

    fn is_idle_past(&self, timeout: Duration) -> bool {
        self.inflight.load(Ordering::Acquire) == 0 && self.idle_since().elapsed() >= timeout
    }
}

/// Counts a request in flight until its response is ready.
struct RequestGuard(Arc<Activity>);

impl RequestGuard {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.inflight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(activity))
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's service, counting its requests in [`Activity`].
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn call(&self, request: R) -> Self::Future {
        let guard = RequestGuard::new(&self.activity);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(guard);
            response
        })
    }
}

/// Spawns HTTP/2 streams on tokio inside the connection's span, so their log lines say which
/// connection they came from.
#[derive(Debug, Clone, Copy)]
struct SpanExecutor;

impl<F> hyper::rt::Executor<F> for SpanExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future.in_current_span());
    }
}
