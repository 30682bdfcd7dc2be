//! CI jobs against the injected daemon, in pod-shaped sandboxes on a real container engine.
//!
//! Each test takes a runner's fixture pod (tests/fixtures/reviews), injects it with the library
//! (`plan_injection`, then the JSON patch applied as the apiserver would), and runs the result
//! on the test engine (scripts/test-engine.sh: Debian's dockerd, started by the tests if it is
//! not running) with the images of scripts/test-images.sh (built offline from Debian packages,
//! once per recipe). Then short job scripts, the kind users write, run in the job container and
//! their output is asserted.
//!
//! What stands in for the pod (tests/support/engine.rs):
//! - the sidecar and the job container are separate containers; a pause container owns the one
//!   network namespace (eth0 on an `--internal` network the test creates, MTU 1400, no default
//!   route: nothing routes off this machine) and the pod's hostAliases (`--add-host`, so `docker -> 127.0.0.1`); the others join it with
//!   `--network container:` (and its IPC namespace);
//! - every volume is a host directory bind-mounted where each container mounts it, `subPath`
//!   and `readOnly` honoured; emptyDirs are mode 0777 (with `fsGroup`: that group and setgid, as
//!   the kubelet does); the daemon.json ConfigMap is a directory holding daemon.json;
//! - the sidecar runs its command, args, env, mounts and user exactly as injected; only the image
//!   is a local one (`dind`: Debian's docker.io with an entrypoint behaving as docker:dind's does
//!   for an explicit `dockerd ...`), and the image name the injector was given says the version
//!   of dockerd in it, so it picks the flags that version understands;
//! - `privileged: true` is `--privileged`, or, where this machine's capability bounding set lacks
//!   a capability (runc then refuses `--privileged`), every capability the host has with no
//!   seccomp, AppArmor or masked paths and every device allowed (see `privileged_flags`);
//! - kubelet ordering: the job container starts only once the sidecar's startupProbe (native
//!   sidecar) or its postStart hook (container mode) succeeded, each run with `docker exec`;
//! - job scripts run with `docker exec` in the job container, with that container's env and user
//!   (GitLab's runner execs its scripts into `build` the same way);
//! - no registry: the images a job uses (`busybox`, `docker:cli`) are loaded into the nested
//!   daemon during setup, standing in for a pull.
//!
//! The nested daemon makes its bridge and NAT rules inside the pod's network namespace with
//! iptables' nf_tables backend (Debian's default; this kernel has nf_tables, and the test
//! image's entrypoint falls back to the legacy backend where it is missing, as docker:dind
//! does); each test prints the backend it got.
//!
//! Cost: building the images takes about 75 s once per recipe (debootstrap); then the 13 pods
//! here take about 45 s, two at a time.
//!
//! What does not: no kubelet, no CNI (the engine's bridge stands in for the pod network), no
//! apiserver defaults beyond the fixtures, no service-account token semantics (a
//! stand-in file), no resource limits or sizeLimit enforcement, no UTS sharing, and the runner's
//! own processes in the job container (agent, helper, tini) are not run: it sleeps while scripts
//! are exec'd into it. Other containers of the pod (services, the helper, the agent) are not
//! started.
//!
//! Needs root, Debian's docker.io and debootstrap (`make test-deps` installs them). Without them
//! the tests say so and skip, unless `DIND_INJECTOR_REQUIRE_DOCKERD=1` (set by `make test`).

#[path = "support/engine.rs"]
mod engine;
#[path = "support/podman.rs"]
mod podman;
mod support;

use std::time::Instant;

use dind_injector::config::Config;
use dind_injector::inject::{self, ClusterInfo, Outcome};
use dind_injector::namespace::NamespaceView;
use engine::{Engine, Sandbox, engine_or_skip};
use serde_json::json;
use support::*;

/// One pod: a fixture, how it is opted in, and what its job container already says.
struct Pod {
    fixture: &'static str,
    /// The job container the scripts run in.
    job: &'static str,
    /// Where the job works (what the runner cds into).
    workdir: &'static str,
    annotations: &'static [(&'static str, &'static str)],
    /// Env the job container already had before injection (a `.gitlab-ci.yml`'s variables).
    job_env: &'static [(&'static str, &'static str)],
    /// `runAsUser` and `runAsGroup` of the job container, and the pod's `fsGroup`.
    run_as: Option<(i64, Option<i64>, Option<i64>)>,
    /// With `cache.mode: node`, on the node directory every cached pod of this run shares (so
    /// the later ones take a warm slot).
    cache: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    /// The daemon answers with the injected daemon.json (the registry mirror).
    Info,
    /// `docker build` of a context in the workspace, then `docker run` of the result.
    Build,
    /// `docker run -v "$PWD":/src`: reads what the job wrote, writes what the job reads.
    BindWorkspace,
    /// docker-compose with a relative bind mount.
    Compose,
    /// `docker run -v /var/run/docker.sock:/var/run/docker.sock docker:cli docker image ls`.
    Scanner,
    /// `docker run -d -p 8080:80 busybox httpd`, then `curl localhost:8080` from the job.
    PublishedPort,
    /// The TLS port refuses a client without the certificate.
    TlsRefusesStrangers,
    /// `mtu: auto`: nested containers and new networks get the pod interface's MTU.
    Mtu,
    /// The control: with mirroring turned off, the daemon does not see the workspace (the
    /// failure issue 9 reported), so `BindWorkspace` passing elsewhere means something.
    WorkspaceNotMirrored,
}

use Scenario::*;

const ALL: &[Scenario] = &[Info, Build, BindWorkspace, Compose, Scanner, PublishedPort, Mtu];

const MIRROR: &str = "https://mirror.dind-injector.test";

