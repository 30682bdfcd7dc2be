//! The shipped image (`make image`: target/image/dind-injector.tar) on the test engine, run the
//! way the Deployment runs it: uid 65532, read-only root filesystem, every capability dropped,
//! no privilege escalation, configuration and TLS files mounted read-only. It must answer
//! `/readyz`, serve `/mutate` over HTTPS, print the Cargo version, hold nothing but the binary
//! and its user, and load into both Docker and containerd.
//!
//! `make test` builds the archive first and sets `DIND_INJECTOR_REQUIRE_IMAGE=1`, so a missing
//! archive or engine fails there; a plain `cargo test` skips and says so.
//!
//! The tests run in parallel on one engine, and `make image` tagged the image there already: each
//! test loads the archive under a name of its own (a copy of it that differs only in the name),
//! so the load is what made the image it uses, and no test removes an image another one runs.
//! Nothing is ever pulled (`--pull never`): a missing image fails at once.

mod support;
// The test engine only (its sandboxes are tests/jobs.rs's).
#[path = "support/engine.rs"]
mod engine;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::serve::LABELS;
use support::tls_client::{self, Http, Tls, new_certs};

/// The name `make image` gives the image, which the archive carries.
const REFERENCE: &str = concat!("ghcr.io/dind-injector/dind-injector:", env!("CARGO_PKG_VERSION"));

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn archive() -> PathBuf {
    support::repo_root().join("target/image/dind-injector.tar")
}

/// The engine's host, or why the test cannot run (a failure under `make test`).
fn prerequisites(test: &str) -> Option<String> {
    let why = if !archive().exists() {
        Some(format!("{} does not exist (`make image` builds it)", archive().display()))
    } else {
        engine::missing_prerequisite()
    };
    let Some(why) = why else {
        return match engine::engine() {
            Ok(engine) => Some(engine.host.clone()),
            Err(e) => panic!("the test engine: {e}"),
        };
    };
    if std::env::var("DIND_INJECTOR_REQUIRE_IMAGE").as_deref() == Ok("1") {
        panic!("{test}: {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why} (set DIND_INJECTOR_REQUIRE_IMAGE=1 to make this a failure)");
    None
}

fn run(host: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).env("DOCKER_HOST", host).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{program} {}: {}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

fn docker(host: &str, args: &[&str]) -> String {
    ok(run(host, "docker", args))
}

fn free_port() -> u16 {
    ok(ok(std::net::TcpListener::bind("127.0.0.1:0")).local_addr()).port()
}

/// The files of the image's layers, read from the archive as a registry would serve it.
fn layer_files(archive: &Path) -> Vec<String> {
    let read = |name: &str| ok(run("", "tar", &["-xOf", &archive.display().to_string(), name]));
    let index: Value = ok(serde_json::from_str(&read("index.json")));
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap_or_default().replace("sha256:", "");
    let manifest: Value = ok(serde_json::from_str(&read(&format!("blobs/sha256/{manifest_digest}"))));
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    assert!(!layers.is_empty(), "no layer: {manifest}");
    let dir = ok(tempfile::tempdir());
    let mut files = Vec::new();
    for layer in layers {
        let digest = layer["digest"].as_str().unwrap_or_default().replace("sha256:", "");
        let path = dir.path().join(&digest);
        let out = ok(Command::new("tar").args(["-xOf", &archive.display().to_string(), &format!("blobs/sha256/{digest}")]).output());
        ok(std::fs::write(&path, out.stdout));
        files.extend(
            ok(run("", "tar", &["-tf", &path.display().to_string()]))
                .lines()
                .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_owned())
                .filter(|l| !l.is_empty()),
        );
    }
    files.sort();
    files.dedup();
    files
}

/// The archive's index.json, OCI manifest and docker manifest.json, as JSON.
fn archive_json(archive: &Path, name: &str) -> Value {
    let text = ok(run("", "tar", &["-xOf", &archive.display().to_string(), name]));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} in {}: {e}", archive.display()))
}

