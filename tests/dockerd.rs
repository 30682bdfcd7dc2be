//! The injected daemon is real: an actual `dockerd` runs with exactly the script, arguments,
//! environment and daemon.json the injector generated, for each transport, and a job-side
//! `docker` client that knows only the injected DOCKER_HOST (and TLS variables) builds a
//! `FROM scratch` image and runs it with `--network=none`.
//!
//! What stands in for the pod: each volume is a directory, and the paths the sidecar and the job
//! container mount are rewritten to those directories. `dockerd-entrypoint.sh` is a stand-in that
//! refuses anything but `dockerd` first and adds what the container's own filesystem and network
//! namespace would give it (data and exec roots, the /etc/docker config file, no bridge or
//! iptables on this host). Needs root, `dockerd`, `docker`, `openssl` and `gcc` (Debian's
//! docker.io, installed by `make test`). Without them it says so and, unless
//! `DIND_INJECTOR_REQUIRE_DOCKERD=1` (set by `make test`), skips.

mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dind_injector::config::{Config, Mtu, Transport};
use dind_injector::inject::{self, ClusterInfo, Outcome};
use dind_injector::namespace::NamespaceView;
use k8s_openapi::api::core::v1::{Container, Pod};
use support::*;

fn missing_prerequisite() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned()));
    if uid.as_deref() != Some("0") {
        return Some("not running as root (dockerd needs root)".into());
    }
    for tool in ["dockerd", "docker", "openssl", "gcc"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` is not installed (make test installs Debian's docker.io, openssl and gcc)"));
        }
    }
    None
}

/// The major.minor.patch of the installed dockerd, so the sidecar image names the same version
/// and the injector picks the flags that version understands.
fn dockerd_version() -> String {
    let out = Command::new("dockerd").arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    out.split_whitespace()
        .nth(2)
        .map(|v| v.trim_end_matches(',').chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect())
        .unwrap_or_default()
}

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Maps the container's mount paths to the directories standing in for the volumes.
struct PodFs {
    mounts: Vec<(String, PathBuf)>,
}

impl PodFs {
    fn new(root: &Path, sidecar: &Container, job: &Container) -> PodFs {
        let mut mounts = Vec::new();
        for m in sidecar.volume_mounts.iter().flatten().chain(job.volume_mounts.iter().flatten()) {
            let mut dir = root.join("volumes").join(&m.name);
            if let Some(sub) = &m.sub_path {
                dir = dir.join(sub);
            }
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            mounts.push((m.mount_path.clone(), dir));
        }
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        mounts.dedup_by(|a, b| a.0 == b.0);
        PodFs { mounts }
    }

    fn host(&self, mount_path: &str) -> PathBuf {
        self.mounts.iter().find(|(p, _)| p == mount_path).map(|(_, d)| d.clone()).unwrap_or_else(|| panic!("nothing mounted at {mount_path}"))
    }

    /// Rewrites every mounted path inside `text` (arguments, env values, the script).
    fn rewrite(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (path, dir) in &self.mounts {
            // Only whole path prefixes: `/certs/` and `/certs"`, not `/certsomething`.
            for end in ["/", "\"", "'", " ", "\n"] {
                out = out.replace(&format!("{path}{end}"), &format!("{}{end}", dir.display()));
            }
            if out.ends_with(path.as_str()) {
                let cut = out.len() - path.len();
                out = format!("{}{}", &out[..cut], dir.display());
            }
        }
        out
    }
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    text
}

fn static_hello(dir: &Path) -> PathBuf {
    let src = dir.join("hello.c");
    std::fs::write(&src, "#include <unistd.h>\nint main(void){static const char m[]=\"hello from scratch\\n\";write(1,m,sizeof m-1);return 0;}\n").unwrap_or_else(|e| panic!("{e}"));
    let bin = dir.join("hello");
    run_ok(Command::new("gcc").args(["-static", "-O2", "-o"]).arg(&bin).arg(&src), "gcc -static");
    bin
}

