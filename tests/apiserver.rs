//! What a real kube-apiserver (v1.36.2) does around the webhooks, recorded in
//! tests/fixtures/apiserver/, and the product held to it:
//! - the model in `support::apiserver` reproduces every recorded stored pod;
//! - the recorded `/mutate` requests, replayed, get a patch that applies (first call) and none
//!   (the reinvocation after the built-in plugins re-ran);
//! - for every runner fixture, transport and sidecar mode, the pod as the apiserver would store
//!   it is admitted by `/validate` in `enforce`, its sidecar holds no API token, and every change
//!   the exemption exists for is still denied on it.

mod support;

use std::path::PathBuf;

use base64::Engine;
use dind_injector::config::{Config, PolicyMode, SidecarMode, Transport};
use dind_injector::inject::{self, ClusterInfo, Outcome};
use dind_injector::namespace::{NamespaceView, StaticNamespaces};
use dind_injector::webhook::{self, ReviewContext, ReviewOutcome};
use serde_json::{Value, json};
use support::apiserver::{self, TOKEN_PATH};
use support::*;

struct Recording {
    name: String,
    data: Value,
}

fn recordings() -> Vec<Recording> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apiserver");
    let mut out: Vec<Recording> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            Recording {
                name: p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
                data: serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    // 4 runner fixtures x 3 transports x 2 sidecar modes.
    assert_eq!(out.len(), 24, "tests/fixtures/apiserver holds {} recordings; run `make fixtures`", out.len());
    out
}

fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let encoded = response["response"]["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap_or_else(|e| panic!("patch is not base64: {e}"));
    Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("patch is not a JSON Patch: {e}")))
}

/// The namespace of the recordings: opted in, Pod Security `privileged`.
fn namespaces() -> StaticNamespaces {
    let mut labels = NamespaceView::opted_in("ci").labels;
    labels.insert("pod-security.kubernetes.io/enforce".into(), "privileged".into());
    StaticNamespaces::new(labels, Default::default())
}

fn mutate(review: &Value, config: &Config) -> (ReviewOutcome, Value) {
    let namespaces = namespaces();
    let cluster = ClusterInfo::default();
    let body = serde_json::to_vec(review).unwrap_or_default();
    let out = webhook::mutate(&body, ReviewContext { config, namespaces: &namespaces, cluster: &cluster });
    let v: Value = serde_json::from_slice(&out.body).unwrap_or_else(|e| panic!("answer is not JSON: {e}"));
    (out, v)
}

fn validate(pod: &Value, mode: PolicyMode) -> (ReviewOutcome, Value) {
    let mut config = Config::default();
    config.policy.mode = mode;
    let namespaces = namespaces();
    let cluster = ClusterInfo::default();
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "v-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "ci", "operation": "CREATE", "object": pod}});
    let body = serde_json::to_vec(&review).unwrap_or_default();
    let out = webhook::validate(&body, ReviewContext { config: &config, namespaces: &namespaces, cluster: &cluster });
    let v: Value = serde_json::from_slice(&out.body).unwrap_or_else(|e| panic!("answer is not JSON: {e}"));
    (out, v)
}

/// The review the apiserver sends for `pod` (CREATE of a pod in `ci`).
fn review_for(pod: &Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "m-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "ci", "operation": "CREATE", "object": pod}})
}

fn all_containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"].iter().flat_map(|l| pod["spec"][l].as_array().into_iter().flatten()).collect()
}

fn token_mounts<'a>(container: &'a Value, pod: &Value) -> Vec<&'a Value> {
    let token_volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["projected"].is_object() || v["secret"].is_object())
        .filter_map(|v| v["name"].as_str())
        .collect();
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| token_volumes.contains(&m["name"].as_str().unwrap_or_default()))
        .collect()
}

