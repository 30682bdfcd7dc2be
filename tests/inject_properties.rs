//! Properties over generated pods: never a panic, the patch always applies, the result is a pod
//! the apiserver would accept, every target reaches the daemon, and a second pass is empty.

mod support;

use dind_injector::config::{Config, SidecarMode, Transport};
use dind_injector::inject::{self, ClusterInfo, InjectionStatus, Outcome, SkipReason};
use dind_injector::namespace::{NamespaceView, StaticNamespaces};
use dind_injector::webhook::{self, ReviewContext};
use proptest::prelude::*;
use serde_json::{Value, json};
use support::*;

/// Names the injector also wants, runner names, and odd ones.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("dind".to_string()),
        Just("dind-2".to_string()),
        Just("build".to_string()),
        Just("helper".to_string()),
        Just("agent".to_string()),
        Just("lite-engine".to_string()),
        Just("step-1".to_string()),
        Just("container-0".to_string()),
        "[a-z][a-z0-9-]{0,10}[a-z0-9]",
        Just("x".repeat(63)),
    ]
}

fn volume_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("dind-storage".to_string()),
        Just("dind-socket".to_string()),
        Just("dind-certs".to_string()),
        Just("dind-daemon-config".to_string()),
        Just("dind-storage-2".to_string()),
        Just("kube-api-access-abcde".to_string()),
        "[a-z][a-z0-9-]{0,8}[a-z0-9]",
    ]
}

fn mount_path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/var/run/dind".to_string()),
        Just("/certs/client".to_string()),
        Just("/certs".to_string()),
        Just("/builds".to_string()),
        Just("/var/run/secrets/kubernetes.io/serviceaccount".to_string()),
        Just("/var/run".to_string()),
        Just("/var/lib/docker/".to_string()),
        Just("/var".to_string()),
        Just("/".to_string()),
        Just("/tls/client".to_string()),
        "/[a-z]{1,8}(/[a-z]{1,8})?",
    ]
}

fn env_entry() -> impl Strategy<Value = (String, Option<String>)> {
    (
        prop_oneof![
            Just("DOCKER_HOST".to_string()),
            Just("DOCKER_TLS_VERIFY".to_string()),
            Just("DOCKER_CERT_PATH".to_string()),
            Just("DOCKER_TLS_CERTDIR".to_string()),
            "[A-Z_]{1,10}",
        ],
        prop::option::of(prop_oneof![
            Just("tcp://docker:2375".to_string()),
            Just("tcp://docker:2376".to_string()),
            Just("tcp://localhost:2375/".to_string()),
            Just("tcp://127.0.0.1:2376".to_string()),
            Just("/tls".to_string()),
            Just("/tls/client".to_string()),
            Just("unix:///var/run/dind/docker.sock".to_string()),
            Just(String::new()),
            ".{0,20}",
        ]),
    )
}

fn annotation_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true".to_string()),
        Just("false".to_string()),
        Just("auto".to_string()),
        Just("tcp-tls".to_string()),
        Just("tcp".to_string()),
        Just("unix".to_string()),
        Just("container".to_string()),
        Just("native".to_string()),
        Just("1400".to_string()),
        Just("64Gi".to_string()),
        Just("2".to_string()),
        Just("500m".to_string()),
        Just("build,svc-0,nope".to_string()),
        Just("docker:27-dind".to_string()),
        Just("evil/image".to_string()),
        Just("gitlab".to_string()),
        Just("off".to_string()),
        Just("/builds,-/certs".to_string()),
        Just("-/builds".to_string()),
        ".{0,40}",
    ]
}

fn annotation_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("image"),
        Just("transport"),
        Just("containers"),
        Just("cpu"),
        Just("memory"),
        Just("storage"),
        Just("mtu"),
        Just("sidecar-mode"),
        Just("runner"),
        Just("inject"),
        Just("workspace"),
    ]
    .prop_map(|k| format!("dind-injector.io/{k}"))
}

/// A generated container: name, env, mounts (volume index, path), image.
type GenContainer = (String, Vec<(String, Option<String>)>, Vec<(usize, String)>, Option<String>);

fn container() -> impl Strategy<Value = GenContainer> {
    (
        name(),
        prop::collection::vec(env_entry(), 0..4),
        prop::collection::vec((0usize..8, mount_path()), 0..3),
        prop::option::of(prop_oneof![Just("golang:1.23".to_string()), Just("docker:27-cli".to_string()), Just("docker:dind".to_string()),]),
    )
}

