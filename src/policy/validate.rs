//! The validating decision: in an opted-in namespace, every container but the injected sidecar
//! must meet the namespace's Pod Security level; the sidecar is exempt only if it is exactly what
//! the injector produced; a pod that asked for Docker but was not injected is a finding too.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::annotations;
use crate::config::{Config, Isolation, PolicyMode};
use crate::inject::mode::{Mode, UserNamespace};
use crate::inject::{self, CacheRecord, ClusterInfo, InjectionStatus, Outcome, sidecar_fingerprint};
use crate::namespace::NamespaceView;

use super::standards::{Level, Violation, check_pod_security_except};

/// What the validating webhook decided about one pod.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The mode in force for this namespace.
    pub mode: PolicyMode,
    /// The level in force for this namespace.
    pub level: Level,
    /// Pod Security violations (the sidecar's excluded when it is exempt).
    pub violations: Vec<Violation>,
    /// Findings that are not Pod Security controls: a tampered sidecar, a pod that asked for
    /// Docker but was not injected.
    pub findings: Vec<Finding>,
    /// Warnings about the namespace's labels.
    pub warnings: Vec<String>,
    /// The name of the exempt sidecar, when there is one.
    pub exempt: Option<String>,
    /// The exempt sidecar's node cache volume (a hostPath only it mounts), when it has one.
    pub exempt_volume: Option<String>,
}

/// A finding of the validating webhook beyond the Pod Security controls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A stable label (`sidecar-tampered`, `not-injected`).
    pub label: &'static str,
    /// What is wrong and the fix.
    pub message: String,
}

impl Verdict {
    /// Whether anything was found.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty() && self.findings.is_empty()
    }

    /// Every problem as one line each.
    pub fn lines(&self) -> Vec<String> {
        self.findings.iter().map(|f| f.message.clone()).chain(self.violations.iter().map(ToString::to_string)).collect()
    }

    /// The denial message: every problem, not just the first.
    pub fn denial(&self, pod: &str, namespace: &str) -> String {
        let lines = self.lines();
        let mut m = format!(
            "dind-injector: pod {pod:?} in namespace {namespace:?} breaks Pod Security level {} outside the dind sidecar ({} problem{}):",
            self.level.as_str(),
            lines.len(),
            if lines.len() == 1 { "" } else { "s" }
        );
        for l in lines {
            m.push_str("\n- ");
            m.push_str(&l);
        }
        m
    }
}

/// The mode and level in force for `namespace`, and warnings about its labels. A label may only
/// make the configuration stricter unless `policy.allowLooserNamespaces` is set.
pub fn effective_policy(namespace: &NamespaceView, config: &Config) -> (PolicyMode, Level, Vec<String>) {
    let p = &config.policy;
    let mut warnings = Vec::new();
    let mode = stricter_only(
        namespace,
        annotations::POLICY_MODE,
        p.mode,
        p.allow_looser_namespaces,
        PolicyMode::parse,
        PolicyMode::as_str,
        "enforce, audit or off",
        &mut warnings,
    );
    let level = stricter_only(
        namespace,
        annotations::POD_SECURITY,
        p.level,
        p.allow_looser_namespaces,
        Level::parse,
        Level::as_str,
        "baseline or restricted",
        &mut warnings,
    );
    (mode, level, warnings)
}

/// The namespace label `key`'s setting when it is valid and no looser than `configured` (or
/// looser is allowed); otherwise `configured`, with a warning that says why.
#[allow(clippy::too_many_arguments)]
fn stricter_only<T: Copy + Ord>(
    namespace: &NamespaceView,
    key: &str,
    configured: T,
    allow_looser: bool,
    parse: fn(&str) -> Option<T>,
    name: fn(T) -> &'static str,
    choices: &str,
    warnings: &mut Vec<String>,
) -> T {
    let Some(value) = namespace.labels.get(key) else {
        return configured;
    };
    match parse(value) {
        Some(v) if v >= configured || allow_looser => v,
        Some(v) => {
            warnings.push(format!(
                "dind-injector: namespace label {key}={} is looser than the cluster's {} and is ignored (policy.allowLooserNamespaces is false)",
                name(v),
                name(configured)
            ));
            configured
        }
        None => {
            warnings.push(format!("dind-injector: namespace label {key}={value:?} is not {choices}; using {}", name(configured)));
            configured
        }
    }
}