#[test]
fn the_model_reproduces_every_recorded_stored_pod() {
    for r in recordings() {
        let calls = r.data["webhook_calls"].as_array().cloned().unwrap_or_default();
        let first = &calls[0];
        let sent = &first["request"]["request"]["object"];
        let patched = match patch_of(&first["response"]) {
            Some(p) => apply_ops(sent, &p),
            None => sent.clone(),
        };
        let model = apiserver::after_mutation(&patched);
        let want = apiserver::modelled_fields(&r.data["stored"]);
        let got = apiserver::modelled_fields(&model.pod);
        assert_eq!(
            got,
            want,
            "{}: the model does not give the stored pod\nmodel:  {}\nstored: {}",
            r.name,
            serde_json::to_string(&got).unwrap_or_default(),
            serde_json::to_string(&want).unwrap_or_default()
        );
        if let Some(second) = calls.get(1) {
            let resent = apiserver::modelled_fields(&second["request"]["request"]["object"]);
            assert_eq!(got, resent, "{}: the reinvocation request is the modelled pod too", r.name);
        }
        assert_eq!(
            calls.len(),
            if model.reinvokes { 2 } else { 1 },
            "{}: /mutate is called again exactly when the re-run plugins change the pod",
            r.name
        );
        let recorded = r.data["error"].as_str().unwrap_or_default();
        for w in &model.warnings {
            assert!(recorded.contains(w.as_str()), "{}: the model warns {w:?}, the apiserver did not: {recorded}", r.name);
        }
        assert_eq!(recorded.contains("duplicate ip"), !model.warnings.is_empty(), "{}: {recorded}", r.name);
    }
}

#[test]
fn replayed_requests_get_a_patch_once_and_the_stored_pod_is_admitted() {
    let config = Config::default();
    for r in recordings() {
        let calls = r.data["webhook_calls"].as_array().cloned().unwrap_or_default();
        let first = &calls[0]["request"];
        let sent = &first["request"]["object"];
        let (out, v) = mutate(first, &config);
        assert_eq!(v["response"]["uid"], first["request"]["uid"], "{}", r.name);
        let Some(patch) = patch_of(&v) else {
            assert!(r.name.starts_with("arc-dind-mode"), "{}: no patch ({})", r.name, out.log.reason);
            assert_eq!(out.log.reason, "own-dind");
            continue;
        };
        let stored = apiserver::after_mutation(&apply_ops(sent, &patch));
        assert!(stored.warnings.is_empty(), "{}: the apiserver would warn {:?}", r.name, stored.warnings);
        assert_structurally_valid(&stored.pod);

        let (vout, vv) = validate(&stored.pod, PolicyMode::Enforce);
        assert_eq!(vv["response"]["allowed"], true, "{}: {}", r.name, vv["response"]["status"]["message"]);
        assert_eq!(vout.log.reason, "compliant", "{}", r.name);

        // No API token in the daemon; every other container keeps exactly the one it had.
        for c in all_containers(&stored.pod) {
            let tokens = token_mounts(c, &stored.pod).len();
            let expected = usize::from(c["name"] != "dind");
            assert_eq!(tokens, expected, "{}: container {} has {tokens} API token mounts", r.name, c["name"]);
        }

        // The reinvocation, as recorded (when the apiserver made one) and as it would be sent
        // if another webhook's change made the apiserver call again.
        assert!(!stored.reinvokes, "{}: the re-run plugins change the injected pod, so /mutate is called twice", r.name);
        if let Some(second) = calls.get(1) {
            let (out, v) = mutate(&second["request"], &config);
            assert!(v["response"]["patch"].is_null(), "{}: the recorded reinvocation got a patch", r.name);
            assert_eq!(out.log.reason, "already-injected", "{}", r.name);
        }
        let (out, v) = mutate(&review_for(&stored.pod), &config);
        assert!(v["response"]["patch"].is_null(), "{}: the modelled reinvocation got a patch", r.name);
        assert_eq!(out.log.reason, "already-injected", "{}", r.name);
    }
}

fn sidecar_mut(pod: &mut Value) -> &mut Value {
    ["initContainers", "containers"]
        .iter()
        .find_map(|l| pod["spec"][l].as_array().and_then(|cs| cs.iter().position(|c| c["name"] == "dind")).map(|i| (*l, i)))
        .map(|(l, i)| &mut pod["spec"][l][i])
        .unwrap_or_else(|| panic!("no dind sidecar"))
}

