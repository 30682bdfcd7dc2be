//! The job's world, seen by the daemon: the sidecar mounts the volumes the job containers work in
//! at the same paths, so `docker run -v "$PWD":/src`, compose files with relative binds and builds
//! that write into the workspace resolve to the same files in dockerd's filesystem.
//!
//! Only emptyDir, generic ephemeral and persistentVolumeClaim volumes are mirrored: never API
//! tokens, Secrets, ConfigMaps, projected, downward-API or hostPath volumes. What was mirrored is
//! recorded in the status annotation, and the validating webhook accepts exactly that.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Volume, VolumeMount};

use crate::annotations;
use crate::config::{Config, WorkspaceMirroring};

use crate::status::InjectionStatus;
pub use crate::status::MirroredMount;

/// Paths of the sidecar's own filesystem that a mirrored mount must neither cover, nor sit on,
/// nor sit under (besides the socket and certificate directories and the sidecar's own mounts).
pub const RESERVED_PATHS: &[&str] = &[
    "/var/lib/docker",
    "/etc/docker",
    "/var/run",
    "/run",
    "/var/run/docker.sock",
    "/var/run/secrets/kubernetes.io/serviceaccount",
    "/bin",
    "/sbin",
    "/lib",
    "/usr",
    "/dev",
    "/proc",
    "/sys",
];

impl MirroredMount {
    fn of(m: &VolumeMount) -> Self {
        MirroredMount {
            volume: m.name.clone(),
            path: normalize(&m.mount_path),
            sub_path: m.sub_path.clone().filter(|s| !s.is_empty()),
            sub_path_expr: m.sub_path_expr.clone().filter(|s| !s.is_empty()),
        }
    }

    fn mount(&self) -> VolumeMount {
        VolumeMount {
            name: self.volume.clone(),
            mount_path: self.path.clone(),
            sub_path: self.sub_path.clone(),
            sub_path_expr: self.sub_path_expr.clone(),
            ..VolumeMount::default()
        }
    }

    /// Whether `m` mounts what this records (`MirroredMount::of(m) == *self`, without building
    /// one: the validating webhook asks this for every mount of every job container).
    fn same_as(&self, m: &VolumeMount) -> bool {
        fn non_empty(s: &Option<String>) -> Option<&str> {
            s.as_deref().filter(|s| !s.is_empty())
        }
        self.volume == m.name
            && self.path == normalized(&m.mount_path)
            && self.sub_path.as_deref() == non_empty(&m.sub_path)
            && self.sub_path_expr.as_deref() == non_empty(&m.sub_path_expr)
    }

    /// Whether `m` is exactly this mount, read-write or read-only, with no mount propagation.
    fn is(&self, m: &VolumeMount) -> bool {
        self.same_as(m) && m.mount_propagation.as_deref().is_none_or(|p| p == "None")
    }
}

/// Which job mounts are mirrored: the `auto` set, plus paths added, minus paths left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkspaceSetting {
    /// Mirror every eligible mount of the job containers.
    pub auto: bool,
    /// Mount paths mirrored even when `auto` is off.
    pub add: Vec<String>,
    /// Mount paths never mirrored.
    pub remove: Vec<String>,
}

/// The setting for a pod: `sidecar.workspace`, then the namespace's, then the pod's
/// `dind-injector.io/workspace` annotation. A value that does not parse is not applied, with a
/// warning that says why.
pub fn resolve(
    pod_annotations: Option<&BTreeMap<String, String>>,
    namespace_annotations: &BTreeMap<String, String>,
    config: &Config,
    warnings: &mut Vec<String>,
) -> WorkspaceSetting {
    let mut setting = WorkspaceSetting { auto: config.sidecar.workspace == WorkspaceMirroring::Auto, ..WorkspaceSetting::default() };
    let layers = [("namespace", Some(namespace_annotations)), ("pod", pod_annotations)];
    for (source, map) in layers {
        let Some(value) = map.and_then(|m| m.get(annotations::WORKSPACE)) else {
            continue;
        };
        match parse(value) {
            Ok(Parsed::Auto) => setting = WorkspaceSetting { auto: true, ..WorkspaceSetting::default() },
            Ok(Parsed::Off) => setting = WorkspaceSetting::default(),
            Ok(Parsed::Paths { add, remove }) => {
                setting.remove.retain(|p| !add.contains(p));
                setting.add.retain(|p| !remove.contains(p));
                setting.add.extend(add);
                setting.remove.extend(remove);
            }
            Err(why) => {
                warnings.push(format!("dind-injector: {source} annotation {}={value:?} is not applied: {why}", annotations::WORKSPACE))
            }
        }
    }
    setting
}