/// The digests the archive's image must have once loaded: (manifest, config = Docker's image ID).
fn archive_digests(archive: &Path) -> (String, String) {
    let index = archive_json(archive, "index.json");
    let manifest_digest =
        index["manifests"][0]["digest"].as_str().unwrap_or_else(|| panic!("no manifest in index.json: {index}")).to_owned();
    let manifest = archive_json(archive, &format!("blobs/sha256/{}", manifest_digest.trim_start_matches("sha256:")));
    let config = manifest["config"]["digest"].as_str().unwrap_or_else(|| panic!("no config in the manifest: {manifest}")).to_owned();
    (manifest_digest, config)
}

/// A name no other test (or run) uses: `dind-injector-image-test/<what>:<pid>-<nanoseconds>`.
fn own_name(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("dind-injector-image-test/{what}:{}-{nanos}", std::process::id())
}

/// A copy of the archive whose image is called `name` (docker's manifest.json and the OCI
/// index's annotations): same blobs, so the same image.
fn renamed_archive(archive: &Path, name: &str, dir: &Path) -> PathBuf {
    let tree = dir.join("layout");
    ok(std::fs::create_dir_all(&tree));
    ok(run("", "tar", &["-xf", &archive.display().to_string(), "-C", &tree.display().to_string()]));
    let mut saved = archive_json(archive, "manifest.json");
    assert_eq!(saved.as_array().map(Vec::len), Some(1), "manifest.json holds one image: {saved}");
    assert_eq!(saved[0]["RepoTags"], serde_json::json!([REFERENCE]), "the archive names the image {REFERENCE}");
    saved[0]["RepoTags"] = serde_json::json!([name]);
    ok(std::fs::write(tree.join("manifest.json"), ok(serde_json::to_vec(&saved))));
    let mut index = archive_json(archive, "index.json");
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    index["manifests"][0]["annotations"] = serde_json::json!({"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag});
    ok(std::fs::write(tree.join("index.json"), ok(serde_json::to_vec(&index))));
    let copy = dir.join("renamed.tar");
    ok(run(
        "",
        "tar",
        &["-cf", &copy.display().to_string(), "-C", &tree.display().to_string(), "oci-layout", "index.json", "manifest.json", "blobs"],
    ));
    copy
}

/// The image, loaded by this test under a name of its own; untagged when dropped.
struct Loaded {
    host: String,
    name: String,
    /// The renamed archive it was loaded from (kept for `ctr images import`).
    archive: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = run(&self.host, "docker", &["rmi", &self.name]);
    }
}

/// `docker load` of the archive (renamed to a name of `what`'s own): the load must succeed, name
/// that image, and the image must be the archive's (its ID is the archive's config digest).
fn load_as_own_name(host: &str, what: &str) -> Loaded {
    let archive = archive();
    let name = own_name(what);
    let dir = ok(tempfile::tempdir());
    let copy = renamed_archive(&archive, &name, dir.path());
    let loaded = Loaded { host: host.to_owned(), name, archive: copy, _dir: dir };
    let name = loaded.name.as_str();
    assert!(run(host, "docker", &["image", "inspect", name]).is_err(), "{name} exists before the load");
    let out = run(host, "docker", &["load", "-i", &loaded.archive.display().to_string()])
        .unwrap_or_else(|e| panic!("docker load of {} (made by `make image`, renamed {name}): {e}", archive.display()));
    assert!(out.contains(&format!("Loaded image: {name}")), "docker load did not load {name}: {out}");
    let id = run(host, "docker", &["image", "inspect", "--format", "{{.Id}}", name])
        .unwrap_or_else(|e| panic!("docker load said it loaded {name}, but the engine has no such image: {e}"));
    let (_, config) = archive_digests(&archive);
    assert_eq!(id.trim(), config, "docker load made {name} an image other than the archive's");
    loaded
}

/// `docker run --pull never ARGS`: an image that is not there fails at once, and says so.
fn docker_run(host: &str, args: &[&str], image: &str) -> String {
    let mut all = vec!["run", "--pull", "never"];
    all.extend_from_slice(args);
    run(host, "docker", &all).unwrap_or_else(|e| {
        panic!("{e}\n(`--pull never`: {image} must be on the engine; this test loads it from the archive `make image` builds)")
    })
}

/// A container of the test's, removed (with `-f`) when dropped.
struct Container<'a> {
    host: &'a str,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = run(self.host, "docker", &["rm", "-f", &self.name]);
    }
}

