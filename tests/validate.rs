//! The validating path on the runners' pods: injected pods pass, and everything the narrowed
//! exemption must catch is denied in enforce and allowed with warnings in audit.

mod support;

use dind_injector::config::{Config, PolicyMode};
use dind_injector::inject::{self, ClusterInfo, Outcome};
use dind_injector::namespace::{NamespaceView, StaticNamespaces};
use dind_injector::webhook::{self, ReviewContext, ReviewOutcome};
use serde_json::{Value, json};
use support::*;

fn injected(fixture: &str) -> Value {
    let pod = review_pod(fixture);
    let d = inject::plan_injection(&typed(&pod), &NamespaceView::opted_in("ci"), &Config::default(), &ClusterInfo::default());
    match d.outcome {
        Outcome::Inject(i) => apply(&pod, &i.patch),
        Outcome::Skip(r) => panic!("{fixture}: {}", r.message()),
    }
}

fn review_of(pod: &Value, operation: &str, sub_resource: Option<&str>, old: Option<&Value>) -> Vec<u8> {
    let mut request = json!({
        "uid": "v-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "ci", "operation": operation, "object": pod,
    });
    if let Some(s) = sub_resource {
        request["subResource"] = json!(s);
    }
    if let Some(o) = old {
        request["oldObject"] = o.clone();
    }
    serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})).unwrap_or_default()
}

fn run(body: &[u8], mode: PolicyMode, extra_labels: &[(&str, &str)]) -> (ReviewOutcome, Value) {
    let mut config = Config::default();
    config.policy.mode = mode;
    let mut labels = NamespaceView::opted_in("ci").labels;
    for (k, v) in extra_labels {
        labels.insert((*k).into(), (*v).into());
    }
    let namespaces = StaticNamespaces::new(labels, Default::default());
    let cluster = ClusterInfo::default();
    let out = webhook::validate(body, ReviewContext { config: &config, namespaces: &namespaces, cluster: &cluster });
    let v: Value = serde_json::from_slice(&out.body).unwrap_or_default();
    (out, v)
}

fn with_container(mut pod: Value, container: Value) -> Value {
    if let Some(list) = pod["spec"]["containers"].as_array_mut() {
        list.push(container);
    }
    pod
}

fn sidecar_mut(pod: &mut Value) -> &mut Value {
    let list = pod["spec"]["initContainers"].as_array_mut().unwrap_or_else(|| panic!("no init containers"));
    list.iter_mut().find(|c| c["name"] == "dind").unwrap_or_else(|| panic!("no dind sidecar"))
}

#[test]
fn every_injected_fixture_passes_baseline() {
    for fixture in INJECTED_FIXTURES {
        let (out, v) = run(&review_of(&injected(fixture), "CREATE", None, None), PolicyMode::Enforce, &[]);
        assert_eq!(v["response"]["allowed"], true, "{fixture}: {}", v["response"]["status"]["message"]);
        assert_eq!(out.log.reason, "compliant", "{fixture}");
        assert_eq!(out.log.policy_level, "baseline");
    }
}

