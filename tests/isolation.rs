//! Isolation modes (issue 22): Sysbox and Kata around the runtime. No Sysbox or Kata runtime runs
//! here, so everything the injector and the apiserver do around it is checked: the pods made in
//! each mode, as the apiserver stores them (its RuntimeClass plugin included, README fact 9),
//! against our own Pod Security checks and the validating webhook; the pods refused, and why; the
//! tampering the validating webhook must catch; and that a Sysbox sidecar is the privileged one
//! with only its privilege taken away (the daemon's arguments, mounts, socket and the jobs'
//! environment are what the engine tests prove in privileged mode).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use dind_injector::config::{Config, Isolation};
use dind_injector::inject::{self, ClusterInfo, Outcome, RuntimeClasses};
use dind_injector::namespace::{NamespaceView, StaticNamespaces};
use dind_injector::policy::{Level, check_pod_security, validate_pod};
use dind_injector::webhook::{self, ReviewContext};
use serde_json::{Value, json};
use support::apiserver::{RuntimeClass, after_mutation_in, after_mutation_without_user_namespaces};
use support::*;

fn classes() -> Vec<RuntimeClass> {
    vec![
        RuntimeClass {
            name: "sysbox-runc".into(),
            pod_fixed: json!({"cpu": "100m", "memory": "64Mi"}),
            node_selector: json!({"sysbox-install": "yes"}),
        },
        RuntimeClass { name: "kata".into(), pod_fixed: json!({"cpu": "250m", "memory": "160Mi"}), node_selector: Value::Null },
    ]
}

fn cluster_with(names: &[&str]) -> ClusterInfo {
    ClusterInfo {
        runtime_classes: RuntimeClasses::Known(Arc::new(names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>())),
        ..ClusterInfo::default()
    }
}

fn namespace(level: &str) -> NamespaceView {
    let mut ns = NamespaceView::opted_in("ci");
    ns.labels.insert("pod-security.kubernetes.io/enforce".into(), level.into());
    ns
}

fn with_annotation(mut pod: Value, key: &str, value: &str) -> Value {
    pod["metadata"]["annotations"][key] = json!(value);
    pod
}

/// The fixture asking for `isolation`, injected in a namespace at `level`, as the apiserver stores it.
fn stored(fixture: &str, isolation: &str, level: &str) -> (Value, inject::InjectionStatus) {
    let pod = with_annotation(review_pod(fixture), "dind-injector.io/isolation", isolation);
    let d = inject::plan_injection(&typed(&pod), &namespace(level), &Config::default(), &cluster_with(&["sysbox-runc", "kata"]));
    let Outcome::Inject(i) = d.outcome else { panic!("{fixture} {isolation}: not injected: {:?}", d.outcome) };
    let stored = after_mutation_in(&apply(&pod, &i.patch), &classes()).unwrap_or_else(|e| panic!("{fixture}: {e}"));
    (stored.pod, i.status)
}

fn sidecar<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["initContainers"].as_array().into_iter().flatten().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no sidecar"))
}

fn dind_mut(pod: &mut Value) -> &mut Value {
    let list = pod["spec"]["initContainers"].as_array_mut().unwrap_or_else(|| panic!("no init containers"));
    list.iter_mut().find(|c| c["name"] == "dind").unwrap_or_else(|| panic!("no dind"))
}

fn verdict_lines(pod: &Value, level: &str) -> (bool, Vec<String>) {
    let v = validate_pod(&typed(pod), &namespace(level), &Config::default(), &cluster_with(&["sysbox-runc", "kata"]));
    (v.exempt.is_some(), v.lines())
}