fn script(s: Scenario) -> (&'static str, Vec<&'static str>) {
    match s {
        Info => ("docker info --format 'mirrors={{json .RegistryConfig.Mirrors}}'\n", vec!["mirror.dind-injector.test"]),
        Build => (
            r#"mkdir -p ctx
echo from-the-workspace > ctx/msg
printf 'FROM busybox\nCOPY msg /msg\nRUN echo built-by-a-run-step >> /msg\nCMD ["cat", "/msg"]\n' > ctx/Dockerfile
docker build -q -t job-app:1 ctx >/dev/null
docker run --rm job-app:1
"#,
            vec!["from-the-workspace\nbuilt-by-a-run-step"],
        ),
        BindWorkspace => (
            r#"rm -f from-container
echo written-by-the-job > marker
docker run --rm -v "$PWD":/src busybox sh -c 'cat /src/marker && echo written-by-a-container > /src/from-container'
echo "job reads: $(cat from-container)"
"#,
            vec!["written-by-the-job", "job reads: written-by-a-container"],
        ),
        Compose => (
            r#"mkdir -p compose/data
cd compose
echo compose-bind-ok > data/x
cat > docker-compose.yml <<'EOF'
version: "3"
services:
  reader:
    image: busybox
    command: cat /data/x
    volumes:
      - ./data:/data
EOF
docker-compose run --rm -T reader
docker-compose down >/dev/null 2>&1
"#,
            vec!["compose-bind-ok"],
        ),
        Scanner => (
            // What a scanner reads through the socket is the daemon's images (`trivy image`
            // exports one). Not `docker ps`: the daemon marks a container running only after its
            // process has started, so under load `docker ps` from inside it lists nothing
            // (both tries of two pods in one loaded run, exit 0, empty output).
            "docker run --rm -v /var/run/docker.sock:/var/run/docker.sock docker:cli docker image ls --format 'scanner sees {{.Repository}}:{{.Tag}}'\n",
            vec!["scanner sees docker:cli"],
        ),
        PublishedPort => (
            r#"docker rm -f web >/dev/null 2>&1 || true
docker run -d --name web -p 8080:80 busybox sh -c 'mkdir -p /www && echo served-by-a-nested-container > /www/index.html && exec httpd -f -p 80 -h /www' >/dev/null
i=0
until curl -fsS http://localhost:8080/ 2>/dev/null; do
  i=$((i+1)); [ "$i" -lt 40 ] || break; sleep 0.25
done
curl -sS http://localhost:8080/ >/dev/null || true
docker rm -f web >/dev/null
"#,
            vec!["served-by-a-nested-container"],
        ),
        TlsRefusesStrangers => (
            r#"if DOCKER_TLS_VERIFY= DOCKER_CERT_PATH= docker --host=tcp://127.0.0.1:2376 version >/dev/null 2>&1; then echo "a client without certificates got in"; else echo refused-without-certificates; fi
if DOCKER_TLS_VERIFY= DOCKER_CERT_PATH= docker --host=tcp://127.0.0.1:2376 --tls version >/dev/null 2>&1; then echo "a client with TLS but no certificate got in"; else echo refused-without-a-client-certificate; fi
"#,
            vec!["refused-without-certificates", "refused-without-a-client-certificate"],
        ),
        Mtu => (
            r#"echo "container mtu $(docker run --rm busybox cat /sys/class/net/eth0/mtu)"
docker network create job-net >/dev/null
echo "new network mtu $(docker run --rm --network job-net busybox cat /sys/class/net/eth0/mtu)"
docker network rm job-net >/dev/null
"#,
            vec!["container mtu 1400", "new network mtu 1400"],
        ),
        WorkspaceNotMirrored => (
            r#"echo written-by-the-job > marker
if docker run --rm -v "$PWD":/src busybox cat /src/marker; then echo "the daemon saw the workspace"; else echo the-daemon-does-not-see-the-workspace; fi
"#,
            vec!["No such file or directory", "the-daemon-does-not-see-the-workspace"],
        ),
    }
}

/// Injects the pod and returns it with the sidecar's name and the warnings.
fn injected(engine: &Engine, p: &Pod) -> (k8s_openapi::api::core::v1::Pod, String, Vec<String>) {
    let mut pod = review_pod(p.fixture);
    if let Some(a) = pod["metadata"]["annotations"].as_object_mut() {
        for (k, v) in p.annotations {
            a.insert((*k).to_owned(), json!(v));
        }
    }
    let containers = pod["spec"]["containers"].as_array_mut().unwrap_or_else(|| panic!("{}: the fixture pod has no containers", p.fixture));
    let job = containers.iter_mut().find(|c| c["name"] == p.job).unwrap_or_else(|| panic!("{}: no container {}", p.fixture, p.job));
    for (k, v) in p.job_env {
        if !job["env"].is_array() {
            job["env"] = json!([]);
        }
        let env = job["env"].as_array_mut().unwrap_or_else(|| panic!("{}: env is not a list", p.fixture));
        env.retain(|e| e["name"] != *k);
        env.push(json!({"name": k, "value": v}));
    }
    if let Some((uid, gid, fs_group)) = p.run_as {
        job["securityContext"]["runAsUser"] = json!(uid);
        if let Some(g) = gid {
            job["securityContext"]["runAsGroup"] = json!(g);
        }
        if let Some(g) = fs_group {
            pod["spec"]["securityContext"]["fsGroup"] = json!(g);
        }
    }

    let mut config = Config::default();
    config.sidecar.image = format!("docker:{}-dind", engine.dind_version);
    config.daemon.registry_mirrors = vec![MIRROR.into()];
    if p.cache {
        config.cache.mode = dind_injector::config::CacheMode::Node;
    }
    let decision = inject::plan_injection(&typed(&pod), &NamespaceView::opted_in("ci"), &config, &ClusterInfo::default());
    let Outcome::Inject(injection) = &decision.outcome else { panic!("{}: not injected: {:?}", p.fixture, decision.outcome) };
    let patched = apply(&pod, &injection.patch);
    (typed(&patched), injection.status.container.clone(), decision.warnings.clone())
}

