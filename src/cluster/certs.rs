//! Self-managed certificates: the CA and serving certificate live in a Secret that the first
//! replica creates (the others read it); every replica keeps `caBundle` current in the two webhook
//! configurations ([`super::ca_bundle`]), and the certificate is renewed before it expires. The
//! server serves from files, so a renewal is picked up by the same reload that serves rotated
//! Secret volumes.
//!
//! Each issue makes a new CA that signs exactly one serving certificate and is valid as long as
//! it; the CA's key is thrown away once it has signed. A renewal therefore puts the new CA in
//! front of the bundle and keeps every older CA that has not expired (whose certificate may still
//! be served by a replica that has not reloaded yet), and drops the expired ones.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::certs::{days_since_epoch, is_dns_name, not_after_unix, ymd};

use super::{ClusterError, FIELD_MANAGER, MANAGED_BY_LABEL, WebhookConfiguration, api_code, at};

/// The CA's common name.
pub const CA_COMMON_NAME: &str = "dind-injector webhook CA";
/// How long a serving certificate (and the CA that signed it) is valid, in days.
pub const VALID_DAYS: i64 = 365;
/// The cluster DNS domain when none is configured.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Where the webhook's certificate lives and whom it serves.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    /// The injector's namespace.
    pub namespace: String,
    /// The Secret (type `kubernetes.io/tls`) holding `tls.crt` (the serving certificate),
    /// `tls.key` (its private key) and `ca.crt` (the CA bundle the apiserver trusts: the CA that
    /// signed `tls.crt` first, then older CAs still valid). No CA key is kept.
    pub secret: String,
    /// The Service name: the certificate is for `<service>`, `<service>.<namespace>`,
    /// `<service>.<namespace>.svc` and `<service>.<namespace>.svc.<cluster_domain>`.
    pub service: String,
    /// The cluster DNS domain (`cluster.local` unless the cluster was set up otherwise).
    pub cluster_domain: String,
    /// The name of both webhook configurations.
    pub webhook_configuration: String,
}

impl SelfManaged {
    /// The DNS names the serving certificate is valid for: exactly the Service's names.
    pub fn service_names(&self) -> Vec<String> {
        let (svc, ns) = (&self.service, &self.namespace);
        let domain = self.cluster_domain.trim_matches('.');
        vec![svc.clone(), format!("{svc}.{ns}"), format!("{svc}.{ns}.svc"), format!("{svc}.{ns}.svc.{domain}")]
    }
}

