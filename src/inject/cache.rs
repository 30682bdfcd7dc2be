//! The warm cache: which node directory (scope) a pod's daemon may take a slot of, and the part of
//! the sidecar's startup script that takes one.
//!
//! On the node, `<cache.hostPath>/<namespace>/<scope>/` holds `slot-N/` data roots and their
//! `slot-N.lock` files. Only the scope's directory is mounted into the sidecar; the script takes
//! an exclusive non-blocking `flock` on the first free slot's lock file (held by dockerd, which
//! inherits the descriptor, until the container's last process dies), empties a slot grown past
//! `cache.maxSlotSize`, removes what must not carry over (containers, volumes, networks,
//! plugins, swarm state, pid files), bind-mounts the slot at `/var/lib/docker-slot-N` (dockerd's
//! `--data-root`, so `docker info` says which slot) and detaches the scope directory, so the
//! daemon (and every `docker run -v` a job asks of it) sees its own slot only. With every slot
//! busy it starts cold on its emptyDir at `/var/lib/docker`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::annotations;
use crate::config::{CacheMode, CacheScope, Config};
use crate::namespace::NamespaceView;

use super::mode::Mode;
use super::runner::Runner;

/// Where the scope directory is mounted in the sidecar (only until the script detaches it).
pub const CACHE_MOUNT: &str = "/var/lib/dind-injector-cache";
/// The scope directory's name under the namespace for `scope: namespace`.
pub const NAMESPACE_SCOPE: &str = "namespace";
/// The longest scope directory name written (a hash keeps longer keys apart).
const MAX_SCOPE_NAME: usize = 100;

/// The cache one injected daemon may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePlan {
    /// `<namespace>/<scope name>`: the node directory relative to `cache.hostPath`, as the log
    /// and `explain` show it.
    pub scope: String,
    /// The node directory (the hostPath volume's path).
    pub host_path: String,
    /// Slots in the scope.
    pub slots: u32,
    /// A slot larger than this (KiB) is emptied before use.
    pub max_kib: u128,
}

/// The cache for a pod in `namespace` whose daemon runs with `isolation`, or none (off in the
/// configuration, opted out, or the isolation mode cannot hold it), with a warning for every
/// cache annotation that is not applied and for an isolation that rules the cache out.
pub fn resolve(
    pod: &Pod,
    runner: Runner,
    namespace: &NamespaceView,
    mode: &Mode,
    config: &Config,
    warnings: &mut Vec<String>,
) -> Option<CachePlan> {
    let c = &config.cache;
    let mut on = c.mode == CacheMode::Node;
    let empty = BTreeMap::new();
    let layers = [
        ("namespace label", &namespace.labels),
        ("namespace annotation", &namespace.annotations),
        ("pod annotation", pod.metadata.annotations.as_ref().unwrap_or(&empty)),
    ];
    for (source, map) in layers {
        let Some(value) = map.get(annotations::CACHE) else { continue };
        match value.trim() {
            "off" => on = false,
            "node" if c.mode == CacheMode::Node => {}
            "node" => warnings.push(format!(
                "dind-injector: {source} {}=node is not applied: the cluster configuration has cache.mode off, and only an administrator can turn the cache on",
                annotations::CACHE
            )),
            other => warnings.push(format!(
                "dind-injector: {source} {}={other:?} is not applied: use \"off\" to start this daemon empty",
                annotations::CACHE
            )),
        }
    }
    if !on {
        return None;
    }
    // A mode that needs no exemption runs at baseline, which forbids the cache's hostPath.
    let unusable = mode.no_cache.or_else(|| {
        (!mode.exempt && namespace.pod_security_enforce() == Some("baseline"))
            .then_some("the namespace enforces Pod Security baseline, which forbids the cache's hostPath volume")
    });
    if let Some(why) = unusable {
        warnings.push(format!(
            "dind-injector: the node cache is not used for this pod ({} isolation): {why}; its daemon starts empty",
            mode.isolation.as_str()
        ));
        return None;
    }
    let namespace = &namespace.name;
    let name = match c.scope {
        CacheScope::Namespace => NAMESPACE_SCOPE.to_owned(),
        CacheScope::Project => project_key(pod, runner).map_or_else(|| NAMESPACE_SCOPE.to_owned(), |key| scope_name(runner, &key)),
    };
    let scope = format!("{namespace}/{name}");
    Some(CachePlan { host_path: format!("{}/{scope}", c.host_path), scope, slots: c.slots_per_scope, max_kib: c.max_slot_kib() })
}

/// The runner's project of `pod`, when the runner says it.
fn project_key(pod: &Pod, runner: Runner) -> Option<String> {
    let labels = pod.metadata.labels.as_ref();
    let annotations = pod.metadata.annotations.as_ref();
    let get = |key: &str| {
        labels.and_then(|l| l.get(key)).or_else(|| annotations.and_then(|a| a.get(key))).map(|v| v.trim()).filter(|v| !v.is_empty())
    };
    match runner {
        Runner::GitLab => get("project.runner.gitlab.com/id").map(str::to_owned),
        Runner::Buildkite => get("buildkite.com/pipeline-slug").map(str::to_owned),
        Runner::Harness => {
            get("projectID")?;
            let parts: Vec<&str> = ["accountID", "orgID", "projectID", "pipelineID"].iter().filter_map(|k| get(k)).collect();
            Some(parts.join("."))
        }
        Runner::Generic => None,
    }
}