#[test]
fn sysbox_pods_of_every_runner_meet_baseline_as_they_are() {
    for fixture in INJECTED_FIXTURES {
        let (pod, status) = stored(fixture, "sysbox", "baseline");
        assert_eq!(pod["spec"]["runtimeClassName"], "sysbox-runc", "{fixture}");
        assert_eq!(pod["spec"]["hostUsers"], false, "{fixture}: hostUsers survives defaulting");
        assert_eq!(pod["spec"]["overhead"], json!({"cpu": "100m", "memory": "64Mi"}), "{fixture}: the class's overhead");
        assert_eq!(pod["spec"]["nodeSelector"]["sysbox-install"], "yes", "{fixture}: the class's scheduling");
        let dind = sidecar(&pod, &status.container);
        assert!(dind["securityContext"].get("privileged").is_none(), "{fixture}: {}", dind["securityContext"]);
        assert!(dind["securityContext"].get("capabilities").is_none(), "{fixture}: no capability added");
        // Our own checks, with no exemption at all.
        let violations = check_pod_security(&typed(&pod), Level::Baseline, None);
        assert!(violations.is_empty(), "{fixture}: {violations:?}");
        // The validating webhook: allowed, and nothing exempt.
        assert_eq!(verdict_lines(&pod, "baseline"), (false, vec![]), "{fixture}");
        // The fingerprint does not depend on what the RuntimeClass plugin added.
        let typed_sidecar = typed(&pod).spec.and_then(|s| s.init_containers).unwrap_or_default().into_iter().find(|c| c.name == "dind");
        assert_eq!(typed_sidecar.map(|c| inject::sidecar_fingerprint(&c)), Some(status.template.clone()), "{fixture}");
        // Reinvocation: nothing more to add.
        let again = inject::plan_injection(&typed(&pod), &namespace("baseline"), &Config::default(), &cluster_with(&["sysbox-runc"]));
        assert!(matches!(again.outcome, Outcome::Skip(inject::SkipReason::AlreadyInjected)), "{fixture}: {:?}", again.outcome);
        assert_eq!(status.isolation, Isolation::Sysbox);
        assert_eq!(status.runtime_class.as_deref(), Some("sysbox-runc"));
    }
}

#[test]
fn sysbox_pods_are_admitted_where_the_apiserver_drops_host_users() {
    // Clusters before v1.33 (UserNamespacesSupport off by default) drop hostUsers from a new pod
    // after the mutating webhooks: the validating webhook must not refuse every sysbox pod there.
    for fixture in INJECTED_FIXTURES {
        let pod = with_annotation(review_pod(fixture), "dind-injector.io/isolation", "sysbox");
        let d = inject::plan_injection(&typed(&pod), &namespace("baseline"), &Config::default(), &cluster_with(&["sysbox-runc"]));
        let Outcome::Inject(i) = d.outcome else { panic!("{fixture}: not injected: {:?}", d.outcome) };
        let stored =
            after_mutation_without_user_namespaces(&apply(&pod, &i.patch), &classes()).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert!(stored.pod["spec"].get("hostUsers").is_none(), "{fixture}: the model drops hostUsers");
        assert_eq!(stored.pod["spec"]["runtimeClassName"], "sysbox-runc", "{fixture}");
        assert_eq!(verdict_lines(&stored.pod, "baseline"), (false, vec![]), "{fixture}: admitted, nothing exempt");
    }
}

#[test]
fn kata_pods_are_exempt_only_with_their_runtime_class() {
    for fixture in INJECTED_FIXTURES {
        let (pod, status) = stored(fixture, "kata", "privileged");
        assert_eq!(pod["spec"]["runtimeClassName"], "kata", "{fixture}");
        assert_eq!(pod["spec"]["overhead"], json!({"cpu": "250m", "memory": "160Mi"}), "{fixture}");
        assert!(pod["spec"].get("hostUsers").is_none(), "{fixture}: Kata keeps the pod's user namespace setting");
        assert_eq!(sidecar(&pod, &status.container)["securityContext"]["privileged"], true, "{fixture}");
        let without = check_pod_security(&typed(&pod), Level::Baseline, None);
        assert!(without.iter().any(|v| v.control.id() == "privileged"), "{fixture}: baseline without the exemption: {without:?}");
        assert!(check_pod_security(&typed(&pod), Level::Baseline, Some("dind")).is_empty(), "{fixture}");
        assert_eq!(verdict_lines(&pod, "privileged"), (true, vec![]), "{fixture}");
    }
}

