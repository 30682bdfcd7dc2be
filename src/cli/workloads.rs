//! Offline injection into manifests: Pods, and the pod templates of Jobs, CronJobs, Deployments,
//! StatefulSets, DaemonSets and ReplicaSets, in multi-document YAML (or JSON), and `List`s of them.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::config::Config;
use crate::inject::{self, ClusterInfo, Decision, Outcome};
use crate::namespace::NamespaceView;
use crate::policy::{self, Verdict};

/// What happened to one Pod or pod template.
#[derive(Debug, Clone)]
pub struct InjectReport {
    /// `Pod/name` or `Job/name (template)`.
    pub object: String,
    /// The decision.
    pub decision: Decision,
    /// The namespace the decision assumed.
    pub namespace: NamespaceView,
    /// Warnings (from the decision, or about the document).
    pub warnings: Vec<String>,
    /// What the validating webhook would say about the pod as it is after injection.
    pub verdict: Verdict,
    /// Whether the apiserver would send that pod to the validating webhook at all.
    pub validating: policy::Route,
    /// Whether the isolation mode's RuntimeClass was checked against a list of the cluster's.
    pub runtime_classes_checked: bool,
}

impl InjectReport {
    /// One line: injected or not, and why.
    pub fn summary(&self) -> String {
        match &self.decision.outcome {
            Outcome::Inject(i) => format!(
                "injected (runner {}, {} sidecar {:?}, transport {}, DOCKER_HOST in {})",
                self.decision.runner.as_str(),
                i.status.mode,
                i.status.container,
                i.status.transport,
                i.status.targets.join(", ")
            ),
            Outcome::Skip(reason) => format!("not injected ({}): {}", reason.label(), reason.message()),
        }
    }

    /// A readable account of the decision, for `explain`.
    pub fn explain(&self, config: &Config) -> String {
        let mut s = String::new();
        let d = &self.decision;
        let _ = writeln!(s, "{}", self.object);
        let _ = writeln!(s, "  namespace:  {} (labels: {})", self.namespace.name, super::pairs(&self.namespace.labels));
        let _ = writeln!(s, "  runner:     {}", d.runner.as_str());
        let _ = writeln!(s, "  decision:   {}", super::outcome_word(&d.outcome));
        match &d.outcome {
            Outcome::Skip(reason) => {
                let _ = writeln!(s, "  reason:     {} ({})", reason.message(), reason.label());
            }
            Outcome::Inject(i) => {
                let st = &i.status;
                let host = inject::sidecar::docker_host(i.settings.transport, config);
                let _ = writeln!(s, "  sidecar:    {} ({} mode), image {}", st.container, st.mode, st.image);
                let _ = writeln!(s, "  transport:  {} (DOCKER_HOST={host})", st.transport);
                let _ = writeln!(s, "  job containers: {}", st.targets.join(", "));
                let _ = writeln!(s, "  volumes:    {}", st.volumes.join(", "));
                let _ = writeln!(
                    s,
                    "  resources:  cpu {}, memory {} (limit {}), storage {}, mtu {}",
                    i.settings.cpu,
                    i.settings.memory,
                    i.settings.memory_limit.as_deref().unwrap_or("none"),
                    i.settings.storage,
                    i.settings.mtu
                );
                let mode = inject::mode::Mode::of(st.isolation, config);
                for line in limit_lines(i, &mode, config) {
                    let _ = writeln!(s, "  limit:      {line}");
                }
                let class = mode.runtime_class.as_deref();
                let needs = mode.summary();
                let _ = writeln!(s, "  isolation:  {}: {needs}", st.isolation.as_str());
                if let Some(class) = class {
                    let checked = if self.runtime_classes_checked {
                        "present in the cluster"
                    } else {
                        "not checked here (no cluster; --runtime-classes lists the cluster's)"
                    };
                    let _ = writeln!(s, "  runtime class: {class} ({checked})");
                    for (key, value) in config.isolation.pod_annotations(st.isolation).into_iter().flatten() {
                        let _ = writeln!(
                            s,
                            "  pod annotation: {key}: {value:?} (isolation.{}.podAnnotations, unless the pod sets it)",
                            st.isolation.as_str()
                        );
                    }
                }
                match &st.cache {
                    Some(c) => {
                        let _ = writeln!(
                            s,
                            "  cache:      node, scope {} (hostPath {}), {} slot{}, a slot over {} emptied before use; cold when all are busy",
                            c.scope,
                            c.host_path,
                            c.slots,
                            if c.slots == 1 { "" } else { "s" },
                            config.cache.max_slot_size
                        );
                    }
                    None => {
                        let why = if config.cache.mode == crate::config::CacheMode::Off { "cache.mode off" } else { "opted out" };
                        let _ = writeln!(s, "  cache:      none ({why}): the daemon starts empty");
                    }
                }
                let _ = writeln!(s, "  dockerd:    {}", i.sidecar.args.as_deref().unwrap_or_default().join(" "));
                let _ = writeln!(s, "  patch:");
                for op in i.patch.to_json_patch().map(|p| p.0).unwrap_or_default() {
                    if let json_patch::PatchOperation::Add(a) = op {
                        let _ = writeln!(s, "    add {}", a.path);
                    }
                }
            }
        }
        for w in &self.warnings {
            let _ = writeln!(s, "  warning:    {w}");
        }
        let v = &self.verdict;
        let _ = write!(s, "  policy:     level {}, mode {}", v.level.as_str(), v.mode.as_str());
        if let Some(e) = &v.exempt {
            let _ = write!(s, ", sidecar {e:?} exempt");
        }
        let lines = v.lines();
        let verdict = match (lines.is_empty(), v.mode) {
            (_, crate::config::PolicyMode::Off) => "not checked",
            (true, _) => "allowed",
            (false, crate::config::PolicyMode::Enforce) => "denied",
            (false, _) => "allowed with warnings (audit)",
        };
        let _ = writeln!(s, ": {verdict}");
        for l in lines {
            let _ = writeln!(s, "    - {l}");
        }
        let _ = write!(s, "  validating webhook: {}", self.validating.describe());
        if self.validating == policy::Route::NotSent && v.level == policy::Level::Restricted {
            let _ = write!(
                s,
                " (but the configuration puts this namespace at restricted, which the apiserver cannot see: with policy.level restricted, install manifests/components/restricted-by-default so that every pod is sent)"
            );
        }
        s.push('\n');
        s
    }
}

