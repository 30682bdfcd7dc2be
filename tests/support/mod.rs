//! Shared test helpers: fixtures, patch application, and the apiserver's structural pod rules.
#![allow(dead_code)]

pub mod apiserver;
pub mod binary;
pub mod cel;
pub mod kube_mock;
pub mod kubelet;
pub mod render;
pub mod serve;
pub mod tls_client;

use std::collections::HashSet;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::Value;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The project's copy of the shared fixtures.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The runners with fixtures.
pub const FIXTURES: [&str; 4] = ["gitlab", "buildkite", "harness", "arc-dind-mode"];
/// The fixtures that must be injected.
pub const INJECTED_FIXTURES: [&str; 3] = ["gitlab", "buildkite", "harness"];

/// The AdmissionReview fixture for `name`.
pub fn review(name: &str) -> Value {
    let path = fixtures_dir().join(format!("reviews/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The pod inside the review fixture `name`.
pub fn review_pod(name: &str) -> Value {
    review(name)["request"]["object"].clone()
}

/// Parses a pod value as the typed Pod.
pub fn typed(pod: &Value) -> Pod {
    serde_json::from_value(pod.clone()).unwrap_or_else(|e| panic!("not a Pod: {e}"))
}

/// Applies the injector's JSON Patch with the json-patch crate (read back from the JSON text the
/// apiserver would receive), failing the test when it does not read or apply.
pub fn apply(pod: &Value, patch: &dind_injector::inject::Patch) -> Value {
    let ops = patch.to_json_patch().unwrap_or_else(|e| panic!("patch is not a JSON Patch: {e}\npatch: {patch:?}"));
    apply_ops(pod, &ops)
}

/// Applies JSON Patch operations (as read from an admission response) with the json-patch crate,
/// failing the test when they do not apply.
pub fn apply_ops(pod: &Value, patch: &json_patch::Patch) -> Value {
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch.0)
        .unwrap_or_else(|e| panic!("patch does not apply: {e}\npatch: {}", serde_json::to_string_pretty(patch).unwrap_or_default()));
    out
}

fn dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Every container of the pod with its kind (`init`, `regular`, `ephemeral`) — ephemeral ones as
/// name, mounts and env only.
fn containers(pod: &Pod) -> Vec<(&'static str, &Container)> {
    let spec = pod.spec.as_ref();
    let mut out: Vec<(&'static str, &Container)> = Vec::new();
    if let Some(s) = spec {
        out.extend(s.init_containers.iter().flatten().map(|c| ("init", c)));
        out.extend(s.containers.iter().map(|c| ("regular", c)));
    }
    out
}

/// The structural rules the apiserver applies to a pod (the subset a patch can break): unique
/// container names across init, regular and ephemeral containers; unique volume names; every
/// mount names a volume; no duplicate mountPath or env name in a container; DNS-1123 names;
/// restartPolicy only `Always` and only on init containers; probes on init containers only for
/// sidecars; requests not above limits; subPath relative.
pub fn structural_problems(pod: &Pod) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return vec!["pod has no spec".into()];
    };
    let mut names = HashSet::new();
    let ephemeral = spec.ephemeral_containers.iter().flatten().map(|c| c.name.as_str());
    for name in containers(pod).iter().map(|(_, c)| c.name.as_str()).chain(ephemeral) {
        if !names.insert(name) {
            problems.push(format!("duplicate container name {name:?}"));
        }
        if !dns_label(name) {
            problems.push(format!("container name {name:?} is not a DNS-1123 label"));
        }
    }
    let mut volumes = HashSet::new();
    for v in spec.volumes.iter().flatten() {
        if !volumes.insert(v.name.as_str()) {
            problems.push(format!("duplicate volume name {:?}", v.name));
        }
        if !dns_label(&v.name) {
            problems.push(format!("volume name {:?} is not a DNS-1123 label", v.name));
        }
    }
    for (kind, c) in containers(pod) {
        let mut paths = HashSet::new();
        for m in c.volume_mounts.iter().flatten() {
            if !volumes.contains(m.name.as_str()) {
                problems.push(format!("container {:?} mounts missing volume {:?}", c.name, m.name));
            }
            if !paths.insert(m.mount_path.as_str()) {
                problems.push(format!("container {:?} mounts {:?} twice", c.name, m.mount_path));
            }
            if let Some(sp) = &m.sub_path
                && (sp.starts_with('/') || sp.split('/').any(|p| p == ".."))
            {
                problems.push(format!("container {:?} subPath {sp:?} is not relative", c.name));
            }
        }
        let mut env = HashSet::new();
        for e in c.env.iter().flatten() {
            if !env.insert(e.name.as_str()) {
                problems.push(format!("container {:?} sets env {:?} twice", c.name, e.name));
            }
        }
        match (kind, c.restart_policy.as_deref()) {
            (_, None) => {
                if kind == "init" && (c.startup_probe.is_some() || c.readiness_probe.is_some() || c.liveness_probe.is_some()) {
                    problems.push(format!("init container {:?} has a probe but is not a sidecar", c.name));
                }
            }
            ("init", Some("Always")) => {}
            (_, Some(p)) => problems.push(format!("{kind} container {:?} has restartPolicy {p:?}", c.name)),
        }
        if let Some(r) = &c.resources {
            for (res, limit) in r.limits.iter().flatten() {
                if let Some(req) = r.requests.as_ref().and_then(|m| m.get(res)) {
                    let (Ok(l), Ok(q)) =
                        (dind_injector::quantity::Quantity::parse(&limit.0), dind_injector::quantity::Quantity::parse(&req.0))
                    else {
                        problems.push(format!("container {:?} has an unparsable {res} quantity", c.name));
                        continue;
                    };
                    if q > l {
                        problems.push(format!("container {:?} requests more {res} than its limit", c.name));
                    }
                }
            }
        }
    }
    problems
}

/// Fails the test with every structural problem of `pod`.
pub fn assert_structurally_valid(pod: &Value) {
    let problems = structural_problems(&typed(pod));
    assert!(problems.is_empty(), "the apiserver would reject this pod: {problems:#?}");
}

/// Names of the containers (init and regular) that set `DOCKER_HOST`.
pub fn docker_host_containers(pod: &Pod) -> Vec<String> {
    containers(pod)
        .into_iter()
        .filter(|(_, c)| c.env.iter().flatten().any(|e| e.name == "DOCKER_HOST"))
        .map(|(_, c)| c.name.clone())
        .collect()
}

/// The env value `name` of container `container`.
pub fn env_of(pod: &Pod, container: &str, name: &str) -> Option<String> {
    containers(pod)
        .into_iter()
        .find(|(_, c)| c.name == container)
        .and_then(|(_, c)| c.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone()))
}

/// The pods of the Pod Security corpus (tests/policy_corpus.yaml): ("corpus case NAME", pod).
pub fn corpus_pods() -> Vec<(String, Value)> {
    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        pod: Value,
    }
    let text = std::fs::read_to_string(repo_root().join("tests/policy_corpus.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let cases: Vec<Case> = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("tests/policy_corpus.yaml: {e}"));
    cases.into_iter().map(|c| (format!("corpus case {}", c.name), c.pod)).collect()
}