prop_compose! {
    fn pod()(
        containers in prop::collection::vec(container(), 1..6),
        inits in prop::collection::vec(container(), 0..3),
        volumes in prop::collection::vec(volume_name(), 0..6),
        kinds in prop::collection::vec(0usize..6, 6),
        run_as in prop::option::of((0i64..3, prop::option::of(0i64..3))),
        annotations in prop::collection::vec((annotation_key(), annotation_value()), 0..5),
        runner_label in prop_oneof![
            Just(None),
            Just(Some(("job.runner.gitlab.com/pod", "p"))),
            Just(Some(("buildkite.com/job-uuid", "u"))),
            Just(Some(("pipelineExecutionID", "e"))),
        ],
        fs_group in prop::option::of(0i64..70000),
        with_aliases in any::<bool>(),
        with_token in any::<bool>(),
    ) -> Value {
        let mut vol_names: Vec<String> = Vec::new();
        for v in volumes { if !vol_names.contains(&v) { vol_names.push(v); } }
        let mut used_names: Vec<String> = Vec::new();
        let mut build = |list: Vec<GenContainer>| -> Vec<Value> {
            let mut out = Vec::new();
            for (n, env, mounts, image) in list {
                if used_names.contains(&n) { continue; }
                used_names.push(n.clone());
                let mut env_names: Vec<String> = Vec::new();
                let env: Vec<Value> = env.into_iter().filter(|(k, _)| { let fresh = !env_names.contains(k); if fresh { env_names.push(k.clone()); } fresh })
                    .map(|(k, v)| match v { Some(v) => json!({"name": k, "value": v}), None => json!({"name": k}) }).collect();
                let mut paths: Vec<String> = Vec::new();
                let mounts: Vec<Value> = mounts.into_iter().filter_map(|(i, p)| {
                    let vol = vol_names.get(i % vol_names.len().max(1))?.clone();
                    if paths.contains(&p) { return None; }
                    paths.push(p.clone());
                    Some(json!({"name": vol, "mountPath": p}))
                }).collect();
                let mut c = json!({"name": n, "image": image.unwrap_or_else(|| "alpine:3".into())});
                if !env.is_empty() { c["env"] = Value::Array(env); }
                if !mounts.is_empty() { c["volumeMounts"] = Value::Array(mounts); }
                out.push(c);
            }
            out
        };
        let containers = build(containers);
        let inits = build(inits);
        let mut ann = serde_json::Map::new();
        ann.insert("dind-injector.io/inject".into(), "true".into());
        for (k, v) in annotations { ann.insert(k, v.into()); }
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ci", "annotations": ann},
            "spec": {"containers": containers},
        });
        if let Some((k, v)) = runner_label { pod["metadata"]["labels"] = json!({k: v}); }
        if !inits.is_empty() { pod["spec"]["initContainers"] = Value::Array(inits); }
        let source = |k: usize| match k {
            1 => json!({"secret": {"secretName": "s"}}),
            2 => json!({"hostPath": {"path": "/srv"}}),
            3 => json!({"persistentVolumeClaim": {"claimName": "c"}}),
            4 => json!({"projected": {"sources": []}}),
            _ => json!({"emptyDir": {}}),
        };
        if !vol_names.is_empty() {
            pod["spec"]["volumes"] = vol_names.iter().enumerate().map(|(i, v)| {
                let mut vol = source(kinds[i % kinds.len()]);
                vol["name"] = json!(v);
                vol
            }).collect();
        }
        if let Some(g) = fs_group { pod["spec"]["securityContext"] = json!({"fsGroup": g}); }
        if let Some((user, group)) = run_as
            && let Some(c) = pod["spec"]["containers"].as_array_mut().and_then(|cs| cs.first_mut()) {
                c["securityContext"] = json!({"runAsUser": user * 1000});
                if let Some(g) = group { c["securityContext"]["runAsGroup"] = json!(g * 1000); }
            }
        if with_aliases { pod["spec"]["hostAliases"] = json!([{"ip": "127.0.0.1", "hostnames": ["postgres"]}]); }
        if with_token {
            // What the apiserver's ServiceAccount plugin adds before the webhook is called.
            let token = json!({"name": "kube-api-access-x7k2p", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}});
            match pod["spec"]["volumes"].as_array_mut() { Some(v) => v.push(token), None => pod["spec"]["volumes"] = json!([token]) }
            pod = support::apiserver::after_mutation(&pod).pod;
        }
        pod
    }
}