#[test]
fn what_the_exemption_must_catch_is_denied_in_enforce_and_audited_in_audit() {
    let base = injected("gitlab");
    let second_privileged =
        with_container(base.clone(), json!({"name": "sneaky", "image": "alpine", "securityContext": {"privileged": true}}));
    let mut socket = base.clone();
    if let Some(v) = socket["spec"]["volumes"].as_array_mut() {
        v.push(json!({"name": "sock", "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"}}))
    }
    if let Some(v) = socket["spec"]["containers"][0]["volumeMounts"].as_array_mut() {
        v.push(json!({"name": "sock", "mountPath": "/var/run/docker.sock"}))
    }
    let mut tampered_args = base.clone();
    sidecar_mut(&mut tampered_args)["args"] = json!(["dockerd", "--host=tcp://0.0.0.0:2375"]);
    let mut tampered_probe = base.clone();
    sidecar_mut(&mut tampered_probe)["startupProbe"]["exec"]["command"] =
        json!(["sh", "-c", "mount /dev/vda1 /mnt && cat /mnt/etc/shadow"]);
    let mut tampered_image = base.clone();
    sidecar_mut(&mut tampered_image)["image"] = json!("evil/docker:dind");
    let mut tampered_mount = base.clone();
    if let Some(v) = tampered_mount["spec"]["volumes"].as_array_mut() {
        v.push(json!({"name": "host", "hostPath": {"path": "/"}}))
    }
    if let Some(v) = sidecar_mut(&mut tampered_mount)["volumeMounts"].as_array_mut() {
        v.push(json!({"name": "host", "mountPath": "/host"}))
    }
    let impostor = with_container(
        review_pod("gitlab"),
        json!({"name": "dind", "image": "docker:28.5.1-dind", "securityContext": {"privileged": true}}),
    );

    let cases: [(&str, Value, &[&str]); 7] = [
        ("sidecar probe command changed", tampered_probe, &["sidecar-tampered", "privileged"]),
        ("second privileged container", second_privileged, &["privileged"]),
        ("docker socket hostPath", socket, &["hostPathVolumes", "dockerSocket"]),
        ("sidecar args changed", tampered_args, &["sidecar-tampered", "privileged"]),
        ("sidecar image changed", tampered_image, &["sidecar-tampered", "privileged"]),
        ("sidecar mounts the host", tampered_mount, &["sidecar-tampered", "privileged", "hostPathVolumes", "dockerSocket"]),
        ("a container merely named dind", impostor, &["not-injected", "privileged"]),
    ];
    for (what, pod, expected) in cases {
        let body = review_of(&pod, "CREATE", None, None);
        let (out, v) = run(&body, PolicyMode::Enforce, &[]);
        assert_eq!(v["response"]["allowed"], false, "{what}: must be denied");
        assert_eq!(v["response"]["status"]["code"], 403, "{what}");
        let message = v["response"]["status"]["message"].as_str().unwrap_or_default();
        for id in expected {
            assert!(out.log.violations.contains(id), "{what}: expected {id} in {:?}", out.log.violations);
            if !id.contains('-') {
                assert!(message.contains(&format!("({id})")), "{what}: the denial must name {id}:\n{message}");
            }
        }
        assert_eq!(message.matches("\n- ").count(), out.log.violations.len(), "{what}: one line per problem:\n{message}");

        let (out, v) = run(&body, PolicyMode::Audit, &[]);
        assert_eq!(v["response"]["allowed"], true, "{what}: audit allows");
        assert_eq!(out.log.reason, "violations-audited");
        let warnings = v["response"]["warnings"].as_array().map_or(0, Vec::len);
        assert_eq!(warnings, out.log.violations.len(), "{what}: one warning per problem");
        let annotations = v["response"]["auditAnnotations"].as_object().cloned().unwrap_or_default();
        assert_eq!(annotations.get("policy-mode"), Some(&json!("audit")));
        assert!(annotations.contains_key("violation-1"), "{what}: {annotations:?}");
    }
}

