//! Whether the apiserver sends a pod to the validating webhook at all.
//!
//! The validating webhook configuration (`manifests/base/webhooks.yaml`) has one entry per level
//! of the namespace label `dind-injector.io/pod-security`. The `restricted` entry sends every pod;
//! the other (baseline) entry sends a pod only when its CEL `matchConditions` entry
//! `may-break-baseline` holds. [`baseline_prefilter`] is that expression written in Rust, for
//! `explain`, so the binary needs no CEL interpreter. It reads the pod as the apiserver puts it in
//! the request: an empty string, list or null is absent there, so it counts as absent here;
//! `tests/cel_prefilter.rs` evaluates the
//! manifest's expression with a CEL interpreter and checks that the two agree on every pod of the
//! Pod Security corpus and the fixtures.

use serde_json::Value;

use crate::annotations::{POD_SECURITY, PREFIX};
use crate::namespace::NamespaceView;

use super::standards::{BASELINE_CAPABILITIES, SAFE_SYSCTLS, SELINUX_TYPES};

const APPARMOR_ANNOTATION: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Namespaces no dind-injector webhook ever sees.
pub const EXCLUDED_NAMESPACES: &[&str] = &["kube-system", "dind-injector"];

/// Where a pod CREATE in a namespace goes, as the apiserver decides it before calling anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The namespace is not selected: no dind-injector webhook sees the pod.
    NamespaceNotSelected,
    /// The namespace is labelled `restricted`: the pod is sent.
    Restricted,
    /// The baseline entry sends the pod, for this reason.
    Sent(String),
    /// The baseline entry does not send the pod: an injector outage cannot block it.
    NotSent,
}

impl Route {
    /// Whether the validating webhook is called.
    pub fn is_sent(&self) -> bool {
        matches!(self, Route::Restricted | Route::Sent(_))
    }

    /// One line for `explain`.
    pub fn describe(&self) -> String {
        match self {
            Route::NamespaceNotSelected => "not sent: the namespace is not opted in (or is excluded)".to_owned(),
            Route::Restricted => format!("sent: the namespace is labelled {POD_SECURITY}=restricted, where every pod is checked"),
            Route::Sent(why) => format!("sent: {why}"),
            Route::NotSent => "not sent: nothing in it can break Pod Security baseline, so an injector outage does not block it".to_owned(),
        }
    }
}

/// Where the apiserver routes a pod CREATE of `pod` (as JSON, the way the apiserver binds
/// `object`) in `namespace`.
pub fn validating_route(pod: &Value, namespace: &NamespaceView) -> Route {
    if !namespace.is_opted_in() || EXCLUDED_NAMESPACES.contains(&namespace.name.as_str()) {
        return Route::NamespaceNotSelected;
    }
    if namespace.labels.get(POD_SECURITY).map(String::as_str) == Some("restricted") {
        return Route::Restricted;
    }
    baseline_prefilter(pod).map_or(Route::NotSent, Route::Sent)
}

fn str_map(v: Option<&Value>) -> impl Iterator<Item = (&String, &Value)> {
    v.and_then(Value::as_object).into_iter().flatten()
}

fn list(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

fn is_true(v: Option<&Value>) -> bool {
    v == Some(&Value::Bool(true))
}

/// `has(v.key)` as the apiserver's CEL sees it: the request's object carries no empty strings,
/// lists or nulls (Go's `omitempty`), so such a value in a file is absent in the request.
fn present<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !(x.is_null() || x.as_str() == Some("") || x.as_array().is_some_and(Vec::is_empty)))
}

/// `has(x) && !(x.type in allowed)`, where a missing `type` is not allowed.
fn type_outside(profile: Option<&Value>, allowed: &[&str]) -> bool {
    profile.is_some_and(|p| !present(p, "type").and_then(Value::as_str).is_some_and(|t| allowed.contains(&t)))
}

