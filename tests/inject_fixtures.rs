//! The injection decision on each runner's real pod shape: the patch applies, the result is a pod
//! the apiserver would accept, DOCKER_HOST lands in exactly the job containers, the sidecar is
//! where the mode says, and a second pass changes nothing. Golden files hold the whole result.

mod support;

use dind_injector::config::{Config, Mtu, SidecarMode, Transport};
use dind_injector::inject::{self, ClusterInfo, InjectionStatus, Outcome, SkipReason};
use dind_injector::namespace::NamespaceView;
use dind_injector::namespace::StaticNamespaces;
use dind_injector::webhook::{self, ReviewContext};
use serde_json::Value;
use support::*;

fn config(mode: SidecarMode, transport: Transport) -> Config {
    let mut c = Config::default();
    c.sidecar.mode = mode;
    c.sidecar.transport = transport;
    c
}

const MODES: [SidecarMode; 2] = [SidecarMode::Native, SidecarMode::Container];
const TRANSPORTS: [Transport; 3] = [Transport::Unix, Transport::TcpTls, Transport::Tcp];

fn expected_targets(fixture: &str) -> Vec<&'static str> {
    match fixture {
        "gitlab" => vec!["build", "svc-0"],
        "buildkite" => vec!["container-0", "checkout"],
        "harness" => vec!["step-1", "step-2"],
        _ => vec![],
    }
}

fn inject(pod: &Value, config: &Config) -> (Value, inject::Decision) {
    let ns = NamespaceView::opted_in("ci");
    let decision = inject::plan_injection(&typed(pod), &ns, config, &ClusterInfo::default());
    let patched = match &decision.outcome {
        Outcome::Inject(i) => apply(pod, &i.patch),
        Outcome::Skip(r) => panic!("not injected: {}", r.message()),
    };
    (patched, decision)
}