#[test]
fn asking_without_being_injected_is_denied_with_the_reason() {
    let (out, v) = run(&review_of(&review_pod("gitlab"), "CREATE", None, None), PolicyMode::Enforce, &[]);
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(out.log.violations, vec!["not-injected"]);
    let message = v["response"]["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("MutatingWebhookConfiguration"), "{message}");
}

#[test]
fn ephemeral_debug_containers_are_checked_and_spec_unchanged_updates_are_not() {
    let pod = injected("gitlab");
    let mut debug = pod.clone();
    debug["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "image": "busybox", "securityContext": {"privileged": true}}]);
    let (out, v) = run(&review_of(&debug, "UPDATE", Some("ephemeralcontainers"), Some(&pod)), PolicyMode::Enforce, &[]);
    assert_eq!(v["response"]["allowed"], false);
    assert!(
        v["response"]["status"]["message"].as_str().unwrap_or_default().contains("spec.ephemeralContainers[0].securityContext.privileged")
    );
    assert_eq!(out.log.violations, vec!["privileged"]);

    let mut relabelled = debug.clone();
    relabelled["metadata"]["labels"]["new"] = json!("label");
    let (out, v) = run(&review_of(&relabelled, "UPDATE", None, Some(&debug)), PolicyMode::Enforce, &[]);
    assert_eq!(v["response"]["allowed"], true, "a metadata-only update of an existing pod is not re-judged");
    assert_eq!(out.log.reason, "spec-unchanged");
}

#[test]
fn namespace_labels_may_only_tighten_unless_allowed() {
    let body = review_of(
        &with_container(injected("gitlab"), json!({"name": "p", "image": "a", "securityContext": {"privileged": true}})),
        "CREATE",
        None,
        None,
    );
    let (out, v) = run(&body, PolicyMode::Enforce, &[("dind-injector.io/policy-mode", "audit")]);
    assert_eq!(v["response"]["allowed"], false, "a namespace cannot loosen enforce to audit");
    assert_eq!(out.log.policy_mode, "enforce");
    assert!(v["response"]["warnings"].to_string().contains("looser"));
    let (out, v) = run(&body, PolicyMode::Audit, &[("dind-injector.io/policy-mode", "enforce")]);
    assert_eq!(v["response"]["allowed"], false, "a namespace can tighten audit to enforce");
    assert_eq!(out.log.policy_mode, "enforce");

    let clean = review_of(&injected("gitlab"), "CREATE", None, None);
    let (out, v) = run(&clean, PolicyMode::Enforce, &[("dind-injector.io/pod-security", "restricted")]);
    assert_eq!(out.log.policy_level, "restricted");
    assert_eq!(v["response"]["allowed"], false, "the GitLab job containers are not restricted-compliant");
    assert!(!out.log.violations.contains(&"privileged"), "the sidecar stays exempt at restricted");
}

#[test]
fn opt_in_by_label_is_honoured_and_malformed_requests_are_warned_never_denied() {
    // A label opts in like the annotation: injected, and the stored pod is admitted.
    let mut labelled = review_pod("gitlab");
    if let Some(a) = labelled["metadata"]["annotations"].as_object_mut() {
        a.remove("dind-injector.io/inject");
    }
    labelled["metadata"]["labels"]["dind-injector.io/inject"] = json!("true");
    let d = inject::plan_injection(&typed(&labelled), &NamespaceView::opted_in("ci"), &Config::default(), &ClusterInfo::default());
    let Outcome::Inject(i) = d.outcome else { panic!("a pod labelled dind-injector.io/inject=true is not injected") };
    let (_, v) = run(&review_of(&apply(&labelled, &i.patch), "CREATE", None, None), PolicyMode::Enforce, &[]);
    assert_eq!(v["response"]["allowed"], true, "{}", v["response"]["status"]["message"]);

    // Labelled but never injected: denied, and the message says it was the label.
    let (_, v) = run(&review_of(&labelled, "CREATE", None, None), PolicyMode::Enforce, &[]);
    assert_eq!(v["response"]["allowed"], false);
    assert!(
        v["response"]["status"]["message"].as_str().unwrap_or_default().contains("label dind-injector.io/inject"),
        "{}",
        v["response"]["status"]["message"]
    );

    // The annotation wins over the label.
    let mut refused = labelled.clone();
    refused["metadata"]["annotations"]["dind-injector.io/inject"] = json!("false");
    let d = inject::plan_injection(&typed(&refused), &NamespaceView::opted_in("ci"), &Config::default(), &ClusterInfo::default());
    assert!(matches!(d.outcome, Outcome::Skip(inject::SkipReason::OptedOut)));

    // Malformed: a warning with the fix, never a denial.
    for (key, value) in [("dind-injector.io/inject", "yes"), ("dind-injector.io/inject", "True "), ("dind-injector.io/injct", "true")] {
        let mut pod = review_pod("buildkite");
        if let Some(a) = pod["metadata"]["annotations"].as_object_mut() {
            a.remove("dind-injector.io/inject");
            a.insert(key.into(), json!(value));
        }
        let (_, v) = run(&review_of(&pod, "CREATE", None, None), PolicyMode::Enforce, &[]);
        assert_eq!(v["response"]["allowed"], true, "{key}={value:?}: {}", v["response"]["status"]["message"]);
        let warnings = v["response"]["warnings"].to_string();
        assert!(warnings.contains("exactly \\\"true\\\"") || warnings.contains("did you mean"), "{key}={value:?}: {warnings}");
    }
}

/// Rewrites the status annotation the way a forger would: a fingerprint that matches the changed
/// sidecar, and the mirrored mounts it claims. Only the structural checks stand in the way.
fn forge(mut pod: Value, edit_status: impl FnOnce(&mut inject::InjectionStatus)) -> Value {
    let typed_pod = typed(&pod);
    let sidecar =
        typed_pod.spec.and_then(|s| s.init_containers).unwrap_or_default().into_iter().find(|c| c.name == "dind").unwrap_or_default();
    let text = pod["metadata"]["annotations"]["dind-injector.io/status"].as_str().unwrap_or_default().to_owned();
    let mut status = inject::InjectionStatus::parse(&text).unwrap_or_else(|| panic!("no status in {text}"));
    status.template = inject::sidecar_fingerprint(&sidecar);
    edit_status(&mut status);
    pod["metadata"]["annotations"]["dind-injector.io/status"] = json!(status.to_annotation());
    pod
}

fn denial(pod: &Value) -> (bool, String) {
    let (_, v) = run(&review_of(pod, "CREATE", None, None), PolicyMode::Enforce, &[]);
    (v["response"]["allowed"] == true, v["response"]["status"]["message"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn the_exemption_accepts_the_mirrored_workspace_and_nothing_else() {
    let base = injected("gitlab");
    let mirrored: Vec<String> = sidecar_mut(&mut base.clone())["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m["mountPath"].as_str().map(str::to_owned))
        .collect();
    assert!(mirrored.contains(&"/builds".to_owned()), "the workspace is mirrored: {mirrored:?}");
    assert_eq!(denial(&base), (true, String::new()), "the mirrored mounts are accepted");
    assert_eq!(denial(&forge(base.clone(), |_| {})), (true, String::new()), "a recomputed fingerprint alone changes nothing");

    // A hostPath volume under the mirrored name: the sidecar would reach the node's filesystem.
    let mut host = base.clone();
    if let Some(vs) = host["spec"]["volumes"].as_array_mut() {
        for v in vs.iter_mut().filter(|v| v["name"] == "repo") {
            *v = json!({"name": "repo", "hostPath": {"path": "/"}});
        }
    }
    let (allowed, message) = denial(&host);
    assert!(!allowed);
    assert!(message.contains("mirrors volume \"repo\" at /builds, a hostPath volume"), "{message}");

    // An extra sidecar mount of the job's own emptyDir, not recorded as mirrored.
    let mut extra = base.clone();
    if let Some(v) = sidecar_mut(&mut extra)["volumeMounts"].as_array_mut() {
        v.push(json!({"name": "repo", "mountPath": "/elsewhere"}))
    }
    let (allowed, message) = denial(&forge(extra.clone(), |_| {}));
    assert!(!allowed);
    assert!(message.contains("mounts volume \"repo\", which dind-injector did not add"), "{message}");

    // The same mount recorded as mirrored, but no job container mounts it there.
    let (allowed, message) = denial(&forge(extra, |s| {
        s.mirrored.push(inject::workspace::MirroredMount {
            volume: "repo".into(),
            path: "/elsewhere".into(),
            sub_path: None,
            sub_path_expr: None,
        });
    }));
    assert!(!allowed);
    assert!(message.contains("no job container mounts it there"), "{message}");

    // A Secret the job mounts, "mirrored" by a forged record.
    let mut secret = base.clone();
    if let Some(v) = secret["spec"]["volumes"].as_array_mut() {
        v.push(json!({"name": "creds", "secret": {"secretName": "registry"}}))
    }
    if let Some(v) = secret["spec"]["containers"][0]["volumeMounts"].as_array_mut() {
        v.push(json!({"name": "creds", "mountPath": "/creds"}))
    }
    if let Some(v) = sidecar_mut(&mut secret)["volumeMounts"].as_array_mut() {
        v.push(json!({"name": "creds", "mountPath": "/creds"}))
    }
    let (allowed, message) = denial(&forge(secret, |s| {
        s.mirrored.push(inject::workspace::MirroredMount {
            volume: "creds".into(),
            path: "/creds".into(),
            sub_path: None,
            sub_path_expr: None,
        });
    }));
    assert!(!allowed);
    assert!(message.contains("a secret volume"), "{message}");
}

#[test]
fn a_status_without_mirrored_mounts_still_parses() {
    let old = r#"{"version":1,"container":"dind","mode":"native","transport":"unix","image":"docker:28.5.1-dind","volumes":["dind-storage"],"targets":["build"],"template":"sha256:0123456789abcdef"}"#;
    let status = inject::InjectionStatus::parse(old).unwrap_or_else(|| panic!("an older record must parse"));
    assert!(status.mirrored.is_empty());
    assert!(!status.to_annotation().contains("mirrored"), "an empty list is not written");
}

/// The fixture injected with the node cache on (`scope: project`), as the apiserver stores it.
fn injected_with_cache(fixture: &str) -> Value {
    let pod = review_pod(fixture);
    let mut config = Config::default();
    config.cache.mode = dind_injector::config::CacheMode::Node;
    config.cache.scope = dind_injector::config::CacheScope::Project;
    let d = inject::plan_injection(&typed(&pod), &NamespaceView::opted_in("ci"), &config, &ClusterInfo::default());
    match d.outcome {
        Outcome::Inject(i) => {
            assert!(i.status.cache.is_some(), "{fixture}: no cache recorded");
            support::apiserver::after_mutation(&apply(&pod, &i.patch)).pod
        }
        Outcome::Skip(r) => panic!("{fixture}: {}", r.message()),
    }
}

fn cache_volume_mut(pod: &mut Value) -> &mut Value {
    let name = inject::InjectionStatus::parse(pod["metadata"]["annotations"]["dind-injector.io/status"].as_str().unwrap_or_default())
        .and_then(|s| s.cache)
        .map(|c| c.volume)
        .unwrap_or_else(|| panic!("no cache in the status"));
    let list = pod["spec"]["volumes"].as_array_mut().unwrap_or_else(|| panic!("no volumes"));
    list.iter_mut().find(|v| v["name"] == name.as_str()).unwrap_or_else(|| panic!("no volume {name}"))
}

#[test]
fn the_cache_exemption_covers_exactly_the_injected_hostpath() {
    for fixture in INJECTED_FIXTURES {
        let pod = injected_with_cache(fixture);
        assert_eq!(cache_volume_mut(&mut pod.clone())["hostPath"]["type"], "DirectoryOrCreate", "{fixture}: stored as given");
        assert_eq!(denial(&pod), (true, String::new()), "{fixture}: the injected cache is exempt");
    }
    let base = injected_with_cache("gitlab");
    assert_eq!(cache_volume_mut(&mut base.clone())["hostPath"]["path"], "/var/lib/dind-injector/cache/ci/gitlab-42");

    let mut root = base.clone();
    cache_volume_mut(&mut root)["hostPath"]["path"] = json!("/");
    let (allowed, message) = denial(&root);
    assert!(!allowed && message.contains("not this namespace's cache directory"), "{message}");
    assert!(message.contains("(hostPathVolumes)"), "the volume is no longer exempt: {message}");

    // Another namespace's cache, with a status forged to match.
    let mut other = base.clone();
    cache_volume_mut(&mut other)["hostPath"]["path"] = json!("/var/lib/dind-injector/cache/prod/namespace");
    let other = forge(other, |s| {
        if let Some(c) = s.cache.as_mut() {
            c.host_path = "/var/lib/dind-injector/cache/prod/namespace".into();
            c.scope = "prod/namespace".into();
        }
    });
    let (allowed, message) = denial(&other);
    assert!(!allowed && message.contains("not this namespace's cache directory"), "{message}");

    // A path escaping the cache directory, forged consistently.
    let mut escape = base.clone();
    cache_volume_mut(&mut escape)["hostPath"]["path"] = json!("/var/lib/dind-injector/cache/ci/../../../../etc");
    let escape = forge(escape, |s| {
        if let Some(c) = s.cache.as_mut() {
            c.host_path = "/var/lib/dind-injector/cache/ci/../../../../etc".into();
            c.scope = "ci/../../../../etc".into();
        }
    });
    assert!(!denial(&escape).0, "a scope with .. is refused");

    let mut typeless = base.clone();
    cache_volume_mut(&mut typeless)["hostPath"].as_object_mut().map(|h| h.remove("type"));
    let (allowed, message) = denial(&typeless);
    assert!(!allowed && message.contains("not DirectoryOrCreate"), "{message}");

    // The job container mounting the cache: it may not, the sidecar stays exempt.
    let mut job_mounts = base.clone();
    let volume = cache_volume_mut(&mut job_mounts)["name"].clone();
    if let Some(v) = job_mounts["spec"]["containers"][0]["volumeMounts"].as_array_mut() {
        v.push(json!({"name": volume, "mountPath": "/cache"}))
    }
    let (allowed, message) = denial(&job_mounts);
    assert!(!allowed && message.contains("only the dind sidecar may mount dind-injector's node cache"), "{message}");
    assert!(message.contains("\"build\""), "names the container: {message}");

    // The sidecar's cache mount moved: the fingerprint no longer matches.
    let mut moved = base.clone();
    for m in sidecar_mut(&mut moved)["volumeMounts"].as_array_mut().into_iter().flatten() {
        if m["name"] == volume {
            m["mountPath"] = json!("/var/lib/docker-elsewhere");
        }
    }
    let (allowed, message) = denial(&moved);
    assert!(!allowed && message.contains("changed after injection"), "{message}");
    let (allowed, message) = denial(&forge(moved, |_| {}));
    assert!(!allowed && message.contains("other than at /var/lib/dind-injector-cache"), "{message}");

    // Any other hostPath is still denied with the cache on.
    let mut extra = base.clone();
    if let Some(v) = extra["spec"]["volumes"].as_array_mut() {
        v.push(json!({"name": "node", "hostPath": {"path": "/var/lib/dind-injector/cache/ci/gitlab-42"}}))
    }
    let (allowed, message) = denial(&extra);
    assert!(!allowed && message.contains("spec.volumes[") && message.contains("(hostPathVolumes)"), "{message}");

    // The administrator moved the cache: running pods' recorded directory is no longer it.
    let mut config = Config::default();
    config.cache.host_path = "/mnt/cache".into();
    let namespaces = StaticNamespaces::new(NamespaceView::opted_in("ci").labels, Default::default());
    let cluster = ClusterInfo::default();
    let out = webhook::validate(
        &review_of(&base, "CREATE", None, None),
        ReviewContext { config: &config, namespaces: &namespaces, cluster: &cluster },
    );
    let v: Value = serde_json::from_slice(&out.body).unwrap_or_default();
    assert_eq!(v["response"]["allowed"], false);
    assert!(v["response"]["status"]["message"].as_str().unwrap_or_default().contains("under cache.hostPath (/mnt/cache/ci/...)"), "{v}");
}