enum Parsed {
    Auto,
    Off,
    Paths { add: Vec<String>, remove: Vec<String> },
}

fn parse(value: &str) -> Result<Parsed, String> {
    match value.trim() {
        "auto" => return Ok(Parsed::Auto),
        "off" => return Ok(Parsed::Off),
        _ => {}
    }
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (list, path) = match item.strip_prefix('-') {
            Some(p) => (&mut remove, p.trim()),
            None => (&mut add, item),
        };
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(format!(
                "{item:?} is not an absolute path; write auto, off, or a comma list of job mount paths to add (/cache) or leave out (-/cache)"
            ));
        }
        list.push(normalize(path));
    }
    if add.is_empty() && remove.is_empty() {
        return Err("it names no path; write auto, off, or a comma list like /cache,-/scripts".into());
    }
    Ok(Parsed::Paths { add, remove })
}

/// `/a/b/` → `/a/b`; `/` stays.
fn normalize(path: &str) -> String {
    normalized(path).to_owned()
}

/// `path` without surrounding whitespace and trailing slashes (`/` for the root).
fn normalized(path: &str) -> &str {
    let trimmed = path.trim().trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// The first of `reserved` that `path` overlaps: is, or is a parent of, or lies under (the
/// candidate's form is read once).
fn first_overlap<'a>(mut reserved: impl Iterator<Item = &'a str>, path: &str) -> Option<&'a str> {
    let plain_path = plain(path);
    reserved.find(|r| overlaps_plain(r, plain(r), path, plain_path))
}

/// Whether one path is the other, or a parent of it, given each path's [`plain`] form.
fn overlaps_plain(a: &str, plain_a: Option<&str>, b: &str, plain_b: Option<&str>) -> bool {
    match (plain_a, plain_b) {
        // Every mount is checked against every reserved path: compare bytes when both paths are
        // plain (no empty or `.` components), which they are unless someone writes `/a//./b`.
        (Some(a), Some(b)) => {
            let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
            long.starts_with(short) && (short.is_empty() || long.len() == short.len() || long.as_bytes()[short.len()] == b'/')
        }
        _ => components(a).zip(components(b)).all(|(x, y)| x == y),
    }
}

/// `path` without its trailing slashes when its components are plain (between single slashes,
/// none `.`), so that comparing bytes is comparing components; `None` otherwise.
fn plain(path: &str) -> Option<&str> {
    let path = path.trim_end_matches('/');
    let bytes = path.as_bytes();
    if bytes.first().is_some_and(|b| *b != b'/') {
        return None;
    }
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'/' {
            match bytes.get(i + 1) {
                Some(b'/') => return None,
                Some(b'.') if matches!(bytes.get(i + 2), None | Some(b'/')) => return None,
                _ => {}
            }
        }
    }
    Some(path)
}

/// The volume's kind when it is one that is mirrored (emptyDir, ephemeral, PVC, and nothing else).
pub fn mirrorable_kind(v: &Volume) -> Option<&'static str> {
    let mut sources = crate::pod::volume_sources(v);
    match (sources.next(), sources.next()) {
        (Some(kind @ ("emptyDir" | "ephemeral" | "persistentVolumeClaim")), None) => Some(kind),
        _ => None,
    }
}

fn kind_name(v: &Volume) -> &'static str {
    crate::pod::volume_sources(v).next().unwrap_or("unknown")
}

/// What mirroring adds to the sidecar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mirroring {
    /// The mounts, recorded in the status annotation.
    pub mounts: Vec<MirroredMount>,
    /// Variables `subPathExpr` mounts need in the sidecar (copied from the job container).
    pub env: Vec<EnvVar>,
}

