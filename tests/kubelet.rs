//! The kubelet's local-storage eviction (tests/support/kubelet.rs) against what the injector adds.
//!
//! The model is first checked against what a real kubelet did (README fact 10 in
//! tests/fixtures/apiserver/): the pods the 2026-12-02 main injected, as the apiserver stored
//! them, with their emptyDirs made on this machine's filesystem and measured as the kubelet
//! measures, are evicted with the kubelet's message. Then every pod the injector makes now, in
//! every isolation mode, transport, sidecar mode and with the node cache, is measured the same
//! way at rest and with every injected volume and the sidecar's own layer as full as their
//! bounds let them be: no rule fires. tests/jobs.rs measures the same on running pods.

mod support;

use std::path::{Path, PathBuf};

use dind_injector::config::{CacheMode, Config, Isolation};
use dind_injector::inject::{self, ClusterInfo, Outcome, storage};
use dind_injector::namespace::NamespaceView;
use serde_json::{Value, json};
use support::kubelet::{Usage, disk_usage, eviction, pod_storage_limit, quantity_bytes};
use support::*;

/// A directory on the filesystem the test engine keeps its data on (the node's, for the
/// kubelet's emptyDirs): where empty directories are made and measured.
fn node_dir() -> tempfile::TempDir {
    let base = PathBuf::from(std::env::var("DIND_INJECTOR_ENGINE_DIR").unwrap_or_else(|_| "/var/cache/dind-injector/engine".into()));
    let parent = base.parent().map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let dir = std::fs::create_dir_all(&parent).ok().and_then(|()| tempfile::Builder::new().prefix("kubelet-").tempdir_in(&parent).ok());
    dir.unwrap_or_else(|| tempfile::Builder::new().prefix("dij-kubelet-").tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")))
}

/// The filesystem type under `path` (from /proc/self/mounts: the longest mount point above it).
fn fs_type(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.display().to_string();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && (path == f[1] || path.starts_with(&format!("{}/", f[1].trim_end_matches('/')))))
                .then(|| (f[1].len(), f[2].to_owned()))
        })
        .max()
        .map(|(_, t)| t)
        .unwrap_or_default()
}

/// Every volume of `pod` that is not a hostPath, made as an empty directory under `node` and
/// measured; containers measured at 0 (nothing written yet).
fn at_rest(pod: &Value, node: &Path) -> Usage {
    let mut usage = Usage::default();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let Some(name) = v["name"].as_str() else { continue };
        if v.get("hostPath").is_some() {
            continue;
        }
        let d = node.join(name);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        usage.volumes.insert(name.to_owned(), disk_usage(&d));
    }
    for c in
        pod["spec"]["initContainers"].as_array().into_iter().flatten().chain(pod["spec"]["containers"].as_array().into_iter().flatten())
    {
        usage.containers.insert(c["name"].as_str().unwrap_or_default().to_owned(), 0);
    }
    usage
}