#[test]
fn every_runner_fixture_is_injected_correctly_in_every_mode_and_transport() {
    for fixture in INJECTED_FIXTURES {
        for mode in MODES {
            for transport in TRANSPORTS {
                let what = format!("{fixture} {mode:?} {transport:?}");
                let cfg = config(mode, transport);
                let pod = review_pod(fixture);
                let (patched, decision) = inject(&pod, &cfg);
                assert_structurally_valid(&patched);
                let typed_pod = typed(&patched);
                let spec = typed_pod.spec.clone().unwrap_or_default();

                let mut got = docker_host_containers(&typed_pod);
                got.sort();
                let mut want = expected_targets(fixture);
                want.sort();
                assert_eq!(got, want, "{what}: DOCKER_HOST in the wrong containers");

                let expected_host = inject::sidecar::docker_host(transport, &cfg);
                for t in expected_targets(fixture) {
                    assert_eq!(env_of(&typed_pod, t, "DOCKER_HOST").as_deref(), Some(expected_host.as_str()), "{what}: {t}");
                    let tls = env_of(&typed_pod, t, "DOCKER_TLS_VERIFY");
                    assert_eq!(tls.is_some(), transport == Transport::TcpTls, "{what}: {t} DOCKER_TLS_VERIFY");
                }

                let status_text = typed_pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("dind-injector.io/status"))
                    .cloned()
                    .unwrap_or_else(|| panic!("{what}: no status annotation"));
                let status = InjectionStatus::parse(&status_text).unwrap_or_else(|| panic!("{what}: bad status {status_text}"));
                assert_eq!(status.transport, transport.as_str());
                assert_eq!(status.mode, mode.as_str());

                let inits = spec.init_containers.clone().unwrap_or_default();
                match mode {
                    SidecarMode::Native => {
                        let original_inits = typed(&pod).spec.and_then(|s| s.init_containers).map_or(0, |v| v.len());
                        assert_eq!(inits.len(), original_inits + 1, "{what}");
                        let last = inits.last().unwrap_or_else(|| panic!("{what}: no init containers"));
                        assert_eq!(last.name, status.container, "{what}: sidecar must come after the runner's init containers");
                        assert_eq!(last.restart_policy.as_deref(), Some("Always"));
                        let probe =
                            last.startup_probe.as_ref().and_then(|p| p.exec.as_ref()).and_then(|e| e.command.clone()).unwrap_or_default();
                        assert_eq!(probe.first().map(String::as_str), Some("docker"));
                        assert_eq!(probe.last().map(String::as_str), Some("info"));
                    }
                    _ => {
                        assert_eq!(spec.containers[0].name, status.container, "{what}: container-mode sidecar first");
                        assert!(spec.containers[0].lifecycle.as_ref().and_then(|l| l.post_start.as_ref()).is_some());
                        assert!(inits.iter().all(|c| c.name != status.container));
                    }
                }
                let sidecar = spec
                    .init_containers
                    .iter()
                    .flatten()
                    .chain(spec.containers.iter())
                    .find(|c| c.name == status.container)
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(sidecar.security_context.as_ref().and_then(|s| s.privileged), Some(true));
                let args = sidecar.args.clone().unwrap_or_default();
                assert_eq!(args.first().map(String::as_str), Some("dockerd"), "{what}: dockerd must be started explicitly");
                assert!(args.iter().any(|a| a.starts_with("--host=")), "{what}");
                assert!(
                    !args.iter().chain(sidecar.command.iter().flatten()).any(|a| a.contains("0.0.0.0")),
                    "{what}: never listen on all interfaces"
                );
                let storage = spec.volumes.iter().flatten().find(|v| v.name == status.volumes[0]).and_then(|v| v.empty_dir.clone());
                assert_eq!(storage.and_then(|e| e.size_limit).map(|q| q.0).as_deref(), Some("20Gi"), "{what}");
                let daemon_cfg =
                    spec.volumes.iter().flatten().find(|v| v.config_map.is_some()).and_then(|v| v.config_map.clone()).unwrap_or_default();
                assert_eq!(daemon_cfg.optional, Some(true));
                assert_eq!(daemon_cfg.name, "dind-injector-daemon-config");

                let has_alias =
                    spec.host_aliases.iter().flatten().any(|a| a.ip == "127.0.0.1" && a.hostnames.iter().flatten().any(|h| h == "docker"));
                assert_eq!(has_alias, transport != Transport::Unix, "{what}: docker host alias");

                // A second pass (reinvocation) changes nothing and says nothing.
                let ns = NamespaceView::opted_in("ci");
                let again = inject::plan_injection(&typed_pod, &ns, &cfg, &ClusterInfo::default());
                assert!(matches!(again.outcome, Outcome::Skip(SkipReason::AlreadyInjected)), "{what}: second pass must not inject");
                assert!(again.warnings.is_empty(), "{what}: {:?}", again.warnings);
                // Only a Job's pod in container mode is warned: it would never complete.
                let job_warning = fixture == "buildkite" && mode == SidecarMode::Container;
                assert_eq!(decision.warnings.len(), usize::from(job_warning), "{what}: {:?}", decision.warnings);
                if job_warning {
                    assert!(decision.warnings[0].contains("will not complete"), "{what}");
                }
            }
        }
    }
}

#[test]
fn arc_pod_with_its_own_dind_is_skipped_with_the_reason() {
    let pod = review_pod("arc-dind-mode");
    let d = inject::plan_injection(&typed(&pod), &NamespaceView::opted_in("arc"), &Config::default(), &ClusterInfo::default());
    assert!(matches!(&d.outcome, Outcome::Skip(SkipReason::OwnDaemon { container }) if container == "dind"), "{:?}", d.outcome);
    assert_eq!(d.warnings.len(), 1);
    assert!(d.warnings[0].contains("already runs its own Docker daemon") && d.warnings[0].contains("\"dind\""), "{}", d.warnings[0]);
}

