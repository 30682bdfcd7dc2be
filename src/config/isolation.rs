//! `isolation`: the RuntimeClass behind each isolation mode of the daemon (the mode itself is
//! `sidecar.isolation`, and an annotation may choose another within `overrides.allowedIsolations`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::status::Isolation;

/// The most annotations one mode may add to a pod.
pub const MAX_POD_ANNOTATIONS: usize = 32;
/// The longest value of an annotation a mode adds.
pub const MAX_POD_ANNOTATION_VALUE: usize = 4096;

/// The RuntimeClass of one isolation mode, and what else its pods need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeClassRef {
    /// The RuntimeClass object's name (what the pod's `runtimeClassName` says).
    pub runtime_class_name: String,
    /// Annotations every pod of this mode gets, unless the pod sets the key itself: what the
    /// runtime reads from the pod, e.g. `io.kubernetes.cri-o.userns-mode: "auto:size=65536"` for
    /// Sysbox on CRI-O without Kubernetes user namespaces, or
    /// `io.katacontainers.config.hypervisor.default_memory` to size Kata's VM.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
}

impl RuntimeClassRef {
    fn named(class: &str) -> Self {
        RuntimeClassRef { runtime_class_name: class.into(), pod_annotations: BTreeMap::new() }
    }
}

/// The RuntimeClasses of the isolation modes that need one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IsolationConfig {
    /// Sysbox's RuntimeClass (default `sysbox-runc`, what Sysbox's installer creates).
    pub sysbox: RuntimeClassRef,
    /// Kata's RuntimeClass (default `kata`; kata-deploy also creates `kata-qemu`, `kata-clh`, ...).
    pub kata: RuntimeClassRef,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        IsolationConfig { sysbox: RuntimeClassRef::named("sysbox-runc"), kata: RuntimeClassRef::named("kata") }
    }
}

impl IsolationConfig {
    /// The RuntimeClass `isolation` needs; none for `privileged`.
    pub fn runtime_class(&self, isolation: Isolation) -> Option<&str> {
        match isolation {
            Isolation::Privileged => None,
            Isolation::Sysbox => Some(&self.sysbox.runtime_class_name),
            Isolation::Kata => Some(&self.kata.runtime_class_name),
        }
    }

    /// The annotations pods of `isolation` get; none for `privileged`.
    pub fn pod_annotations(&self, isolation: Isolation) -> Option<&BTreeMap<String, String>> {
        match isolation {
            Isolation::Privileged => None,
            Isolation::Sysbox => Some(&self.sysbox.pod_annotations),
            Isolation::Kata => Some(&self.kata.pod_annotations),
        }
    }

    /// Every problem with `isolation.*`.
    pub(super) fn check(&self, bad: &mut dyn FnMut(&str, String)) {
        for (mode, m) in [("sysbox", &self.sysbox), ("kata", &self.kata)] {
            if let Err(e) = crate::names::check_dns_subdomain(&m.runtime_class_name) {
                bad(&format!("isolation.{mode}.runtimeClassName"), format!("{e} (a RuntimeClass name)"));
            }
            let path = format!("isolation.{mode}.podAnnotations");
            if m.pod_annotations.len() > MAX_POD_ANNOTATIONS {
                bad(&path, format!("{} annotations; at most {MAX_POD_ANNOTATIONS}", m.pod_annotations.len()));
            }
            for (key, value) in &m.pod_annotations {
                if let Err(e) = check_annotation_key(key) {
                    bad(&format!("{path}.{key}"), e);
                }
                if value.len() > MAX_POD_ANNOTATION_VALUE {
                    bad(&format!("{path}.{key}"), format!("the value is {} bytes; at most {MAX_POD_ANNOTATION_VALUE}", value.len()));
                }
            }
        }
        if self.sysbox.runtime_class_name == self.kata.runtime_class_name {
            bad(
                "isolation.kata.runtimeClassName",
                "must differ from isolation.sysbox.runtimeClassName: one RuntimeClass is one runtime".into(),
            );
        }
    }
}

/// Whether `key` is an annotation key the apiserver takes (`[prefix/]name`, the prefix a DNS
/// subdomain, the name at most 63 characters of alphanumerics, `-`, `_`, `.`, alphanumeric at both
/// ends) and not one of dind-injector's own.
fn check_annotation_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        crate::names::check_dns_subdomain(prefix).map_err(|e| format!("the key's prefix: {e}"))?;
        if prefix == "dind-injector.io" || prefix.ends_with(".dind-injector.io") {
            return Err("dind-injector's own annotations are not set through the configuration".into());
        }
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty()
        || name.len() > 63
        || !edge_ok(name.chars().next())
        || !edge_ok(name.chars().last())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{name:?} is not an annotation name: at most 63 characters of letters, digits, '-', '_' and '.', beginning and ending with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_classes_are_checked() {
        for i in Isolation::ALL {
            assert_eq!(Isolation::parse(i.as_str()), Some(i));
        }
        assert_eq!(Isolation::parse("gvisor"), None);
        let mut out = Vec::new();
        IsolationConfig::default().check(&mut |p, m| out.push(format!("{p}: {m}")));
        assert!(out.is_empty(), "{out:?}");
        let same = IsolationConfig { kata: RuntimeClassRef::named("sysbox-runc"), ..IsolationConfig::default() };
        let bad = IsolationConfig { sysbox: RuntimeClassRef::named("Sysbox_RUNC"), ..IsolationConfig::default() };
        let with = |key: &str, value: &str| {
            let mut c = IsolationConfig::default();
            c.kata.pod_annotations.insert(key.into(), value.into());
            c
        };
        for good in ["io.katacontainers.config.hypervisor.default_memory", "io.kubernetes.cri-o.userns-mode", "plain"] {
            let mut out = Vec::new();
            with(good, "4096").check(&mut |p, m| out.push(format!("{p}: {m}")));
            assert!(out.is_empty(), "{good}: {out:?}");
        }
        let own = with("dind-injector.io/status", "{}");
        let bad_name = with("example.com/-x", "1");
        let bad_prefix = with("Example_COM/x", "1");
        let long = with("x", &"v".repeat(MAX_POD_ANNOTATION_VALUE + 1));
        for c in [same, bad, own, bad_name, bad_prefix, long] {
            let mut out = Vec::new();
            c.check(&mut |p, m| out.push(format!("{p}: {m}")));
            assert_eq!(out.len(), 1, "{out:?}");
        }
    }
}
