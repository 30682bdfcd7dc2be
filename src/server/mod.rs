//! The HTTPS admission server: reviews on one port (rustls, HTTP/1.1 and HTTP/2), health and
//! metrics on a plain port, certificate and configuration reload by polling, graceful shutdown.
//!
//! [`Server::new`] loads and checks everything (bad files fail here, naming the file),
//! [`Server::bind`] opens the ports (port 0 works; the bound addresses can be read), and
//! [`BoundServer::run`] serves until its [`ShutdownHandle`] is triggered (by SIGTERM/SIGINT in
//! `serve`, by hand in tests). [`router`] and [`health_router`] drive the handlers in-process.

mod connections;
mod in_cluster;
mod metrics;
mod reload;
mod routes;
mod shutdown;
mod state;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{Config, ConfigError};
use crate::inject::ClusterInfo;
use crate::namespace::{NamespaceLookup, StaticNamespaces, parse_key_values};

pub use metrics::{InflightGuard, Metrics};
pub use routes::{REVIEW_ENDPOINTS, ReviewEndpoint, ReviewFn, health_router, router};
pub use shutdown::ShutdownHandle;
pub use state::AppState;
pub use tls::{CertPaths, CertStore, TlsError, certified_key, server_config};

/// Options of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTPS admission endpoints.
    #[arg(long, env = "DIND_INJECTOR_LISTEN", default_value = "0.0.0.0:8443", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP /healthz, /readyz and /metrics.
    #[arg(long, env = "DIND_INJECTOR_HEALTH_LISTEN", default_value = "0.0.0.0:8080", value_name = "ADDR:PORT")]
    pub health_listen: SocketAddr,
    /// Serving certificate, PEM, leaf first (a full chain is fine). Re-read when it changes.
    #[arg(long, env = "DIND_INJECTOR_TLS_CERT", default_value = "certs/tls.crt", value_name = "FILE")]
    pub tls_cert: PathBuf,
    /// Private key of the serving certificate, PEM. Re-read when it changes.
    #[arg(long, env = "DIND_INJECTOR_TLS_KEY", default_value = "certs/tls.key", value_name = "FILE")]
    pub tls_key: PathBuf,
    /// The configuration file (defaults for every field when absent). Re-read when it changes.
    #[arg(long, env = "DIND_INJECTOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Labels every namespace is taken to have, as key=value,… (the namespace source until a
    /// cluster cache is used).
    #[arg(long, env = "DIND_INJECTOR_STATIC_NAMESPACE_LABELS", value_name = "K=V,…")]
    pub static_namespace_labels: Option<String>,
    /// Annotations every namespace is taken to have, as key=value,….
    #[arg(long, env = "DIND_INJECTOR_STATIC_NAMESPACE_ANNOTATIONS", value_name = "K=V,…")]
    pub static_namespace_annotations: Option<String>,
    /// Log line format.
    #[arg(long, env = "DIND_INJECTOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Running in a cluster (used unless --static-namespace-labels is given).
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Options of `serve` for running in a cluster: without `--static-namespace-labels`, namespaces
/// come from a watch on the apiserver, daemon.json is kept in opted-in namespaces, and the
/// apiserver's version decides `sidecar-mode: auto`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Create the serving certificate in a Secret (the first replica wins), renew it, keep
    /// caBundle current in the webhook configurations, and write it to --tls-cert/--tls-key.
    /// Without it, another tool (cert-manager) writes those files.
    #[arg(long, env = "DIND_INJECTOR_SELF_MANAGED_CERTS")]
    pub self_managed_certs: bool,
    /// The namespace the injector runs in.
    #[arg(long, env = "POD_NAMESPACE", default_value = "dind-injector", value_name = "NAMESPACE")]
    pub pod_namespace: String,
    /// The injector's Service (the self-managed certificate is for <service>, <service>.<namespace>,
    /// <service>.<namespace>.svc and <service>.<namespace>.svc.<cluster domain>).
    #[arg(long, env = "DIND_INJECTOR_SERVICE", default_value = "dind-injector", value_name = "NAME")]
    pub service_name: String,
    /// The Secret of self-managed certificates.
    #[arg(long, env = "DIND_INJECTOR_TLS_SECRET", default_value = "dind-injector-tls", value_name = "NAME")]
    pub tls_secret: String,
    /// The cluster DNS domain, for the last name of the self-managed serving certificate
    /// (<service>.<namespace>.svc.<domain>).
    #[arg(long, env = "DIND_INJECTOR_CLUSTER_DOMAIN", default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,
    /// The name of both webhook configurations (for caBundle).
    #[arg(long, env = "DIND_INJECTOR_WEBHOOK_CONFIGURATION", default_value = "dind-injector", value_name = "NAME")]
    pub webhook_configuration: String,
}

