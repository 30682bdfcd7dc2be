//! The injection decision: from a pod, its namespace and the configuration to a JSON Patch, or a
//! reason not to inject. Pure: no IO, no clock, no randomness. The webhook and the CLI share it.

mod access;
pub mod cache;
pub mod compat;
mod daemon;
pub mod isolation;
pub mod mode;
mod patch;
pub mod runner;
pub mod settings;
mod shell;
pub mod sidecar;
pub mod storage;
pub mod workspace;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, EnvVar, HostAlias, Pod, PodSpec, Volume};

use crate::annotations;
use crate::config::{Config, SidecarMode, Transport};
use crate::names::unique_name;
use crate::namespace::NamespaceView;

pub use crate::status::{CacheRecord, InjectionStatus, STATUS_VERSION, sidecar_fingerprint, template_hash};
pub use daemon::{daemon_json, daemon_json_text};
pub use patch::{Patch, PatchBuilder};
pub use runner::Runner;
pub use settings::Settings;
pub use sidecar::InjectedNames;

/// A Kubernetes version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    /// Major version (1).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

/// What is known about the cluster (filled by the cluster side; empty without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The apiserver's version, when known.
    pub server_version: Option<KubeVersion>,
    /// The cluster's RuntimeClasses, for the isolation modes that need one.
    pub runtime_classes: RuntimeClasses,
}

/// What is known of the cluster's RuntimeClasses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RuntimeClasses {
    /// Not looked up (no cluster: the offline CLI, a server without one): assumed present.
    #[default]
    NotChecked,
    /// In a cluster, not listed yet: a mode that needs a class is not injected, as its class
    /// cannot be confirmed (the server is not ready until the first list has been answered).
    Syncing,
    /// In a cluster, the list failed and none has succeeded since the start (the apiserver's
    /// error, shortened: most often the ClusterRole lacks `runtimeclasses.node.k8s.io`). As with
    /// `Syncing`, a mode that needs a class is not injected.
    Unlisted(Arc<str>),
    /// The names listed.
    Known(Arc<BTreeSet<String>>),
}

/// The result of [`plan_injection`].
#[derive(Debug, Clone)]
pub struct Decision {
    /// The runner recognised.
    pub runner: Runner,
    /// Inject, or not and why.
    pub outcome: Outcome,
    /// Warnings for the user (refused overrides, a `DOCKER_HOST` that points elsewhere, …).
    pub warnings: Vec<String>,
}

/// Inject, or skip with a reason.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Inject with this patch.
    Inject(Box<Injection>),
    /// Do not inject.
    Skip(SkipReason),
}

/// Everything one injection adds.
#[derive(Debug, Clone)]
pub struct Injection {
    /// The JSON Patch against the pod.
    pub patch: Patch,
    /// The status annotation written.
    pub status: InjectionStatus,
    /// The sidecar container.
    pub sidecar: Container,
    /// The volumes added.
    pub volumes: Vec<Volume>,
    /// The effective settings.
    pub settings: Settings,
    /// The node disk the injection asks for and how the kubelet bounds it.
    pub storage: storage::StoragePlan,
}

