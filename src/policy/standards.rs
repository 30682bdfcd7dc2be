//! The Pod Security Standards (baseline and restricted), control by control, as the Kubernetes
//! documentation defines them and Pod Security Admission checks them at its latest version.
//! Control ids are those of the Pod Security Admission checks, so the two can be compared.

use k8s_openapi::api::core::v1::{Capabilities, ContainerPort, Pod, PodSecurityContext, PodSpec, SecurityContext, VolumeMount};

pub use crate::config::Level;

/// One control of the standards (plus dind-injector's own Docker-socket check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Control {
    /// Windows HostProcess containers.
    HostProcess,
    /// hostNetwork, hostPID, hostIPC.
    HostNamespaces,
    /// Privileged containers.
    Privileged,
    /// Capabilities beyond the baseline default set.
    CapabilitiesBaseline,
    /// hostPath volumes.
    HostPathVolumes,
    /// hostPort.
    HostPorts,
    /// AppArmor profiles other than runtime/default or localhost.
    AppArmor,
    /// SELinux type, user and role.
    SeLinux,
    /// /proc mount type.
    ProcMount,
    /// seccomp Unconfined.
    SeccompBaseline,
    /// Unsafe sysctls.
    Sysctls,
    /// Volume types outside the restricted list.
    RestrictedVolumes,
    /// allowPrivilegeEscalation not false.
    AllowPrivilegeEscalation,
    /// runAsNonRoot not true.
    RunAsNonRoot,
    /// runAsUser 0.
    RunAsUser,
    /// seccomp not RuntimeDefault or Localhost.
    SeccompRestricted,
    /// Capabilities not dropping ALL, or adding more than NET_BIND_SERVICE.
    CapabilitiesRestricted,
    /// Probes and lifecycle hooks aimed at another host (`httpGet.host`, `tcpSocket.host`).
    HostProbes,
    /// A hostPath mount of a Docker (or containerd, CRI-O) socket: root on the node. Not a PSA check.
    DockerSocket,
}

impl Control {
    /// The Pod Security Admission check id (`privileged`, `capabilities_baseline`, …);
    /// `dockerSocket` for dind-injector's own check.
    pub fn id(self) -> &'static str {
        match self {
            Control::HostProcess => "hostProcess",
            Control::HostNamespaces => "hostNamespaces",
            Control::Privileged => "privileged",
            Control::CapabilitiesBaseline => "capabilities_baseline",
            Control::HostPathVolumes => "hostPathVolumes",
            Control::HostPorts => "hostPorts",
            Control::AppArmor => "appArmorProfile",
            Control::SeLinux => "seLinuxOptions",
            Control::ProcMount => "procMount",
            Control::SeccompBaseline => "seccompProfile_baseline",
            Control::Sysctls => "sysctls",
            Control::RestrictedVolumes => "restrictedVolumes",
            Control::AllowPrivilegeEscalation => "allowPrivilegeEscalation",
            Control::RunAsNonRoot => "runAsNonRoot",
            Control::RunAsUser => "runAsUser",
            Control::SeccompRestricted => "seccompProfile_restricted",
            Control::CapabilitiesRestricted => "capabilities_restricted",
            Control::HostProbes => "hostProbesAndHostLifecycle",
            Control::DockerSocket => "dockerSocket",
        }
    }
}

/// One violated control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The control.
    pub control: Control,
    /// The container, or `None` for a pod-level field.
    pub container: Option<String>,
    /// The field path (`spec.containers[0].securityContext.privileged`).
    pub field: String,
    /// The offending value.
    pub value: String,
    /// The fix, in words a CI user understands.
    pub fix: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.container {
            Some(c) => write!(f, "container {c:?}: {}={} ({}); fix: {}", self.field, self.value, self.control.id(), self.fix),
            None => write!(f, "pod: {}={} ({}); fix: {}", self.field, self.value, self.control.id(), self.fix),
        }
    }
}

/// Capabilities a baseline container may add.
pub const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls a baseline pod may set.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// SELinux types a baseline container may use (empty means the runtime default).
pub const SELINUX_TYPES: &[&str] = &["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"];