#[test]
fn webhook_reviews_of_patched_pods_return_no_patch() {
    let cfg = Config::default();
    let namespaces = StaticNamespaces::new(NamespaceView::opted_in("x").labels, Default::default());
    let cluster = ClusterInfo::default();
    let ctx = ReviewContext { config: &cfg, namespaces: &namespaces, cluster: &cluster };
    for fixture in FIXTURES {
        let mut review = review(fixture);
        let first = webhook::mutate(&serde_json::to_vec(&review).unwrap_or_default(), ctx);
        let answer: Value = serde_json::from_slice(&first.body).unwrap_or_default();
        assert_eq!(first.http_status, 200);
        assert_eq!(answer["response"]["uid"], review["request"]["uid"], "{fixture}");
        assert_eq!(answer["response"]["allowed"], true);
        let Some(patch_b64) = answer["response"]["patch"].as_str() else {
            assert_eq!(fixture, "arc-dind-mode", "{fixture} got no patch");
            assert_eq!(first.log.reason, "own-dind");
            continue;
        };
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(patch_b64).unwrap_or_default();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        let patched = apply_ops(&review["request"]["object"], &patch);
        review["request"]["object"] = patched;
        let second = webhook::mutate(&serde_json::to_vec(&review).unwrap_or_default(), ctx);
        let answer: Value = serde_json::from_slice(&second.body).unwrap_or_default();
        assert!(answer["response"].get("patch").is_none(), "{fixture}: reinvocation produced a patch");
        assert_eq!(second.log.reason, "already-injected");
    }
}

