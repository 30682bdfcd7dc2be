//! Reading the pod of an admission request: only the fields the decision and the policy read.
//!
//! A CI pod's JSON is mostly what neither reads: managed fields, resources, tolerations,
//! affinity, termination settings, scheduling. [`decode`] builds k8s-openapi's `Pod` with only
//! the fields below filled in and skips the rest without building it (serde's `IgnoredAny`), so
//! the decision keeps its typed structs and no allocation is spent on what it never looks at.
//! The webhook (both reviews) and the CLI read pods with it.
//!
//! Everything read by `inject`, `policy` and `webhook` must be listed here:
//! `tests/pod_decode.rs` checks, for every fixture and thousands of generated pods, that the
//! decision, the patch and the verdict are the same as from the full decode.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, EphemeralContainer, HostAlias, Lifecycle, Pod, PodOS, PodSecurityContext, PodSpec,
    Probe, ResourceRequirements, SecurityContext, Volume, VolumeDevice, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Deserialize;

/// Reads a pod from its JSON, keeping only the fields the injector reads (module docs).
pub fn decode(json: &str) -> Result<Pod, serde_json::Error> {
    serde_json::from_str::<LeanPod>(json).map(Pod::from)
}

/// Reads a pod from a JSON value, as [`decode`] reads it (the CLI's manifests).
pub fn from_value(value: &serde_json::Value) -> Result<Pod, serde_json::Error> {
    LeanPod::deserialize(value).map(Pod::from)
}

/// The JSON names of the sources `v` sets, in the apiserver's (alphabetical) order; a valid
/// volume sets exactly one. Read from the struct itself (no serialization): the pattern names
/// every field, so a k8s-openapi with a new volume source does not compile until it is listed.
pub fn volume_sources(v: &Volume) -> impl Iterator<Item = &'static str> {
    let Volume {
        name: _,
        aws_elastic_block_store,
        azure_disk,
        azure_file,
        cephfs,
        cinder,
        config_map,
        csi,
        downward_api,
        empty_dir,
        ephemeral,
        fc,
        flex_volume,
        flocker,
        gce_persistent_disk,
        git_repo,
        glusterfs,
        host_path,
        image,
        iscsi,
        nfs,
        persistent_volume_claim,
        photon_persistent_disk,
        portworx_volume,
        projected,
        quobyte,
        rbd,
        scale_io,
        secret,
        storageos,
        vsphere_volume,
    } = v;
    [
        (aws_elastic_block_store.is_some(), "awsElasticBlockStore"),
        (azure_disk.is_some(), "azureDisk"),
        (azure_file.is_some(), "azureFile"),
        (cephfs.is_some(), "cephfs"),
        (cinder.is_some(), "cinder"),
        (config_map.is_some(), "configMap"),
        (csi.is_some(), "csi"),
        (downward_api.is_some(), "downwardAPI"),
        (empty_dir.is_some(), "emptyDir"),
        (ephemeral.is_some(), "ephemeral"),
        (fc.is_some(), "fc"),
        (flex_volume.is_some(), "flexVolume"),
        (flocker.is_some(), "flocker"),
        (gce_persistent_disk.is_some(), "gcePersistentDisk"),
        (git_repo.is_some(), "gitRepo"),
        (glusterfs.is_some(), "glusterfs"),
        (host_path.is_some(), "hostPath"),
        (image.is_some(), "image"),
        (iscsi.is_some(), "iscsi"),
        (nfs.is_some(), "nfs"),
        (persistent_volume_claim.is_some(), "persistentVolumeClaim"),
        (photon_persistent_disk.is_some(), "photonPersistentDisk"),
        (portworx_volume.is_some(), "portworxVolume"),
        (projected.is_some(), "projected"),
        (quobyte.is_some(), "quobyte"),
        (rbd.is_some(), "rbd"),
        (scale_io.is_some(), "scaleIO"),
        (secret.is_some(), "secret"),
        (storageos.is_some(), "storageos"),
        (vsphere_volume.is_some(), "vsphereVolume"),
    ]
    .into_iter()
    .filter_map(|(set, source)| set.then_some(source))
}