/// Volume sources a restricted pod may use (`image` since Pod Security v1.36, as the apiserver allows).
pub const RESTRICTED_VOLUME_SOURCES: &[&str] =
    &["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim", "projected", "secret"];

/// AppArmor annotation prefix (deprecated form, still checked).
const APPARMOR_ANNOTATION: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Host paths that are a container runtime's socket, or a directory holding one.
fn is_runtime_socket(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    let sockets = ["docker.sock", "containerd.sock", "crio.sock", "cri-dockerd.sock", "podman.sock"];
    sockets.iter().any(|s| p.ends_with(&format!("/{s}")))
        || matches!(
            p,
            "/var/run"
                | "/run"
                | "/var/run/docker"
                | "/run/docker"
                | "/run/containerd"
                | "/var/run/containerd"
                | "/var/run/crio"
                | "/run/crio"
                | ""
        )
}

/// A container of any kind, seen through the fields the standards check.
struct ContainerView<'a> {
    path: String,
    name: &'a str,
    /// (field path, host) of every probe and lifecycle handler that names a host.
    probe_hosts: Vec<(String, &'a str)>,
    sc: Option<&'a SecurityContext>,
    ports: &'a [ContainerPort],
    mounts: &'a [VolumeMount],
}

/// Hosts named by probes and lifecycle handlers, with their field paths.
fn probe_hosts<'a>(
    probes: [(&str, Option<&'a k8s_openapi::api::core::v1::Probe>); 3],
    lifecycle: Option<&'a k8s_openapi::api::core::v1::Lifecycle>,
) -> Vec<(String, &'a str)> {
    let mut out = Vec::new();
    for (name, probe) in probes {
        if let Some(p) = probe {
            if let Some(h) = p.http_get.as_ref().and_then(|g| g.host.as_deref()) {
                out.push((format!("{name}.httpGet.host"), h));
            }
            if let Some(h) = p.tcp_socket.as_ref().and_then(|t| t.host.as_deref()) {
                out.push((format!("{name}.tcpSocket.host"), h));
            }
        }
    }
    for (name, handler) in
        [("postStart", lifecycle.and_then(|l| l.post_start.as_ref())), ("preStop", lifecycle.and_then(|l| l.pre_stop.as_ref()))]
    {
        if let Some(hd) = handler {
            if let Some(h) = hd.http_get.as_ref().and_then(|g| g.host.as_deref()) {
                out.push((format!("lifecycle.{name}.httpGet.host"), h));
            }
            if let Some(h) = hd.tcp_socket.as_ref().and_then(|t| t.host.as_deref()) {
                out.push((format!("lifecycle.{name}.tcpSocket.host"), h));
            }
        }
    }
    out
}

/// The same view of a container, init container or ephemeral container (three types with the
/// same field names).
macro_rules! view {
    ($c:expr, $path:expr) => {
        ContainerView {
            path: $path,
            name: &$c.name,
            probe_hosts: probe_hosts(
                [
                    ("livenessProbe", $c.liveness_probe.as_ref()),
                    ("readinessProbe", $c.readiness_probe.as_ref()),
                    ("startupProbe", $c.startup_probe.as_ref()),
                ],
                $c.lifecycle.as_ref(),
            ),
            sc: $c.security_context.as_ref(),
            ports: $c.ports.as_deref().unwrap_or_default(),
            mounts: $c.volume_mounts.as_deref().unwrap_or_default(),
        }
    };
}

fn containers(spec: &PodSpec) -> Vec<ContainerView<'_>> {
    let init = spec.init_containers.iter().flatten().enumerate().map(|(i, c)| view!(c, format!("spec.initContainers[{i}]")));
    let regular = spec.containers.iter().enumerate().map(|(i, c)| view!(c, format!("spec.containers[{i}]")));
    let ephemeral = spec.ephemeral_containers.iter().flatten().enumerate().map(|(i, c)| view!(c, format!("spec.ephemeralContainers[{i}]")));
    init.chain(regular).chain(ephemeral).collect()
}

struct Checker<'a> {
    out: Vec<Violation>,
    spec: &'a PodSpec,
    pod_sc: Option<&'a PodSecurityContext>,
    /// The exempt sidecar's node cache volume: not a hostPath volume of the pod's to report.
    exempt_volume: Option<&'a str>,
}

