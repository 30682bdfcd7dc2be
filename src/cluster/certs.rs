//! Self-managed certificates: the CA and serving certificate live in a Secret that the first
//! replica creates (the others read it); every replica keeps `caBundle` current in the two webhook
//! configurations, and the certificate is renewed before it expires. The server serves from
//! files, so a renewal is picked up by the same reload that serves rotated Secret volumes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::certs::{DevCerts, generate_dev_certs, not_after_unix};

use super::{ClusterError, FIELD_MANAGER, MANAGED_BY_LABEL, api_code, at};

/// Where the webhook's certificate lives and whom it serves.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    /// The injector's namespace.
    pub namespace: String,
    /// The Secret holding `tls.crt`, `tls.key`, `ca.crt` and `ca.key`.
    pub secret: String,
    /// The Service name (the certificate is for `<service>.<namespace>.svc`).
    pub service: String,
    /// The name of both webhook configurations.
    pub webhook_configuration: String,
}

/// The serving certificate and the CA bundle the apiserver must trust.
#[derive(Clone, PartialEq, Eq)]
pub struct ServingCert {
    /// Leaf (and chain), PEM.
    pub cert_pem: String,
    /// The leaf's key, PEM.
    pub key_pem: String,
    /// The CA certificates to trust, PEM (the new one first while a renewal overlaps).
    pub ca_bundle_pem: String,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert").field("not_after", &self.not_after()).finish_non_exhaustive()
    }
}

impl ServingCert {
    /// When the leaf expires (Unix seconds).
    pub fn not_after(&self) -> Option<i64> {
        let first = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()).next()?.ok()?;
        not_after_unix(first.as_ref())
    }

    fn from_secret(secret: &Secret) -> Option<ServingCert> {
        let data = secret.data.as_ref()?;
        let text = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok()).filter(|s| !s.is_empty());
        Some(ServingCert {
            cert_pem: text("tls.crt")?,
            key_pem: text("tls.key")?,
            ca_bundle_pem: text("ca.crt")?,
        })
    }

    /// Writes `tls.crt` and `tls.key` where the server reads them (each whole, by rename).
    pub fn write(&self, cert: &Path, key: &Path) -> std::io::Result<()> {
        for (path, text) in [(key, &self.key_pem), (cert, &self.cert_pem)] {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, path)?;
        }
        Ok(())
    }
}

/// A certificate is renewed when less than this part of a year is left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn hosts(cfg: &SelfManaged) -> Vec<String> {
    let base = format!("{}.{}", cfg.service, cfg.namespace);
    vec![base.clone(), format!("{base}.svc"), format!("{base}.svc.cluster.local")]
}

fn secret_of(cfg: &SelfManaged, certs: &DevCerts, ca_bundle: &str) -> Secret {
    let data = BTreeMap::from([
        ("tls.crt".to_owned(), ByteString(certs.tls_cert_pem.clone().into_bytes())),
        ("tls.key".to_owned(), ByteString(certs.tls_key_pem.clone().into_bytes())),
        ("ca.crt".to_owned(), ByteString(ca_bundle.as_bytes().to_vec())),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(cfg.secret.clone()),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned())])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

fn generate(cfg: &SelfManaged) -> Result<DevCerts, ClusterError> {
    generate_dev_certs(&hosts(cfg)).map_err(|e| ClusterError {
        action: "generate the webhook certificate".into(),
        source: kube::Error::Service(Box::new(e)),
    })
}

