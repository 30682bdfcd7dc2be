//! `serve` in a cluster: the namespace cache, daemon.json sync, the apiserver version and
//! self-managed certificates, started around the server.

use std::time::Duration;

use kube::Client;
use tokio::sync::mpsc;

use crate::cluster::certs::{self, SelfManaged, ServingCert};
use crate::cluster::namespaces::NamespaceCache;
use crate::cluster::{daemon_config, version};
use crate::inject::ClusterInfo;

use super::{AppState, ServeArgs};

/// How often every opted-in namespace's daemon.json ConfigMap is checked, besides on changes.
const DAEMON_CONFIG_RESYNC: Duration = Duration::from_secs(300);
/// How often the apiserver version is asked for.
const VERSION_POLL: Duration = Duration::from_secs(600);
/// How often the self-managed certificate Secret is re-read (and renewed when due).
const CERT_POLL: Duration = Duration::from_secs(300);

/// What runs beside the server in a cluster.
pub struct InCluster {
    client: Client,
    /// The namespace cache (the server's namespace source).
    pub cache: NamespaceCache,
    changes: mpsc::UnboundedReceiver<String>,
    self_managed: Option<(SelfManaged, ServingCert)>,
}

fn self_managed(args: &ServeArgs) -> SelfManaged {
    let c = &args.cluster;
    SelfManaged {
        namespace: c.pod_namespace.clone(),
        secret: c.tls_secret.clone(),
        service: c.service_name.clone(),
        cluster_domain: c.cluster_domain.clone(),
        webhook_configuration: c.webhook_configuration.clone(),
    }
}

/// Connects to the apiserver, prepares self-managed certificates (so the server finds its files),
/// and starts the namespace watch.
pub async fn start(args: &ServeArgs) -> Result<InCluster, String> {
    let client = Client::try_default().await.map_err(|e| {
        format!("cannot reach the Kubernetes apiserver (in-cluster service account or KUBECONFIG): {e}. To run without a cluster, pass --static-namespace-labels")
    })?;
    let self_managed = if args.cluster.self_managed_certs {
        let cfg = self_managed(args);
        let cert = certs::ensure_secret(&client, &cfg).await.map_err(|e| e.to_string())?;
        cert.write(&args.tls_cert, &args.tls_key)
            .map_err(|e| {
                format!(
                    "cannot write the self-managed certificate to {}: {e}; --tls-cert and --tls-key must point into a directory the injector's user can write (the tls emptyDir of manifests/overlays/self-managed)",
                    args.tls_cert.display()
                )
            })?;
        if let Err(e) = certs::ensure_ca_bundle(&client, &cfg, &cert.ca_bundle_pem).await {
            tracing::error!(error = %e, "cannot set caBundle in the webhook configurations; the apiserver will not trust this server until it is set");
        }
        Some((cfg, cert))
    } else {
        None
    };
    let (tx, changes) = mpsc::unbounded_channel();
    let (cache, driver) = NamespaceCache::start(client.clone(), Some(tx));
    tokio::spawn(driver);
    Ok(InCluster {
        client,
        cache,
        changes,
        self_managed,
    })
}

impl InCluster {
    /// Starts the background loops that need the server's state.
    pub fn spawn_background(self, args: &ServeArgs, state: AppState) {
        let InCluster {
            client,
            cache,
            changes,
            self_managed,
        } = self;
        let config_state = state.clone();
        tokio::spawn(daemon_config::run(
            client.clone(),
            cache.clone(),
            move || config_state.config(),
            changes,
            DAEMON_CONFIG_RESYNC,
        ));

        let version_client = client.clone();
        let version_state = state.clone();
        tokio::spawn(async move {
            loop {
                match version::server_version(&version_client).await {
                    Ok(v) => version_state.set_cluster(ClusterInfo { server_version: Some(v) }),
                    Err(e) => tracing::warn!(error = %e, "cannot read the apiserver version; sidecar-mode auto keeps its last answer"),
                }
                tokio::time::sleep(VERSION_POLL).await;
            }
        });

        let watch_state = state.clone();
        tokio::spawn(async move {
            loop {
                watch_state.metrics().set_namespace_watch_connected(cache.is_connected());
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });

        if let Some((cfg, mut current)) = self_managed {
            let (cert_path, key_path) = (args.tls_cert.clone(), args.tls_key.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(CERT_POLL).await;
                    match certs::ensure_secret(&client, &cfg).await {
                        Ok(cert) => {
                            if cert != current {
                                if let Err(e) = cert.write(&cert_path, &key_path) {
                                    tracing::error!(error = %e, "cannot write the renewed certificate; still serving the old one");
                                    continue;
                                }
                                tracing::info!("self-managed certificate changed; serving the new one");
                                current = cert;
                            }
                            if let Err(e) = certs::ensure_ca_bundle(&client, &cfg, &current.ca_bundle_pem).await {
                                tracing::warn!(error = %e, "cannot update caBundle; retrying");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read the certificate Secret; retrying"),
                    }
                }
            });
        }
    }
}