impl Checker<'_> {
    fn pod(&mut self, control: Control, field: &str, value: impl Into<String>, fix: &str) {
        self.out.push(Violation { control, container: None, field: field.to_owned(), value: value.into(), fix: fix.to_owned() });
    }

    fn container(&mut self, control: Control, c: &ContainerView<'_>, field: &str, value: impl Into<String>, fix: &str) {
        self.out.push(Violation {
            control,
            container: Some(c.name.to_owned()),
            field: format!("{}.{field}", c.path),
            value: value.into(),
            fix: fix.to_owned(),
        });
    }
}

/// Every violation of `level` in `pod`; the container named `exempt` is not checked (pod-level
/// fields still are).
pub fn check_pod_security(pod: &Pod, level: Level, exempt: Option<&str>) -> Vec<Violation> {
    check_pod_security_except(pod, level, exempt, None)
}

/// [`check_pod_security`], with the volume named `exempt_volume` (the exempt sidecar's node cache)
/// not counted as a hostPath volume of the pod; any other container mounting it is a violation.
pub fn check_pod_security_except(pod: &Pod, level: Level, exempt: Option<&str>, exempt_volume: Option<&str>) -> Vec<Violation> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let all = containers(spec);
    let checked: Vec<&ContainerView<'_>> = all.iter().filter(|c| Some(c.name) != exempt).collect();
    let mut k = Checker { out: Vec::new(), spec, pod_sc: spec.security_context.as_ref(), exempt_volume };
    baseline(&mut k, pod, &checked, level);
    if level == Level::Restricted {
        restricted(&mut k, &checked);
        // As in Pod Security Admission, a restricted check replaces its baseline counterpart.
        k.out.retain(|v| !matches!(v.control, Control::CapabilitiesBaseline | Control::HostPathVolumes | Control::SeccompBaseline));
    }
    if let Some(volume) = exempt_volume {
        for c in checked.iter().filter(|c| c.mounts.iter().any(|m| m.name == volume)) {
            k.container(
                if level == Level::Restricted { Control::RestrictedVolumes } else { Control::HostPathVolumes },
                c,
                "volumeMounts",
                volume,
                "only the dind sidecar may mount dind-injector's node cache (a hostPath); remove this mount",
            );
        }
    }
    k.out
}

/// A pod in its own user namespace (`hostUsers: false`): root in it is not root on the node, so
/// Pod Security (since v1.35) relaxes runAsNonRoot and runAsUser, and baseline allows an
/// Unmasked /proc (restricted still does not).
fn in_user_namespace(spec: &PodSpec) -> bool {
    spec.host_users == Some(false)
}