/// Judges `pod` in `namespace`.
pub fn validate_pod(pod: &Pod, namespace: &NamespaceView, config: &Config, cluster: &ClusterInfo) -> Verdict {
    let (mode, level, mut warnings) = effective_policy(namespace, config);
    let labels = pod.metadata.labels.as_ref();
    warnings.extend(annotations::request_problems(pod.metadata.annotations.as_ref(), labels));
    let mut verdict = Verdict { mode, level, violations: Vec::new(), findings: Vec::new(), warnings, exempt: None, exempt_volume: None };
    if mode == PolicyMode::Off {
        return verdict;
    }
    let no_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&no_spec);
    let annotations = pod.metadata.annotations.as_ref();
    let status = annotations.and_then(|a| a.get(annotations::STATUS)).map(|s| InjectionStatus::parse(s).ok_or(s));
    match &status {
        Some(Ok(status)) => match sidecar_problem(spec, status, &namespace.name, config) {
            None => {
                let mode = Mode::of(status.isolation, config);
                match isolation_problem(spec, status, &mode) {
                    None => {
                        // A mode whose sidecar meets the level as it is (Sysbox) gets no exemption.
                        if mode.exempt {
                            verdict.exempt = Some(status.container.clone());
                        }
                        verdict.exempt_volume = status.cache.as_ref().map(|c| c.volume.clone());
                    }
                    Some(problem) => verdict.findings.push(Finding { label: "isolation-tampered", message: problem }),
                }
            }
            Some(problem) => verdict.findings.push(Finding {
                label: "sidecar-tampered",
                message: format!(
                    "container {:?} is named as the injected dind sidecar, but {problem}; it gets no exemption. Recreate the pod and let dind-injector inject it",
                    status.container
                ),
            }),
        },
        Some(Err(_)) => verdict.findings.push(Finding {
            label: "sidecar-tampered",
            message: format!(
                "annotation {} is not one dind-injector wrote; no container gets an exemption. Remove the annotation",
                annotations::STATUS
            ),
        }),
        None => {}
    }
    let request = annotations::inject_request(annotations, labels);
    let asked = request.is_some_and(|(_, v)| v == "true");
    if asked && status.is_none() {
        let why = match inject::plan_injection(pod, namespace, config, cluster).outcome {
            Outcome::Skip(reason) => reason.message(),
            Outcome::Inject(_) => "the mutating webhook did not run for it; check that dind-injector's MutatingWebhookConfiguration is installed and selects this namespace".into(),
        };
        verdict.findings.push(Finding {
            label: "not-injected",
            message: format!(
                "the pod asked for a Docker daemon ({} {}: \"true\") but none was injected: {why}",
                request.map(|(source, _)| source.as_str()).unwrap_or_default(),
                annotations::INJECT
            ),
        });
    }
    verdict.violations = check_pod_security_except(pod, level, verdict.exempt.as_deref(), verdict.exempt_volume.as_deref());
    verdict
}

/// Why the container the status names is not exactly the injected sidecar, if it is not.
fn sidecar_problem(spec: &PodSpec, status: &InjectionStatus, namespace: &str, config: &Config) -> Option<String> {
    let (container, native): (&Container, bool) = match spec.init_containers.iter().flatten().find(|c| c.name == status.container) {
        Some(c) => (c, true),
        None => match spec.containers.iter().find(|c| c.name == status.container) {
            Some(c) => (c, false),
            None => return Some("no such container exists".into()),
        },
    };
    if native != (status.mode == "native") {
        return Some(format!("it is not where {} mode puts it", status.mode));
    }
    let image = container.image.as_deref().unwrap_or_default();
    if image != status.image || !config.image_allowed(image) {
        return Some(format!("its image {image:?} is not the injected, allowed one"));
    }
    if sidecar_fingerprint(container) != status.template {
        return Some("its command, arguments, environment, security context or mounts were changed after injection".into());
    }
    let cache_volume = status.cache.as_ref().map(|c| c.volume.as_str());
    for m in container.volume_mounts.iter().flatten() {
        if Some(m.name.as_str()) == cache_volume {
            if m.mount_path != inject::cache::CACHE_MOUNT || m.read_only == Some(true) || m.sub_path.is_some() || m.sub_path_expr.is_some()
            {
                return Some(format!("it mounts its node cache volume {:?} other than at {}", m.name, inject::cache::CACHE_MOUNT));
            }
            continue;
        }
        if !status.volumes.contains(&m.name) && !inject::workspace::is_recorded(status, m) {
            return Some(format!("it mounts volume {:?}, which dind-injector did not add", m.name));
        }
    }
    for name in &status.volumes {
        let Some(v) = spec.volumes.iter().flatten().find(|v| &v.name == name) else {
            return Some(format!("its volume {name:?} is missing"));
        };
        let expected_kind = v.empty_dir.is_some() || v.config_map.as_ref().is_some_and(|c| c.name == config.sidecar.daemon_config_map);
        if !expected_kind || v.host_path.is_some() {
            return Some(format!("its volume {name:?} is no longer the emptyDir or ConfigMap dind-injector added"));
        }
    }
    if let Some(problem) = inject::workspace::mirror_problem(spec, status) {
        return Some(problem);
    }
    if let Some(cache) = &status.cache
        && let Some(problem) = cache_problem(spec, cache, namespace, config)
    {
        return Some(problem);
    }
    if container.ports.iter().flatten().any(|p| p.host_port.is_some_and(|h| h != 0)) {
        return Some("it opens a host port".into());
    }
    None
}

