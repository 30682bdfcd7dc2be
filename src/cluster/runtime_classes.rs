//! The RuntimeClasses of the cluster, watched like the namespaces (names only), so that a pod is
//! never given an isolation mode whose RuntimeClass does not exist: the apiserver's RuntimeClass
//! admission would refuse it, and falling back to a privileged sidecar would be a silent downgrade.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};

use super::list_watch::{Signal, list_watch};
use crate::inject::RuntimeClasses;

/// Lists and watches the RuntimeClasses (metadata only) and calls `publish` with their names after
/// every full list and every change. Runs until the process ends; a failing watch keeps the last
/// names published (a first list that never succeeds publishes nothing: the injector then says it
/// cannot check, and injects no mode that needs a class).
pub async fn run(client: Client, publish: impl Fn(RuntimeClasses) + Send + 'static) {
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
                if let Some(since) = lost.take() {
                    tracing::info!(outage_seconds = since.elapsed().as_secs(), "RuntimeClass watch reconnected");
                }
            }
            Signal::Failed(e) => {
                if lost.is_none() {
                    lost = Some(Instant::now());
                    if synced {
                        tracing::warn!(error = %e, "RuntimeClass watch lost; isolation modes are checked against the RuntimeClasses last seen");
                    } else {
                        tracing::warn!(error = %e, "cannot list RuntimeClasses (does the injector's ClusterRole grant list and watch on runtimeclasses.node.k8s.io?); pods asking for sysbox or kata isolation are not injected until it can");
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
}
