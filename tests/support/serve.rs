//! The server in this test process: real TLS on 127.0.0.1 port 0, certificates generated into a
//! temporary directory, every namespace opted in and privileged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dind_injector::certs::{DevCerts, write_dev_certs};
use dind_injector::namespace::{NamespaceLookup, StaticNamespaces, parse_key_values};
use dind_injector::server::{CertPaths, Server, ServerError, ServerOptions, ShutdownHandle};
use hyper::body::Bytes;
use tokio::task::JoinHandle;

use super::tls_client::{self, Answer, Http, Tls, new_certs};

/// The labels every namespace has: opted in, Pod Security `privileged`.
pub const LABELS: &str = "dind-injector.io/injection=enabled,pod-security.kubernetes.io/enforce=privileged";

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A running in-process server.
pub struct InProcess {
    /// Holds tls.crt, tls.key and config.yaml.
    pub dir: tempfile::TempDir,
    pub certs: DevCerts,
    pub addr: SocketAddr,
    pub health: SocketAddr,
    pub shutdown: ShutdownHandle,
    pub task: JoinHandle<Result<(), ServerError>>,
}

/// Every namespace opted in and privileged.
pub fn namespaces() -> Arc<dyn NamespaceLookup> {
    Arc::new(StaticNamespaces::new(ok(parse_key_values(LABELS)), BTreeMap::new()))
}

/// Starts a server with fresh certificates in a temp dir and `config` (YAML) when given.
pub async fn start(config: Option<&str>) -> InProcess {
    let dir = ok(tempfile::tempdir());
    let certs = new_certs();
    ok(write_dev_certs(dir.path(), &certs));
    let paths = CertPaths { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key") };
    start_at(dir, certs, paths, config).await
}

/// Starts a server on the certificates at `paths` (in `dir`), with `config` written to
/// `dir/config.yaml` when given.
pub async fn start_at(dir: tempfile::TempDir, certs: DevCerts, paths: CertPaths, config: Option<&str>) -> InProcess {
    let config_path = config.map(|yaml| {
        let p = dir.path().join("config.yaml");
        ok(std::fs::write(&p, yaml));
        p
    });
    let server = ok(Server::new(ServerOptions {
        listen: ok("127.0.0.1:0".parse()),
        health_listen: ok("127.0.0.1:0".parse()),
        certs: paths,
        config_path,
        namespaces: namespaces(),
        cluster: Default::default(),
    }));
    let bound = ok(server.bind().await);
    let (addr, health, shutdown) = (bound.local_addr(), bound.health_addr(), bound.shutdown_handle());
    let task = tokio::spawn(bound.run());
    InProcess { dir, certs, addr, health, shutdown, task }
}

impl InProcess {
    /// The CA the serving certificate chains to.
    pub fn ca(&self) -> &str {
        &self.certs.ca_cert_pem
    }

    /// A new connection.
    pub async fn connect(&self, http: Http) -> tls_client::Connection {
        ok(tls_client::connect(self.addr, &[self.ca()], Tls::Any, http).await)
    }

    /// One request on a fresh connection.
    pub async fn post(&self, http: Http, path: &str, body: impl Into<Bytes>) -> Answer {
        ok(self.connect(http).await.call("POST", path, body).await)
    }

    /// `GET path` on the health port.
    pub async fn health(&self, path: &str) -> Answer {
        ok(tls_client::http_get(self.health, path).await)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.health("/metrics").await.text()
    }

    /// Triggers the shutdown and waits for a clean exit.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "the server did not stop cleanly: {result:?}");
    }
}
