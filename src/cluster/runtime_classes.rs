//! The RuntimeClasses of the cluster, watched like the namespaces (names only), so that a pod is
//! never given an isolation mode whose RuntimeClass does not exist: the apiserver's RuntimeClass
//! admission would refuse it, and falling back to a privileged sidecar would be a silent downgrade.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};

use super::list_watch::{Signal, list_watch};
use crate::inject::RuntimeClasses;

/// The longest apiserver error kept for the skip message of a pod (the log has it whole).
pub const ERROR_LIMIT: usize = 300;

/// Whether the RuntimeClass watch is connected (for its metric).
#[derive(Clone, Debug, Default)]
pub struct RuntimeClassWatch {
    connected: Arc<AtomicBool>,
}

impl RuntimeClassWatch {
    /// Whether the last list or watch request succeeded.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

/// A watch and the future that drives it (spawn it): it lists and watches the RuntimeClasses
/// (metadata only) and calls `publish` with their names after every full list and every change.
/// A failing watch keeps the names last published. A list that fails before any succeeded
/// publishes [`RuntimeClasses::Unlisted`] with the apiserver's error, so that the server gets
/// ready (a cluster without RuntimeClass RBAC still has its privileged pods injected) and each
/// pod asking for sysbox or kata is told why it was not injected.
pub fn start(
    client: Client,
    publish: impl Fn(RuntimeClasses) + Send + 'static,
) -> (RuntimeClassWatch, impl Future<Output = ()> + Send + 'static) {
    let watch = RuntimeClassWatch::default();
    let connected = Arc::clone(&watch.connected);
    let driver = async move {
        let (store, mut writer): (Store<PartialObjectMeta<RuntimeClass>>, _) = reflector::store();
        let api: Api<PartialObjectMeta<RuntimeClass>> = Api::all(client);
        let mut stream = std::pin::pin!(list_watch(api, None));
        let mut synced = false;
        let mut lost: Option<Instant> = None;
        let names = |store: &Store<PartialObjectMeta<RuntimeClass>>| -> BTreeSet<String> {
            store.state().iter().filter_map(|rc| rc.metadata.name.clone()).collect()
        };
        while let Some(signal) = stream.next().await {
            match signal {
                Signal::Connected => {
                    connected.store(true, Ordering::Release);
                    if let Some(since) = lost.take() {
                        tracing::info!(outage_seconds = since.elapsed().as_secs(), "RuntimeClass watch reconnected");
                    }
                }
                Signal::Failed(e) => {
                    connected.store(false, Ordering::Release);
                    if !synced {
                        publish(RuntimeClasses::Unlisted(Arc::from(shortened(&e.to_string()))));
                    }
                    if lost.is_none() {
                        lost = Some(Instant::now());
                        if synced {
                            tracing::warn!(error = %e, "RuntimeClass watch lost; isolation modes are checked against the RuntimeClasses last seen");
                        } else {
                            tracing::warn!(error = %e, "cannot list RuntimeClasses (does the injector's ClusterRole grant get, list and watch on runtimeclasses.node.k8s.io?); pods asking for sysbox or kata isolation are not injected until it can");
                        }
                    }
                }
                Signal::Event(event) => {
                    writer.apply_watcher_event(&event);
                    match event {
                        watcher::Event::InitDone => {
                            synced = true;
                            let known = names(&store);
                            tracing::info!(runtime_classes = ?known, "RuntimeClasses listed");
                            publish(RuntimeClasses::Known(Arc::new(known)));
                        }
                        watcher::Event::Apply(_) | watcher::Event::Delete(_) if synced => {
                            publish(RuntimeClasses::Known(Arc::new(names(&store))))
                        }
                        _ => {}
                    }
                }
            }
        }
    };
    (watch, driver)
}

/// `error` cut to [`ERROR_LIMIT`] bytes at a character boundary, marked when cut.
fn shortened(error: &str) -> String {
    if error.len() <= ERROR_LIMIT {
        return error.to_owned();
    }
    let mut end = ERROR_LIMIT;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &error[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        assert_eq!(shortened("forbidden"), "forbidden");
        let long = "é".repeat(ERROR_LIMIT);
        let cut = shortened(&long);
        assert!(cut.len() <= ERROR_LIMIT + '…'.len_utf8() && cut.ends_with('…'), "{}", cut.len());
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'é'));
    }
}
