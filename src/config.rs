//! The injector's configuration: one YAML file in which every field has a default and every
//! unknown key is an error that names its path.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::image::{ImagePattern, ImageRef};
use crate::quantity::Quantity;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// What the injected sidecar looks like.
    pub sidecar: SidecarConfig,
    /// The dockerd settings written into `daemon.json`.
    pub daemon: DaemonConfig,
    /// What pod and namespace annotations may change, and how far.
    pub overrides: OverrideLimits,
    /// The validating webhook: how strictly every other container is held to Pod Security.
    pub policy: PolicyConfig,
    /// Limits and timings of the HTTPS server.
    pub server: ServerConfig,
}

/// What the validating webhook does with a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyMode {
    /// Nothing is checked.
    Off,
    /// Allowed, with warnings, audit annotations and metrics.
    Audit,
    /// Denied, with every violation in the message.
    Enforce,
}

impl PolicyMode {
    /// The spelling in labels and the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Off => "off",
            PolicyMode::Audit => "audit",
            PolicyMode::Enforce => "enforce",
        }
    }

    /// Parses the label spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "off" => Some(PolicyMode::Off),
            "audit" => Some(PolicyMode::Audit),
            "enforce" => Some(PolicyMode::Enforce),
            _ => None,
        }
    }
}

/// The validating webhook's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// `enforce`, `audit` or `off`, where the namespace does not say.
    pub mode: PolicyMode,
    /// `baseline` or `restricted`, where the namespace does not say.
    pub level: crate::policy::Level,
    /// Whether a namespace label may choose a looser mode or level than these defaults.
    pub allow_looser_namespaces: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig { mode: PolicyMode::Enforce, level: crate::policy::Level::Baseline, allow_looser_namespaces: false }
    }
}

/// How the sidecar runs: as a native sidecar (an init container with `restartPolicy: Always`)
/// or as a plain container for clusters older than 1.29.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SidecarMode {
    /// Native sidecar (Kubernetes 1.29 and later).
    Native,
    /// A regular container that starts first and holds the others until dockerd answers.
    Container,
    /// Native when the apiserver is 1.29 or later (or its version is not known), else container.
    Auto,
}

/// How job containers reach the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// A Unix socket on a shared emptyDir.
    Unix,
    /// TCP on 127.0.0.1:2376 with mutual TLS, certificates on a shared emptyDir.
    TcpTls,
    /// Plain TCP on 127.0.0.1:2375, reachable only inside the pod.
    Tcp,
}

impl Transport {
    /// The spelling used in annotations and the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Unix => "unix",
            Transport::TcpTls => "tcp-tls",
            Transport::Tcp => "tcp",
        }
    }

    /// Parses the annotation spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "unix" => Some(Transport::Unix),
            "tcp-tls" => Some(Transport::TcpTls),
            "tcp" => Some(Transport::Tcp),
            _ => None,
        }
    }
}

impl SidecarMode {
    /// The spelling used in annotations and the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            SidecarMode::Native => "native",
            SidecarMode::Container => "container",
            SidecarMode::Auto => "auto",
        }
    }

    /// Parses the annotation spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "native" => Some(SidecarMode::Native),
            "container" => Some(SidecarMode::Container),
            "auto" => Some(SidecarMode::Auto),
            _ => None,
        }
    }
}

/// The daemon's MTU: read from the pod's own interface at start, or fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mtu {
    /// Match the pod's `eth0` when the sidecar starts.
    Auto,
    /// A fixed value.
    Fixed(u32),
}

/// The MTUs dockerd accepts that make sense on a pod network.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 576..=9216;

impl Mtu {
    /// Parses `auto` or a number within [`MTU_RANGE`].
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "auto" {
            return Ok(Mtu::Auto);
        }
        let n: u32 = s.parse().map_err(|_| format!("{s:?} is neither `auto` nor a number"))?;
        Mtu::fixed(n)
    }

    fn fixed(n: u32) -> Result<Self, String> {
        if MTU_RANGE.contains(&n) { Ok(Mtu::Fixed(n)) } else { Err(format!("{n} is outside {}..={}", MTU_RANGE.start(), MTU_RANGE.end())) }
    }
}

