//! The offline command line, run as a user would: `inject`, `explain`, `check-config`, `version`.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use support::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dind-injector"))
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start dind-injector: {e}"));
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(yaml).unwrap_or_else(|e| panic!("output is not YAML: {e}\n{yaml}"))
}

const WORKLOADS: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: build, namespace: ci}
spec:
  template:
    metadata:
      annotations: {dind-injector.io/inject: "true"}
    spec:
      restartPolicy: Never
      containers:
      - {name: build, image: docker:27-cli, command: [docker, build, .]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {dind-injector.io/inject: "true", dind-injector.io/transport: tcp-tls}
        spec:
          restartPolicy: Never
          containers:
          - {name: build, image: docker:27-cli}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: not-annotated}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers:
      - {name: web, image: nginx}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: untouched}
data: {a: b}
"#;

#[test]
fn inject_handles_pods_and_every_workload_template_in_multi_document_yaml() {
    let out = run_with_stdin(&["inject", "-f", "-"], WORKLOADS);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let docs = docs(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(docs.len(), 4, "every document comes out, in order");

    let job_pod = &docs[0]["spec"]["template"];
    assert_eq!(job_pod["spec"]["initContainers"][0]["name"], "dind");
    assert_eq!(job_pod["spec"]["containers"][0]["env"][0]["name"], "DOCKER_HOST");
    let cron_pod = &docs[1]["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(cron_pod["spec"]["containers"][0]["env"][0]["value"], "tcp://127.0.0.1:2376");
    assert!(docs[2]["spec"]["template"]["spec"].get("initContainers").is_none());
    assert_eq!(docs[3]["data"]["a"], "b");

    assert!(stderr.contains("Job/build (pod template): injected"), "{stderr}");
    assert!(stderr.contains("Deployment/not-annotated (pod template): not injected (not-annotated)"), "{stderr}");
}

#[test]
fn inject_output_of_each_runner_pod_is_a_valid_pod() {
    for fixture in INJECTED_FIXTURES {
        let path = fixtures_dir().join(format!("pods/{fixture}.json"));
        let out = bin().args(["inject", "-f"]).arg(&path).output().unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{fixture}: {}", String::from_utf8_lossy(&out.stderr));
        let docs = docs(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(docs.len(), 1);
        assert_structurally_valid(&docs[0]);
        assert!(!docs_of_status(&docs[0]).is_empty(), "{fixture}: no status annotation");
    }
}

fn docs_of_status(pod: &Value) -> String {
    pod["metadata"]["annotations"]["dind-injector.io/status"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn namespace_stand_ins_change_the_decision() {
    let path = fixtures_dir().join("pods/gitlab.json");
    let out = bin()
        .args(["explain", "--namespace-labels", "pod-security.kubernetes.io/enforce=privileged", "-f"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("decision:   not injected"), "{text}");
    assert!(text.contains("kubectl label namespace"), "{text}");
}

#[test]
fn explain_says_what_would_be_added_and_why_not() {
    let out = bin().args(["explain", "-f"]).arg(fixtures_dir().join("pods/gitlab.json")).output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "runner:     gitlab",
        "decision:   injected",
        "job containers: build, svc-0",
        "DOCKER_HOST=unix:///var/run/dind/docker.sock",
        "add /spec/initContainers/-",
        "dockerd --host=",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let out = bin().args(["explain", "-f"]).arg(fixtures_dir().join("pods/arc-dind-mode.json")).output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not injected") && text.contains("own-dind"), "{text}");
}

#[test]
fn explain_says_whether_the_validating_webhook_is_called() {
    let plain = "apiVersion: v1\nkind: Pod\nmetadata: {name: cache}\nspec:\n  containers: [{name: app, image: busybox}]\n";
    let privileged = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: app, image: busybox, securityContext: {privileged: true}}]\n";
    let labelled = "apiVersion: v1\nkind: Pod\nmetadata: {name: l, labels: {dind-injector.io/inject: \"true\"}}\nspec:\n  containers: [{name: app, image: busybox}]\n";
    let restricted_ns = "dind-injector.io/injection=enabled,dind-injector.io/pod-security=restricted";
    for (args, pod, expected) in [
        (&[][..], plain, "validating webhook: not sent: nothing in it can break Pod Security baseline"),
        (&[][..], privileged, "validating webhook: sent: container \"app\": securityContext privileged"),
        // Injected by its label: sent for the status annotation the injection wrote.
        (&[][..], labelled, "validating webhook: sent: annotation dind-injector.io/status"),
        (
            &["--namespace-labels", restricted_ns][..],
            plain,
            "validating webhook: sent: the namespace is labelled dind-injector.io/pod-security=restricted",
        ),
        (&["--namespace-labels", "team=a"][..], privileged, "validating webhook: not sent: the namespace is not opted in"),
    ] {
        let mut command = vec!["explain"];
        command.extend_from_slice(args);
        command.extend(["-f", "-"]);
        let out = run_with_stdin(&command, pod);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(expected), "{args:?}: missing {expected:?} in:\n{text}");
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("restricted.yaml");
    std::fs::write(&config, "policy:\n  level: restricted\n").unwrap_or_else(|e| panic!("{e}"));
    let config = config.display().to_string();
    let out = run_with_stdin(&["explain", "--config", &config, "-f", "-"], plain);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not sent") && text.contains("manifests/components/restricted-by-default"), "{text}");
}

#[test]
fn check_config_says_what_is_wrong_and_where() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "sidecar:\n  transport: tcp\n  mtu: 99999\n").unwrap_or_else(|e| panic!("{e}"));
    let out = bin().arg("check-config").arg(&bad).output().unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("sidecar.mtu") && err.contains("99999"), "{err}");

    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, "overrides:\n  maxCPU: 2\n").unwrap_or_else(|e| panic!("{e}"));
    let out = bin().arg("check-config").arg(&typo).output().unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("maxCPU") && err.contains("maxCpu"), "the error names the key and the right spelling: {err}");

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "daemon:\n  registryMirrors: [\"https://mirror.example.com\"]\n").unwrap_or_else(|e| panic!("{e}"));
    let out = bin().args(["check-config", "--print"]).arg(&good).output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("valid") && text.contains("\"registry-mirrors\""), "{text}");

    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/config.example.yaml");
    let out = bin().arg("check-config").arg(&example).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "the shipped example configuration must be valid: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let out = run_with_stdin(&["inject", "-f", "-"], "kind: Pod\nspec: [not, a, spec]\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("document 1") && err.contains("not a valid Pod"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = run_with_stdin(&["inject", "-f", "-"], "a: [unclosed\n");
    assert_eq!(out.status.code(), Some(1));
    let out = bin().args(["inject", "-f", "/nonexistent/file.yaml"]).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/file.yaml"));
}

