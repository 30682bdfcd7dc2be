//! Pod-shaped sandboxes in a user namespace of their own, for the `userns` isolation mode.
//!
//! Docker cannot give one container a user namespace of its own; Debian's podman can. A
//! `UsernsPod` is an injected pod run as podman containers sharing the user, network and IPC
//! namespaces of a pause container started with `--userns=auto` (an id range of its own from
//! /etc/subuid's `containers` entry, as the kubelet gives a `hostUsers: false` pod) and no network
//! but its loopback: the sidecar exactly as injected (command, args, env, mounts, user,
//! and its security context: the added capabilities, `procMount: Unmasked` as `unmask=ALL`, the
//! seccomp profile), then the job container sharing the pod's namespaces and volumes. Volumes are
//! host directories owned by the pod's root (`:U`), as the kubelet's id-mapped mounts show them.
//!
//! As on the kubelet: runc (this host's hybrid cgroup layout is one crun 1.8 refuses), the
//! container runtime's default capabilities (containerd's: podman's own set lacks MKNOD, NET_RAW
//! and AUDIT_WRITE), and explicit `nofile`/`nproc` limits (root here lacks CAP_SYS_RESOURCE, so
//! podman cannot raise them to its defaults).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::support::kubelet::Usage;

/// What the runtime gives a container before its securityContext adds any (containerd's default).
const RUNTIME_DEFAULT_CAPS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Why podman cannot run user-namespaced pods here, if it cannot.
pub fn missing_prerequisite() -> Option<String> {
    for tool in ["podman", "runc"] {
        let found =
            Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` is not installed (`make test-deps` installs Debian's podman and runc)"));
        }
    }
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if !subuid.lines().any(|l| l.starts_with("containers:")) {
        return Some("/etc/subuid has no `containers` range for --userns=auto (`make test-deps` adds it)".into());
    }
    None
}

/// `podman` with the runtime and cgroup manager the sandboxes use.
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
    c
}

/// Runs `podman ARGS`; Ok(stdout) or Err(everything it said).
pub fn run(args: &[&str]) -> Result<String, String> {
    let out = podman().args(args).output().map_err(|e| format!("podman {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "podman {} ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The test images (`dind`, `job`) in podman's store, imported from the root file systems
/// scripts/test-images.sh built (`images` is its NAME -> reference map); once per recipe.
pub fn import_images(images: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    // Once per test process: the userns tests run in parallel and would import the same tars.
    static IMPORTED: std::sync::Mutex<Option<BTreeMap<String, String>>> = std::sync::Mutex::new(None);
    let mut done = IMPORTED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(out) = done.as_ref() {
        return Ok(out.clone());
    }
    let out = import_images_once(images)?;
    // Earlier recipes' images are not needed any more (scripts/test-images.sh does the same on
    // the test engine).
    let listed = run(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).unwrap_or_default();
    for old in listed.lines().filter(|l| l.starts_with("localhost/dind-injector-test/") && !out.values().any(|v| v == l)) {
        let _ = run(&["rmi", "-f", old]);
    }
    *done = Some(out.clone());
    Ok(out)
}

fn import_images_once(images: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    let cache = PathBuf::from(std::env::var("DIND_INJECTOR_IMAGE_CACHE").unwrap_or_else(|_| "/var/cache/dind-injector/images".into()));
    let mut out = BTreeMap::new();
    for (name, entrypoint) in [("dind", "[\"dockerd-entrypoint.sh\"]"), ("job", "[\"/bin/sh\"]")] {
        let reference = images.get(name).ok_or_else(|| format!("scripts/test-images.sh named no {name} image"))?;
        let key = reference.rsplit(':').next().unwrap_or("none");
        let local = format!("localhost/dind-injector-test/{name}:{key}");
        if run(&["image", "exists", &local]).is_err() {
            let tar = cache.join(format!("{name}-{key}.tar"));
            if !tar.exists() {
                return Err(format!("{}: missing (scripts/test-images.sh builds it)", tar.display()));
            }
            run(&[
                "import",
                "--change",
                &format!("ENTRYPOINT {entrypoint}"),
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                &tar.display().to_string(),
                &local,
            ])?;
        }
        out.insert(name.to_owned(), local);
    }
    Ok(out)
}

/// What a job script printed.
pub struct Run {
    pub ok: bool,
    pub output: String,
}

/// One injected pod running in a user namespace of its own. Dropping it removes it.
pub struct UsernsPod {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub sidecar: String,
    pub job: String,
    pub sidecar_spec: Container,
}

impl Drop for UsernsPod {
    fn drop(&mut self) {
        for c in [&self.job, &self.sidecar, &format!("{}-pause", self.name)] {
            let _ = podman().args(["rm", "-f", "-t", "0", c]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        let _ = Command::new("rm").arg("-rf").arg(self.dir.path().join("volumes")).status();
    }
}

fn hard_limit(resource: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("ulimit -H{resource}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    out.ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "1024".into())
}

impl UsernsPod {
    /// Runs `pod` (already injected): the sidecar as injected, its startup probe until it passes,
    /// then the job container `job`; then the nested daemon gets the inner images from `inner`.
    pub fn start(
        what: &str,
        pod: &Pod,
        sidecar: &str,
        job: &str,
        images: &BTreeMap<String, String>,
        inner: &Path,
        daemon_json: &str,
    ) -> Result<UsernsPod, String> {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("dij-{}-{n}-{what}", std::process::id());
        let dir = tempfile::Builder::new().prefix("dij-userns-").tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let spec = pod.spec.clone().unwrap_or_default();
        let all: Vec<Container> = spec.init_containers.clone().unwrap_or_default().into_iter().chain(spec.containers.clone()).collect();
        let find = |n: &str| all.iter().find(|c| c.name == n).cloned().ok_or_else(|| format!("{what}: the pod has no container {n}"));
        let sidecar_spec = find(sidecar)?;
        let job_spec = find(job)?;
        let sb = UsernsPod {
            name: name.clone(),
            dir,
            sidecar: format!("{name}-{sidecar}"),
            job: format!("{name}-{job}"),
            sidecar_spec: sidecar_spec.clone(),
        };
        if spec.host_users != Some(false) {
            return Err(format!("{what}: the injected pod does not say hostUsers: false"));
        }
        for v in spec.volumes.iter().flatten() {
            let d = sb.dir.path().join("volumes").join(&v.name);
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            if v.config_map.is_some() {
                std::fs::write(d.join("daemon.json"), daemon_json).map_err(|e| format!("daemon.json: {e}"))?;
            }
            if v.projected.is_some() || v.secret.is_some() {
                std::fs::write(d.join("token"), "not-a-real-token").map_err(|e| format!("token: {e}"))?;
            }
        }
        // nofile at this process's hard limit; nproc at 32768: runc is refused (EPERM) raising it
        // to this host's larger hard limit from inside the user namespace.
        let (nofile, nproc) = (hard_limit("n"), "32768");
        let limits = [format!("--ulimit=nofile={nofile}:{nofile}"), format!("--ulimit=nproc={nproc}:{nproc}")];
        // The pod's namespaces (user, network: loopback only, IPC) belong to a pause container, as
        // the kubelet's sandbox holds them; the pod's containers join it.
        let pause = format!("{name}-pause");
        let mut a: Vec<String> = vec!["run".into(), "-d".into(), "--pull".into(), "never".into(), "--name".into(), pause.clone()];
        a.extend(["--userns".into(), "auto:size=65536".into(), "--network".into(), "none".into(), "--ipc".into(), "shareable".into()]);
        a.extend(limits.iter().cloned());
        a.extend(["--entrypoint".into(), "/bin/sleep".into(), images["job"].clone(), "infinity".into()]);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&refs)?;
        let base = |c: &Container, cname: &str| -> Result<Vec<String>, String> {
            let mut a: Vec<String> = vec!["run".into(), "-d".into(), "--pull".into(), "never".into(), "--name".into(), cname.into()];
            for ns in ["userns", "network", "ipc"] {
                a.extend([format!("--{ns}"), format!("container:{pause}")]);
            }
            a.extend(limits.iter().cloned());
            a.extend(["--cap-drop".into(), "ALL".into()]);
            for cap in RUNTIME_DEFAULT_CAPS {
                a.extend(["--cap-add".into(), cap.into()]);
            }
            let sc = c.security_context.clone().unwrap_or_default();
            if sc.privileged == Some(true) {
                return Err(format!("{what}: container {} is privileged, which a userns pod must never be", c.name));
            }
            for cap in sc.capabilities.as_ref().and_then(|k| k.add.clone()).unwrap_or_default() {
                a.extend(["--cap-add".into(), cap]);
            }
            if sc.proc_mount.as_deref() == Some("Unmasked") {
                a.extend(["--security-opt".into(), "unmask=ALL".into()]);
            }
            match sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()) {
                Some("Unconfined") => a.extend(["--security-opt".into(), "seccomp=unconfined".into()]),
                Some(other) if other != "RuntimeDefault" => return Err(format!("{what}: seccomp {other} is not modelled")),
                _ => {}
            }
            a.extend(["--user".into(), sc.run_as_user.unwrap_or(0).to_string()]);
            for e in c.env.iter().flatten() {
                a.push("-e".into());
                a.push(format!(
                    "{}={}",
                    e.name,
                    e.value.clone().unwrap_or_else(|| if e.value_from.is_some() { "from-the-apiserver".into() } else { String::new() })
                ));
            }
            for m in c.volume_mounts.iter().flatten() {
                let mut src = sb.dir.path().join("volumes").join(&m.name);
                if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    src = src.join(sub);
                    std::fs::create_dir_all(&src).map_err(|e| format!("{}: {e}", src.display()))?;
                }
                let ro = if m.read_only == Some(true) { ",ro" } else { "" };
                // :U chowns the directory to the pod's root, as an id-mapped mount shows it.
                a.extend(["-v".into(), format!("{}:{}:U{ro}", src.display(), m.mount_path)]);
            }
            Ok(a)
        };
        let mut a = base(&sidecar_spec, &sb.sidecar)?;
        let command = sidecar_spec.command.clone().unwrap_or_default();
        let (first, rest) = command.split_first().ok_or_else(|| format!("{what}: the sidecar has no command"))?;
        a.extend(["--entrypoint".into(), first.clone(), images["dind"].clone()]);
        a.extend(rest.iter().cloned());
        a.extend(sidecar_spec.args.clone().unwrap_or_default());
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&refs)?;
        let probe = sidecar_spec.startup_probe.as_ref().and_then(|p| p.exec.as_ref()).and_then(|e| e.command.clone()).unwrap_or_default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let mut cmd = vec!["exec", sb.sidecar.as_str()];
            cmd.extend(probe.iter().map(String::as_str));
            if run(&cmd).is_ok() {
                break;
            }
            let state = run(&["inspect", "-f", "{{.State.Status}}", &sb.sidecar]).unwrap_or_default();
            if state.trim() != "running" || std::time::Instant::now() > deadline {
                return Err(format!(
                    "{what}: the sidecar's startup probe never passed ({}); its log:\n{}",
                    state.trim(),
                    sb.logs(&sb.sidecar)
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let mut a = base(&job_spec, &sb.job)?;
        a.extend(["--entrypoint".into(), "/bin/sleep".into(), images["job"].clone(), "infinity".into()]);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&refs)?;
        // The registry pull stand-in: the nested daemon gets busybox and docker:cli.
        let mut load: Vec<String> = probe.clone();
        load.pop();
        load.push("load".into());
        let tar = std::fs::File::open(inner).map_err(|e| format!("{}: {e}", inner.display()))?;
        let mut cmd = podman();
        cmd.args(["exec", "-i", &sb.sidecar]).args(&load).stdin(tar).stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = cmd.output().map_err(|e| format!("podman exec: {e}"))?;
        if !out.status.success() {
            return Err(format!("{what}: loading the inner images failed:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(sb)
    }

    /// Runs a job script in the job container, in `dir`.
    pub fn job(&self, dir: &str, script: &str) -> Run {
        let full = format!("set -e\nmkdir -p {dir}\ncd {dir}\n{script}");
        match podman().args(["exec", &self.job, "timeout", "300", "/bin/sh", "-c", &full]).output() {
            Ok(o) => Run {
                ok: o.status.success(),
                output: format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
            },
            Err(e) => Run { ok: false, output: e.to_string() },
        }
    }

    /// A command in the sidecar; its output, or a panic when it fails.
    pub fn in_sidecar(&self, script: &str) -> String {
        run(&["exec", &self.sidecar, "/bin/sh", "-c", script]).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// Everything `container` logged.
    pub fn logs(&self, container: &str) -> String {
        podman()
            .args(["logs", container])
            .output()
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_default()
    }

    /// What the kubelet would measure (tests/support/kubelet.rs) for this pod as `stored`: every
    /// volume that is not a hostPath, and the sidecar's and the job's writable layer and log.
    pub fn kubelet_usage(&self, stored: &serde_json::Value, job_name: &str, measure: impl Fn(&Path) -> u64) -> Result<Usage, String> {
        let mut usage = Usage::default();
        for v in stored["spec"]["volumes"].as_array().into_iter().flatten() {
            if let Some(name) = v["name"].as_str().filter(|_| v.get("hostPath").is_none()) {
                usage.volumes.insert(name.to_owned(), measure(&self.dir.path().join("volumes").join(name)));
            }
        }
        for (name, container) in [(self.sidecar_spec.name.as_str(), &self.sidecar), (job_name, &self.job)] {
            let out = run(&["inspect", "-f", "{{.GraphDriver.Data.UpperDir}}\n{{.HostConfig.LogConfig.Path}}", container])?;
            let mut lines = out.lines();
            let upper = lines.next().unwrap_or_default().trim();
            let log = lines.next().unwrap_or_default().trim();
            if upper.is_empty() {
                return Err(format!("{container}: podman reports no writable layer: {out:?}"));
            }
            let bytes = measure(Path::new(upper)) + if log.is_empty() { 0 } else { measure(Path::new(log)) };
            usage.containers.insert(name.to_owned(), bytes);
        }
        Ok(usage)
    }

    /// Every process the sidecar runs, as the host sees it: `(pid, host uid, command name)` of its
    /// PID 1 and all its descendants (dockerd, containerd, the shims and every container they
    /// started).
    pub fn sidecar_processes(&self) -> Vec<(u32, u32, String)> {
        let pid1: u32 = run(&["inspect", "-f", "{{.State.Pid}}", &self.sidecar]).ok().and_then(|p| p.trim().parse().ok()).unwrap_or(0);
        let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
        let mut info: BTreeMap<u32, (u32, String)> = BTreeMap::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(status) = std::fs::read_to_string(e.path().join("status")) else { continue };
            let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_owned()).unwrap_or_default();
            let ppid: u32 = field("PPid:").parse().unwrap_or(0);
            let uid: u32 = field("Uid:").split_whitespace().next().and_then(|u| u.parse().ok()).unwrap_or(0);
            parent.insert(pid, ppid);
            info.insert(pid, (uid, field("Name:")));
        }
        let descends = |mut p: u32| {
            while p > 1 {
                if p == pid1 {
                    return true;
                }
                p = parent.get(&p).copied().unwrap_or(0);
            }
            false
        };
        info.into_iter().filter(|(pid, _)| pid1 > 1 && descends(*pid)).map(|(pid, (uid, name))| (pid, uid, name)).collect()
    }
}