#[test]
fn tampering_with_the_isolation_is_denied_with_the_reason() {
    let (sysbox, _) = stored("gitlab", "sysbox", "baseline");
    let (kata, _) = stored("gitlab", "kata", "privileged");
    let edit = |mut pod: Value, f: &dyn Fn(&mut Value)| {
        f(&mut pod);
        pod
    };
    let cases: Vec<(&str, Value, &str, &[&str])> = vec![
        (
            "privileged added to a sysbox sidecar",
            edit(sysbox.clone(), &|p| dind_mut(p)["securityContext"]["privileged"] = json!(true)),
            "baseline",
            &["(privileged)", "changed after injection"],
        ),
        (
            "hostUsers flipped on a sysbox pod",
            edit(sysbox.clone(), &|p| p["spec"]["hostUsers"] = json!(true)),
            "baseline",
            &["hostUsers is true"],
        ),
        (
            "runtime class removed from a sysbox pod",
            edit(sysbox.clone(), &|p| {
                p["spec"].as_object_mut().map(|s| s.remove("runtimeClassName"));
            }),
            "baseline",
            &["its runtimeClassName is not set"],
        ),
        (
            "runtime class removed from a kata pod",
            edit(kata.clone(), &|p| {
                p["spec"].as_object_mut().map(|s| s.remove("runtimeClassName"));
            }),
            "privileged",
            &["exempt only inside a Kata VM", "(privileged)"],
        ),
        (
            "runtime class changed on a kata pod",
            edit(kata.clone(), &|p| p["spec"]["runtimeClassName"] = json!("runc")),
            "privileged",
            &["runtimeClassName is \"runc\"", "(privileged)"],
        ),
    ];
    for (what, pod, level, expected) in cases {
        let (exempt, lines) = verdict_lines(&pod, level);
        assert!(!exempt, "{what}: nothing may be exempt");
        let text = lines.join("\n");
        for e in expected {
            assert!(text.contains(e), "{what}: expected {e:?} in:\n{text}");
        }
    }

    // A status forged to claim Kata under another class, the pod set to match: still refused.
    let mut forged = kata.clone();
    forged["spec"]["runtimeClassName"] = json!("runc");
    let text = forged["metadata"]["annotations"]["dind-injector.io/status"].as_str().unwrap_or_default().to_owned();
    let mut status = inject::InjectionStatus::parse(&text).unwrap_or_else(|| panic!("no status"));
    status.runtime_class = Some("runc".into());
    forged["metadata"]["annotations"]["dind-injector.io/status"] = json!(status.to_annotation());
    let (exempt, lines) = verdict_lines(&forged, "privileged");
    assert!(!exempt && lines.iter().any(|l| l.contains("RuntimeClass \"kata\"")), "{lines:?}");

    // Through the webhook: denied with the reason, as the runner sees it.
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "i-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "ci", "operation": "CREATE",
        "object": edit(kata, &|p| { p["spec"].as_object_mut().map(|s| s.remove("runtimeClassName")); })}});
    let namespaces = StaticNamespaces::new(namespace("privileged").labels, Default::default());
    let config = Config::default();
    let cluster = cluster_with(&["kata"]);
    let out = webhook::validate(
        &serde_json::to_vec(&review).unwrap_or_default(),
        ReviewContext { config: &config, namespaces: &namespaces, cluster: &cluster },
    );
    let v: Value = serde_json::from_slice(&out.body).unwrap_or_default();
    assert_eq!(v["response"]["allowed"], false, "{v}");
    assert!(out.log.violations.contains(&"isolation-tampered"), "{:?}", out.log.violations);
}

