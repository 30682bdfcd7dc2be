//! The webhook and the CLI read pods with `pod::decode`, which keeps only the fields the
//! decision and the Pod Security checks read. This checks it against the full k8s-openapi
//! decode on every pod we have: the runner fixtures, every pod the real apiserver sent or stored
//! (tests/fixtures/apiserver), and every pod of the Pod Security corpus, each injected with every
//! mode and transport. The decision (patch, warnings, status, sidecar) and the verdict must be
//! the same, and the webhook's answers the same as from the full decode.

mod support;

use dind_injector::config::{Config, Isolation, SidecarMode, Transport};
use dind_injector::inject::{self, ClusterInfo, Outcome};
use dind_injector::namespace::NamespaceView;
use dind_injector::pod;
use dind_injector::policy::{self, Level, check_pod_security};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use support::{apply, fixtures_dir};

fn full(value: &Value) -> Pod {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("not a Pod: {e}"))
}

fn lean(value: &Value) -> Pod {
    let text = serde_json::to_string(value).unwrap_or_default();
    let from_text = pod::decode(&text).unwrap_or_else(|e| panic!("pod::decode: {e}"));
    let from_value = pod::from_value(value).unwrap_or_else(|e| panic!("pod::from_value: {e}"));
    assert_eq!(from_text, from_value, "decode and from_value disagree");
    from_text
}

/// The sidecar fingerprint as it was first written (a `serde_json::Value` with its empty members
/// removed), which every status record in a cluster was hashed with: `sidecar_fingerprint`, which
/// writes the same bytes in one pass, must agree with it on every container.
fn reference_fingerprint(c: &k8s_openapi::api::core::v1::Container) -> String {
    fn drop_empty(value: &mut Value) {
        match value {
            Value::Object(map) => map.retain(|_, v| {
                drop_empty(v);
                !matches!(v, Value::Null) && v != "" && !v.as_array().is_some_and(Vec::is_empty)
            }),
            Value::Array(items) => items.iter_mut().for_each(drop_empty),
            _ => {}
        }
    }
    let mut value = serde_json::json!({
        "image": c.image, "command": c.command, "args": c.args, "env": c.env, "envFrom": c.env_from,
        "workingDir": c.working_dir, "securityContext": c.security_context, "volumeMounts": c.volume_mounts,
        "volumeDevices": c.volume_devices, "restartPolicy": c.restart_policy, "startupProbe": c.startup_probe,
        "livenessProbe": c.liveness_probe, "readinessProbe": c.readiness_probe, "lifecycle": c.lifecycle,
    });
    drop_empty(&mut value);
    inject::template_hash(&serde_json::to_vec(&value).unwrap_or_default())
}

fn assert_fingerprints(what: &str, pod: &Pod) -> usize {
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()));
    let mut n = 0;
    for c in containers.into_iter().flatten() {
        assert_eq!(inject::sidecar_fingerprint(c), reference_fingerprint(c), "{what}: container {:?}", c.name);
        n += 1;
    }
    n
}

/// The pod as the mutating webhook reads it.
fn for_mutation(value: &Value) -> Pod {
    let text = serde_json::to_string(value).unwrap_or_default();
    serde_json::from_str::<pod::ForMutation>(&text).unwrap_or_else(|e| panic!("pod::ForMutation: {e}")).0
}

