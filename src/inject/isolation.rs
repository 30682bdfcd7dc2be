//! Isolation modes: whether a pod can take the one it gets, whether the cluster can serve it,
//! and what it adds to the pod.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodSpec;

use crate::config::{Config, Isolation};

use super::patch::PatchBuilder;
use super::{ClusterInfo, RuntimeClasses, SkipReason};

/// Why `spec` cannot run with `isolation` (whose RuntimeClass is `class`), if it cannot.
pub fn unsuited(spec: &PodSpec, isolation: Isolation, class: &str) -> Option<String> {
    if isolation == Isolation::Privileged {
        return None;
    }
    if let Some(other) = spec.runtime_class_name.as_deref().filter(|c| !c.is_empty() && *c != class) {
        return Some(format!("it already sets runtimeClassName {other:?}, and {} needs {class:?}", isolation.as_str()));
    }
    if spec.host_pid == Some(true) {
        return Some(format!("it uses hostPID, which a {} pod cannot share", isolation.as_str()));
    }
    if spec.host_ipc == Some(true) {
        return Some(format!("it uses hostIPC, which a {} pod cannot share", isolation.as_str()));
    }
    if isolation == Isolation::Sysbox {
        if spec.host_users == Some(true) {
            return Some("it sets hostUsers: true, and Sysbox needs the pod in a user namespace (hostUsers: false)".into());
        }
        let containers = spec.init_containers.iter().flatten().chain(&spec.containers);
        if let Some(c) = containers.into_iter().find(|c| c.security_context.as_ref().and_then(|s| s.privileged) == Some(true)) {
            return Some(format!(
                "its container {:?} is privileged, which Sysbox refuses (root in a Sysbox pod is root in its user namespace only)",
                c.name
            ));
        }
    }
    None
}

/// Whether the cluster has `isolation`'s RuntimeClass; the reason not to inject when it does not,
/// or cannot be told.
pub fn class_problem(isolation: Isolation, config: &Config, cluster: &ClusterInfo) -> Option<SkipReason> {
    let class = config.isolation.runtime_class(isolation)?;
    match &cluster.runtime_classes {
        RuntimeClasses::NotChecked => None,
        RuntimeClasses::Known(names) if names.contains(class) => None,
        RuntimeClasses::Known(_) => Some(SkipReason::RuntimeClassMissing { isolation: isolation.as_str(), class: class.to_owned() }),
        RuntimeClasses::Syncing => {
            Some(SkipReason::RuntimeClassesUnknown { isolation: isolation.as_str(), class: class.to_owned(), error: None })
        }
        RuntimeClasses::Unlisted(error) => Some(SkipReason::RuntimeClassesUnknown {
            isolation: isolation.as_str(),
            class: class.to_owned(),
            error: Some(Arc::clone(error)),
        }),
    }
}

/// Adds the pod-level fields of `isolation`: its runtime class, for Sysbox `hostUsers: false`,
/// and the mode's `podAnnotations` the pod does not set itself. Whether the pod has annotations
/// afterwards.
pub fn add_to_pod(
    patch: &mut PatchBuilder,
    spec: &PodSpec,
    annotations: Option<&BTreeMap<String, String>>,
    isolation: Isolation,
    config: &Config,
) -> bool {
    let mut has_annotations = annotations.is_some();
    let Some(class) = config.isolation.runtime_class(isolation) else {
        return has_annotations;
    };
    if spec.runtime_class_name.as_deref() != Some(class) {
        patch.add(&["spec", "runtimeClassName"], class);
    }
    if isolation == Isolation::Sysbox && spec.host_users != Some(false) {
        patch.add(&["spec", "hostUsers"], &false);
    }
    for (key, value) in config.isolation.pod_annotations(isolation).into_iter().flatten() {
        if !annotations.is_some_and(|a| a.contains_key(key)) {
            patch.insert(&["metadata", "annotations"], has_annotations, key, value);
            has_annotations = true;
        }
    }
    has_annotations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn pods_that_cannot_take_a_mode_say_why() {
        let plain = spec(serde_json::json!({"containers": [{"name": "build"}]}));
        for i in Isolation::ALL {
            assert_eq!(unsuited(&plain, i, "c"), None, "{i:?}");
        }
        let cases = [
            (serde_json::json!({"runtimeClassName": "gvisor", "containers": []}), "runtimeClassName \"gvisor\""),
            (serde_json::json!({"hostPID": true, "containers": []}), "hostPID"),
            (serde_json::json!({"hostIPC": true, "containers": []}), "hostIPC"),
        ];
        for (s, why) in cases {
            for i in [Isolation::Sysbox, Isolation::Kata] {
                let got = unsuited(&spec(s.clone()), i, "c").unwrap_or_default();
                assert!(got.contains(why), "{i:?}: {got}");
            }
            assert_eq!(unsuited(&spec(s), Isolation::Privileged, "c"), None);
        }
        let privileged = spec(serde_json::json!({"containers": [{"name": "tool", "securityContext": {"privileged": true}}]}));
        assert!(unsuited(&privileged, Isolation::Sysbox, "c").is_some_and(|w| w.contains("\"tool\" is privileged")));
        assert_eq!(unsuited(&privileged, Isolation::Kata, "c"), None);
        let host_users = spec(serde_json::json!({"hostUsers": true, "containers": []}));
        assert!(unsuited(&host_users, Isolation::Sysbox, "c").is_some_and(|w| w.contains("hostUsers")));
        let same_class = spec(serde_json::json!({"runtimeClassName": "c", "containers": []}));
        assert_eq!(unsuited(&same_class, Isolation::Kata, "c"), None);
    }
}