/// Runs the scenarios in one sandbox; panics with every failure and its output.
fn run_pod(test: &str, p: Pod, scenarios: &[Scenario]) {
    let Some(engine) = engine_or_skip(test) else {
        return;
    };
    let started = Instant::now();
    let (pod, sidecar, warnings) = injected(engine, &p);
    let daemon_json = inject::daemon_json_text(&{
        let mut c = Config::default();
        c.daemon.registry_mirrors = vec![MIRROR.into()];
        c.daemon
    });
    let node = p.cache.then(shared_node);
    let sb = Sandbox::start_on(engine, test, &pod, &sidecar, p.job, Some(&daemon_json), node)
        .unwrap_or_else(|e| panic!("{test}: the pod did not start: {e}"));
    let setup = started.elapsed().as_secs_f64();
    let stored = support::apiserver::after_mutation(&serde_json::to_value(&pod).unwrap_or_else(|e| panic!("{e}"))).pod;

    let mut failures: Vec<String> = Vec::new();
    let at_rest = kubelet_usage(&sb, &stored);
    if let Some(evicted) = support::kubelet::eviction(&stored, &at_rest) {
        failures.push(format!("at rest, the kubelet would evict the pod: {evicted}({})", support::kubelet::report(&stored, &at_rest)));
    }
    let pid1 = sb.in_sidecar("cat /proc/1/comm");
    if pid1.trim() != "docker-init" {
        failures.push(format!("the sidecar's PID 1 is {:?}, not docker-init as in docker:dind (fact 11)", pid1.trim()));
    }
    // Nothing leaves the pod: no default route in its network namespace.
    let routes = sb.in_sidecar("cat /proc/net/route");
    if !routes.starts_with("Iface") {
        failures.push(format!("the sidecar's routing table did not read: {routes:?}"));
    }
    if routes.lines().skip(1).any(|l| l.split_whitespace().nth(1) == Some("00000000")) {
        failures.push(format!("the pod's network namespace has a default route:\n{routes}"));
    }
    // TCP listeners of the daemon only on 127.0.0.1 (2375 = 0x0947, 2376 = 0x0948; until 2026-12-07 this said 0x094F and 0x0950, ports 2383 and 2384, so the check could not fail).
    let listening = sb.in_sidecar("cat /proc/net/tcp; cat /proc/net/tcp6 2>/dev/null || :");
    let listening: Vec<&str> =
        listening.lines().filter(|l| l.split_whitespace().nth(3) == Some("0A")).filter_map(|l| l.split_whitespace().nth(1)).collect();
    // The daemon's own port must be among them where the transport has one: the check reads.
    let port = match sb.job_spec.env.iter().flatten().find(|e| e.name == "DOCKER_HOST").and_then(|e| e.value.as_deref()) {
        Some(h) if h.ends_with(":2375") => Some(":0947"),
        Some(h) if h.ends_with(":2376") => Some(":0948"),
        _ => None,
    };
    if let Some(port) = port
        && !listening.iter().any(|l| l.ends_with(port))
    {
        failures.push(format!("the daemon's TCP port ({port}) is not among the sidecar's listeners {listening:?}"));
    }
    for l in &listening {
        if (l.ends_with(":0947") || l.ends_with(":0948")) && !l.starts_with("0100007F:") {
            failures.push(format!("the daemon listens on {l} (hex address:port), not only on 127.0.0.1"));
        }
    }
    let iptables = sb.in_sidecar("iptables --version; iptables -t nat -S POSTROUTING | head -n 3");
    let root = sb.job(p.workdir, "docker info --format 'root={{.DockerRootDir}}'\n").output;
    let cache_lines = sb.cache_lines();
    let cache_line = cache_lines.iter().find(|l| l.contains("dind-injector cache: slot")).cloned().unwrap_or_default();
    let took_slot = root.contains("root=/var/lib/docker-slot-") && !cache_line.is_empty();
    if p.cache && !took_slot {
        failures.push(format!("the cache is on but the daemon took no slot ({root:?}); the sidecar's log:\n{}", sb.logs(&sb.sidecar)));
    }
    if !p.cache && !root.contains("root=/var/lib/docker\n") {
        failures.push(format!("the cache is off but the daemon's data root is not the emptyDir: {root:?}"));
    }
    let args = sb.sidecar_spec.args.clone().unwrap_or_default();
    if args.iter().any(|a| a.contains("0.0.0.0")) {
        failures.push(format!("the sidecar's args name 0.0.0.0: {args:?}"));
    }

    let mut report = Vec::new();
    for s in scenarios {
        let (text, want) = script(*s);
        let t = Instant::now();
        let mut run = sb.job(p.workdir, text);
        let mut missing: Vec<&&str> = want.iter().filter(|w| !run.output.contains(**w)).collect();
        // Docker's attach stream now and then delivers nothing for a container that exits at
        // once: seen twice in CI (the scanner and the bind scenarios), never in 960
        // `docker run --rm` loops here; moby/moby#27289 is the same race for exec. The script
        // then succeeds and only its expected line is missing: that case, and only that, runs
        // once more and is reported. A scenario our injection breaks fails both times.
        let mut retried = String::new();
        if run.ok && !missing.is_empty() {
            retried = format!(" (2nd try: the 1st exited 0 without {missing:?}; it printed {:?})", run.output.trim_end());
            run = sb.job(p.workdir, text);
            missing = want.iter().filter(|w| !run.output.contains(**w)).collect();
        }
        let ok = run.ok && missing.is_empty();
        report.push(format!("  {s:?}: {} in {:.1}s{retried}", if ok { "ok" } else { "FAILED" }, t.elapsed().as_secs_f64()));
        if !ok {
            failures.push(format!(
                "{s:?}: exit {:?}, expected {:?} in the output; the job printed:\n{}",
                run.code,
                missing,
                run.output.trim_end()
            ));
        }
    }
    let after = kubelet_usage(&sb, &stored);
    if let Some(evicted) = support::kubelet::eviction(&stored, &after) {
        failures.push(format!("after the job, the kubelet would evict the pod: {evicted}({})", support::kubelet::report(&stored, &after)));
    }
    if let Some(zombies) = zombies_after_a_while(&sb) {
        failures.push(format!("the job's containers left zombie processes in the sidecar:\n{zombies}"));
    }
    let job_env = engine.docker(&["exec", &sb.job, "sh", "-c", "env | grep ^DOCKER_ | sort"]).unwrap_or_else(|e| e);
    eprintln!(
        "{test}: pod up in {setup:.1}s (dockerd ready {:.1}s after the sidecar started), total {:.1}s\n  sidecar args: {:?}\n  {}\n  job env: {}\n  nested iptables: {}\n  warnings: {warnings:?}\n  kubelet measures after the job: {}\n{}",
        sb.ready_after,
        started.elapsed().as_secs_f64(),
        args,
        if p.cache { cache_line.trim() } else { "cache off" },
        job_env.split_whitespace().collect::<Vec<_>>().join(" "),
        iptables.lines().next().unwrap_or(""),
        support::kubelet::report(&stored, &after),
        report.join("\n")
    );
    if !failures.is_empty() {
        let mut msg = format!("{test}: {} of {} checks failed\njob DOCKER_ env:\n{job_env}\n", failures.len(), scenarios.len());
        for f in &failures {
            msg.push_str(&format!("--- {f}\n"));
        }
        msg.push_str(&format!("--- sidecar log (tail):\n{}", sb.logs(&sb.sidecar)));
        panic!("{msg}");
    }
}