/// The containerd socket the engine's dockerd uses: the one it names with `--containerd`, else
/// the one it starts under its exec root, else the system's (dockerd uses
/// /run/containerd/containerd.sock when it exists, rather than starting its own).
fn engine_containerd(host: &str) -> Result<PathBuf, String> {
    let engine_dir = PathBuf::from(host.trim_start_matches("unix://")).parent().map(Path::to_path_buf).unwrap_or_default();
    let pidfile = engine_dir.join("dockerd.pid");
    let pid = std::fs::read_to_string(&pidfile).map_err(|e| format!("{}: {e}", pidfile.display()))?;
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).map_err(|e| format!("dockerd (pid {}): {e}", pid.trim()))?;
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let flag = |name: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{name}=")).map(str::to_owned).or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
        })
    };
    let mut candidates = Vec::new();
    if let Some(named) = flag("--containerd") {
        candidates.push(PathBuf::from(named));
    } else {
        let exec_root = flag("--exec-root").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/run/docker"));
        candidates.push(exec_root.join("containerd/containerd.sock"));
        candidates.push(PathBuf::from("/run/containerd/containerd.sock"));
    }
    candidates
        .iter()
        .find(|c| c.exists())
        .cloned()
        .ok_or_else(|| format!("dockerd ({}) uses no containerd socket found at {candidates:?}", args.join(" ")))
}