impl fmt::Display for Mtu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mtu::Auto => f.write_str("auto"),
            Mtu::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Mtu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Mtu::Auto => s.serialize_str("auto"),
            Mtu::Fixed(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Mtu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MtuVisitor;
        impl Visitor<'_> for MtuVisitor {
            type Value = Mtu;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "`auto` or a number from {} to {}", MTU_RANGE.start(), MTU_RANGE.end())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Mtu, E> {
                let n = u32::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))?;
                Mtu::fixed(n).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Mtu, E> {
                let v = u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))?;
                self.visit_u64(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Mtu, E> {
                Mtu::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(MtuVisitor)
    }
}

/// A duration written as `250ms`, `5s` or `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval(pub Duration);

impl Interval {
    /// Parses `<number><unit>` with unit `ms`, `s` or `m`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("{s:?} does not start with a whole number (write 250ms, 5s or 2m)"))?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            _ => return Err(format!("{s:?} has no unit ms, s or m")),
        };
        Ok(Interval(d))
    }

    fn secs(n: u64) -> Self {
        Interval(Duration::from_secs(n))
    }
}

impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) { s.serialize_str(&format!("{}s", ms / 1000)) } else { s.serialize_str(&format!("{ms}ms")) }
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Interval::parse(&s).map_err(de::Error::custom)
    }
}

/// The sidecar's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SidecarConfig {
    /// A pinned `docker:<version>-dind` image (a digest may follow).
    pub image: String,
    /// The sidecar's imagePullPolicy.
    pub image_pull_policy: String,
    /// `native`, `container` or `auto`.
    pub mode: SidecarMode,
    /// `unix`, `tcp-tls` or `tcp`.
    pub transport: Transport,
    /// The sidecar's container name (a suffix is added when the pod already uses it).
    pub container_name: String,
    /// The prefix of the injected volumes' names.
    pub volume_prefix: String,
    /// Where the Unix socket's directory is mounted, in the sidecar and the job containers.
    pub socket_dir: String,
    /// The socket's group. When unset, the pod's `fsGroup` is used, else root (0).
    pub socket_group: Option<u32>,
    /// Where the TLS certificates live in the sidecar (`tcp-tls`); job containers get `client/`.
    pub cert_dir: String,
    /// `auto` or a number.
    pub mtu: Mtu,
    /// The size limit of the `/var/lib/docker` emptyDir, also the sidecar's ephemeral-storage
    /// request and limit.
    pub storage: String,
    /// CPU and memory for the sidecar.
    pub resources: SidecarResources,
    /// How long dockerd may take to answer before the startup probe gives up.
    pub startup_timeout: Interval,
    /// The ConfigMap that holds `daemon.json`, mounted optionally at `/etc/docker`.
    pub daemon_config_map: String,
    /// Whether the sidecar mounts the job containers' workspace volumes at the same paths
    /// (`auto`) or not (`off`), where the `dind-injector.io/workspace` annotation does not say.
    pub workspace: WorkspaceMirroring,
}

/// The default of workspace mirroring (see `sidecar.workspace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WorkspaceMirroring {
    /// Mirror every emptyDir, generic ephemeral and persistentVolumeClaim mount of the job
    /// containers into the sidecar.
    #[default]
    Auto,
    /// Mirror only the paths a `dind-injector.io/workspace` annotation adds.
    Off,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        SidecarConfig {
            image: "docker:28.5.1-dind".into(),
            image_pull_policy: "IfNotPresent".into(),
            mode: SidecarMode::Native,
            transport: Transport::Unix,
            container_name: "dind".into(),
            volume_prefix: "dind".into(),
            socket_dir: "/var/run/dind".into(),
            socket_group: None,
            cert_dir: "/certs".into(),
            mtu: Mtu::Auto,
            storage: "20Gi".into(),
            resources: SidecarResources::default(),
            startup_timeout: Interval::secs(120),
            daemon_config_map: "dind-injector-daemon-config".into(),
            workspace: WorkspaceMirroring::Auto,
        }
    }
}

/// CPU and memory for the sidecar. A limit left unset is not set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SidecarResources {
    /// CPU request.
    pub cpu: String,
    /// CPU limit (unset by default: throttled builds are slow builds).
    pub cpu_limit: Option<String>,
    /// Memory request.
    pub memory: String,
    /// Memory limit (raised to the request when an override asks for more).
    pub memory_limit: Option<String>,
}

impl Default for SidecarResources {
    fn default() -> Self {
        SidecarResources { cpu: "500m".into(), cpu_limit: None, memory: "512Mi".into(), memory_limit: Some("4Gi".into()) }
    }
}

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

