//! Each overlay as `kubectl kustomize` renders it (through the shared renderer in
//! `tests/support/render.rs`), every object parsed into its Kubernetes type: a field the API does
//! not know fails the test instead of being dropped.

use super::*;

/// Every object of one rendered overlay, by kind.
#[derive(Default)]
pub(crate) struct Rendered {
    pub(crate) overlay: String,
    pub(crate) namespaces: Vec<Namespace>,
    pub(crate) service_accounts: Vec<ServiceAccount>,
    pub(crate) services: Vec<Service>,
    pub(crate) deployments: Vec<Deployment>,
    pub(crate) pdbs: Vec<PodDisruptionBudget>,
    pub(crate) config_maps: Vec<ConfigMap>,
    pub(crate) cluster_roles: Vec<ClusterRole>,
    pub(crate) cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub(crate) roles: Vec<Role>,
    pub(crate) role_bindings: Vec<RoleBinding>,
    pub(crate) mutating: Vec<MutatingWebhookConfiguration>,
    pub(crate) validating: Vec<ValidatingWebhookConfiguration>,
    /// cert-manager objects (Certificate, Issuer), untyped.
    pub(crate) cert_manager: Vec<Value>,
}

/// Parses `value` as `T`, and fails if `T` does not carry every field of it back: a field the
/// Kubernetes API does not know (a typo, a wrong indentation) would otherwise be dropped
/// silently by the apiserver.
pub(crate) fn typed<T: DeserializeOwned + Serialize>(value: &Value, what: &str) -> T {
    let parsed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&parsed).unwrap_or_else(|e| panic!("{what}: cannot serialize: {e}"));
    if let Some(difference) = first_difference(value, &back, "") {
        panic!("{what}: not a valid Kubernetes object ({difference})");
    }
    parsed
}

pub(crate) fn first_difference(written: &Value, understood: &Value, path: &str) -> Option<String> {
    match (written, understood) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    None => return Some(format!("unknown field {here}")),
                    Some(other) => {
                        if let Some(d) = first_difference(value, other, &here) {
                            return Some(d);
                        }
                    }
                }
            }
            b.keys().find(|k| !a.contains_key(*k)).map(|k| format!("field {path}.{k} appeared on parsing"))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            a.iter().zip(b).enumerate().find_map(|(i, (x, y))| first_difference(x, y, &format!("{path}[{i}]")))
        }
        _ if written == understood => None,
        _ => Some(format!("{path}: {written} is read as {understood}")),
    }
}

pub(crate) fn render(overlay: &str) -> Rendered {
    render_dir(overlay, &format!("manifests/overlays/{overlay}"))
}

pub(crate) fn render_dir(overlay: &str, dir: &str) -> Rendered {
    let text = support::render::kustomize(dir);
    let mut rendered = Rendered { overlay: overlay.to_owned(), ..Rendered::default() };
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{overlay}: kustomize output is not YAML: {e}"));
    for value in documents {
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let api_version = value["apiVersion"].as_str().unwrap_or_default().to_owned();
        let name = value["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let what = format!("{overlay}: {kind} {name}");
        match kind.as_str() {
            "Namespace" => rendered.namespaces.push(typed(&value, &what)),
            "ServiceAccount" => rendered.service_accounts.push(typed(&value, &what)),
            "Service" => rendered.services.push(typed(&value, &what)),
            "Deployment" => rendered.deployments.push(typed(&value, &what)),
            "PodDisruptionBudget" => rendered.pdbs.push(typed(&value, &what)),
            "ConfigMap" => rendered.config_maps.push(typed(&value, &what)),
            "ClusterRole" => rendered.cluster_roles.push(typed(&value, &what)),
            "ClusterRoleBinding" => rendered.cluster_role_bindings.push(typed(&value, &what)),
            "Role" => rendered.roles.push(typed(&value, &what)),
            "RoleBinding" => rendered.role_bindings.push(typed(&value, &what)),
            "MutatingWebhookConfiguration" => rendered.mutating.push(typed(&value, &what)),
            "ValidatingWebhookConfiguration" => rendered.validating.push(typed(&value, &what)),
            "Certificate" | "Issuer" if api_version == "cert-manager.io/v1" => rendered.cert_manager.push(value),
            _ => panic!("{what} ({api_version}): an object of a kind these manifests should not contain"),
        }
    }
    rendered
}