/// How log lines are written (to standard output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

impl ServeArgs {
    /// The server options these flags describe.
    pub fn options(&self) -> Result<ServerOptions, String> {
        let labels = self
            .static_namespace_labels
            .as_deref()
            .map(parse_key_values)
            .transpose()
            .map_err(|e| format!("--static-namespace-labels: {e}"))?
            .unwrap_or_default();
        let annotations = self
            .static_namespace_annotations
            .as_deref()
            .map(parse_key_values)
            .transpose()
            .map_err(|e| format!("--static-namespace-annotations: {e}"))?
            .unwrap_or_default();
        if self.static_namespace_labels.is_some()
            && labels.get(crate::annotations::INJECTION_LABEL).map(String::as_str) != Some(crate::annotations::INJECTION_ENABLED)
        {
            tracing::warn!(
                "no namespace is opted in: pass --static-namespace-labels {}={} to inject",
                crate::annotations::INJECTION_LABEL,
                crate::annotations::INJECTION_ENABLED
            );
        }
        Ok(ServerOptions {
            listen: self.listen,
            health_listen: self.health_listen,
            certs: CertPaths { cert: self.tls_cert.clone(), key: self.tls_key.clone() },
            config_path: self.config.clone(),
            namespaces: Arc::new(StaticNamespaces::new(labels, annotations)),
            cluster: ClusterInfo::default(),
        })
    }
}

/// What a server is built from.
#[derive(Clone)]
pub struct ServerOptions {
    /// Address of the HTTPS admission endpoints (port 0 picks one).
    pub listen: SocketAddr,
    /// Address of the health and metrics endpoints (port 0 picks one).
    pub health_listen: SocketAddr,
    /// The serving certificate and key files.
    pub certs: CertPaths,
    /// The configuration file; defaults when `None`.
    pub config_path: Option<PathBuf>,
    /// Where namespaces are looked up.
    pub namespaces: Arc<dyn NamespaceLookup>,
    /// What is known about the cluster.
    pub cluster: ClusterInfo,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("listen", &self.listen)
            .field("health_listen", &self.health_listen)
            .field("certs", &self.certs)
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration file is missing or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The certificate or key is missing or wrong.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A port could not be opened.
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The flag that sets it.
        flag: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// A server whose files are loaded and checked, not yet listening.
#[derive(Debug)]
pub struct Server {
    options: ServerOptions,
    state: AppState,
    certs: Arc<CertStore>,
    tls: Arc<rustls::ServerConfig>,
    loaded_certs: (Vec<u8>, Vec<u8>),
    loaded_config: Option<Vec<u8>>,
}

impl Server {
    /// Loads the configuration and the certificate and key; any problem is an error that
    /// names the file.
    pub fn new(options: ServerOptions) -> Result<Server, ServerError> {
        let (config, loaded_config) = match &options.config_path {
            None => (Config::default(), None),
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
                let text = std::str::from_utf8(&bytes).map_err(|e| ConfigError::Read {
                    path: path.display().to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?;
                let config = Config::from_yaml(text, &path.display().to_string())?;
                (config, Some(bytes))
            }
        };
        let loaded_certs = options.certs.read()?;
        let key = certified_key(&loaded_certs.0, &loaded_certs.1, &options.certs)?;
        let certs = Arc::new(CertStore::new(key));
        let tls = Arc::new(server_config(Arc::clone(&certs))?);
        let state = AppState::new(config, Arc::clone(&options.namespaces), options.cluster.clone());
        state.set_certificates_loaded(true);
        if let Some(t) = certs.not_after() {
            state.metrics().set_certificate_not_after(t);
        }
        Ok(Server { options, state, certs, tls, loaded_certs, loaded_config })
    }

    /// The shared state (configuration, metrics, readiness).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The handle that starts this server's shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.state.shutdown_handle()
    }

    /// Opens both ports.
    pub async fn bind(self) -> Result<BoundServer, ServerError> {
        let listener = TcpListener::bind(self.options.listen).await.map_err(|source| ServerError::Bind {
            addr: self.options.listen,
            flag: "--listen",
            source,
        })?;
        let health = TcpListener::bind(self.options.health_listen).await.map_err(|source| ServerError::Bind {
            addr: self.options.health_listen,
            flag: "--health-listen",
            source,
        })?;
        let bind_err = |addr, flag| move |source| ServerError::Bind { addr, flag, source };
        let local_addr = listener.local_addr().map_err(bind_err(self.options.listen, "--listen"))?;
        let health_addr = health.local_addr().map_err(bind_err(self.options.health_listen, "--health-listen"))?;
        Ok(BoundServer { server: self, listener, health, local_addr, health_addr })
    }