/// Reads the Secret, creating it if it does not exist (when two replicas race, the first create
/// wins and the other reads it), and renews it when it expires within [`RENEW_BEFORE`].
pub async fn ensure_secret(client: &Client, cfg: &SelfManaged) -> Result<ServingCert, ClusterError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let what = format!("Secret {}/{}", cfg.namespace, cfg.secret);
    let existing = api.get_opt(&cfg.secret).await.map_err(at(format!("get {what}")))?;
    let Some(existing) = existing else {
        let fresh = generate(cfg)?;
        let secret = secret_of(cfg, &fresh, &fresh.ca_cert_pem);
        return match api.create(&PostParams::default(), &secret).await {
            Ok(created) => ServingCert::from_secret(&created).ok_or_else(|| incomplete(&what)),
            Err(e) if api_code(&e) == Some(409) => {
                // Another replica created it first: use theirs.
                let theirs = api.get(&cfg.secret).await.map_err(at(format!("get {what}")))?;
                ServingCert::from_secret(&theirs).ok_or_else(|| incomplete(&what))
            }
            Err(e) => Err(at(format!("create {what}"))(e)),
        };
    };
    let current = ServingCert::from_secret(&existing).ok_or_else(|| incomplete(&what))?;
    let renew_at = current.not_after().unwrap_or(0) - i64::try_from(RENEW_BEFORE.as_secs()).unwrap_or(0);
    if now_unix() < renew_at {
        return Ok(current);
    }
    // Renew: a new CA and leaf. The bundle keeps the old CA too, so replicas still serving the
    // old certificate stay trusted until they pick up the new one.
    let fresh = generate(cfg)?;
    let old_ca = CertificateDer::pem_slice_iter(current.ca_bundle_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .map(|der| pem_of(der.as_ref()))
        .unwrap_or_default();
    let mut renewed = secret_of(cfg, &fresh, &format!("{}{}", fresh.ca_cert_pem, old_ca));
    renewed.metadata.resource_version = existing.metadata.resource_version.clone();
    match api.replace(&cfg.secret, &PostParams::default(), &renewed).await {
        Ok(s) => ServingCert::from_secret(&s).ok_or_else(|| incomplete(&what)),
        Err(e) if api_code(&e) == Some(409) => {
            // Another replica renewed it first.
            let theirs = api.get(&cfg.secret).await.map_err(at(format!("get {what}")))?;
            ServingCert::from_secret(&theirs).ok_or_else(|| incomplete(&what))
        }
        Err(e) => Err(at(format!("renew {what}"))(e)),
    }
}

fn incomplete(what: &str) -> ClusterError {
    ClusterError {
        action: format!("read {what}"),
        source: kube::Error::Service(format!("{what} lacks tls.crt, tls.key or ca.crt; delete it and the injector makes a new one").into()),
    }
}

fn pem_of(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Sets `caBundle` on every webhook of both configurations where it differs; whether anything
/// changed. A configuration that does not exist (not installed yet) is skipped.
pub async fn ensure_ca_bundle(client: &Client, cfg: &SelfManaged, ca_bundle_pem: &str) -> Result<bool, ClusterError> {
    let bundle = ByteString(ca_bundle_pem.as_bytes().to_vec());
    let mutating = patch_bundle::<MutatingWebhookConfiguration>(client, cfg, ca_bundle_pem, |m| {
        stale(m.webhooks.iter().flatten().map(|w| w.client_config.ca_bundle.as_ref()), &bundle)
    })
    .await?;
    let validating = patch_bundle::<ValidatingWebhookConfiguration>(client, cfg, ca_bundle_pem, |v| {
        stale(v.webhooks.iter().flatten().map(|w| w.client_config.ca_bundle.as_ref()), &bundle)
    })
    .await?;
    Ok(mutating || validating)
}

/// Indices of the webhooks whose caBundle is not `bundle`.
fn stale<'a>(bundles: impl Iterator<Item = Option<&'a ByteString>>, bundle: &ByteString) -> Vec<usize> {
    bundles.enumerate().filter(|(_, b)| *b != Some(bundle)).map(|(i, _)| i).collect()
}

async fn patch_bundle<K>(
    client: &Client,
    cfg: &SelfManaged,
    ca_bundle_pem: &str,
    stale_of: impl Fn(&K) -> Vec<usize>,
) -> Result<bool, ClusterError>
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let name = &cfg.webhook_configuration;
    let what = format!("{} {name}", K::kind(&()));
    let Some(current) = api.get_opt(name).await.map_err(at(format!("get {what}")))? else {
        return Ok(false);
    };
    let indices = stale_of(&current);
    if indices.is_empty() {
        return Ok(false);
    }
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(ca_patch(&indices, ca_pem_b64(ca_bundle_pem))))
        .await
        .map_err(at(format!("patch caBundle of {what}")))?;
    Ok(true)
}

fn ca_pem_b64(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())
}

fn ca_patch(indices: &[usize], bundle_b64: String) -> json_patch::Patch {
    use json_patch::jsonptr::PointerBuf;
    json_patch::Patch(
        indices
            .iter()
            .map(|i| {
                json_patch::PatchOperation::Add(json_patch::AddOperation {
                    path: PointerBuf::from_tokens([String::from("webhooks"), i.to_string(), "clientConfig".into(), "caBundle".into()]),
                    value: serde_json::Value::String(bundle_b64.clone()),
                })
            })
            .collect(),
    )
}
