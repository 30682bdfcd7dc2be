//! The settings one pod gets: the cluster configuration, overridden by namespace annotations,
//! overridden by pod annotations, each within the administrator's limits.

use std::collections::BTreeMap;

use crate::annotations;
use crate::config::{Config, Isolation, Mtu, SidecarMode, Transport};
use crate::image::ImageRef;
use crate::quantity::Quantity;

use super::ClusterInfo;

/// The effective settings for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The sidecar image.
    pub image: String,
    /// The transport.
    pub transport: Transport,
    /// `native` or `container` (never `auto`: that is resolved here).
    pub mode: SidecarMode,
    /// The MTU.
    pub mtu: Mtu,
    /// CPU request.
    pub cpu: String,
    /// CPU limit.
    pub cpu_limit: Option<String>,
    /// Memory request.
    pub memory: String,
    /// Memory limit.
    pub memory_limit: Option<String>,
    /// Size of the `/var/lib/docker` emptyDir.
    pub storage: String,
    /// Containers named by the `containers` override, when set.
    pub containers: Option<Vec<String>>,
    /// How the daemon is isolated.
    pub isolation: Isolation,
    /// An isolation an annotation asked for that the administrator does not allow: the pod is
    /// then not injected (a requested isolation is never replaced by another).
    pub refused_isolation: Option<Isolation>,
}

/// The first Kubernetes minor version with native sidecars enabled by default.
pub const NATIVE_SIDECAR_MINOR: u32 = 29;

/// Resolves the settings for a pod with `pod_annotations` in a namespace with
/// `namespace_annotations`; every refused override becomes a warning saying why.
pub fn resolve(
    pod_annotations: Option<&BTreeMap<String, String>>,
    namespace_annotations: &BTreeMap<String, String>,
    config: &Config,
    cluster: &ClusterInfo,
) -> (Settings, Vec<String>) {
    let s = &config.sidecar;
    let mut settings = Settings {
        image: s.image.clone(),
        transport: s.transport,
        mode: s.mode,
        mtu: s.mtu,
        cpu: s.resources.cpu.clone(),
        cpu_limit: s.resources.cpu_limit.clone(),
        memory: s.resources.memory.clone(),
        memory_limit: s.resources.memory_limit.clone(),
        storage: s.storage.clone(),
        containers: None,
        isolation: s.isolation,
        refused_isolation: None,
    };
    let mut warnings = Vec::new();
    let empty = BTreeMap::new();
    let layers = [("namespace", namespace_annotations), ("pod", pod_annotations.unwrap_or(&empty))];
    for (source, map) in layers {
        for (key, value) in map.iter().filter(|(k, _)| k.starts_with(annotations::PREFIX)) {
            if let Err(why) = apply(&mut settings, key, value, config) {
                warnings.push(format!("dind-injector: {source} annotation {key}={} is not applied: {why}", shorten(value)));
            }
        }
    }
    if settings.mode == SidecarMode::Auto {
        settings.mode = match cluster.server_version {
            Some(v) if v.major == 1 && v.minor < NATIVE_SIDECAR_MINOR => SidecarMode::Container,
            _ => SidecarMode::Native,
        };
    }
    raise_limit(&settings.cpu, &mut settings.cpu_limit);
    raise_limit(&settings.memory, &mut settings.memory_limit);
    (settings, warnings)
}

/// A limit below the (overridden) request is raised to it: the apiserver refuses request > limit.
fn raise_limit(request: &str, limit: &mut Option<String>) {
    if let (Ok(req), Some(Ok(lim))) = (Quantity::parse(request), limit.as_deref().map(Quantity::parse))
        && lim < req
    {
        *limit = Some(request.to_owned());
    }
}