/// Why a pod was not injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// No `dind-injector.io/inject` annotation or label.
    NotAnnotated,
    /// `dind-injector.io/inject: "false"`.
    OptedOut,
    /// The annotation (or label) is neither `true` nor `false`.
    InvalidAnnotation(String),
    /// The status annotation is present: injected before (reinvocation).
    AlreadyInjected,
    /// The namespace lacks the opt-in label.
    NamespaceNotOptedIn(String),
    /// The namespace's Pod Security level forbids privileged containers.
    PodSecurityForbidsPrivileged {
        /// The namespace.
        namespace: String,
        /// Its enforced level.
        level: String,
    },
    /// The pod has no spec.
    NoSpec,
    /// The pod uses the node's network.
    HostNetwork,
    /// The pod runs a Docker daemon of its own.
    OwnDaemon {
        /// The container running it.
        container: String,
    },
    /// No container would get `DOCKER_HOST`.
    NoJobContainers,
    /// An annotation asked for an isolation mode the administrator does not allow.
    IsolationNotAllowed {
        /// The mode asked for.
        isolation: &'static str,
        /// The modes allowed.
        allowed: String,
    },
    /// The pod cannot run with its isolation mode.
    IsolationUnsuited {
        /// The mode.
        isolation: &'static str,
        /// Why not.
        why: String,
    },
    /// The cluster has no RuntimeClass of this name (the apiserver would refuse the pod).
    RuntimeClassMissing {
        /// The mode.
        isolation: &'static str,
        /// The RuntimeClass.
        class: String,
    },
    /// The cluster's RuntimeClasses could not be listed yet, so the class cannot be confirmed.
    RuntimeClassesUnknown {
        /// The mode.
        isolation: &'static str,
        /// The RuntimeClass.
        class: String,
        /// Why the list failed, when it did (rather than not having been answered yet).
        error: Option<Arc<str>>,
    },
    /// The namespace enforces `restricted`, which no Docker daemon meets.
    PodSecurityRestricted {
        /// The namespace.
        namespace: String,
    },
}

impl SkipReason {
    /// A short, stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::NotAnnotated => "not-annotated",
            SkipReason::OptedOut => "opted-out",
            SkipReason::InvalidAnnotation(_) => "invalid-annotation",
            SkipReason::AlreadyInjected => "already-injected",
            SkipReason::NamespaceNotOptedIn(_) => "namespace-not-opted-in",
            SkipReason::PodSecurityForbidsPrivileged { .. } => "pod-security-forbids-privileged",
            SkipReason::NoSpec => "no-spec",
            SkipReason::HostNetwork => "host-network",
            SkipReason::OwnDaemon { .. } => "own-dind",
            SkipReason::NoJobContainers => "no-job-containers",
            SkipReason::IsolationNotAllowed { .. } => "isolation-not-allowed",
            SkipReason::IsolationUnsuited { .. } => "isolation-unsuited",
            SkipReason::RuntimeClassMissing { .. } => "runtime-class-missing",
            SkipReason::RuntimeClassesUnknown { .. } => "runtime-classes-unknown",
            SkipReason::PodSecurityRestricted { .. } => "pod-security-restricted",
        }
    }

    /// What happened and the fix, for the person reading the warning.
    pub fn message(&self) -> String {
        match self {
            SkipReason::NotAnnotated => format!(
                "the pod has no {} annotation or label; add {}: \"true\" to get a Docker daemon",
                annotations::INJECT,
                annotations::INJECT
            ),
            SkipReason::OptedOut => format!("the pod opted out ({}: \"false\")", annotations::INJECT),
            SkipReason::InvalidAnnotation(v) => format!(
                "{}={v:?} is neither \"true\" nor \"false\"; set it to exactly \"true\"",
                annotations::INJECT
            ),
            SkipReason::AlreadyInjected => "the pod already carries a dind sidecar from dind-injector".into(),
            SkipReason::NamespaceNotOptedIn(ns) => format!(
                "namespace {ns:?} has not opted in; a cluster administrator can run: kubectl label namespace {ns} {}={}",
                annotations::INJECTION_LABEL,
                annotations::INJECTION_ENABLED
            ),
            SkipReason::PodSecurityForbidsPrivileged { namespace, level } => format!(
                "namespace {namespace:?} enforces Pod Security level {level:?}, which forbids the dind sidecar's privileges (privileged, or SYS_ADMIN and NET_ADMIN in a user namespace under userns isolation); label it {}=privileged (dind-injector's validating webhook then holds every other container to {} or stricter), or where Sysbox is installed use {}: sysbox, which needs no exemption",
                crate::namespace::PSA_ENFORCE_LABEL,
                "baseline",
                annotations::ISOLATION
            ),
            SkipReason::PodSecurityRestricted { namespace } => format!(
                "namespace {namespace:?} enforces Pod Security level \"restricted\", which no Docker daemon meets (dockerd runs as root with capabilities, even under Sysbox); run the job in a namespace at baseline with {}: sysbox, or at privileged",
                annotations::ISOLATION
            ),
            SkipReason::IsolationNotAllowed { isolation, allowed } => format!(
                "{}: {isolation} was asked for, but the administrator allows only {allowed} (overrides.allowedIsolations); a requested isolation is never replaced by another. Ask for an allowed one, or remove the annotation",
                annotations::ISOLATION
            ),
            SkipReason::IsolationUnsuited { isolation, why } => {
                format!("the pod cannot run with {isolation} isolation: {why}; change the pod, or choose another mode with {}", annotations::ISOLATION)
            }
            SkipReason::RuntimeClassMissing { isolation, class } => format!(
                "{isolation} isolation needs RuntimeClass {class:?}, which this cluster does not have (the apiserver would refuse the pod); install {isolation} and its RuntimeClass, set isolation.{isolation}.runtimeClassName to the class it created, or choose another mode with {}",
                annotations::ISOLATION
            ),
            SkipReason::RuntimeClassesUnknown { isolation, class, error: None } => format!(
                "{isolation} isolation needs RuntimeClass {class:?}, and the injector has not listed the cluster's RuntimeClasses yet (it does as it starts); retry the job"
            ),
            SkipReason::RuntimeClassesUnknown { isolation, class, error: Some(error) } => format!(
                "{isolation} isolation needs RuntimeClass {class:?}, and the injector cannot list the cluster's RuntimeClasses ({error}); grant its ClusterRole get, list and watch on runtimeclasses.node.k8s.io (manifests/base/rbac.yaml has the rule), then retry the job"
            ),
            SkipReason::NoSpec => "the pod has no spec".into(),
            SkipReason::HostNetwork => "the pod uses hostNetwork: a daemon there would create bridges and iptables rules on the node and be reachable from it; run the job without hostNetwork".into(),
            SkipReason::OwnDaemon { container } => format!(
                "the pod already runs its own Docker daemon in container {container:?}; remove that container to use the injected one, or remove the {} annotation",
                annotations::INJECT
            ),
            SkipReason::NoJobContainers => format!(
                "no container would get DOCKER_HOST; name them with the {} annotation (for example \"build\")",
                annotations::CONTAINERS
            ),
        }
    }

    /// Whether the user is told about this skip. A reinvocation of an injected pod is not news.
    pub fn warns(&self) -> bool {
        !matches!(self, SkipReason::AlreadyInjected)
    }
}

