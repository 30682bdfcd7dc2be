//! `sidecar`: the injected container's shape, and how job containers reach it.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::{Interval, quantity_problem};
use crate::image::ImageRef;
use crate::quantity::Quantity;

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
    /// How the daemon is kept from the node: `privileged` (default), `sysbox` or `kata` (the
    /// RuntimeClass of each is in `isolation`), where the `dind-injector.io/isolation` annotation
    /// does not choose another within `overrides.allowedIsolations`.
    pub isolation: super::Isolation,
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
            isolation: super::Isolation::Privileged,
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

impl SidecarConfig {
    /// Every problem with `sidecar.*`.
    pub(super) fn check(&self, bad: &mut dyn FnMut(&str, String)) {
        if let Err(e) = ImageRef::parse(&self.image) {
            bad("sidecar.image", e);
        }
        if !["Always", "IfNotPresent", "Never"].contains(&self.image_pull_policy.as_str()) {
            bad("sidecar.imagePullPolicy", format!("{:?} is not Always, IfNotPresent or Never", self.image_pull_policy));
        }
        if let Err(e) = crate::names::check_dns_label(&self.container_name) {
            bad("sidecar.containerName", e);
        }
        // The longest volume suffix is "-daemon-config" (14 characters) plus a "-NN" uniquifier.
        match crate::names::check_dns_label(&self.volume_prefix) {
            Err(e) => bad("sidecar.volumePrefix", e),
            Ok(()) if self.volume_prefix.len() > 40 => {
                bad("sidecar.volumePrefix", "must be at most 40 characters so that the volume names stay within 63".into())
            }
            Ok(()) => {}
        }
        for (path, dir) in [("sidecar.socketDir", &self.socket_dir), ("sidecar.certDir", &self.cert_dir)] {
            if !dir.starts_with('/') || dir.len() < 2 || dir.ends_with('/') || dir.contains("..") || dir.contains(':') {
                bad(path, format!("{dir:?} must be an absolute directory path like /var/run/dind, without a trailing slash, `..` or `:`"));
            }
        }
        if self.socket_dir == "/var/lib/docker"
            || self.socket_dir == "/etc/docker"
            || self.cert_dir == "/var/lib/docker"
            || self.cert_dir == "/etc/docker"
            || self.socket_dir == self.cert_dir
        {
            bad("sidecar.socketDir", "socketDir and certDir must differ from each other and from /var/lib/docker and /etc/docker".into());
        }
        if let Err(e) = crate::names::check_dns_subdomain(&self.daemon_config_map) {
            bad("sidecar.daemonConfigMap", e);
        }
        match Quantity::parse(&self.storage) {
            Err(e) => bad("sidecar.storage", e.to_string()),
            Ok(q) if q.milli() == 0 => bad("sidecar.storage", "must be more than 0".into()),
            Ok(_) => {}
        }
        let r = &self.resources;
        let cpu = quantity_problem(bad, "sidecar.resources.cpu", Some(&r.cpu));
        let cpu_limit = quantity_problem(bad, "sidecar.resources.cpuLimit", r.cpu_limit.as_deref());
        let mem = quantity_problem(bad, "sidecar.resources.memory", Some(&r.memory));
        let mem_limit = quantity_problem(bad, "sidecar.resources.memoryLimit", r.memory_limit.as_deref());
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
        let st = self.startup_timeout.0;
        if st < Duration::from_secs(1) || st > Duration::from_secs(3600) {
            bad("sidecar.startupTimeout", "must be between 1s and 60m".into());
        }
    }
}
