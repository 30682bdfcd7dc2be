//! The warm cache on a real engine (issue 21): pods of one scope take turns on node-local data-root
//! slots, one daemon per slot, and only images and build cache carry over.
//!
//! Pod-shaped sandboxes as in tests/jobs.rs (tests/support/engine.rs): the sidecar runs its
//! injected script, so the slot is taken by the script's own `flock`, mounted by its own `mount`,
//! cleaned by its own commands. The node is a directory of the test's: the cache's hostPath
//! `/cache/<namespace>/<scope>` is `<node>/cache/...`, shared by every sandbox of the test as a
//! node's directory is shared by its pods. A pod ends as the kubelet ends it (`docker stop`:
//! SIGTERM, then SIGKILL after the grace period) unless a test kills it.
//!
//! `cold_and_warm_benchmark` (ignored; `make bench-cache`) measures what the cache buys: the
//! numbers are in README.md.

#[path = "support/engine.rs"]
mod engine;
mod support;

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use dind_injector::config::{CacheMode, Config};
use dind_injector::inject::{self, ClusterInfo, Outcome};
use dind_injector::namespace::NamespaceView;
use engine::{Engine, Sandbox, engine_or_skip};
use support::*;

/// One test at a time: some hold two sandboxes at once, and the engine runs two at most.
static SERIAL: Mutex<()> = Mutex::new(());

/// The cache configuration of these tests: on, `slots` per scope, slots over `max` emptied.
fn config(engine: &Engine, slots: u32, max: &str) -> Config {
    let mut c = Config::default();
    c.sidecar.image = format!("docker:{}-dind", engine.dind_version);
    c.cache.mode = CacheMode::Node;
    c.cache.host_path = "/cache".into();
    c.cache.slots_per_scope = slots;
    c.cache.max_slot_size = max.into();
    c
}

/// A GitLab job pod in `namespace`, injected with `config`, running on `node`.
fn start(engine: &'static Engine, test: &str, node: &Path, namespace: &str, config: &Config) -> Sandbox {
    let pod = review_pod("gitlab");
    let decision = inject::plan_injection(&typed(&pod), &NamespaceView::opted_in(namespace), config, &ClusterInfo::default());
    let Outcome::Inject(injection) = &decision.outcome else { panic!("{test}: not injected: {:?}", decision.outcome) };
    assert!(injection.status.cache.is_some(), "{test}: no cache in the status");
    let patched = apply(&pod, &injection.patch);
    Sandbox::start_on(engine, test, &typed(&patched), &injection.status.container, "build", None, Some(node))
        .unwrap_or_else(|e| panic!("{test}: the pod did not start: {e}"))
}

const WORKDIR: &str = "/builds/acme/webapp";

/// What every job script starts with. Nothing is pulled: the images the jobs build FROM and run
/// are in the nested daemon already (the sandbox loads busybox from the images
/// scripts/test-images.sh builds), and runs say `--pull never`; without them a job fails at once,
/// naming the step that should have made them, instead of trying a registry.
const LOCAL_IMAGES: &str = "docker image inspect busybox >/dev/null 2>&1 || { echo 'busybox is not in the nested daemon: the sandbox \
loads it (tests/support/engine.rs) from the images scripts/test-images.sh builds (make test-deps); nothing is pulled' >&2; exit 1; }\n";

/// `script`, after [`LOCAL_IMAGES`].
fn local(script: &str) -> String {
    format!("{LOCAL_IMAGES}{script}")
}

/// Runs `script` in the job; panics with its output unless it succeeds.
fn job(sb: &Sandbox, script: &str) -> String {
    let run = sb.job(WORKDIR, &local(script));
    assert!(run.ok, "{}: the job failed (exit {:?}):\n{}\n--- sidecar log:\n{}", sb.what, run.code, run.output, sb.logs(&sb.sidecar));
    run.output
}

/// The kubelet ending the pod: SIGTERM to the sidecar, SIGKILL after 20 s.
fn end(sb: Sandbox) {
    let _ = sb.engine.docker(&["stop", "-t", "20", &sb.sidecar]);
    drop(sb);
}