/// The recorded pods measured on this machine: with the 2026-12-02 injection's 1Ki limit on
/// `dind-no-token` the model evicts them as the real kubelet did, with its message, once the
/// empty directory measures more than 1 KiB (one ext4 block).
#[test]
fn the_model_evicts_the_recorded_pods_as_the_real_kubelet_did() {
    let node = node_dir();
    let empty = node.path().join("probe");
    std::fs::create_dir_all(&empty).unwrap_or_else(|e| panic!("{e}"));
    let block = disk_usage(&empty);
    eprintln!("an empty directory on {} ({}) measures {block} bytes", node.path().display(), fs_type(node.path()));
    assert!(block > 1024, "an empty directory measures {block} bytes on {}: the recording's ext4 counts 4096", fs_type(node.path()));

    let dir = fixtures_dir().join("apiserver");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let recording: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stored = &recording["stored"];
        if !stored["metadata"]["annotations"].get("dind-injector.io/status").is_some_and(Value::is_string) {
            continue;
        }
        // The pod as the real kubelet saw it (fact 10): its token directory limited to 1Ki, as
        // the 2026-12-02 recordings store it; a recording made with the current injection (no
        // limit there) gets it planted, and as recorded it must not be evicted.
        let mut as_evicted = stored.clone();
        let mut planted = false;
        for v in as_evicted["spec"]["volumes"].as_array_mut().into_iter().flatten().filter(|v| v["name"] == "dind-no-token") {
            planted = v["emptyDir"]["sizeLimit"] != "1Ki";
            v["emptyDir"] = json!({"sizeLimit": "1Ki"});
        }
        let pod_dir = node.path().join(path.file_stem().unwrap_or_default());
        let usage = at_rest(stored, &pod_dir);
        assert_eq!(
            eviction(&as_evicted, &usage).as_deref(),
            Some("Usage of EmptyDir volume \"dind-no-token\" exceeds the limit \"1Ki\". "),
            "{}: the kubelet evicted this pod",
            path.display()
        );
        if planted {
            assert_eq!(eviction(stored, &usage), None, "{}: as recorded now", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 18, "only {checked} injected recordings in {}", dir.display());
}

/// A configuration's name, the configuration, and the pod annotations it comes with.
type Case = (String, Config, Vec<(&'static str, &'static str)>);

/// Every configuration the injector is run with: isolation, transport, sidecar mode, cache.
fn configurations() -> Vec<Case> {
    let mut out = Vec::new();
    for isolation in Isolation::ALL {
        for transport in ["unix", "tcp", "tcp-tls"] {
            for mode in ["native", "container"] {
                for cache in [false, true] {
                    let mut config = Config::default();
                    config.sidecar.isolation = isolation;
                    if cache {
                        config.cache.mode = CacheMode::Node;
                    }
                    let name = format!("{}-{transport}-{mode}{}", isolation.as_str(), if cache { "-cache" } else { "" });
                    out.push((name, config, vec![("dind-injector.io/transport", transport), ("dind-injector.io/sidecar-mode", mode)]));
                }
            }
        }
    }
    out
}

/// The pod `fixture` injected with `config` and `annotations`, as the apiserver stores it.
fn injected(fixture: &str, config: &Config, annotations: &[(&str, &str)], edit: impl Fn(&mut Value)) -> (Value, inject::Injection) {
    let mut pod = review_pod(fixture);
    for (k, v) in annotations {
        pod["metadata"]["annotations"][*k] = json!(v);
    }
    edit(&mut pod);
    let decision = inject::plan_injection(&typed(&pod), &NamespaceView::opted_in("ci"), config, &ClusterInfo::default());
    let Outcome::Inject(injection) = decision.outcome else { panic!("{fixture}: not injected: {:?}", decision.outcome) };
    let patched = apply(&pod, &injection.patch);
    (support::apiserver::after_mutation(&patched).pod, *injection)
}

/// What the injector added: the sidecar's name, and the volumes it added that the kubelet measures.
fn added(injection: &inject::Injection) -> (String, Vec<String>) {
    let cache = injection.status.cache.as_ref().map(|c| c.volume.clone());
    (injection.status.container.clone(), injection.status.volumes.iter().filter(|v| Some(*v) != cache.as_ref()).cloned().collect())
}

/// `usage` with every injected volume and the sidecar as full as the injection's bounds let them
/// be: the data root at its sizeLimit (or, for Kata, the loop disk full), the sidecar's own layer
/// and logs at the room it is given less what the small injected directories measure.
fn injection_full(injection: &inject::Injection, mut usage: Usage) -> Usage {
    let (sidecar, volumes) = added(injection);
    let data_root = storage::bytes(&injection.storage.data_root);
    let storage_volume = &injection.status.volumes[0];
    let full_root = if injection.status.isolation == Isolation::Kata {
        // The sparse disk fully written, plus the host filesystem's blocks for its extents (at
        // most 1/1024 of it for ext4's extent tree at its worst) and the directory.
        let disk = u128::from(inject::isolation::kata_disk_bytes(u64::try_from(data_root).unwrap_or(u64::MAX)));
        disk + disk / 1024 + 4096
    } else {
        data_root
    };
    usage.volumes.insert(storage_volume.clone(), u64::try_from(full_root).unwrap_or(u64::MAX));
    let small: u64 = volumes.iter().filter(|v| *v != storage_volume).filter_map(|v| usage.volumes.get(v)).sum();
    let own = storage::SIDECAR_OWN_STORAGE - small - 64 * 1024;
    usage.containers.insert(sidecar, own);
    usage
}

/// No injected volume or container can get a pod evicted by itself, in any configuration: at rest
/// (every volume an empty directory on this machine's filesystem) and with everything the
/// injection adds as full as its bounds allow.
#[test]
fn nothing_the_injector_adds_gets_a_pod_evicted() {
    let node = node_dir();
    let mut checked = 0;
    for fixture in INJECTED_FIXTURES {
        for (name, config, annotations) in configurations() {
            let (pod, injection) = injected(fixture, &config, &annotations, |_| {});
            let usage = at_rest(&pod, &node.path().join(format!("{fixture}-{name}")));
            assert_eq!(eviction(&pod, &usage), None, "{fixture} {name} at rest: {}", support::kubelet::report(&pod, &usage));
            let full = injection_full(&injection, usage);
            assert_eq!(eviction(&pod, &full), None, "{fixture} {name}, the injection full: {}", support::kubelet::report(&pod, &full));
            // The injected volumes: only the data root has a sizeLimit.
            let (_, volumes) = added(&injection);
            for v in pod["spec"]["volumes"].as_array().into_iter().flatten().filter(|v| volumes.iter().any(|n| v["name"] == **n)) {
                let limited = v["emptyDir"].get("sizeLimit").is_some();
                assert_eq!(limited, v["name"] == injection.status.volumes[0], "{fixture} {name}: {v}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * Isolation::ALL.len() * 3 * 2 * 2);
}

/// The control: the same measurement fails a pod whose empty token directory has a 1 KiB limit
/// (the 2026-12-03 injection), and one whose sidecar limit is only the data root's size.
#[test]
fn the_check_fails_the_limits_the_previous_release_set() {
    let node = node_dir();
    let config = Config::default();
    let limited = |p: &mut Value| {
        p["spec"]["containers"][0]["resources"]["limits"]["ephemeral-storage"] = json!("5Gi");
    };
    let (mut pod, injection) = injected("gitlab", &config, &[], limited);
    let (sidecar, _) = added(&injection);
    let no_token = injection.status.volumes[2].clone();
    for v in pod["spec"]["volumes"].as_array_mut().into_iter().flatten().filter(|v| v["name"] == no_token) {
        v["emptyDir"] = json!({"sizeLimit": "1Ki"});
    }
    let usage = at_rest(&pod, node.path());
    assert_eq!(eviction(&pod, &usage), Some(format!("Usage of EmptyDir volume {no_token:?} exceeds the limit \"1Ki\". ")));

    let (mut pod, injection) = injected("gitlab", &config, &[], limited);
    let mut usage = at_rest(&pod, &node.path().join("limit"));
    // The job uses the 5Gi its build container's limit gave the pod: a 4Gi checkout, a 1Gi layer.
    usage.volumes.insert("repo".into(), 4 << 30);
    usage.containers.insert("build".into(), 1 << 30);
    let full = injection_full(&injection, usage);
    assert_eq!(eviction(&pod, &full), None);
    for c in pod["spec"]["initContainers"].as_array_mut().into_iter().flatten().filter(|c| c["name"] == sidecar.as_str()) {
        c["resources"]["limits"]["ephemeral-storage"] = json!("20Gi");
    }
    assert_eq!(
        eviction(&pod, &full).as_deref(),
        Some("Pod ephemeral local storage usage exceeds the total limit of containers 25Gi. "),
        "with the sidecar's limit only the data root's, a full data root leaves no room for its own layer"
    );
}

/// The pod's total adds up: a job whose build container has a 5Gi limit keeps its 5Gi beside a
/// full data root; a pod with no limits gets no total from the injection.
#[test]
fn the_pods_total_is_what_it_had_plus_what_the_injection_adds() {
    let config = Config::default();
    let (pod, injection) = injected("gitlab", &config, &[], |p| {
        p["spec"]["containers"][0]["resources"]["limits"]["ephemeral-storage"] = json!("5Gi");
    });
    assert_eq!(pod["spec"]["containers"][0]["name"], "build");
    let gib = 1u128 << 30;
    assert_eq!(pod_storage_limit(&pod), Some(5 * gib + 21 * gib), "{}", pod["spec"]);
    let mut usage = Usage::default();
    usage.volumes.insert("repo".into(), 4 * (1 << 30));
    usage.containers.insert("build".into(), 1 << 30);
    let full = injection_full(&injection, usage);
    assert_eq!(eviction(&pod, &full), None, "{}", support::kubelet::report(&pod, &full));

    let (pod, _) = injected("gitlab", &config, &[], |_| {});
    assert_eq!(pod_storage_limit(&pod), None, "the fixture's containers have no storage limit, and the sidecar adds none");
    let sidecar = pod["spec"]["initContainers"].as_array().into_iter().flatten().find(|c| c["name"] == "dind").cloned().unwrap_or_default();
    assert_eq!(sidecar["resources"]["requests"]["ephemeral-storage"], "21Gi", "{sidecar}");
    assert_eq!(quantity_bytes("21Gi"), Some(21 * gib));
}

/// `medium: Memory` emptyDirs are tmpfs: an empty one measures nothing (here /dev/shm, when it is
/// tmpfs); the model checks their sizeLimit and leaves them out of the pod's total.
#[test]
fn memory_backed_empty_dirs_measure_nothing_when_empty() {
    let shm = Path::new("/dev/shm");
    if fs_type(shm) != "tmpfs" {
        eprintln!("/dev/shm is not tmpfs here: not measured");
        return;
    }
    let d = tempfile::Builder::new().prefix("dij-").tempdir_in(shm).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(disk_usage(d.path()), 0);
    std::fs::write(d.path().join("f"), vec![1u8; 10_000]).unwrap_or_else(|e| panic!("{e}"));
    assert!(disk_usage(d.path()) >= 10_000);
}