/// Every limit the pod lives under because of the injection, and what happens past it.
fn limit_lines(i: &inject::Injection, mode: &inject::mode::Mode, config: &Config) -> Vec<String> {
    let st = &i.status;
    let storage = &i.storage;
    let mut lines = Vec::new();
    let data_root = st.volumes.first().map(String::as_str).unwrap_or("storage");
    match (&st.cache, mode.loop_disk) {
        (Some(c), _) => lines.push(format!(
            "/var/lib/docker: a node cache slot under {} (hostPath: not counted by the kubelet; a slot over {} is emptied before use), or, when every slot is busy, the emptyDir {data_root} up to {}: past that the kubelet evicts the pod",
            c.host_path, config.cache.max_slot_size, storage.data_root
        )),
        (None, true) => lines.push(format!(
            "/var/lib/docker: an ext4 disk of {} MiB on the emptyDir {data_root} (sizeLimit {}) where the VM's virtio-fs cannot take overlayfs; a full disk fails the job's write with \"no space left on device\", never the emptyDir's limit",
            inject::isolation::kata_disk_bytes(storage.data_root_bytes()) >> 20,
            storage.data_root
        )),
        (None, false) => lines.push(format!(
            "/var/lib/docker: the emptyDir {data_root} up to {} (images, build cache, the job's containers' layers, logs and volumes): past that the kubelet evicts the pod",
            storage.data_root
        )),
    }
    let own = inject::storage::format_bytes(u128::from(inject::storage::SIDECAR_OWN_STORAGE));
    lines.push(match &storage.limit {
        Some(limit) => format!(
            "ephemeral-storage: sidecar request and limit {limit} (the data root {} plus {own} for its own layer and logs); the pod's containers have ephemeral-storage limits, so the kubelet holds the pod's total to their sum, this {limit} included: each container keeps the room it had",
            storage.data_root
        ),
        None => format!(
            "ephemeral-storage: sidecar request {} (the data root {} plus {own} for its own layer and logs), no limit: no container of the pod has one, so the kubelet holds the pod to no total, as before injection",
            storage.request, storage.data_root
        ),
    });
    lines.push(format!(
        "memory: request {}, limit {}, shared by dockerd and every container the job runs{}",
        i.settings.memory,
        i.settings.memory_limit.as_deref().unwrap_or("none"),
        if i.settings.memory_limit.is_some() { "; past it the kernel's OOM killer ends a process there" } else { "" }
    ));
    lines.push(format!("cpu: request {}, limit {}", i.settings.cpu, i.settings.cpu_limit.as_deref().unwrap_or("none (never throttled)")));
    if mode.cgroup_probe {
        lines.push(
            "inner limits: `docker run --memory/--cpus` apply only where the pod's cgroup is writable and delegated (a runtime handler with cgroup_writable, cgroup v2); elsewhere dockerd runs --rootless and accepts them without applying them (the sidecar's log says which); the limits above hold either way"
                .to_owned(),
        );
    }
    lines
}

