//! Pod-shaped sandboxes on a real container engine, for tests/jobs.rs.
//!
//! A `Sandbox` is one injected pod run as separate containers on the test engine
//! (scripts/test-engine.sh): a pause container owning the network namespace (on an `--internal`
//! network of its own with MTU 1400: eth0 without a default route, plus the pod's hostAliases
//! as `--add-host`), the injected sidecar, and one
//! job container joined to it with `--network container:<pause>`. Volumes are host directories
//! bind-mounted where the pod mounts them (`subPath`, `readOnly` honoured); the daemon.json
//! ConfigMap is a directory holding daemon.json. Every container gets its command, args, env,
//! working directory, mounts, privileged flag and user exactly as in the pod; only the image is
//! replaced by a local test image (scripts/test-images.sh).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Volume};

/// Why the engine tests cannot run here, if they cannot.
pub fn missing_prerequisite() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1).map(str::to_owned)));
    if uid.as_deref() != Some("0") {
        return Some("not running as root (the test engine is a dockerd, which needs root)".into());
    }
    for tool in ["dockerd", "docker", "debootstrap"] {
        let found =
            Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` is not installed (`make test-deps` installs Debian's docker.io and debootstrap)"));
        }
    }
    None
}

/// The test engine and its images.
pub struct Engine {
    /// `unix://...` of the test engine.
    pub host: String,
    /// NAME -> image reference (dind, job, busybox, docker-cli).
    pub images: BTreeMap<String, String>,
    /// `docker save` of the images the nested daemons get (busybox, docker-cli).
    pub inner_images: PathBuf,
    /// The dockerd version in the dind image (so the sidecar's image name says it).
    pub dind_version: String,
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

/// The engine for `test`, or None (printed as SKIPPED) when it cannot run here; a panic instead
/// under DIND_INJECTOR_REQUIRE_DOCKERD=1 (`make test`), where a skipped engine test is a failure.
pub fn engine_or_skip(test: &str) -> Option<&'static Engine> {
    let why = missing_prerequisite().map(Err).unwrap_or_else(|| engine().map(|_| ()));
    match why {
        Ok(()) => engine().ok(),
        Err(why) => {
            if std::env::var("DIND_INJECTOR_REQUIRE_DOCKERD").as_deref() == Ok("1") {
                panic!("{test}: the engine tests cannot run: {why}");
            }
            // Straight to stderr: the test harness hides what eprintln! prints in a passing test.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why} (set DIND_INJECTOR_REQUIRE_DOCKERD=1 to make this a failure)");
            None
        }
    }
}

/// Starts the test engine and builds the images (both cached); Err says why it cannot.
pub fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE.get_or_init(start_engine).as_ref().map_err(Clone::clone)
}

fn start_engine() -> Result<Engine, String> {
    let started = Instant::now();
    let out = Command::new("sh").arg(script("test-engine.sh")).arg("start").output().map_err(|e| format!("scripts/test-engine.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("scripts/test-engine.sh start failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    let sock = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let host = format!("unix://{sock}");
    let out = Command::new("sh")
        .arg(script("test-images.sh"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("scripts/test-images.sh: {e}"))?;
    if !out.status.success() {
        return Err("scripts/test-images.sh failed (its output is above)".into());
    }
    let images: BTreeMap<String, String> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))).collect();
    for name in ["dind", "job", "busybox", "docker-cli"] {
        if !images.contains_key(name) {
            return Err(format!("scripts/test-images.sh did not name the {name} image"));
        }
    }
    let cache = PathBuf::from(std::env::var("DIND_INJECTOR_IMAGE_CACHE").unwrap_or_else(|_| "/var/cache/dind-injector/images".into()));
    let key = images["busybox"].rsplit(':').next().unwrap_or("none").to_owned();
    let inner_images = cache.join(format!("inner-{key}.tar"));
    if !inner_images.exists() {
        // Inside the nested daemon the images are called what a job script would pull.
        let e = Engine { host: host.clone(), images: images.clone(), inner_images: inner_images.clone(), dind_version: String::new() };
        e.docker(&["tag", &images["busybox"], "busybox:latest"])?;
        e.docker(&["tag", &images["docker-cli"], "docker:cli"])?;
        let part = cache.join(format!("inner-{key}.tar.{}", std::process::id()));
        e.docker(&["save", "-o", &part.display().to_string(), "busybox:latest", "docker:cli"])?;
        std::fs::rename(&part, &inner_images).map_err(|e| format!("{}: {e}", inner_images.display()))?;
    }
    sweep_leftovers(&host);
    let mut engine = Engine { host, images, inner_images, dind_version: String::new() };
    let v = engine.docker(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        "none",
        "--entrypoint",
        "dockerd",
        &engine.images["dind"],
        "--version",
    ])?;
    engine.dind_version = v
        .split_whitespace()
        .nth(2)
        .map(|v| v.trim_end_matches(',').chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect())
        .unwrap_or_default();
    eprintln!(
        "test engine {} ready in {:.1}s; images {:?}; dockerd {} in the dind image",
        engine.host,
        started.elapsed().as_secs_f64(),
        engine.images,
        engine.dind_version
    );
    Ok(engine)
}