/// Decides whether and how to inject a Docker daemon into `pod`.
pub fn plan_injection(pod: &Pod, namespace: &NamespaceView, config: &Config, cluster: &ClusterInfo) -> Decision {
    let (runner, runner_warning) = runner::runner_of(pod);
    let mut warnings: Vec<String> = runner_warning.into_iter().collect();
    match decide(pod, runner, namespace, config, cluster, &mut warnings) {
        Ok(injection) => Decision { runner, outcome: Outcome::Inject(Box::new(injection)), warnings },
        Err(reason) => {
            if reason.warns() {
                warnings.push(format!("dind-injector: no Docker daemon injected: {}", reason.message()));
            }
            Decision { runner, outcome: Outcome::Skip(reason), warnings }
        }
    }
}

fn decide(
    pod: &Pod,
    runner: Runner,
    namespace: &NamespaceView,
    config: &Config,
    cluster: &ClusterInfo,
    warnings: &mut Vec<String>,
) -> Result<Injection, SkipReason> {
    let pod_annotations = pod.metadata.annotations.as_ref();
    match annotations::inject_request(pod_annotations, pod.metadata.labels.as_ref()).map(|(_, v)| v) {
        None => return Err(SkipReason::NotAnnotated),
        Some("true") => {}
        Some("false") => return Err(SkipReason::OptedOut),
        Some(other) => return Err(SkipReason::InvalidAnnotation(other.to_owned())),
    }
    if pod_annotations.is_some_and(|a| a.contains_key(annotations::STATUS)) {
        return Err(SkipReason::AlreadyInjected);
    }
    if !namespace.is_opted_in() {
        return Err(SkipReason::NamespaceNotOptedIn(namespace.name.clone()));
    }
    let (mut settings, mut setting_warnings) = settings::resolve(pod_annotations, &namespace.annotations, config, cluster);
    let isolation = settings.isolation;
    let mode = mode::Mode::of(isolation, config);
    match namespace.pod_security_enforce() {
        Some("restricted") => return Err(SkipReason::PodSecurityRestricted { namespace: namespace.name.clone() }),
        Some(level @ "baseline") if mode.exempt => {
            return Err(SkipReason::PodSecurityForbidsPrivileged { namespace: namespace.name.clone(), level: level.to_owned() });
        }
        _ => {}
    }
    let spec = pod.spec.as_ref().ok_or(SkipReason::NoSpec)?;
    if spec.host_network == Some(true) {
        return Err(SkipReason::HostNetwork);
    }
    if let Some(c) = all_containers(spec).find(|c| runner::runs_docker_daemon(c)) {
        return Err(SkipReason::OwnDaemon { container: c.name.clone() });
    }
    if let Some(asked) = settings.refused_isolation {
        let allowed = config.overrides.allowed_isolations.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(", ");
        return Err(SkipReason::IsolationNotAllowed { isolation: asked.as_str(), allowed });
    }
    if let Some(why) = isolation::unsuited(spec, &mode, cluster.server_version) {
        return Err(SkipReason::IsolationUnsuited { isolation: isolation.as_str(), why });
    }
    if let Some(reason) = isolation::class_problem(&mode, cluster) {
        return Err(reason);
    }
    warnings.append(&mut setting_warnings);
    let workspace_setting = workspace::resolve(pod_annotations, &namespace.annotations, config, warnings);
    let candidates = compat::candidate_targets(spec, runner, &settings);
    let listeners = compat::plan_listeners(&mut settings, spec, &candidates, pod_annotations, &namespace.annotations, config, warnings);
    let cache = cache::resolve(pod, runner, namespace, &mode, config, warnings);
    let names = pick_names(spec, config, settings.transport, cache.is_some());
    let socket_group = spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok())
        .or(config.sidecar.socket_group)
        .unwrap_or_else(|| access::socket_group(spec, &candidates, settings.transport, config, warnings));
    let storage = storage::plan(&settings.storage, spec);
    let mut plan = sidecar::build(&settings, &mode, config, &names, socket_group, cache.as_ref(), &storage);
    listeners.add_to(&mut plan.container);

    let targets = pick_targets(spec, runner, &settings, &plan, warnings);
    if targets.is_empty() {
        return Err(SkipReason::NoJobContainers);
    }
    let mirrored = workspace::mirror_into(&mut plan.container, spec, &targets, &workspace_setting, config, warnings);

    let mut patch = PatchBuilder::default();
    let target_names: Vec<String> = targets.iter().map(|&i| spec.containers[i].name.clone()).collect();
    for &i in &targets {
        add_to_job_container(&mut patch, i, &spec.containers[i], &plan, &settings, config, &listeners, warnings);
    }
    patch.append(&["spec", "volumes"], spec.volumes.is_some(), &plan.volumes);
    let sidecar = &plan.container;
    match settings.mode {
        SidecarMode::Container => {
            patch.add(&["spec", "containers", "0"], sidecar);
            if pod.metadata.owner_references.iter().flatten().any(|o| o.kind == "Job") {
                warnings.push(
                    "dind-injector: sidecar-mode container keeps dockerd running after the job containers exit, so this Job's pod will not complete on its own; use sidecar-mode native (Kubernetes 1.29+)".into(),
                );
            }
        }
        _ => patch.append(&["spec", "initContainers"], spec.init_containers.is_some(), &[sidecar]),
    }
    if settings.transport != Transport::Unix || listeners.needs_alias() {
        add_docker_host_alias(&mut patch, spec);
    }
    let has_annotations = isolation::add_to_pod(&mut patch, spec, pod_annotations, &mode, config);

    let template = sidecar_fingerprint(&plan.container);
    let mut volume_names = vec![names.storage.clone(), names.daemon_config.clone(), names.no_token.clone()];
    volume_names.extend(names.shared.clone());
    let status = InjectionStatus {
        version: STATUS_VERSION,
        container: names.container.clone(),
        mode: settings.mode.as_str().to_owned(),
        transport: settings.transport.as_str().to_owned(),
        image: settings.image.clone(),
        volumes: volume_names,
        targets: target_names,
        template,
        mirrored,
        isolation,
        runtime_class: mode.runtime_class.clone(),
        cache: cache.as_ref().zip(names.cache.as_ref()).map(|(c, volume)| CacheRecord {
            volume: volume.clone(),
            host_path: c.host_path.clone(),
            scope: c.scope.clone(),
            slots: c.slots,
        }),
    };
    patch.insert(&["metadata", "annotations"], has_annotations, annotations::STATUS, &status.to_annotation());
    if settings.mode == SidecarMode::Container
        && !pod_annotations.is_some_and(|a| a.contains_key(annotations::DEFAULT_CONTAINER))
        && let Some(first) = spec.containers.first()
    {
        // kubectl logs/exec would otherwise pick the sidecar, now first in the list.
        patch.insert(&["metadata", "annotations"], true, annotations::DEFAULT_CONTAINER, &first.name);
    }
    Ok(Injection { patch: patch.build(), status, sidecar: plan.container, volumes: plan.volumes, settings, storage })
}