fn cache_line(sb: &Sandbox) -> String {
    sb.cache_lines().join("\n")
}

/// A Dockerfile with three slow steps (three seconds each) and no file from the context, so the
/// same steps in a later job are the same cache keys.
const SLOW_BUILD: &str = r#"mkdir -p ctx
printf 'FROM busybox\nRUN sleep 3 && echo one > /one\nRUN sleep 3 && echo two > /two\nRUN sleep 3 && echo three > /three\nCMD ["cat", "/one", "/two", "/three"]\n' > ctx/Dockerfile
docker build -t slow-app:1 ctx
docker run --pull never --rm slow-app:1
"#;

/// What a job leaves behind that the next one must not find: a stopped container named `x`, a
/// running one with a restart policy, a volume with data in it, and a network.
const LEAVE_BEHIND: &str = r#"docker run --pull never --name leftover busybox true
docker run --pull never -d --name db --restart always busybox sleep 600 >/dev/null
docker volume create jobdata >/dev/null
docker run --pull never --rm -v jobdata:/d busybox sh -c 'echo job-one-secret > /d/secret'
docker network create jobnet >/dev/null
echo "left: $(docker ps -aq | wc -l) containers, $(docker volume ls -q | wc -l) volumes"
"#;

const WHAT_IS_LEFT: &str = r#"echo "images: $(docker images --format '{{.Repository}}:{{.Tag}}' | sort | tr '\n' ' ')"
echo "containers: [$(docker ps -aq | tr '\n' ' ')]"
echo "volumes: [$(docker volume ls -q | tr '\n' ' ')]"
echo "networks: [$(docker network ls --format '{{.Name}}' | sort | tr '\n' ' ')]"
docker run --pull never --name leftover busybox echo the-name-leftover-is-free
"#;

#[test]
fn a_second_job_of_the_scope_finds_images_and_build_cache_and_nothing_else() {
    let test = "cache-two-jobs-in-turn";
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(engine) = engine_or_skip(test) else { return };
    let node = tempfile::Builder::new().prefix("dij-node-").tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = config(engine, 4, "20Gi");

    let first = start(engine, &format!("{test}-1"), node.path(), "ci", &config);
    let line = cache_line(&first);
    assert!(line.contains("slot 1 of 4, scope ci/namespace, cold"), "{test}: the first job's sidecar said: {line}");
    let t = Instant::now();
    let out = job(&first, SLOW_BUILD);
    let cold = t.elapsed().as_secs_f64();
    assert!(out.contains("one\ntwo\nthree"), "{out}");
    assert!(!out.contains("Using cache") && !out.contains("CACHED"), "{test}: the first build cannot be cached:\n{out}");
    let left = job(&first, LEAVE_BEHIND);
    assert!(left.contains("left: 2 containers, 1 volumes"), "{left}");
    end(first);

    let second = start(engine, &format!("{test}-2"), node.path(), "ci", &config);
    let line = cache_line(&second);
    assert!(line.contains("slot 1 of 4, scope ci/namespace, warm"), "{test}: the second job's sidecar said: {line}");
    let t = Instant::now();
    let out = job(&second, SLOW_BUILD);
    let warm = t.elapsed().as_secs_f64();
    let cached = out.matches("Using cache").count() + out.matches("CACHED").count();
    assert_eq!(cached, 4, "{test}: every step after FROM (three RUN, one CMD) must be cached in the second job:\n{out}");
    assert!(warm <= cold / 5.0, "{test}: the warm build took {warm:.1}s, more than a fifth of the cold {cold:.1}s:\n{out}");
    let seen = job(&second, WHAT_IS_LEFT);
    assert!(seen.contains("slow-app:1"), "{test}: the first job's image is not listed:\n{seen}");
    assert!(seen.contains("containers: [ ]") || seen.contains("containers: []"), "{test}: containers carried over:\n{seen}");
    assert!(seen.contains("volumes: []"), "{test}: volumes carried over:\n{seen}");
    assert!(seen.contains("networks: [bridge host none ]"), "{test}: networks carried over:\n{seen}");
    assert!(seen.contains("the-name-leftover-is-free"), "{seen}");
    // Nothing of the first job runs: not even its container with a restart policy.
    let ps = job(&second, "docker ps --format '{{.Names}}'\n");
    assert!(!ps.contains("db"), "{test}: a container of the first job runs: {ps}");
    eprintln!("{test}: cold build {cold:.1}s, warm build {warm:.1}s; second sidecar: {line}");
    end(second);
}