/// Mirrors the eligible mounts of `spec.containers[targets]` into `sidecar` (mounts and the
/// variables their `subPathExpr` needs), and returns what it mirrored.
pub fn mirror_into(
    sidecar: &mut Container,
    spec: &PodSpec,
    targets: &[usize],
    setting: &WorkspaceSetting,
    config: &Config,
    warnings: &mut Vec<String>,
) -> Vec<MirroredMount> {
    let own: Vec<&str> = sidecar.volume_mounts.iter().flatten().map(|m| m.mount_path.as_str()).collect();
    let m = plan(spec, targets, setting, config, &own, sidecar.env.as_deref().unwrap_or_default(), warnings);
    if !m.mounts.is_empty() {
        sidecar.volume_mounts.get_or_insert_with(Vec::new).extend(m.mounts.iter().map(MirroredMount::mount));
    }
    if !m.env.is_empty() {
        sidecar.env.get_or_insert_with(Vec::new).extend(m.env);
    }
    m.mounts
}

/// The pure core of [`mirror_into`]: `own` are the sidecar's mount paths, `sidecar_env` its env.
pub fn plan(
    spec: &PodSpec,
    targets: &[usize],
    setting: &WorkspaceSetting,
    config: &Config,
    own: &[&str],
    sidecar_env: &[EnvVar],
    warnings: &mut Vec<String>,
) -> Mirroring {
    let reserved = || {
        RESERVED_PATHS
            .iter()
            .copied()
            .chain([config.sidecar.socket_dir.as_str(), config.sidecar.cert_dir.as_str()])
            .chain(own.iter().copied())
    };

    let mut out = Mirroring::default();
    let mut seen_added: Vec<String> = Vec::new();
    for &i in targets {
        let Some(c) = spec.containers.get(i) else { continue };
        for m in c.volume_mounts.iter().flatten() {
            let normalized = normalize(&m.mount_path);
            let path = normalized.as_str();
            let added = setting.add.iter().any(|p| p == path);
            if added {
                seen_added.push(path.to_owned());
            }
            if setting.remove.iter().any(|p| p == path) || !(setting.auto || added) {
                continue;
            }
            let Some(volume) = spec.volumes.iter().flatten().find(|v| v.name == m.name) else {
                continue;
            };
            if mirrorable_kind(volume).is_none() {
                if added {
                    warnings.push(format!(
                        "dind-injector: {} adds {path}, but container {:?} mounts a {} volume ({:?}) there; only emptyDir, ephemeral and persistentVolumeClaim volumes are mirrored into the sidecar. Copy what the daemon needs into the workspace instead",
                        annotations::WORKSPACE, c.name, kind_name(volume), volume.name
                    ));
                }
                continue;
            }
            if let Some(r) = first_overlap(reserved(), path) {
                warnings.push(format!(
                    "dind-injector: container {:?} mounts volume {:?} at {path}, which overlaps the sidecar's own {r}; it is not mirrored, so `docker run -v` of paths there sees the sidecar's files. Mount the volume at another path in the job container, or leave it out with {}: \"-{path}\"",
                    c.name, m.name, annotations::WORKSPACE
                ));
                continue;
            }
            let record = MirroredMount::of(m);
            if let Some(other) = out.mounts.iter().find(|o| o.path == path) {
                if *other != record {
                    warnings.push(format!(
                        "dind-injector: container {:?} mounts volume {:?} at {path}, but another job container mounts {:?}{} there; the sidecar mirrors only the first. Use one volume per path in the job containers",
                        c.name,
                        m.name,
                        other.volume,
                        other.sub_path.as_deref().map(|s| format!(" (subPath {s:?})")).unwrap_or_default()
                    ));
                }
                continue;
            }
            if let Some(expr) = &record.sub_path_expr {
                match expr_env(c, expr, sidecar_env, &out.env) {
                    Ok(vars) => out.env.extend(vars),
                    Err(why) => {
                        warnings.push(format!(
                            "dind-injector: container {:?} mounts volume {:?} at {path} with subPathExpr {expr:?}, which the sidecar cannot expand the same way: {why}; it is not mirrored. Use subPath, or variables from the pod's metadata (fieldRef)",
                            c.name, m.name
                        ));
                        continue;
                    }
                }
            }
            out.mounts.push(record);
        }
    }
    for p in &setting.add {
        if !seen_added.contains(p) {
            warnings.push(format!(
                "dind-injector: {} adds {p}, but no job container mounts a volume there; nothing is mirrored for it. Name a mountPath of a job container",
                annotations::WORKSPACE
            ));
        }
    }
    out
}