#[test]
fn pods_a_mode_cannot_serve_are_not_injected_and_never_downgraded() {
    let base = review_pod("gitlab");
    let config = Config::default();
    let both = cluster_with(&["sysbox-runc", "kata"]);
    let skip = |pod: &Value, ns: &NamespaceView, config: &Config, cluster: &ClusterInfo| -> (String, String) {
        let d = inject::plan_injection(&typed(pod), ns, config, cluster);
        match d.outcome {
            Outcome::Skip(r) => (r.label().to_owned(), r.message()),
            Outcome::Inject(i) => panic!("injected, isolation {:?}", i.status.isolation),
        }
    };
    let sysbox = with_annotation(base.clone(), "dind-injector.io/isolation", "sysbox");
    let kata = with_annotation(base.clone(), "dind-injector.io/isolation", "kata");

    // The class is missing, or cannot be confirmed yet: not injected, and the reason names it.
    let (label, message) = skip(&sysbox, &namespace("baseline"), &config, &cluster_with(&["kata"]));
    assert_eq!(label, "runtime-class-missing");
    assert!(message.contains("RuntimeClass \"sysbox-runc\"") && message.contains("does not have"), "{message}");
    let syncing = ClusterInfo { runtime_classes: RuntimeClasses::Syncing, ..ClusterInfo::default() };
    let (label, message) = skip(&kata, &namespace("privileged"), &config, &syncing);
    assert_eq!(label, "runtime-classes-unknown");
    assert!(message.contains("RuntimeClass \"kata\"") && message.contains("not listed") && message.contains("retry the job"), "{message}");
    let refused = ClusterInfo {
        runtime_classes: RuntimeClasses::Unlisted("runtimeclasses.node.k8s.io is forbidden".into()),
        ..ClusterInfo::default()
    };
    let (label, message) = skip(&kata, &namespace("privileged"), &config, &refused);
    assert_eq!(label, "runtime-classes-unknown");
    assert!(message.contains("(runtimeclasses.node.k8s.io is forbidden)") && message.contains("grant its ClusterRole"), "{message}");
    // A privileged pod does not need any class.
    let d = inject::plan_injection(&typed(&base), &namespace("privileged"), &config, &syncing);
    assert!(matches!(d.outcome, Outcome::Inject(_)), "{:?}", d.outcome);

    // Not allowed by the administrator: not injected (never the privileged default instead).
    let mut only_privileged = config.clone();
    only_privileged.overrides.allowed_isolations = vec![Isolation::Privileged];
    let (label, message) = skip(&sysbox, &namespace("privileged"), &only_privileged, &both);
    assert_eq!(label, "isolation-not-allowed");
    assert!(message.contains("allows only privileged"), "{message}");

    // Pods Sysbox cannot take.
    let mut host_pid = sysbox.clone();
    host_pid["spec"]["hostPID"] = json!(true);
    let mut privileged_tool = sysbox.clone();
    privileged_tool["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    let mut other_class = sysbox.clone();
    other_class["spec"]["runtimeClassName"] = json!("gvisor");
    let mut host_users = sysbox.clone();
    host_users["spec"]["hostUsers"] = json!(true);
    for (pod, why) in
        [(&host_pid, "hostPID"), (&privileged_tool, "is privileged"), (&other_class, "\"gvisor\""), (&host_users, "hostUsers")]
    {
        let (label, message) = skip(pod, &namespace("privileged"), &config, &both);
        assert_eq!(label, "isolation-unsuited", "{why}");
        assert!(message.contains(why), "{why}: {message}");
    }

    // Pod Security: privileged and kata need a privileged namespace; nothing runs at restricted.
    for pod in [&base, &kata] {
        let (label, message) = skip(pod, &namespace("baseline"), &config, &both);
        assert_eq!(label, "pod-security-forbids-privileged");
        assert!(message.contains("dind-injector.io/isolation: sysbox"), "{message}");
    }
    let (label, _) = skip(&sysbox, &namespace("restricted"), &config, &both);
    assert_eq!(label, "pod-security-restricted");
}

#[test]
fn a_sysbox_sidecar_is_the_privileged_one_without_its_privilege() {
    for fixture in INJECTED_FIXTURES {
        let plain = review_pod(fixture);
        let ns = namespace("privileged");
        let cluster = cluster_with(&["sysbox-runc"]);
        let inject_with = |pod: &Value| match inject::plan_injection(&typed(pod), &ns, &Config::default(), &cluster).outcome {
            Outcome::Inject(i) => (apply(pod, &i.patch), i.sidecar),
            Outcome::Skip(r) => panic!("{fixture}: {}", r.message()),
        };
        let (privileged_pod, privileged) = inject_with(&plain);
        let (sysbox_pod, sysbox) = inject_with(&with_annotation(plain.clone(), "dind-injector.io/isolation", "sysbox"));
        // The daemon's command line, environment, mounts, probe: the same.
        assert_eq!(sysbox.command, privileged.command, "{fixture}");
        assert_eq!(sysbox.args, privileged.args, "{fixture}");
        assert_eq!(sysbox.env, privileged.env, "{fixture}");
        assert_eq!(sysbox.volume_mounts, privileged.volume_mounts, "{fixture}");
        assert_eq!(sysbox.startup_probe, privileged.startup_probe, "{fixture}");
        // Only the privilege differs.
        let (a, b) = (sysbox.security_context.clone().unwrap_or_default(), privileged.security_context.clone().unwrap_or_default());
        assert_eq!((a.privileged, b.privileged), (None, Some(true)), "{fixture}");
        assert_eq!((a.run_as_user, a.run_as_non_root), (b.run_as_user, b.run_as_non_root), "{fixture}");
        // The job containers get the same environment and mounts; only the pod-level fields differ.
        assert_eq!(sysbox_pod["spec"]["containers"], privileged_pod["spec"]["containers"], "{fixture}");
        assert_eq!(sysbox_pod["spec"]["volumes"], privileged_pod["spec"]["volumes"], "{fixture}");
        let mut rest = sysbox_pod["spec"].clone();
        let keys = rest.as_object_mut().map(|s| {
            s.remove("runtimeClassName");
            s.remove("hostUsers");
            s.remove("initContainers");
        });
        assert!(keys.is_some());
        let mut rest_privileged = privileged_pod["spec"].clone();
        rest_privileged.as_object_mut().map(|s| s.remove("initContainers"));
        assert_eq!(rest, rest_privileged, "{fixture}: only runtimeClassName and hostUsers are added");
    }
}

#[test]
fn the_node_cache_is_not_used_where_it_cannot_hold() {
    let mut config = Config::default();
    config.cache.mode = dind_injector::config::CacheMode::Node;
    let both = cluster_with(&["sysbox-runc", "kata"]);
    for (isolation, level, why) in [("kata", "privileged", "own kernel"), ("sysbox", "baseline", "forbids the cache's hostPath")] {
        let pod = with_annotation(review_pod("gitlab"), "dind-injector.io/isolation", isolation);
        let d = inject::plan_injection(&typed(&pod), &namespace(level), &config, &both);
        let Outcome::Inject(i) = d.outcome else { panic!("{isolation}: not injected") };
        assert!(i.status.cache.is_none(), "{isolation}");
        assert!(d.warnings.iter().any(|w| w.contains("node cache is not used") && w.contains(why)), "{isolation}: {:?}", d.warnings);
    }
    // Sysbox in a privileged namespace keeps it.
    let pod = with_annotation(review_pod("gitlab"), "dind-injector.io/isolation", "sysbox");
    let d = inject::plan_injection(&typed(&pod), &namespace("privileged"), &config, &both);
    assert!(matches!(&d.outcome, Outcome::Inject(i) if i.status.cache.is_some()), "{:?}", d.warnings);
}

#[test]
fn the_apiserver_model_refuses_a_missing_class_as_the_apiserver_does() {
    let pod = json!({"metadata": {"name": "p"}, "spec": {"runtimeClassName": "rc-missing", "containers": [{"name": "c", "image": "x:1"}]}});
    let err = after_mutation_in(&pod, &classes()).err().unwrap_or_default();
    assert_eq!(err, "pods \"p\" is forbidden: pod rejected: RuntimeClass \"rc-missing\" not found");
}

#[test]
fn a_modes_pod_annotations_are_added_unless_the_pod_sets_them() {
    let mut config = Config::default();
    config.isolation.kata.pod_annotations.insert("io.katacontainers.config.hypervisor.default_memory".into(), "4096".into());
    config.isolation.sysbox.pod_annotations.insert("io.kubernetes.cri-o.userns-mode".into(), "auto:size=65536".into());
    let cluster = cluster_with(&["sysbox-runc", "kata"]);
    let inject_with = |config: &Config, pod: &Value, level: &str| -> Value {
        match inject::plan_injection(&typed(pod), &namespace(level), config, &cluster).outcome {
            Outcome::Inject(i) => after_mutation_in(&apply(pod, &i.patch), &classes()).unwrap_or_else(|e| panic!("{e}")).pod,
            Outcome::Skip(r) => panic!("{}", r.message()),
        }
    };
    for fixture in INJECTED_FIXTURES {
        let base = review_pod(fixture);
        let kata = inject_with(&config, &with_annotation(base.clone(), "dind-injector.io/isolation", "kata"), "privileged");
        let annotations = &kata["metadata"]["annotations"];
        assert_eq!(annotations["io.katacontainers.config.hypervisor.default_memory"], "4096", "{fixture}");
        assert!(annotations.get("io.kubernetes.cri-o.userns-mode").is_none(), "{fixture}: only the mode's own");
        assert!(annotations.get("dind-injector.io/status").is_some(), "{fixture}");
        assert_eq!(verdict_lines(&kata, "privileged"), (true, vec![]), "{fixture}: still exempt");

        // The pod's own value wins.
        let mut own = with_annotation(base.clone(), "dind-injector.io/isolation", "kata");
        own["metadata"]["annotations"]["io.katacontainers.config.hypervisor.default_memory"] = json!("8192");
        let own = inject_with(&config, &own, "privileged");
        assert_eq!(own["metadata"]["annotations"]["io.katacontainers.config.hypervisor.default_memory"], "8192", "{fixture}");

        let sysbox = inject_with(&config, &with_annotation(base.clone(), "dind-injector.io/isolation", "sysbox"), "baseline");
        assert_eq!(sysbox["metadata"]["annotations"]["io.kubernetes.cri-o.userns-mode"], "auto:size=65536", "{fixture}");
        assert_eq!(verdict_lines(&sysbox, "baseline"), (false, vec![]), "{fixture}");

        let privileged = inject_with(&config, &base, "privileged");
        let annotations = privileged["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
        assert!(annotations.keys().all(|k| !k.starts_with("io.")), "{fixture}: privileged pods get none: {annotations:?}");
    }

    // A pod without any annotation (injection asked by label, mode by the configuration): the
    // patch creates the map once.
    let mut bare = review_pod("gitlab");
    let asked = bare["metadata"]["annotations"]["dind-injector.io/inject"].clone();
    bare["metadata"].as_object_mut().map(|m| m.remove("annotations"));
    bare["metadata"]["labels"]["dind-injector.io/inject"] = if asked.is_null() { json!("true") } else { asked };
    config.sidecar.isolation = Isolation::Sysbox;
    let pod = inject_with(&config, &bare, "baseline");
    assert_eq!(pod["metadata"]["annotations"]["io.kubernetes.cri-o.userns-mode"], "auto:size=65536");
    assert!(pod["metadata"]["annotations"].get("dind-injector.io/status").is_some());
}

/// `userns` (issue 33): `hostUsers: false`, a sidecar that is not privileged and adds only
/// SYS_ADMIN and NET_ADMIN, with procMount Unmasked and seccomp Unconfined; no RuntimeClass; the
/// pod keeps everything else the privileged injection gives it.
#[test]
fn userns_pods_get_a_user_namespace_and_the_smallest_sidecar_that_works() {
    for fixture in INJECTED_FIXTURES {
        let (pod, status) = stored(fixture, "userns", "privileged");
        assert_eq!(pod["spec"]["hostUsers"], false, "{fixture}");
        assert!(pod["spec"].get("runtimeClassName").is_none(), "{fixture}: no RuntimeClass by default");
        let dind = sidecar(&pod, &status.container);
        assert_eq!(
            dind["securityContext"],
            json!({"capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"]}, "procMount": "Unmasked", "runAsNonRoot": false, "runAsUser": 0, "seccompProfile": {"type": "Unconfined"}}),
            "{fixture}"
        );
        let script = dind["command"][2].as_str().unwrap_or_default();
        assert!(script.contains("--rootless") && script.contains("dind-injector userns:"), "{fixture}: the cgroup choice is in the script");
        // Baseline without the exemption: exactly the capabilities and the seccomp profile
        // (procMount Unmasked is baseline in a user namespace); with it, nothing.
        let without: BTreeSet<&str> = check_pod_security(&typed(&pod), Level::Baseline, None).iter().map(|v| v.control.id()).collect();
        assert_eq!(without, BTreeSet::from(["capabilities_baseline", "seccompProfile_baseline"]), "{fixture}");
        assert_eq!(verdict_lines(&pod, "privileged"), (true, vec![]), "{fixture}");
        assert_eq!(status.isolation, Isolation::Userns);
        assert_eq!(status.runtime_class, None);
    }
    // A configured RuntimeClass (a cgroup-writable handler) and a Localhost seccomp profile.
    let mut config = Config::default();
    config.isolation.userns.runtime_class_name = Some("runc-cgroup-writable".into());
    config.isolation.userns.seccomp_profile =
        dind_injector::config::SeccompConfig { type_: "Localhost".into(), localhost_profile: Some("profiles/dind-userns.json".into()) };
    let pod = with_annotation(review_pod("gitlab"), "dind-injector.io/isolation", "userns");
    let d = inject::plan_injection(&typed(&pod), &namespace("privileged"), &config, &cluster_with(&["runc-cgroup-writable"]));
    let Outcome::Inject(i) = d.outcome else { panic!("not injected: {:?}", d.outcome) };
    let patched = apply(&pod, &i.patch);
    assert_eq!(patched["spec"]["runtimeClassName"], "runc-cgroup-writable");
    let sc = i.sidecar.security_context.clone().unwrap_or_default();
    assert_eq!(sc.seccomp_profile.and_then(|p| p.localhost_profile).as_deref(), Some("profiles/dind-userns.json"));
    let missing = inject::plan_injection(&typed(&pod), &namespace("privileged"), &config, &cluster_with(&["kata"]));
    assert!(matches!(missing.outcome, Outcome::Skip(inject::SkipReason::RuntimeClassMissing { .. })), "{:?}", missing.outcome);
}

