//! The HTTPS accept loop: a bounded number of connections, each with TCP_NODELAY, a TLS
//! handshake timeout, an HTTP/1 header-read timeout, HTTP/1.1 or HTTP/2, its own span, and
//! graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
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
    let graceful = GracefulShutdown::new();
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
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
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
                let mut builder = auto::Builder::new(SpanExecutor);
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout);
                builder.http2().timer(TokioTimer::new());
                let connection = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
            }
            .instrument(span),
        );
    }
    graceful
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