fn baseline(k: &mut Checker<'_>, pod: &Pod, checked: &[&ContainerView<'_>], level: Level) {
    let spec = k.spec;
    // HostProcess
    if k.pod_sc.and_then(|s| s.windows_options.as_ref()).and_then(|w| w.host_process) == Some(true) {
        k.pod(
            Control::HostProcess,
            "spec.securityContext.windowsOptions.hostProcess",
            "true",
            "remove hostProcess: Windows HostProcess pods run with node-level access",
        );
    }
    for c in checked {
        if c.sc.and_then(|s| s.windows_options.as_ref()).and_then(|w| w.host_process) == Some(true) {
            k.container(
                Control::HostProcess,
                c,
                "securityContext.windowsOptions.hostProcess",
                "true",
                "remove hostProcess: HostProcess containers run with node-level access",
            );
        }
    }
    // Host namespaces
    for (field, value, what) in [
        ("spec.hostNetwork", spec.host_network, "the node's network"),
        ("spec.hostPID", spec.host_pid, "the node's processes"),
        ("spec.hostIPC", spec.host_ipc, "the node's IPC"),
    ] {
        if value == Some(true) {
            k.pod(Control::HostNamespaces, field, "true", &format!("remove {field}: it shares {what} with the pod"));
        }
    }
    for c in checked {
        let sc = c.sc;
        if sc.and_then(|s| s.privileged) == Some(true) {
            k.container(
                Control::Privileged,
                c,
                "securityContext.privileged",
                "true",
                "remove privileged: true; only the injected dind sidecar may be privileged, and DOCKER_HOST already points at it",
            );
        }
        let added = sc.and_then(|s| s.capabilities.as_ref()).and_then(|cap| cap.add.as_ref());
        let bad: Vec<&str> = added.iter().copied().flatten().map(String::as_str).filter(|a| !BASELINE_CAPABILITIES.contains(a)).collect();
        if !bad.is_empty() {
            k.container(
                Control::CapabilitiesBaseline,
                c,
                "securityContext.capabilities.add",
                bad.join(","),
                &format!("add only capabilities from the baseline set ({})", BASELINE_CAPABILITIES.join(", ")),
            );
        }
        for (field, host) in c.probe_hosts.iter().filter(|(_, h)| !h.is_empty()) {
            k.container(Control::HostProbes, c, field, *host, "remove the host: probes and lifecycle hooks must target the pod itself");
        }
        for (i, p) in c.ports.iter().enumerate() {
            if let Some(hp) = p.host_port.filter(|&hp| hp != 0) {
                k.container(
                    Control::HostPorts,
                    c,
                    &format!("ports[{i}].hostPort"),
                    hp.to_string(),
                    "remove hostPort: it opens a port on the node; use a Service",
                );
            }
        }
        if let Some(t) = sc.and_then(|s| s.app_armor_profile.as_ref()).map(|a| a.type_.as_str()).filter(|t| !allowed_apparmor_type(t)) {
            k.container(
                Control::AppArmor,
                c,
                "securityContext.appArmorProfile.type",
                t,
                "use RuntimeDefault or Localhost, or leave it unset",
            );
        }
        if let Some(se) = sc.and_then(|s| s.se_linux_options.as_ref()) {
            selinux(k, Some(c), se);
        }
        if let Some(pm) =
            sc.and_then(|s| s.proc_mount.as_deref()).filter(|pm| *pm != "Default" && !(level == Level::Baseline && in_user_namespace(spec)))
        {
            k.container(Control::ProcMount, c, "securityContext.procMount", pm, "remove procMount or set it to Default");
        }
        if let Some(t) = sc.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str()).filter(|t| *t == "Unconfined") {
            k.container(
                Control::SeccompBaseline,
                c,
                "securityContext.seccompProfile.type",
                t,
                "use RuntimeDefault (or Localhost), or leave it unset",
            );
        }
    }
    // hostPath volumes, and Docker sockets among them.
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let Some(hp) = &v.host_path else { continue };
        if Some(v.name.as_str()) == k.exempt_volume {
            continue;
        }
        let field = format!("spec.volumes[{i}].hostPath.path");
        k.pod(
            Control::HostPathVolumes,
            &field,
            hp.path.clone(),
            &format!("replace hostPath volume {:?} with an emptyDir, configMap, secret or PVC", v.name),
        );
        if is_runtime_socket(&hp.path) {
            let users: Vec<&ContainerView<'_>> = checked.iter().copied().filter(|c| c.mounts.iter().any(|m| m.name == v.name)).collect();
            let fix = "never mount the node's container runtime socket: it gives the job root on the node. Drop the volume; dind-injector's sidecar gives the job its own Docker daemon through DOCKER_HOST";
            if users.is_empty() {
                k.pod(Control::DockerSocket, &field, hp.path.clone(), fix);
            }
            for c in users {
                k.out.push(Violation {
                    control: Control::DockerSocket,
                    container: Some(c.name.to_owned()),
                    field: field.clone(),
                    value: hp.path.clone(),
                    fix: fix.to_owned(),
                });
            }
        }
    }
    // AppArmor: pod field and the deprecated annotations.
    if let Some(t) = k.pod_sc.and_then(|s| s.app_armor_profile.as_ref()).map(|a| a.type_.as_str()).filter(|t| !allowed_apparmor_type(t)) {
        k.pod(Control::AppArmor, "spec.securityContext.appArmorProfile.type", t, "use RuntimeDefault or Localhost, or leave it unset");
    }
    for (key, value) in pod.metadata.annotations.iter().flatten() {
        if key.starts_with(APPARMOR_ANNOTATION) && !(value.is_empty() || value == "runtime/default" || value.starts_with("localhost/")) {
            k.pod(
                Control::AppArmor,
                &format!("metadata.annotations[{key}]"),
                value.clone(),
                "use runtime/default or localhost/<profile>, or remove the annotation",
            );
        }
    }
    if let Some(se) = k.pod_sc.and_then(|s| s.se_linux_options.as_ref()) {
        selinux(k, None, se);
    }
    if let Some(t) = k.pod_sc.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str()).filter(|t| *t == "Unconfined") {
        k.pod(
            Control::SeccompBaseline,
            "spec.securityContext.seccompProfile.type",
            t,
            "use RuntimeDefault (or Localhost), or leave it unset",
        );
    }
    let unsafe_sysctls: Vec<&str> = k
        .pod_sc
        .and_then(|s| s.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| s.name.as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .collect();
    if !unsafe_sysctls.is_empty() {
        k.pod(
            Control::Sysctls,
            "spec.securityContext.sysctls",
            unsafe_sysctls.join(","),
            "set only the safe sysctls listed in the Pod Security Standards",
        );
    }
}

