//! Keeps the daemon.json ConfigMap in every opted-in namespace, by server-side apply with one
//! field manager (so several replicas agree instead of fighting). A ConfigMap of that name that
//! dind-injector does not manage is left alone; when a namespace opts out, the managed one goes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::inject::daemon_json_text;
use crate::namespace::NamespaceLookup;

use super::namespaces::NamespaceCache;
use super::{ClusterError, FIELD_MANAGER, MANAGED_BY_LABEL, api_code, at};

/// The key of daemon.json in the ConfigMap (the sidecar mounts the ConfigMap at /etc/docker).
pub const DAEMON_JSON_KEY: &str = "daemon.json";

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The ConfigMap was created or updated.
    Applied,
    /// It already had the right content.
    Unchanged,
    /// A ConfigMap of that name exists and dind-injector does not manage it: left alone.
    UserOwned,
    /// The apply conflicted with another field manager: left alone.
    Conflict,
    /// The managed ConfigMap was deleted (the namespace opted out).
    Removed,
    /// Nothing to do.
    Absent,
}

fn is_managed(cm: &ConfigMap) -> bool {
    cm.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(FIELD_MANAGER)
}

/// The ConfigMap dind-injector applies.
pub fn desired(name: &str, namespace: &str, daemon_json: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(DAEMON_JSON_KEY.to_owned(), daemon_json.to_owned())])),
        ..ConfigMap::default()
    }
}

/// Makes sure `namespace` has the managed ConfigMap `name` with `daemon_json`.
pub async fn ensure(client: &Client, namespace: &str, name: &str, daemon_json: &str) -> Result<SyncOutcome, ClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let what = format!("ConfigMap {namespace}/{name}");
    match api.get_opt(name).await.map_err(at(format!("get {what}")))? {
        Some(cm) if !is_managed(&cm) => return Ok(SyncOutcome::UserOwned),
        Some(cm) if cm.data.as_ref().and_then(|d| d.get(DAEMON_JSON_KEY)).map(String::as_str) == Some(daemon_json) => {
            return Ok(SyncOutcome::Unchanged);
        }
        _ => {}
    }
    // Server-side apply wants the type; the k8s-openapi struct leaves it to the client.
    let mut body = serde_json::to_value(desired(name, namespace, daemon_json)).unwrap_or_default();
    body["apiVersion"] = "v1".into();
    body["kind"] = "ConfigMap".into();
    // No force: a field another manager owns is a conflict, and theirs stays.
    match api.patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&body)).await {
        Ok(_) => Ok(SyncOutcome::Applied),
        Err(e) if api_code(&e) == Some(409) => Ok(SyncOutcome::Conflict),
        Err(e) => Err(at(format!("apply {what}"))(e)),
    }
}

/// Deletes the managed ConfigMap `name` from `namespace`, if there is one.
pub async fn remove(client: &Client, namespace: &str, name: &str) -> Result<SyncOutcome, ClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let what = format!("ConfigMap {namespace}/{name}");
    match api.get_opt(name).await.map_err(at(format!("get {what}")))? {
        Some(cm) if is_managed(&cm) => match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(SyncOutcome::Removed),
            Err(e) if api_code(&e) == Some(404) => Ok(SyncOutcome::Absent),
            Err(e) => Err(at(format!("delete {what}"))(e)),
        },
        _ => Ok(SyncOutcome::Absent),
    }
}

/// Syncs one namespace from the cache's view of it.
pub async fn sync_namespace(
    client: &Client,
    cache: &NamespaceCache,
    config: &Config,
    namespace: &str,
) -> Result<SyncOutcome, ClusterError> {
    let name = &config.sidecar.daemon_config_map;
    match cache.get(namespace) {
        Some(view) if view.is_opted_in() => ensure(client, namespace, name, &daemon_json_text(&config.daemon)).await,
        _ => remove(client, namespace, name).await,
    }
}

/// Runs forever: syncs each namespace named on `changes`, and all of them every `resync`.
pub async fn run(
    client: Client,
    cache: NamespaceCache,
    config: impl Fn() -> Arc<Config> + Send + 'static,
    mut changes: mpsc::UnboundedReceiver<String>,
    resync: Duration,
) {
    let mut tick = tokio::time::interval(resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let names = tokio::select! {
            Some(name) = changes.recv() => vec![name],
            _ = tick.tick() => cache.names(),
        };
        let config = config();
        for ns in names {
            match sync_namespace(&client, &cache, &config, &ns).await {
                Ok(SyncOutcome::UserOwned) => tracing::debug!(namespace = %ns, "namespace has its own daemon.json ConfigMap; left alone"),
                Ok(SyncOutcome::Conflict) => {
                    tracing::warn!(namespace = %ns, "daemon.json ConfigMap is partly owned by another field manager; left alone")
                }
                Ok(outcome @ (SyncOutcome::Applied | SyncOutcome::Removed)) => {
                    tracing::info!(namespace = %ns, ?outcome, "daemon.json ConfigMap synced")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, reason = e.metric_label(), "daemon.json ConfigMap sync failed; retrying at the next resync")
                }
            }
        }
    }
}
