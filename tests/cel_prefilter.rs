//! The webhook configurations' `matchConditions`, evaluated with a CEL interpreter (the `cel`
//! crate) the way the apiserver evaluates them (tests/support/cel.rs): `object`, `oldObject` and
//! `request` bound as JSON maps taken from requests the real apiserver sent, with the pod under
//! test swapped in; every condition of a webhook must hold, and an evaluation error rejects the
//! pod (failurePolicy Fail), so no condition may ever fail to evaluate. tests/cel_shipped.rs
//! holds every shipped copy of the expressions (overlays, chart) to the same requests.
//!
//! The baseline entry's pre-filter must send every pod the policy finds anything wrong with at
//! baseline: the whole Pod Security corpus (`tests/policy_corpus.yaml`), the runner fixtures and
//! the pods the real apiserver stored, plus one pod per control, container kind and forbidden
//! value. `src/policy/prefilter.rs` (the same predicate in Rust, for `explain`) must agree with
//! the expression on every one of them.
//!
//! Where the Rust CEL and Kubernetes CEL differ, the expression keeps to what both do alike:
//! see `rust_cel_differences_the_expression_avoids`.

mod support;

use std::sync::Arc;

use cel::objects::Value as Cel;
use dind_injector::config::Config;
use dind_injector::inject::ClusterInfo;
use dind_injector::namespace::NamespaceView;
use dind_injector::policy::{
    BASELINE_CAPABILITIES, Level, SAFE_SYSCTLS, SELINUX_TYPES, baseline_prefilter, check_pod_security, validate_pod,
};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use support::cel::{Requests, json_files, to_cel};
use support::corpus_pods;

const MUTATING: &str = "inject.dind-injector.io";
const BASELINE: &str = "validate.dind-injector.io";
const RESTRICTED: &str = "validate-restricted.dind-injector.io";

/// The conditions of manifests/base/webhooks.yaml, and requests shaped as the apiserver sends
/// them (tests/support/cel.rs).
struct Conditions {
    conditions: support::cel::Conditions,
    requests: Requests,
    env: Arc<cel::Env>,
}

impl Conditions {
    fn load() -> Self {
        let conditions = support::cel::Conditions::base_manifests();
        let env = Arc::clone(&conditions.env);
        Conditions { conditions, requests: Requests::recorded(), env }
    }

    /// Whether the apiserver calls `webhook` for `request`; an evaluation error is returned as
    /// such (with failurePolicy Fail it would reject the request outright).
    fn sends(&self, webhook: &str, request: &Value) -> Result<bool, String> {
        self.conditions.sends(webhook, request)
    }