fn sidecar_and_job(pod: &Pod, container: &str, job: &str) -> (Container, Container) {
    let spec = pod.spec.clone().unwrap_or_default();
    let all: Vec<Container> = spec.init_containers.unwrap_or_default().into_iter().chain(spec.containers).collect();
    let find = |n: &str| all.iter().find(|c| c.name == n).cloned().unwrap_or_else(|| panic!("no container {n}"));
    (find(container), find(job))
}

fn exercise(transport: Transport, mtu: Mtu, work: &Path, hello: &Path) {
    let what = format!("{} (mtu {mtu})", transport.as_str());
    let mut config = Config::default();
    config.sidecar.transport = transport;
    config.sidecar.mtu = mtu;
    config.sidecar.image = format!("docker:{}-dind", dockerd_version());
    config.daemon.registry_mirrors = vec!["https://mirror.dind-injector.test".into()];
    config.daemon.settings = BTreeMap::from([("log-level".to_owned(), serde_json::json!("info"))]);
    assert!(config.problems().is_empty(), "{:?}", config.problems());

    let pod = review_pod("gitlab");
    let decision = inject::plan_injection(&typed(&pod), &NamespaceView::opted_in("ci"), &config, &ClusterInfo::default());
    let Outcome::Inject(injection) = &decision.outcome else { panic!("{what}: not injected") };
    let patched = typed(&apply(&pod, &injection.patch));
    let (sidecar, job) = sidecar_and_job(&patched, &injection.status.container, "build");

    let root = work.join(transport.as_str());
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
    let fs = PodFs::new(&root, &sidecar, &job);
    std::fs::write(fs.host("/etc/docker").join("daemon.json"), inject::daemon_json_text(&config.daemon)).unwrap_or_else(|e| panic!("{e}"));

    // The image entrypoint's stand-in.
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("{e}"));
    let received = root.join("entrypoint-args");
    let entrypoint = format!(
        "#!/bin/sh\nset -eu\n[ \"${{1:-}}\" = dockerd ] || {{ echo \"entrypoint stand-in: expected dockerd first, got ${{1:-nothing}}\" >&2; exit 64; }}\nprintf '%s\\n' \"$@\" > {received}\nshift\nexec dockerd \"$@\" --data-root={data} --exec-root={exec} --pidfile={pid} --config-file={cfg}/daemon.json --bridge=none --iptables=false\n",
        received = received.display(),
        data = fs.host("/var/lib/docker").display(),
        exec = root.join("exec").display(),
        pid = root.join("docker.pid").display(),
        cfg = fs.host("/etc/docker").display(),
    );
    let ep = bin.join("dockerd-entrypoint.sh");
    std::fs::write(&ep, entrypoint).unwrap_or_else(|e| panic!("{e}"));
    run_ok(Command::new("chmod").arg("755").arg(&ep), "chmod");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let probe: Vec<String> = sidecar.startup_probe.as_ref().and_then(|p| p.exec.as_ref()).and_then(|e| e.command.clone()).unwrap_or_default();
    let probe: Vec<String> = probe.iter().map(|a| fs.rewrite(a)).collect();
    let probe_ok = || Command::new(&probe[0]).args(&probe[1..]).env("PATH", &path).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(!probe_ok(), "{what}: the startup probe succeeds before dockerd runs; it proves nothing");

    let command: Vec<String> = sidecar.command.clone().unwrap_or_default().iter().map(|a| fs.rewrite(a)).collect();
    let args: Vec<String> = sidecar.args.clone().unwrap_or_default().iter().map(|a| fs.rewrite(a)).collect();
    let log = std::fs::File::create(root.join("dockerd.log")).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]).args(&args).env_clear().env("PATH", &path);
    for e in sidecar.env.iter().flatten() {
        cmd.env(&e.name, e.value.clone().unwrap_or_default());
    }
    let child = cmd.stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}"))).stderr(log).spawn().unwrap_or_else(|e| panic!("{what}: cannot start the sidecar: {e}"));
    let mut daemon = Daemon { child };

    let deadline = Instant::now() + Duration::from_secs(60);
    while !probe_ok() {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            let log = std::fs::read_to_string(root.join("dockerd.log")).unwrap_or_default();
            panic!("{what}: dockerd exited ({status}) before answering:\n{log}");
        }
        assert!(Instant::now() < deadline, "{what}: dockerd did not answer the startup probe within 60s:\n{}", std::fs::read_to_string(root.join("dockerd.log")).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(200));
    }
    let given = std::fs::read_to_string(&received).unwrap_or_default();
    if mtu == Mtu::Auto && Path::new("/sys/class/net/eth0/mtu").exists() {
        assert!(given.lines().any(|l| l.starts_with("--mtu=")), "{what}: auto MTU was not passed: {given}");
    }
    assert!(!given.contains("0.0.0.0"), "{what}: {given}");

    // The job side: only the injected variables, nothing from this host.
    let home = root.join("home");
    std::fs::create_dir_all(&home).unwrap_or_else(|e| panic!("{e}"));
    let job_env: Vec<(String, String)> = job
        .env
        .iter()
        .flatten()
        .filter(|e| e.name.starts_with("DOCKER_"))
        .map(|e| (e.name.clone(), fs.rewrite(&e.value.clone().unwrap_or_default())))
        .collect();
    assert!(job_env.iter().any(|(k, _)| k == "DOCKER_HOST"), "{what}: the job got no DOCKER_HOST");
    let docker = |args: &[&str]| {
        let mut c = Command::new("docker");
        c.args(args).env_clear().env("PATH", &path).env("HOME", &home).env("DOCKER_BUILDKIT", "0");
        for (k, v) in &job_env {
            c.env(k, v);
        }
        c
    };
    let info = run_ok(&mut docker(&["info", "--format", "{{json .RegistryConfig.Mirrors}}"]), &format!("{what}: docker info"));
    assert!(info.contains("mirror.dind-injector.test"), "{what}: daemon.json was not read: {info}");

    let ctx = root.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(hello, ctx.join("hello")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY hello /hello\nCMD [\"/hello\"]\n").unwrap_or_else(|e| panic!("{e}"));
    let tag = format!("dind-injector-test:{}", transport.as_str());
    run_ok(docker(&["build", "-t", &tag]).arg(&ctx), &format!("{what}: docker build"));
    let out = run_ok(&mut docker(&["run", "--rm", "--network=none", &tag]), &format!("{what}: docker run"));
    assert!(out.contains("hello from scratch"), "{what}: {out}");

    // Never reachable from outside the pod: TCP listeners are on loopback only, and TLS wants a client certificate.
    if let Some(port) = match transport {
        Transport::Tcp => Some(2375),
        Transport::TcpTls => Some(2376),
        Transport::Unix => None,
    } {
        let other_ip = Command::new("hostname").arg("-I").output().ok().and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().find(|ip| !ip.contains(':')).map(str::to_owned));
        if let Some(ip) = other_ip.and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) {
            let reached = TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(1)).is_ok();
            assert!(!reached, "{what}: the daemon answers on {ip}:{port}, not only on 127.0.0.1");
        }
    }
    if transport == Transport::TcpTls {
        let mut plain = Command::new("docker");
        plain.args(["--host=tcp://127.0.0.1:2376", "info"]).env_clear().env("PATH", &path).env("HOME", &home).stdout(Stdio::null()).stderr(Stdio::null());
        assert!(!plain.status().is_ok_and(|s| s.success()), "{what}: a client without the certificates got in");
    }
    drop(daemon);
}

#[test]
fn injected_daemon_builds_and_runs_an_image_for_every_transport() {
    if let Some(why) = missing_prerequisite() {
        if std::env::var("DIND_INJECTOR_REQUIRE_DOCKERD").as_deref() == Ok("1") {
            panic!("the real-dockerd test cannot run: {why}");
        }
        eprintln!("SKIPPED injected_daemon_builds_and_runs_an_image_for_every_transport: {why}");
        return;
    }
    let work = tempfile::Builder::new().prefix("dind-").tempdir().unwrap_or_else(|e| panic!("{e}"));
    let hello = static_hello(work.path());
    for (transport, mtu) in [(Transport::Unix, Mtu::Auto), (Transport::Tcp, Mtu::Fixed(1400)), (Transport::TcpTls, Mtu::Auto)] {
        exercise(transport, mtu, work.path(), &hello);
    }
}
