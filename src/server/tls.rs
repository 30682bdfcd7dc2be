//! TLS: reading the certificate and key files, and the resolver that serves the current pair
//! (swapped in place when the files change, so rotation needs no restart).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} file {}: {source} (set --tls-cert/--tls-key, or run `dind-injector certs`)", path.display())]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no certificate, or broken PEM.
    #[error("TLS certificate file {}: {message}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key file holds no usable private key.
    #[error("TLS key file {}: {message}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key does not belong to the certificate (or the certificate cannot be parsed).
    #[error("TLS key file {} does not match the certificate in {}: {message}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Config(String),
}

impl TlsError {
    /// A short, stable label for logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            TlsError::Read { .. } => "read",
            TlsError::BadCertificate { .. } => "bad-certificate",
            TlsError::BadKey { .. } => "bad-key",
            TlsError::Mismatch { .. } => "mismatch",
            TlsError::Config(_) => "config",
        }
    }
}

/// Where the serving certificate (a full chain, leaf first) and its key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl CertPaths {
    /// Reads both files.
    pub fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |what, path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source });
        Ok((read("certificate", &self.cert)?, read("key", &self.key)?))
    }

    /// Reads both files and checks that they make a usable pair.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let (cert, key) = self.read()?;
        certified_key(&cert, &key, self)
    }
}

/// The crypto provider the server uses (ring), whatever the process default is.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM chain and key (`paths` only names them in errors) and checks that the key
/// belongs to the first certificate.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8], paths: &CertPaths) -> Result<CertifiedKey, TlsError> {
    let bad_cert = |message: String| TlsError::BadCertificate { path: paths.cert.clone(), message };
    let chain =
        CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>().map_err(|e| bad_cert(format!("not valid PEM ({e})")))?;
    if chain.is_empty() {
        return Err(bad_cert("no `-----BEGIN CERTIFICATE-----` block found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
        path: paths.key.clone(),
        message: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no `-----BEGIN PRIVATE KEY-----` (or RSA/EC PRIVATE KEY) block found".into(),
            e => format!("not a valid PEM private key ({e})"),
        },
    })?;
    let mismatch = |e: rustls::Error| TlsError::Mismatch { cert: paths.cert.clone(), key: paths.key.clone(), message: e.to_string() };
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(mismatch)?;
    // from_der lets an undecidable comparison through; insist on a match we could check.
    certified.keys_match().map_err(mismatch)?;
    Ok(certified)
}

/// The serving certificate: rustls asks it on every handshake, the reloader replaces it.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// A store serving `key`.
    pub fn new(key: CertifiedKey) -> Self {
        CertStore { current: RwLock::new(Arc::new(key)) }
    }

    /// The pair served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a whole Arc: the writer only assigns it.
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Serves `key` from the next handshake on.
    pub fn replace(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
    }

    /// When the served leaf certificate expires (Unix seconds), when it can be read.
    pub fn not_after(&self) -> Option<i64> {
        let key = self.current();
        key.cert.first().and_then(|c| crate::certs::not_after_unix(c.as_ref()))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The rustls configuration: TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, certificates from
/// `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