/// Where the pod template sits in a workload of `kind`.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Job" | "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

type NamespaceFor<'a> = &'a dyn Fn(&str) -> Result<NamespaceView, String>;

/// Injects into every Pod and pod template in `text`; returns the YAML out and a report for each.
/// Documents of other kinds pass through unchanged.
pub fn inject_documents(
    text: &str,
    config: &Config,
    cluster: &ClusterInfo,
    namespace_for: NamespaceFor<'_>,
) -> Result<(String, Vec<InjectReport>), String> {
    let mut out = Vec::new();
    let mut reports = Vec::new();
    let documents: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| format!("cannot read YAML: {e}"))?;
    for (i, mut value) in documents.into_iter().enumerate() {
        if value.is_null() {
            continue;
        }
        process(&mut value, config, cluster, namespace_for, &mut reports).map_err(|e| format!("document {}: {e}", i + 1))?;
        out.push(value);
    }
    let mut yaml = String::new();
    for (i, v) in out.iter().enumerate() {
        if i > 0 {
            yaml.push_str("---\n");
        }
        yaml.push_str(&crate::yaml::to_string(v).map_err(|e| format!("cannot write YAML: {e}"))?);
    }
    Ok((yaml, reports))
}

fn process(
    value: &mut Value,
    config: &Config,
    cluster: &ClusterInfo,
    namespace_for: NamespaceFor<'_>,
    reports: &mut Vec<InjectReport>,
) -> Result<(), String> {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    let name = value
        .pointer("/metadata/name")
        .or_else(|| value.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)")
        .to_owned();
    let namespace = value.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_owned();
    if kind == "List" {
        if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                process(item, config, cluster, namespace_for, reports)?;
            }
        }
        return Ok(());
    }
    if kind == "Pod" {
        let view = namespace_for(&namespace)?;
        let report = inject_pod_value(value, format!("Pod/{name}"), view, config, cluster)?;
        reports.push(report);
        return Ok(());
    }
    let Some(path) = template_path(&kind) else {
        return Ok(());
    };
    let mut template = value;
    for key in path {
        template = match template.get_mut(*key) {
            Some(t) => t,
            None => return Err(format!("{kind}/{name} has no {}", path.join("."))),
        };
    }
    let view = namespace_for(&namespace)?;
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    let report = inject_pod_value(&mut pod, format!("{kind}/{name} (pod template)"), view, config, cluster)?;
    if let (Some(obj), Value::Object(mut p)) = (template.as_object_mut(), pod) {
        if let Some(m) = p.remove("metadata") {
            obj.insert("metadata".into(), m);
        }
        if let Some(s) = p.remove("spec") {
            obj.insert("spec".into(), s);
        }
    }
    reports.push(report);
    Ok(())
}

fn inject_pod_value(
    value: &mut Value,
    object: String,
    namespace: NamespaceView,
    config: &Config,
    cluster: &ClusterInfo,
) -> Result<InjectReport, String> {
    let pod: Pod = crate::pod::from_value(value).map_err(|e| format!("{object} is not a valid Pod: {e}"))?;
    let decision = inject::plan_injection(&pod, &namespace, config, cluster);
    let verdict = match &decision.outcome {
        Outcome::Inject(i) => {
            let ops = i.patch.to_json_patch().map_err(|e| format!("{object}: the patch does not read back: {e}"))?;
            json_patch::patch(value, &ops.0).map_err(|e| format!("{object}: the patch does not apply: {e}"))?;
            let injected: Pod = crate::pod::from_value(value).map_err(|e| format!("{object}: the injected pod does not read back: {e}"))?;
            policy::validate_pod(&injected, &namespace, config, cluster)
        }
        Outcome::Skip(_) => policy::validate_pod(&pod, &namespace, config, cluster),
    };
    Ok(InjectReport {
        validating: policy::validating_route(value, &namespace),
        runtime_classes_checked: cluster.runtime_classes != inject::RuntimeClasses::NotChecked,
        verdict,
        object,
        warnings: decision.warnings.clone(),
        decision,
        namespace,
    })
}
