//! `caBundle` in the injector's own two webhook configurations (self-managed certificates). Both
//! are watched by name, so a configuration that is recreated, re-applied or edited without the
//! bundle is patched back within seconds; a periodic [`ensure_ca_bundle`] stays as a safety net.
//!
//! The Secret's `ca.crt` is the truth: the first replica to renew the Secret wins, and a replica
//! that sees a bundle it does not know re-reads the Secret before patching, so two replicas never
//! take turns writing their own bundles.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use futures_util::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::{Notify, watch};

use super::certs::{SelfManaged, read_secret};
use super::list_watch::{Signal, list_watch};
use super::{ClusterError, WebhookConfiguration, at};

/// Told the result of every caBundle patch: `true` when it was written.
pub type PatchReport = Arc<dyn Fn(bool) + Send + Sync>;

/// Sets `caBundle` on every webhook of both configurations where it differs; whether anything
/// changed. A configuration that does not exist (not installed yet) is skipped.
pub async fn ensure_ca_bundle(client: &Client, cfg: &SelfManaged, ca_bundle_pem: &str, report: &PatchReport) -> Result<bool, ClusterError> {
    let mutating = ensure_one::<MutatingWebhookConfiguration>(client, cfg, ca_bundle_pem, report).await?;
    let validating = ensure_one::<ValidatingWebhookConfiguration>(client, cfg, ca_bundle_pem, report).await?;
    Ok(mutating || validating)
}

async fn ensure_one<K: WebhookConfiguration>(
    client: &Client,
    cfg: &SelfManaged,
    ca_bundle_pem: &str,
    report: &PatchReport,
) -> Result<bool, ClusterError> {
    let api: Api<K> = Api::all(client.clone());
    let name = &cfg.webhook_configuration;
    let Some(current) = api.get_opt(name).await.map_err(at(format!("get {}", what::<K>(name))))? else {
        return Ok(false);
    };
    patch_stale(&api, name, &current, ca_bundle_pem, report).await
}

fn what<K: WebhookConfiguration>(name: &str) -> String {
    format!("{} {name}", K::kind(&()))
}

/// The webhooks (index, name) whose caBundle is not `bundle_pem`.
fn stale<K: WebhookConfiguration>(object: &K, bundle_pem: &str) -> Vec<(usize, String)> {
    object
        .ca_bundles()
        .into_iter()
        .enumerate()
        .filter(|(_, (_, b))| b.map(|b| b.0.as_slice()) != Some(bundle_pem.as_bytes()))
        .map(|(i, (name, _))| (i, name.to_owned()))
        .collect()
}

/// Patches the caBundle of the webhooks of `object` where it differs; whether it patched.
async fn patch_stale<K: WebhookConfiguration>(
    api: &Api<K>,
    name: &str,
    object: &K,
    bundle_pem: &str,
    report: &PatchReport,
) -> Result<bool, ClusterError> {
    let stale = stale(object, bundle_pem);
    if stale.is_empty() {
        return Ok(false);
    }
    let what = what::<K>(name);
    let indices: Vec<usize> = stale.iter().map(|(i, _)| *i).collect();
    let webhooks: Vec<&str> = stale.iter().map(|(_, n)| n.as_str()).collect();
    let result = api.patch(name, &PatchParams::default(), &Patch::<()>::Json(ca_patch(&indices, ca_pem_b64(bundle_pem)))).await;
    report(result.is_ok());
    match result {
        Ok(_) => {
            tracing::info!(configuration = %what, ?webhooks, "caBundle was missing or out of date; patched it");
            Ok(true)
        }
        Err(e) => Err(ClusterError {
            action: format!(
                "patch caBundle of {what} (webhooks {}; the ServiceAccount needs patch on it, see manifests/overlays/self-managed/rbac.yaml)",
                webhooks.join(", ")
            ),
            source: e,
        }),
    }
}