/// Makes `docker` resolve to 127.0.0.1 (the `tcp://docker:237x` addresses of the runners' DinD
/// documentation). The name joins an existing `127.0.0.1` entry: a second entry with the same IP
/// makes the apiserver warn `duplicate ip` (GitLab pods carry one for their service aliases).
fn add_docker_host_alias(patch: &mut PatchBuilder, spec: &PodSpec) {
    const LOOPBACK: &str = "127.0.0.1";
    let aliases = spec.host_aliases.as_deref().unwrap_or_default();
    if aliases.iter().any(|a| a.hostnames.iter().flatten().any(|h| h == "docker")) {
        return;
    }
    if let Some(i) = aliases.iter().position(|a| a.ip.trim() == LOOPBACK) {
        let idx = i.to_string();
        let has_names = aliases[i].hostnames.is_some();
        patch.append(&["spec", "hostAliases", &idx, "hostnames"], has_names, &["docker"]);
        return;
    }
    let alias = HostAlias { ip: LOOPBACK.into(), hostnames: Some(vec!["docker".into()]) };
    patch.append(&["spec", "hostAliases"], spec.host_aliases.is_some(), &[alias]);
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers.iter().flatten().chain(spec.containers.iter())
}

fn pick_names(spec: &PodSpec, config: &Config, transport: Transport, cache: bool) -> InjectedNames {
    let mut taken_containers: HashSet<&str> = all_containers(spec).map(|c| c.name.as_str()).collect();
    taken_containers.extend(spec.ephemeral_containers.iter().flatten().map(|c| c.name.as_str()));
    let container = unique_name(&config.sidecar.container_name, |n| taken_containers.contains(n));

    let taken_volumes: HashSet<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    let mut picked: Vec<String> = Vec::with_capacity(4);
    let prefix = &config.sidecar.volume_prefix;
    let mut volume = |suffix: &str| {
        let name = unique_name(&format!("{prefix}-{suffix}"), |n| taken_volumes.contains(n) || picked.iter().any(|p| p == n));
        picked.push(name.clone());
        name
    };
    let storage = volume("storage");
    let daemon_config = volume("daemon-config");
    let no_token = volume("no-token");
    let shared = match transport {
        Transport::Unix => Some(volume("socket")),
        Transport::TcpTls => Some(volume("certs")),
        Transport::Tcp => None,
    };
    let cache = cache.then(|| volume("cache"));
    InjectedNames { container, storage, daemon_config, no_token, shared, cache }
}