#[test]
fn the_image_loads_everywhere_and_holds_only_the_binary_and_its_user() {
    let test = "the_image_loads_everywhere_and_holds_only_the_binary_and_its_user";
    let Some(host) = prerequisites(test) else { return };
    let archive = archive();
    assert_eq!(layer_files(&archive), ["dind-injector", "etc", "etc/group", "etc/passwd"], "the image holds more than the server uses");

    let loaded = load_as_own_name(&host, "load");
    let image = loaded.name.as_str();
    let version = docker_run(&host, &["--rm", "--network", "none", image, "version"], image);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "`dind-injector version` in the image printed {version:?}");
    let user =
        docker(&host, &["image", "inspect", "--format", "{{.Config.User}} {{json .Config.Entrypoint}} {{.Architecture}} {{.Os}}", image]);
    assert!(user.starts_with("65532:65532 [\"/dind-injector\"] "), "{user}");
    let size: u64 = docker(&host, &["image", "inspect", "--format", "{{.Size}}", image]).trim().parse().unwrap_or(u64::MAX);
    eprintln!("image {REFERENCE}: {:.1} MiB ({user})", size as f64 / 1048576.0);
    assert!(size < 32 * 1024 * 1024, "the image is {size} bytes");

    // containerd: the one the test engine's dockerd uses.
    let required = std::env::var("DIND_INJECTOR_REQUIRE_IMAGE").as_deref() == Ok("1")
        || std::env::var("DIND_INJECTOR_REQUIRE_DOCKERD").as_deref() == Ok("1");
    let containerd = engine_containerd(&host).and_then(|socket| {
        run("", "ctr", &["--address", &socket.display().to_string(), "version"])
            .map(|_| socket.clone())
            .map_err(|e| format!("ctr cannot talk to {}: {e}", socket.display()))
    });
    let address = match containerd {
        Ok(socket) => socket.display().to_string(),
        Err(why) if required => panic!("{test}: `ctr images import` cannot be checked: {why}"),
        Err(why) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}, ctr images import: {why} (set DIND_INJECTOR_REQUIRE_IMAGE=1 to make this a failure)"
            );
            return;
        }
    };
    let ns = format!("dind-injector-image-test-{}", std::process::id());
    let ctr = |args: &[&str]| {
        let mut all = vec!["--address", &address, "-n", &ns];
        all.extend_from_slice(args);
        run("", "ctr", &all)
    };
    let imported = ctr(&["images", "import", &loaded.archive.display().to_string()]);
    let listed = ctr(&["images", "ls"]);
    let _ = ctr(&["images", "rm", image]);
    let _ = run("", "ctr", &["--address", &address, "namespaces", "rm", &ns]);
    let imported = imported.unwrap_or_else(|e| panic!("ctr images import into {address}: {e}"));
    let listed = ok(listed);
    let (manifest, _) = archive_digests(&archive);
    assert!(
        listed.lines().any(|l| l.split_whitespace().next() == Some(image) && l.contains(&manifest)),
        "ctr images import did not make {image} (manifest {manifest}): {imported}\nctr images ls:\n{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_run_as_the_deployment_runs_it_serves_reviews() {
    let Some(host) = prerequisites("the_image_run_as_the_deployment_runs_it_serves_reviews") else { return };
    let loaded = load_as_own_name(&host, "serve");
    let dir = ok(tempfile::tempdir());
    let certs = new_certs();
    ok(dind_injector::certs::write_dev_certs(dir.path(), &certs));
    ok(std::fs::write(dir.path().join("config.yaml"), "server:\n  shutdownDelay: 0s\n"));
    // The kubelet mounts Secret and ConfigMap files readable by the pod's fsGroup; here, by 65532.
    for f in ["tls.crt", "tls.key", "config.yaml"] {
        ok(std::os::unix::fs::chown(dir.path().join(f), Some(65532), Some(65532)));
    }
    ok(std::os::unix::fs::chown(dir.path(), Some(65532), Some(65532)));
    let (port, health) = (free_port(), free_port());
    let container = Container { host: &host, name: format!("dind-injector-image-{}", std::process::id()) };
    let name = container.name.as_str();
    let mount = format!("{}:/etc/dind-injector:ro", dir.path().display());
    let listen = format!("127.0.0.1:{port}");
    let health_listen = format!("127.0.0.1:{health}");
    // Host network: the test engine has no bridge of its own, and 127.0.0.1 stays on this machine.
    docker_run(
        &host,
        &[
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "--user",
            "65532:65532",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "-v",
            &mount,
            &loaded.name,
            "serve",
            "--listen",
            &listen,
            "--health-listen",
            &health_listen,
            "--tls-cert",
            "/etc/dind-injector/tls.crt",
            "--tls-key",
            "/etc/dind-injector/tls.key",
            "--config",
            "/etc/dind-injector/config.yaml",
            "--static-namespace-labels",
            LABELS,
        ],
        &loaded.name,
    );
    let result = async {
        let health_addr: SocketAddr = ok(health_listen.parse());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ready = false;
        while Instant::now() < deadline && !ready {
            ready = tls_client::http_get(health_addr, "/readyz").await.is_ok_and(|a| a.status == 200);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !ready {
            return Err("/readyz did not answer 200 within 10 s".to_owned());
        }
        let review = support::review("gitlab");
        let addr: SocketAddr = ok(listen.parse());
        let mut conn = tls_client::connect(addr, &[&certs.ca_cert_pem], Tls::Any, Http::H1).await?;
        let answer = conn.call("POST", "/mutate", ok(serde_json::to_vec(&review))).await?;
        let v = answer.json();
        if answer.status != 200 || v["response"]["uid"] != review["request"]["uid"] || v["response"]["patch"].as_str().is_none() {
            return Err(format!("/mutate answered {}: {}", answer.status, answer.text()));
        }
        Ok(())
    }
    .await;
    let inspect = docker(&host, &["inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}", name]);
    let logs = run(&host, "docker", &["logs", name]).unwrap_or_else(|e| e);
    drop(container);
    assert!(result.is_ok(), "{}\nthe container's log:\n{logs}", result.err().unwrap_or_default());
    assert_eq!(inspect.trim(), "65532:65532 true [ALL]");
}
