//! The node disk an injection may use, written so that nothing the injector adds is ever the
//! reason the kubelet evicts the pod.
//!
//! The kubelet's local-storage eviction (its eviction manager, every pass once volume stats
//! exist) has three rules, and the injection is held to each:
//!
//! 1. An emptyDir whose measured usage is more than its `sizeLimit` evicts the pod. Usage is
//!    measured as `du` does: every block of the tree, the directory's own included, so an empty
//!    directory is one filesystem block (4 KiB on ext4), not 0. A `sizeLimit` of 0 or none is no
//!    limit. So only the volume that holds data gets one: `/var/lib/docker`, at `storage`. The
//!    directory that hides the API token is mounted read-only by the sidecar alone and stays
//!    empty: it gets no `sizeLimit`, which no filesystem's block size can exceed.
//! 2. A container whose writable layer and logs measure more than its `ephemeral-storage` limit
//!    is evicted. Volumes are not counted there.
//! 3. When any container of the pod has an `ephemeral-storage` limit, the pod's total (every
//!    writable layer and log, every disk-backed emptyDir) is held to the sum of the containers'
//!    limits. The sidecar's limit is one of the terms of that sum, so it carries everything the
//!    injection adds: the `/var/lib/docker` emptyDir (`storage`) plus [`SIDECAR_OWN_STORAGE`] for
//!    the sidecar's own writable layer, its logs and the small injected directories. The pod's
//!    own containers keep the room their limits gave them.
//!
//! A pod none of whose containers has an `ephemeral-storage` limit had no total before injection
//! and gets none after it: a limit on the sidecar would become the whole pod's bound, and a job
//! whose workspace and images together passed it would be evicted below `/var/lib/docker`'s own
//! limit. The sidecar then has a request only; `/var/lib/docker` is still held to `storage` by
//! rule 1.

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::quantity::Quantity;

/// The resource name the kubelet bounds local disk by.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// Room for the sidecar's own writable layer (dockerd's exec root, /tmp, directories dockerd
/// makes for binds of paths the pod does not mount), its logs (the kubelet rotates a container's
/// log at 10 MiB, five files by default) and the injected socket, certificate and token
/// directories (a few KiB each): 1 GiB.
pub const SIDECAR_OWN_STORAGE: u64 = 1 << 30;

/// What the injection asks of the node's disk, and how the kubelet will bound it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoragePlan {
    /// The `/var/lib/docker` emptyDir's `sizeLimit` (the setting, as written).
    pub data_root: String,
    /// The sidecar's `ephemeral-storage` request: the data root plus its own room.
    pub request: String,
    /// The sidecar's `ephemeral-storage` limit: the same, when the pod's total is bounded; none
    /// when no container of the pod has a limit (see the module's documentation).
    pub limit: Option<String>,
}

impl StoragePlan {
    /// The data root's size in bytes (0 when it is not a quantity, which the configuration and
    /// the override checks never let through).
    pub fn data_root_bytes(&self) -> u64 {
        u64::try_from(bytes(&self.data_root)).unwrap_or(u64::MAX)
    }
}

/// Whether any container of the pod (regular or init) has an `ephemeral-storage` limit, so that
/// the kubelet holds the pod's total to the sum of the limits.
pub fn pod_has_storage_limit(spec: &PodSpec) -> bool {
    let limited = |c: &Container| c.resources.as_ref().and_then(|r| r.limits.as_ref()).is_some_and(|l| l.contains_key(EPHEMERAL_STORAGE));
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(limited)
}

/// The storage plan for a data root of `storage` (already checked to be a quantity; an unparsable
/// one is treated as 0, and the room of the sidecar's own still applies) in the pod `spec`.
pub fn plan(storage: &str, spec: &PodSpec) -> StoragePlan {
    let data_root_bytes = bytes(storage);
    let total = format_bytes(data_root_bytes.saturating_add(u128::from(SIDECAR_OWN_STORAGE)));
    StoragePlan { data_root: storage.to_owned(), request: total.clone(), limit: pod_has_storage_limit(spec).then_some(total) }
}

/// `storage` in bytes; 0 when it is not a quantity.
pub fn bytes(storage: &str) -> u128 {
    Quantity::parse(storage).map_or(0, |q| q.milli() / 1000)
}

/// Bytes as the apiserver would store them: the largest binary suffix that divides them.
pub fn format_bytes(b: u128) -> String {
    for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        let unit = 1u128 << shift;
        if b >= unit && b.is_multiple_of(unit) {
            return format!("{}{suffix}", b / unit);
        }
    }
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
    use std::collections::BTreeMap;

    fn container(limit: Option<&str>) -> Container {
        Container {
            name: "build".into(),
            resources: limit.map(|l| ResourceRequirements {
                limits: Some(BTreeMap::from([(EPHEMERAL_STORAGE.to_owned(), K8sQuantity(l.to_owned()))])),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        }
    }

    #[test]
    fn the_sidecar_carries_what_the_injection_adds_when_the_pod_is_bounded() {
        let bounded = PodSpec { containers: vec![container(Some("5Gi")), container(None)], ..PodSpec::default() };
        assert_eq!(plan("20Gi", &bounded), StoragePlan { data_root: "20Gi".into(), request: "21Gi".into(), limit: Some("21Gi".into()) });
        let init_only =
            PodSpec { containers: vec![container(None)], init_containers: Some(vec![container(Some("1Gi"))]), ..PodSpec::default() };
        assert!(pod_has_storage_limit(&init_only), "an init container's limit bounds the pod too");
    }

    #[test]
    fn a_pod_without_storage_limits_gets_no_total_from_the_injection() {
        let unbounded = PodSpec { containers: vec![container(None)], ..PodSpec::default() };
        let p = plan("20Gi", &unbounded);
        assert_eq!(p.limit, None);
        assert_eq!(p.request, "21Gi");
    }

    #[test]
    fn sums_are_written_as_the_apiserver_stores_them() {
        assert_eq!(format_bytes(bytes("20G") + u128::from(SIDECAR_OWN_STORAGE)), "20579826Ki");
        assert_eq!(format_bytes(bytes("512Mi") + u128::from(SIDECAR_OWN_STORAGE)), "1536Mi");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(bytes("not a quantity"), 0);
    }
}
