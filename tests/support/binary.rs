//! The built `dind-injector serve` as a child process (what a replica in a Deployment is): its
//! JSON log lines read on a pipe by a thread, signals sent with `kill`, its exit awaited.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dind_injector::certs::{DevCerts, write_dev_certs};
use serde_json::Value;

use super::serve::LABELS;
use super::tls_client::new_certs;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A running `dind-injector serve` on 127.0.0.1 (both ports picked by the kernel), every
/// namespace opted in and privileged.
pub struct Binary {
    pub child: Child,
    /// Holds tls.crt, tls.key and config.yaml.
    pub dir: tempfile::TempDir,
    /// The CA of the certificate it was started with.
    pub ca: String,
    /// The development certificates it was started with, when [`Binary::start`] made them.
    pub certs: Option<DevCerts>,
    pub addr: SocketAddr,
    pub health: SocketAddr,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Binary {
    /// Starts it on new development certificates (for 127.0.0.1 and localhost) and `config`.
    pub fn start(config: &str) -> Binary {
        let dir = ok(tempfile::tempdir());
        let certs = new_certs();
        ok(write_dev_certs(dir.path(), &certs));
        let mut binary = Binary::start_in(dir, certs.ca_cert_pem.clone(), config);
        binary.certs = Some(certs);
        binary
    }

    /// Starts it on the tls.crt and tls.key already in `dir` (signed by `ca`), with `config`.
    pub fn start_in(dir: tempfile::TempDir, ca: String, config: &str) -> Binary {
        let config_path = dir.path().join("config.yaml");
        ok(std::fs::write(&config_path, config));
        let mut child = ok(Command::new(env!("CARGO_BIN_EXE_dind-injector"))
            .args(["serve", "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .arg("--config")
            .arg(&config_path)
            .args(["--static-namespace-labels", LABELS])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn());
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let keep = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                if let (Some(l), Some(h)) = (v["listen"].as_str(), v["health_listen"].as_str()) {
                    let _ = tx.send((l.to_owned(), h.to_owned()));
                }
                keep.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(v);
            }
        });
        let (listen, health) =
            rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|e| panic!("the server did not say where it listens: {e}"));
        Binary { child, dir, ca, certs: None, addr: ok(listen.parse()), health: ok(health.parse()), lines }
    }

    /// The directory its certificate files are read from.
    pub fn cert_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        let status = ok(Command::new("sh").args(["-c", &format!("kill -{name} {}", self.pid())]).status());
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the exit; its status and when it came.
    pub fn wait(&mut self, within: Duration) -> Option<(std::process::ExitStatus, Instant)> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((status, Instant::now()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// The uids of the reviews the server logged as answered.
    pub fn answered_uids(&self) -> HashSet<String> {
        let lines = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        lines.iter().filter(|v| v["message"] == "review").filter_map(|v| v["uid"].as_str().map(str::to_owned)).collect()
    }

    /// Whether a log message contains `message`.
    pub fn logged(&self, message: &str) -> bool {
        let lines = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        lines.iter().any(|v| v["message"].as_str().is_some_and(|m| m.contains(message)))
    }

    /// `VmHWM` (peak resident memory) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = ok(std::fs::read_to_string(format!("/proc/{}/status", self.pid())));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in /proc/{}/status", self.pid()))
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
