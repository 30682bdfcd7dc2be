//! `serve` in a cluster: the namespace cache, daemon.json sync, the apiserver version and
//! self-managed certificates, started around the server.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use kube::Client;
use tokio::sync::{Notify, mpsc, watch};

use crate::cluster::ca_bundle::{self, BundleWatch, PatchReport};
use crate::cluster::certs::{self, SelfManaged, ServingCert};
use crate::cluster::namespaces::NamespaceCache;
use crate::cluster::{daemon_config, runtime_classes, version};

use super::{AppState, ServeArgs};

/// How often every opted-in namespace's daemon.json ConfigMap is checked, besides on changes.
const DAEMON_CONFIG_RESYNC: Duration = Duration::from_secs(300);
/// How often the apiserver version is asked for.
const VERSION_POLL: Duration = Duration::from_secs(600);
/// How often the self-managed certificate Secret is re-read (and renewed when due), and caBundle
/// checked besides the watch on the webhook configurations.
const CERT_POLL: Duration = Duration::from_secs(300);

/// What runs beside the server in a cluster.
pub struct InCluster {
    client: Client,
    /// The namespace cache (the server's namespace source).
    pub cache: NamespaceCache,
    changes: mpsc::UnboundedReceiver<String>,
    self_managed: Option<(SelfManaged, ServingCert)>,
    /// Each caBundle patch, for the metrics (recorded once the server's state exists).
    patches: (mpsc::UnboundedSender<PatchDone>, mpsc::UnboundedReceiver<PatchDone>),
}

/// Whether a caBundle patch succeeded, and when (Unix seconds).
type PatchDone = (bool, i64);

fn patch_report(tx: &mpsc::UnboundedSender<PatchDone>) -> PatchReport {
    let tx = tx.clone();
    Arc::new(move |ok| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let _ = tx.send((ok, now));
    })
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
    let patches = mpsc::unbounded_channel();
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
        if let Err(e) = ca_bundle::ensure_ca_bundle(&client, &cfg, &cert.ca_bundle_pem, &patch_report(&patches.0)).await {
            tracing::error!(error = %e, "cannot set caBundle in the webhook configurations; the apiserver will not trust this server until it is set");
        }
        Some((cfg, cert))
    } else {
        None
    };
    let (tx, changes) = mpsc::unbounded_channel();
    let (cache, driver) = NamespaceCache::start(client.clone(), Some(tx));
    tokio::spawn(driver);
    Ok(InCluster { client, cache, changes, self_managed, patches })
}

impl InCluster {
    /// Starts the background loops that need the server's state.
    pub fn spawn_background(self, args: &ServeArgs, state: AppState) {
        let InCluster { client, cache, changes, self_managed, patches: (patch_tx, mut patch_rx) } = self;
        let config_state = state.clone();
        tokio::spawn(daemon_config::run(client.clone(), cache.clone(), move || config_state.config(), changes, DAEMON_CONFIG_RESYNC));

        let version_client = client.clone();
        let version_state = state.clone();
        tokio::spawn(async move {
            loop {
                match version::server_version(&version_client).await {
                    Ok(v) => version_state.set_server_version(v),
                    Err(e) => tracing::warn!(error = %e, "cannot read the apiserver version; sidecar-mode auto keeps its last answer"),
                }
                tokio::time::sleep(VERSION_POLL).await;
            }
        });

        let classes_state = state.clone();
        let (classes, driver) = runtime_classes::start(client.clone(), move |classes| classes_state.set_runtime_classes(classes));
        tokio::spawn(driver);

        let watch_state = state.clone();
        tokio::spawn(async move {
            loop {
                watch_state.metrics().set_namespace_watch_connected(cache.is_connected());
                watch_state.metrics().set_runtime_class_watch_connected(classes.is_connected());
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });

        let patch_state = state.clone();
        tokio::spawn(async move {
            while let Some((ok, at)) = patch_rx.recv().await {
                patch_state.metrics().record_ca_bundle_patch(ok, at);
            }
        });

        if let Some((cfg, mut current)) = self_managed {
            let report = patch_report(&patch_tx);
            let (bundle_tx, bundle_rx) = watch::channel(current.ca_bundle_pem.clone());
            let shared = BundleWatch { current: bundle_rx, secret_changed: Arc::new(Notify::new()), report: Arc::clone(&report) };
            tokio::spawn(ca_bundle::watch_ca_bundle::<MutatingWebhookConfiguration>(client.clone(), cfg.clone(), shared.clone()));
            tokio::spawn(ca_bundle::watch_ca_bundle::<ValidatingWebhookConfiguration>(client.clone(), cfg.clone(), shared.clone()));
            let (cert_path, key_path) = (args.tls_cert.clone(), args.tls_key.clone());
            tokio::spawn(async move {
                loop {
                    // The periodic check, or at once when a watch saw that the Secret changed.
                    tokio::select! {
                        () = tokio::time::sleep(CERT_POLL) => {}
                        () = shared.secret_changed.notified() => {}
                    }
                    match certs::ensure_secret(&client, &cfg).await {
                        Ok(cert) => {
                            // Trust before serving: the webhook configurations get the new bundle
                            // (which still holds the CA of the certificate served now) before
                            // this replica presents a certificate signed by a new CA.
                            if let Err(e) = ca_bundle::ensure_ca_bundle(&client, &cfg, &cert.ca_bundle_pem, &report).await {
                                if cert == current {
                                    tracing::warn!(error = %e, "cannot update caBundle; retrying");
                                } else {
                                    tracing::warn!(error = %e, "cannot update caBundle; still serving the current certificate until the new CA is trusted; retrying");
                                }
                                continue;
                            }
                            if cert != current {
                                if let Err(e) = cert.write(&cert_path, &key_path) {
                                    tracing::error!(error = %e, path = %cert_path.display(),
                                        "cannot write the renewed certificate; still serving the old one (the directory must be writable by the injector's user)");
                                    continue;
                                }
                                tracing::info!("self-managed certificate changed; serving the new one");
                                current = cert;
                                bundle_tx.send_replace(current.ca_bundle_pem.clone());
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read the certificate Secret; retrying"),
                    }
                }
            });
        }
    }
}
