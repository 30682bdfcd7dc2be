//! The namespace cache: a reflector over the namespaces' metadata (labels and annotations are all
//! the injector reads). The request path only reads memory; when the apiserver goes away the
//! cache keeps serving what it last saw, and says so. The loop is [`super::list_watch`] rather
//! than kube-runtime's watcher so that "connected" follows every request, not only object events.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use std::time::Instant;

use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::mpsc;

use super::list_watch::{Signal, list_watch};

use crate::namespace::{NamespaceLookup, NamespaceView};

/// The namespaces as last seen by the watch.
#[derive(Clone)]
pub struct NamespaceCache {
    store: Store<PartialObjectMeta<Namespace>>,
    synced: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
}

impl std::fmt::Debug for NamespaceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceCache").field("synced", &self.is_ready()).field("connected", &self.is_connected()).finish_non_exhaustive()
    }
}

impl NamespaceCache {
    /// A cache and the future that fills it (spawn it). Each namespace that changes is sent on
    /// `changes` by name (all of them after every full list), for the daemon.json sync.
    pub fn start(
        client: Client,
        changes: Option<mpsc::UnboundedSender<String>>,
    ) -> (NamespaceCache, impl Future<Output = ()> + Send + 'static) {
        let (store, writer) = reflector::store();
        let cache = NamespaceCache { store, synced: Arc::new(AtomicBool::new(false)), connected: Arc::new(AtomicBool::new(false)) };
        // An Api over PartialObjectMeta asks for metadata only: no namespace specs or status.
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
        let driver = {
            let cache = cache.clone();
            let mut writer = writer;
            async move {
                let mut stream = std::pin::pin!(list_watch(api, None));
                // When the watch was lost, and why: for the reconnection log line.
                let mut lost: Option<Instant> = None;
                while let Some(signal) = stream.next().await {
                    match signal {
                        Signal::Connected => {
                            if !cache.connected.swap(true, Ordering::AcqRel) {
                                match lost.take() {
                                    Some(since) => tracing::info!(
                                        outage_seconds = since.elapsed().as_secs(),
                                        "namespace watch reconnected; the cache follows the apiserver again"
                                    ),
                                    None => tracing::info!("namespace watch connected"),
                                }
                            }
                        }
                        Signal::Failed(e) => {
                            if cache.connected.swap(false, Ordering::AcqRel) {
                                lost = Some(Instant::now());
                                tracing::warn!(error = %e, "namespace watch lost; serving from the cache as last synced until it reconnects");
                            } else {
                                tracing::debug!(error = %e, "namespace watch still failing");
                            }
                        }
                        Signal::Event(event) => {
                            writer.apply_watcher_event(&event);
                            let notify = |name: Option<String>| {
                                if let (Some(tx), Some(name)) = (&changes, name) {
                                    let _ = tx.send(name);
                                }
                            };
                            match event {
                                watcher::Event::InitDone => {
                                    cache.synced.store(true, Ordering::Release);
                                    for ns in cache.store.state() {
                                        notify(ns.metadata.name.clone());
                                    }
                                }
                                watcher::Event::Apply(ns) | watcher::Event::Delete(ns) => notify(ns.metadata.name.clone()),
                                watcher::Event::Init | watcher::Event::InitApply(_) => {}
                            }
                        }
                    }
                }
            }
        };
        (cache, driver)
    }

    /// Whether the last list or watch request succeeded (false while the apiserver is away). A
    /// watch that resumes after an outage sets it at once, whether or not anything changed.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The names of every namespace in the cache.
    pub fn names(&self) -> Vec<String> {
        self.store.state().iter().filter_map(|ns| ns.metadata.name.clone()).collect()
    }
}

impl NamespaceLookup for NamespaceCache {
    fn get(&self, name: &str) -> Option<NamespaceView> {
        let ns = self.store.get(&ObjectRef::new(name))?;
        Some(NamespaceView::new(name, ns.metadata.labels.clone().unwrap_or_default(), ns.metadata.annotations.clone().unwrap_or_default()))
    }

    fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}
