//! The `dind-injector.io/status` annotation: what was injected, so that injection is idempotent
//! and the validating webhook can recognise the sidecar.
//!
//! Plain data, below both readers: the pod decoder ([`crate::pod`]) recognises an injected pod by
//! it, the injection decision ([`crate::inject`]) writes it and the validating webhook
//! ([`crate::policy`]) checks the sidecar against it.

use std::borrow::Cow;
use std::io;

use k8s_openapi::api::core::v1::{Container, EnvFromSource, EnvVar, Lifecycle, Probe, SecurityContext, VolumeDevice, VolumeMount};
use serde::{Deserialize, Serialize};
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};

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
    pub mirrored: Vec<MirroredMount>,
    /// The isolation mode (absent means `privileged`, as in records written before the modes).
    #[serde(default = "privileged", skip_serializing_if = "is_privileged")]
    pub isolation: Isolation,
    /// The RuntimeClass the mode put on the pod (none for `privileged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class: Option<String>,
    /// The node cache the sidecar may take a slot of (absent when the cache is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheRecord>,
}

fn privileged() -> Isolation {
    Isolation::Privileged
}

fn is_privileged(i: &Isolation) -> bool {
    *i == Isolation::Privileged
}

/// The node cache given to the sidecar, as recorded in the status annotation: the validating
/// webhook exempts exactly this one hostPath volume, mounted by the sidecar only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheRecord {
    /// The hostPath volume.
    pub volume: String,
    /// Its node directory: `cache.hostPath/<namespace>/<scope>`.
    pub host_path: String,
    /// `<namespace>/<scope>`.
    pub scope: String,
    /// The scope's slots.
    pub slots: u32,
}

/// One job mount mirrored into the sidecar, as recorded in the status annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirroredMount {
    /// The pod volume.
    pub volume: String,
    /// The mount path, the same in the sidecar and the job container.
    pub path: String,
    /// The job mount's `subPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// The job mount's `subPathExpr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path_expr: Option<String>,
}

/// How the injected daemon is kept from the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A privileged sidecar on the node's kernel (the default): the namespace must allow
    /// privileged pods, and the validating webhook exempts exactly that one container.
    Privileged,
    /// Sysbox (`runtimeClassName: sysbox-runc`, `hostUsers: false`): an unprivileged sidecar whose
    /// root is root only in the pod's user namespace; the pod meets Pod Security baseline as it is.
    Sysbox,
    /// Kata Containers: the pod is a lightweight VM and the privileged sidecar is privileged
    /// inside the VM only; exempt only while the pod keeps the Kata runtime class.
    Kata,
    /// Kubernetes user namespaces (`hostUsers: false`, 1.33+), no extra runtime: an unprivileged
    /// sidecar with `SYS_ADMIN` and `NET_ADMIN` in the pod's user namespace only; exempt only while
    /// the pod keeps `hostUsers: false`.
    Userns,
}

impl Isolation {
    /// Every mode.
    pub const ALL: [Isolation; 4] = [Isolation::Privileged, Isolation::Sysbox, Isolation::Kata, Isolation::Userns];

    /// The spelling used in the configuration, annotations and the status record.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Privileged => "privileged",
            Isolation::Sysbox => "sysbox",
            Isolation::Kata => "kata",
            Isolation::Userns => "userns",
        }
    }

    /// Parses the annotation spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Isolation::ALL.into_iter().find(|i| i.as_str() == s.trim())
    }
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
/// means something else changes it. The bytes hashed are compact JSON with the keys of every
/// object sorted and members whose value is `""`, `[]` or `null` left out, at every depth
/// (`Canonical` writes them in one pass, without building a `serde_json::Value`).
pub fn sidecar_fingerprint(c: &Container) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Hashed<'a> {
        image: &'a Option<String>,
        command: &'a Option<Vec<String>>,
        args: &'a Option<Vec<String>>,
        env: &'a Option<Vec<EnvVar>>,
        env_from: &'a Option<Vec<EnvFromSource>>,
        working_dir: &'a Option<String>,
        security_context: &'a Option<SecurityContext>,
        volume_mounts: &'a Option<Vec<VolumeMount>>,
        volume_devices: &'a Option<Vec<VolumeDevice>>,
        restart_policy: &'a Option<String>,
        startup_probe: &'a Option<Probe>,
        liveness_probe: &'a Option<Probe>,
        readiness_probe: &'a Option<Probe>,
        lifecycle: &'a Option<Lifecycle>,
    }
    let hashed = Hashed {
        image: &c.image,
        command: &c.command,
        args: &c.args,
        env: &c.env,
        env_from: &c.env_from,
        working_dir: &c.working_dir,
        security_context: &c.security_context,
        volume_mounts: &c.volume_mounts,
        volume_devices: &c.volume_devices,
        restart_policy: &c.restart_policy,
        startup_probe: &c.startup_probe,
        liveness_probe: &c.liveness_probe,
        readiness_probe: &c.readiness_probe,
        lifecycle: &c.lifecycle,
    };
    let mut out = Vec::with_capacity(2048);
    let mut ser = serde_json::Serializer::with_formatter(std::io::sink(), Canonical::new(&mut out));
    // Serializing the Kubernetes types cannot fail; a failure would hash what was written.
    let _ = hashed.serialize(&mut ser);
    template_hash(&out)
}