#[test]
fn jobs_at_once_take_different_slots_and_both_succeed() {
    let test = "cache-two-jobs-at-once";
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(engine) = engine_or_skip(test) else { return };
    let node = tempfile::Builder::new().prefix("dij-node-").tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = config(engine, 4, "20Gi");
    let a = start(engine, &format!("{test}-a"), node.path(), "ci", &config);
    let b = start(engine, &format!("{test}-b"), node.path(), "ci", &config);
    let root = "docker info --format 'root={{.DockerRootDir}}'\n";
    let (ra, rb) = (job(&a, root), job(&b, root));
    assert!(ra.contains("root=/var/lib/docker-slot-1") && rb.contains("root=/var/lib/docker-slot-2"), "{test}: {ra:?} {rb:?}");
    // Each sees its own slot only: the scope's other slots are not mounted in the daemon.
    let peek = "docker run --pull never --rm -v /var/lib/dind-injector-cache:/c busybox ls /c | tr '\\n' ' '; echo end\n";
    let seen = job(&a, peek);
    assert!(!seen.contains("slot-2"), "{test}: one daemon sees the scope's other slots: {seen}");
    let build = "printf 'FROM busybox\\nRUN echo at-once > /x\\nCMD [\"cat\", \"/x\"]\\n' > Dockerfile\ndocker build -q -t at-once . >/dev/null\ndocker run --pull never --rm at-once\n";
    let (oa, ob) = std::thread::scope(|s| {
        let ha = s.spawn(|| a.job(WORKDIR, &local(build)));
        let hb = s.spawn(|| b.job(WORKDIR, &local(build)));
        (ha.join().unwrap_or_else(|_| panic!("job a panicked")), hb.join().unwrap_or_else(|_| panic!("job b panicked")))
    });
    assert!(oa.ok && oa.output.contains("at-once"), "{test}: a: {}", oa.output);
    assert!(ob.ok && ob.output.contains("at-once"), "{test}: b: {}", ob.output);
    end(a);
    end(b);
}

#[test]
fn a_killed_sidecar_frees_its_slot_for_the_next_job() {
    let test = "cache-sigkill";
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(engine) = engine_or_skip(test) else { return };
    let node = tempfile::Builder::new().prefix("dij-node-").tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = config(engine, 1, "20Gi");
    let first = start(engine, &format!("{test}-1"), node.path(), "ci", &config);
    job(&first, "docker run --pull never -d --name long busybox sleep 600 >/dev/null\n");
    // Mid-job, the node loses the pod: SIGKILL, no shutdown of dockerd.
    engine.docker(&["kill", "-s", "KILL", &first.sidecar]).unwrap_or_else(|e| panic!("{e}"));
    let second = start(engine, &format!("{test}-2"), node.path(), "ci", &config);
    let line = cache_line(&second);
    assert!(line.contains("slot 1 of 1, scope ci/namespace, warm"), "{test}: the slot of the killed sidecar was not free: {line}");
    let seen = job(&second, WHAT_IS_LEFT);
    assert!(seen.contains("containers: [ ]") || seen.contains("containers: []"), "{test}: {seen}");
    drop(first);
    end(second);
}