/// Never a downgrade, never a surprise: every pod `userns` cannot serve is left alone with the
/// reason and the fix, and the cache is refused with its reason.
#[test]
fn userns_refuses_what_a_user_namespace_cannot_hold() {
    let config = Config::default();
    let userns = with_annotation(review_pod("gitlab"), "dind-injector.io/isolation", "userns");
    let skip = |pod: &Value, ns: &NamespaceView, cluster: &ClusterInfo| -> (String, String) {
        match inject::plan_injection(&typed(pod), ns, &config, cluster).outcome {
            Outcome::Skip(r) => (r.label().to_owned(), r.message()),
            Outcome::Inject(_) => panic!("injected"),
        }
    };
    let old = ClusterInfo { server_version: Some(inject::KubeVersion { major: 1, minor: 32 }), ..ClusterInfo::default() };
    let (label, message) = skip(&userns, &namespace("privileged"), &old);
    assert_eq!(label, "isolation-unsuited");
    assert!(message.contains("Kubernetes 1.32") && message.contains("1.33 or later"), "{message}");
    let new = ClusterInfo { server_version: Some(inject::KubeVersion { major: 1, minor: 36 }), ..ClusterInfo::default() };
    assert!(matches!(inject::plan_injection(&typed(&userns), &namespace("privileged"), &config, &new).outcome, Outcome::Inject(_)));
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut p = userns.clone();
        f(&mut p);
        p
    };
    let cases = [
        (edit(&|p| p["spec"]["hostPID"] = json!(true)), "isolation-unsuited", "hostPID"),
        (edit(&|p| p["spec"]["hostIPC"] = json!(true)), "isolation-unsuited", "hostIPC"),
        (edit(&|p| p["spec"]["hostNetwork"] = json!(true)), "host-network", "hostNetwork"),
        (edit(&|p| p["spec"]["hostUsers"] = json!(true)), "isolation-unsuited", "hostUsers"),
        (
            edit(&|p| {
                p["spec"]["volumes"]
                    .as_array_mut()
                    .into_iter()
                    .for_each(|v| v.push(json!({"name": "cache", "nfs": {"server": "nfs.ci", "path": "/c"}})))
            }),
            "isolation-unsuited",
            "\"cache\" is NFS",
        ),
    ];
    for (pod, want_label, why) in cases {
        let (label, message) = skip(&pod, &namespace("privileged"), &new);
        assert_eq!(label, want_label, "{why}: {message}");
        assert!(message.contains(why), "{why}: {message}");
    }
    // The sidecar needs an exemption: a baseline namespace says so, and how to open it.
    let (label, message) = skip(&userns, &namespace("baseline"), &new);
    assert_eq!(label, "pod-security-forbids-privileged");
    assert!(message.contains("SYS_ADMIN and NET_ADMIN"), "{message}");
    // Not allowed: nothing injected, never the privileged default instead.
    let mut only_privileged = config.clone();
    only_privileged.overrides.allowed_isolations = vec![Isolation::Privileged];
    let d = inject::plan_injection(&typed(&userns), &namespace("privileged"), &only_privileged, &new);
    assert!(matches!(d.outcome, Outcome::Skip(inject::SkipReason::IsolationNotAllowed { .. })), "{:?}", d.outcome);
    // The node cache is refused with its reason; the daemon starts empty.
    let mut cached = config.clone();
    cached.cache.mode = dind_injector::config::CacheMode::Node;
    let d = inject::plan_injection(&typed(&userns), &namespace("privileged"), &cached, &new);
    let Outcome::Inject(i) = d.outcome else { panic!("not injected") };
    assert!(i.status.cache.is_none());
    assert!(d.warnings.iter().any(|w| w.contains("node cache is not used") && w.contains("id-maps")), "{:?}", d.warnings);
}

