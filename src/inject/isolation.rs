//! Isolation modes: whether a pod can take the one it gets, whether the cluster can serve it,
//! and what it adds to the pod.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodSpec;

use crate::config::{Config, Isolation};

use super::mode::{Mode, UserNamespace};
use super::patch::PatchBuilder;
use super::{ClusterInfo, KubeVersion, RuntimeClasses, SkipReason};

/// Why `spec` cannot run in `mode`, if it cannot; `version` is the apiserver's, when known.
pub fn unsuited(spec: &PodSpec, mode: &Mode, version: Option<KubeVersion>) -> Option<String> {
    let isolation = mode.isolation;
    if isolation == Isolation::Privileged {
        return None;
    }
    if let (Some(min), Some(v)) = (mode.min_version, version)
        && v < min
    {
        return Some(format!(
            "the cluster runs Kubernetes {}.{}, and pods in a user namespace of their own (hostUsers: false) need {}.{} or later (with containerd 2.0+ and runc 1.2+, or CRI-O, on the nodes); upgrade the cluster",
            v.major, v.minor, min.major, min.minor
        ));
    }
    let name = isolation.as_str();
    if let (Some(class), Some(other)) = (&mode.runtime_class, spec.runtime_class_name.as_deref().filter(|c| !c.is_empty()))
        && other != class
    {
        return Some(format!("it already sets runtimeClassName {other:?}, and {name} needs {class:?}"));
    }
    if spec.host_pid == Some(true) {
        return Some(format!("it uses hostPID, which a {name} pod cannot share"));
    }
    if spec.host_ipc == Some(true) {
        return Some(format!("it uses hostIPC, which a {name} pod cannot share"));
    }
    if mode.user_namespace != UserNamespace::Untouched && spec.host_users == Some(true) {
        return Some(format!("it sets hostUsers: true, and {name} needs the pod in a user namespace (hostUsers: false)"));
    }
    if mode.refuses_nfs
        && let Some(v) = spec.volumes.iter().flatten().find(|v| v.nfs.is_some())
    {
        return Some(format!(
            "its volume {:?} is NFS, which the kubelet cannot id-map into the pod's user namespace (the pod would not start)",
            v.name
        ));
    }
    if isolation == Isolation::Sysbox {
        let containers = spec.init_containers.iter().flatten().chain(&spec.containers);
        if let Some(c) = containers.into_iter().find(|c| c.security_context.as_ref().and_then(|s| s.privileged) == Some(true)) {
            return Some(format!(
                "its container {:?} is privileged, which Sysbox refuses (root in a Sysbox pod is root in its user namespace only)",
                c.name
            ));
        }
    }
    None
}

/// Whether the cluster has `mode`'s RuntimeClass; the reason not to inject when it does not, or
/// cannot be told.
pub fn class_problem(mode: &Mode, cluster: &ClusterInfo) -> Option<SkipReason> {
    let class = mode.runtime_class.as_deref()?;
    let isolation = mode.isolation.as_str();
    match &cluster.runtime_classes {
        RuntimeClasses::NotChecked => None,
        RuntimeClasses::Known(names) if names.contains(class) => None,
        RuntimeClasses::Known(_) => Some(SkipReason::RuntimeClassMissing { isolation, class: class.to_owned() }),
        RuntimeClasses::Syncing => Some(SkipReason::RuntimeClassesUnknown { isolation, class: class.to_owned(), error: None }),
        RuntimeClasses::Unlisted(error) => {
            Some(SkipReason::RuntimeClassesUnknown { isolation, class: class.to_owned(), error: Some(Arc::clone(error)) })
        }
    }
}

/// Adds the pod-level fields of `mode`: its runtime class, `hostUsers: false` where it makes a
/// user namespace, and the mode's `podAnnotations` the pod does not set itself. Whether the pod
/// has annotations afterwards.
pub fn add_to_pod(
    patch: &mut PatchBuilder,
    spec: &PodSpec,
    annotations: Option<&BTreeMap<String, String>>,
    mode: &Mode,
    config: &Config,
) -> bool {
    let mut has_annotations = annotations.is_some();
    if let Some(class) = mode.runtime_class.as_deref()
        && spec.runtime_class_name.as_deref() != Some(class)
    {
        patch.add(&["spec", "runtimeClassName"], class);
    }
    if mode.user_namespace != UserNamespace::Untouched && spec.host_users != Some(false) {
        patch.add(&["spec", "hostUsers"], &false);
    }
    for (key, value) in config.isolation.pod_annotations(mode.isolation).into_iter().flatten() {
        if !annotations.is_some_and(|a| a.contains_key(key)) {
            patch.insert(&["metadata", "annotations"], has_annotations, key, value);
            has_annotations = true;
        }
    }
    has_annotations
}