fn allowed_apparmor_type(t: &str) -> bool {
    matches!(t, "RuntimeDefault" | "Localhost")
}

fn selinux(k: &mut Checker<'_>, c: Option<&ContainerView<'_>>, se: &k8s_openapi::api::core::v1::SELinuxOptions) {
    let base = "securityContext.seLinuxOptions";
    let mut bad = Vec::new();
    if let Some(t) = se.type_.as_deref().filter(|t| !SELINUX_TYPES.contains(t)) {
        bad.push(("type", t, "use container_t, container_init_t, container_kvm_t or container_engine_t, or leave it unset"));
    }
    if let Some(u) = se.user.as_deref().filter(|u| !u.is_empty()) {
        bad.push(("user", u, "remove the SELinux user"));
    }
    if let Some(r) = se.role.as_deref().filter(|r| !r.is_empty()) {
        bad.push(("role", r, "remove the SELinux role"));
    }
    for (field, value, fix) in bad {
        match c {
            Some(c) => k.container(Control::SeLinux, c, &format!("{base}.{field}"), value, fix),
            None => k.pod(Control::SeLinux, &format!("spec.{base}.{field}"), value, fix),
        }
    }
}

fn restricted(k: &mut Checker<'_>, checked: &[&ContainerView<'_>]) {
    let spec = k.spec;
    let windows = spec.os.as_ref().is_some_and(|os| os.name == "windows");
    let exempt_volume = k.exempt_volume;
    for (i, v) in spec.volumes.iter().flatten().enumerate().filter(|(_, v)| Some(v.name.as_str()) != exempt_volume) {
        for source in crate::pod::volume_sources(v).filter(|s| !RESTRICTED_VOLUME_SOURCES.contains(s)) {
            k.pod(
                Control::RestrictedVolumes,
                &format!("spec.volumes[{i}].{source}"),
                v.name.clone(),
                &format!("use only {} volumes", RESTRICTED_VOLUME_SOURCES.join(", ")),
            );
        }
    }

    let userns = in_user_namespace(spec);
    let pod_non_root = k.pod_sc.and_then(|s| s.run_as_non_root);
    if pod_non_root == Some(false) && !userns {
        k.pod(Control::RunAsNonRoot, "spec.securityContext.runAsNonRoot", "false", "set runAsNonRoot: true");
    }
    if k.pod_sc.and_then(|s| s.run_as_user) == Some(0) && !userns {
        k.pod(Control::RunAsUser, "spec.securityContext.runAsUser", "0", "run as a non-zero user id");
    }
    let pod_seccomp = k.pod_sc.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str());
    let pod_seccomp_ok = pod_seccomp.is_some_and(allowed_seccomp);
    if !windows && let Some(t) = pod_seccomp.filter(|t| !allowed_seccomp(t)) {
        k.pod(
            Control::SeccompRestricted,
            "spec.securityContext.seccompProfile.type",
            t,
            "set seccompProfile.type: RuntimeDefault (or Localhost)",
        );
    }
    for c in checked {
        let sc = c.sc;
        if !windows && sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
            let v = sc.and_then(|s| s.allow_privilege_escalation).map_or("unset".into(), |b| b.to_string());
            k.container(
                Control::AllowPrivilegeEscalation,
                c,
                "securityContext.allowPrivilegeEscalation",
                v,
                "set securityContext.allowPrivilegeEscalation: false",
            );
        }
        match sc.and_then(|s| s.run_as_non_root).filter(|_| !userns) {
            Some(false) => k.container(
                Control::RunAsNonRoot,
                c,
                "securityContext.runAsNonRoot",
                "false",
                "set runAsNonRoot: true (and run as a non-root user)",
            ),
            None if pod_non_root != Some(true) && !userns => k.container(
                Control::RunAsNonRoot,
                c,
                "securityContext.runAsNonRoot",
                "unset",
                "set runAsNonRoot: true on the pod or the container",
            ),
            _ => {}
        }
        if sc.and_then(|s| s.run_as_user) == Some(0) && !userns {
            k.container(Control::RunAsUser, c, "securityContext.runAsUser", "0", "run as a non-zero user id");
        }
        if !windows {
            match sc.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str()) {
                Some(t) if !allowed_seccomp(t) => k.container(
                    Control::SeccompRestricted,
                    c,
                    "securityContext.seccompProfile.type",
                    t,
                    "set seccompProfile.type: RuntimeDefault (or Localhost)",
                ),
                None if !pod_seccomp_ok => k.container(
                    Control::SeccompRestricted,
                    c,
                    "securityContext.seccompProfile.type",
                    "unset",
                    "set seccompProfile.type: RuntimeDefault on the pod or the container",
                ),
                _ => {}
            }
            capabilities_restricted(k, c, sc.and_then(|s| s.capabilities.as_ref()));
        }
    }
}

