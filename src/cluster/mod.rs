//! In the cluster: the namespace cache, the daemon.json ConfigMap sync, the apiserver version,
//! and self-managed certificates. Each is a thin layer over `kube`, tested against recorded
//! apiserver exchanges (`tests/cluster.rs`); the decisions stay in the pure core.

pub mod ca_bundle;
pub mod certs;
pub mod daemon_config;
pub mod list_watch;
pub mod namespaces;
pub mod runtime_classes;
pub mod version;

use k8s_openapi::api::admissionregistration::v1 as admissionregistration;

/// The field manager for server-side apply, and the value of the managed-by label.
pub const FIELD_MANAGER: &str = "dind-injector";
/// The label marking objects dind-injector manages (and may change or delete).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Why a call to the apiserver failed, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {source}")]
pub struct ClusterError {
    /// What was being done (`create Secret dind-injector/dind-injector-tls`).
    pub action: String,
    /// The apiserver's or the client's error.
    #[source]
    pub source: kube::Error,
}

impl ClusterError {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match &self.source {
            kube::Error::Api(s) if s.code == 403 => "forbidden",
            kube::Error::Api(s) if s.code == 409 => "conflict",
            kube::Error::Api(s) if s.code == 404 => "not-found",
            kube::Error::Api(_) => "api",
            _ => "transport",
        }
    }
}

/// Wraps a kube error with the action.
pub(crate) fn at(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
    let action = action.into();
    move |source| ClusterError { action, source }
}

/// The HTTP status of an API error, if it is one.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A webhook configuration kind whose webhooks carry a `clientConfig.caBundle` (the caBundle
/// watch patches them; certificate creation reads the CAs they trust).
pub trait WebhookConfiguration:
    kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// Each webhook's name and caBundle, in order.
    fn ca_bundles(&self) -> Vec<(&str, Option<&k8s_openapi::ByteString>)>;
}

impl WebhookConfiguration for admissionregistration::MutatingWebhookConfiguration {
    fn ca_bundles(&self) -> Vec<(&str, Option<&k8s_openapi::ByteString>)> {
        self.webhooks.iter().flatten().map(|w| (w.name.as_str(), w.client_config.ca_bundle.as_ref())).collect()
    }
}

impl WebhookConfiguration for admissionregistration::ValidatingWebhookConfiguration {
    fn ca_bundles(&self) -> Vec<(&str, Option<&k8s_openapi::ByteString>)> {
        self.webhooks.iter().flatten().map(|w| (w.name.as_str(), w.client_config.ca_bundle.as_ref())).collect()
    }
}