impl Engine {
    /// `docker save` of the job image as `ci-db:latest` (Debian with redis and xz): the memory
    /// test's database and build base inside the nested daemon; made once per recipe.
    pub fn db_image(&self) -> Result<PathBuf, String> {
        static LOCK: Mutex<()> = Mutex::new(());
        let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let key = self.images["job"].rsplit(':').next().unwrap_or("none").to_owned();
        let tar = self.inner_images.with_file_name(format!("inner-db-{key}.tar"));
        if !tar.exists() {
            self.docker(&["tag", &self.images["job"], "ci-db:latest"])?;
            let part = tar.with_extension(format!("tar.{}", std::process::id()));
            self.docker(&["save", "-o", &part.display().to_string(), "ci-db:latest"])?;
            std::fs::rename(&part, &tar).map_err(|e| format!("{}: {e}", tar.display()))?;
        }
        Ok(tar)
    }

    /// A `docker` command against the test engine.
    pub fn cmd(&self) -> Command {
        let docker = if Path::new("/usr/bin/docker").exists() { "/usr/bin/docker" } else { "docker" };
        let mut c = Command::new(docker);
        c.env("DOCKER_HOST", &self.host).env_remove("DOCKER_TLS_VERIFY").env_remove("DOCKER_CERT_PATH").env_remove("DOCKER_CONTEXT");
        c
    }