    fn sends_create(&self, webhook: &str, pod: &Value, what: &str) -> bool {
        self.sends(webhook, &self.requests.create(pod)).unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

/// What the server finds wrong with `pod` in a namespace at baseline (every finding, not only
/// the Pod Security controls, and the controls on the injected sidecar too), one line each.
fn baseline_problems(pod: &Value, what: &str) -> Vec<String> {
    let typed: Pod = serde_json::from_value(pod.clone()).unwrap_or_else(|e| panic!("{what}: not a Pod: {e}"));
    let mut lines: Vec<String> = check_pod_security(&typed, Level::Baseline, None).iter().map(ToString::to_string).collect();
    let namespace = NamespaceView::opted_in("ci");
    lines.extend(validate_pod(&typed, &namespace, &Config::default(), &ClusterInfo::default()).lines());
    lines.sort();
    lines.dedup();
    lines
}

/// Tally of pods the baseline entry was asked about.
#[derive(Default)]
struct Tally {
    denied: usize,
    denied_skipped: Vec<String>,
    allowed: usize,
    allowed_skipped: usize,
    /// Allowed pods that are sent all the same (the filter errs on the side of sending).
    allowed_sent: Vec<String>,
    disagreements: Vec<String>,
}

impl Tally {
    fn judge(&mut self, c: &Conditions, pod: &Value, what: &str) {
        let sent = c.sends_create(BASELINE, pod, what);
        let rust = baseline_prefilter(pod);
        if rust.is_some() != sent {
            self.disagreements.push(format!("{what}: CEL sends {sent}, src/policy/prefilter.rs says {rust:?}"));
        }
        // A debug container is added through pods/ephemeralcontainers, and a spec UPDATE has
        // the new pod as `object`: either is sent exactly when the CREATE would be.
        let mut old = pod.clone();
        old["spec"]["activeDeadlineSeconds"] = json!(1);
        for (r, how) in [(c.requests.update(&old, pod), "spec UPDATE"), (c.requests.ephemeral(&old, pod), "ephemeralcontainers UPDATE")] {
            let got = c.sends(BASELINE, &r).unwrap_or_else(|e| panic!("{what} ({how}): {e}"));
            assert_eq!(got, sent, "{what}: sent on CREATE is {sent}, on {how} {got}");
        }
        let problems = baseline_problems(pod, what);
        if problems.is_empty() {
            self.allowed += 1;
            if sent {
                self.allowed_sent.push(format!("{what} ({})", rust.unwrap_or_default()));
            } else {
                self.allowed_skipped += 1;
            }
        } else {
            self.denied += 1;
            if !sent {
                self.denied_skipped.push(format!("{what}: not sent, but the policy finds: {}", problems.join("; ")));
            }
        }
    }

    fn assert_sound(&self, what: &str) {
        let mut problems = Vec::new();
        if !self.denied_skipped.is_empty() {
            problems.push(format!(
                "{} of {} pods the policy denies at baseline would never reach the webhook:\n  {}",
                self.denied_skipped.len(),
                self.denied,
                self.denied_skipped.join("\n  ")
            ));
        }
        if !self.disagreements.is_empty() {
            problems.push(format!("the Rust predicate and the CEL expression disagree:\n  {}", self.disagreements.join("\n  ")));
        }
        assert!(problems.is_empty(), "{what}: {}", problems.join("\n"));
    }

    fn report(&self, what: &str) -> String {
        let mut s = format!(
            "{what}: {} denied at baseline, 0 of them skipped; {} allowed, {} of them not sent ({:.0}%)",
            self.denied,
            self.allowed,
            self.allowed_skipped,
            100.0 * self.allowed_skipped as f64 / self.allowed.max(1) as f64
        );
        for a in &self.allowed_sent {
            s.push_str(&format!("\n  allowed but sent: {a}"));
        }
        s
    }
}

/// The runner pods as sent, as the apiserver stored them after injection, and both again with
/// every dind-injector.io/ annotation and label removed (the runners' other pods, which do not
/// ask for Docker).
fn fixture_pods() -> Vec<(String, Value)> {
    let mut pods = Vec::new();
    for (file, review) in json_files(&support::fixtures_dir().join("reviews")) {
        pods.push((format!("reviews/{file}"), review["request"]["object"].clone()));
    }
    for (file, exchange) in json_files(&support::fixtures_dir().join("apiserver")) {
        pods.push((format!("apiserver/{file} as sent to /mutate"), exchange["webhook_calls"][0]["request"]["request"]["object"].clone()));
        pods.push((format!("apiserver/{file} as stored"), exchange["stored"].clone()));
    }
    let stripped: Vec<(String, Value)> = pods
        .iter()
        .map(|(what, pod)| {
            let mut pod = pod.clone();
            for key in ["annotations", "labels"] {
                if let Some(map) = pod["metadata"][key].as_object_mut() {
                    map.retain(|k, _| !k.starts_with("dind-injector.io/"));
                }
            }
            (format!("{what}, without dind-injector.io/ keys"), pod)
        })
        .collect();
    pods.extend(stripped);
    pods
}

#[test]
fn every_corpus_pod_denied_at_baseline_is_sent() {
    let c = Conditions::load();
    let mut tally = Tally::default();
    for (what, pod) in corpus_pods() {
        tally.judge(&c, &pod, &what);
        assert!(c.sends_create(RESTRICTED, &pod, &what), "{what}: the restricted entry sends every pod");
    }
    tally.assert_sound("corpus");
    println!("{}", tally.report("tests/policy_corpus.yaml"));
    assert!(tally.allowed_skipped > 0, "the pre-filter skips no allowed corpus pod: it filters nothing");
}

#[test]
fn fixture_pods_are_sent_when_they_ask_for_docker_and_skipped_otherwise() {
    let c = Conditions::load();
    let mut tally = Tally::default();
    for (what, pod) in fixture_pods() {
        tally.judge(&c, &pod, &what);
        let asks = ["annotations", "labels"]
            .iter()
            .any(|k| pod["metadata"][k].as_object().is_some_and(|m| m.keys().any(|k| k.starts_with("dind-injector.io/"))));
        assert_eq!(c.sends_create(BASELINE, &pod, &what), asks || !baseline_problems(&pod, &what).is_empty(), "{what}");
    }
    tally.assert_sound("fixtures");
    println!("{}", tally.report("runner fixtures and recorded apiserver pods"));
}

/// A pod Pod Security allows at baseline and that asks for nothing.
fn plain_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain", "namespace": "ci", "labels": {"app": "cache"}, "annotations": {"note": "x"}},
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "app", "image": "busybox"}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
        }
    })
}

