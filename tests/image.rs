//! The shipped image (`make image`: target/image/dind-injector.tar) on the test engine, run the
//! way the Deployment runs it: uid 65532, read-only root filesystem, every capability dropped,
//! no privilege escalation, configuration and TLS files mounted read-only. It must answer
//! `/readyz`, serve `/mutate` over HTTPS, print the Cargo version, hold nothing but the binary
//! and its user, and load into both Docker and containerd.
//!
//! `make test` builds the archive first and sets `DIND_INJECTOR_REQUIRE_IMAGE=1`, so a missing
//! archive or engine fails there; a plain `cargo test` skips and says so.

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

#[test]
fn the_image_loads_everywhere_and_holds_only_the_binary_and_its_user() {
    let Some(host) = prerequisites("the_image_loads_everywhere_and_holds_only_the_binary_and_its_user") else { return };
    let archive = archive();
    assert_eq!(layer_files(&archive), ["dind-injector", "etc", "etc/group", "etc/passwd"], "the image holds more than the server uses");

    let _ = run(&host, "docker", &["rmi", REFERENCE]);
    let loaded = docker(&host, &["load", "-i", &archive.display().to_string()]);
    assert!(loaded.contains(REFERENCE), "docker load: {loaded}");
    let version = docker(&host, &["run", "--rm", "--network", "none", REFERENCE, "version"]);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "`dind-injector version` in the image printed {version:?}");
    let user = docker(
        &host,
        &["image", "inspect", "--format", "{{.Config.User}} {{json .Config.Entrypoint}} {{.Architecture}} {{.Os}}", REFERENCE],
    );
    assert!(user.starts_with("65532:65532 [\"/dind-injector\"] "), "{user}");
    let size: u64 = docker(&host, &["image", "inspect", "--format", "{{.Size}}", REFERENCE]).trim().parse().unwrap_or(u64::MAX);
    eprintln!("image {REFERENCE}: {:.1} MiB ({user})", size as f64 / 1048576.0);
    assert!(size < 32 * 1024 * 1024, "the image is {size} bytes");

    // containerd: the test engine's own (dockerd starts it under its exec root).
    let engine_dir = PathBuf::from(host.trim_start_matches("unix://")).parent().map(Path::to_path_buf).unwrap_or_default();
    let containerd = engine_dir.join("exec/containerd/containerd.sock");
    if containerd.exists() {
        let address = containerd.display().to_string();
        let ns = "dind-injector-image-test";
        let imported = ok(run("", "ctr", &["--address", &address, "-n", ns, "images", "import", &archive.display().to_string()]));
        let listed = ok(run("", "ctr", &["--address", &address, "-n", ns, "images", "ls", "-q"]));
        let _ = run("", "ctr", &["--address", &address, "-n", ns, "images", "rm", REFERENCE]);
        assert!(listed.lines().any(|l| l == REFERENCE), "ctr images import: {imported}\nctr images ls: {listed}");
    } else {
        eprintln!("no containerd socket at {}: ctr images import not checked", containerd.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_run_as_the_deployment_runs_it_serves_reviews() {
    let Some(host) = prerequisites("the_image_run_as_the_deployment_runs_it_serves_reviews") else { return };
    let _ = run(&host, "docker", &["load", "-i", &archive().display().to_string()]);
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
    let name = format!("dind-injector-image-{}", std::process::id());
    let mount = format!("{}:/etc/dind-injector:ro", dir.path().display());
    let listen = format!("127.0.0.1:{port}");
    let health_listen = format!("127.0.0.1:{health}");
    // Host network: the test engine has no bridge of its own, and 127.0.0.1 stays on this machine.
    docker(
        &host,
        &[
            "run",
            "-d",
            "--name",
            &name,
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
            REFERENCE,
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
    let inspect = docker(&host, &["inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}", &name]);
    let logs = run(&host, "docker", &["logs", &name]).unwrap_or_else(|e| e);
    let _ = run(&host, "docker", &["rm", "-f", &name]);
    assert!(result.is_ok(), "{}\nthe container's log:\n{logs}", result.err().unwrap_or_default());
    assert_eq!(inspect.trim(), "65532:65532 true [ALL]");
}
