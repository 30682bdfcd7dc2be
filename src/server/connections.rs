//! The HTTPS accept loop: a bounded number of connections, each with TCP_NODELAY, a TLS
//! handshake timeout, an HTTP/1 header-read timeout, an idle timeout, HTTP/1.1 or HTTP/2, its
//! own span, a maximum age, and graceful shutdown.
//!
//! A connection is never closed while a request can be in flight on it. To end one (at its
//! `server.maxConnectionAge`, or from the moment a shutdown starts) it is *drained*, the way a
//! Go `net/http` client (the apiserver's webhook client) survives: on HTTP/1.1 the next response
//! says `Connection: close` and the connection closes once that response is written, so the
//! client never reuses it; on HTTP/2 a graceful GOAWAY (hyper's: a GOAWAY for every stream, a
//! PING, then the last stream id) lets the streams in flight finish and tells the client to send
//! the rest on a new connection. A drained HTTP/2 connection that has carried no request yet
//! waits for its first one, so a client that dialled because of a GOAWAY is not sent another
//! before it has been served. Only a connection idle past `server.headerReadTimeout` is closed
//! without a request (as before: the idle close every HTTP server does).

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::state::AppState;

/// Accepts connections until `stop` completes; returns the tracker of the connections still
/// open, for the caller to wait for. The listener is dropped on return: no more connections.
/// Every connection is drained from the moment the server's shutdown is triggered (before
/// `stop`, which comes `server.shutdownDelay` later).
pub(crate) async fn accept_until(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    state: AppState,
    stop: impl Future<Output = ()>,
) -> GracefulShutdown {
    // Each connection task holds a watcher until it ends, so `GracefulShutdown::shutdown`
    // waits for them all; the tasks learn of the shutdown from `stopping` and drain their
    // connection themselves (rather than `GracefulShutdown::watch`, which would close an idle
    // HTTP/1.1 connection the client may be writing its next request to).
    let graceful = GracefulShutdown::new();
    let (stopping_tx, stopping) = watch::channel(false);
    let shutdown = state.shutdown_handle();
    let drain_on_shutdown = tokio::spawn(async move {
        shutdown.triggered().await;
        let _ = stopping_tx.send(true);
    });
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
        let max_age = config.server.max_connection_age.0;
        let state_for_metrics = state.clone();
        let watcher = graceful.watcher();
        let mut stopping = stopping.clone();
        let acceptor = acceptor.clone();
        let app = app.clone();
        let span = tracing::info_span!("conn", %peer);
        tokio::spawn(
            async move {
                let _permit = permit;
                let metrics = state_for_metrics.metrics();
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(Lingering(Some(tcp)))).await {
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
                // ALPN says HTTP/2 before any request does (h2 without ALPN is learnt from the
                // first request).
                let alpn_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let activity = Arc::new(Activity::new(alpn_h2));
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
                let age_at = (!max_age.is_zero()).then(|| Instant::now() + jittered(max_age));
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
                        _ = stopping.wait_for(|s| *s), if !activity.is_draining() => {
                            activity.drain();
                            metrics.record_connection_drained("shutdown");
                        }
                        () = sleep_until_some(age_at), if !activity.is_draining() => {
                            tracing::debug!(max_age = ?max_age, "ending the connection gracefully (server.maxConnectionAge)");
                            activity.drain();
                            metrics.record_connection_drained("max-age");
                        }
                        () = activity.started.notified(), if activity.is_draining() && !closing => {}
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
                    // Draining HTTP/1.1 needs nothing here: `Tracked` marks the next response
                    // `Connection: close` and hyper closes after writing it. HTTP/2 gets its
                    // GOAWAY once it has carried a request.
                    if activity.is_draining() && !closing && activity.is_h2() && activity.has_served() {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                        // A client that never finishes the GOAWAY exchange is dropped once
                        // its streams are done and it has been idle for headerReadTimeout.
                        drop_if_idle_at = Some(Instant::now() + idle_timeout);
                    }
                }
                drop(watcher);
            }
            .instrument(span),
        );
    }
    // The tasks already drain from the trigger on; this only ends the helper if `stop` came
    // some other way.
    drain_on_shutdown.abort();
    graceful
}

/// `max` less up to 10%, drawn per connection (std's randomly keyed hasher as the source), so
/// the connections made together (at a rollout) do not all end together.
fn jittered(max: Duration) -> Duration {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    let tenth = max / 10;
    let nanos = u64::try_from(tenth.as_nanos()).unwrap_or(u64::MAX);
    max - Duration::from_nanos(hasher.finish().checked_rem(nanos).unwrap_or(0))
}

/// How long a closed connection's socket keeps reading (and throwing away) what the client still
/// sends before it is closed for good.
const LINGER: Duration = Duration::from_secs(1);

/// A connection's socket that closes the way a server must not to lose its last words: when the
/// connection is done, the write side is shut (FIN) and what the client still sends is read and
/// thrown away for up to [`LINGER`], then the socket is closed. Closing at once with bytes unread
/// makes the kernel answer with a reset, and a client that gets the reset may lose what it had
/// not read yet: an HTTP/2 client writing its next request as the server's final GOAWAY arrives
/// would see `broken pipe` instead of the GOAWAY that tells it to send the request again
/// elsewhere (seen in tests/rollout.rs). Go's server and nginx linger the same way.
struct Lingering(Option<TcpStream>);

impl Lingering {
    fn stream(&mut self) -> std::io::Result<&mut TcpStream> {
        self.0.as_mut().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(mut tcp), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) else { return };
        runtime.spawn(async move {
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut tcp).await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(LINGER, async { while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {} }).await;
        });
    }
}

/// Sleeps until `at`, or for ever when there is none.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A connection's requests in flight, since when it has had none, how many it has carried,
/// whether it speaks HTTP/2 and whether it is being drained.
#[derive(Debug)]
struct Activity {
    inflight: AtomicUsize,
    idle_since: Mutex<Instant>,
    served: AtomicUsize,
    h2: AtomicBool,
    draining: AtomicBool,
    /// Woken when a request starts (a drained HTTP/2 connection waits for its first).
    started: Notify,
}

impl Activity {
    fn new(h2: bool) -> Self {
        Activity {
            inflight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            served: AtomicUsize::new(0),
            h2: AtomicBool::new(h2),
            draining: AtomicBool::new(false),
            started: Notify::new(),
        }
    }

    fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Acquire)
    }

    fn has_served(&self) -> bool {
        self.served.load(Ordering::Acquire) > 0
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
        activity.served.fetch_add(1, Ordering::AcqRel);
        activity.started.notify_one();
        RequestGuard(Arc::clone(activity))
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's service, counting its requests in [`Activity`] and marking HTTP/1.1
/// responses `Connection: close` once the connection is draining.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let http1 = request.version() < Version::HTTP_2;
        if !http1 {
            self.activity.h2.store(true, Ordering::Release);
        }
        let guard = RequestGuard::new(&self.activity);
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await;
            // Decided when the answer is ready, so a review in flight when the drain starts
            // already tells its client not to reuse the connection.
            if http1
                && guard.0.is_draining()
                && let Ok(r) = response.as_mut()
            {
                r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
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