/// The variables `expr` refers to, copied from `c` when they expand the same in the sidecar: a
/// literal value or a pod-level `fieldRef`.
fn expr_env(c: &Container, expr: &str, sidecar: &[EnvVar], taken: &[EnvVar]) -> Result<Vec<EnvVar>, String> {
    let mut vars = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("$(") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else { break };
        let name = &after[..end];
        rest = &after[end + 1..];
        let Some(e) = c.env.iter().flatten().find(|e| e.name == name) else {
            return Err(format!("${name} is not set in container {:?}", c.name));
        };
        let mut copy = e.clone();
        match (&copy.value, copy.value_from.as_mut()) {
            // An empty value is dropped by the apiserver: the stored sidecar would differ.
            (Some(v), None) if !v.is_empty() && !v.contains("$(") => {}
            (None, Some(from))
                if from.field_ref.is_some()
                    && from.config_map_key_ref.is_none()
                    && from.secret_key_ref.is_none()
                    && from.resource_field_ref.is_none() =>
            {
                if let Some(f) = from.field_ref.as_mut() {
                    // The apiserver fills this default; set it so the stored sidecar is unchanged.
                    f.api_version.get_or_insert_with(|| "v1".to_owned());
                }
            }
            _ => return Err(format!("${name} is neither a literal nor a fieldRef")),
        }
        let clash = sidecar.iter().chain(taken.iter()).chain(vars.iter()).find(|s| s.name == name);
        match clash {
            Some(s) if *s == copy => {}
            Some(_) => return Err(format!("${name} already has another value in the sidecar")),
            None => vars.push(copy),
        }
    }
    Ok(vars)
}

/// Whether the sidecar mount `m` is one the status records as mirrored.
pub fn is_recorded(status: &InjectionStatus, m: &VolumeMount) -> bool {
    status.mirrored.iter().any(|r| r.is(m))
}