/// Sets `value` at the `/`-separated `path` (creating objects on the way); `~1` in a key stands
/// for `/`, as in a JSON pointer.
fn set(pod: &mut Value, path: &str, value: Value) {
    let mut here = pod;
    let parts: Vec<String> = path.split('/').map(|p| p.replace("~1", "/")).collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        here = match here {
            Value::Array(items) => &mut items[part.parse::<usize>().unwrap_or_else(|e| panic!("{path}: {e}"))],
            Value::Object(map) => {
                let entry = map.entry(part.clone()).or_insert_with(|| json!({}));
                if last {
                    *entry = value;
                    return;
                }
                entry
            }
            _ => panic!("{path}: {part} is not inside an object or list"),
        };
    }
}

/// (path inside a container, forbidden value): each a baseline violation on its own.
fn container_violations() -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = vec![
        ("securityContext/privileged".into(), json!(true)),
        ("securityContext/capabilities/add".into(), json!(["SYS_ADMIN"])),
        ("securityContext/capabilities/add".into(), json!(["CHOWN", "NET_RAW"])),
        ("securityContext/procMount".into(), json!("Unmasked")),
        ("securityContext/seccompProfile".into(), json!({"type": "Unconfined"})),
        ("securityContext/appArmorProfile".into(), json!({"type": "Unconfined"})),
        ("securityContext/seLinuxOptions".into(), json!({"type": "spc_t"})),
        ("securityContext/seLinuxOptions".into(), json!({"user": "system_u"})),
        ("securityContext/seLinuxOptions".into(), json!({"role": "system_r"})),
        ("securityContext/windowsOptions".into(), json!({"hostProcess": true})),
        ("ports".into(), json!([{"containerPort": 80}, {"containerPort": 8080, "hostPort": 8080}])),
    ];
    for probe in ["livenessProbe", "readinessProbe", "startupProbe", "lifecycle/postStart", "lifecycle/preStop"] {
        v.push((probe.into(), json!({"httpGet": {"port": 80, "host": "10.0.0.1"}})));
        v.push((probe.into(), json!({"tcpSocket": {"port": 80, "host": "metadata.internal"}})));
    }
    v
}

/// (path in the pod, forbidden value).
fn pod_violations() -> Vec<(String, Value)> {
    vec![
        ("spec/hostNetwork".into(), json!(true)),
        ("spec/hostPID".into(), json!(true)),
        ("spec/hostIPC".into(), json!(true)),
        ("spec/volumes".into(), json!([{"name": "cache", "emptyDir": {}}, {"name": "node", "hostPath": {"path": "/tmp"}}])),
        ("spec/volumes".into(), json!([{"name": "sock", "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"}}])),
        (
            "spec/securityContext/sysctls".into(),
            json!([{"name": "kernel.shm_rmid_forced", "value": "1"}, {"name": "kernel.msgmax", "value": "1"}]),
        ),
        ("spec/securityContext/seccompProfile".into(), json!({"type": "Unconfined"})),
        ("spec/securityContext/appArmorProfile".into(), json!({"type": "Unconfined"})),
        ("spec/securityContext/seLinuxOptions".into(), json!({"type": "unconfined_t"})),
        ("spec/securityContext/seLinuxOptions".into(), json!({"user": "system_u"})),
        ("spec/securityContext/seLinuxOptions".into(), json!({"role": "system_r"})),
        ("spec/securityContext/windowsOptions".into(), json!({"hostProcess": true})),
        ("metadata/annotations/container.apparmor.security.beta.kubernetes.io~1app".into(), json!("unconfined")),
    ]
}

fn with(path: &str, value: Value) -> Value {
    let mut pod = plain_pod();
    set(&mut pod, path, value);
    pod
}