fn apply(settings: &mut Settings, key: &str, value: &str, config: &Config) -> Result<(), String> {
    let o = &config.overrides;
    match key {
        annotations::IMAGE => {
            let v = value.trim();
            ImageRef::parse(v)?;
            if !config.image_allowed(v) {
                return Err(format!(
                    "the image is not in the administrator's allowlist (overrides.allowedImages: {})",
                    o.allowed_images.join(", ")
                ));
            }
            settings.image = v.to_owned();
        }
        annotations::TRANSPORT => {
            let t = Transport::parse(value).ok_or("use unix, tcp-tls or tcp")?;
            if !o.allowed_transports.contains(&t) {
                return Err(format!(
                    "the administrator does not allow it (overrides.allowedTransports: {})",
                    o.allowed_transports.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            settings.transport = t;
        }
        annotations::ISOLATION => {
            let i = Isolation::parse(value).ok_or("use privileged, sysbox, kata or userns")?;
            if !o.allowed_isolations.contains(&i) {
                settings.refused_isolation = Some(i);
                return Err(format!(
                    "the administrator does not allow it (overrides.allowedIsolations: {})",
                    o.allowed_isolations.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            settings.isolation = i;
            settings.refused_isolation = None;
        }
        annotations::SIDECAR_MODE => {
            settings.mode = SidecarMode::parse(value).ok_or("use native, container or auto")?;
        }
        annotations::MTU => {
            settings.mtu = Mtu::parse(value)?;
        }
        annotations::CPU => settings.cpu = bounded(value, &o.max_cpu, "overrides.maxCpu")?,
        annotations::MEMORY => settings.memory = bounded(value, &o.max_memory, "overrides.maxMemory")?,
        annotations::STORAGE => settings.storage = bounded(value, &o.max_storage, "overrides.maxStorage")?,
        annotations::CONTAINERS => {
            let names: Vec<String> = value.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
            if names.is_empty() {
                return Err("it names no container; list them like build,svc-0".into());
            }
            for n in &names {
                crate::names::check_dns_label(n)?;
            }
            settings.containers = Some(names);
        }
        // Keys that are not overrides (inject, runner, status, policy labels) are read elsewhere.
        _ => {}
    }
    Ok(())
}

fn bounded(value: &str, max: &str, max_key: &str) -> Result<String, String> {
    let q = Quantity::parse(value).map_err(|e| e.to_string())?;
    if q.milli() == 0 {
        return Err("it must be more than 0".into());
    }
    match Quantity::parse(max) {
        Ok(m) if q > m => Err(format!("it exceeds the administrator's maximum {max} ({max_key})")),
        _ => Ok(value.trim().to_owned()),
    }
}

fn shorten(value: &str) -> String {
    const MAX: usize = 64;
    if value.chars().count() <= MAX {
        format!("{value:?}")
    } else {
        let cut: String = value.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::KubeVersion;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn resolve_with(pod: &[(&str, &str)], ns: &[(&str, &str)]) -> (Settings, Vec<String>) {
        resolve(Some(&ann(pod)), &ann(ns), &Config::default(), &ClusterInfo::default())
    }

    #[test]
    fn pod_beats_namespace_beats_config() {
        let (s, w) = resolve_with(&[(annotations::MEMORY, "2Gi")], &[(annotations::MEMORY, "1Gi"), (annotations::CPU, "2")]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.memory, "2Gi");
        assert_eq!(s.cpu, "2");
        assert_eq!(s.storage, Config::default().sidecar.storage);
    }

    #[test]
    fn refused_overrides_warn_and_keep_the_previous_value() {
        let (s, w) = resolve_with(
            &[(annotations::MEMORY, "64Gi"), (annotations::IMAGE, "evil/docker:dind"), (annotations::TRANSPORT, "udp")],
            &[(annotations::MEMORY, "2Gi")],
        );
        assert_eq!(s.memory, "2Gi");
        assert_eq!(s.image, Config::default().sidecar.image);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w.iter().any(|m| m.contains("overrides.maxMemory") && m.contains("pod annotation")));
        assert!(w.iter().any(|m| m.contains("allowlist")));
    }

    #[test]
    fn limits_rise_to_meet_requests() {
        let (s, _) = resolve_with(&[(annotations::MEMORY, "8Gi")], &[]);
        assert_eq!(s.memory_limit.as_deref(), Some("8Gi"));
    }

    #[test]
    fn auto_mode_follows_the_apiserver_version() {
        let p = ann(&[(annotations::SIDECAR_MODE, "auto")]);
        let old = ClusterInfo { server_version: Some(KubeVersion { major: 1, minor: 28 }), ..ClusterInfo::default() };
        let new = ClusterInfo { server_version: Some(KubeVersion { major: 1, minor: 30 }), ..ClusterInfo::default() };
        let c = Config::default();
        assert_eq!(resolve(Some(&p), &BTreeMap::new(), &c, &old).0.mode, SidecarMode::Container);
        assert_eq!(resolve(Some(&p), &BTreeMap::new(), &c, &new).0.mode, SidecarMode::Native);
        assert_eq!(resolve(Some(&p), &BTreeMap::new(), &c, &ClusterInfo::default()).0.mode, SidecarMode::Native);
    }
}