/// Indices into `spec.containers` of the containers that get `DOCKER_HOST`.
fn pick_targets(
    spec: &PodSpec,
    runner: Runner,
    settings: &Settings,
    plan: &sidecar::SidecarPlan,
    warnings: &mut Vec<String>,
) -> Vec<usize> {
    let mut targets: Vec<usize> = match &settings.containers {
        None => (0..spec.containers.len()).filter(|&i| runner.is_job_container(&spec.containers[i].name)).collect(),
        Some(named) => {
            let mut picked = Vec::new();
            for name in named {
                if let Some(i) = spec.containers.iter().position(|c| &c.name == name) {
                    if !picked.contains(&i) {
                        picked.push(i);
                    }
                } else if spec.init_containers.iter().flatten().any(|c| &c.name == name) {
                    warnings.push(format!(
                        "dind-injector: {} names init container {name:?}, which runs before the daemon starts; it gets no DOCKER_HOST",
                        annotations::CONTAINERS
                    ));
                } else {
                    warnings.push(format!("dind-injector: {} names {name:?}, but the pod has no such container", annotations::CONTAINERS));
                }
            }
            picked.sort_unstable();
            picked
        }
    };
    targets.retain(|&i| {
        let c = &spec.containers[i];
        let job_mounts = compat::job_side(c, plan, settings.transport).1;
        let clash = job_mounts.iter().find(|m| {
            c.volume_mounts
                .iter()
                .flatten()
                .any(|existing| existing.mount_path.trim_end_matches('/') == m.mount_path)
        });
        if let Some(m) = clash {
            warnings.push(format!(
                "dind-injector: container {:?} already mounts something at {}; it gets no DOCKER_HOST. Move that mount or change sidecar.socketDir/certDir",
                c.name, m.mount_path
            ));
        }
        clash.is_none()
    });
    targets
}