/// Why the pod no longer runs with the isolation the sidecar was injected for, if it does not:
/// the mode's RuntimeClass (a Kata sidecar is privileged inside the VM only, so its exemption
/// holds only while the pod keeps the class) and its user namespace (`hostUsers: false`: without
/// it a `userns` sidecar's capabilities are root's on the node).
fn isolation_problem(spec: &PodSpec, status: &InjectionStatus, mode: &Mode) -> Option<String> {
    let isolation = status.isolation.as_str();
    let pod_class = spec.runtime_class_name.as_deref();
    if let Some(class) = mode.runtime_class.as_deref()
        && (status.runtime_class.as_deref() != Some(class) || pod_class != Some(class))
    {
        let what = match status.isolation {
            Isolation::Kata => format!("its privileged sidecar {:?} is exempt only inside a Kata VM", status.container),
            Isolation::Userns => format!("its sidecar {:?} was made for that runtime handler", status.container),
            _ => format!("its sidecar {:?} was made for {isolation}", status.container),
        };
        return Some(format!(
            "the pod was injected for {isolation} isolation (RuntimeClass {class:?}) but its runtimeClassName is {}: {what}. Recreate the pod and let dind-injector inject it",
            pod_class.map_or_else(|| "not set".to_owned(), |c| format!("{c:?}"))
        ));
    }
    match mode.user_namespace {
        // Not set is admitted: an apiserver whose UserNamespacesSupport gate is off (the default
        // before v1.33) drops the `hostUsers: false` we add before the validating webhooks see the
        // pod, and Sysbox runs it in a user namespace of its own then. Only an explicit opt-out is
        // tampering.
        UserNamespace::Added if spec.host_users == Some(true) => Some(format!(
            "the pod was injected for {isolation} isolation, which runs it in a user namespace, but hostUsers is true; set hostUsers: false, or recreate the pod and let dind-injector inject it"
        )),
        UserNamespace::Required if spec.host_users != Some(false) => Some(format!(
            "the pod was injected for {isolation} isolation, but hostUsers is {}: its sidecar {:?} adds {} and unmasks /proc, which is safe only in the pod's own user namespace. Set hostUsers: false (if it was dropped, the apiserver's UserNamespacesSupport feature gate is off: Kubernetes 1.33+ turns it on), or recreate the pod and let dind-injector inject it",
            spec.host_users.map_or("not set", |h| if h { "true" } else { "false" }),
            status.container,
            mode.security.add_capabilities.join(" and ")
        )),
        _ => None,
    }
}

/// Why the recorded node cache is not the one dind-injector gives a pod of `namespace`: exactly
/// one hostPath volume `DirectoryOrCreate` at `cache.hostPath/<namespace>/<scope>`, a scope
/// directory name the injector writes, mounted by the sidecar alone (other containers mounting
/// it are Pod Security violations of their own).
fn cache_problem(spec: &PodSpec, cache: &CacheRecord, namespace: &str, config: &Config) -> Option<String> {
    let Some(v) = spec.volumes.iter().flatten().find(|v| v.name == cache.volume) else {
        return Some(format!("its node cache volume {:?} is missing", cache.volume));
    };
    let Some(hp) = &v.host_path else {
        return Some(format!("its node cache volume {:?} is no longer the hostPath dind-injector added", cache.volume));
    };
    let path_ok = hp.path == cache.host_path
        && cache.scope.split_once('/').is_some_and(|(ns, scope)| ns == namespace && inject::cache::is_scope_name(scope))
        && cache.host_path == format!("{}/{}", config.cache.host_path, cache.scope);
    if !path_ok {
        return Some(format!(
            "its node cache volume {:?} mounts {:?}, which is not this namespace's cache directory under cache.hostPath ({}/{namespace}/...)",
            cache.volume, hp.path, config.cache.host_path
        ));
    }
    if hp.type_.as_deref() != Some("DirectoryOrCreate") {
        return Some(format!("its node cache volume {:?} has hostPath type {:?}, not DirectoryOrCreate", cache.volume, hp.type_));
    }
    let others = v.config_map.is_some() || v.empty_dir.is_some() || crate::pod::volume_sources(v).count() != 1;
    if others {
        return Some(format!("its node cache volume {:?} has another volume source besides the hostPath", cache.volume));
    }
    None
}

/// Audit annotations for a verdict: the mode, the level, and one entry per problem.
pub fn audit_annotations(verdict: &Verdict) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if verdict.is_clean() {
        return out;
    }
    out.insert("policy-mode".to_owned(), verdict.mode.as_str().to_owned());
    out.insert("policy-level".to_owned(), verdict.level.as_str().to_owned());
    for (i, line) in verdict.lines().into_iter().enumerate() {
        out.insert(format!("violation-{}", i + 1), line);
    }
    out
}
