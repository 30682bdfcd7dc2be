//! `daemon`: the dockerd settings written into `daemon.json`, and the keys dockerd refuses there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// dockerd settings, rendered as `daemon.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// `registry-mirrors`.
    pub registry_mirrors: Vec<String>,
    /// `insecure-registries`.
    pub insecure_registries: Vec<String>,
    /// Any other `daemon.json` key, passed through as written.
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// Keys that dockerd's command line sets: repeating them in daemon.json makes dockerd exit with
/// "the following directives are specified both as a flag and in the configuration file".
pub const DAEMON_JSON_RESERVED: &[(&str, &str)] = &[
    ("hosts", "the sidecar's --host flag sets it from `sidecar.transport`"),
    ("tls", "the sidecar's --tls flag sets it from `sidecar.transport`"),
    ("tlsverify", "the sidecar's --tlsverify flag sets it from `sidecar.transport`"),
    ("tlscacert", "the sidecar passes --tlscacert for `tcp-tls`"),
    ("tlscert", "the sidecar passes --tlscert for `tcp-tls`"),
    ("tlskey", "the sidecar passes --tlskey for `tcp-tls`"),
    ("group", "the sidecar passes --group (see `sidecar.socketGroup`)"),
    ("mtu", "set `sidecar.mtu` instead"),
    ("default-network-opts", "the sidecar passes --default-network-opt for the MTU (see `sidecar.mtu`)"),
    ("registry-mirrors", "set `daemon.registryMirrors` instead"),
    ("insecure-registries", "set `daemon.insecureRegistries` instead"),
    ("data-root", "/var/lib/docker is the size-limited emptyDir; moving it escapes `sidecar.storage`"),
    ("pidfile", "the image's entrypoint manages it"),
];

/// daemon.json keys dockerd 28 knows (besides the reserved ones above). dockerd exits on a key
/// it does not know, so others are reported by `check-config` and in the server's log.
pub const DAEMON_JSON_KNOWN: &[&str] = &[
    "allow-direct-routing",
    "authorization-plugins",
    "bip",
    "bip6",
    "bridge",
    "builder",
    "cdi-spec-dirs",
    "cgroup-parent",
    "containerd",
    "containerd-namespace",
    "containerd-plugin-namespace",
    "cri-containerd",
    "debug",
    "default-address-pools",
    "default-cgroupns-mode",
    "default-gateway",
    "default-gateway-v6",
    "default-ipc-mode",
    "default-runtime",
    "default-shm-size",
    "default-ulimits",
    "dns",
    "dns-opts",
    "dns-search",
    "exec-opts",
    "exec-root",
    "experimental",
    "features",
    "firewall-backend",
    "fixed-cidr",
    "fixed-cidr-v6",
    "host-gateway-ip",
    "host-gateway-ips",
    "http-proxy",
    "https-proxy",
    "icc",
    "init",
    "init-path",
    "ip",
    "ip-forward",
    "ip-forward-no-drop",
    "ip-masq",
    "ip6tables",
    "iptables",
    "ipv6",
    "labels",
    "live-restore",
    "log-driver",
    "log-format",
    "log-level",
    "log-opts",
    "max-concurrent-downloads",
    "max-concurrent-uploads",
    "max-download-attempts",
    "metrics-addr",
    "no-new-privileges",
    "no-proxy",
    "node-generic-resources",
    "proxies",
    "raw-logs",
    "runtimes",
    "seccomp-profile",
    "selinux-enabled",
    "shutdown-timeout",
    "storage-driver",
    "storage-opts",
    "swarm-default-advertise-addr",
    "userland-proxy",
    "userland-proxy-path",
    "userns-remap",
];

/// daemon.json keys that current dockerd no longer accepts: it exits at start.
pub const DAEMON_JSON_REMOVED: &[&str] = &[
    "cluster-store",
    "cluster-store-opts",
    "cluster-advertise",
    "graph",
    "disable-legacy-registry",
    "api-cors-header",
    "oom-score-adjust",
    "allow-nondistributable-artifacts",
    "deprecated-key-path",
];

impl DaemonConfig {
    /// Every problem with `daemon.*`.
    pub(super) fn check(&self, bad: &mut dyn FnMut(&str, String)) {
        for (i, m) in self.registry_mirrors.iter().enumerate() {
            if !(m.starts_with("https://") || m.starts_with("http://")) {
                bad(&format!("daemon.registryMirrors[{i}]"), format!("{m:?} must be a URL starting with https:// or http://"));
            }
        }
        for (key, why) in DAEMON_JSON_RESERVED {
            if self.settings.contains_key(*key) {
                bad(&format!("daemon.settings.{key}"), format!("dockerd would exit at start: {why}"));
            }
        }
        for key in DAEMON_JSON_REMOVED {
            if self.settings.contains_key(*key) {
                bad(&format!("daemon.settings.{key}"), "dockerd no longer accepts this key and would exit at start; remove it".into());
            }
        }
        for (i, r) in self.insecure_registries.iter().enumerate() {
            if r.trim().is_empty() || r.contains(char::is_whitespace) {
                bad(&format!("daemon.insecureRegistries[{i}]"), format!("{r:?} must be host[:port] or a CIDR"));
            }
        }
    }
}