/// Every pod we hold: (where it comes from, the pod).
fn all_pods() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for name in support::FIXTURES {
        out.push((format!("pods/{name}"), read(&format!("pods/{name}.json"))));
        out.push((format!("reviews/{name}"), support::review_pod(name)));
        // With an ephemeral-storage limit on a job container and on an init container (the
        // sidecar's limit depends on it: inject/storage.rs), beside the other resources.
        let mut limited = support::review_pod(name);
        limited["spec"]["containers"][0]["resources"] = serde_json::json!({"requests": {"cpu": "1", "ephemeral-storage": "1Gi"}, "limits": {"memory": "1Gi", "ephemeral-storage": "5Gi"}});
        out.push((format!("reviews/{name} with a container storage limit"), limited.clone()));
        if let Some(first) = limited["spec"]["initContainers"].get_mut(0) {
            first["resources"] = serde_json::json!({"limits": {"ephemeral-storage": "100Mi"}});
            limited["spec"]["containers"][0]["resources"] = serde_json::json!({});
            out.push((format!("reviews/{name} with an init container storage limit"), limited));
        }
    }
    let dir = fixtures_dir().join("apiserver");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 24, "the apiserver recordings are missing: {files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let rec: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let case = rec["case"].as_str().unwrap_or_default().to_owned();
        out.push((format!("{case}: stored"), rec["stored"].clone()));
        for (i, call) in rec["webhook_calls"].as_array().into_iter().flatten().enumerate() {
            out.push((format!("{case}: call {i}"), call["request"]["request"]["object"].clone()));
        }
    }
    let corpus: Vec<Value> =
        serde_saphyr::from_str(include_str!("policy_corpus.yaml")).unwrap_or_else(|e| panic!("tests/policy_corpus.yaml: {e}"));
    assert!(corpus.len() >= 80);
    for case in corpus {
        out.push((format!("corpus: {}", case["name"].as_str().unwrap_or_default()), case["pod"].clone()));
    }
    out.retain(|(_, p)| p.is_object());
    out
}