/// Every change the exemption exists to refuse, applied to a stored pod.
fn tamperings(stored: &Value) -> Vec<(&'static str, Value)> {
    type Change = fn(&mut Value);
    let changes: [(&str, Change); 10] = [
        ("another image", |s| s["image"] = json!("docker:28.5.1-dind-evil")),
        ("another command", |s| s["command"][2] = json!("exec dockerd --host=tcp://0.0.0.0:2375")),
        ("another argument", |s| {
            if let Some(a) = s["args"].as_array_mut() {
                a.push(json!("--host=tcp://0.0.0.0:2375"))
            }
        }),
        ("an env value", |s| s["env"][0]["value"] = json!("/certs")),
        ("an added env var", |s| {
            if let Some(e) = s["env"].as_array_mut() {
                e.push(json!({"name": "LD_PRELOAD", "value": "/x.so"}))
            }
        }),
        ("the security context", |s| s["securityContext"]["capabilities"] = json!({"add": ["SYS_MODULE"]})),
        ("a mount moved", |s| s["volumeMounts"][0]["mountPath"] = json!("/host")),
        ("the API token mounted", |s| {
            if let Some(m) = s["volumeMounts"].as_array_mut() {
                m.retain(|m| m["mountPath"] != TOKEN_PATH)
            }
        }),
        ("the probe command", |s| s["startupProbe"]["exec"]["command"] = json!(["sh", "-c", "cat /etc/shadow"])),
        ("a lifecycle hook", |s| s["lifecycle"] = json!({"preStop": {"exec": {"command": ["sh", "-c", "rm -rf /var/lib/docker"]}}})),
    ];
    changes
        .iter()
        .map(|(what, change)| {
            let mut pod = stored.clone();
            change(sidecar_mut(&mut pod));
            if *what == "the API token mounted" {
                // What the ServiceAccount plugin would then add.
                pod = apiserver::after_mutation(&pod).pod;
            }
            (*what, pod)
        })
        .collect()
}

#[test]
fn every_fixture_transport_and_mode_is_admitted_as_stored_and_tampering_is_still_denied() {
    let ns = NamespaceView::opted_in("ci");
    for fixture in INJECTED_FIXTURES {
        for mode in [SidecarMode::Native, SidecarMode::Container] {
            for transport in [Transport::Unix, Transport::TcpTls, Transport::Tcp] {
                let what = format!("{fixture} {} {}", mode.as_str(), transport.as_str());
                let mut config = Config::default();
                config.sidecar.mode = mode;
                config.sidecar.transport = transport;
                let pod = review_pod(fixture);
                let patched = match inject::plan_injection(&typed(&pod), &ns, &config, &ClusterInfo::default()).outcome {
                    Outcome::Inject(i) => apply(&pod, &i.patch),
                    Outcome::Skip(r) => panic!("{what}: not injected: {}", r.message()),
                };
                let stored = apiserver::after_mutation(&patched);
                assert!(stored.warnings.is_empty(), "{what}: {:?}", stored.warnings);
                let (_, v) = validate(&stored.pod, PolicyMode::Enforce);
                assert_eq!(v["response"]["allowed"], true, "{what}: {}", v["response"]["status"]["message"]);
                let sidecar = all_containers(&stored.pod).into_iter().find(|c| c["name"] == "dind").cloned().unwrap_or_default();
                assert!(token_mounts(&sidecar, &stored.pod).is_empty(), "{what}: the sidecar holds an API token");

                for (change, tampered) in tamperings(&stored.pod) {
                    let (out, v) = validate(&tampered, PolicyMode::Enforce);
                    assert_eq!(v["response"]["allowed"], false, "{what}: {change} was admitted");
                    assert!(out.log.violations.contains(&"sidecar-tampered"), "{what}: {change}: {:?}", out.log.violations);
                }
            }
        }
    }
}