/// What the kubelet would measure for the sandbox's pod now (README fact 10): every volume that is
/// not a hostPath, `du`-style on this machine's filesystem, and the writable layer and log of each
/// container the sandbox runs.
fn kubelet_usage(sb: &Sandbox, stored: &serde_json::Value) -> support::kubelet::Usage {
    let mut usage = support::kubelet::Usage::default();
    for v in stored["spec"]["volumes"].as_array().into_iter().flatten() {
        if let Some(name) = v["name"].as_str().filter(|_| v.get("hostPath").is_none()) {
            usage.volumes.insert(name.to_owned(), support::kubelet::disk_usage(&sb.volume_dir(name)));
        }
    }
    for (name, container) in [(&sb.sidecar_spec.name, &sb.sidecar), (&sb.job_spec.name, &sb.job)] {
        let bytes = sb.layer_and_log(container, support::kubelet::disk_usage).unwrap_or_else(|e| panic!("{}: {e}", sb.what));
        usage.containers.insert(name.clone(), bytes);
    }
    usage
}

/// The zombie processes in the sidecar (`ps` lines), if any are left after a few seconds: with
/// docker-init as PID 1 (as in docker:dind) the shims of finished containers are reaped.
fn zombies_after_a_while(sb: &Sandbox) -> Option<String> {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ps = sb.in_sidecar("ps -eo pid=,ppid=,stat=,comm=");
        let zombies: Vec<&str> = ps.lines().filter(|l| l.split_whitespace().nth(2).is_some_and(|st| st.starts_with('Z'))).collect();
        if zombies.is_empty() {
            return None;
        }
        if Instant::now() > deadline {
            return Some(zombies.join("\n"));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The runner fixture's pod with its job container and workspace, and these annotations.
fn runner_pod(fixture: &'static str, annotations: &'static [(&'static str, &'static str)]) -> Pod {
    let (job, workdir) = match fixture {
        "buildkite" => ("container-0", "/workspace"),
        "harness" => ("step-2", "/harness"),
        _ => ("build", "/builds/acme/webapp"),
    };
    Pod { fixture, job, workdir, annotations, job_env: &[], run_as: None, cache: false }
}

/// The node directory the cached pods of this run share.
fn shared_node() -> &'static std::path::Path {
    static NODE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    NODE.get_or_init(|| tempfile::Builder::new().prefix("dij-node-").tempdir().unwrap_or_else(|e| panic!("node directory: {e}"))).path()
}

fn gitlab(annotations: &'static [(&'static str, &'static str)]) -> Pod {
    runner_pod("gitlab", annotations)
}

#[test]
fn gitlab_unix_native() {
    run_pod("gitlab-unix-native", gitlab(&[("dind-injector.io/transport", "unix"), ("dind-injector.io/sidecar-mode", "native")]), ALL);
}

#[test]
fn gitlab_tcp_tls_native() {
    let mut s = ALL.to_vec();
    s.push(TlsRefusesStrangers);
    run_pod("gitlab-tcp-tls-native", gitlab(&[("dind-injector.io/transport", "tcp-tls"), ("dind-injector.io/sidecar-mode", "native")]), &s);
}

#[test]
fn gitlab_tcp_native() {
    run_pod("gitlab-tcp-native", gitlab(&[("dind-injector.io/transport", "tcp"), ("dind-injector.io/sidecar-mode", "native")]), ALL);
}

#[test]
fn gitlab_unix_container_mode() {
    run_pod(
        "gitlab-unix-container",
        gitlab(&[("dind-injector.io/transport", "unix"), ("dind-injector.io/sidecar-mode", "container")]),
        &[Info, Build, BindWorkspace],
    );
}

#[test]
fn buildkite_unix_native() {
    let p = runner_pod("buildkite", &[("dind-injector.io/transport", "unix")]);
    run_pod("buildkite-unix-native", p, ALL);
}

#[test]
fn buildkite_tcp_tls_container_mode() {
    let p = runner_pod("buildkite", &[("dind-injector.io/transport", "tcp-tls"), ("dind-injector.io/sidecar-mode", "container")]);
    run_pod("buildkite-tcp-tls-container", p, &[Info, BindWorkspace, TlsRefusesStrangers]);
}

#[test]
fn harness_unix_native() {
    let p = runner_pod("harness", &[("dind-injector.io/transport", "unix")]);
    run_pod("harness-unix-native", p, ALL);
}

/// The same jobs with the warm cache on: every scenario passes on a slot (the first cached pod of
/// the run takes a cold one, the later ones a warm one).
#[test]
fn gitlab_unix_native_cached() {
    let p = Pod { cache: true, ..gitlab(&[("dind-injector.io/transport", "unix"), ("dind-injector.io/sidecar-mode", "native")]) };
    run_pod("gitlab-unix-native-cached", p, ALL);
}

#[test]
fn gitlab_tcp_tls_native_cached() {
    let mut s = ALL.to_vec();
    s.push(TlsRefusesStrangers);
    let p = Pod { cache: true, ..gitlab(&[("dind-injector.io/transport", "tcp-tls"), ("dind-injector.io/sidecar-mode", "native")]) };
    run_pod("gitlab-tcp-tls-native-cached", p, &s);
}

#[test]
fn buildkite_tcp_tls_container_mode_cached() {
    let p = Pod {
        cache: true,
        ..runner_pod("buildkite", &[("dind-injector.io/transport", "tcp-tls"), ("dind-injector.io/sidecar-mode", "container")])
    };
    run_pod("buildkite-tcp-tls-container-cached", p, &[Info, Build, BindWorkspace, TlsRefusesStrangers]);
}

#[test]
fn harness_unix_native_cached() {
    let p = Pod { cache: true, ..runner_pod("harness", &[("dind-injector.io/transport", "unix")]) };
    run_pod("harness-unix-native-cached", p, ALL);
}

/// The most common `.gitlab-ci.yml` in the wild: `DOCKER_HOST: tcp://docker:2375`, TLS off.
#[test]
fn gitlab_documented_tcp_setup_unchanged() {
    let p = Pod { job_env: &[("DOCKER_HOST", "tcp://docker:2375"), ("DOCKER_TLS_CERTDIR", "")], ..gitlab(&[]) };
    run_pod("gitlab-documented-tcp", p, &[Info, Build, BindWorkspace, Compose]);
}

/// GitLab's documented TLS setup: `tcp://docker:2376` with `/certs`.
#[test]
fn gitlab_documented_tls_setup_unchanged() {
    let p = Pod {
        job_env: &[
            ("DOCKER_HOST", "tcp://docker:2376"),
            ("DOCKER_TLS_CERTDIR", "/certs"),
            ("DOCKER_CERT_PATH", "/certs/client"),
            ("DOCKER_TLS_VERIFY", "1"),
        ],
        ..gitlab(&[])
    };
    run_pod("gitlab-documented-tls", p, &[Info, Build, BindWorkspace, Compose]);
}

/// The harness sees the failure issue 9 reported when the workspace is not mirrored.
#[test]
fn gitlab_workspace_not_mirrored_control() {
    run_pod(
        "gitlab-unmirrored-control",
        gitlab(&[("dind-injector.io/transport", "unix"), ("dind-injector.io/workspace", "off")]),
        &[WorkspaceNotMirrored],
    );
}

#[test]
fn non_root_job_with_fs_group() {
    let p = Pod { run_as: Some((1000, None, Some(1000))), ..gitlab(&[("dind-injector.io/transport", "unix")]) };
    run_pod("gitlab-non-root-fsgroup", p, &[Info, Build, BindWorkspace]);
}

/// No fsGroup, no runAsGroup: the runtime gives the job group 0 (uid 1000 is not in the image's
/// /etc/passwd), which the root-owned 0660 socket admits. If it did not work, the admission
/// response would have to say exactly why.
#[test]
fn non_root_job_without_fs_group() {
    let p = Pod { run_as: Some((1000, None, None)), ..gitlab(&[("dind-injector.io/transport", "unix")]) };
    run_pod("gitlab-non-root-no-fsgroup", p, &[Info, BindWorkspace]);
}

/// No fsGroup, but a runAsGroup: the socket must belong to a group the job has (or the
/// response says exactly why not).
#[test]
fn non_root_job_with_run_as_group_only() {
    let p = Pod { run_as: Some((1000, Some(1000), None)), ..gitlab(&[("dind-injector.io/transport", "unix")]) };
    run_pod("gitlab-non-root-run-as-group", p, &[Info, BindWorkspace]);
}

/// A Buildkite Job's pod runs its build and finishes; then the Job controller removes its
/// `batch.kubernetes.io/job-tracking` finalizer, which is what lets the Job become `Complete`
/// and its pod be cleaned up. That UPDATE, in the exact shape of the recorded one, evaluates
/// without an error under every shipped matchCondition and reaches no validating webhook (before
/// issue 19 it was refused for ever); sent to the server's `/validate` all the same, as the
/// apiserver would if a condition let it through, it is allowed.
#[test]
fn buildkite_job_pod_finishes_and_its_finalizer_is_removed() {
    let test = "buildkite-job-finalizer";
    let Some(engine) = engine_or_skip(test) else {
        return;
    };
    let p = runner_pod("buildkite", &[("dind-injector.io/transport", "unix")]);
    let (pod, sidecar, _) = injected(engine, &p);
    let sb = Sandbox::start(engine, test, &pod, &sidecar, p.job, None).unwrap_or_else(|e| panic!("{test}: the pod did not start: {e}"));
    let (text, want) = script(Build);
    let run = sb.job(p.workdir, text);
    assert!(run.ok && want.iter().all(|w| run.output.contains(w)), "{test}: the build failed:\n{}", run.output);
    drop(sb);

    // The pod as stored, finished: the job containers exited 0, the phase is Succeeded.
    let patched = serde_json::to_value(&pod).unwrap_or_else(|e| panic!("{e}"));
    let mut finished = support::apiserver::after_mutation(&patched).pod;
    let statuses: Vec<_> = finished["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false, "restartCount": 0,
            "started": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}})
        })
        .collect();
    finished["status"] = json!({"phase": "Succeeded", "containerStatuses": statuses});
    let finalizers = finished["metadata"]["finalizers"].clone();
    assert_eq!(finalizers, json!(["batch.kubernetes.io/job-tracking"]), "the Buildkite fixture is a Job's pod");
    let mut released = finished.clone();
    released["metadata"]["finalizers"] = json!([]);
    let request = support::cel::Requests::recorded().update(&finished, &released);
    assert!(
        request["oldObject"]["metadata"]["finalizers"] == finalizers
            && request["object"]["metadata"].get("finalizers").is_none()
            && request.get("subResource").is_none(),
        "the request is not shaped as the recorded one"
    );

    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for (origin, configurations) in support::render::shipped_webhook_configurations(&tmp) {
        let conditions = support::cel::Conditions::compile(&configurations, &origin);
        // The mutating webhook's rules match CREATE only: its condition is evaluated above for
        // errors' sake, whatever it says.
        for (webhook, _) in conditions.by_webhook.iter() {
            let sent = conditions.sends(webhook, &request).unwrap_or_else(|e| panic!("{origin}: the finalizer removal is refused: {e}"));
            assert!(!sent || webhook == "inject.dind-injector.io", "{origin}: {webhook} is called for the finalizer removal");
        }
    }

    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let answer = runtime.block_on(async {
        let server = support::serve::start(None).await;
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
        let body = serde_json::to_vec(&review).unwrap_or_default();
        let answer = server.post(support::tls_client::Http::H2, "/validate", body).await.json();
        server.stop().await;
        answer
    });
    assert_eq!(answer["response"]["uid"], request["uid"], "{answer}");
    assert_eq!(answer["response"]["allowed"], json!(true), "/validate refused the finalizer removal: {answer}");
}