fn any_config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![Just(SidecarMode::Native), Just(SidecarMode::Container), Just(SidecarMode::Auto)],
        prop_oneof![Just(Transport::Unix), Just(Transport::TcpTls), Just(Transport::Tcp)],
    )
        .prop_map(|(mode, transport)| {
            let mut c = Config::default();
            c.sidecar.mode = mode;
            c.sidecar.transport = transport;
            c
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn injection_is_valid_and_idempotent(pod in pod(), config in any_config()) {
        prop_assume!(structural_problems(&typed(&pod)).is_empty());
        let ns = NamespaceView::opted_in("ci");
        let decision = inject::plan_injection(&typed(&pod), &ns, &config, &ClusterInfo::default());
        // The webhook reads pods with the lean decoder: the same decision as from the full one.
        let lean = dind_injector::pod::from_value(&pod).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let from_lean = inject::plan_injection(&lean, &ns, &config, &ClusterInfo::default());
        prop_assert_eq!(format!("{decision:?}"), format!("{from_lean:?}"));
        match &decision.outcome {
            Outcome::Inject(injection) => {
                let patched = apply(&pod, &injection.patch);
                let typed_patched = typed(&patched);
                let problems = structural_problems(&typed_patched);
                prop_assert!(problems.is_empty(), "{problems:?}\n{}", serde_json::to_string_pretty(&patched).unwrap_or_default());
                let status = typed_patched.metadata.annotations.as_ref()
                    .and_then(|a| a.get("dind-injector.io/status"))
                    .and_then(|s| InjectionStatus::parse(s));
                prop_assert!(status.is_some());
                let status = status.unwrap_or_else(|| unreachable!());
                prop_assert!(!status.targets.is_empty());
                let with_host = docker_host_containers(&typed_patched);
                for t in &status.targets {
                    prop_assert!(with_host.contains(t), "target {t} has no DOCKER_HOST");
                }
                let again = inject::plan_injection(&typed_patched, &ns, &config, &ClusterInfo::default());
                prop_assert!(matches!(again.outcome, Outcome::Skip(SkipReason::AlreadyInjected)));
                check_the_jobs_world(&typed_patched, &status, injection)?;

                // As the apiserver stores it, the pod keeps its sidecar's exemption, and the
                // sidecar holds no API token.
                let stored = support::apiserver::after_mutation(&patched);
                prop_assert!(stored.warnings.is_empty(), "{:?}", stored.warnings);
                let stored_pod = typed(&stored.pod);
                let verdict = dind_injector::policy::validate_pod(&stored_pod, &ns, &config, &ClusterInfo::default());
                prop_assert_eq!(verdict.exempt.as_deref(), Some(status.container.as_str()), "{:?}", verdict.lines());
                prop_assert!(verdict.findings.is_empty(), "{:?}", verdict.lines());
                let spec = stored_pod.spec.unwrap_or_default();
                let sidecar = spec.init_containers.iter().flatten().chain(spec.containers.iter()).find(|c| c.name == status.container);
                let token_volumes: Vec<&str> = spec.volumes.iter().flatten().filter(|v| v.projected.is_some()).map(|v| v.name.as_str()).collect();
                let token_mounts = sidecar.and_then(|c| c.volume_mounts.as_ref()).into_iter().flatten()
                    .filter(|m| token_volumes.contains(&m.name.as_str())).count();
                prop_assert_eq!(token_mounts, 0);
            }
            Outcome::Skip(reason) => {
                prop_assert!(!reason.label().is_empty());
                prop_assert!(!reason.warns() || !decision.warnings.is_empty());
            }
        }
    }

    #[test]
    fn webhook_answers_any_body_without_panicking(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let cfg = Config::default();
        let ns = StaticNamespaces::default();
        let cluster = ClusterInfo::default();
        let out = webhook::mutate(&body, ReviewContext { config: &cfg, namespaces: &ns, cluster: &cluster });
        prop_assert!(out.http_status == 400 || out.http_status == 200);
        let v: Value = serde_json::from_slice(&out.body).unwrap_or_default();
        prop_assert_eq!(&v["kind"], "AdmissionReview");
    }

    #[test]
    fn webhook_answers_mangled_reviews_with_the_uid(pod in pod(), junk in "[\\[\\]{}\",:a-z0-9]{0,12}", cut in 0usize..2000) {
        // Mangle only the object, so the uid stays readable.
        let mut object = serde_json::to_string(&pod).unwrap_or_default();
        let at = cut.min(object.len());
        if object.is_char_boundary(at) { object.insert_str(at, &junk); }
        let text = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u-1","kind":{{"group":"","version":"v1","kind":"Pod"}},"operation":"CREATE","namespace":"ci","object":{object}}}}}"#
        );
        let cfg = Config::default();
        let ns = StaticNamespaces::new(NamespaceView::opted_in("ci").labels, Default::default());
        let cluster = ClusterInfo::default();
        let out = webhook::mutate(text.as_bytes(), ReviewContext { config: &cfg, namespaces: &ns, cluster: &cluster });
        let v: Value = serde_json::from_slice(&out.body).unwrap_or_default();
        prop_assert_eq!(&v["kind"], "AdmissionReview", "{}", text);
        if out.http_status == 200 {
            prop_assert_eq!(&v["response"]["uid"], "u-1");
        } else {
            // Not a review at all (the junk broke the JSON): refused as a bad request, saying why.
            prop_assert_eq!(out.http_status, 400, "{}", text);
            prop_assert_eq!(&v["response"]["allowed"], false, "{}", v);
            prop_assert_eq!(&v["response"]["status"]["code"], 400, "{}", v);
            prop_assert!(v["response"]["status"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", v);
        }
        // Whenever the body is JSON the uid can be read, and the answer carries it, whatever it is.
        if serde_json::from_str::<Value>(&text).is_ok() {
            prop_assert_eq!(&v["response"]["uid"], "u-1", "{}", text);
        }
    }
}

fn overlaps(a: &str, b: &str) -> bool {
    let parts = |p: &str| p.split('/').filter(|c| !c.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    let (a, b) = (parts(a), parts(b));
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// The sidecar sees the job's workspace and nothing else of the job's; its own socket is private;
/// TCP is on 127.0.0.1 only; TLS certificates are where each job's DOCKER_CERT_PATH says.
fn check_the_jobs_world(
    pod: &k8s_openapi::api::core::v1::Pod,
    status: &InjectionStatus,
    injection: &inject::Injection,
) -> Result<(), TestCaseError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let sidecar = &injection.sidecar;
    let args = sidecar.args.clone().unwrap_or_default();
    prop_assert_eq!(args.iter().filter(|a| *a == "--host=unix:///var/run/docker.sock").count(), 1, "{:?}", args);
    for host in args.iter().filter_map(|a| a.strip_prefix("--host=tcp://")) {
        prop_assert!(host.starts_with("127.0.0.1:"), "{host}");
    }
    let own: Vec<String> =
        sidecar.volume_mounts.iter().flatten().filter(|m| status.volumes.contains(&m.name)).map(|m| m.mount_path.clone()).collect();
    for m in sidecar.volume_mounts.iter().flatten().filter(|m| !status.volumes.contains(&m.name)) {
        let recorded = status.mirrored.iter().any(|r| r.volume == m.name && r.path == m.mount_path && r.sub_path == m.sub_path);
        prop_assert!(recorded, "sidecar mount {} at {} not recorded", m.name, m.mount_path);
        let v = spec.volumes.iter().flatten().find(|v| v.name == m.name).cloned().unwrap_or_default();
        prop_assert!(v.empty_dir.is_some() || v.ephemeral.is_some() || v.persistent_volume_claim.is_some(), "{} mirrored", m.name);
        let by_target = spec
            .containers
            .iter()
            .filter(|c| status.targets.contains(&c.name))
            .any(|c| c.volume_mounts.iter().flatten().any(|j| j.name == m.name && j.mount_path.trim_end_matches('/') == m.mount_path));
        prop_assert!(by_target, "{} at {} is no target's mount", m.name, m.mount_path);
        for r in own.iter().map(String::as_str).chain([
            "/var/run",
            "/var/lib/docker",
            "/etc/docker",
            "/var/run/secrets/kubernetes.io/serviceaccount",
        ]) {
            prop_assert!(!overlaps(r, &m.mount_path), "{} overlaps {r}", m.mount_path);
        }
    }
    if injection.settings.transport == Transport::TcpTls {
        for c in spec.containers.iter().filter(|c| status.targets.contains(&c.name)) {
            let certs = c.volume_mounts.iter().flatten().find(|m| m.sub_path.as_deref() == Some("client")).map(|m| m.mount_path.clone());
            let cert_path = c
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "DOCKER_CERT_PATH")
                .and_then(|e| e.value.clone())
                .filter(|p| p.starts_with('/') && p.len() > 1 && !p.contains(".."));
            if let (Some(certs), Some(path)) = (certs, cert_path) {
                prop_assert_eq!(certs, path.trim().trim_end_matches('/'));
            }
        }
    }
    Ok(())
}