fn read(rel: &str) -> Value {
    let path = fixtures_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn configs() -> Vec<Config> {
    let mut out = Vec::new();
    for mode in [SidecarMode::Native, SidecarMode::Container] {
        for transport in [Transport::Unix, Transport::Tcp, Transport::TcpTls] {
            let mut c = Config::default();
            c.sidecar.mode = mode;
            c.sidecar.transport = transport;
            out.push(c);
        }
    }
    for isolation in [Isolation::Sysbox, Isolation::Kata, Isolation::Userns] {
        let mut c = Config::default();
        c.sidecar.isolation = isolation;
        out.push(c);
    }
    out
}

#[test]
fn the_decision_the_verdict_and_the_fingerprint_are_the_same_from_the_lean_decode() {
    let pods = all_pods();
    assert!(pods.len() > 200, "{} pods", pods.len());
    let ns = NamespaceView::opted_in("ci");
    let cluster = ClusterInfo::default();
    let mut injected = 0;
    let mut checked = 0;
    let mut fingerprinted = 0;
    for (what, value) in &pods {
        let mut value = value.clone();
        // Ask for injection, so the whole decision runs on every pod.
        if value["metadata"]["annotations"].is_null() {
            value["metadata"]["annotations"] = serde_json::json!({});
        }
        value["metadata"]["annotations"]["dind-injector.io/inject"] = "true".into();
        let (f, l) = (full(&value), lean(&value));
        fingerprinted += assert_fingerprints(what, &f);
        let m = for_mutation(&value);
        let injected_already = value["metadata"]["annotations"]["dind-injector.io/status"]
            .as_str()
            .is_some_and(|s| inject::InjectionStatus::parse(s).is_some());
        if injected_already {
            assert_eq!((&m.metadata, &m.spec), (&l.metadata, &None), "{what}: the mutating read of an injected pod");
        } else {
            assert_eq!(m, l, "{what}: the mutating read differs from the lean decode");
        }
        for level in [Level::Baseline, Level::Restricted] {
            assert_eq!(
                format!("{:?}", check_pod_security(&f, level, Some("dind"))),
                format!("{:?}", check_pod_security(&l, level, Some("dind"))),
                "{what}: the {level:?} checks differ"
            );
        }
        for config in configs() {
            let a = inject::plan_injection(&f, &ns, &config, &cluster);
            let b = inject::plan_injection(&l, &ns, &config, &cluster);
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{what}: the decision differs");
            checked += 1;
            if let Outcome::Inject(i) = &a.outcome {
                injected += 1;
                let stored = support::apiserver::after_mutation(&apply(&value, &i.patch)).pod;
                fingerprinted += assert_fingerprints(what, &full(&stored));
                let reinvoked = for_mutation(&stored);
                assert_eq!(
                    (&reinvoked.metadata, &reinvoked.spec),
                    (&lean(&stored).metadata, &None),
                    "{what}: the reinvocation read the spec"
                );
                let (vf, vl) = (
                    policy::validate_pod(&full(&stored), &ns, &config, &cluster),
                    policy::validate_pod(&lean(&stored), &ns, &config, &cluster),
                );
                assert_eq!(format!("{vf:?}"), format!("{vl:?}"), "{what}: the verdict differs");
                // A Sysbox sidecar is unprivileged and never exempt.
                let exempt_or_unprivileged = vl.exempt.is_some() || config.sidecar.isolation == Isolation::Sysbox;
                assert!(exempt_or_unprivileged || !vl.findings.is_empty(), "{what}: {:?}", vl.lines());
            }
        }
    }
    assert!(injected > 100, "only {injected} of {checked} decisions injected");
    assert!(fingerprinted > 1000, "only {fingerprinted} containers fingerprinted");
}

#[test]
fn a_pod_that_does_not_read_is_reported_by_the_lean_decode_too() {
    for bad in [
        r#"{"spec": {"containers": "build"}}"#,
        r#"{"metadata": {"annotations": {"a": 1}}}"#,
        r#"{"spec": {"containers": [{"name": "a", "env": [{"name": 3}]}]}}"#,
        r#"{"spec": {"hostNetwork": "yes"}}"#,
        r#"{"spec": {"containers": [{"name": "a", "resources": {"limits": {"ephemeral-storage": {}}}}]}}"#,
        r#"["not", "a", "pod"]"#,
    ] {
        let e = pod::decode(bad).err().unwrap_or_else(|| panic!("{bad} read as a pod"));
        assert!(serde_json::from_str::<Pod>(bad).is_err(), "{bad}: the full decode reads it ({e})");
    }
    // What the lean decode skips is not read at all: a malformed field neither reads nor checks.
    let skipped = r#"{"spec": {"containers": [{"name": "a", "stdin": 5, "resources": {"requests": 5}}], "tolerations": {}}}"#;
    assert!(pod::decode(skipped).is_ok());
}

#[test]
fn the_mutating_read_skips_the_spec_only_after_a_status_record() {
    let status = r#"{\"version\":2,\"container\":\"dind\",\"mode\":\"native\",\"transport\":\"unix\",\"image\":\"docker:28.5.1-dind\",\"volumes\":[],\"targets\":[],\"template\":\"sha256:0\"}"#;
    let read = |json: &str| serde_json::from_str::<pod::ForMutation>(json).map(|p| p.0);
    // A status record: the rest is skipped unread, even what would not read as a pod.
    let injected = format!(
        r#"{{"metadata": {{"name": "a", "annotations": {{"dind-injector.io/status": "{status}"}}}}, "spec": {{"containers": "x"}}, "status": 1}}"#
    );
    let pod = read(&injected).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pod.metadata.name.as_deref(), Some("a"));
    assert!(pod.spec.is_none());
    // No record, or one that is not a record: the spec is read, and a bad one is an error.
    for annotations in [r#"{}"#, r#"{"dind-injector.io/status": "injected"}"#] {
        let json = format!(r#"{{"metadata": {{"annotations": {annotations}}}, "spec": {{"containers": "x"}}}}"#);
        assert!(read(&json).is_err(), "{json} read as a pod");
        let json = format!(r#"{{"metadata": {{"annotations": {annotations}}}, "spec": {{"containers": [{{"name": "b"}}]}}}}"#);
        let pod = read(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(pod.spec.map(|s| s.containers.len()), Some(1), "{json}");
    }
    // The spec before the metadata (the apiserver writes metadata first): read, then dropped.
    let spec_first = format!(
        r#"{{"spec": {{"containers": [{{"name": "b"}}]}}, "metadata": {{"annotations": {{"dind-injector.io/status": "{status}"}}}}}}"#
    );
    assert!(read(&spec_first).is_ok_and(|p| p.spec.is_none()));
    assert!(read(r#"{"metadata": {}, "metadata": {}}"#).is_err(), "a duplicate field reads");
}
