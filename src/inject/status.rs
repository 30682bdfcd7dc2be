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

/// The current format version. 2: the template hash is taken over the sidecar as the apiserver
/// stores it (empty strings and empty lists dropped), and the sidecar masks the API token path.
pub const STATUS_VERSION: u32 = 2;

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
///
/// It is taken over the canonical form the apiserver stores: an empty string or an empty list
/// is the same as an absent field (`{"name": "X", "value": ""}` is stored as `{"name": "X"}`),
/// so the hash of the pod as patched equals the hash of the pod as stored, while any value that
/// means something else changes it.
pub fn sidecar_fingerprint(c: &k8s_openapi::api::core::v1::Container) -> String {
    let mut value = serde_json::json!({
        "image": c.image, "command": c.command, "args": c.args, "env": c.env, "envFrom": c.env_from,
        "workingDir": c.working_dir, "securityContext": c.security_context, "volumeMounts": c.volume_mounts,
        "volumeDevices": c.volume_devices, "restartPolicy": c.restart_policy, "startupProbe": c.startup_probe,
        "livenessProbe": c.liveness_probe, "readinessProbe": c.readiness_probe, "lifecycle": c.lifecycle,
    });
    drop_empty(&mut value);
    template_hash(&serde_json::to_vec(&value).unwrap_or_default())
}

/// Removes, at every depth, object members whose value is `""`, `[]` or `null`: what Go's
/// `omitempty` leaves out when the apiserver stores an object.
fn drop_empty(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            map.retain(|_, v| {
                drop_empty(v);
                !matches!(v, Value::Null) && v != "" && !v.as_array().is_some_and(Vec::is_empty)
            });
        }
        Value::Array(items) => items.iter_mut().for_each(drop_empty),
        _ => {}
    }
}

/// `sha256:` + 16 hex digits of the SHA-256 of `bytes`.
pub fn template_hash(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, EnvVar};

    use super::sidecar_fingerprint;

    fn with_env(value: Option<&str>) -> Container {
        Container {
            name: "dind".into(),
            image: Some("docker:28.5.1-dind".into()),
            env: Some(vec![EnvVar {
                name: "DOCKER_TLS_CERTDIR".into(),
                value: value.map(str::to_owned),
                ..EnvVar::default()
            }]),
            args: Some(vec![]),
            ..Container::default()
        }
    }

    #[test]
    fn an_empty_value_is_the_stored_absent_one_but_a_real_value_is_a_change() {
        assert_eq!(sidecar_fingerprint(&with_env(Some(""))), sidecar_fingerprint(&with_env(None)));
        assert_ne!(sidecar_fingerprint(&with_env(Some("/certs"))), sidecar_fingerprint(&with_env(None)));
        let mut no_args = with_env(None);
        no_args.args = None;
        assert_eq!(sidecar_fingerprint(&no_args), sidecar_fingerprint(&with_env(None)));
        no_args.args = Some(vec![String::new()]);
        assert_ne!(sidecar_fingerprint(&no_args), sidecar_fingerprint(&with_env(None)), "an empty argument is still an argument");
    }
}