/// A pod read as [`decode`] reads it, inside a larger document (the AdmissionReview).
#[derive(Debug)]
pub struct Decoded(pub Pod);

impl<'de> Deserialize<'de> for Decoded {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        LeanPod::deserialize(d).map(|p| Decoded(Pod::from(p)))
    }
}

/// A pod as the mutating webhook reads it: as [`Decoded`], except that when its metadata (which
/// the apiserver writes before the spec) carries a dind-injector status record, the rest of the
/// object is skipped unread and the pod has no spec. The apiserver's reinvocation call, made for
/// every injected pod, needs nothing else: that pod gets no patch.
#[derive(Debug)]
pub struct ForMutation(pub Pod);

impl<'de> Deserialize<'de> for ForMutation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IgnoredAny, MapAccess, Visitor};

        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Metadata,
            Spec,
            #[serde(other)]
            Other,
        }

        struct PodVisitor;
        impl<'de> Visitor<'de> for PodVisitor {
            type Value = LeanPod;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Pod object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LeanPod, A::Error> {
                let mut pod = LeanPod { metadata: None, spec: None };
                let (mut seen_metadata, mut seen_spec) = (false, false);
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Metadata => {
                            if std::mem::replace(&mut seen_metadata, true) {
                                return Err(A::Error::duplicate_field("metadata"));
                            }
                            pod.metadata = map.next_value()?;
                            if pod.metadata.as_ref().is_some_and(LeanMeta::carries_status) {
                                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                                pod.spec = None;
                                return Ok(pod);
                            }
                        }
                        Field::Spec => {
                            if std::mem::replace(&mut seen_spec, true) {
                                return Err(A::Error::duplicate_field("spec"));
                            }
                            pod.spec = map.next_value()?;
                        }
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(pod)
            }
        }

        d.deserialize_map(PodVisitor).map(|p| ForMutation(Pod::from(p)))
    }
}

// Every field is optional and `null` reads as absent, as k8s-openapi reads them (its required
// fields, such as a container's name, default to empty).

#[derive(Deserialize)]
struct LeanPod {
    #[serde(default)]
    metadata: Option<LeanMeta>,
    #[serde(default)]
    spec: Option<LeanSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    owner_references: Option<Vec<OwnerReference>>,
}