fn allowed_seccomp(t: &str) -> bool {
    matches!(t, "RuntimeDefault" | "Localhost")
}

fn capabilities_restricted(k: &mut Checker<'_>, c: &ContainerView<'_>, caps: Option<&Capabilities>) {
    let drops_all = caps.and_then(|cap| cap.drop.as_ref()).is_some_and(|d| d.iter().any(|x| x == "ALL"));
    if !drops_all {
        k.container(
            Control::CapabilitiesRestricted,
            c,
            "securityContext.capabilities.drop",
            "missing ALL",
            "add securityContext.capabilities.drop: [ALL]",
        );
    }
    let bad: Vec<&str> =
        caps.and_then(|cap| cap.add.as_ref()).into_iter().flatten().map(String::as_str).filter(|a| *a != "NET_BIND_SERVICE").collect();
    if !bad.is_empty() {
        k.container(
            Control::CapabilitiesRestricted,
            c,
            "securityContext.capabilities.add",
            bad.join(","),
            "add no capability other than NET_BIND_SERVICE",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ids(v: &[Violation]) -> Vec<&'static str> {
        let mut ids: Vec<&str> = v.iter().map(|x| x.control.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    #[test]
    fn exempt_container_is_skipped_and_others_are_not() {
        let p = pod(serde_json::json!({"spec": {"containers": [
            {"name": "dind", "securityContext": {"privileged": true}},
            {"name": "job", "securityContext": {"privileged": true}}]}}));
        let v = check_pod_security(&p, Level::Baseline, Some("dind"));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].container.as_deref(), Some("job"));
        assert_eq!(v[0].field, "spec.containers[1].securityContext.privileged");
    }

    #[test]
    fn docker_socket_has_its_own_violation() {
        let p = pod(serde_json::json!({"spec": {"volumes": [{"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}}],
            "containers": [{"name": "job", "volumeMounts": [{"name": "sock", "mountPath": "/var/run/docker.sock"}]}]}}));
        let v = check_pod_security(&p, Level::Baseline, None);
        assert_eq!(ids(&v), vec!["dockerSocket", "hostPathVolumes"]);
        assert!(
            v.iter()
                .any(|x| x.control == Control::DockerSocket && x.container.as_deref() == Some("job") && x.fix.contains("root on the node"))
        );
    }

    #[test]
    fn restricted_pod_level_settings_cover_containers() {
        let p = pod(serde_json::json!({"spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "job", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}));
        assert!(check_pod_security(&p, Level::Restricted, None).is_empty());
    }
}