#[test]
fn version_prints_the_crate_version() {
    let out = bin().arg("version").output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("dind-injector {}", env!("CARGO_PKG_VERSION")));
}

/// Reads YAML the way kubectl does (YAML 1.1, where `yes`, `on`, `0777` and `1e3` are not
/// strings), with PyYAML, and hands back the JSON it means.
fn read_as_yaml_1_1(yaml: &str) -> Value {
    let script = "import json, sys, yaml\njson.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 (with PyYAML, installed by make test-deps) is needed: {e}"));
    if let Some(mut input) = child.stdin.take() {
        input.write_all(yaml.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "PyYAML cannot read the output: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn inject_output_reads_back_unchanged_with_a_yaml_1_1_parser() {
    use dind_injector::inject::{self, ClusterInfo, Outcome};
    use dind_injector::namespace::NamespaceView;
    for fixture in FIXTURES {
        for transport in ["unix", "tcp-tls", "tcp"] {
            let path = fixtures_dir().join(format!("pods/{fixture}.json"));
            let mut pod: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
            pod["metadata"]["annotations"]["dind-injector.io/transport"] = json!(transport);
            let out = run_with_stdin(&["inject", "-f", "-"], &pod.to_string());
            assert!(out.status.success(), "{fixture}: {}", String::from_utf8_lossy(&out.stderr));
            let read = read_as_yaml_1_1(&String::from_utf8_lossy(&out.stdout));

            let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
            let decision =
                inject::plan_injection(&typed(&pod), &NamespaceView::opted_in(namespace), &Default::default(), &ClusterInfo::default());
            let meant = match decision.outcome {
                Outcome::Inject(i) => apply(&pod, &i.patch),
                Outcome::Skip(_) => pod.clone(),
            };
            assert_eq!(read, json!([meant]), "{fixture} {transport}: kubectl would read something else than dind-injector wrote");
        }
    }
    // The GitLab pod has `CI_SERVER: "yes"`: written unquoted, kubectl reads a bool and refuses it.
    let gitlab = std::fs::read_to_string(fixtures_dir().join("pods/gitlab.json")).unwrap_or_default();
    let out = run_with_stdin(&["inject", "-f", "-"], &gitlab);
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("value: \"yes\"") || yaml.contains("value: 'yes'"), "{yaml}");
}