/// The serving certificate and the CA bundle the apiserver must trust.
#[derive(Clone, PartialEq, Eq)]
pub struct ServingCert {
    /// Leaf (and chain), PEM.
    pub cert_pem: String,
    /// The leaf's key, PEM.
    pub key_pem: String,
    /// The CA certificates to trust, PEM (the newest first, then older ones still valid).
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
        Some(ServingCert { cert_pem: text("tls.crt")?, key_pem: text("tls.key")?, ca_bundle_pem: text("ca.crt")? })
    }

    /// Whether the leaf is one the injector issued before it had production names (CN
    /// "dind-injector development server", with 127.0.0.1, ::1 and localhost): it is replaced.
    fn is_development(&self) -> bool {
        let needle = b"dind-injector development server";
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .is_some_and(|der| der.as_ref().windows(needle.len()).any(|w| w == needle))
    }

    /// Writes `tls.crt` (mode 0644) and `tls.key` (mode 0600) where the server reads them, each
    /// whole (written to a temporary file, then renamed), owned by the user the injector runs as.
    pub fn write(&self, cert: &Path, key: &Path) -> std::io::Result<()> {
        write_file(key, &self.key_pem, 0o600)?;
        write_file(cert, &self.cert_pem, 0o644)
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(&tmp)?;
    #[cfg(unix)]
    {
        // The mode given to open is masked by the umask; set it exactly.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A certificate is renewed when less than this is left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A CA and the serving certificate it signed, PEM.
#[derive(Clone)]
pub struct Issued {
    /// The CA certificate (CN [`CA_COMMON_NAME`]).
    pub ca_cert_pem: String,
    /// The serving certificate (CN `<service>.<namespace>.svc`, SANs [`SelfManaged::service_names`]).
    pub cert_pem: String,
    /// The serving certificate's private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// Issues a new CA and a serving certificate for the Service in `cfg`, valid from the day before
/// `now` for [`VALID_DAYS`] (the CA one day longer). The CA's key is dropped when this returns.
pub fn issue(cfg: &SelfManaged, now: SystemTime) -> Result<Issued, ClusterError> {
    let fail = |what: &str, message: String| ClusterError {
        action: format!("issue the webhook certificate for Service {}/{}", cfg.namespace, cfg.service),
        source: kube::Error::Service(format!("{what}: {message}").into()),
    };
    let names = cfg.service_names();
    if let Some(bad) = names.iter().find(|n| !is_dns_name(n)) {
        return Err(fail("bad name", format!("{bad:?} is not a DNS name; check --service-name, --pod-namespace and --cluster-domain")));
    }
    let today = days_since_epoch(now);
    let date = |days| {
        let (y, m, d) = ymd(days);
        rcgen::date_time_ymd(y, m, d)
    };
    let rcgen_err = |what: &'static str| move |e: rcgen::Error| fail(what, e.to_string());

    let ca_key = KeyPair::generate().map_err(rcgen_err("CA key"))?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = date(today - 1);
    ca.not_after = date(today + VALID_DAYS + 1);
    let ca_cert = ca.self_signed(&ca_key).map_err(rcgen_err("CA certificate"))?;

    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, format!("{}.{}.svc", cfg.service, cfg.namespace));
    for name in &names {
        let dns = name.clone().try_into().map_err(|e: rcgen::Error| fail("bad name", format!("{name:?}: {e}")))?;
        leaf.subject_alt_names.push(SanType::DnsName(dns));
    }
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = date(today - 1);
    leaf.not_after = date(today + VALID_DAYS);
    let leaf_key = KeyPair::generate().map_err(rcgen_err("serving key"))?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(rcgen_err("serving certificate"))?;
    Ok(Issued { ca_cert_pem: ca_cert.pem(), cert_pem: leaf_cert.pem(), key_pem: leaf_key.serialize_pem() })
}

/// The CA bundle after a renewal: the new CA first, then every CA of `old_bundle_pem` that has
/// not expired at `now_unix` (each may have signed a certificate a replica still serves), once.
pub fn renewed_bundle(new_ca_pem: &str, old_bundle_pem: &str, now_unix: i64) -> String {
    let mut out = new_ca_pem.to_owned();
    let mut seen: Vec<Vec<u8>> =
        CertificateDer::pem_slice_iter(new_ca_pem.as_bytes()).filter_map(Result::ok).map(|d| d.as_ref().to_vec()).collect();
    for der in CertificateDer::pem_slice_iter(old_bundle_pem.as_bytes()).filter_map(Result::ok) {
        let live = not_after_unix(der.as_ref()).is_some_and(|t| t > now_unix);
        if live && !seen.iter().any(|s| s.as_slice() == der.as_ref()) {
            out.push_str(&pem_of(der.as_ref()));
            seen.push(der.as_ref().to_vec());
        }
    }
    out
}

fn secret_of(cfg: &SelfManaged, issued: &Issued, ca_bundle: &str) -> Secret {
    let data = BTreeMap::from([
        ("tls.crt".to_owned(), ByteString(issued.cert_pem.clone().into_bytes())),
        ("tls.key".to_owned(), ByteString(issued.key_pem.clone().into_bytes())),
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

/// Reads the Secret as it is (`None` when it does not exist); never creates or renews it.
pub async fn read_secret(client: &Client, cfg: &SelfManaged) -> Result<Option<ServingCert>, ClusterError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let what = format!("Secret {}/{}", cfg.namespace, cfg.secret);
    match api.get_opt(&cfg.secret).await.map_err(at(format!("get {what}")))? {
        Some(secret) => ServingCert::from_secret(&secret).map(Some).ok_or_else(|| incomplete(&what)),
        None => Ok(None),
    }
}

/// Reads the Secret, creating it if it does not exist (when two replicas race, the first create
/// wins and the other reads it), and renews it when it expires within [`RENEW_BEFORE`] or holds
/// a development certificate.
pub async fn ensure_secret(client: &Client, cfg: &SelfManaged) -> Result<ServingCert, ClusterError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let what = format!("Secret {}/{}", cfg.namespace, cfg.secret);
    let existing = api.get_opt(&cfg.secret).await.map_err(at(format!("get {what}")))?;
    let Some(existing) = existing else {
        // A new Secret (first install, or the Secret was deleted to switch certificates.mode):
        // its bundle keeps every CA the webhook configurations still trust, so replicas still
        // serving a certificate of the old Secret (or of cert-manager) stay trusted while they
        // move to the new one. Renewals drop these CAs once they expire.
        let fresh = issue(cfg, SystemTime::now())?;
        let trusted = trusted_now(client, cfg).await?;
        let bundle = renewed_bundle(&fresh.ca_cert_pem, &trusted, now_unix());
        if bundle != fresh.ca_cert_pem {
            tracing::info!(secret = %what, "creating the self-managed certificate; ca.crt keeps the CAs the webhook configurations still trust");
        }
        let secret = secret_of(cfg, &fresh, &bundle);
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
    let now = now_unix();
    if now < renew_at && !current.is_development() {
        return Ok(current);
    }
    // Renew: a new CA and leaf. The bundle keeps the older CAs still valid, so replicas still
    // serving the old certificate stay trusted until they pick up the new one.
    let fresh = issue(cfg, SystemTime::now())?;
    let bundle = renewed_bundle(&fresh.ca_cert_pem, &current.ca_bundle_pem, now);
    let mut renewed = secret_of(cfg, &fresh, &bundle);
    renewed.metadata.resource_version = existing.metadata.resource_version.clone();
    match api.replace(&cfg.secret, &PostParams::default(), &renewed).await {
        Ok(s) => {
            tracing::info!(secret = %what, "renewed the self-managed certificate (new CA first in ca.crt, older CAs still valid kept)");
            ServingCert::from_secret(&s).ok_or_else(|| incomplete(&what))
        }
        Err(e) if api_code(&e) == Some(409) => {
            // Another replica renewed it first.
            let theirs = api.get(&cfg.secret).await.map_err(at(format!("get {what}")))?;
            ServingCert::from_secret(&theirs).ok_or_else(|| incomplete(&what))
        }
        Err(e) => Err(at(format!("renew {what}"))(e)),
    }
}

/// Every CA in the caBundle of the webhooks of both configurations (PEM, concatenated); empty
/// when they are not installed yet.
async fn trusted_now(client: &Client, cfg: &SelfManaged) -> Result<String, ClusterError> {
    let mut pem = trusted_by::<MutatingWebhookConfiguration>(client, &cfg.webhook_configuration).await?;
    pem.push_str(&trusted_by::<ValidatingWebhookConfiguration>(client, &cfg.webhook_configuration).await?);
    Ok(pem)
}

/// The caBundles of the webhooks of configuration `name` of kind `K`, each ended by a newline.
async fn trusted_by<K: WebhookConfiguration>(client: &Client, name: &str) -> Result<String, ClusterError> {
    let api: Api<K> = Api::all(client.clone());
    let found = api.get_opt(name).await.map_err(at(format!("get {} {name} (for the CAs it trusts)", K::kind(&()))))?;
    let mut pem = String::new();
    for bundle in found.iter().flat_map(|c| c.ca_bundles()).filter_map(|(_, bundle)| bundle) {
        pem.push_str(&String::from_utf8_lossy(&bundle.0));
        pem.push('\n');
    }
    Ok(pem)
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
