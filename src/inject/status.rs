//! The `dind-injector.io/status` annotation: what was injected, so that injection is idempotent
//! and the validating webhook can recognise the sidecar.

use serde::{Deserialize, Serialize};

/// The status annotation's content (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectionStatus {
    /// Format version of this record.
    pub version: u32,
    /// The sidecar container's name.
    pub container: String,
    /// `native` or `container`.
    pub mode: String,
    /// `unix`, `tcp-tls` or `tcp`.
    pub transport: String,
    /// The sidecar image.
    pub image: String,
    /// Names of the injected volumes.
    pub volumes: Vec<String>,
    /// Containers that got `DOCKER_HOST`.
    pub targets: Vec<String>,
    /// `sha256:` and the first 16 hex digits of the hash of the injected container and volumes.
    pub template: String,
}

/// The current format version.
pub const STATUS_VERSION: u32 = 1;

impl InjectionStatus {
    /// Reads the annotation value; `None` when it is not a status record.
    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_str(value).ok()
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `sha256:` + 16 hex digits of the SHA-256 of `bytes`.
pub fn template_hash(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
