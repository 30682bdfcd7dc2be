//! `isolation`: the RuntimeClass behind each isolation mode of the daemon (the mode itself is
//! `sidecar.isolation`, and an annotation may choose another within `overrides.allowedIsolations`).

use serde::{Deserialize, Serialize};

pub use crate::status::Isolation;

/// The RuntimeClass of one isolation mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeClassRef {
    /// The RuntimeClass object's name (what the pod's `runtimeClassName` says).
    pub runtime_class_name: String,
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
        IsolationConfig {
            sysbox: RuntimeClassRef { runtime_class_name: "sysbox-runc".into() },
            kata: RuntimeClassRef { runtime_class_name: "kata".into() },
        }
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

    /// Every problem with `isolation.*`.
    pub(super) fn check(&self, bad: &mut dyn FnMut(&str, String)) {
        for (path, class) in [
            ("isolation.sysbox.runtimeClassName", &self.sysbox.runtime_class_name),
            ("isolation.kata.runtimeClassName", &self.kata.runtime_class_name),
        ] {
            if let Err(e) = crate::names::check_dns_subdomain(class) {
                bad(path, format!("{e} (a RuntimeClass name)"));
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
        let same = IsolationConfig { kata: RuntimeClassRef { runtime_class_name: "sysbox-runc".into() }, ..IsolationConfig::default() };
        let bad = IsolationConfig { sysbox: RuntimeClassRef { runtime_class_name: "Sysbox_RUNC".into() }, ..IsolationConfig::default() };
        for c in [same, bad] {
            let mut out = Vec::new();
            c.check(&mut |p, m| out.push(format!("{p}: {m}")));
            assert_eq!(out.len(), 1, "{out:?}");
        }
    }
}
