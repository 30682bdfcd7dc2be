//! An isolation mode as one value: what the pod gets, what the sidecar's security context is,
//! what the validating webhook exempts and checks, how the daemon starts and what the mode
//! refuses. The mutating path (`decide`, `sidecar::build`, `isolation::add_to_pod`), the
//! validating path and `explain` all read it, so a mode is a row of [`Mode::of`], not a branch in
//! each of them.

use k8s_openapi::api::core::v1::{Capabilities, SeccompProfile, SecurityContext};

use crate::config::{Config, Isolation};

use super::KubeVersion;

/// Whether the pod runs in a user namespace of its own, and how firmly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserNamespace {
    /// The pod keeps whatever it says (`hostUsers` unset: the node's user namespace).
    Untouched,
    /// The pod gets `hostUsers: false`; a pod stored without it is admitted (an apiserver whose
    /// `UserNamespacesSupport` gate is off drops the field before the validating webhooks, and
    /// Sysbox makes a user namespace of its own then); only `hostUsers: true` is tampering.
    Added,
    /// The pod gets `hostUsers: false` and must keep it: without it the sidecar's capabilities
    /// would be root's on the node.
    Required,
}

/// What the sidecar's security context holds beyond `runAsUser: 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarSecurity {
    /// `privileged: true` (on the node, or in the Kata VM).
    pub privileged: bool,
    /// Capabilities added to the runtime's default set.
    pub add_capabilities: &'static [&'static str],
    /// `procMount: Unmasked` (dockerd writes `/proc/sys` for each container's network).
    pub proc_mount_unmasked: bool,
    /// The seccomp profile, when the mode sets one.
    pub seccomp: Option<SeccompProfile>,
}

/// One isolation mode, resolved against the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Mode {
    /// Which mode.
    pub isolation: Isolation,
    /// The RuntimeClass the pod gets and must keep (and the cluster must have), if any.
    pub runtime_class: Option<String>,
    /// Whether the pod gets `hostUsers: false`.
    pub user_namespace: UserNamespace,
    /// The sidecar's privileges.
    pub security: SidecarSecurity,
    /// Whether the validating webhook exempts the sidecar from the namespace's Pod Security level
    /// (so the namespace must enforce `privileged`): the sidecar breaks baseline as it is.
    pub exempt: bool,
    /// Whether the sidecar puts dockerd's data root on an ext4 loop disk (Kata: virtio-fs cannot be
    /// overlayfs's upper layer).
    pub loop_disk: bool,
    /// Whether the sidecar decides at start between plain dockerd (a writable, delegated cgroup)
    /// and `dockerd --rootless` (no cgroup to write: inner limits not applied).
    pub cgroup_probe: bool,
    /// The oldest Kubernetes the mode runs on.
    pub min_version: Option<KubeVersion>,
    /// Why the node cache cannot serve this mode, if it cannot (some modes only at baseline).
    pub no_cache: Option<&'static str>,
    /// Whether NFS volumes keep the pod out (they cannot be id-mapped).
    pub refuses_nfs: bool,
}

/// The capabilities the `userns` sidecar adds (measured on kubelet v1.36.2, issue 33): without
/// `SYS_ADMIN` the image's `dind` wrapper cannot mount its /tmp; without `NET_ADMIN` dockerd cannot
/// write iptables rules. No others.
pub const USERNS_CAPABILITIES: [&str; 2] = ["SYS_ADMIN", "NET_ADMIN"];

/// The first Kubernetes with user namespaces for pods on by default (beta, `UserNamespacesSupport`).
pub const USER_NAMESPACES_SINCE: KubeVersion = KubeVersion { major: 1, minor: 33 };