/// What overrides may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OverrideLimits {
    /// Images an annotation may choose; `*` matches any run of characters.
    pub allowed_images: Vec<String>,
    /// Transports an annotation may choose.
    pub allowed_transports: Vec<Transport>,
    /// The largest CPU request an annotation may ask for.
    pub max_cpu: String,
    /// The largest memory request an annotation may ask for.
    pub max_memory: String,
    /// The largest storage an annotation may ask for.
    pub max_storage: String,
}

impl Default for OverrideLimits {
    fn default() -> Self {
        OverrideLimits {
            allowed_images: vec!["docker:*-dind".into()],
            allowed_transports: vec![Transport::Unix, Transport::TcpTls, Transport::Tcp],
            max_cpu: "4".into(),
            max_memory: "16Gi".into(),
            max_storage: "100Gi".into(),
        }
    }
}

/// Limits and timings of the server. Every one is explicit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The largest request body accepted (an AdmissionReview carries up to two objects).
    pub max_body_bytes: usize,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Interval,
    /// How long a client may take to send its body, and the whole review at most.
    pub request_timeout: Interval,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Interval,
    /// How often certificate and configuration files are checked for changes.
    pub reload_interval: Interval,
    /// After SIGTERM, how long to keep serving while endpoints are removed.
    pub shutdown_delay: Interval,
    /// After that, how long in-flight reviews may take before the process exits.
    pub shutdown_grace: Interval,
    /// Open connections at most; more wait for a free slot.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 6 * 1024 * 1024,
            header_read_timeout: Interval::secs(5),
            request_timeout: Interval::secs(10),
            tls_handshake_timeout: Interval::secs(5),
            reload_interval: Interval::secs(5),
            shutdown_delay: Interval::secs(5),
            shutdown_grace: Interval::secs(20),
            max_connections: 1024,
        }
    }
}

/// A configuration that could not be read or does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not have the configuration's shape.
    #[error("configuration {source_name}: at `{path}`: {message}")]
    Parse {
        /// Where the YAML came from.
        source_name: String,
        /// The key path of the error (`sidecar.transport`).
        path: String,
        /// What is wrong, with the line and column.
        message: String,
    },
    /// The values are well-formed but not usable.
    #[error("configuration {source_name} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Where the YAML came from.
        source_name: String,
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
}

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key path (`overrides.maxMemory`).
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
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