/// A `serde_json` formatter writing canonical JSON into `out` (the writer it is handed is
/// ignored): compact, the keys of every object sorted as `serde_json::Map` sorts them, and
/// object members whose value is `""`, `[]` or `null` left out at every depth: what Go's
/// `omitempty` leaves out when the apiserver stores an object. Members are written as they come
/// and put in order, comma-separated, when their object closes.
struct Canonical<'a> {
    out: &'a mut Vec<u8>,
    /// Members of the objects being written, innermost last.
    members: Vec<Member>,
    /// Where each open object's members start in `members`.
    levels: Vec<usize>,
    scratch: Vec<u8>,
}

/// One object member's place in `out`: `"key":value`.
#[derive(Clone, Copy)]
struct Member {
    start: usize,
    key_end: usize,
    value_start: usize,
    end: usize,
}

impl<'a> Canonical<'a> {
    /// A formatter appending to `out`.
    fn new(out: &'a mut Vec<u8>) -> Self {
        Canonical { out, members: Vec::new(), levels: Vec::new(), scratch: Vec::new() }
    }
}

/// A member's key as `serde_json::Map` orders keys: unescaped.
fn member_key<'k>(out: &'k [u8], m: &Member) -> Cow<'k, [u8]> {
    let quoted = &out[m.start..m.key_end];
    let inner = quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default();
    if inner.contains(&b'\\')
        && let Ok(s) = serde_json::from_slice::<String>(quoted)
    {
        return Cow::Owned(s.into_bytes());
    }
    Cow::Borrowed(inner)
}

/// Formatter methods that write a value as the compact formatter does, into `out`.
macro_rules! into_out {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $name<W: ?Sized + io::Write>(&mut self, _: &mut W $(, $arg: $ty)*) -> io::Result<()> {
            CompactFormatter.$name(self.out $(, $arg)*)
        })*
    };
}

impl Formatter for Canonical<'_> {
    into_out! {
        write_null();
        write_bool(v: bool);
        write_i8(v: i8);
        write_i16(v: i16);
        write_i32(v: i32);
        write_i64(v: i64);
        write_i128(v: i128);
        write_u8(v: u8);
        write_u16(v: u16);
        write_u32(v: u32);
        write_u64(v: u64);
        write_u128(v: u128);
        write_f32(v: f32);
        write_f64(v: f64);
        write_number_str(v: &str);
        begin_string();
        end_string();
        write_string_fragment(v: &str);
        write_char_escape(v: CharEscape);
        write_byte_array(v: &[u8]);
        write_raw_fragment(v: &str);
        begin_array();
        end_array();
        begin_array_value(first: bool);
        end_array_value();
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.out.push(b'{');
        self.levels.push(self.members.len());
        Ok(())
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, _: &mut W, _first: bool) -> io::Result<()> {
        let start = self.out.len();
        self.members.push(Member { start, key_end: start, value_start: start, end: start });
        Ok(())
    }

    fn end_object_key<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        if let Some(m) = self.members.last_mut() {
            m.key_end = self.out.len();
        }
        Ok(())
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.out.push(b':');
        if let Some(m) = self.members.last_mut() {
            m.value_start = self.out.len();
        }
        Ok(())
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        let Some(m) = self.members.last_mut() else { return Ok(()) };
        if matches!(&self.out[m.value_start..], b"null" | b"\"\"" | b"[]") {
            self.out.truncate(m.start);
            self.members.pop();
        } else {
            m.end = self.out.len();
        }
        Ok(())
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        let first = self.levels.pop().unwrap_or(0).min(self.members.len());
        let members = &mut self.members[first..];
        if members.len() > 1 {
            let out = &*self.out;
            members.sort_by(|a, b| member_key(out, a).cmp(&member_key(out, b)));
            let begin = members.iter().map(|m| m.start).min().unwrap_or(out.len());
            self.scratch.clear();
            for (i, m) in members.iter().enumerate() {
                if i > 0 {
                    self.scratch.push(b',');
                }
                self.scratch.extend_from_slice(&out[m.start..m.end]);
            }
            self.out.truncate(begin);
            self.out.extend_from_slice(&self.scratch);
        }
        self.members.truncate(first);
        self.out.push(b'}');
        Ok(())
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
            env: Some(vec![EnvVar { name: "DOCKER_TLS_CERTDIR".into(), value: value.map(str::to_owned), ..EnvVar::default() }]),
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