    /// Binds and serves until shut down.
    pub async fn run(self) -> Result<(), ServerError> {
        self.bind().await?.run().await
    }
}

/// A server listening on its ports, not yet serving.
#[derive(Debug)]
pub struct BoundServer {
    server: Server,
    listener: TcpListener,
    health: TcpListener,
    local_addr: SocketAddr,
    health_addr: SocketAddr,
}

impl BoundServer {
    /// The HTTPS address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The health address actually bound.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// The shared state (configuration, metrics, readiness).
    pub fn state(&self) -> &AppState {
        &self.server.state
    }

    /// The handle that starts this server's shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.server.state.shutdown_handle()
    }

    /// Serves until the shutdown handle is triggered, then: readiness fails at once, serving
    /// goes on for `server.shutdownDelay`, new connections are refused, and in-flight requests
    /// get up to `server.shutdownGrace` to finish.
    pub async fn run(self) -> Result<(), ServerError> {
        let BoundServer { server, listener, health, local_addr, health_addr } = self;
        let state = server.state.clone();
        let shutdown = state.shutdown_handle();

        let reloader = reload::Reloader::new(
            state.clone(),
            Arc::clone(&server.certs),
            server.options.certs.clone(),
            server.loaded_certs,
            server.options.config_path.clone(),
            server.loaded_config,
        );
        let reload_task = tokio::spawn(reloader.run(shutdown.clone()));

        let (stop_health, health_stopped) = tokio::sync::oneshot::channel::<()>();
        let health_app = health_router(state.clone());
        let health_task = tokio::spawn(async move {
            let serving = axum::serve(health, health_app).with_graceful_shutdown(async move {
                let _ = health_stopped.await;
            });
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "the health server failed");
            }
        });

        tracing::info!(
            listen = %local_addr,
            health_listen = %health_addr,
            "dind-injector ready: reviews on https://{local_addr}, health and metrics on http://{health_addr}"
        );

        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&server.tls));
        let stop_state = state.clone();
        let stop = async move {
            shutdown.triggered().await;
            let delay = stop_state.config().server.shutdown_delay.0;
            tracing::info!(?delay, "shutdown: still serving while endpoints are removed (server.shutdownDelay)");
            tokio::time::sleep(delay).await;
        };
        let graceful = connections::accept_until(listener, acceptor, router(state.clone()), state.clone(), stop).await;

        let grace = state.config().server.shutdown_grace.0;
        tracing::info!(open_connections = graceful.count(), ?grace, "shutdown: no longer accepting; finishing in-flight reviews");
        if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
            tracing::warn!(?grace, "shutdown: server.shutdownGrace ran out; closing the remaining connections");
        }
        reload_task.abort();
        let _ = stop_health.send(());
        // Health clients keep connections open; give them a moment, then stop regardless.
        let mut health_task = health_task;
        if tokio::time::timeout(std::time::Duration::from_secs(1), &mut health_task).await.is_err() {
            health_task.abort();
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Installs the log subscriber (to standard output). `RUST_LOG` filters; the default is `info`.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    // A second initialisation (tests) is not an error worth stopping for.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Runs `serve` until SIGTERM or SIGINT; exits 0 after a graceful shutdown.
pub fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    init_logging(args.log_format);
    // Another part of the process may have installed it already; either way ring is in use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let mut options = args.options()?;
        let cluster = if args.static_namespace_labels.is_none() {
            let parts = in_cluster::start(&args).await?;
            options.namespaces = Arc::new(parts.cache.clone());
            // Until the first RuntimeClass list is answered, no mode that needs a class is
            // injected, and the server is not ready.
            options.cluster.runtime_classes = crate::inject::RuntimeClasses::Syncing;
            Some(parts)
        } else {
            None
        };
        let server = Server::new(options).map_err(|e| e.to_string())?;
        let bound = server.bind().await.map_err(|e| e.to_string())?;
        if let Some(parts) = cluster {
            parts.spawn_background(&args, bound.state().clone());
        }
        shutdown::on_signals(bound.shutdown_handle()).map_err(|e| format!("cannot listen for signals: {e}"))?;
        bound.run().await.map_err(|e| e.to_string())?;
        Ok(ExitCode::SUCCESS)
    })
}