#[test]
fn scopes_never_see_each_others_images() {
    let test = "cache-two-scopes";
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(engine) = engine_or_skip(test) else { return };
    let node = tempfile::Builder::new().prefix("dij-node-").tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = config(engine, 2, "20Gi");
    let a = start(engine, &format!("{test}-a"), node.path(), "team-a", &config);
    job(&a, "printf 'FROM busybox\\nRUN echo team-a > /owner\\n' > Dockerfile\ndocker build -q -t team-a-secret:1 . >/dev/null\n");
    end(a);
    let b = start(engine, &format!("{test}-b"), node.path(), "team-b", &config);
    let line = cache_line(&b);
    assert!(line.contains("scope team-b/namespace, cold"), "{test}: {line}");
    let seen = job(&b, WHAT_IS_LEFT);
    assert!(!seen.contains("team-a-secret"), "{test}: team-b sees team-a's image:\n{seen}");
    end(b);
    assert!(node.path().join("cache/team-a/namespace/slot-1/image").is_dir(), "team-a's slot is on the node");
}

#[test]
fn all_slots_busy_starts_cold_and_the_log_says_why() {
    let test = "cache-all-busy";
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(engine) = engine_or_skip(test) else { return };
    let node = tempfile::Builder::new().prefix("dij-node-").tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = config(engine, 1, "20Gi");
    let holder = start(engine, &format!("{test}-holder"), node.path(), "ci", &config);
    let cold = start(engine, &format!("{test}-cold"), node.path(), "ci", &config);
    let line = cache_line(&cold);
    assert!(line.contains("all 1 slots of scope ci/namespace busy, starting cold"), "{test}: {line}");
    let out = job(
        &cold,
        "docker info --format 'root={{.DockerRootDir}}'\nprintf 'FROM busybox\\nRUN echo cold > /x\\nCMD [\"cat\", \"/x\"]\\n' > Dockerfile\ndocker build -q -t c . >/dev/null\ndocker run --pull never --rm c\n",
    );
    assert!(out.contains("root=/var/lib/docker\n") && out.contains("cold"), "{test}: {out}");
    // The cold daemon cannot reach the busy slot either.
    let peek = job(&cold, "docker run --pull never --rm -v /var/lib/dind-injector-cache:/c busybox ls /c | tr '\\n' ' '; echo end\n");
    assert!(!peek.contains("slot-1"), "{test}: {peek}");
    end(cold);
    end(holder);
}

#[test]
fn a_slot_over_its_budget_is_emptied_before_use() {
    let test = "cache-over-budget";
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(engine) = engine_or_skip(test) else { return };
    let node = tempfile::Builder::new().prefix("dij-node-").tempdir().unwrap_or_else(|e| panic!("{e}"));
    // The test images alone are far more than 1 MiB.
    let config = config(engine, 1, "1Mi");
    let first = start(engine, &format!("{test}-1"), node.path(), "ci", &config);
    job(&first, "printf 'FROM busybox\\nRUN echo big > /x\\n' > Dockerfile\ndocker build -q -t over-budget:1 . >/dev/null\n");
    end(first);
    let second = start(engine, &format!("{test}-2"), node.path(), "ci", &config);
    let line = cache_line(&second);
    assert!(line.contains("over cache.maxSlotSize (1 MiB): emptying it"), "{test}: {line}");
    assert!(line.contains("slot 1 of 1, scope ci/namespace, cold, emptied"), "{test}: {line}");
    let seen = job(&second, WHAT_IS_LEFT);
    assert!(!seen.contains("over-budget"), "{test}: the emptied slot still has the image:\n{seen}");
    end(second);
}

/// A representative build: a Debian base image (238 MB, pulled from the registry when absent), a
/// 64 MiB dependency layer and a 5 s step standing in for a dependency install, then the sources
/// (which change with every commit, so the steps from there on run in every job).
const REPRESENTATIVE_BUILD: &str = r#"mkdir -p app/src
date +%s%N > app/src/commit
printf '%s\n' 'FROM 127.0.0.1:5000/ci/job:1' \
  'RUN head -c 67108864 /dev/urandom > /opt/deps.bin && sha256sum /opt/deps.bin > /opt/deps.sum' \
  'RUN sleep 5 && echo dependencies-installed > /opt/deps.ok' \
  'COPY src /app/src' \
  'RUN cat /app/src/commit > /app/built && sleep 1' \
  'CMD ["cat", "/app/built"]' > app/Dockerfile
