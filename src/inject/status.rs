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
    /// [`sidecar_fingerprint`] of the injected container: the validating webhook recomputes it to
    /// tell the injected sidecar from one that was changed afterwards.
    pub template: String,
    /// Job mounts mirrored into the sidecar at the same paths (absent in records written before
    /// workspace mirroring, and when nothing was mirrored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrored: Vec<super::workspace::MirroredMount>,
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

/// A hash of every sidecar field that decides what runs in it, with which privileges, and that
/// the apiserver does not default: image, command, args, env, working directory, security
/// context, mounts, devices, restart policy, and the probes and lifecycle hooks (their exec
/// commands run inside the privileged container, and every probe field is set explicitly).
pub fn sidecar_fingerprint(c: &k8s_openapi::api::core::v1::Container) -> String {
    let fields = (
        (&c.image, &c.command, &c.args, &c.env, &c.env_from, &c.working_dir),
        (&c.security_context, &c.volume_mounts, &c.volume_devices, &c.restart_policy),
        (&c.startup_probe, &c.liveness_probe, &c.readiness_probe, &c.lifecycle),
    );
    template_hash(&serde_json::to_vec(&fields).unwrap_or_default())
}

/// `sha256:` + 16 hex digits of the SHA-256 of `bytes`.
pub fn template_hash(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