/// The exemption holds exactly this sidecar while the pod keeps `hostUsers: false`: flipping it,
/// dropping it, adding a capability, or moving the exemption to another container is tampering.
#[test]
fn tampering_with_a_userns_pod_is_denied() {
    let (pod, _) = stored("gitlab", "userns", "privileged");
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut p = pod.clone();
        f(&mut p);
        p
    };
    let moved = {
        let mut p = pod.clone();
        let text = p["metadata"]["annotations"]["dind-injector.io/status"].as_str().unwrap_or_default().to_owned();
        let mut status = inject::InjectionStatus::parse(&text).unwrap_or_else(|| panic!("no status"));
        status.container = "build".into();
        p["metadata"]["annotations"]["dind-injector.io/status"] = json!(status.to_annotation());
        p
    };
    let cases: Vec<(&str, Value, &[&str])> = vec![
        ("hostUsers flipped", edit(&|p| p["spec"]["hostUsers"] = json!(true)), &["hostUsers is true", "SYS_ADMIN and NET_ADMIN"]),
        (
            "hostUsers removed",
            edit(&|p| {
                p["spec"].as_object_mut().map(|s| s.remove("hostUsers"));
            }),
            &["hostUsers is not set", "UserNamespacesSupport"],
        ),
        (
            "a capability added",
            edit(&|p| dind_mut(p)["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN", "NET_ADMIN", "SYS_MODULE"])),
            &["changed after injection", "SYS_MODULE"],
        ),
        ("the exemption moved to the build container", moved, &["\"build\" is named as the injected dind sidecar"]),
    ];
    for (what, pod, expected) in cases {
        let (exempt, lines) = verdict_lines(&pod, "privileged");
        assert!(!exempt, "{what}: nothing may be exempt");
        let text = lines.join("\n");
        for e in expected {
            assert!(text.contains(e), "{what}: expected {e:?} in:\n{text}");
        }
    }
}