#[allow(clippy::too_many_arguments)]
fn add_to_job_container(
    patch: &mut PatchBuilder,
    index: usize,
    container: &Container,
    plan: &sidecar::SidecarPlan,
    settings: &Settings,
    config: &Config,
    listeners: &compat::Listeners,
    warnings: &mut Vec<String>,
) {
    let idx = index.to_string();
    let existing = |name: &str| -> Option<&EnvVar> { container.env.iter().flatten().find(|e| e.name == name) };
    if let Some(user) = existing("DOCKER_HOST") {
        let value = user.value.as_deref().unwrap_or_default();
        if user.value_from.is_some() || !(sidecar::points_at_injected_daemon(value, settings.transport, config) || listeners.handles(value))
        {
            warnings.push(format!(
                "dind-injector: container {:?} sets DOCKER_HOST={value:?}, which is not the injected daemon ({}); it is left as set. Remove it, or choose the transport with {}",
                container.name,
                sidecar::docker_host(settings.transport, config),
                annotations::TRANSPORT
            ));
        }
    }
    if settings.transport != Transport::TcpTls
        && let Some(v) = existing("DOCKER_TLS_VERIFY").and_then(|e| e.value.as_deref()).filter(|v| !v.is_empty())
    {
        warnings.push(format!(
                "dind-injector: container {:?} sets DOCKER_TLS_VERIFY={v:?}, but the injected daemon's transport is {}; the docker client will fail to connect. Remove it, or set {}: tcp-tls",
                container.name,
                settings.transport.as_str(),
                annotations::TRANSPORT
            ));
    }
    let (job_env, job_mounts, cert_warning) = compat::job_side(container, plan, settings.transport);
    warnings.extend(cert_warning);
    let env: Vec<&EnvVar> = job_env.iter().filter(|e| existing(&e.name).is_none()).collect();
    patch.append(&["spec", "containers", &idx, "env"], container.env.is_some(), &env);
    patch.append(&["spec", "containers", &idx, "volumeMounts"], container.volume_mounts.is_some(), &job_mounts);
}
