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

/// The `userns` mode's settings: no RuntimeClass is needed (stock Kubernetes 1.33+ runs
/// `hostUsers: false` pods with containerd 2.0+ and runc 1.2+, or CRI-O), but one may be named,
/// for a runtime handler that gives the pod a writable cgroup (containerd's `cgroup_writable`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct UsernsConfig {
    /// The RuntimeClass the pods get, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// Annotations every `userns` pod gets, unless the pod sets the key itself.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// The sidecar's seccomp profile: `Unconfined` (the default), or `Localhost` with a profile
    /// installed on every node (docs/isolation.md has one: the runtime's default plus `keyctl` and
    /// `pivot_root`, which dockerd's containers need in a user namespace).
    pub seccomp_profile: SeccompConfig,
}

/// A seccomp profile as the pod's `seccompProfile` field spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeccompConfig {
    /// `Unconfined` or `Localhost`.
    #[serde(rename = "type")]
    pub type_: String,
    /// With `Localhost`: the profile's path under the kubelet's seccomp directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

impl Default for SeccompConfig {
    fn default() -> Self {
        SeccompConfig { type_: "Unconfined".into(), localhost_profile: None }
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
    /// The `userns` mode (no RuntimeClass needed).
    pub userns: UsernsConfig,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        IsolationConfig {
            sysbox: RuntimeClassRef::named("sysbox-runc"),
            kata: RuntimeClassRef::named("kata"),
            userns: UsernsConfig::default(),
        }
    }
}

impl IsolationConfig {
    /// The RuntimeClass `isolation`'s pods get; none for `privileged`, and for `userns` unless one
    /// is configured.
    pub fn runtime_class(&self, isolation: Isolation) -> Option<&str> {
        match isolation {
            Isolation::Privileged => None,
            Isolation::Sysbox => Some(&self.sysbox.runtime_class_name),
            Isolation::Kata => Some(&self.kata.runtime_class_name),
            Isolation::Userns => self.userns.runtime_class_name.as_deref(),
        }
    }

    /// The annotations pods of `isolation` get; none for `privileged`.
    pub fn pod_annotations(&self, isolation: Isolation) -> Option<&BTreeMap<String, String>> {
        match isolation {
            Isolation::Privileged => None,
            Isolation::Sysbox => Some(&self.sysbox.pod_annotations),
            Isolation::Kata => Some(&self.kata.pod_annotations),
            Isolation::Userns => Some(&self.userns.pod_annotations),
        }
    }

    /// Every problem with `isolation.*`.
    pub(super) fn check(&self, bad: &mut dyn FnMut(&str, String)) {
        let classes = [("sysbox", Some(&self.sysbox.runtime_class_name)), ("kata", Some(&self.kata.runtime_class_name))];
        let classes = classes.into_iter().chain([("userns", self.userns.runtime_class_name.as_ref())]);
        for (mode, class) in classes {
            if let Some(Err(e)) = class.map(|c| crate::names::check_dns_subdomain(c)) {
                bad(&format!("isolation.{mode}.runtimeClassName"), format!("{e} (a RuntimeClass name)"));
            }
        }
        for (mode, annotations) in
            [("sysbox", &self.sysbox.pod_annotations), ("kata", &self.kata.pod_annotations), ("userns", &self.userns.pod_annotations)]
        {
            let path = format!("isolation.{mode}.podAnnotations");
            if annotations.len() > MAX_POD_ANNOTATIONS {
                bad(&path, format!("{} annotations; at most {MAX_POD_ANNOTATIONS}", annotations.len()));
            }
            for (key, value) in annotations {
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
        let seccomp = &self.userns.seccomp_profile;
        match (seccomp.type_.as_str(), seccomp.localhost_profile.as_deref()) {
            ("Unconfined", None) => {}
            ("Unconfined", Some(_)) => bad("isolation.userns.seccompProfile.localhostProfile", "is only read with type Localhost".into()),
            ("Localhost", Some(p)) if !p.is_empty() && !p.starts_with('/') && !p.split('/').any(|s| s == "..") && p.len() <= 255 => {}
            ("Localhost", _) => bad(
                "isolation.userns.seccompProfile.localhostProfile",
                "type Localhost needs the profile's path relative to the kubelet's seccomp directory (for example profiles/dind-userns.json; no leading /, no ..)".into(),
            ),
            (other, _) => bad(
                "isolation.userns.seccompProfile.type",
                format!("{other:?} is not Unconfined or Localhost (RuntimeDefault blocks keyctl, which every container dockerd starts in a user namespace needs)"),
            ),
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

    #[test]
    fn the_userns_seccomp_profile_is_unconfined_or_a_localhost_path() {
        let problems = |type_: &str, path: Option<&str>| {
            let mut c = IsolationConfig::default();
            c.userns.seccomp_profile = SeccompConfig { type_: type_.into(), localhost_profile: path.map(str::to_owned) };
            let mut out = Vec::new();
            c.check(&mut |p, m| out.push(format!("{p}: {m}")));
            out
        };
        assert!(problems("Unconfined", None).is_empty());
        assert!(problems("Localhost", Some("profiles/dind-userns.json")).is_empty());
        for (t, p, want) in [
            ("RuntimeDefault", None, "keyctl"),
            ("Localhost", None, "needs the profile's path"),
            ("Localhost", Some("/etc/x.json"), "no leading /"),
            ("Localhost", Some("../x.json"), "no .."),
            ("Unconfined", Some("x.json"), "only read with type Localhost"),
        ] {
            let out = problems(t, p);
            assert!(out.len() == 1 && out[0].contains(want), "{t} {p:?}: {out:?}");
        }
        let mut c = IsolationConfig::default();
        c.userns.runtime_class_name = Some("Not_A_Name".into());
        let mut out = Vec::new();
        c.check(&mut |p, m| out.push(format!("{p}: {m}")));
        assert!(out.iter().any(|o| o.starts_with("isolation.userns.runtimeClassName")), "{out:?}");
    }
}
