//! The namespace cache: a reflector over the namespaces' metadata (labels and annotations are all
//! the injector reads). The request path only reads memory; when the apiserver goes away the
//! cache keeps serving what it last saw, and says so.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;

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
        f.debug_struct("NamespaceCache")
            .field("synced", &self.is_ready())
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
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
        let cache = NamespaceCache {
            store,
            synced: Arc::new(AtomicBool::new(false)),
            connected: Arc::new(AtomicBool::new(false)),
        };
        // An Api over PartialObjectMeta asks for metadata only: no namespace specs or status.
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
        let driver = {
            let cache = cache.clone();
            async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(event) => {
                            if !cache.connected.swap(true, Ordering::AcqRel) {
                                tracing::info!("namespace watch connected");
                            }
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
                        Err(e) => {
                            if cache.connected.swap(false, Ordering::AcqRel) {
                                tracing::warn!(error = %e, "namespace watch lost; serving from the cache as last synced until it reconnects");
                            } else {
                                tracing::debug!(error = %e, "namespace watch still failing");
                            }
                        }
                    }
                }
            }
        };
        (cache, driver)
    }

    /// Whether the watch is connected now (false while the apiserver is away).
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
        Some(NamespaceView::new(
            name,
            ns.metadata.labels.clone().unwrap_or_default(),
            ns.metadata.annotations.clone().unwrap_or_default(),
        ))
    }

    fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}
