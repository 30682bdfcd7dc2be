//! Isolation modes: whether a pod can take the one it gets, whether the cluster can serve it,
//! and what it adds to the pod.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodSpec;

use crate::config::{Config, Isolation};

use super::patch::PatchBuilder;
use super::{ClusterInfo, RuntimeClasses, SkipReason};

/// Why `spec` cannot run with `isolation` (whose RuntimeClass is `class`), if it cannot.
pub fn unsuited(spec: &PodSpec, isolation: Isolation, class: &str) -> Option<String> {
    if isolation == Isolation::Privileged {
        return None;
    }
    if let Some(other) = spec.runtime_class_name.as_deref().filter(|c| !c.is_empty() && *c != class) {
        return Some(format!("it already sets runtimeClassName {other:?}, and {} needs {class:?}", isolation.as_str()));
    }
    if spec.host_pid == Some(true) {
        return Some(format!("it uses hostPID, which a {} pod cannot share", isolation.as_str()));
    }
    if spec.host_ipc == Some(true) {
        return Some(format!("it uses hostIPC, which a {} pod cannot share", isolation.as_str()));
    }
    if isolation == Isolation::Sysbox {
        if spec.host_users == Some(true) {
            return Some("it sets hostUsers: true, and Sysbox needs the pod in a user namespace (hostUsers: false)".into());
        }
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

/// Whether the cluster has `isolation`'s RuntimeClass; the reason not to inject when it does not,
/// or cannot be told.
pub fn class_problem(isolation: Isolation, config: &Config, cluster: &ClusterInfo) -> Option<SkipReason> {
    let class = config.isolation.runtime_class(isolation)?;
    match &cluster.runtime_classes {
        RuntimeClasses::NotChecked => None,
        RuntimeClasses::Known(names) if names.contains(class) => None,
        RuntimeClasses::Known(_) => Some(SkipReason::RuntimeClassMissing { isolation: isolation.as_str(), class: class.to_owned() }),
        RuntimeClasses::Syncing => {
            Some(SkipReason::RuntimeClassesUnknown { isolation: isolation.as_str(), class: class.to_owned(), error: None })
        }
        RuntimeClasses::Unlisted(error) => Some(SkipReason::RuntimeClassesUnknown {
            isolation: isolation.as_str(),
            class: class.to_owned(),
            error: Some(Arc::clone(error)),
        }),
    }
}

/// Adds the pod-level fields of `isolation`: its runtime class, for Sysbox `hostUsers: false`,
/// and the mode's `podAnnotations` the pod does not set itself. Whether the pod has annotations
/// afterwards.
pub fn add_to_pod(
    patch: &mut PatchBuilder,
    spec: &PodSpec,
    annotations: Option<&BTreeMap<String, String>>,
    isolation: Isolation,
    config: &Config,
) -> bool {
    let mut has_annotations = annotations.is_some();
    let Some(class) = config.isolation.runtime_class(isolation) else {
        return has_annotations;
    };
    if spec.runtime_class_name.as_deref() != Some(class) {
        patch.add(&["spec", "runtimeClassName"], class);
    }
    if isolation == Isolation::Sysbox && spec.host_users != Some(false) {
        patch.add(&["spec", "hostUsers"], &false);
    }
    for (key, value) in config.isolation.pod_annotations(isolation).into_iter().flatten() {
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
        let plain = spec(serde_json::json!({"containers": [{"name": "build"}]}));
        for i in Isolation::ALL {
            assert_eq!(unsuited(&plain, i, "c"), None, "{i:?}");
        }
        let cases = [
            (serde_json::json!({"runtimeClassName": "gvisor", "containers": []}), "runtimeClassName \"gvisor\""),
            (serde_json::json!({"hostPID": true, "containers": []}), "hostPID"),
            (serde_json::json!({"hostIPC": true, "containers": []}), "hostIPC"),
        ];
        for (s, why) in cases {
            for i in [Isolation::Sysbox, Isolation::Kata] {
                let got = unsuited(&spec(s.clone()), i, "c").unwrap_or_default();
                assert!(got.contains(why), "{i:?}: {got}");
            }
            assert_eq!(unsuited(&spec(s), Isolation::Privileged, "c"), None);
        }
        let privileged = spec(serde_json::json!({"containers": [{"name": "tool", "securityContext": {"privileged": true}}]}));
        assert!(unsuited(&privileged, Isolation::Sysbox, "c").is_some_and(|w| w.contains("\"tool\" is privileged")));
        assert_eq!(unsuited(&privileged, Isolation::Kata, "c"), None);
        let host_users = spec(serde_json::json!({"hostUsers": true, "containers": []}));
        assert!(unsuited(&host_users, Isolation::Sysbox, "c").is_some_and(|w| w.contains("hostUsers")));
        let same_class = spec(serde_json::json!({"runtimeClassName": "c", "containers": []}));
        assert_eq!(unsuited(&same_class, Isolation::Kata, "c"), None);
    }
}