impl Mode {
    /// The mode `isolation` with `config`'s classes and profiles.
    pub fn of(isolation: Isolation, config: &Config) -> Mode {
        let unprivileged = SidecarSecurity { privileged: false, add_capabilities: &[], proc_mount_unmasked: false, seccomp: None };
        let iso = &config.isolation;
        let row = |user_namespace, security, exempt| Mode {
            isolation,
            runtime_class: iso.runtime_class(isolation).map(str::to_owned),
            user_namespace,
            security,
            exempt,
            loop_disk: false,
            cgroup_probe: false,
            min_version: None,
            no_cache: None,
            refuses_nfs: false,
        };
        let privileged = SidecarSecurity { privileged: true, ..unprivileged.clone() };
        match isolation {
            Isolation::Privileged => row(UserNamespace::Untouched, privileged, true),
            Isolation::Sysbox => row(UserNamespace::Added, unprivileged, false),
            Isolation::Kata => Mode {
                loop_disk: true,
                no_cache: Some("a Kata pod runs its own kernel, so the slot lock would not hold between pods"),
                ..row(UserNamespace::Untouched, privileged, true)
            },
            Isolation::Userns => {
                // The configuration spells it as the pod's field does (checked when it loads).
                let profile = &iso.userns.seccomp_profile;
                let seccomp = SeccompProfile { type_: profile.type_.clone(), localhost_profile: profile.localhost_profile.clone() };
                let security = SidecarSecurity {
                    privileged: false,
                    add_capabilities: &USERNS_CAPABILITIES,
                    proc_mount_unmasked: true,
                    seccomp: Some(seccomp),
                };
                Mode {
                    cgroup_probe: true,
                    min_version: Some(USER_NAMESPACES_SINCE),
                    no_cache: Some(
                        "the kubelet id-maps the cache's hostPath into each pod's own id range, and a slot shared that way is not yet proven in dind-injector's tests",
                    ),
                    refuses_nfs: true,
                    ..row(UserNamespace::Required, security, true)
                }
            }
        }
    }

    /// The sidecar's security context: root in its container (in the pod's user namespace where
    /// the mode makes one), with the mode's privileges.
    pub fn security_context(&self) -> SecurityContext {
        let s = &self.security;
        SecurityContext {
            privileged: s.privileged.then_some(true),
            capabilities: (!s.add_capabilities.is_empty())
                .then(|| Capabilities { add: Some(s.add_capabilities.iter().map(|c| (*c).to_owned()).collect()), drop: None }),
            proc_mount: s.proc_mount_unmasked.then(|| "Unmasked".to_owned()),
            seccomp_profile: s.seccomp.clone(),
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            ..SecurityContext::default()
        }
    }

    /// What `explain` says the mode asks of the cluster and gives the pod.
    pub fn summary(&self) -> String {
        let class = self.runtime_class.as_deref().unwrap_or_default();
        match self.isolation {
            Isolation::Privileged => "the sidecar is privileged on the node: the namespace must enforce Pod Security privileged, and the validating webhook exempts that one container".to_owned(),
            Isolation::Sysbox => "the sidecar is unprivileged, root only in the pod's user namespace (hostUsers: false): the pod meets Pod Security baseline as it is, with no exemption".to_owned(),
            Isolation::Kata => format!(
                "the sidecar is privileged inside the Kata VM (its data root an ext4 loop disk on the emptyDir where virtio-fs cannot take overlayfs): the namespace must enforce Pod Security privileged, and the validating webhook exempts it only while the pod keeps RuntimeClass {class:?}"
            ),
            Isolation::Userns => format!(
                "the pod runs in a user namespace of its own (hostUsers: false, Kubernetes 1.33+): the sidecar is not privileged, adds only {}, procMount Unmasked and seccomp {}; root in the pod is an unprivileged uid on the node. The namespace must enforce Pod Security privileged, and the validating webhook exempts exactly this sidecar only while the pod keeps hostUsers: false{}. dockerd decides at start: plain, with inner --memory/--cpus, where the pod's cgroup is writable and delegated; otherwise --rootless, where inner limits are not applied (the pod's own limits still hold), and its log says which",
                self.security.add_capabilities.join(" and "),
                self.security.seccomp.as_ref().map_or_else(String::new, |p| match &p.localhost_profile {
                    Some(path) => format!("Localhost ({path})"),
                    None => p.type_.clone(),
                }),
                if class.is_empty() { String::new() } else { format!(" and RuntimeClass {class:?}") }
            ),
        }
    }
}