/// Why the `may-break-baseline` condition sends `pod`, or `None` when it does not.
pub fn baseline_prefilter(pod: &Value) -> Option<String> {
    let meta = pod.get("metadata");
    let annotations = meta.and_then(|m| m.get("annotations"));
    for (key, value) in str_map(annotations) {
        if key.starts_with(PREFIX) {
            return Some(format!("annotation {key}"));
        }
        let value = value.as_str().unwrap_or_default();
        if key.starts_with(APPARMOR_ANNOTATION) && !(value.is_empty() || value == "runtime/default" || value.starts_with("localhost/")) {
            return Some(format!("annotation {key}={value}"));
        }
    }
    if let Some((key, _)) = str_map(meta.and_then(|m| m.get("labels"))).find(|(k, _)| k.starts_with(PREFIX)) {
        return Some(format!("label {key}"));
    }
    let spec = present(pod, "spec");
    let field = |name: &str| spec.and_then(|s| present(s, name));
    for name in ["hostNetwork", "hostPID", "hostIPC"] {
        if is_true(field(name)) {
            return Some(format!("spec.{name}"));
        }
    }
    if let Some(v) = list(field("volumes")).find(|v| present(v, "hostPath").is_some()) {
        return Some(format!("hostPath volume {}", v.get("name").unwrap_or(&Value::Null)));
    }
    if let Some(why) = field("securityContext").and_then(security_context) {
        return Some(format!("pod securityContext {why}"));
    }
    let containers = list(field("initContainers")).chain(list(field("containers"))).chain(list(field("ephemeralContainers")));
    for c in containers {
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        if let Some(why) = container(c) {
            return Some(format!("container {name:?}: {why}"));
        }
    }
    None
}

fn container(c: &Value) -> Option<String> {
    if list(present(c, "ports")).any(|p| present(p, "hostPort").is_some_and(|h| h.as_i64() != Some(0))) {
        return Some("hostPort".to_owned());
    }
    let lifecycle = present(c, "lifecycle");
    let handlers = [
        ("livenessProbe", present(c, "livenessProbe")),
        ("readinessProbe", present(c, "readinessProbe")),
        ("startupProbe", present(c, "startupProbe")),
        ("lifecycle.postStart", lifecycle.and_then(|l| present(l, "postStart"))),
        ("lifecycle.preStop", lifecycle.and_then(|l| present(l, "preStop"))),
    ];
    for (name, handler) in handlers {
        for kind in ["httpGet", "tcpSocket"] {
            if handler.and_then(|h| present(h, kind)).and_then(|k| present(k, "host")).is_some() {
                return Some(format!("{name}.{kind}.host"));
            }
        }
    }
    present(c, "securityContext").and_then(security_context).map(|why| format!("securityContext {why}"))
}

/// The securityContext controls, for a container's and (with `sysctls`) the pod's alike.
fn security_context(sc: &Value) -> Option<String> {
    let get = |name: &str| present(sc, name);
    if is_true(get("privileged")) {
        return Some("privileged".to_owned());
    }
    if let Some(a) =
        list(get("capabilities").and_then(|c| present(c, "add"))).find(|a| !a.as_str().is_some_and(|a| BASELINE_CAPABILITIES.contains(&a)))
    {
        return Some(format!("capabilities.add {a}"));
    }
    if get("procMount").is_some_and(|p| p.as_str() != Some("Default")) {
        return Some("procMount".to_owned());
    }
    let confined = ["RuntimeDefault", "Localhost"];
    if type_outside(get("seccompProfile"), &confined) {
        return Some("seccompProfile".to_owned());
    }
    if type_outside(get("appArmorProfile"), &confined) {
        return Some("appArmorProfile".to_owned());
    }
    if let Some(se) = get("seLinuxOptions") {
        let custom_type = present(se, "type").is_some_and(|t| !t.as_str().is_some_and(|t| SELINUX_TYPES.contains(&t)));
        if present(se, "user").is_some() || present(se, "role").is_some() || custom_type {
            return Some("seLinuxOptions".to_owned());
        }
    }
    if is_true(get("windowsOptions").and_then(|w| present(w, "hostProcess"))) {
        return Some("windowsOptions.hostProcess".to_owned());
    }
    if let Some(s) = list(get("sysctls")).find(|s| !s.get("name").and_then(Value::as_str).is_some_and(|n| SAFE_SYSCTLS.contains(&n))) {
        return Some(format!("sysctl {}", s.get("name").unwrap_or(&Value::Null)));
    }
    None
}