/// What the caBundle watches share with the certificate loop.
#[derive(Clone)]
pub struct BundleWatch {
    /// The caBundle this replica holds for current (its Secret's `ca.crt` as last read).
    pub current: watch::Receiver<String>,
    /// Woken when the Secret's `ca.crt` is not `current` (another replica renewed it): the
    /// certificate loop re-reads the Secret at once.
    pub secret_changed: Arc<Notify>,
    /// Told the result of every patch.
    pub report: PatchReport,
}

impl std::fmt::Debug for BundleWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleWatch").finish_non_exhaustive()
    }
}

/// Watches the webhook configuration of kind `K` named in `cfg` and patches its caBundle back
/// whenever a webhook's is missing or differs from the Secret's `ca.crt` (on the first list, on
/// every change, and when it is recreated). Never ends.
pub async fn watch_ca_bundle<K: WebhookConfiguration>(client: Client, cfg: SelfManaged, shared: BundleWatch) {
    let name = cfg.webhook_configuration.clone();
    let what = what::<K>(&name);
    let api: Api<K> = Api::all(client.clone());
    let mut stream = std::pin::pin!(list_watch(api.clone(), Some(format!("metadata.name={name}"))));
    let mut lost: Option<Instant> = None;
    let mut connected = false;
    while let Some(signal) = stream.next().await {
        match signal {
            Signal::Connected => {
                if !connected {
                    connected = true;
                    match lost.take() {
                        Some(since) => {
                            tracing::info!(configuration = %what, outage_seconds = since.elapsed().as_secs(), "caBundle watch reconnected")
                        }
                        None => tracing::debug!(configuration = %what, "caBundle watch connected"),
                    }
                }
            }
            Signal::Failed(e) => {
                if connected || lost.is_none() {
                    lost.get_or_insert_with(Instant::now);
                    tracing::warn!(configuration = %what, error = %e,
                        "caBundle watch failed; retrying (the periodic check still corrects caBundle). If this says forbidden, the ServiceAccount needs list and watch on it");
                }
                connected = false;
            }
            Signal::Event(watcher::Event::InitApply(object) | watcher::Event::Apply(object)) => {
                correct(&client, &cfg, &api, &object, &shared).await;
            }
            Signal::Event(watcher::Event::Delete(_)) => {
                tracing::info!(configuration = %what, "deleted; its caBundle is set as soon as it is created again");
            }
            Signal::Event(watcher::Event::Init | watcher::Event::InitDone) => {}
        }
    }
}

async fn correct<K: WebhookConfiguration>(client: &Client, cfg: &SelfManaged, api: &Api<K>, object: &K, shared: &BundleWatch) {
    let name = &cfg.webhook_configuration;
    let ours = shared.current.borrow().clone();
    if stale(object, &ours).is_empty() {
        return;
    }
    // Before writing, ask the Secret: another replica may have renewed it, and then its bundle
    // (which also holds ours) is the one to keep.
    let bundle = match read_secret(client, cfg).await {
        Ok(Some(cert)) => {
            if cert.ca_bundle_pem != ours {
                shared.secret_changed.notify_one();
            }
            cert.ca_bundle_pem
        }
        Ok(None) => {
            tracing::warn!(secret = %format!("{}/{}", cfg.namespace, cfg.secret), "the certificate Secret is gone; patching caBundle with the bundle in memory until the next check recreates it");
            shared.secret_changed.notify_one();
            ours
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the certificate Secret; patching caBundle with the bundle in memory");
            ours
        }
    };
    if let Err(e) = patch_stale(api, name, object, &bundle, &shared.report).await {
        tracing::error!(error = %e, "cannot correct caBundle; the apiserver cannot verify this webhook until it is set (retried on the next change and by the periodic check)");
    }
}

fn ca_pem_b64(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())
}

fn ca_patch(indices: &[usize], bundle_b64: String) -> json_patch::Patch {
    use json_patch::jsonptr::PointerBuf;
    json_patch::Patch(
        indices
            .iter()
            .map(|i| {
                json_patch::PatchOperation::Add(json_patch::AddOperation {
                    path: PointerBuf::from_tokens([String::from("webhooks"), i.to_string(), "clientConfig".into(), "caBundle".into()]),
                    value: serde_json::Value::String(bundle_b64.clone()),
                })
            })
            .collect(),
    )
}