/// The sidecar's own log lines about Kata's data root.
fn kata_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("dind-injector kata:")).collect()
}

/// Kata: in the VM the emptyDir at /var/lib/docker is virtio-fs, which overlayfs cannot take as
/// its upper layer (dockerd would fail or fall back to vfs), so the sidecar loop-mounts an ext4
/// disk there. The Kata sidecar is privileged (inside the VM), so the engine runs it as injected,
/// twice: with the emptyDir as the pod has it (ext4 on this machine: overlayfs works, no disk),
/// and with /var/lib/docker left on the container's own overlayfs root, which overlayfs cannot
/// take as an upper layer either: the stand-in for virtio-fs. Then a build and a run.
#[test]
fn kata_sidecars_loop_mount_a_disk_where_overlayfs_cannot_sit() {
    let test = "kata-loop-disk";
    let Some(engine) = engine_or_skip(test) else {
        return;
    };
    if !std::path::Path::new("/dev/loop-control").exists() {
        // A kernel without the loop driver: nothing to run the disk on here. Under `make test`
        // (DIND_INJECTOR_REQUIRE_DOCKERD=1) a test that cannot run is a failure, not a skip.
        let why = "this machine has no /dev/loop-control (the loop driver: modprobe loop)";
        assert!(std::env::var("DIND_INJECTOR_REQUIRE_DOCKERD").as_deref() != Ok("1"), "{test} cannot run: {why}");
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    let p = gitlab(&[("dind-injector.io/isolation", "kata"), ("dind-injector.io/transport", "unix")]);
    let (pod, sidecar, warnings) = injected(engine, &p);
    assert!(pod.spec.as_ref().and_then(|s| s.runtime_class_name.as_deref()) == Some("kata"), "{warnings:?}");
    let daemon_json = inject::daemon_json_text(&Config::default().daemon);
    let driver = "docker info --format 'driver={{.Driver}}'\n";

    let sb = Sandbox::start(engine, test, &pod, &sidecar, p.job, Some(&daemon_json))
        .unwrap_or_else(|e| panic!("{test}: the pod did not start: {e}"));
    let log = sb.all_logs(&sb.sidecar);
    assert_eq!(kata_lines(&log), ["dind-injector kata: /var/lib/docker takes overlayfs as it is; no loop disk"], "{log}");
    let (build, want) = script(Build);
    let run = sb.job(p.workdir, &format!("{driver}{build}"));
    assert!(run.output.contains("driver=overlay2") && want.iter().all(|w| run.output.contains(w)), "{}", run.output);
    // What the kubelet would measure after the job: within every limit.
    let stored = support::apiserver::after_mutation(&serde_json::to_value(&pod).unwrap_or_else(|e| panic!("{e}"))).pod;
    let usage = kubelet_usage(&sb, &stored);
    assert_eq!(support::kubelet::eviction(&stored, &usage), None, "{}", support::kubelet::report(&stored, &usage));
    drop(sb);

    let mut on_rootfs = pod.clone();
    let spec = on_rootfs.spec.as_mut().unwrap_or_else(|| panic!("no spec"));
    for c in spec.init_containers.iter_mut().flatten().chain(spec.containers.iter_mut()).filter(|c| c.name == sidecar) {
        c.volume_mounts.iter_mut().for_each(|m| m.retain(|m| m.mount_path != "/var/lib/docker"));
    }
    let sb = Sandbox::start(engine, &format!("{test}-virtiofs"), &on_rootfs, &sidecar, p.job, Some(&daemon_json))
        .unwrap_or_else(|e| panic!("{test}: the pod did not start: {e}"));
    let log = sb.all_logs(&sb.sidecar);
    let lines = kata_lines(&log);
    assert!(
        lines.len() == 1
            && lines[0].contains("cannot be overlayfs's upper layer: the data root is a")
            && lines[0].contains("MiB ext4 loop disk"),
        "{log}"
    );
    let fs = sb.in_sidecar("awk '$2 == \"/var/lib/docker\" { t = $3 } END { print t }' /proc/mounts");
    assert_eq!(fs.trim(), "ext4", "the data root is the loop disk");
    let (build, want) = script(Build);
    let run = sb.job(p.workdir, &format!("{driver}{build}"));
    assert!(run.ok && run.output.contains("driver=overlay2") && want.iter().all(|w| run.output.contains(w)), "{}\n{log}", run.output);
}

/// How long the long job runs: past the kubelet's first volume-stats pass (within about a minute
/// of the pod's start) and two of its 10-second eviction passes after it, with room to spare.
const LONG_JOB_SECS: u64 = 135;

/// A job as long as real ones (README fact 10: jobs of a few seconds end before the kubelet's
/// first volume-stats pass, which is why only long jobs were evicted). The job builds, runs
/// containers that log, writes into the workspace through the daemon and starts 25 containers
/// in a row, for over two minutes; all the while a checker measures every volume of the pod and
/// each container's layer and log every 5 s, as the kubelet would, and applies its rules. The
/// name sorts it first, so it runs beside the other pods, not after them.
#[test]
fn a_long_job_is_never_evicted_by_the_kubelet() {
    let test = "long-job";
    let Some(engine) = engine_or_skip(test) else {
        return;
    };
    let p = gitlab(&[("dind-injector.io/transport", "unix"), ("dind-injector.io/sidecar-mode", "native")]);
    let (pod, sidecar, _) = injected(engine, &p);
    let stored = support::apiserver::after_mutation(&serde_json::to_value(&pod).unwrap_or_else(|e| panic!("{e}"))).pod;
    // The control: the same pod with the previous release's 1Ki limit on the token directory.
    let mut planted = stored.clone();
    for v in planted["spec"]["volumes"].as_array_mut().into_iter().flatten().filter(|v| v["name"] == "dind-no-token") {
        v["emptyDir"] = json!({"sizeLimit": "1Ki"});
    }
    let sb = Sandbox::start(engine, test, &pod, &sidecar, p.job, None).unwrap_or_else(|e| panic!("{test}: the pod did not start: {e}"));
    let script = format!(
        r#"end=$(( $(date +%s) + {LONG_JOB_SECS} ))
i=0
while [ "$(date +%s)" -lt "$end" ]; do
  i=$((i+1))
  mkdir -p ctx
  echo "round $i" > ctx/msg
  head -c 4194304 /dev/urandom > ctx/blob
  printf 'FROM busybox\nCOPY . /ctx\nRUN cat /ctx/msg && head -c 2097152 /dev/urandom > /layer\nCMD ["sh", "-c", "seq 1 3000"]\n' > ctx/Dockerfile
  docker build -q -t long-job:$i ctx >/dev/null
  docker run --rm long-job:$i >/dev/null
  docker run --rm -v "$PWD":/w busybox sh -c "head -c 1048576 /dev/zero > /w/out-$i"
  sleep 3
done
n=0
while [ "$n" -lt 25 ]; do n=$((n+1)); docker run --rm busybox true; done
echo "long job done: $i rounds, $n containers in a row, $(ls out-* | wc -l) outputs in the workspace"
"#
    );
    let started = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (run, samples) = std::thread::scope(|s| {
        let checker = s.spawn(|| {
            let mut samples: Vec<(f64, Option<String>, Option<String>, support::kubelet::Usage)> = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let usage = kubelet_usage(&sb, &stored);
                samples.push((
                    started.elapsed().as_secs_f64(),
                    support::kubelet::eviction(&stored, &usage),
                    support::kubelet::eviction(&planted, &usage),
                    usage,
                ));
                // Every 5 s, in 0.5 s steps so the checker stops soon after the job.
                for _ in 0..10 {
                    if done.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            }
            samples
        });
        let run = sb.job(p.workdir, &script);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (run, checker.join().unwrap_or_else(|_| panic!("{test}: the checker panicked")))
    });
    let took = started.elapsed().as_secs_f64();
    let last = samples.last().map(|(_, _, _, u)| support::kubelet::report(&stored, u)).unwrap_or_default();
    eprintln!("{test}: the job ran {took:.0}s, {} kubelet passes; last: {last}\n{}", samples.len(), run.output.trim_end());
    assert!(
        run.ok && run.output.contains("long job done"),
        "{test}: the job failed:\n{}\nsidecar log:\n{}",
        run.output,
        sb.logs(&sb.sidecar)
    );
    assert!(took >= LONG_JOB_SECS as f64, "{test}: the job ended after {took:.0}s, before the kubelet's passes");
    assert!(samples.len() >= 20, "{test}: only {} samples in {took:.0}s", samples.len());
    for (at, evicted, _, usage) in &samples {
        assert!(
            evicted.is_none(),
            "{test}: at {at:.0}s the kubelet would evict the pod: {evicted:?} ({})",
            support::kubelet::report(&stored, usage)
        );
    }
    // The checker measured what the job did: the data root and the workspace grew, and on this
    // filesystem the planted 1Ki limit is caught on every pass, as the real kubelet caught it.
    let first = &samples[0].3;
    let grown = |name: &str| usage_of(&samples.last().map(|s| s.3.clone()).unwrap_or_default(), name) > usage_of(first, name) + (8 << 20);
    assert!(grown("dind-storage") && grown("repo"), "{test}: the measurements did not see the job's writes: {last}");
    assert!(
        samples
            .iter()
            .all(|(_, _, planted, _)| planted.as_deref() == Some("Usage of EmptyDir volume \"dind-no-token\" exceeds the limit \"1Ki\". ")),
        "{test}: the checker missed the previous release's 1Ki limit"
    );
    // README fact 11: 25 containers in a row leave no zombie shim with docker-init as PID 1.
    assert_eq!(zombies_after_a_while(&sb), None, "{test}: zombies in the sidecar");
}

fn usage_of(usage: &support::kubelet::Usage, volume: &str) -> u64 {
    usage.volumes.get(volume).copied().unwrap_or(0)
}

/// `userns` isolation (issue 33) in the closest thing to a node the tests have: a podman pod in a
/// user namespace of its own (tests/support/podman.rs), the sidecar exactly as injected (not
/// privileged; SYS_ADMIN and NET_ADMIN, an unmasked /proc, seccomp Unconfined) and the job
/// container sharing its namespaces and volumes. The cgroup here is not writable, so the sidecar
/// must say it runs dockerd --rootless; the jobs users write run unchanged; from the host, no
/// process of the daemon or of the containers it runs is uid 0.
fn run_userns_pod(test: &str, transport: &'static str, scenarios: &[Scenario]) {
    let Some(engine) = engine_or_skip(test) else {
        return;
    };
    if let Some(why) = podman::missing_prerequisite() {
        assert!(std::env::var("DIND_INJECTOR_REQUIRE_DOCKERD").as_deref() != Ok("1"), "{test} cannot run: {why}");
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    let images = podman::import_images(&engine.images).unwrap_or_else(|e| panic!("{test}: {e}"));
    let annotations: &'static [(&'static str, &'static str)] = match transport {
        "tcp-tls" => &[("dind-injector.io/isolation", "userns"), ("dind-injector.io/transport", "tcp-tls")],
        "tcp" => &[("dind-injector.io/isolation", "userns"), ("dind-injector.io/transport", "tcp")],
        _ => &[("dind-injector.io/isolation", "userns"), ("dind-injector.io/transport", "unix")],
    };
    let p = gitlab(annotations);
    let (pod, sidecar, warnings) = injected(engine, &p);
    let daemon_json = inject::daemon_json_text(&{
        let mut c = Config::default();
        c.daemon.registry_mirrors = vec![MIRROR.into()];
        c.daemon
    });
    let sb = podman::UsernsPod::start(test, &pod, &sidecar, p.job, &images, &engine.inner_images, &daemon_json)
        .unwrap_or_else(|e| panic!("{test}: the pod did not start: {e}\nwarnings: {warnings:?}"));
    let log = sb.logs(&sb.sidecar);
    let said: Vec<&str> = log.lines().filter(|l| l.contains("dind-injector userns:")).collect();
    assert!(
        said.len() == 1
            && said[0].contains("dockerd runs --rootless")
            && said[0].contains("NOT applied")
            && said[0].contains("pod's own limits still hold"),
        "{test}: the sidecar did not say, on one line, how dockerd runs:\n{log}"
    );
    let mut failures = Vec::new();
    for s in scenarios {
        let (text, want) = script(*s);
        let run = sb.job(p.workdir, text);
        if !(run.ok && want.iter().all(|w| run.output.contains(w))) {
            failures.push(format!("{s:?}: expected {want:?}; the job printed:\n{}", run.output.trim_end()));
        }
    }
    // What the kubelet would measure after the jobs: within every limit.
    let stored = support::apiserver::after_mutation(&serde_json::to_value(&pod).unwrap_or_else(|e| panic!("{e}"))).pod;
    let usage = sb.kubelet_usage(&stored, p.job, support::kubelet::disk_usage).unwrap_or_else(|e| panic!("{test}: {e}"));
    if let Some(evicted) = support::kubelet::eviction(&stored, &usage) {
        failures.push(format!("after the jobs, the kubelet would evict the pod: {evicted}({})", support::kubelet::report(&stored, &usage)));
    }
    // What the daemon wrote into the workspace is the job's own (root in the pod).
    let owner =
        sb.job(p.workdir, "docker run --rm -v \"$PWD\":/w busybox sh -c 'echo x > /w/by-the-daemon' && stat -c %u:%g by-the-daemon");
    if owner.output.trim() != "0:0" {
        failures
            .push(format!("a file a container wrote into the workspace is owned by {:?} in the job, not by its root", owner.output.trim()));
    }
    // From the host: nothing the sidecar runs is root, while a container runs.
    let started = sb.job(p.workdir, "docker run -d --name held busybox sleep 120 >/dev/null && echo started");
    assert!(started.output.contains("started"), "{test}: {}", started.output);
    let processes = sb.sidecar_processes();
    let names: Vec<&str> = processes.iter().map(|(_, _, n)| n.as_str()).collect();
    for expected in ["docker-init", "dockerd", "containerd", "sleep"] {
        if !names.contains(&expected) {
            failures.push(format!("no {expected} among the sidecar's processes as the host sees them: {names:?}"));
        }
    }
    let root: Vec<_> = processes.iter().filter(|(_, uid, _)| *uid == 0).collect();
    if !root.is_empty() {
        failures.push(format!("processes of the daemon or its containers run as uid 0 on the host: {root:?}"));
    }
    eprintln!(
        "{test}: {} processes under the sidecar, host uids {:?}; {}",
        processes.len(),
        processes.iter().map(|(_, u, _)| *u).collect::<std::collections::BTreeSet<_>>(),
        said.first().unwrap_or(&"")
    );
    assert!(failures.is_empty(), "{test}:\n{}\nsidecar log:\n{log}", failures.join("\n"));
}

#[test]
fn userns_unix_jobs_run_with_no_root_on_the_host() {
    run_userns_pod("userns-unix", "unix", &[Info, Build, BindWorkspace, Compose, Scanner, PublishedPort]);
}

#[test]
fn userns_tcp_tls_jobs_run_with_no_root_on_the_host() {
    run_userns_pod("userns-tcp-tls", "tcp-tls", &[Info, Build, BindWorkspace, TlsRefusesStrangers]);
}

#[test]
fn userns_tcp_jobs_run_with_no_root_on_the_host() {
    run_userns_pod("userns-tcp", "tcp", &[Info, Build]);
}

/// The sidecar's memory limit, applied as the kubelet applies it (issue 31, item 4: the nested
/// containers count against it, as on a cgroup v2 node), at its default (4Gi) holds a realistic
/// job: a multi-stage build whose first stage compresses with `xz -9` (about 670 MiB, as much as a
/// compiler step), then a test suite against a database container (redis, 200,000 keys written
/// through a user network). The peak the sidecar's cgroup measured is printed (docs/limits.md).
#[test]
fn the_default_memory_limit_holds_a_multi_stage_build_and_a_database_test_suite() {
    let test = "memory-realistic";
    let Some(engine) = engine_or_skip(test) else {
        return;
    };
    let p = gitlab(&[("dind-injector.io/transport", "unix")]);
    let (pod, sidecar, _) = injected(engine, &p);
    let sb = Sandbox::start_memory_limited(engine, test, &pod, &sidecar, p.job, None)
        .unwrap_or_else(|e| panic!("{test}: the pod did not start: {e}"));
    let db = engine.db_image().unwrap_or_else(|e| panic!("{test}: {e}"));
    sb.load_into_daemon(&db).unwrap_or_else(|e| panic!("{test}: {e}"));
    let script = r#"mkdir -p app
head -c 16000000 /dev/urandom > app/blob
cat > app/Dockerfile <<'DOCKERFILE'
FROM ci-db:latest AS build
COPY blob /src/blob
RUN xz -9 -T1 -k /src/blob && echo "compressed $(wc -c < /src/blob.xz) bytes"
FROM busybox
COPY --from=build /src/blob.xz /app/blob.xz
CMD ["sh", "-c", "echo image-ok $(wc -c < /app/blob.xz)"]
DOCKERFILE
docker build -q -t app:1 app >/dev/null
docker run --rm app:1
docker network create suite >/dev/null
docker run -d --name db --network suite ci-db:latest redis-server --save '' --appendonly no --protected-mode no >/dev/null
docker run --rm --network suite ci-db:latest sh -c 'i=0; until redis-cli -h db ping >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 60 ] || exit 1; sleep 0.5; done
seq 1 200000 | sed "s/.*/SET key:& value-&-0123456789012345678901234567890123456789/" | redis-cli -h db --pipe >/dev/null
echo "suite-ok keys=$(redis-cli -h db dbsize)"'
docker rm -f db >/dev/null
docker network rm suite >/dev/null
"#;
    let run = sb.job(p.workdir, script);
    // cgroup v1 (this host) or v2: the sidecar's own cgroup, the root of its cgroup namespace.
    let peak = sb.in_sidecar("cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.peak");
    let peak: u64 = peak.trim().parse().unwrap_or(0);
    eprintln!("{test}: the sidecar's cgroup peaked at {} MiB (limit 4096 MiB)\n{}", peak >> 20, run.output.trim_end());
    assert!(
        run.ok && run.output.contains("image-ok") && run.output.contains("suite-ok keys=200000"),
        "{test}: the job failed under the default memory limit:\n{}\nsidecar log:\n{}",
        run.output,
        sb.logs(&sb.sidecar)
    );
    // dockerd and containerd alone stay far below 300 MiB; xz -9 alone needs more.
    assert!(
        peak > 300 << 20,
        "{test}: the sidecar's cgroup did not count the nested containers ({peak} bytes): the limit would not hold them"
    );
    assert!(peak < 4 << 30, "{test}: {peak} bytes");
}

/// A job that outgrows the sidecar's memory limit (512Mi here), and what it sees in its own log
/// where the kernel picks one process (cgroup v1, or v2 without the kubelet's memory.oom.group;
/// docs/limits.md says what a v2 node does): the container that outgrew it ends with exit code
/// 137, and the daemon keeps answering the job's next command.
#[test]
fn a_job_that_outgrows_the_memory_limit_sees_exit_137_and_keeps_its_daemon() {
    let test = "memory-outgrown";
    let Some(engine) = engine_or_skip(test) else {
        return;
    };
    let mut pod = review_pod("gitlab");
    pod["metadata"]["annotations"]["dind-injector.io/transport"] = json!("unix");
    let mut config = Config::default();
    config.sidecar.image = format!("docker:{}-dind", engine.dind_version);
    config.sidecar.resources.memory_limit = Some("512Mi".into());
    let decision = inject::plan_injection(&typed(&pod), &NamespaceView::opted_in("ci"), &config, &ClusterInfo::default());
    let Outcome::Inject(injection) = &decision.outcome else { panic!("{test}: not injected: {:?}", decision.outcome) };
    let patched = typed(&apply(&pod, &injection.patch));
    let sb = Sandbox::start_memory_limited(engine, test, &patched, &injection.status.container, "build", None)
        .unwrap_or_else(|e| panic!("{test}: the pod did not start: {e}"));
    let run = sb.job(
        "/builds/acme/webapp",
        "set +e\ndocker run --rm busybox sh -c 'head -c 900m /dev/zero | tail >/dev/null; exit $?'\necho \"exit=$?\"\ndocker info --format 'daemon-answers {{.ServerVersion}}'\n",
    );
    assert!(run.output.contains("exit=137"), "{test}: the container that outgrew the limit did not end with 137:\n{}", run.output);
    assert!(
        run.output.contains("daemon-answers"),
        "{test}: the daemon did not answer after the OOM kill:\n{}\nsidecar log:\n{}",
        run.output,
        sb.logs(&sb.sidecar)
    );
}