/// The size of Kata's loop disk for an emptyDir of `storage_bytes`: a margin below the emptyDir's
/// `sizeLimit` (1/32 of it, at least 64 MiB), so a full disk never gets the pod evicted for
/// exceeding the limit (the margin holds the host filesystem's own blocks for the file's extents
/// and the directory: the kubelet counts them too). The image is sparse: it takes only what dockerd
/// writes. Never more than the limit less the margin, however small: an emptyDir too small for a
/// disk gets none (mkfs fails, and the sidecar's log says so), never one that would outgrow it.
pub fn kata_disk_bytes(storage_bytes: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let margin = (storage_bytes / 32).max(64 * MIB);
    storage_bytes.saturating_sub(margin) / MIB * MIB
}

/// The part of the Kata sidecar's startup script that gives dockerd a data root overlayfs can
/// use. In the VM the emptyDir at /var/lib/docker arrives over virtio-fs, which overlayfs cannot
/// take as its upper layer (Kata's how-to-run-docker-with-kata), so dockerd would fail or fall
/// back to the slow `vfs` driver. The script tries an overlay mount on /var/lib/docker; when it
/// fails, an ext4 image of `disk_bytes` on the emptyDir is loop-mounted over /var/lib/docker (kept
/// across restarts of the sidecar in the same pod, made anew when it does not mount). Everything
/// is said in the sidecar's log.
pub fn kata_disk_script(disk_bytes: u64) -> String {
    format!(
        r#"r=/var/lib/docker
kata() {{ echo "dind-injector kata: $*" >&2; }}
p="$r/.dind-injector-probe"
if mkdir -p "$p/l" "$p/u" "$p/w" "$p/m" && mount -t overlay overlay -o "lowerdir=$p/l,upperdir=$p/u,workdir=$p/w" "$p/m" 2>/dev/null; then
  umount "$p/m" 2>/dev/null || :
  rm -rf "$p" 2>/dev/null || :
  kata "$r takes overlayfs as it is; no loop disk"
else
  rm -rf "$p" 2>/dev/null || :
  fs=$(awk -v r="$r" '$2 == r {{ t = $3 }} END {{ print t }}' /proc/mounts)
  img="$r/dind-injector-disk.ext4"
  disk() {{ rm -f "$img" && truncate -s {disk_bytes} "$img" && mkfs.ext4 -q -F -m 0 "$img"; }}
  if ! command -v mkfs.ext4 >/dev/null 2>&1; then
    kata "$r (${{fs:-?}}) cannot be overlayfs's upper layer and mkfs.ext4 is not in the sidecar image: dockerd may fall back to the slow vfs driver"
  elif {{ [ -s "$img" ] && mount -o loop "$img" "$r" 2>/dev/null; }} || {{ disk && mount -o loop "$img" "$r"; }}; then
    kata "$r (${{fs:-?}}) cannot be overlayfs's upper layer: the data root is a {disk_mib} MiB ext4 loop disk on it"
  else
    kata "could not loop-mount an ext4 disk over $r (${{fs:-?}}): dockerd may fall back to the slow vfs driver"
  fi
fi
"#,
        disk_mib = disk_bytes >> 20,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn the_kata_disk_stays_below_the_emptydir_limit() {
        const GIB: u64 = 1 << 30;
        assert_eq!(kata_disk_bytes(20 * GIB), 20 * GIB - 640 * (1 << 20));
        assert_eq!(kata_disk_bytes(GIB), GIB - 64 * (1 << 20));
        assert_eq!(kata_disk_bytes(100 << 20), 36 << 20);
        for storage in [0, 64 << 20, 65 << 20, 100 << 20, 1 << 30, 3 << 30, 20 * GIB, 100 * GIB] {
            let disk = kata_disk_bytes(storage);
            assert!(disk + (64 << 20).min(storage) <= storage, "a {storage}-byte emptyDir gets a {disk}-byte disk: no margin left");
        }
        let script = kata_disk_script(GIB);
        assert!(script.contains("truncate -s 1073741824 "));
        // The sidecar runs under `sh -e`: cleaning up the probe must never end the script.
        assert!(
            script
                .lines()
                .filter(|l| l.trim_start().starts_with("rm ") || l.trim_start().starts_with("umount "))
                .all(|l| l.ends_with("|| :")),
            "{script}"
        );
    }

    #[test]
    fn pods_that_cannot_take_a_mode_say_why() {
        let config = Config::default();
        let mode = |i: Isolation| {
            let mut m = Mode::of(i, &config);
            if m.runtime_class.is_some() {
                m.runtime_class = Some("c".into());
            }
            m
        };
        let plain = spec(serde_json::json!({"containers": [{"name": "build"}]}));
        for i in Isolation::ALL {
            assert_eq!(unsuited(&plain, &mode(i), None), None, "{i:?}");
        }
        let cases = [
            (serde_json::json!({"runtimeClassName": "gvisor", "containers": []}), "runtimeClassName \"gvisor\""),
            (serde_json::json!({"hostPID": true, "containers": []}), "hostPID"),
            (serde_json::json!({"hostIPC": true, "containers": []}), "hostIPC"),
        ];
        for (s, why) in cases {
            for i in [Isolation::Sysbox, Isolation::Kata] {
                let got = unsuited(&spec(s.clone()), &mode(i), None).unwrap_or_default();
                assert!(got.contains(why), "{i:?}: {got}");
            }
            assert_eq!(unsuited(&spec(s), &mode(Isolation::Privileged), None), None);
        }
        let privileged = spec(serde_json::json!({"containers": [{"name": "tool", "securityContext": {"privileged": true}}]}));
        assert!(unsuited(&privileged, &mode(Isolation::Sysbox), None).is_some_and(|w| w.contains("\"tool\" is privileged")));
        assert_eq!(unsuited(&privileged, &mode(Isolation::Kata), None), None);
        let host_users = spec(serde_json::json!({"hostUsers": true, "containers": []}));
        for i in [Isolation::Sysbox, Isolation::Userns] {
            assert!(unsuited(&host_users, &mode(i), None).is_some_and(|w| w.contains("hostUsers")), "{i:?}");
        }
        let same_class = spec(serde_json::json!({"runtimeClassName": "c", "containers": []}));
        assert_eq!(unsuited(&same_class, &mode(Isolation::Kata), None), None);
    }

    #[test]
    fn userns_needs_1_33_host_namespaces_off_and_no_nfs() {
        let m = Mode::of(Isolation::Userns, &Config::default());
        let plain = spec(serde_json::json!({"containers": [{"name": "build"}]}));
        let v = |minor| Some(KubeVersion { major: 1, minor });
        assert!(unsuited(&plain, &m, v(32)).is_some_and(|w| w.contains("Kubernetes 1.32") && w.contains("1.33 or later")));
        assert_eq!(unsuited(&plain, &m, v(33)), None);
        assert_eq!(unsuited(&plain, &m, None), None, "offline: the version is not known");
        // A pod's own RuntimeClass is kept when the mode names none.
        assert_eq!(unsuited(&spec(serde_json::json!({"runtimeClassName": "runc-fast", "containers": []})), &m, None), None);
        let nfs =
            spec(serde_json::json!({"containers": [], "volumes": [{"name": "shared", "nfs": {"server": "nfs.example", "path": "/x"}}]}));
        assert!(unsuited(&nfs, &m, None).is_some_and(|w| w.contains("\"shared\" is NFS")));
        assert_eq!(unsuited(&nfs, &Mode::of(Isolation::Privileged, &Config::default()), None), None);
        for host in ["hostPID", "hostIPC"] {
            assert!(unsuited(&spec(serde_json::json!({host: true, "containers": []})), &m, None).is_some_and(|w| w.contains(host)));
        }
    }
}