impl LeanMeta {
    /// Whether the pod carries a status record dind-injector wrote (it was injected already).
    fn carries_status(&self) -> bool {
        self.annotations
            .as_ref()
            .and_then(|a| a.get(crate::annotations::STATUS))
            .is_some_and(|status| crate::status::InjectionStatus::parse(status).is_some())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanSpec {
    #[serde(default)]
    containers: Option<Vec<LeanContainer>>,
    #[serde(default)]
    init_containers: Option<Vec<LeanContainer>>,
    #[serde(default)]
    ephemeral_containers: Option<Vec<LeanContainer>>,
    #[serde(default)]
    volumes: Option<Vec<Volume>>,
    #[serde(default)]
    host_network: Option<bool>,
    #[serde(default, rename = "hostPID")]
    host_pid: Option<bool>,
    #[serde(default, rename = "hostIPC")]
    host_ipc: Option<bool>,
    #[serde(default)]
    host_users: Option<bool>,
    #[serde(default)]
    runtime_class_name: Option<String>,
    #[serde(default)]
    host_aliases: Option<Vec<HostAlias>>,
    #[serde(default)]
    security_context: Option<PodSecurityContext>,
    #[serde(default)]
    os: Option<PodOS>,
}

/// A container, an init container or an ephemeral container: what the decision, the Pod
/// Security checks and the sidecar's fingerprint read. Not read: resources other than the
/// ephemeral-storage limit, resize and restart rules, stdin/tty, termination message settings,
/// image pull policy.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanContainer {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<EnvVar>>,
    #[serde(default)]
    env_from: Option<Vec<EnvFromSource>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    ports: Option<Vec<ContainerPort>>,
    #[serde(default)]
    security_context: Option<SecurityContext>,
    #[serde(default)]
    volume_mounts: Option<Vec<VolumeMount>>,
    #[serde(default)]
    volume_devices: Option<Vec<VolumeDevice>>,
    #[serde(default)]
    restart_policy: Option<String>,
    #[serde(default)]
    startup_probe: Option<Probe>,
    #[serde(default)]
    liveness_probe: Option<Probe>,
    #[serde(default)]
    readiness_probe: Option<Probe>,
    #[serde(default)]
    lifecycle: Option<Lifecycle>,
    #[serde(default)]
    target_container_name: Option<String>,
    #[serde(default)]
    resources: Option<LeanResources>,
}

/// Of a container's resources, the one limit the decision reads: `ephemeral-storage` (whether
/// the kubelet bounds the pod's total: inject/storage.rs). Other keys are skipped unbuilt.
#[derive(Deserialize)]
struct LeanResources {
    #[serde(default)]
    limits: Option<LeanLimits>,
}

#[derive(Deserialize)]
struct LeanLimits {
    #[serde(default, rename = "ephemeral-storage")]
    ephemeral_storage: Option<Quantity>,
}

fn resources(r: Option<LeanResources>) -> Option<ResourceRequirements> {
    let limit = r?.limits?.ephemeral_storage?;
    Some(ResourceRequirements {
        limits: Some(BTreeMap::from([("ephemeral-storage".to_owned(), limit)])),
        ..ResourceRequirements::default()
    })
}

impl From<LeanPod> for Pod {
    fn from(p: LeanPod) -> Pod {
        Pod { metadata: p.metadata.map(ObjectMeta::from).unwrap_or_default(), spec: p.spec.map(PodSpec::from), status: None }
    }
}

impl From<LeanMeta> for ObjectMeta {
    fn from(m: LeanMeta) -> ObjectMeta {
        ObjectMeta {
            name: m.name,
            generate_name: m.generate_name,
            namespace: m.namespace,
            labels: m.labels,
            annotations: m.annotations,
            owner_references: m.owner_references,
            ..ObjectMeta::default()
        }
    }
}

impl From<LeanSpec> for PodSpec {
    fn from(s: LeanSpec) -> PodSpec {
        let list = |v: Option<Vec<LeanContainer>>| v.map(|v| v.into_iter().map(Container::from).collect());
        PodSpec {
            containers: list(s.containers).unwrap_or_default(),
            init_containers: list(s.init_containers),
            ephemeral_containers: s.ephemeral_containers.map(|v| v.into_iter().map(EphemeralContainer::from).collect()),
            volumes: s.volumes,
            host_network: s.host_network,
            host_pid: s.host_pid,
            host_ipc: s.host_ipc,
            host_users: s.host_users,
            runtime_class_name: s.runtime_class_name,
            host_aliases: s.host_aliases,
            security_context: s.security_context,
            os: s.os,
            ..PodSpec::default()
        }
    }
}

/// `From<LeanContainer>` for k8s-openapi's container types, which share these fields (plus the
/// listed extra ones) but no trait: one list of the fields read, so the two cannot drift apart.
macro_rules! from_lean_container {
    ($target:ident $(, $extra:ident)*) => {
        impl From<LeanContainer> for $target {
            fn from(c: LeanContainer) -> $target {
                $target {
                    name: c.name.unwrap_or_default(),
                    image: c.image,
                    command: c.command,
                    args: c.args,
                    env: c.env,
                    env_from: c.env_from,
                    working_dir: c.working_dir,
                    ports: c.ports,
                    security_context: c.security_context,
                    volume_mounts: c.volume_mounts,
                    volume_devices: c.volume_devices,
                    restart_policy: c.restart_policy,
                    startup_probe: c.startup_probe,
                    liveness_probe: c.liveness_probe,
                    readiness_probe: c.readiness_probe,
                    lifecycle: c.lifecycle,
                    resources: resources(c.resources),
                    $($extra: c.$extra,)*
                    ..$target::default()
                }
            }
        }
    };
}

from_lean_container!(Container);
from_lean_container!(EphemeralContainer, target_container_name);