/// Why the mirrored mounts the status records are not what the injector mirrors, if they are not:
/// each must be an emptyDir, ephemeral or persistentVolumeClaim volume that a job container named
/// in the status mounts at the same path with the same subPath.
pub fn mirror_problem(spec: &PodSpec, status: &InjectionStatus) -> Option<String> {
    for r in &status.mirrored {
        let Some(v) = spec.volumes.iter().flatten().find(|v| v.name == r.volume) else {
            return Some(format!("its mirrored volume {:?} is missing", r.volume));
        };
        if mirrorable_kind(v).is_none() {
            return Some(format!(
                "it mirrors volume {:?} at {}, a {} volume; only emptyDir, ephemeral and persistentVolumeClaim volumes are mirrored",
                r.volume,
                r.path,
                kind_name(v)
            ));
        }
        let mounted_by_target = spec
            .containers
            .iter()
            .filter(|c| status.targets.contains(&c.name))
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .any(|m| r.same_as(m));
        if !mounted_by_target {
            return Some(format!("it mirrors volume {:?} at {}, but no job container mounts it there", r.volume, r.path));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, HostPathVolumeSource, SecretVolumeSource};

    fn vm(name: &str, path: &str) -> VolumeMount {
        VolumeMount { name: name.into(), mount_path: path.into(), ..VolumeMount::default() }
    }

    fn empty(name: &str) -> Volume {
        Volume { name: name.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() }
    }

    fn spec(mounts: &[(&str, &str)], volumes: Vec<Volume>) -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "build".into(),
                volume_mounts: Some(mounts.iter().map(|(n, p)| vm(n, p)).collect()),
                ..Container::default()
            }],
            volumes: Some(volumes),
            ..PodSpec::default()
        }
    }

    fn auto() -> WorkspaceSetting {
        WorkspaceSetting { auto: true, ..WorkspaceSetting::default() }
    }

    fn paths(m: &Mirroring) -> Vec<&str> {
        m.mounts.iter().map(|r| r.path.as_str()).collect()
    }

    #[test]
    fn overlaps_compares_components_however_the_paths_are_written() {
        let overlaps = |a: &str, b: &str| first_overlap(std::iter::once(a), b).is_some();
        let by_components = |a: &str, b: &str| components(a).zip(components(b)).all(|(x, y)| x == y);
        let parts = ["", "/", "//", "a", "ab", "b", ".", "..", ".a", "a.", "/./", "var", "run"];
        let mut paths = vec![String::new()];
        for x in parts {
            for y in parts {
                for z in ["", "/", "a", "./"] {
                    paths.push(format!("{x}{y}{z}"));
                    paths.push(format!("/{x}/{y}{z}"));
                }
            }
        }
        for a in &paths {
            for b in &paths {
                assert_eq!(overlaps(a, b), by_components(a, b), "{a:?} vs {b:?}");
            }
        }
        assert!(overlaps("/var/run", "/var/run/docker.sock") && overlaps("/", "/builds") && !overlaps("/var/run", "/var/runner"));
    }

    #[test]
    fn same_as_is_equality_with_the_mount_it_records() {
        let sub = |v: &str| Some(v.to_owned());
        let mounts = [
            vm("repo", "/builds"),
            vm("repo", "/builds/"),
            vm("repo", " /builds// "),
            vm("repo", "/"),
            vm("repo", ""),
            vm("other", "/builds"),
            vm("repo", "/builds/x"),
            VolumeMount { sub_path: sub("a"), ..vm("repo", "/builds") },
            VolumeMount { sub_path: sub(""), ..vm("repo", "/builds") },
            VolumeMount { sub_path_expr: sub("$(POD)"), ..vm("repo", "/builds") },
            VolumeMount { sub_path_expr: sub(""), ..vm("repo", "/builds") },
        ];
        for recorded in &mounts {
            let r = MirroredMount::of(recorded);
            for m in &mounts {
                assert_eq!(r.same_as(m), MirroredMount::of(m) == r, "{r:?} vs {m:?}");
            }
        }
    }

    #[test]
    fn only_emptydir_ephemeral_and_pvc_volumes_are_mirrored() {
        let secret = Volume { name: "token".into(), secret: Some(SecretVolumeSource::default()), ..Volume::default() };
        let host =
            Volume { name: "host".into(), host_path: Some(HostPathVolumeSource { path: "/srv".into(), type_: None }), ..Volume::default() };
        let pvc: Volume =
            serde_json::from_value(serde_json::json!({"name": "cache", "persistentVolumeClaim": {"claimName": "c"}})).unwrap_or_default();
        let eph: Volume =
            serde_json::from_value(serde_json::json!({"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}))
                .unwrap_or_default();
        let s = spec(
            &[("repo", "/builds/"), ("token", "/token"), ("host", "/srv"), ("cache", "/cache"), ("scratch", "/scratch")],
            vec![empty("repo"), secret, host, pvc, eph],
        );
        let mut w = Vec::new();
        let m = plan(&s, &[0], &auto(), &Config::default(), &[], &[], &mut w);
        assert_eq!(paths(&m), ["/builds", "/cache", "/scratch"]);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn collisions_with_the_sidecars_paths_are_skipped_with_a_warning() {
        let table = [
            ("/var/run", true),
            ("/var/run/dind", true),
            ("/var/lib/docker/x", true),
            ("/var", true),
            ("/", true),
            ("/certs", true),
            ("/etc/docker", true),
            ("/own", true),
            ("/builds", false),
            ("/var/lib/dockerish", false),
            ("/etc/app", false),
        ];
        for (path, collides) in table {
            let s = spec(&[("repo", path)], vec![empty("repo")]);
            let mut w = Vec::new();
            let m = plan(&s, &[0], &auto(), &Config::default(), &["/own"], &[], &mut w);
            assert_eq!(m.mounts.is_empty(), collides, "{path}");
            assert_eq!(w.len(), usize::from(collides), "{path}: {w:?}");
            if collides {
                assert!(
                    w[0].contains("\"build\"") && w[0].contains(path) && w[0].contains("-") && w[0].contains(annotations::WORKSPACE),
                    "{}",
                    w[0]
                );
            }
        }
    }

    #[test]
    fn annotation_adds_removes_and_turns_off() {
        let s = spec(&[("repo", "/builds"), ("scripts", "/scripts")], vec![empty("repo"), empty("scripts")]);
        let cfg = Config::default();
        let ann = |v: &str| BTreeMap::from([(annotations::WORKSPACE.to_owned(), v.to_owned())]);
        let run = |pod: &str, ns: &str, c: &Config| {
            let mut w = Vec::new();
            let (p, n) = (ann(pod), if ns.is_empty() { BTreeMap::new() } else { ann(ns) });
            let setting = resolve(Some(&p), &n, c, &mut w);
            let m = plan(&s, &[0], &setting, c, &[], &[], &mut w);
            (paths(&m).iter().map(|p| p.to_string()).collect::<Vec<_>>(), w)
        };
        assert_eq!(run("off", "", &cfg).0, Vec::<String>::new());
        assert_eq!(run("-/scripts/", "", &cfg).0, ["/builds"]);
        assert_eq!(run("/builds", "off", &cfg).0, ["/builds"]);
        assert_eq!(run("auto", "off", &cfg).0, ["/builds", "/scripts"]);
        let mut off = Config::default();
        off.sidecar.workspace = WorkspaceMirroring::Off;
        assert_eq!(run("/scripts", "", &off).0, ["/scripts"]);
        let (got, w) = run("builds", "", &cfg);
        assert_eq!(got, ["/builds", "/scripts"], "a bad value is not applied");
        assert!(w.len() == 1 && w[0].contains("not an absolute path"), "{w:?}");
        let (_, w) = run("/nowhere", "", &cfg);
        assert!(w.len() == 1 && w[0].contains("/nowhere") && w[0].contains("no job container"), "{w:?}");
    }

    #[test]
    fn one_path_one_volume_and_subpaths_kept() {
        let mut s = spec(&[("repo", "/builds")], vec![empty("repo"), empty("other")]);
        s.containers.push(Container {
            name: "svc-0".into(),
            volume_mounts: Some(vec![
                vm("repo", "/builds"),
                vm("other", "/builds"),
                VolumeMount { sub_path: Some("cache".into()), ..vm("other", "/cache") },
            ]),
            ..Container::default()
        });
        let mut w = Vec::new();
        let m = plan(&s, &[0, 1], &auto(), &Config::default(), &[], &[], &mut w);
        assert_eq!(paths(&m), ["/builds", "/cache"]);
        assert_eq!(m.mounts[1].sub_path.as_deref(), Some("cache"));
        assert!(w.len() == 1 && w[0].contains("\"svc-0\"") && w[0].contains("\"other\""), "{w:?}");
    }

    #[test]
    fn sub_path_expr_copies_pod_level_variables_only() {
        let s: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "build", "env": [
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
                {"name": "EMPTY", "value": ""}
            ], "volumeMounts": [
                {"name": "repo", "mountPath": "/builds", "subPathExpr": "$(POD)"},
                {"name": "cache", "mountPath": "/cache", "subPathExpr": "$(MEM)"},
                {"name": "tmp", "mountPath": "/tmp", "subPathExpr": "x$(EMPTY)"}
            ]}],
            "volumes": [{"name": "repo", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
        }))
        .unwrap_or_default();
        let mut w = Vec::new();
        let m = plan(&s, &[0], &auto(), &Config::default(), &[], &[], &mut w);
        assert_eq!(paths(&m), ["/builds"]);
        assert_eq!(m.env.len(), 1);
        assert_eq!(m.env[0].value_from.as_ref().and_then(|f| f.field_ref.as_ref()).and_then(|f| f.api_version.as_deref()), Some("v1"));
        assert!(w.len() == 2 && w[0].contains("subPathExpr") && w[0].contains("/cache") && w[1].contains("/tmp"), "{w:?}");
    }

    #[test]
    fn the_exemption_accepts_exactly_what_was_mirrored() {
        let s = spec(&[("repo", "/builds")], vec![empty("repo")]);
        let mut status = InjectionStatus {
            version: 1,
            container: "dind".into(),
            mode: "native".into(),
            transport: "unix".into(),
            image: "docker:28.5.1-dind".into(),
            volumes: vec![],
            targets: vec!["build".into()],
            template: String::new(),
            mirrored: vec![MirroredMount { volume: "repo".into(), path: "/builds".into(), sub_path: None, sub_path_expr: None }],
            isolation: crate::config::Isolation::Privileged,
            runtime_class: None,
            cache: None,
        };
        assert_eq!(mirror_problem(&s, &status), None);
        assert!(is_recorded(&status, &vm("repo", "/builds")));
        assert!(!is_recorded(&status, &vm("repo", "/elsewhere")));
        assert!(!is_recorded(&status, &VolumeMount { mount_propagation: Some("Bidirectional".into()), ..vm("repo", "/builds") }));
        status.targets.clear();
        assert!(mirror_problem(&s, &status).is_some_and(|p| p.contains("no job container")));
        let host =
            Volume { name: "repo".into(), host_path: Some(HostPathVolumeSource { path: "/".into(), type_: None }), ..Volume::default() };
        let s = spec(&[("repo", "/builds")], vec![host]);
        status.targets = vec!["build".into()];
        assert!(mirror_problem(&s, &status).is_some_and(|p| p.contains("hostPath")));
    }
}
