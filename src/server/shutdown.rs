//! Shutdown: a flag every part of the server watches. A signal or a test sets it.

use std::sync::Arc;

use tokio::sync::watch;

/// Starts the shutdown of a server; cheap to clone. Readiness fails as soon as it is triggered.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for ShutdownHandle {
    fn default() -> Self {
        ShutdownHandle::new()
    }
}

impl ShutdownHandle {
    /// A handle that has not been triggered.
    pub fn new() -> Self {
        ShutdownHandle { tx: Arc::new(watch::channel(false).0) }
    }

    /// Starts the shutdown (what SIGTERM does). Triggering twice is harmless.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Completes once the shutdown has started.
    pub async fn triggered(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// Triggers `handle` on SIGTERM or SIGINT. A second signal exits the process at once.
pub(crate) fn on_signals(handle: ShutdownHandle) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutting down: readiness now fails");
            handle.trigger();
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::warn!(signal = name, "second signal: exiting without waiting for in-flight reviews");
            std::process::exit(130);
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("shutting down: readiness now fails");
            handle.trigger();
        }
    });
    Ok(())
}