docker build -t app:ci app >/dev/null
docker run --pull never --rm app:ci >/dev/null
"#;

/// A job that needs several images (its services and tools).
const SEVERAL_IMAGES: &str = r#"for i in job dind docker-cli busybox; do docker pull -q 127.0.0.1:5000/ci/$i:1 >/dev/null; done
docker run --pull never --rm 127.0.0.1:5000/ci/busybox:1 true
"#;

/// The README's cold/warm table: the representative build, a job pulling several images from a
/// registry on the pod's loopback (scripts/test-registry.sh, run in the pod's network namespace),
/// and the sidecar's time to ready. Prints a Markdown table.
#[test]
#[ignore = "a benchmark: make bench-cache"]
fn cold_and_warm_benchmark() {
    let test = "cache-bench";
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(engine) = engine_or_skip(test) else { return };
    let script = repo_root().join("scripts/test-registry.sh");
    let fill = std::process::Command::new("sh").arg(&script).arg("fill").output().unwrap_or_else(|e| panic!("{e}"));
    assert!(fill.status.success(), "test-registry.sh fill:\n{}", String::from_utf8_lossy(&fill.stderr));
    let stdout = String::from_utf8_lossy(&fill.stdout).into_owned();
    let dir =
        stdout.lines().find_map(|l| l.strip_prefix("REGISTRY_DIR=")).unwrap_or_else(|| panic!("no REGISTRY_DIR in {stdout}")).to_owned();
    let node = tempfile::Builder::new().prefix("dij-node-").tempdir().unwrap_or_else(|e| panic!("{e}"));
    let on = config(engine, 4, "20Gi");
    let mut off = on.clone();
    off.cache.mode = CacheMode::Off;
    let runs = [
        ("cache off (emptyDir)", &off),
        ("node cache, first job (cold slot)", &on),
        ("node cache, next job (warm slot)", &on),
        ("node cache, next job (warm slot)", &on),
    ];
    let mut rows = vec![
        "| job | sidecar ready | representative build | several images (4 pulls) | sidecar's cache line |".to_owned(),
        "|---|---|---|---|---|".to_owned(),
    ];
    for (what, config) in runs {
        let sb = if config.cache.mode == CacheMode::Off {
            let pod = review_pod("gitlab");
            let d = inject::plan_injection(&typed(&pod), &NamespaceView::opted_in("ci"), config, &ClusterInfo::default());
            let Outcome::Inject(i) = &d.outcome else { panic!("not injected") };
            Sandbox::start(engine, test, &typed(&apply(&pod, &i.patch)), &i.status.container, "build", None)
                .unwrap_or_else(|e| panic!("{test}: {e}"))
        } else {
            start(engine, test, node.path(), "ci", config)
        };
        let pid = engine.docker(&["inspect", "-f", "{{.State.Pid}}", &sb.pause]).unwrap_or_else(|e| panic!("{e}"));
        let serve = std::process::Command::new("sh")
            .arg(&script)
            .args(["serve", pid.trim(), "5000", &dir])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(serve.status.success(), "test-registry.sh serve:\n{}", String::from_utf8_lossy(&serve.stderr));
        let registry = String::from_utf8_lossy(&serve.stdout).trim().to_owned();
        let t = Instant::now();
        job(&sb, REPRESENTATIVE_BUILD);
        let build = t.elapsed().as_secs_f64();
        let t = Instant::now();
        job(&sb, SEVERAL_IMAGES);
        let pulls = t.elapsed().as_secs_f64();
        let line = cache_line(&sb).replace("dind-injector cache: ", "");
        rows.push(format!(
            "| {what} | {:.1} s | {build:.1} s | {pulls:.1} s | {} |",
            sb.ready_after,
            if line.is_empty() { "-" } else { &line }
        ));
        let _ = std::process::Command::new("sh").arg(&script).args(["stop", &registry]).status();
        end(sb);
    }
    println!("{}", rows.join("\n"));
}
