//! What every request handler shares: the configuration in force, the namespace source, the
//! metrics and the readiness facts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::inject::{ClusterInfo, KubeVersion, RuntimeClasses};
use crate::namespace::NamespaceLookup;

use super::metrics::Metrics;
use super::shutdown::ShutdownHandle;

/// The handlers' shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: RwLock<Arc<Config>>,
    namespaces: Arc<dyn NamespaceLookup>,
    cluster: RwLock<ClusterInfo>,
    metrics: Metrics,
    shutdown: ShutdownHandle,
    certificates_loaded: AtomicBool,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("certificates_loaded", &self.certificates_loaded())
            .field("shutting_down", &self.inner.shutdown.is_triggered())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State for a server with this configuration, namespace source and cluster facts. No
    /// certificate is loaded yet (readiness fails until [`AppState::set_certificates_loaded`]).
    pub fn new(config: Config, namespaces: Arc<dyn NamespaceLookup>, cluster: ClusterInfo) -> Self {
        AppState {
            inner: Arc::new(Inner {
                config: RwLock::new(Arc::new(config)),
                namespaces,
                cluster: RwLock::new(cluster),
                metrics: Metrics::new(),
                shutdown: ShutdownHandle::new(),
                certificates_loaded: AtomicBool::new(false),
            }),
        }
    }

    /// The configuration in force (a request keeps the one it started with).
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.inner.config.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Puts `config` in force for the next requests.
    pub fn set_config(&self, config: Config) {
        *self.inner.config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
    }

    /// Where namespaces are looked up.
    pub fn namespaces(&self) -> &dyn NamespaceLookup {
        self.inner.namespaces.as_ref()
    }

    /// What is known about the cluster now (cheap: the RuntimeClass names are shared).
    pub fn cluster(&self) -> ClusterInfo {
        self.inner.cluster.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Records the apiserver's version (polled).
    pub fn set_server_version(&self, version: KubeVersion) {
        self.inner.cluster.write().unwrap_or_else(std::sync::PoisonError::into_inner).server_version = Some(version);
    }

    /// Records the cluster's RuntimeClasses (watched).
    pub fn set_runtime_classes(&self, classes: RuntimeClasses) {
        self.inner.cluster.write().unwrap_or_else(std::sync::PoisonError::into_inner).runtime_classes = classes;
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The handle that starts this server's shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.inner.shutdown.clone()
    }

    /// Records whether a serving certificate is loaded.
    pub fn set_certificates_loaded(&self, loaded: bool) {
        self.inner.certificates_loaded.store(loaded, Ordering::Release);
    }

    /// Whether a serving certificate is loaded.
    pub fn certificates_loaded(&self) -> bool {
        self.inner.certificates_loaded.load(Ordering::Acquire)
    }

    /// `Ok` when the server should receive reviews, with what it cannot do though ready (one
    /// line each); otherwise why not, in one line.
    pub fn readiness(&self) -> Result<Vec<String>, &'static str> {
        if self.inner.shutdown.is_triggered() {
            return Err("shutting down");
        } else if !self.certificates_loaded() {
            return Err("no serving certificate loaded");
        } else if !self.inner.namespaces.is_ready() {
            return Err("the namespace cache has not synced yet");
        }
        match &self.inner.cluster.read().unwrap_or_else(std::sync::PoisonError::into_inner).runtime_classes {
            // A pod asking for sysbox or kata must not be skipped only because this replica got
            // ready a moment before its first RuntimeClass list came back.
            RuntimeClasses::Syncing => Err("the RuntimeClasses have not been listed yet"),
            // Ready anyway: every pod not asking for sysbox or kata is served as usual.
            RuntimeClasses::Unlisted(error) => Ok(vec![format!(
                "cannot list RuntimeClasses ({error}): pods asking for sysbox or kata isolation are not injected; grant get, list and watch on runtimeclasses.node.k8s.io"
            )]),
            RuntimeClasses::NotChecked | RuntimeClasses::Known(_) => Ok(Vec::new()),
        }
    }
}