#[test]
fn every_control_in_every_container_kind_is_sent() {
    let c = Conditions::load();
    let mut tally = Tally::default();
    let mut checked = 0;
    for kind in ["initContainers", "containers", "ephemeralContainers"] {
        for (field, value) in container_violations() {
            let path = format!("spec/{kind}/0/{field}");
            let pod = with(&path, value.clone());
            assert!(!baseline_problems(&pod, &path).is_empty(), "{path}={value}: the policy should deny this (test table wrong?)");
            tally.judge(&c, &pod, &format!("{path}={value}"));
            checked += 1;
        }
    }
    for (path, value) in pod_violations() {
        let pod = with(&path, value.clone());
        assert!(!baseline_problems(&pod, &path).is_empty(), "{path}={value}: the policy should deny this (test table wrong?)");
        tally.judge(&c, &pod, &format!("{path}={value}"));
        checked += 1;
    }
    tally.assert_sound("one violation per pod");
    assert_eq!(tally.allowed, 0);
    assert!(checked > 60, "{checked}");
}

/// (path in the pod, value) that baseline allows, each on its own.
fn allowed_values() -> Vec<(String, Value)> {
    let mut cases: Vec<(String, Value)> = Vec::new();
    for cap in BASELINE_CAPABILITIES {
        cases.push(("spec/containers/0/securityContext/capabilities/add".into(), json!([cap])));
    }
    for sysctl in SAFE_SYSCTLS {
        cases.push(("spec/securityContext/sysctls".into(), json!([{"name": sysctl, "value": "1"}])));
    }
    for t in SELINUX_TYPES {
        cases.push(("spec/initContainers/0/securityContext/seLinuxOptions".into(), json!({"type": t, "level": "s0:c1,c2"})));
        cases.push(("spec/securityContext/seLinuxOptions".into(), json!({"type": t})));
    }
    for t in ["RuntimeDefault", "Localhost"] {
        let profile = json!({"type": t, "localhostProfile": "p"});
        cases.push(("spec/securityContext/seccompProfile".into(), profile.clone()));
        cases.push(("spec/ephemeralContainers/0/securityContext/seccompProfile".into(), profile.clone()));
        cases.push(("spec/securityContext/appArmorProfile".into(), profile.clone()));
        cases.push(("spec/containers/0/securityContext/appArmorProfile".into(), profile));
    }
    for v in ["runtime/default", "localhost/my-profile", ""] {
        cases.push(("metadata/annotations/container.apparmor.security.beta.kubernetes.io~1app".into(), json!(v)));
    }
    cases.extend([
        ("spec/containers/0/securityContext/procMount".into(), json!("Default")),
        ("spec/containers/0/securityContext/privileged".into(), json!(false)),
        ("spec/containers/0/securityContext/capabilities".into(), json!({"drop": ["ALL"]})),
        ("spec/containers/0/securityContext/windowsOptions".into(), json!({"hostProcess": false, "runAsUserName": "x"})),
        ("spec/containers/0/ports".into(), json!([{"containerPort": 80, "hostPort": 0}])),
        ("spec/containers/0/livenessProbe".into(), json!({"httpGet": {"port": 80, "path": "/"}, "tcpSocket": {"port": 80}})),
        ("spec/containers/0/lifecycle".into(), json!({"preStop": {"sleep": {"seconds": 1}}, "postStart": {"exec": {"command": ["true"]}}})),
        ("spec/hostNetwork".into(), json!(false)),
        ("spec/hostPID".into(), json!(false)),
        ("spec/hostIPC".into(), json!(false)),
        ("spec/hostUsers".into(), json!(false)),
        ("spec/volumes".into(), json!([{"name": "v", "emptyDir": {}}, {"name": "c", "configMap": {"name": "x"}}])),
        ("spec/securityContext".into(), json!({"runAsUser": 0, "fsGroup": 1})),
        ("metadata/labels/inject".into(), json!("true")),
        ("metadata/annotations/example.com~1inject".into(), json!("true")),
    ]);
    cases
}

/// Every value baseline allows, one per pod: none is sent, so the lists in the expression are
/// exactly those of src/policy/standards.rs (a value missing from the expression would be sent).
#[test]
fn every_allowed_value_is_not_sent() {
    let c = Conditions::load();
    let cases = allowed_values();
    for (path, value) in cases {
        let pod = with(&path, value.clone());
        let what = format!("{path}={value}");
        assert!(baseline_problems(&pod, &what).is_empty(), "{what}: the policy should allow this (test table wrong?)");
        assert!(!c.sends_create(BASELINE, &pod, &what), "{what}: allowed at baseline, but sent");
        assert_eq!(baseline_prefilter(&pod), None, "{what}");
    }
}

