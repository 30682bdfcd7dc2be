//! `cache`: a warm Docker cache across jobs, node-local, one daemon per data-root slot.

use serde::{Deserialize, Serialize};

use super::quantity_problem;

/// Whether injected daemons get a node-local cache slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// Every daemon starts empty on its emptyDir (the default).
    Off,
    /// The sidecar takes a free slot of its scope's node directory as its data root, under an
    /// exclusive lock held for the daemon's life; cold on its emptyDir when every slot is busy.
    Node,
}

impl CacheMode {
    /// The spelling used in the configuration and annotations.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Off => "off",
            CacheMode::Node => "node",
        }
    }
}

/// What a cache is shared by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheScope {
    /// Every job of one namespace (the default: whoever can create pods in a namespace can pick
    /// any project label there, so the namespace is the real trust boundary).
    Namespace,
    /// The runner's project within the namespace (GitLab project id, Buildkite pipeline slug,
    /// Harness account/org/project/pipeline); a pod without them falls back to its namespace.
    Project,
}

impl CacheScope {
    /// The spelling used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheScope::Namespace => "namespace",
            CacheScope::Project => "project",
        }
    }
}

/// The most slots a scope may have.
pub const MAX_SLOTS_PER_SCOPE: u32 = 64;

/// The cache's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CacheConfig {
    /// `off` (default) or `node`.
    pub mode: CacheMode,
    /// The node directory holding every scope's slots (a hostPath, `DirectoryOrCreate`).
    pub host_path: String,
    /// `namespace` (default) or `project`.
    pub scope: CacheScope,
    /// How many daemons of one scope can run warm on one node at once.
    pub slots_per_scope: u32,
    /// A slot larger than this when a sidecar takes it is emptied first.
    pub max_slot_size: String,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            mode: CacheMode::Off,
            host_path: "/var/lib/dind-injector/cache".into(),
            scope: CacheScope::Namespace,
            slots_per_scope: 4,
            max_slot_size: "20Gi".into(),
        }
    }
}

/// Node directories a cache must never be: the kubelet's, the container runtimes' and the
/// system's own trees (a slot there would hand a job's daemon the node's state).
const FORBIDDEN_ROOTS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin", "/sys", "/usr", "/var", "/var/lib",
    "/var/run", "/var/log",
];

/// Node trees a cache must not be inside.
const FORBIDDEN_TREES: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/var/lib/kubelet",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/containers",
    "/run",
    "/var/run",
];

impl CacheConfig {
    /// Every problem with `cache.*`.
    pub(super) fn check(&self, bad: &mut dyn FnMut(&str, String)) {
        let p = self.host_path.as_str();
        let shape_ok = p.starts_with('/')
            && !p.ends_with('/')
            && !p.split('/').any(|c| c == ".." || c == ".")
            && !p.contains("//")
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
        if !shape_ok {
            bad(
                "cache.hostPath",
                format!(
                    "{p:?} must be an absolute node directory like /var/lib/dind-injector/cache: letters, digits, '/', '.', '_', '-', no trailing slash, no `.` or `..`"
                ),
            );
        } else if FORBIDDEN_ROOTS.contains(&p) || FORBIDDEN_TREES.iter().any(|t| p == *t || p.starts_with(&format!("{t}/"))) {
            bad(
                "cache.hostPath",
                format!(
                    "{p:?} is a system, kubelet or container-runtime directory of the node; use a directory of its own like /var/lib/dind-injector/cache"
                ),
            );
        }
        if !(1..=MAX_SLOTS_PER_SCOPE).contains(&self.slots_per_scope) {
            bad("cache.slotsPerScope", format!("{} is not between 1 and {MAX_SLOTS_PER_SCOPE}", self.slots_per_scope));
        }
        match quantity_problem(bad, "cache.maxSlotSize", Some(&self.max_slot_size)) {
            Some(q) if q < 1024 * 1024 => bad("cache.maxSlotSize", "must be at least 1Mi".into()),
            _ => {}
        }
    }

    /// `maxSlotSize` in KiB (what `du -sk` prints), rounded down; 0 when it does not parse.
    pub fn max_slot_kib(&self) -> u128 {
        crate::quantity::Quantity::parse(&self.max_slot_size).map(|q| q.milli() / 1000 / 1024).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(c: &CacheConfig) -> Vec<String> {
        let mut out = Vec::new();
        c.check(&mut |path, m| out.push(format!("{path}: {m}")));
        out
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let c = CacheConfig::default();
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
        assert_eq!(c.mode, CacheMode::Off);
        assert_eq!(c.max_slot_kib(), 20 * 1024 * 1024);
    }

    #[test]
    fn node_directories_of_the_system_are_refused() {
        for p in ["/", "/var/lib/docker", "/var/lib/kubelet/pods", "/etc/cache", "relative", "/x/../etc", "/x/", "/a b", "/var"] {
            let c = CacheConfig { host_path: p.into(), ..CacheConfig::default() };
            let found = problems(&c);
            assert!(found.len() == 1 && found[0].starts_with("cache.hostPath"), "{p}: {found:?}");
        }
        for p in ["/var/lib/dind-injector/cache", "/mnt/ci-cache", "/var/cache/dind"] {
            assert!(problems(&CacheConfig { host_path: p.into(), ..CacheConfig::default() }).is_empty(), "{p}");
        }
    }

    #[test]
    fn slots_and_size_are_bounded() {
        let c = CacheConfig { slots_per_scope: 0, max_slot_size: "10Ki".into(), ..CacheConfig::default() };
        let found = problems(&c);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("cache.slotsPerScope") && found[1].contains("at least 1Mi"), "{found:?}");
        let c = CacheConfig { slots_per_scope: 65, max_slot_size: "lots".into(), ..CacheConfig::default() };
        assert_eq!(problems(&c).len(), 2);
    }
}
