//! A model of the kubelet's local-storage eviction (v1.36's eviction manager, README fact 10 in
//! tests/fixtures/apiserver/), and the measurement it works from, taken as the kubelet takes it:
//! `du`-style, every block of a tree, the directory's own included, on the real filesystem.
//!
//! On every pass (every 10 s, once volume stats exist: the first within about a minute of the
//! pod's start) the kubelet checks each pod, in this order, and evicts on the first rule broken:
//! 1. each emptyDir with a `sizeLimit` above 0: its measured usage against the limit
//!    (`Usage of EmptyDir volume "NAME" exceeds the limit "LIMIT". `);
//! 2. when any container has an `ephemeral-storage` limit: the pod's total (every container's
//!    writable layer and logs, every disk-backed emptyDir and the other node-local volumes)
//!    against the sum of the containers' limits as the scheduler sums them (regular containers
//!    and sidecars added up, each plain init container a floor)
//!    (`Pod ephemeral local storage usage exceeds the total limit of containers LIMIT. `);
//! 3. each container's writable layer and logs against its own limit
//!    (`Container NAME exceeded its local ephemeral storage limit "LIMIT". `).
//!
//! Memory-backed emptyDirs (`medium: Memory`) are checked by rule 1 and are not part of the
//! total. hostPath volumes are not measured at all.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use dind_injector::quantity::Quantity;
use serde_json::Value;

/// What the kubelet measured for one pod.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Each volume's measured bytes, by volume name (absent: not measured, as for hostPath).
    pub volumes: BTreeMap<String, u64>,
    /// Each container's writable layer plus logs, by container name.
    pub containers: BTreeMap<String, u64>,
}

/// Bytes of a quantity string; None when it is not one.
pub fn quantity_bytes(q: &str) -> Option<u128> {
    Quantity::parse(q).ok().map(|q| q.milli().div_ceil(1000))
}

/// What the kubelet measures for `path`: the blocks (512 bytes each, as `stat` counts them) of
/// every file and directory under it, the directory itself included, hard links once, not
/// following symbolic links and not crossing into another filesystem. 0 when it does not exist.
pub fn disk_usage(path: &Path) -> u64 {
    fn walk(p: &Path, dev: u64, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(m) = std::fs::symlink_metadata(p) else { return };
        if m.dev() != dev {
            return;
        }
        if m.nlink() <= 1 || m.is_dir() || seen.insert((m.dev(), m.ino())) {
            *total += m.blocks() * 512;
        }
        if m.is_dir()
            && let Ok(entries) = std::fs::read_dir(p)
        {
            for e in entries.flatten() {
                walk(&e.path(), dev, seen, total);
            }
        }
    }
    let Ok(root) = std::fs::symlink_metadata(path) else { return 0 };
    let mut total = 0;
    walk(path, root.dev(), &mut HashSet::new(), &mut total);
    total
}

fn containers(pod: &Value, key: &str) -> Vec<Value> {
    pod["spec"][key].as_array().cloned().unwrap_or_default()
}

fn storage_limit(c: &Value) -> Option<u128> {
    c["resources"]["limits"]["ephemeral-storage"].as_str().and_then(quantity_bytes)
}

/// The pod's `ephemeral-storage` limit as the kubelet sums it (`resourcehelper.PodLimits`):
/// regular containers and restartable init containers (sidecars) added up; each plain init
/// container, with the sidecars started before it, a floor. None when no container has one.
pub fn pod_storage_limit(pod: &Value) -> Option<u128> {
    let inits = containers(pod, "initContainers");
    let regular = containers(pod, "containers");
    let any = inits.iter().chain(regular.iter()).any(|c| storage_limit(c).is_some());
    if !any {
        return None;
    }
    let mut sum: u128 = regular.iter().filter_map(storage_limit).sum();
    let mut sidecars: u128 = 0;
    let mut init_floor: u128 = 0;
    for c in &inits {
        let limit = storage_limit(c).unwrap_or(0);
        if c["restartPolicy"] == "Always" {
            sidecars += limit;
            sum += limit;
        } else {
            init_floor = init_floor.max(limit + sidecars);
        }
    }
    Some(sum.max(init_floor))
}

/// Whether the volume counts toward the pod's ephemeral-storage total (node-local, not in memory).
fn counts_toward_total(v: &Value) -> bool {
    let memory = v["emptyDir"]["medium"] == "Memory";
    (v.get("emptyDir").is_some() && !memory)
        || ["configMap", "secret", "downwardAPI", "projected", "gitRepo"].iter().any(|k| v.get(*k).is_some())
}

/// The eviction message the kubelet would give `pod` (as stored) with `usage`, or None.
pub fn eviction(pod: &Value, usage: &Usage) -> Option<String> {
    let volumes = pod["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    for v in &volumes {
        let (Some(name), Some(limit)) = (v["name"].as_str(), v["emptyDir"]["sizeLimit"].as_str()) else { continue };
        let (Some(bytes), Some(used)) = (quantity_bytes(limit), usage.volumes.get(name)) else { continue };
        if bytes > 0 && u128::from(*used) > bytes {
            return Some(format!("Usage of EmptyDir volume {name:?} exceeds the limit {limit:?}. "));
        }
    }
    if let Some(limit) = pod_storage_limit(pod) {
        let volumes_used: u64 =
            volumes.iter().filter(|v| counts_toward_total(v)).filter_map(|v| v["name"].as_str().and_then(|n| usage.volumes.get(n))).sum();
        let total = volumes_used + usage.containers.values().sum::<u64>();
        if u128::from(total) > limit {
            return Some(format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                dind_injector::inject::storage::format_bytes(limit)
            ));
        }
    }
    let all: Vec<Value> = containers(pod, "containers")
        .into_iter()
        .chain(containers(pod, "initContainers").into_iter().filter(|c| c["restartPolicy"] == "Always"))
        .collect();
    for c in &all {
        let (Some(name), Some(limit)) = (c["name"].as_str(), storage_limit(c)) else { continue };
        if limit > 0 && usage.containers.get(name).is_some_and(|u| u128::from(*u) > limit) {
            let written = c["resources"]["limits"]["ephemeral-storage"].as_str().unwrap_or_default();
            return Some(format!("Container {name} exceeded its local ephemeral storage limit {written:?}. "));
        }
    }
    None
}

/// Each emptyDir's measured usage against its `sizeLimit`, as `NAME used/limit`, for reports.
pub fn report(pod: &Value, usage: &Usage) -> String {
    let mut out = Vec::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let Some(name) = v["name"].as_str() else { continue };
        if let Some(used) = usage.volumes.get(name) {
            let limit = v["emptyDir"]["sizeLimit"].as_str().unwrap_or("-");
            out.push(format!("{name} {used}/{limit}"));
        }
    }
    for (c, used) in &usage.containers {
        out.push(format!("container {c} {used}"));
    }
    out.push(format!("pod limit {:?}", pod_storage_limit(pod)));
    out.join(", ")
}