impl Config {
    /// Things that are allowed but probably wrong: daemon.json keys this version does not know
    /// (dockerd exits on an unknown key, unless the sidecar image's dockerd is newer).
    pub fn advisories(&self) -> Vec<ConfigProblem> {
        self.daemon
            .settings
            .keys()
            .filter(|k| {
                !DAEMON_JSON_KNOWN.contains(&k.as_str())
                    && !DAEMON_JSON_REMOVED.contains(&k.as_str())
                    && !DAEMON_JSON_RESERVED.iter().any(|(r, _)| r == k)
            })
            .map(|k| ConfigProblem {
                path: format!("daemon.settings.{k}"),
                message: "dockerd 28 does not know this daemon.json key and exits on unknown keys; keep it only if the sidecar image's dockerd is newer and knows it".into(),
            })
            .collect()
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::from_yaml(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text; `source_name` names it in errors.
    pub fn from_yaml(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            let mut path = String::new();
            let options = serde_saphyr::options! { with_snippet: false };
            serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
                serde_path_to_error::deserialize(de).map_err(|e| {
                    path = e.path().to_string();
                    e.into_inner()
                })
            })
            .map_err(|e| ConfigError::Parse {
                source_name: source_name.to_owned(),
                path: if path.is_empty() || path == "." { "(top)".into() } else { path.clone() },
                message: e.to_string(),
            })?
        };
        let problems = config.problems();
        if problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid { source_name: source_name.to_owned(), problems }) }
    }

    /// Every problem with the values, each with its key path and the fix.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut bad = |path: &str, message: String| out.push(ConfigProblem { path: path.to_owned(), message });
        let s = &self.sidecar;
        if let Err(e) = ImageRef::parse(&s.image) {
            bad("sidecar.image", e);
        }
        if !["Always", "IfNotPresent", "Never"].contains(&s.image_pull_policy.as_str()) {
            bad("sidecar.imagePullPolicy", format!("{:?} is not Always, IfNotPresent or Never", s.image_pull_policy));
        }
        if let Err(e) = crate::names::check_dns_label(&s.container_name) {
            bad("sidecar.containerName", e);
        }
        // The longest volume suffix is "-daemon-config" (14 characters) plus a "-NN" uniquifier.
        match crate::names::check_dns_label(&s.volume_prefix) {
            Err(e) => bad("sidecar.volumePrefix", e),
            Ok(()) if s.volume_prefix.len() > 40 => {
                bad("sidecar.volumePrefix", "must be at most 40 characters so that the volume names stay within 63".into())
            }
            Ok(()) => {}
        }
        for (path, dir) in [("sidecar.socketDir", &s.socket_dir), ("sidecar.certDir", &s.cert_dir)] {
            if !dir.starts_with('/') || dir.len() < 2 || dir.ends_with('/') || dir.contains("..") || dir.contains(':') {
                bad(path, format!("{dir:?} must be an absolute directory path like /var/run/dind, without a trailing slash, `..` or `:`"));
            }
        }
        if s.socket_dir == "/var/lib/docker"
            || s.socket_dir == "/etc/docker"
            || s.cert_dir == "/var/lib/docker"
            || s.cert_dir == "/etc/docker"
            || s.socket_dir == s.cert_dir
        {
            bad("sidecar.socketDir", "socketDir and certDir must differ from each other and from /var/lib/docker and /etc/docker".into());
        }
        if let Err(e) = crate::names::check_dns_subdomain(&s.daemon_config_map) {
            bad("sidecar.daemonConfigMap", e);
        }
        match Quantity::parse(&s.storage) {
            Err(e) => bad("sidecar.storage", e.to_string()),
            Ok(q) if q.milli() == 0 => bad("sidecar.storage", "must be more than 0".into()),
            Ok(_) => {}
        }
        let r = &s.resources;
        let cpu = quantity_problem(&mut bad, "sidecar.resources.cpu", Some(&r.cpu));
        let cpu_limit = quantity_problem(&mut bad, "sidecar.resources.cpuLimit", r.cpu_limit.as_deref());
        let mem = quantity_problem(&mut bad, "sidecar.resources.memory", Some(&r.memory));
        let mem_limit = quantity_problem(&mut bad, "sidecar.resources.memoryLimit", r.memory_limit.as_deref());
        if let (Some(req), Some(lim)) = (cpu, cpu_limit)
            && lim < req
        {
            bad("sidecar.resources.cpuLimit", format!("{} is below the request {}", lim, req));
        }
        if let (Some(req), Some(lim)) = (mem, mem_limit)
            && lim < req
        {
            bad("sidecar.resources.memoryLimit", format!("is below the request {}", r.memory));
        }
        let st = s.startup_timeout.0;
        if st < Duration::from_secs(1) || st > Duration::from_secs(3600) {
            bad("sidecar.startupTimeout", "must be between 1s and 60m".into());
        }

        for (i, m) in self.daemon.registry_mirrors.iter().enumerate() {
            if !(m.starts_with("https://") || m.starts_with("http://")) {
                bad(&format!("daemon.registryMirrors[{i}]"), format!("{m:?} must be a URL starting with https:// or http://"));
            }
        }
        for (key, why) in DAEMON_JSON_RESERVED {
            if self.daemon.settings.contains_key(*key) {
                bad(&format!("daemon.settings.{key}"), format!("dockerd would exit at start: {why}"));
            }
        }
        for key in DAEMON_JSON_REMOVED {
            if self.daemon.settings.contains_key(*key) {
                bad(&format!("daemon.settings.{key}"), "dockerd no longer accepts this key and would exit at start; remove it".into());
            }
        }
        for (i, r) in self.daemon.insecure_registries.iter().enumerate() {
            if r.trim().is_empty() || r.contains(char::is_whitespace) {
                bad(&format!("daemon.insecureRegistries[{i}]"), format!("{r:?} must be host[:port] or a CIDR"));
            }
        }

        let o = &self.overrides;
        for (i, p) in o.allowed_images.iter().enumerate() {
            if p.trim().is_empty() {
                bad(&format!("overrides.allowedImages[{i}]"), "is empty".into());
            }
        }
        for (path, v) in
            [("overrides.maxCpu", &o.max_cpu), ("overrides.maxMemory", &o.max_memory), ("overrides.maxStorage", &o.max_storage)]
        {
            quantity_problem(&mut bad, path, Some(v));
        }

        let sv = &self.server;
        if sv.max_body_bytes < 4096 || sv.max_body_bytes > 64 * 1024 * 1024 {
            bad("server.maxBodyBytes", "must be between 4096 and 67108864".into());
        }
        for (path, d) in [
            ("server.headerReadTimeout", sv.header_read_timeout),
            ("server.requestTimeout", sv.request_timeout),
            ("server.tlsHandshakeTimeout", sv.tls_handshake_timeout),
            ("server.reloadInterval", sv.reload_interval),
            ("server.shutdownGrace", sv.shutdown_grace),
        ] {
            if d.0.is_zero() {
                bad(path, "must be more than 0".into());
            }
        }
        if sv.max_connections == 0 {
            bad("server.maxConnections", "must be more than 0".into());
        }
        out
    }

    /// The default image's pattern list plus the configured image itself: what an override
    /// may choose.
    pub fn image_allowed(&self, image: &str) -> bool {
        image == self.sidecar.image || self.overrides.allowed_images.iter().any(|p| ImagePattern::new(p).matches(image))
    }

    /// This configuration as YAML, every default spelled out (for `check-config --print`).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn quantity_problem(bad: &mut impl FnMut(&str, String), path: &str, value: Option<&str>) -> Option<Quantity> {
    let value = value?;
    match Quantity::parse(value) {
        Ok(q) => Some(q),
        Err(e) => {
            bad(path, e.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(yaml: &str) -> String {
        match Config::from_yaml(yaml, "test.yaml") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert!(matches!(Config::from_yaml("", "x"), Ok(c) if c == Config::default()));
        assert!(Config::default().problems().is_empty());
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let e = problems_of("sidecar:\n  transprt: tcp\n");
        assert!(e.contains("sidecar.transprt") || e.contains("sidecar"), "{e}");
        assert!(e.contains("unknown field `transprt`"), "{e}");
        let e = problems_of("overrides:\n  maxCpu: 2\n  bogus: 1\n");
        assert!(e.contains("overrides"), "{e}");
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn wrong_values_name_their_path_and_fix() {
        let e = problems_of("sidecar:\n  transport: udp\n");
        assert!(e.contains("sidecar.transport"), "{e}");
        let e = problems_of("sidecar:\n  mtu: 70000\n");
        assert!(e.contains("sidecar.mtu"), "{e}");
        let e = problems_of("sidecar:\n  storage: lots\noverrides:\n  maxMemory: -1\n");
        assert!(e.contains("sidecar.storage") && e.contains("overrides.maxMemory"), "{e}");
        assert!(e.contains("2 problem"), "{e}");
    }

    #[test]
    fn daemon_json_conflicting_with_flags_is_rejected() {
        let e = problems_of("daemon:\n  settings:\n    hosts: [\"tcp://0.0.0.0:2375\"]\n    mtu: 1400\n");
        assert!(e.contains("daemon.settings.hosts"), "{e}");
        assert!(e.contains("daemon.settings.mtu") && e.contains("sidecar.mtu"), "{e}");
    }

    #[test]
    fn unknown_daemon_keys_are_advised_and_removed_ones_refused() {
        let e = problems_of("daemon:\n  settings:\n    cluster-store: consul://x\n");
        assert!(e.contains("daemon.settings.cluster-store"), "{e}");
        let c = Config::from_yaml("daemon:\n  settings:\n    log-level: warn\n    made-up: 1\n", "x");
        let advice = c.map(|c| c.advisories()).unwrap_or_default();
        assert_eq!(advice.len(), 1);
        assert_eq!(advice[0].path, "daemon.settings.made-up");
    }

    #[test]
    fn mtu_and_intervals_parse() {
        let c = Config::from_yaml("sidecar:\n  mtu: 1400\n  startupTimeout: 90s\nserver:\n  reloadInterval: 250ms\n", "x");
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.sidecar.mtu, Mtu::Fixed(1400));
        assert_eq!(c.sidecar.startup_timeout.0, Duration::from_secs(90));
        assert_eq!(c.server.reload_interval.0, Duration::from_millis(250));
        assert!(Interval::parse("5").is_err());
        assert!(Interval::parse("5h").is_err());
    }

    #[test]
    fn defaults_round_trip_through_yaml() {
        let yaml = Config::default().to_yaml();
        assert!(matches!(Config::from_yaml(&yaml, "x"), Ok(c) if c == Config::default()), "{yaml}");
    }
}