/// `<runner>-<key>`, made a safe single path component: characters other than letters, digits,
/// `.`, `_` and `-` become `_`, and a key that had to be changed or shortened gets 8 hex digits
/// of its hash, so two keys never share a directory. The runner prefix means it is never `.`,
/// `..` or [`NAMESPACE_SCOPE`].
pub fn scope_name(runner: Runner, key: &str) -> String {
    let raw = format!("{}-{key}", runner.as_str());
    let mut safe: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).take(MAX_SCOPE_NAME).collect();
    if safe != raw {
        let hash = crate::status::template_hash(raw.as_bytes());
        safe.push('-');
        safe.push_str(hash.trim_start_matches("sha256:"));
    }
    safe
}

/// Whether `name` is a scope directory name [`resolve`] can write.
pub fn is_scope_name(name: &str) -> bool {
    name == NAMESPACE_SCOPE
        || (name.len() <= MAX_SCOPE_NAME + 17
            && ["gitlab-", "buildkite-", "harness-"].iter().any(|p| name.starts_with(p))
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
}

/// The startup script's part that takes a slot (see the module documentation). Runs before the
/// daemon starts, so nothing a previous job left runs in it, not even a container with a
/// restart policy; the startup probe passes only once dockerd answers, after all of it.
pub fn slot_script(plan: &CachePlan) -> String {
    format!(
        r#"# dind-injector cache: take a free slot of this scope, or start cold.
c={mount} n={slots} max_kib={max} scope={scope}
say() {{ echo "dind-injector cache: $*" >&2; }}
size() {{ awk -v k="$1" 'BEGIN {{ if (k >= 1048576) printf "%.1f GiB", k / 1048576; else printf "%d MiB", k / 1024 }}'; }}
slot=
if ! command -v flock >/dev/null 2>&1; then
  say "flock is not in the sidecar image; starting cold on the pod's emptyDir"
  n=0
elif [ ! -w "$c" ]; then
  say "$c (the node's cache directory) is not writable; starting cold on the pod's emptyDir"
  n=0
else
  i=1
  while [ "$i" -le "$n" ]; do
    if exec 9>>"$c/slot-$i.lock" && flock -n 9; then slot=$i; break; fi
    exec 9>&-
    i=$((i+1))
  done
fi
if [ -n "$slot" ]; then
  d="$c/slot-$slot"
  mkdir -p "$d"
  kib=$(du -sk "$d" 2>/dev/null | cut -f1)
  kib=${{kib:-0}}
  state=warm
  if [ "$kib" -gt "$max_kib" ]; then
    say "slot $slot holds $(size "$kib"), over cache.maxSlotSize ($(size "$max_kib")): emptying it"
    rm -rf "$d"
    mkdir -p "$d"
    state="cold, emptied"
    kib=0
  elif [ ! -d "$d/image" ]; then
    state=cold
  fi
  # Only images and build cache carry over: not the containers (their writable layers included),
  # volumes, networks, plugins, swarm state or pid files of the jobs before.
  for m in "$d"/image/*/layerdb/mounts/*; do
    [ -d "$m" ] || continue
    drv=${{m%/layerdb/mounts/*}}
    drv=${{drv##*/}}
    for f in mount-id init-id; do
      id=$(cat "$m/$f" 2>/dev/null) || continue
      case "$id" in ''|*[!A-Za-z0-9-]*) ;; *) rm -rf "$d/$drv/$id" ;; esac
    done
    rm -rf "$m"
  done
  rm -rf "$d/containers" "$d/volumes" "$d/network" "$d/plugins" "$d/swarm" "$d/tmp" "$d/runtimes"
  rm -f "$d"/*.pid
  r=/var/lib/docker-slot-$slot
  if mkdir -p "$r" && mount -o bind "$d" "$r" && umount -l "$c"; then
    set -- "$@" "--data-root=$r"
    say "slot $slot of $n, scope $scope, $state ($(size "$kib"))"
  else
    say "could not mount slot $slot at $r; starting cold on the pod's emptyDir"
    umount -l "$r" 2>/dev/null || :
    exec 9>&-
  fi
elif [ "$n" -gt 0 ]; then
  say "all $n slots of scope $scope busy, starting cold on the pod's emptyDir"
fi
# The daemon sees its own slot at most: the scope's other slots are not reachable from it.
umount -l "$c" 2>/dev/null || :
"#,
        mount = CACHE_MOUNT,
        slots = plan.slots,
        max = plan.max_kib,
        scope = super::shell::shell_quote(&plan.scope),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheConfig;

    fn pod(labels: serde_json::Value, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"labels": labels, "annotations": annotations}, "spec": {"containers": []}}))
            .unwrap_or_default()
    }

    fn on(scope: CacheScope) -> Config {
        Config { cache: CacheConfig { mode: CacheMode::Node, scope, ..CacheConfig::default() }, ..Config::default() }
    }

    fn plan(p: &Pod, runner: Runner, config: &Config, ns_labels: &[(&str, &str)]) -> (Option<CachePlan>, Vec<String>) {
        let labels: BTreeMap<String, String> = ns_labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut w = Vec::new();
        let mode = crate::inject::mode::Mode::of(crate::config::Isolation::Privileged, config);
        (resolve(p, runner, &NamespaceView::new("ci", labels, BTreeMap::new()), &mode, config, &mut w), w)
    }

    #[test]
    fn off_unless_the_administrator_turns_it_on() {
        let asks = pod(serde_json::json!({}), serde_json::json!({annotations::CACHE: "node"}));
        let (p, w) = plan(&asks, Runner::GitLab, &Config::default(), &[]);
        assert!(p.is_none());
        assert!(w.len() == 1 && w[0].contains("only an administrator"), "{w:?}");
        let (p, w) = plan(&asks, Runner::GitLab, &on(CacheScope::Namespace), &[]);
        let p = p.unwrap_or_else(|| panic!("no plan"));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(p.scope, "ci/namespace");
        assert_eq!(p.host_path, "/var/lib/dind-injector/cache/ci/namespace");
        assert_eq!((p.slots, p.max_kib), (4, 20 * 1024 * 1024));
    }

    #[test]
    fn pods_and_namespaces_opt_out() {
        let config = on(CacheScope::Namespace);
        let out = pod(serde_json::json!({}), serde_json::json!({annotations::CACHE: "off"}));
        assert!(plan(&out, Runner::GitLab, &config, &[]).0.is_none());
        let plain = pod(serde_json::json!({}), serde_json::json!({}));
        assert!(plan(&plain, Runner::GitLab, &config, &[(annotations::CACHE, "off")]).0.is_none());
        let (p, w) = plan(&pod(serde_json::json!({}), serde_json::json!({annotations::CACHE: "yes"})), Runner::GitLab, &config, &[]);
        assert!(p.is_some() && w.len() == 1 && w[0].contains("\"yes\""), "{w:?}");
    }

    #[test]
    fn project_scope_per_runner_within_the_namespace() {
        let config = on(CacheScope::Project);
        let gitlab = pod(serde_json::json!({"project.runner.gitlab.com/id": "42"}), serde_json::json!({}));
        assert_eq!(plan(&gitlab, Runner::GitLab, &config, &[]).0.map(|p| p.scope).as_deref(), Some("ci/gitlab-42"));
        let bk = pod(serde_json::json!({}), serde_json::json!({"buildkite.com/pipeline-slug": "web/app ../x"}));
        let scope = plan(&bk, Runner::Buildkite, &config, &[]).0.map(|p| p.scope).unwrap_or_default();
        assert!(scope.starts_with("ci/buildkite-web_app_.._x-") && scope.len() == "ci/buildkite-web_app_.._x-".len() + 16, "{scope}");
        let harness = pod(
            serde_json::json!({"accountID": "acc", "orgID": "default", "projectID": "webapp", "pipelineID": "build"}),
            serde_json::json!({}),
        );
        assert_eq!(
            plan(&harness, Runner::Harness, &config, &[]).0.map(|p| p.scope).as_deref(),
            Some("ci/harness-acc.default.webapp.build")
        );
        // Without the runner's project: the namespace.
        let none = pod(serde_json::json!({}), serde_json::json!({}));
        assert_eq!(plan(&none, Runner::GitLab, &config, &[]).0.map(|p| p.scope).as_deref(), Some("ci/namespace"));
        assert_eq!(plan(&gitlab, Runner::Generic, &config, &[]).0.map(|p| p.scope).as_deref(), Some("ci/namespace"));
    }

    #[test]
    fn scope_names_are_single_safe_components() {
        for key in ["42", "..", "a/b", "x".repeat(300).as_str(), "ünï", ""] {
            let n = scope_name(Runner::GitLab, key);
            assert!(is_scope_name(&n), "{key:?} -> {n:?}");
            assert!(!n.contains('/') && n != "." && n != "..", "{n}");
        }
        assert_ne!(scope_name(Runner::GitLab, "a/b"), scope_name(Runner::GitLab, "a_b"));
        assert!(!is_scope_name(".."));
        assert!(!is_scope_name("other"));
        assert!(!is_scope_name("gitlab-a/b"));
    }

    #[test]
    fn the_script_never_uses_a_slot_without_its_lock() {
        let s = slot_script(&CachePlan { scope: "ci/it's".into(), host_path: String::new(), slots: 2, max_kib: 1024 });
        assert!(s.contains("flock -n 9; then slot=$i"), "{s}");
        assert!(s.contains(r"scope='ci/it'\''s'"), "{s}");
        assert!(s.contains("n=2 max_kib=1024"), "{s}");
    }
}
