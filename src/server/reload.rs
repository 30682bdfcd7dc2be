//! Re-reads the certificate, key and configuration files every `server.reloadInterval` and
//! swaps in what changed. Polling the content (not inotify) also catches Kubernetes' `..data`
//! symlink swap in Secret and ConfigMap volumes. A bad new file keeps the old one in force.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::config::Config;

use super::shutdown::ShutdownHandle;
use super::state::AppState;
use super::tls::{CertPaths, CertStore, TlsError};

/// How long to wait before looking again at a certificate and key that do not match.
const MISMATCH_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// What a file read gave: its bytes, or the read error's text.
type Snapshot<T> = Result<T, String>;

/// The poller. `check` does one round; `run` loops until shutdown.
pub(crate) struct Reloader {
    state: AppState,
    certs: Arc<CertStore>,
    cert_paths: CertPaths,
    last_certs: Snapshot<(Vec<u8>, Vec<u8>)>,
    config_path: Option<PathBuf>,
    last_config: Option<Snapshot<Vec<u8>>>,
}

impl Reloader {
    /// A poller that starts from the files' content as loaded at startup.
    pub(crate) fn new(
        state: AppState,
        certs: Arc<CertStore>,
        cert_paths: CertPaths,
        loaded_certs: (Vec<u8>, Vec<u8>),
        config_path: Option<PathBuf>,
        loaded_config: Option<Vec<u8>>,
    ) -> Self {
        Reloader { state, certs, cert_paths, last_certs: Ok(loaded_certs), config_path, last_config: loaded_config.map(Ok) }
    }

    /// Checks every `server.reloadInterval` (read afresh each time) until shutdown.
    pub(crate) async fn run(mut self, shutdown: ShutdownHandle) {
        loop {
            let interval = self.state.config().server.reload_interval.0;
            tokio::select! {
                () = shutdown.triggered() => return,
                () = tokio::time::sleep(interval) => {}
            }
            self.check().await;
        }
    }

    /// One round: reload what changed.
    pub(crate) async fn check(&mut self) {
        self.check_certs().await;
        self.check_config().await;
    }

    async fn read_certs(&self) -> Snapshot<(Vec<u8>, Vec<u8>)> {
        let paths = self.cert_paths.clone();
        let read = tokio::task::spawn_blocking(move || paths.read()).await;
        match read {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the file reader failed: {e}")),
        }
    }

    /// The pair in `snapshot`, or the error's text and whether it is a key mismatch.
    fn load(&self, snapshot: &Snapshot<(Vec<u8>, Vec<u8>)>) -> Result<CertifiedKey, (String, bool)> {
        match snapshot {
            Ok((cert, key)) => {
                super::tls::certified_key(cert, key, &self.cert_paths).map_err(|e| (e.to_string(), matches!(e, TlsError::Mismatch { .. })))
            }
            Err(read_error) => Err((read_error.clone(), false)),
        }
    }

    async fn check_certs(&mut self) {
        let mut snapshot = self.read_certs().await;
        if snapshot == self.last_certs {
            return;
        }
        let mut result = self.load(&snapshot);
        if matches!(result, Err((_, true))) {
            // Caught between the certificate's and the key's update (two files, two writes or
            // two reads): look again once the writer has had a moment.
            tokio::time::sleep(MISMATCH_RETRY).await;
            snapshot = self.read_certs().await;
            if snapshot == self.last_certs {
                return;
            }
            result = self.load(&snapshot);
        }
        self.last_certs = snapshot;
        match result {
            Ok(key) => {
                self.certs.replace(key);
                self.state.metrics().record_certificate_reload(true);
                let not_after = self.certs.not_after();
                if let Some(t) = not_after {
                    self.state.metrics().set_certificate_not_after(t);
                }
                tracing::info!(cert = %self.cert_paths.cert.display(), not_after, "serving certificate reloaded");
            }
            Err((e, _)) => {
                self.state.metrics().record_certificate_reload(false);
                tracing::error!(error = %e, "certificate reload failed; still serving the previous certificate");
            }
        }
    }

    async fn check_config(&mut self) {
        let Some(path) = self.config_path.clone() else {
            return;
        };
        let read_path = path.clone();
        let snapshot = match tokio::task::spawn_blocking(move || std::fs::read(read_path)).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(format!("cannot read configuration file {}: {e}", path.display())),
            Err(e) => Err(format!("the file reader failed: {e}")),
        };
        if self.last_config.as_ref() == Some(&snapshot) {
            return;
        }
        let result = match &snapshot {
            Ok(bytes) => match std::str::from_utf8(bytes) {
                // Most likely caught half-written by an editor: an empty file at start means the
                // defaults, but a running server keeps what it has (write `{}` to mean defaults).
                Ok(text) if text.trim().is_empty() => {
                    Err(format!("configuration {} is empty (write {{}} for every default)", path.display()))
                }
                Ok(text) => Config::from_yaml(text, &path.display().to_string()).map_err(|e| e.to_string()),
                Err(e) => Err(format!("configuration {} is not UTF-8: {e}", path.display())),
            },
            Err(e) => Err(e.clone()),
        };
        self.last_config = Some(snapshot);
        match result {
            Ok(config) => {
                let old = self.state.config();
                if old.server.max_connections != config.server.max_connections {
                    tracing::warn!("server.maxConnections changed: it takes effect at the next restart");
                }
                self.state.set_config(config);
                self.state.metrics().record_config_reload(true);
                tracing::info!(config = %path.display(), "configuration reloaded");
            }
            Err(e) => {
                self.state.metrics().record_config_reload(false);
                tracing::error!(error = %e, "configuration reload failed; keeping the previous configuration");
            }
        }
    }
}