/// Pods made of several of the pieces above at once (forbidden and allowed values in any
/// container kind): the policy's denials are all sent, and the Rust predicate agrees.
#[test]
fn combinations_of_controls_are_sent_when_any_is_violated() {
    let c = Conditions::load();
    let mut pieces = allowed_values();
    pieces.extend(pod_violations());
    for kind in ["initContainers", "containers", "ephemeralContainers"] {
        pieces.extend(container_violations().into_iter().map(|(f, v)| (format!("spec/{kind}/0/{f}"), v)));
    }
    let tally = std::cell::RefCell::new(Tally::default());
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config { cases: 300, ..Default::default() });
    let strategy = proptest::sample::subsequence(pieces, 0..6);
    runner
        .run(&strategy, |chosen| {
            let mut pod = plain_pod();
            let what: Vec<String> = chosen.iter().map(|(p, v)| format!("{p}={v}")).collect();
            for (path, value) in chosen {
                set(&mut pod, &path, value);
            }
            tally.borrow_mut().judge(&c, &pod, &what.join(", "));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let tally = tally.into_inner();
    tally.assert_sound("combinations");
    println!("{}", tally.report("random combinations").lines().next().unwrap_or_default());
}

#[test]
fn anything_under_the_dind_injector_prefix_is_sent() {
    let c = Conditions::load();
    for (kind, key, value) in [
        ("annotations", "dind-injector.io/inject", "true"),
        ("annotations", "dind-injector.io/inject", "false"),
        ("annotations", "dind-injector.io/inject", "yes"),
        ("annotations", "dind-injector.io/inject", "True "),
        ("annotations", "dind-injector.io/injct", "true"),
        ("annotations", "dind-injector.io/status", "{}"),
        ("annotations", "dind-injector.io/transport", "tcp"),
        ("labels", "dind-injector.io/inject", "true"),
        ("labels", "dind-injector.io/inject", "yes"),
        ("labels", "dind-injector.io/inject", ""),
    ] {
        let mut pod = plain_pod();
        pod["metadata"][kind][key] = json!(value);
        let what = format!("{kind} {key}={value:?}");
        assert!(c.sends_create(BASELINE, &pod, &what), "{what}: not sent");
        assert!(baseline_prefilter(&pod).is_some(), "{what}");
    }
}

#[test]
fn pods_without_labels_annotations_or_optional_lists_evaluate_without_error() {
    let c = Conditions::load();
    let bare = json!({"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "app", "image": "busybox"}]}});
    let empty = json!({"metadata": {"name": "e", "labels": {}, "annotations": {}}, "spec": {
        "containers": [{"name": "app", "image": "busybox", "securityContext": {}, "ports": [], "lifecycle": {}}],
        "initContainers": [], "ephemeralContainers": [], "volumes": [], "securityContext": {"sysctls": []}}});
    for (what, pod) in [("bare", bare), ("empty", empty)] {
        for webhook in [MUTATING, BASELINE, RESTRICTED] {
            let sent = c.sends_create(webhook, &pod, what);
            assert_eq!(sent, webhook == RESTRICTED, "{what} -> {webhook}");
        }
    }
}

#[test]
fn metadata_only_updates_are_sent_to_neither_validating_webhook() {
    let c = Conditions::load();
    let mut privileged = plain_pod();
    privileged["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    privileged["metadata"]["annotations"]["dind-injector.io/status"] = json!("{}");
    let mut relabelled = privileged.clone();
    relabelled["metadata"]["labels"]["batch.kubernetes.io/job-tracking"] = json!("");
    relabelled["metadata"]["finalizers"] = json!([]);
    for webhook in [BASELINE, RESTRICTED] {
        let sent = c.sends(webhook, &c.requests.update(&privileged, &relabelled)).unwrap_or_else(|e| panic!("{e}"));
        assert!(!sent, "{webhook}: a metadata-only UPDATE is sent");
        let mut debugged = relabelled.clone();
        debugged["spec"]["ephemeralContainers"][0]["image"] = json!("nicolaka/netshoot");
        let sent = c.sends(webhook, &c.requests.ephemeral(&privileged, &debugged)).unwrap_or_else(|e| panic!("{e}"));
        assert!(sent, "{webhook}: a debug container on a privileged pod is not sent");
    }
}

/// The mutating webhook's condition: the annotation `"true"`, or no annotation and the label
/// `"true"`. The annotation wins both ways.
#[test]
fn mutating_condition_takes_the_label_when_there_is_no_annotation() {
    let c = Conditions::load();
    let cases: &[(Option<&str>, Option<&str>, bool)] = &[
        (None, None, false),
        (Some("true"), None, true),
        (None, Some("true"), true),
        (Some("true"), Some("false"), true),
        (Some("false"), Some("true"), false),
        (Some("yes"), Some("true"), false),
        (Some(""), Some("true"), false),
        (None, Some("yes"), false),
        (None, Some("True"), false),
        (Some("false"), None, false),
    ];
    for &(annotation, label, expected) in cases {
        for other_keys in [false, true] {
            let mut meta = serde_json::Map::new();
            for (kind, value) in [("annotations", annotation), ("labels", label)] {
                let mut map = serde_json::Map::new();
                if other_keys {
                    map.insert("app".into(), json!("x"));
                }
                if let Some(v) = value {
                    map.insert("dind-injector.io/inject".into(), json!(v));
                }
                if !map.is_empty() {
                    meta.insert(kind.into(), Value::Object(map));
                }
            }
            let pod = json!({"metadata": meta, "spec": {"containers": [{"name": "build", "image": "docker"}]}});
            let what = format!("annotation {annotation:?}, label {label:?}");
            assert_eq!(c.sends_create(MUTATING, &pod, &what), expected, "{what}");
        }
    }
}

/// Differences between the `cel` crate and Kubernetes' cel-go that the expressions avoid; each
/// line is something the crate does that the expressions must not rely on, or a construct the
/// expressions use that both agree on. If the crate changes, this says where to look.
#[test]
fn rust_cel_differences_the_expression_avoids() {
    let c = Conditions::load();
    let obj = json!({"metadata": {"annotations": {"a/b": "x"}}, "spec": {"n": 80, "list": [1]}});
    let eval = |e: &str| {
        let program = c.env.compile(e).map_err(|x| x.to_string())?;
        let mut ctx = cel::Context::with_env(Arc::clone(&c.env));
        ctx.add_variable_from_value("object", to_cel(&obj));
        ctx.add_variable_from_value("oldObject", Cel::Null);
        program.execute(&ctx).map_err(|x| x.to_string())
    };
    // Used by the expressions, and the same in both.
    for (e, v) in [
        ("has(object.metadata.annotations)", true),
        ("has(object.metadata.labels)", false),
        ("'a/b' in object.metadata.annotations", true),
        ("object.metadata.annotations.exists(k, k.startsWith('a/'))", true),
        ("(has(object.spec.x) ? object.spec.x : []) + object.spec.list == [1]", true),
        ("[{'securityContext': object.spec}].exists(c, has(c.securityContext) && [c.securityContext].exists(s, s.n == 80))", true),
        ("'x' in ['', 'x']", true),
        // An absent key is an error in both, which || absorbs when the other side is true; the
        // expressions guard with has() instead of relying on that.
        ("object.spec.missing == 1 || true", true),
    ] {
        assert_eq!(eval(e), Ok(Cel::Bool(v)), "{e}");
    }
    assert!(eval("object.spec.missing == 1").is_err(), "reading an absent key is an error");
    // Heterogeneous equality: a number and a string are unequal in both (cel-go since
    // heterogeneous equality, Kubernetes 1.25+), not an error.
    assert_eq!(eval("object.spec.n == '80'"), Ok(Cel::Bool(false)));
    // JSON numbers: Kubernetes hands unstructured integers to CEL as int; serde's
    // serialisation would give uint here, so to_cel builds int. Both compare 80 == 80u as
    // equal, so the expression's `!= 0` works either way.
    assert_eq!(eval("object.spec.n == 80u"), Ok(Cel::Bool(true)));
    // Optional syntax (`object.?spec.?x.orValue(...)`) parses in the crate, and Kubernetes
    // enables it only from the 1.29 base environment: the expressions do not use it.
    assert!(eval("object.?spec.?x.orValue(1) == 1").is_ok());
}

#[test]
fn restricted_entry_sends_every_create() {
    let c = Conditions::load();
    for (what, pod) in corpus_pods().into_iter().chain(fixture_pods()) {
        assert!(c.sends_create(RESTRICTED, &pod, &what), "{what}");
    }
}