#[test]
fn explain_shows_the_cache_scope_and_path() {
    let pod = fixtures_dir().join("pods/gitlab.json");
    let out = bin().args(["explain", "-f"]).arg(&pod).output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cache:      none (cache.mode off): the daemon starts empty"), "{text}");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("cache.yaml");
    std::fs::write(&config, "cache:\n  mode: node\n  scope: project\n  slotsPerScope: 2\n").unwrap_or_else(|e| panic!("{e}"));
    let out = bin().args(["explain", "--config"]).arg(&config).arg("-f").arg(&pod).output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(
            "cache:      node, scope gitlab-runner/gitlab-42 (hostPath /var/lib/dind-injector/cache/gitlab-runner/gitlab-42), 2 slots"
        ),
        "{text}"
    );
    assert!(text.contains("policy:     level baseline, mode enforce, sidecar \"dind\" exempt: allowed"), "the cache is exempt:\n{text}");
}

#[test]
fn explain_shows_the_isolation_its_runtime_class_and_the_annotations_it_adds() {
    let pod = fixtures_dir().join("pods/gitlab.json");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("kata.yaml");
    std::fs::write(
        &config,
        "sidecar:\n  isolation: kata\nisolation:\n  kata:\n    runtimeClassName: kata-qemu\n    podAnnotations:\n      io.katacontainers.config.hypervisor.default_memory: \"4096\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let explain = |extra: &[&str]| {
        let out =
            bin().args(["explain", "--config"]).arg(&config).args(extra).arg("-f").arg(&pod).output().unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = explain(&[]);
    assert!(text.contains("isolation:  kata: the sidecar is privileged inside the Kata VM"), "{text}");
    assert!(text.contains("runtime class: kata-qemu (not checked here"), "{text}");
    assert!(text.contains("pod annotation: io.katacontainers.config.hypervisor.default_memory: \"4096\""), "{text}");
    // Against the cluster's classes: a missing one is not injected, and the reason names it.
    let text = explain(&["--runtime-classes", "kata,sysbox-runc"]);
    assert!(text.contains("RuntimeClass \"kata-qemu\", which this cluster does not have"), "{text}");
    assert!(text.contains("runtime-class-missing"), "{text}");
}

/// `explain` shows every limit the pod will live under: the data root's sizeLimit, the sidecar's
/// ephemeral-storage (a limit only when the pod's containers have one), memory and CPU; for Kata,
/// the loop disk below the emptyDir's limit.
#[test]
fn explain_shows_every_limit_the_pod_lives_under() {
    let explain = |pod: &std::path::Path, config: Option<&std::path::Path>| {
        let mut cmd = bin();
        cmd.arg("explain");
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let out = cmd.arg("-f").arg(pod).output().unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let fixture = fixtures_dir().join("pods/gitlab.json");
    let text = explain(&fixture, None);
    for expected in [
        "limit:      /var/lib/docker: the emptyDir dind-storage up to 20Gi",
        "limit:      ephemeral-storage: sidecar request 21Gi (the data root 20Gi plus 1Gi for its own layer and logs), no limit: no container of the pod has one",
        "limit:      memory: request 512Mi, limit 4Gi, shared by dockerd and every container the job runs",
        "limit:      cpu: request 500m, limit none",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut pod: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"));
    pod["spec"]["containers"][0]["resources"]["limits"]["ephemeral-storage"] = serde_json::json!("5Gi");
    let bounded = dir.path().join("bounded.json");
    std::fs::write(&bounded, pod.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let text = explain(&bounded, None);
    assert!(
        text.contains("limit:      ephemeral-storage: sidecar request and limit 21Gi (the data root 20Gi plus 1Gi for its own layer and logs); the pod's containers have ephemeral-storage limits"),
        "{text}"
    );

    let config = dir.path().join("kata.yaml");
    std::fs::write(&config, "sidecar:\n  isolation: kata\n  storage: 10Gi\n").unwrap_or_else(|e| panic!("{e}"));
    let text = explain(&fixture, Some(&config));
    assert!(text.contains("limit:      /var/lib/docker: an ext4 disk of 9920 MiB on the emptyDir dind-storage (sizeLimit 10Gi)"), "{text}");
}

/// `explain` for a `userns` pod: what the pod gets, what the cluster needs, and which cgroup mode
/// to expect.
#[test]
fn explain_says_what_userns_needs_and_which_daemon_to_expect() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("userns.yaml");
    std::fs::write(&config, "sidecar:\n  isolation: userns\n").unwrap_or_else(|e| panic!("{e}"));
    let out = bin()
        .args(["explain", "--config"])
        .arg(&config)
        .arg("-f")
        .arg(fixtures_dir().join("pods/gitlab.json"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "isolation:  userns: the pod runs in a user namespace of its own (hostUsers: false, Kubernetes 1.33+)",
        "adds only SYS_ADMIN and NET_ADMIN, procMount Unmasked and seccomp Unconfined",
        "exempts exactly this sidecar only while the pod keeps hostUsers: false",
        "otherwise --rootless, where inner limits are not applied",
        "limit:      inner limits:",
        "add /spec/hostUsers",
        "policy:     level baseline, mode enforce, sidecar \"dind\" exempt: allowed",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