#[test]
fn golden_files_hold_the_whole_injected_pod() {
    // Only `UPDATE_GOLDEN=1` (what `make golden` sets) rewrites the files: any other value left in
    // the environment (`UPDATE_GOLDEN=0`, an empty one) must not turn the comparison off.
    let update = match std::env::var("UPDATE_GOLDEN") {
        Ok(v) if v == "1" => true,
        Ok(v) if v.is_empty() || v == "0" => false,
        Err(std::env::VarError::NotPresent) => false,
        other => panic!("UPDATE_GOLDEN={other:?}: only UPDATE_GOLDEN=1 (`make golden`) rewrites tests/golden/; unset it to compare"),
    };
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut stale = Vec::new();
    for fixture in INJECTED_FIXTURES {
        for transport in TRANSPORTS {
            let (patched, _) = inject(&review_pod(fixture), &config(SidecarMode::Native, transport));
            let text = serde_json::to_string_pretty(&patched).unwrap_or_default() + "\n";
            let path = dir.join(format!("{fixture}-{}.json", transport.as_str()));
            if update {
                std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(stale.is_empty(), "injected output changed; review the diff and run `make golden` to accept it: {stale:#?}");
}

#[test]
fn overrides_and_collisions_behave() {
    // The pod already uses our names; a user DOCKER_HOST that points elsewhere is kept and warned about.
    let mut pod = review_pod("gitlab");
    if let Some(v) = pod["spec"]["volumes"].as_array_mut() {
        v.push(serde_json::json!({"name": "dind-storage", "emptyDir": {}}))
    }
    if let Some(v) = pod["spec"]["containers"].as_array_mut() {
        v.push(serde_json::json!({"name": "dind", "image": "busybox"}))
    }
    if let Some(v) = pod["spec"]["containers"][0]["env"].as_array_mut() {
        v.push(serde_json::json!({"name": "DOCKER_HOST", "value": "tcp://dind:2375"}))
    }
    pod["metadata"]["annotations"]["dind-injector.io/memory"] = "99Gi".into();
    pod["metadata"]["annotations"]["dind-injector.io/mtu"] = "1400".into();
    let (patched, decision) = inject(&pod, &Config::default());
    assert_structurally_valid(&patched);
    let p = typed(&patched);
    assert_eq!(env_of(&p, "build", "DOCKER_HOST").as_deref(), Some("tcp://dind:2375"), "user value must never be overwritten");
    assert!(decision.warnings.iter().any(|w| w.contains("DOCKER_HOST") && w.contains("build")), "{:?}", decision.warnings);
    assert!(decision.warnings.iter().any(|w| w.contains("overrides.maxMemory")), "{:?}", decision.warnings);
    let Outcome::Inject(i) = decision.outcome else { panic!("not injected") };
    assert_eq!(i.status.container, "dind-2");
    assert!(i.status.volumes.contains(&"dind-storage-2".to_string()), "{:?}", i.status.volumes);
    assert_eq!(i.settings.mtu, Mtu::Fixed(1400));
    assert!(i.sidecar.args.iter().flatten().any(|a| a == "--mtu=1400"));
}

#[test]
fn namespace_gates_are_checked_again_by_the_server() {
    let pod = typed(&review_pod("gitlab"));
    let cfg = Config::default();
    let mut ns = NamespaceView::opted_in("gitlab-runner");
    ns.labels.insert("pod-security.kubernetes.io/enforce".into(), "baseline".into());
    let d = inject::plan_injection(&pod, &ns, &cfg, &ClusterInfo::default());
    assert!(matches!(d.outcome, Outcome::Skip(SkipReason::PodSecurityForbidsPrivileged { .. })));
    assert!(d.warnings[0].contains("pod-security.kubernetes.io/enforce=privileged"), "{}", d.warnings[0]);
    let ns = NamespaceView::new("gitlab-runner", Default::default(), Default::default());
    let d = inject::plan_injection(&pod, &ns, &cfg, &ClusterInfo::default());
    assert!(matches!(d.outcome, Outcome::Skip(SkipReason::NamespaceNotOptedIn(_))));
    assert!(d.warnings[0].contains("kubectl label namespace gitlab-runner dind-injector.io/injection=enabled"), "{}", d.warnings[0]);
}

fn injected_with(pod: &Value, config: &Config) -> (Value, inject::Injection, Vec<String>) {
    let (patched, decision) = inject(pod, config);
    assert_structurally_valid(&patched);
    let Outcome::Inject(i) = decision.outcome else { panic!("not injected") };
    (patched, *i, decision.warnings)
}

fn set_env(pod: &mut Value, container: usize, vars: &[(&str, &str)]) {
    if let Some(env) = pod["spec"]["containers"][container]["env"].as_array_mut() {
        for (k, v) in vars {
            env.push(serde_json::json!({"name": k, "value": v}));
        }
    }
}

fn sidecar_mounts(i: &inject::Injection) -> Vec<(String, String)> {
    i.sidecar.volume_mounts.iter().flatten().map(|m| (m.name.clone(), m.mount_path.clone())).collect()
}

#[test]
fn the_sidecar_mirrors_each_runners_workspace() {
    let table: [(&str, &[(&str, &str)]); 3] = [
        ("gitlab", &[("scripts", "/scripts-42-1234567"), ("logs", "/logs-42-1234567"), ("repo", "/builds")]),
        ("buildkite", &[("workspace", "/workspace")]),
        ("harness", &[("harness", "/harness"), ("addon", "/addon")]),
    ];
    for (fixture, want) in table {
        for transport in TRANSPORTS {
            let (patched, i, warnings) = injected_with(&review_pod(fixture), &config(SidecarMode::Native, transport));
            let mounts = sidecar_mounts(&i);
            for (volume, path) in want {
                assert!(
                    mounts.contains(&(volume.to_string(), path.to_string())),
                    "{fixture} {transport:?}: {volume} at {path} not mirrored: {mounts:?}"
                );
                let m = i.sidecar.volume_mounts.iter().flatten().find(|m| m.mount_path == *path).cloned().unwrap_or_default();
                assert_eq!(m.read_only, None, "{fixture}: mirrored read-write");
            }
            let recorded: Vec<(String, String)> = i.status.mirrored.iter().map(|m| (m.volume.clone(), m.path.clone())).collect();
            let want: Vec<(String, String)> = want.iter().map(|(v, p)| (v.to_string(), p.to_string())).collect();
            assert_eq!(recorded, want, "{fixture} {transport:?}: the status records exactly the mirrored mounts");
            let status = typed(&patched).metadata.annotations.and_then(|a| a.get("dind-injector.io/status").cloned()).unwrap_or_default();
            assert_eq!(InjectionStatus::parse(&status).map(|s| s.mirrored.len()), Some(want.len()));
            assert!(warnings.is_empty(), "{fixture}: {warnings:?}");
        }
    }
}

#[test]
fn workspace_annotation_and_configuration_choose_what_is_mirrored() {
    let mut pod = review_pod("gitlab");
    pod["metadata"]["annotations"]["dind-injector.io/workspace"] = "off".into();
    let (_, i, w) = injected_with(&pod, &Config::default());
    assert!(i.status.mirrored.is_empty() && w.is_empty(), "{w:?}");
    assert!(!i.status.to_annotation().contains("mirrored"));
    assert!(sidecar_mounts(&i).iter().all(|(_, p)| p != "/builds"));

    pod["metadata"]["annotations"]["dind-injector.io/workspace"] = "/builds".into();
    let mut off = Config::default();
    off.sidecar.workspace = dind_injector::config::WorkspaceMirroring::Off;
    let (_, i, _) = injected_with(&review_pod("gitlab"), &off);
    assert!(i.status.mirrored.is_empty(), "sidecar.workspace: off mirrors nothing");
    let (_, i, w) = injected_with(&pod, &off);
    assert_eq!(i.status.mirrored.iter().map(|m| m.path.as_str()).collect::<Vec<_>>(), ["/builds"], "{w:?}");

    pod["metadata"]["annotations"]["dind-injector.io/workspace"] = "-/scripts-42-1234567,-/logs-42-1234567".into();
    let (_, i, _) = injected_with(&pod, &Config::default());
    assert_eq!(i.status.mirrored.iter().map(|m| m.path.as_str()).collect::<Vec<_>>(), ["/builds"]);
}

#[test]
fn what_is_never_mirrored_and_what_collides() {
    let mut pod = review_pod("gitlab");
    if let Some(v) = pod["spec"]["volumes"].as_array_mut() {
        v.push(serde_json::json!({"name": "creds", "secret": {"secretName": "registry"}}));
        v.push(serde_json::json!({"name": "ca", "configMap": {"name": "ca"}}));
        v.push(serde_json::json!({"name": "node", "hostPath": {"path": "/srv"}}));
        v.push(serde_json::json!({"name": "run", "emptyDir": {}}));
        v.push(serde_json::json!({"name": "cache", "persistentVolumeClaim": {"claimName": "cache"}}));
    }
    if let Some(v) = pod["spec"]["containers"][0]["volumeMounts"].as_array_mut() {
        v.push(serde_json::json!({"name": "creds", "mountPath": "/creds"}));
        v.push(serde_json::json!({"name": "ca", "mountPath": "/ca"}));
        v.push(serde_json::json!({"name": "node", "mountPath": "/srv"}));
        v.push(serde_json::json!({"name": "run", "mountPath": "/var/run"}));
        v.push(serde_json::json!({"name": "cache", "mountPath": "/cache", "subPath": "gradle"}));
    }
    let (_, i, w) = injected_with(&pod, &Config::default());
    let mounts = sidecar_mounts(&i);
    for name in ["kube-api-access-7m2xq", "creds", "ca", "node", "run"] {
        assert!(mounts.iter().all(|(n, _)| n != name), "{name} must not reach the sidecar: {mounts:?}");
    }
    let cache = i.sidecar.volume_mounts.iter().flatten().find(|m| m.name == "cache").cloned().unwrap_or_default();
    assert_eq!((cache.mount_path.as_str(), cache.sub_path.as_deref()), ("/cache", Some("gradle")));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("\"build\"") && w[0].contains("/var/run") && w[0].contains("dind-injector.io/workspace: \"-/var/run\""),
        "{}",
        w[0]
    );
}

#[test]
fn the_daemon_answers_on_its_own_socket_in_every_transport() {
    for transport in TRANSPORTS {
        let (_, i, _) = injected_with(&review_pod("gitlab"), &config(SidecarMode::Native, transport));
        let args = i.sidecar.args.clone().unwrap_or_default();
        assert_eq!(args.iter().filter(|a| *a == "--host=unix:///var/run/docker.sock").count(), 1, "{transport:?}: {args:?}");
        assert!(i.volumes.iter().all(|v| v.host_path.is_none()));
        assert!(sidecar_mounts(&i).iter().all(|(_, p)| p != "/var/run" && p != "/var/run/docker.sock"), "the socket stays private");
    }
}

#[test]
fn gitlab_jobs_written_for_the_dind_docs_work_unchanged() {
    // The most common .gitlab-ci.yml: TCP, TLS off.
    let mut pod = review_pod("gitlab");
    set_env(&mut pod, 0, &[("DOCKER_HOST", "tcp://docker:2375"), ("DOCKER_TLS_CERTDIR", ""), ("DOCKER_DRIVER", "overlay2")]);
    let (patched, i, w) = injected_with(&pod, &Config::default());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(i.settings.transport, Transport::Tcp, "the transport follows the job");
    let args = i.sidecar.args.clone().unwrap_or_default();
    assert!(args.contains(&"--host=tcp://127.0.0.1:2375".to_owned()) && args.contains(&"--tls=false".to_owned()), "{args:?}");
    assert!(!args.iter().any(|a| a.contains("0.0.0.0")));
    let p = typed(&patched);
    assert_eq!(env_of(&p, "build", "DOCKER_HOST").as_deref(), Some("tcp://docker:2375"));
    assert_eq!(env_of(&p, "svc-0", "DOCKER_HOST").as_deref(), Some("tcp://127.0.0.1:2375"));
    assert!(
        p.spec
            .and_then(|s| s.host_aliases)
            .unwrap_or_default()
            .iter()
            .any(|a| a.ip == "127.0.0.1" && a.hostnames.iter().flatten().any(|h| h == "docker"))
    );

    // GitLab's documented TLS setup.
    let mut pod = review_pod("gitlab");
    set_env(
        &mut pod,
        0,
        &[
            ("DOCKER_HOST", "tcp://docker:2376"),
            ("DOCKER_TLS_CERTDIR", "/certs"),
            ("DOCKER_CERT_PATH", "/certs/client"),
            ("DOCKER_TLS_VERIFY", "1"),
        ],
    );
    let (patched, i, w) = injected_with(&pod, &Config::default());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(i.settings.transport, Transport::TcpTls);
    let p = typed(&patched);
    let build = p.spec.as_ref().map(|s| s.containers[0].clone()).unwrap_or_default();
    let certs = build.volume_mounts.iter().flatten().find(|m| m.sub_path.as_deref() == Some("client")).cloned().unwrap_or_default();
    assert_eq!((certs.mount_path.as_str(), certs.read_only), ("/certs/client", Some(true)));
    assert_eq!(build.env.iter().flatten().filter(|e| e.name == "DOCKER_CERT_PATH").count(), 1);

    // Only DOCKER_TLS_CERTDIR: the certificates go to $DOCKER_TLS_CERTDIR/client, and the client is told.
    let mut pod = review_pod("gitlab");
    set_env(&mut pod, 0, &[("DOCKER_HOST", "tcp://docker:2376"), ("DOCKER_TLS_CERTDIR", "/tls")]);
    let (patched, _, w) = injected_with(&pod, &Config::default());
    assert!(w.is_empty(), "{w:?}");
    let p = typed(&patched);
    assert_eq!(env_of(&p, "build", "DOCKER_CERT_PATH").as_deref(), Some("/tls/client"));
    assert_eq!(env_of(&p, "svc-0", "DOCKER_CERT_PATH").as_deref(), Some("/certs/client"));
    assert_eq!(env_of(&p, "build", "DOCKER_TLS_VERIFY").as_deref(), Some("1"));

    // The transport annotation chose unix: plain TCP is served beside the socket.
    let mut pod = review_pod("gitlab");
    set_env(&mut pod, 0, &[("DOCKER_HOST", "tcp://localhost:2375")]);
    pod["metadata"]["annotations"]["dind-injector.io/transport"] = "unix".into();
    let (patched, i, w) = injected_with(&pod, &Config::default());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(i.settings.transport, Transport::Unix);
    assert!(i.sidecar.args.iter().flatten().any(|a| a == "--host=tcp://127.0.0.1:2375"));
    assert_eq!(env_of(&typed(&patched), "svc-0", "DOCKER_HOST").as_deref(), Some("unix:///var/run/dind/docker.sock"));
}

#[test]
fn a_non_root_job_without_fs_group_can_use_the_socket_or_is_told_the_fix() {
    let mut pod = review_pod("gitlab");
    pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = 1000.into();
    pod["spec"]["containers"][0]["securityContext"]["runAsGroup"] = 1000.into();
    let (_, i, w) = injected_with(&pod, &Config::default());
    assert!(w.is_empty(), "{w:?}");
    assert!(i.sidecar.args.iter().flatten().any(|a| a == "--group=1000"), "{:?}", i.sidecar.args);

    let mut pod = review_pod("gitlab");
    pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = 1000.into();
    let (_, i, w) = injected_with(&pod, &Config::default());
    assert!(i.sidecar.args.iter().flatten().any(|a| a == "--group=0"));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("\"build\"") && w[0].contains("fsGroup: 1000"), "{}", w[0]);

    pod["spec"]["securityContext"] = serde_json::json!({"fsGroup": 2000});
    let (_, i, w) = injected_with(&pod, &Config::default());
    assert!(w.is_empty() && i.sidecar.args.iter().flatten().any(|a| a == "--group=2000"), "{w:?}");
}