    /// Runs `docker ARGS`; Ok(stdout) or Err(everything it said).
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = self.cmd().args(args).output().map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "docker {} ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// How long one job script may run.
pub const JOB_TIMEOUT_SECS: u32 = 300;

/// The MTU of the pod's interface (`eth0`).
pub const POD_MTU: u32 = 1400;

/// At most two sandboxes at a time (the machine is shared).
pub struct Slot;

static SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

impl Slot {
    pub fn take() -> Slot {
        let (m, cv) = &SLOTS;
        let mut n = m.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= 2 {
            n = cv.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (m, cv) = &SLOTS;
        let mut n = m.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        cv.notify_one();
    }
}

/// What a job script printed.
pub struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub output: String,
}

/// One pod, running. Dropping it removes its containers and directories.
pub struct Sandbox {
    pub engine: &'static Engine,
    pub what: String,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub pause: String,
    pub sidecar: String,
    pub job: String,
    containers: Vec<String>,
    network: Option<String>,
    pub sidecar_spec: Container,
    pub job_spec: Container,
    /// hostPath volumes: where each is in the test's stand-in for the node's filesystem.
    host_paths: BTreeMap<String, PathBuf>,
    /// Seconds from the sidecar's start until its startup probe passed.
    pub ready_after: f64,
    _slot: Slot,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for c in self.containers.iter().rev() {
            let _ = self.engine.cmd().args(["rm", "-f", "-v", c]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        if let Some(net) = &self.network {
            let _ = self.engine.cmd().args(["network", "rm", net]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        // The nested daemon's files belong to root and may be read-only; TempDir's own removal
        // handles the rest.
        let _ = Command::new("rm").arg("-rf").arg(self.dir.path().join("volumes")).status();
    }
}

fn short(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

impl Sandbox {
    /// Runs `pod` (already injected): pause, then the sidecar, then — after its startup probe
    /// (native) or its postStart hook (container mode) succeeded, as the kubelet orders them —
    /// the job container `job`. `daemon_json` goes into the daemon.json ConfigMap's directory.
    pub fn start(
        engine: &'static Engine,
        what: &str,
        pod: &Pod,
        sidecar: &str,
        job: &str,
        daemon_json: Option<&str>,
    ) -> Result<Sandbox, String> {
        Sandbox::start_on(engine, what, pod, sidecar, job, daemon_json, None)
    }

    /// [`Sandbox::start`] on a node whose filesystem is the directory `node`: a hostPath volume
    /// `/a/b` is `node/a/b` (`DirectoryOrCreate`: made when missing), shared by every sandbox
    /// started on the same node and left in place when the sandbox goes.
    pub fn start_on(
        engine: &'static Engine,
        what: &str,
        pod: &Pod,
        sidecar: &str,
        job: &str,
        daemon_json: Option<&str>,
        node: Option<&Path>,
    ) -> Result<Sandbox, String> {
        Sandbox::start_with(engine, what, pod, sidecar, job, daemon_json, node, false)
    }

    /// [`Sandbox::start`] with the sidecar's memory limit applied as the kubelet applies it: the
    /// container's memory cgroup capped at `resources.limits.memory` (no swap), in a cgroup
    /// namespace of its own so that the nested daemon's containers are children of that cgroup
    /// and count against it, as on a cgroup v2 node.
    pub fn start_memory_limited(
        engine: &'static Engine,
        what: &str,
        pod: &Pod,
        sidecar: &str,
        job: &str,
        daemon_json: Option<&str>,
    ) -> Result<Sandbox, String> {
        Sandbox::start_with(engine, what, pod, sidecar, job, daemon_json, None, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_with(
        engine: &'static Engine,
        what: &str,
        pod: &Pod,
        sidecar: &str,
        job: &str,
        daemon_json: Option<&str>,
        node: Option<&Path>,
        memory_limited: bool,
    ) -> Result<Sandbox, String> {
        let slot = Slot::take();
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let prefix = format!("dij-{}-{n}-{}", std::process::id(), short(what));
        let dir = tempfile::Builder::new().prefix("dij-pod-").tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let spec = pod.spec.clone().unwrap_or_default();
        let all: Vec<Container> = spec.init_containers.clone().unwrap_or_default().into_iter().chain(spec.containers.clone()).collect();
        let find =
            |name: &str| all.iter().find(|c| c.name == name).cloned().ok_or_else(|| format!("{what}: the pod has no container {name}"));
        let sidecar_spec = find(sidecar)?;
        let job_spec = find(job)?;
        let mut sb = Sandbox {
            engine,
            what: what.to_owned(),
            prefix: prefix.clone(),
            dir,
            pause: format!("{prefix}-pause"),
            sidecar: format!("{prefix}-{}", sidecar_spec.name),
            job: format!("{prefix}-{}", job_spec.name),
            containers: Vec::new(),
            network: None,
            sidecar_spec: sidecar_spec.clone(),
            job_spec: job_spec.clone(),
            host_paths: BTreeMap::new(),
            ready_after: 0.0,
            _slot: slot,
        };

        // The volumes: one host directory each, as the kubelet makes them.
        let psc = spec.security_context.clone().unwrap_or_default();
        let volumes: Vec<Volume> = spec.volumes.clone().unwrap_or_default();
        for v in &volumes {
            if let Some(hp) = &v.host_path {
                let node = node.ok_or_else(|| format!("{what}: hostPath volume {} needs a node directory (Sandbox::start_on)", v.name))?;
                let d = node.join(hp.path.trim_start_matches('/'));
                if hp.type_.as_deref() != Some("DirectoryOrCreate") && !d.is_dir() {
                    return Err(format!("{what}: hostPath {} does not exist on the node", hp.path));
                }
                std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
                sb.host_paths.insert(v.name.clone(), d);
                continue;
            }
            let d = sb.volume_dir(&v.name);
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            if v.empty_dir.is_some() || v.ephemeral.is_some() || v.persistent_volume_claim.is_some() {
                // emptyDir is world-writable; with fsGroup the kubelet gives the group to it
                // and sets setgid so new files keep it.
                let mode = if psc.fs_group.is_some() { "2777" } else { "0777" };
                run(Command::new("chmod").args([mode]).arg(&d), "chmod")?;
                if let Some(g) = psc.fs_group {
                    run(Command::new("chgrp").arg(g.to_string()).arg(&d), "chgrp")?;
                }
            }
            if let (Some(_), Some(text)) = (&v.config_map, daemon_json) {
                std::fs::write(d.join("daemon.json"), text).map_err(|e| format!("daemon.json: {e}"))?;
            }
            if v.projected.is_some() || v.secret.is_some() {
                // The service-account token the apiserver projects: a stand-in file.
                std::fs::write(d.join("token"), "not-a-real-token").map_err(|e| format!("token: {e}"))?;
                std::fs::write(d.join("namespace"), "ci").map_err(|e| format!("namespace: {e}"))?;
            }
        }

        // The pod's network: an `--internal` bridge of its own (no default route, so nothing
        // leaves this machine; the only other address on it is the engine's end of the bridge),
        // with an MTU below the usual 1500, as on an overlay network, so `mtu: auto` shows.
        sb.network = Some(format!("{prefix}-net"));
        engine.docker(&[
            "network",
            "create",
            "--internal",
            "-o",
            &format!("com.docker.network.driver.mtu={POD_MTU}"),
            &format!("{prefix}-net"),
        ])?;
        // The pause container owns the network namespace, and /etc/hosts with the pod's hostAliases.
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--pull".into(),
            "never".into(),
            "--name".into(),
            sb.pause.clone(),
            "--network".into(),
            format!("{prefix}-net"),
            "--ipc".into(),
            "shareable".into(),
        ];
        args.push("--hostname".into());
        args.push(pod.metadata.name.clone().unwrap_or_else(|| "pod".into()).chars().take(63).collect());
        for alias in spec.host_aliases.iter().flatten() {
            for h in alias.hostnames.iter().flatten() {
                args.push("--add-host".into());
                args.push(format!("{h}:{}", alias.ip));
            }
        }
        args.extend(["--entrypoint".into(), "/bin/sleep".into(), engine.images["job"].clone(), "infinity".into()]);
        sb.create(&args)?;
        // The engine (20.10, no iptables) still gives an internal network's containers a default
        // route via its end of the bridge; the pod must have none, so it goes before anything
        // else runs in the namespace.
        let pid = engine.docker(&["inspect", "-f", "{{.State.Pid}}", &sb.pause])?;
        run(Command::new("nsenter").args(["-t", pid.trim(), "-n", "ip", "route", "del", "default"]), "removing the pod's default route")?;

        // The sidecar, exactly as injected.
        let started = Instant::now();
        let mut args = sb.run_args(&sidecar_spec, &sb.sidecar.clone(), &engine.images["dind"], &psc, false)?;
        if memory_limited {
            let limit = sidecar_spec
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get("memory"))
                .and_then(|q| dind_injector::quantity::Quantity::parse(&q.0).ok())
                .map(|q| q.milli() / 1000)
                .ok_or_else(|| format!("{what}: the sidecar has no memory limit to apply"))?;
            let at = args.iter().position(|a| a == "--name").unwrap_or(0);
            let flags = ["--memory".to_owned(), limit.to_string(), "--memory-swap".to_owned(), limit.to_string()];
            let flags = flags.into_iter().chain(["--cgroupns".to_owned(), "private".to_owned()]);
            args.splice(at..at, flags);
        }
        sb.create(&args)?;
        if let Some(probe) = sidecar_spec.startup_probe.as_ref().and_then(|p| p.exec.as_ref()).and_then(|e| e.command.clone()) {
            let period = sidecar_spec.startup_probe.as_ref().and_then(|p| p.period_seconds).unwrap_or(10).max(1) as u64;
            let failures = sidecar_spec.startup_probe.as_ref().and_then(|p| p.failure_threshold).unwrap_or(3).max(1) as u64;
            let deadline = Instant::now() + Duration::from_secs(period * failures);
            loop {
                let refs: Vec<&str> = probe.iter().map(String::as_str).collect();
                if sb.exec_in(&sb.sidecar.clone(), &refs, None).map(|o| o.status.success()).unwrap_or(false) {
                    break;
                }
                let state = engine.docker(&["inspect", "-f", "{{.State.Status}}", &sb.sidecar]).unwrap_or_default();
                if state.trim() != "running" || Instant::now() > deadline {
                    return Err(format!(
                        "{what}: the sidecar's startup probe never passed (sidecar {}); its log:\n{}",
                        state.trim(),
                        sb.logs(&sb.sidecar)
                    ));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        if let Some(hook) = sidecar_spec
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.clone())
        {
            let refs: Vec<&str> = hook.iter().map(String::as_str).collect();
            let out = sb.exec_in(&sb.sidecar.clone(), &refs, None)?;
            if !out.status.success() {
                return Err(format!(
                    "{what}: the sidecar's postStart hook failed:\n{}{}\nsidecar log:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    sb.logs(&sb.sidecar)
                ));
            }
        }
        sb.ready_after = started.elapsed().as_secs_f64();

        // The job container: the runner's own process is not run (nothing would drive it); it
        // sleeps, and job scripts are exec'd into it as GitLab's runner does.
        let args = sb.run_args(&job_spec, &sb.job.clone(), &engine.images["job"], &psc, true)?;
        sb.create(&args)?;

        // The registry pull stand-in: the nested daemon gets busybox and docker:cli.
        sb.load_into_daemon(&engine.inner_images)
            .map_err(|e| format!("{what}: loading the test images into the nested daemon failed: {e}"))?;
        Ok(sb)
    }

    /// Loads an image archive into the nested daemon (the registry pull stand-in).
    pub fn load_into_daemon(&self, tar: &Path) -> Result<(), String> {
        let mut load: Vec<String> = self
            .sidecar_spec
            .startup_probe
            .as_ref()
            .and_then(|p| p.exec.as_ref())
            .and_then(|e| e.command.clone())
            .unwrap_or_else(|| vec!["docker".into(), "info".into()]);
        load.pop();
        load.push("load".into());
        let refs: Vec<&str> = load.iter().map(String::as_str).collect();
        let data = std::fs::read(tar).map_err(|e| format!("{}: {e}", tar.display()))?;
        let out = self.exec_in(&self.sidecar.clone(), &refs, Some(&data))?;
        if out.status.success() { Ok(()) } else { Err(format!("docker load: {}", String::from_utf8_lossy(&out.stderr))) }
    }

    fn create(&mut self, args: &[String]) -> Result<(), String> {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Some(i) = args.iter().position(|a| a == "--name") {
            self.containers.push(args[i + 1].clone());
        }
        self.engine.docker(&refs).map(|_| ())
    }

    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.host_paths.get(name).cloned().unwrap_or_else(|| self.dir.path().join("volumes").join(name))
    }

    /// `docker run` arguments for a pod container.
    fn run_args(
        &self,
        c: &Container,
        name: &str,
        image: &str,
        psc: &k8s_openapi::api::core::v1::PodSecurityContext,
        keep_alive: bool,
    ) -> Result<Vec<String>, String> {
        let mut a: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--pull".into(),
            "never".into(),
            "--name".into(),
            name.into(),
            "--network".into(),
            format!("container:{}", self.pause),
        ];
        a.extend(["--ipc".into(), format!("container:{}", self.pause)]);
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.privileged == Some(true) {
            a.extend(privileged_flags());
        }
        let user = sc.run_as_user.or(psc.run_as_user);
        let group = sc.run_as_group.or(psc.run_as_group);
        if let Some(u) = user {
            a.push("--user".into());
            a.push(match group {
                Some(g) => format!("{u}:{g}"),
                None => u.to_string(),
            });
        } else if let Some(g) = group {
            a.push("--user".into());
            a.push(format!("0:{g}"));
        }
        for g in psc.fs_group.iter().chain(psc.supplemental_groups.iter().flatten()) {
            a.push("--group-add".into());
            a.push(g.to_string());
        }
        for e in c.env.iter().flatten() {
            // Only literal values; the fixtures' fieldRef/secretKeyRef entries are not the daemon's business.
            if let Some(v) = &e.value {
                a.push("-e".into());
                a.push(format!("{}={v}", e.name));
            } else if e.value_from.is_some() {
                a.push("-e".into());
                a.push(format!("{}=from-the-apiserver", e.name));
            } else {
                a.push("-e".into());
                a.push(format!("{}=", e.name));
            }
        }
        if let Some(w) = &c.working_dir {
            a.push("-w".into());
            a.push(w.clone());
        }
        for m in c.volume_mounts.iter().flatten() {
            let mut src = self.volume_dir(&m.name);
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                src = src.join(sub);
                // The kubelet creates a missing subPath directory.
                std::fs::create_dir_all(&src).map_err(|e| format!("{}: {e}", src.display()))?;
            }
            if !src.exists() {
                return Err(format!("{}: mount {} names no volume of the pod", self.what, m.name));
            }
            let ro = if m.read_only == Some(true) { ",readonly" } else { "" };
            a.push("--mount".into());
            a.push(format!("type=bind,src={},dst={}{ro}", src.display(), m.mount_path));
        }
        if keep_alive {
            a.extend(["--entrypoint".into(), "/bin/sleep".into(), image.into(), "infinity".into()]);
            return Ok(a);
        }
        let command = c.command.clone().unwrap_or_default();
        if let Some((first, rest)) = command.split_first() {
            a.push("--entrypoint".into());
            a.push(first.clone());
            a.push(image.into());
            a.extend(rest.iter().cloned());
        } else {
            a.push(image.into());
        }
        a.extend(c.args.clone().unwrap_or_default());
        Ok(a)
    }

    fn exec_in(&self, container: &str, argv: &[&str], stdin: Option<&[u8]>) -> Result<Output, String> {
        let mut cmd = self.engine.cmd();
        cmd.arg("exec");
        if stdin.is_some() {
            cmd.arg("-i");
        }
        cmd.arg(container)
            .args(argv)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("docker exec: {e}"))?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(data).map_err(|e| format!("docker exec stdin: {e}"))?;
        }
        child.wait_with_output().map_err(|e| format!("docker exec: {e}"))
    }

    /// Runs a job script in the job container, as its user, in `dir`, with the container's env.
    pub fn job(&self, dir: &str, script: &str) -> Run {
        let full = format!("set -e\nmkdir -p {dir}\ncd {dir}\n{script}");
        let started = Instant::now();
        // A hung job must not hang the test run: five minutes at most (coreutils' timeout).
        let limit = JOB_TIMEOUT_SECS.to_string();
        match self.exec_in(&self.job.clone(), &["timeout", &limit, "/bin/sh", "-c", &full], None) {
            Ok(o) => Run {
                ok: o.status.success(),
                code: o.status.code(),
                output: format!(
                    "{}{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr),
                    if started.elapsed() > Duration::from_secs(30) {
                        format!("(took {:.0}s)\n", started.elapsed().as_secs_f64())
                    } else {
                        String::new()
                    }
                ),
            },
            Err(e) => Run { ok: false, code: None, output: e },
        }
    }

    pub fn logs(&self, container: &str) -> String {
        self.engine
            .cmd()
            .args(["logs", "--tail", "60", container])
            .output()
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_default()
    }

    /// Everything `container` printed (stdout and stderr).
    pub fn all_logs(&self, container: &str) -> String {
        self.engine
            .cmd()
            .args(["logs", container])
            .output()
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_default()
    }

    /// The sidecar's `dind-injector cache:` lines.
    pub fn cache_lines(&self) -> Vec<String> {
        self.all_logs(&self.sidecar).lines().filter(|l| l.contains("dind-injector cache:")).map(str::to_owned).collect()
    }

    /// A command in the sidecar (inspection only: the network namespace, the iptables backend);
    /// what it printed. Panics when it cannot run or exits non-zero: an error's text must never
    /// stand in for what a check reads.
    pub fn in_sidecar(&self, script: &str) -> String {
        match self.exec_in(&self.sidecar.clone(), &["/bin/sh", "-c", script], None) {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => panic!(
                "{}: `{script}` in the sidecar exited {}:\n{}{}\nsidecar log:\n{}",
                self.what,
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                self.logs(&self.sidecar)
            ),
            Err(e) => panic!("{}: `{script}` in the sidecar: {e}", self.what),
        }
    }

    /// What the kubelet counts for `container` (the engine's name): its writable layer (overlay2's
    /// upper directory) and its log file, in bytes, as `measure` measures a path.
    pub fn layer_and_log(&self, container: &str, measure: impl Fn(&Path) -> u64) -> Result<u64, String> {
        let out = self.engine.docker(&["inspect", "-f", "{{.GraphDriver.Data.UpperDir}}\n{{.LogPath}}", container])?;
        let mut lines = out.lines();
        let upper = lines.next().unwrap_or_default().trim();
        let log = lines.next().unwrap_or_default().trim();
        if upper.is_empty() || upper == "<no value>" {
            return Err(format!("{container}: the engine reports no writable layer (storage driver not overlay2?): {out:?}"));
        }
        Ok(measure(Path::new(upper)) + if log.is_empty() { 0 } else { measure(Path::new(log)) })
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(format!("{what}: {}", String::from_utf8_lossy(&out.stderr))) }
}

const CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capabilities (by name) this process's bounding set lacks: a container cannot get them.
pub fn missing_capabilities() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bnd =
        status.lines().find_map(|l| l.strip_prefix("CapBnd:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).unwrap_or(u64::MAX);
    let last: usize =
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(CAPS.len() - 1);
    (0..=last.min(CAPS.len() - 1)).filter(|bit| bnd & (1u64 << bit) == 0).map(|bit| CAPS[bit]).collect()
}

/// `privileged: true` as `docker run` flags. `--privileged` asks the runtime for every
/// capability; where this machine's bounding set lacks one (some sandboxed CI hosts drop
/// CAP_SYS_RESOURCE) runc refuses with "unable to apply caps: operation not permitted", so the
/// same container is built from its parts: every capability the host has, no seccomp, AppArmor
/// or masked /proc paths, every device allowed, the host's loop devices. What that leaves read-only (/sys and the cgroup
/// v1 hierarchies) the test image's `dind` wrapper makes writable, as privileged would.
pub fn privileged_flags() -> Vec<String> {
    let missing = missing_capabilities();
    if missing.is_empty() {
        return vec!["--privileged".into()];
    }
    let mut f: Vec<String> = vec!["--cap-add".into(), "ALL".into()];
    for cap in missing {
        f.push("--cap-drop".into());
        f.push(cap.into());
    }
    for opt in ["apparmor=unconfined", "seccomp=unconfined", "systempaths=unconfined", "label=disable"] {
        f.push("--security-opt".into());
        f.push(opt.into());
    }
    f.push("--device-cgroup-rule".into());
    f.push("a *:* rwm".into());
    // --privileged also gives the container the host's device nodes; the loop devices are the
    // ones a sidecar uses (the Kata sidecar's loop disk).
    let mut loops: Vec<String> =
        std::fs::read_dir("/dev").map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect()).unwrap_or_default();
    loops.retain(|n| n == "loop-control" || n.strip_prefix("loop").is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit())));
    loops.sort();
    for n in loops {
        f.push("--device".into());
        f.push(format!("/dev/{n}"));
    }
    f
}

/// Removes what a killed test run left behind (its Drop guards never ran): containers and
/// networks named `dij-<pid>-...` whose process is gone.
fn sweep_leftovers(host: &str) {
    let e = Engine { host: host.to_owned(), images: BTreeMap::new(), inner_images: PathBuf::new(), dind_version: String::new() };
    let dead = |name: &str| {
        name.strip_prefix("dij-")
            .and_then(|r| r.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists())
    };
    let names = e.docker(&["ps", "-a", "--filter", "name=^dij-", "--format", "{{.Names}}"]).unwrap_or_default();
    for name in names.lines().filter(|n| dead(n)) {
        let _ = e.docker(&["rm", "-f", "-v", name]);
    }
    let nets = e.docker(&["network", "ls", "--filter", "name=^dij-", "--format", "{{.Name}}"]).unwrap_or_default();
    for name in nets.lines().filter(|n| dead(n)) {
        let _ = e.docker(&["network", "rm", name]);
    }
}
