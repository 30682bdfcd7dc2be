//! The install manifests: `kubectl kustomize manifests/overlays/<overlay>` for both overlays,
//! every object parsed into its Kubernetes type, and what must hold for the webhook to work and
//! stay least-privileged: selectors, ports, paths, certificates, security context, RBAC.
//!
//! Needs `kubectl` (it bundles kustomize); set `KUBECTL` to use another binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use dind_injector::annotations::{INJECT, INJECTION_ENABLED, INJECTION_LABEL, POD_SECURITY};
use dind_injector::config::Config;
use dind_injector::server::REVIEW_ENDPOINTS;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ServiceReference, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec, Probe, Service, ServiceAccount, Volume, VolumeMount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const NS: &str = "dind-injector";
const NAME: &str = "dind-injector";
const CONFIG_MAP: &str = "dind-injector-config";
const TLS_SECRET: &str = "dind-injector-tls";
const IMAGE: &str = "ghcr.io/dind-injector/dind-injector:0.1.0";
const UID: i64 = 65532;
const HTTPS_PORT: i32 = 8443;
const HEALTH_PORT: i32 = 8080;
const INJECT_CA_FROM: &str = "cert-manager.io/inject-ca-from";
const NAME_LABEL: &str = "kubernetes.io/metadata.name";
const VALIDATE_BASELINE: &str = "validate.dind-injector.io";
const VALIDATE_RESTRICTED: &str = "validate-restricted.dind-injector.io";

// ---------------------------------------------------------------------------------------------
// Rendering and parsing

/// Every object of one rendered overlay, by kind.
#[derive(Default)]
struct Rendered {
    overlay: String,
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    services: Vec<Service>,
    deployments: Vec<Deployment>,
    pdbs: Vec<PodDisruptionBudget>,
    config_maps: Vec<ConfigMap>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    mutating: Vec<MutatingWebhookConfiguration>,
    validating: Vec<ValidatingWebhookConfiguration>,
    /// cert-manager objects (Certificate, Issuer), untyped.
    cert_manager: Vec<Value>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize` of `dir` (relative to the repository root: kustomize refuses absolute paths).
fn kustomize(dir: &str) -> String {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let output = Command::new(&kubectl).arg("kustomize").arg(dir).current_dir(repo_root()).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{kubectl} kustomize {dir}`: {e}. These tests need kubectl (it \
                 bundles kustomize): install it (https://kubernetes.io/docs/tasks/tools/) or set KUBECTL to its path"
        )
    });
    assert!(
        output.status.success(),
        "`{kubectl} kustomize {dir}` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap_or_else(|e| panic!("kustomize output is not UTF-8: {e}"))
}

/// Parses `value` as `T`, and fails if `T` does not carry every field of it back: a field the
/// Kubernetes API does not know (a typo, a wrong indentation) would otherwise be dropped
/// silently by the apiserver.
fn typed<T: DeserializeOwned + Serialize>(value: &Value, what: &str) -> T {
    let parsed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&parsed).unwrap_or_else(|e| panic!("{what}: cannot serialize: {e}"));
    if let Some(difference) = first_difference(value, &back, "") {
        panic!("{what}: not a valid Kubernetes object ({difference})");
    }
    parsed
}

fn first_difference(written: &Value, understood: &Value, path: &str) -> Option<String> {
    match (written, understood) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    None => return Some(format!("unknown field {here}")),
                    Some(other) => {
                        if let Some(d) = first_difference(value, other, &here) {
                            return Some(d);
                        }
                    }
                }
            }
            b.keys().find(|k| !a.contains_key(*k)).map(|k| format!("field {path}.{k} appeared on parsing"))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            a.iter().zip(b).enumerate().find_map(|(i, (x, y))| first_difference(x, y, &format!("{path}[{i}]")))
        }
        _ if written == understood => None,
        _ => Some(format!("{path}: {written} is read as {understood}")),
    }
}

fn render(overlay: &str) -> Rendered {
    render_dir(overlay, &format!("manifests/overlays/{overlay}"))
}

fn render_dir(overlay: &str, dir: &str) -> Rendered {
    let text = kustomize(dir);
    let mut rendered = Rendered { overlay: overlay.to_owned(), ..Rendered::default() };
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{overlay}: kustomize output is not YAML: {e}"));
    for value in documents {
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let api_version = value["apiVersion"].as_str().unwrap_or_default().to_owned();
        let name = value["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let what = format!("{overlay}: {kind} {name}");
        match kind.as_str() {
            "Namespace" => rendered.namespaces.push(typed(&value, &what)),
            "ServiceAccount" => rendered.service_accounts.push(typed(&value, &what)),
            "Service" => rendered.services.push(typed(&value, &what)),
            "Deployment" => rendered.deployments.push(typed(&value, &what)),
            "PodDisruptionBudget" => rendered.pdbs.push(typed(&value, &what)),
            "ConfigMap" => rendered.config_maps.push(typed(&value, &what)),
            "ClusterRole" => rendered.cluster_roles.push(typed(&value, &what)),
            "ClusterRoleBinding" => rendered.cluster_role_bindings.push(typed(&value, &what)),
            "Role" => rendered.roles.push(typed(&value, &what)),
            "RoleBinding" => rendered.role_bindings.push(typed(&value, &what)),
            "MutatingWebhookConfiguration" => rendered.mutating.push(typed(&value, &what)),
            "ValidatingWebhookConfiguration" => rendered.validating.push(typed(&value, &what)),
            "Certificate" | "Issuer" if api_version == "cert-manager.io/v1" => rendered.cert_manager.push(value),
            _ => panic!("{what} ({api_version}): an object of a kind these manifests should not contain"),
        }
    }
    rendered
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn one<'a, T>(items: &'a [T], what: &str, overlay: &str) -> &'a T {
    assert_eq!(items.len(), 1, "{overlay}: expected exactly one {what}, found {}", items.len());
    &items[0]
}

fn req<'a, T>(value: &'a Option<T>, what: &str) -> &'a T {
    value.as_ref().unwrap_or_else(|| panic!("{what} is missing"))
}

fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn assert_in_namespace(meta: &ObjectMeta, what: &str) {
    assert_eq!(meta.namespace.as_deref(), Some(NS), "{what} must be in namespace {NS}");
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// `LabelSelector` semantics, as the apiserver evaluates them.
fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("unknown label selector operator {other}"),
        }
    });
    by_labels && by_expressions
}

fn pod_labels_of(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment.spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default()
}

fn arg_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str).or_else(|| {
        let prefix = format!("{flag}=");
        args.iter().find_map(|a| a.strip_prefix(&prefix))
    })
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// The checks

fn base_config_text() -> String {
    let path = repo_root().join("manifests/base/config.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The namespace, and the ConfigMap whose config.yaml must load. Returns the configuration.
fn check_namespace_and_config(r: &Rendered) -> Config {
    let o = &r.overlay;
    let ns = one(&r.namespaces, "Namespace", o);
    assert_eq!(name_of(&ns.metadata), NS);
    let ns_labels = ns.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        ns_labels.get("pod-security.kubernetes.io/enforce").map(String::as_str),
        Some("restricted"),
        "{o}: the injector's namespace enforces the restricted Pod Security Standard"
    );
    assert!(!ns_labels.contains_key(INJECTION_LABEL), "{o}: the injector's own namespace must not opt in");

    let cm = one(&r.config_maps, "ConfigMap", o);
    assert_eq!(
        name_of(&cm.metadata),
        CONFIG_MAP,
        "{o}: the ConfigMap keeps its plain name (disableNameSuffixHash), so the mounted file is updated in place"
    );
    assert_in_namespace(&cm.metadata, "the ConfigMap");
    let data = req(&cm.data, "ConfigMap data");
    let text = data.get("config.yaml").unwrap_or_else(|| panic!("{o}: ConfigMap {CONFIG_MAP} has no key config.yaml"));
    assert_eq!(text.trim_end(), base_config_text().trim_end(), "{o}: the ConfigMap carries manifests/base/config.yaml");
    Config::from_yaml(text, "manifests").unwrap_or_else(|e| panic!("{o}: config.yaml does not load: {e}"))
}

/// The Deployment's pod template labels, after checking the Deployment itself.
fn check_deployment(r: &Rendered, expected_args: &[&str]) -> (Deployment, Container) {
    let o = &r.overlay;
    let deployment = one(&r.deployments, "Deployment", o).clone();
    assert_eq!(name_of(&deployment.metadata), NAME);
    assert_in_namespace(&deployment.metadata, "the Deployment");
    let spec = &deployment.spec;
    assert_eq!(spec.replicas, Some(2), "{o}: two replicas");
    let pod_labels = req(&spec.template.metadata, "pod template metadata").labels.clone().unwrap_or_default();
    assert!(selector_matches(&spec.selector, &pod_labels) && !pod_labels.is_empty(), "{o}: the Deployment's selector matches its own pods");
    if let Some(strategy) = spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref()) {
        assert_eq!(strategy.max_unavailable, Some(IntOrString::Int(0)), "{o}: a rollout never takes a replica away first");
    }

    let pod = req(&spec.template.spec, "pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some(NAME), "{o}: service account");
    assert_eq!(pod.automount_service_account_token, Some(true), "{o}: it talks to the apiserver");
    assert_eq!(pod.termination_grace_period_seconds, Some(30), "{o}: terminationGracePeriodSeconds");
    assert_eq!(pod.priority_class_name, None, "{o}: system-cluster-critical is refused outside kube-system by default");

    // Spread over nodes.
    let spread = pod.topology_spread_constraints.clone().unwrap_or_default();
    assert!(
        spread.iter().any(|c| c.topology_key == "kubernetes.io/hostname"
            && c.when_unsatisfiable == "ScheduleAnyway"
            && c.label_selector.as_ref().is_some_and(|s| selector_matches(s, &pod_labels))),
        "{o}: a topology spread constraint over kubernetes.io/hostname (ScheduleAnyway) selecting the injector's pods"
    );
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.clone())
        .unwrap_or_default();
    assert!(
        anti.iter().any(|t| t.pod_affinity_term.topology_key == "kubernetes.io/hostname"
            && t.pod_affinity_term.label_selector.as_ref().is_some_and(|s| selector_matches(s, &pod_labels))),
        "{o}: preferred pod anti-affinity over kubernetes.io/hostname"
    );
    assert_eq!(
        pod.affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()),
        None,
        "{o}: anti-affinity is preferred, not required (a one-node cluster still runs both)"
    );

    check_restricted(pod, o);

    assert!(pod.init_containers.as_deref().unwrap_or_default().is_empty(), "{o}: no init containers");
    assert_eq!(pod.containers.len(), 1, "{o}: one container");
    let container = pod.containers[0].clone();
    assert_eq!(container.image.as_deref(), Some(IMAGE), "{o}: image");
    let args = container.args.clone().unwrap_or_default();
    assert!(container.command.is_none(), "{o}: the image's ENTRYPOINT is /dind-injector; only args are set");
    assert_eq!(args, strings(expected_args), "{o}: container args");

    // Environment.
    let env = container.env.clone().unwrap_or_default();
    let pod_namespace = env.iter().find(|e| e.name == "POD_NAMESPACE").unwrap_or_else(|| panic!("{o}: POD_NAMESPACE is not set"));
    assert_eq!(
        pod_namespace.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| f.field_path.as_str()),
        Some("metadata.namespace"),
        "{o}: POD_NAMESPACE comes from the downward API"
    );
    assert!(
        env.iter().any(|e| e.name == "DIND_INJECTOR_LOG_FORMAT" && e.value.as_deref() == Some("json")),
        "{o}: DIND_INJECTOR_LOG_FORMAT=json"
    );

    // Ports and probes.
    let ports = container.ports.clone().unwrap_or_default();
    let port_named = |name: &str| ports.iter().find(|p| p.name.as_deref() == Some(name)).map(|p| p.container_port);
    assert_eq!(port_named("https"), Some(HTTPS_PORT), "{o}: container port https");
    assert_eq!(port_named("http-health"), Some(HEALTH_PORT), "{o}: container port http-health");
    let probe_port = |probe: &Probe, what: &str| -> i32 {
        let get = req(&probe.http_get, what);
        assert!(get.scheme.as_deref().is_none_or(|s| s == "HTTP"), "{o}: {what} uses plain HTTP (the health port has no TLS)");
        match &get.port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => port_named(name).unwrap_or_else(|| panic!("{o}: {what} names no container port: {name}")),
        }
    };
    let readiness = req(&container.readiness_probe, "readinessProbe");
    let liveness = req(&container.liveness_probe, "livenessProbe");
    assert_eq!(probe_port(readiness, "readinessProbe"), HEALTH_PORT, "{o}: readiness on the health port");
    assert_eq!(probe_port(liveness, "livenessProbe"), HEALTH_PORT, "{o}: liveness on the health port");
    assert_eq!(readiness.http_get.as_ref().and_then(|g| g.path.as_deref()), Some("/readyz"), "{o}: readiness path");
    assert_eq!(liveness.http_get.as_ref().and_then(|g| g.path.as_deref()), Some("/healthz"), "{o}: liveness path");

    // Resources.
    let resources = req(&container.resources, "resources");
    let quantity = |map: &Option<BTreeMap<String, Quantity>>, key: &str| map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone());
    assert_eq!(quantity(&resources.requests, "cpu").as_deref(), Some("50m"), "{o}: cpu request");
    assert_eq!(quantity(&resources.requests, "memory").as_deref(), Some("32Mi"), "{o}: memory request");
    assert_eq!(quantity(&resources.limits, "memory").as_deref(), Some("128Mi"), "{o}: memory limit");
    assert_eq!(quantity(&resources.limits, "cpu"), None, "{o}: no CPU limit (throttling adds admission latency)");

    // The configuration file: a directory mount of the ConfigMap, so that it is updated in place.
    let volumes = pod.volumes.clone().unwrap_or_default();
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    let config_path = arg_value(&args, "--config").unwrap_or_else(|| panic!("{o}: no --config argument"));
    let (volume, mount) = mount_for(&volumes, &mounts, config_path, o);
    let source = req(&volume.config_map, "the --config volume's configMap");
    assert_eq!(source.name, CONFIG_MAP, "{o}: --config is read from the ConfigMap {CONFIG_MAP}");
    let key = Path::new(config_path).strip_prefix(&mount.mount_path).unwrap_or_else(|e| panic!("{o}: {e}")).to_string_lossy().into_owned();
    assert_eq!(key, "config.yaml", "{o}: --config names the ConfigMap's key config.yaml");
    assert!(source.items.is_none(), "{o}: the ConfigMap volume projects every key as is");

    (deployment, container)
}

/// The volume and mount a file path lies in: the deepest mount that contains it. The mount must
/// be read-only and not use subPath (a subPath mount never sees updates).
fn mount_for<'a>(volumes: &'a [Volume], mounts: &'a [VolumeMount], path: &str, o: &str) -> (&'a Volume, &'a VolumeMount) {
    let mount = mounts
        .iter()
        .filter(|m| Path::new(path).starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())
        .unwrap_or_else(|| panic!("{o}: {path} is on no volume"));
    assert_eq!(mount.read_only, Some(true), "{o}: the mount for {path} is read-only");
    assert!(
        mount.sub_path.is_none() && mount.sub_path_expr.is_none(),
        "{o}: the mount for {path} must not use subPath: the kubelet never updates subPath mounts"
    );
    let volume = volumes.iter().find(|v| v.name == mount.name).unwrap_or_else(|| panic!("{o}: volume {} is not declared", mount.name));
    (volume, mount)
}

/// The Pod Security Standard "restricted", control by control, on every container.
fn check_restricted(pod: &PodSpec, o: &str) {
    assert_ne!(pod.host_network, Some(true), "{o}: hostNetwork");
    assert_ne!(pod.host_pid, Some(true), "{o}: hostPID");
    assert_ne!(pod.host_ipc, Some(true), "{o}: hostIPC");
    let psc = pod.security_context.clone().unwrap_or_default();
    assert!(psc.sysctls.as_deref().unwrap_or_default().is_empty(), "{o}: no sysctls");
    assert!(psc.se_linux_options.is_none(), "{o}: no custom SELinux options");
    assert!(psc.app_armor_profile.as_ref().is_none_or(|p| p.type_ != "Unconfined"), "{o}: AppArmor not unconfined");
    for volume in pod.volumes.iter().flatten() {
        assert!(
            volume.config_map.is_some()
                || volume.secret.is_some()
                || volume.projected.is_some()
                || volume.empty_dir.is_some()
                || volume.downward_api.is_some(),
            "{o}: volume {} is of a type the restricted level refuses",
            volume.name
        );
    }
    let containers = pod.containers.iter().chain(pod.init_containers.iter().flatten());
    for c in containers {
        let sc = c.security_context.clone().unwrap_or_default();
        let n = &c.name;
        assert_ne!(sc.privileged, Some(true), "{o}: {n}: privileged");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{o}: {n}: allowPrivilegeEscalation false");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{o}: {n}: readOnlyRootFilesystem");
        let caps = req(&sc.capabilities, "capabilities");
        assert!(caps.drop.iter().flatten().any(|d| d == "ALL"), "{o}: {n}: capabilities drop ALL");
        assert!(
            caps.add.iter().flatten().all(|a| a == "NET_BIND_SERVICE"),
            "{o}: {n}: no capability added (restricted allows only NET_BIND_SERVICE)"
        );
        assert_eq!(sc.run_as_non_root.or(psc.run_as_non_root), Some(true), "{o}: {n}: runAsNonRoot");
        assert_eq!(sc.run_as_user.or(psc.run_as_user), Some(UID), "{o}: {n}: runAsUser {UID}");
        assert_eq!(sc.run_as_group.or(psc.run_as_group), Some(UID), "{o}: {n}: runAsGroup {UID}");
        let seccomp =
            sc.seccomp_profile.clone().or_else(|| psc.seccomp_profile.clone()).unwrap_or_else(|| panic!("{o}: {n}: no seccompProfile"));
        assert_eq!(seccomp.type_, "RuntimeDefault", "{o}: {n}: seccompProfile RuntimeDefault");
        assert!(sc.proc_mount.as_deref().is_none_or(|p| p == "Default"), "{o}: {n}: procMount");
        assert!(sc.se_linux_options.is_none(), "{o}: {n}: seLinuxOptions");
        assert!(sc.windows_options.as_ref().and_then(|w| w.host_process).is_none_or(|h| !h), "{o}: {n}: hostProcess");
        assert!(c.ports.iter().flatten().all(|p| p.host_port.is_none_or(|h| h == 0)), "{o}: {n}: no hostPort");
    }
}

/// The Service, its selector, and its port 443 → the container's https port.
fn check_service(r: &Rendered, deployment: &Deployment, container: &Container) -> Service {
    let o = &r.overlay;
    let service = one(&r.services, "Service", o).clone();
    assert_eq!(name_of(&service.metadata), NAME);
    assert_in_namespace(&service.metadata, "the Service");
    let spec = req(&service.spec, "Service spec");
    let selector = spec.selector.clone().unwrap_or_default();
    assert!(!selector.is_empty(), "{o}: the Service has a selector");
    let pod_labels = pod_labels_of(deployment);
    for (k, v) in &selector {
        assert_eq!(pod_labels.get(k), Some(v), "{o}: the Service selects the Deployment's pods ({k})");
    }
    let container_ports = container.ports.clone().unwrap_or_default();
    for port in spec.ports.iter().flatten() {
        let target = req(&port.target_port, "Service targetPort");
        match target {
            IntOrString::String(name) => assert!(
                container_ports.iter().any(|p| p.name.as_deref() == Some(name.as_str())),
                "{o}: Service targetPort {name} names no container port"
            ),
            IntOrString::Int(n) => {
                panic!("{o}: Service targetPort {n}: name the container port instead")
            }
        }
    }
    let https = spec.ports.iter().flatten().find(|p| p.port == 443).unwrap_or_else(|| panic!("{o}: the Service has no port 443"));
    assert_eq!(https.target_port, Some(IntOrString::String("https".to_owned())), "{o}: 443 → https");
    service
}

fn check_pdb(r: &Rendered, deployment: &Deployment) {
    let o = &r.overlay;
    let pdb = one(&r.pdbs, "PodDisruptionBudget", o);
    assert_eq!(name_of(&pdb.metadata), NAME);
    assert_in_namespace(&pdb.metadata, "the PodDisruptionBudget");
    let spec = req(&pdb.spec, "PDB spec");
    assert_eq!(spec.min_available, Some(IntOrString::Int(1)), "{o}: minAvailable 1");
    let pod_labels = pod_labels_of(deployment);
    assert!(spec.selector.as_ref().is_some_and(|s| selector_matches(s, &pod_labels)), "{o}: the PDB selects the injector's pods");
}

/// Both webhooks: only opted-in namespaces, never kube-system nor the injector's own.
/// `selector` selects opted-in namespaces (labelled with `level` too) and no other.
fn check_namespace_selector(selector: Option<&LabelSelector>, level: &[(&str, &str)], webhook: &str, o: &str) {
    let selector = selector.unwrap_or_else(|| panic!("{o}: {webhook}: no namespaceSelector"));
    let ns = |name: &str, extra: &[(&str, &str)]| {
        let mut l = labels(extra);
        l.insert(NAME_LABEL.to_owned(), name.to_owned());
        l
    };
    let mut opted_in = vec![(INJECTION_LABEL, INJECTION_ENABLED), ("pod-security.kubernetes.io/enforce", "privileged")];
    opted_in.extend_from_slice(level);
    let cases = [
        (ns("ci", &opted_in), true),
        (ns("ci", &[]), false),
        (ns("ci", &[(INJECTION_LABEL, "disabled")]), false),
        (ns("kube-system", &opted_in), false),
        (ns(NS, &opted_in), false),
        (ns("default", &[]), false),
    ];
    for (labels, expected) in cases {
        assert_eq!(selector_matches(selector, &labels), expected, "{o}: {webhook}: namespaceSelector on a namespace labelled {labels:?}");
    }
    let expressions = selector.match_expressions.clone().unwrap_or_default();
    let excluded: BTreeSet<String> = expressions
        .iter()
        .filter(|e| e.key == NAME_LABEL && e.operator == "NotIn")
        .flat_map(|e| e.values.clone().unwrap_or_default())
        .collect();
    assert!(excluded.contains("kube-system") && excluded.contains(NS), "{o}: {webhook}: kube-system and {NS} are excluded by name");
}

fn check_client_config(config: &WebhookClientConfig, service: &Service, path: &str, webhook: &str, o: &str) {
    assert!(config.url.is_none(), "{o}: {webhook}: called through the Service, not a URL");
    assert!(config.ca_bundle.is_none(), "{o}: {webhook}: caBundle is injected at run time, never written in the manifests");
    let ServiceReference { name, namespace, path: service_path, port } = req(&config.service, "clientConfig.service");
    assert_eq!(Some(name.as_str()), service.metadata.name.as_deref(), "{o}: {webhook}: Service name");
    assert_eq!(Some(namespace.as_str()), service.metadata.namespace.as_deref(), "{o}: {webhook}: Service namespace");
    let port = port.unwrap_or(443);
    let service_port = service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| p.port == port)
        .unwrap_or_else(|| panic!("{o}: {webhook}: the Service has no port {port}"));
    assert_eq!(
        service_port.target_port,
        Some(IntOrString::String("https".to_owned())),
        "{o}: {webhook}: port {port} reaches the HTTPS listener"
    );
    assert_eq!(service_path.as_deref(), Some(path), "{o}: {webhook}: path");
    assert!(REVIEW_ENDPOINTS.iter().any(|e| e.path == path), "{o}: {webhook}: the server answers no {path}");
}

fn rule_pairs(rules: &[RuleWithOperations], o: &str) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for rule in rules {
        assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]), "{o}: core API group only");
        assert_eq!(rule.api_versions.as_deref(), Some(&["v1".to_owned()][..]), "{o}: v1 only");
        assert!(rule.scope.as_deref().is_none_or(|s| s == "Namespaced"), "{o}: namespaced scope");
        for resource in rule.resources.iter().flatten() {
            for operation in rule.operations.iter().flatten() {
                assert_ne!(operation, "*", "{o}: no wildcard operation");
                assert_ne!(resource, "*", "{o}: no wildcard resource");
                pairs.insert((resource.clone(), operation.clone()));
            }
        }
    }
    pairs
}

/// A syntactic sanity check of a CEL expression (no CEL compiler here): quotes and brackets
/// balance, and every subscript of `object.metadata.annotations` is guarded by `has()`.
fn check_cel_plausible(expression: &str) -> Result<(), String> {
    let mut stack = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for ch in expression.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == q {
                quote = None;
            }
            continue;
        }
        match ch {
            '\'' | '"' => quote = Some(ch),
            '(' | '[' | '{' => stack.push(ch),
            ')' | ']' | '}' => {
                let open = stack.pop().ok_or_else(|| format!("unbalanced {ch}"))?;
                if !matches!((open, ch), ('(', ')') | ('[', ']') | ('{', '}')) {
                    return Err(format!("{open} closed by {ch}"));
                }
            }
            _ => {}
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} string"));
    }
    if let Some(open) = stack.pop() {
        return Err(format!("unclosed {open}"));
    }
    if expression.contains("&&&") || expression.contains("|||") || expression.contains("===") {
        return Err("not a CEL operator".to_owned());
    }
    let access = "object.metadata.annotations";
    if !expression.contains(access) {
        return Err(format!("does not read {access}"));
    }
    let guard = format!("has({access})");
    let guarded_at =
        expression.find(&guard).ok_or_else(|| format!("no {guard}: a pod without annotations would make the expression fail"))?;
    let first_subscript = expression.find(&format!("{access}[")).unwrap_or(usize::MAX);
    if first_subscript < guarded_at {
        return Err(format!("{access}[...] is read before {guard}"));
    }
    if expression.contains("oldObject") {
        return Err("oldObject is null on CREATE".to_owned());
    }
    Ok(())
}

fn check_mutating(r: &Rendered, service: &Service) -> MutatingWebhookConfiguration {
    let o = &r.overlay;
    let config = one(&r.mutating, "MutatingWebhookConfiguration", o).clone();
    assert_eq!(name_of(&config.metadata), NAME);
    let webhooks = config.webhooks.clone().unwrap_or_default();
    let webhook = one(&webhooks, "mutating webhook", o);
    let w = webhook.name.as_str();
    assert_eq!(w, "inject.dind-injector.io");
    assert_eq!(webhook.admission_review_versions, strings(&["v1"]), "{o}: {w}: admissionReviewVersions");
    assert_eq!(webhook.side_effects, "None", "{o}: {w}: sideEffects");
    assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"), "{o}: {w}: failurePolicy");
    assert!(webhook.timeout_seconds.is_some_and(|t| (1..=10).contains(&t)), "{o}: {w}: timeoutSeconds set and at most 10");
    assert_eq!(webhook.reinvocation_policy.as_deref(), Some("IfNeeded"), "{o}: {w}: reinvocationPolicy");
    assert!(webhook.object_selector.is_none(), "{o}: {w}: no objectSelector");
    check_client_config(&webhook.client_config, service, "/mutate", w, o);
    check_namespace_selector(webhook.namespace_selector.as_ref(), &[], w, o);
    let rules = rule_pairs(webhook.rules.as_deref().unwrap_or_default(), o);
    assert_eq!(rules, BTreeSet::from([("pods".to_owned(), "CREATE".to_owned())]), "{o}: {w}: pods CREATE only");

    let conditions = webhook.match_conditions.clone().unwrap_or_default();
    let condition = one(&conditions, "matchCondition", o);
    let e = condition.expression.as_str();
    check_cel_plausible(e).unwrap_or_else(|problem| panic!("{o}: {w}: matchCondition {e:?}: {problem}"));
    assert!(
        e.contains(&format!("'{INJECT}'")) || e.contains(&format!("\"{INJECT}\"")),
        "{o}: {w}: the matchCondition reads the {INJECT} annotation"
    );
    assert!(e.contains("== 'true'") || e.contains("== \"true\""), "{o}: {w}: the matchCondition requires the value \"true\"");
    config
}

/// The validating webhooks: one entry per level of the namespace label `dind-injector.io/pod-security`.
fn check_validating(r: &Rendered, service: &Service) -> ValidatingWebhookConfiguration {
    let o = &r.overlay;
    let config = one(&r.validating, "ValidatingWebhookConfiguration", o).clone();
    assert_eq!(name_of(&config.metadata), NAME);
    let webhooks = config.webhooks.clone().unwrap_or_default();
    let names: Vec<&str> = webhooks.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, [VALIDATE_BASELINE, VALIDATE_RESTRICTED], "{o}: the validating webhooks, one per level");
    for webhook in &webhooks {
        let w = webhook.name.as_str();
        assert_eq!(webhook.admission_review_versions, strings(&["v1"]), "{o}: {w}: admissionReviewVersions");
        assert_eq!(webhook.side_effects, "None", "{o}: {w}: sideEffects");
        assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"), "{o}: {w}: failurePolicy");
        assert!(webhook.timeout_seconds.is_some_and(|t| (1..=10).contains(&t)), "{o}: {w}: timeoutSeconds set and at most 10");
        check_client_config(&webhook.client_config, service, "/validate", w, o);
        let level: &[(&str, &str)] = if w == VALIDATE_RESTRICTED { &[(POD_SECURITY, "restricted")] } else { &[] };
        check_namespace_selector(webhook.namespace_selector.as_ref(), level, w, o);
        let rules = rule_pairs(webhook.rules.as_deref().unwrap_or_default(), o);
        assert_eq!(
            rules,
            BTreeSet::from([
                ("pods".to_owned(), "CREATE".to_owned()),
                ("pods".to_owned(), "UPDATE".to_owned()),
                ("pods/ephemeralcontainers".to_owned(), "UPDATE".to_owned()),
            ]),
            "{o}: {w}: rules: pods CREATE and UPDATE, pods/ephemeralcontainers UPDATE"
        );
        // An opted-in namespace runs at Pod Security `privileged`: what a webhook skips, only
        // its matchConditions decide (and tests/cel_prefilter.rs proves them).
        assert!(webhook.object_selector.is_none(), "{o}: {w}: no objectSelector");
        let conditions = webhook.match_conditions.clone().unwrap_or_default();
        assert!(conditions.len() <= 64, "{o}: {w}: at most 64 matchConditions");
        // Only metadata-only UPDATEs may be skipped by both: CREATE, debug containers and spec
        // changes are sent.
        let e = &conditions
            .iter()
            .find(|c| c.name == "spec-changed")
            .unwrap_or_else(|| panic!("{o}: {w}: no spec-changed matchCondition"))
            .expression;
        for part in [
            "request.operation != 'UPDATE'",
            "(has(request.subResource) && request.subResource == 'ephemeralcontainers')",
            "object.spec != oldObject.spec",
        ] {
            assert!(e.contains(part), "{o}: {w}: the condition must keep {part:?}: {e}");
        }
        let others: Vec<&str> = conditions.iter().map(|c| c.name.as_str()).filter(|n| *n != "spec-changed").collect();
        if w == VALIDATE_RESTRICTED {
            assert!(others.is_empty(), "{o}: {w}: at restricted every pod is sent; found {others:?}");
        } else {
            assert_eq!(others, ["may-break-baseline"], "{o}: {w}: the baseline pre-filter");
        }
    }
    // The expressions are those of manifests/base/webhooks.yaml, which tests/cel_prefilter.rs
    // evaluates: no overlay patches them.
    let base = std::fs::read_to_string(repo_root().join("manifests/base/webhooks.yaml")).unwrap_or_else(|e| panic!("{e}"));
    for condition in webhooks.iter().flat_map(|w| w.match_conditions.iter().flatten()) {
        assert!(
            base.contains(condition.expression.lines().next().unwrap_or_default()),
            "{o}: matchCondition {} is not the one in manifests/base/webhooks.yaml",
            condition.name
        );
    }

    // Every opted-in namespace goes to exactly one of them, by its level label; a namespace
    // without the label, or with a value the server does not read as restricted, is at
    // baseline (the server's default, src/policy/validate.rs).
    for (value, expected) in [
        (None, VALIDATE_BASELINE),
        (Some("baseline"), VALIDATE_BASELINE),
        (Some("privileged"), VALIDATE_BASELINE),
        (Some("Restricted"), VALIDATE_BASELINE),
        (Some("restricted"), VALIDATE_RESTRICTED),
    ] {
        let mut ns = labels(&[(INJECTION_LABEL, INJECTION_ENABLED), (NAME_LABEL, "ci")]);
        if let Some(v) = value {
            ns.insert(POD_SECURITY.to_owned(), v.to_owned());
        }
        let selected: Vec<&str> = webhooks
            .iter()
            .filter(|w| w.namespace_selector.as_ref().is_some_and(|s| selector_matches(s, &ns)))
            .map(|w| w.name.as_str())
            .collect();
        assert_eq!(selected, [expected], "{o}: namespace labelled {POD_SECURITY}={value:?}");
    }
    config
}

// ---------------------------------------------------------------------------------------------
// RBAC: the exact set of grants bound to the injector's service account

/// (scope, apiGroup, resource, verb, resourceName) where scope is "cluster" or "namespace/<ns>"
/// and resourceName is "" for "any".
type Grant = (String, String, String, String, String);

fn grants_of(rules: &[PolicyRule], scope: &str, o: &str) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for rule in rules {
        assert!(rule.non_resource_urls.is_none(), "{o}: no non-resource URLs");
        let names = rule.resource_names.clone().unwrap_or_else(|| vec![String::new()]);
        assert!(!names.is_empty(), "{o}: resourceNames: [] is unusual; omit it or name something");
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    for name in &names {
                        for item in [group, resource, verb, name] {
                            assert_ne!(item, "*", "{o}: no wildcard in RBAC rules");
                        }
                        grants.insert((scope.to_owned(), group.clone(), resource.clone(), verb.clone(), name.clone()));
                    }
                }
            }
        }
    }
    grants
}

fn is_injector_account(subjects: &Option<Vec<Subject>>, binding: &str, o: &str) -> bool {
    let subjects = subjects.clone().unwrap_or_default();
    let ours = |s: &Subject| s.kind == "ServiceAccount" && s.name == NAME && s.namespace.as_deref() == Some(NS);
    if subjects.iter().any(ours) {
        assert!(subjects.iter().all(ours), "{o}: binding {binding} grants the injector's permissions to someone else too");
        true
    } else {
        false
    }
}

fn bound_grants(r: &Rendered) -> BTreeSet<Grant> {
    let o = &r.overlay;
    let mut grants = BTreeSet::new();
    let mut used_cluster_roles = BTreeSet::new();
    let mut used_roles = BTreeSet::new();
    for binding in &r.cluster_role_bindings {
        let b = name_of(&binding.metadata);
        assert!(is_injector_account(&binding.subjects, b, o), "{o}: ClusterRoleBinding {b} binds someone else");
        assert_eq!(binding.role_ref.kind, "ClusterRole", "{o}: {b}");
        let role = r
            .cluster_roles
            .iter()
            .find(|c| name_of(&c.metadata) == binding.role_ref.name)
            .unwrap_or_else(|| panic!("{o}: {b} refers to a ClusterRole the manifests do not define"));
        used_cluster_roles.insert(binding.role_ref.name.clone());
        grants.extend(grants_of(role.rules.as_deref().unwrap_or_default(), "cluster", o));
    }
    for binding in &r.role_bindings {
        let b = name_of(&binding.metadata);
        assert!(is_injector_account(&binding.subjects, b, o), "{o}: RoleBinding {b} binds someone else");
        let ns = req(&binding.metadata.namespace, "RoleBinding namespace");
        let scope = format!("namespace/{ns}");
        let rules = match binding.role_ref.kind.as_str() {
            "Role" => {
                let role = r
                    .roles
                    .iter()
                    .find(|c| name_of(&c.metadata) == binding.role_ref.name && c.metadata.namespace.as_ref() == Some(ns))
                    .unwrap_or_else(|| panic!("{o}: {b} refers to a Role the manifests do not define"));
                used_roles.insert(binding.role_ref.name.clone());
                role.rules.clone().unwrap_or_default()
            }
            "ClusterRole" => {
                let role = r
                    .cluster_roles
                    .iter()
                    .find(|c| name_of(&c.metadata) == binding.role_ref.name)
                    .unwrap_or_else(|| panic!("{o}: {b} refers to a ClusterRole the manifests do not define"));
                used_cluster_roles.insert(binding.role_ref.name.clone());
                role.rules.clone().unwrap_or_default()
            }
            other => panic!("{o}: {b}: roleRef kind {other}"),
        };
        grants.extend(grants_of(&rules, &scope, o));
    }
    for role in &r.cluster_roles {
        assert!(role.aggregation_rule.is_none(), "{o}: no aggregated ClusterRoles");
        assert!(used_cluster_roles.contains(name_of(&role.metadata)), "{o}: ClusterRole {} is bound to nothing", name_of(&role.metadata));
    }
    for role in &r.roles {
        assert!(used_roles.contains(name_of(&role.metadata)), "{o}: Role {} is bound to nothing", name_of(&role.metadata));
    }
    grants
}

fn expand(scope: &str, group: &str, resources: &[&str], verbs: &[&str], names: &[&str]) -> BTreeSet<Grant> {
    let names: &[&str] = if names.is_empty() { &[""] } else { names };
    let mut out = BTreeSet::new();
    for resource in resources {
        for verb in verbs {
            for name in names {
                out.insert((scope.to_owned(), group.to_owned(), (*resource).to_owned(), (*verb).to_owned(), (*name).to_owned()));
            }
        }
    }
    out
}

fn base_grants(config: &Config) -> BTreeSet<Grant> {
    let daemon_config_map = config.sidecar.daemon_config_map.as_str();
    let mut grants = expand("cluster", "", &["namespaces"], &["get", "list", "watch"], &[]);
    grants.extend(expand("cluster", "", &["configmaps"], &["get", "patch", "delete"], &[daemon_config_map]));
    grants.extend(expand("cluster", "", &["configmaps"], &["create"], &[]));
    grants
}

fn show(grants: &BTreeSet<Grant>) -> String {
    grants
        .iter()
        .map(|(s, g, r, v, n)| format!("  {s} {g}/{r} {v} {}", if n.is_empty() { "*any*" } else { n }))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_grants(r: &Rendered, expected: &BTreeSet<Grant>) {
    let actual = bound_grants(r);
    let extra: BTreeSet<_> = actual.difference(expected).cloned().collect();
    let missing: BTreeSet<_> = expected.difference(&actual).cloned().collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{}: RBAC differs from least privilege\nextra grants:\n{}\nmissing grants:\n{}",
        r.overlay,
        show(&extra),
        show(&missing)
    );
}

// ---------------------------------------------------------------------------------------------
// cert-manager objects

fn cm_object<'a>(r: &'a Rendered, kind: &str, name: &str) -> &'a Value {
    r.cert_manager
        .iter()
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{}: no {kind} {name}", r.overlay))
}

/// The Issuer a Certificate names, which must be a namespaced Issuer of the same namespace.
fn issuer_of<'a>(r: &'a Rendered, certificate: &Value) -> &'a Value {
    let o = &r.overlay;
    let issuer_ref = &certificate["spec"]["issuerRef"];
    assert_eq!(issuer_ref["kind"], "Issuer", "{o}: the certificates use a namespaced Issuer");
    assert!(issuer_ref["group"].is_null() || issuer_ref["group"] == "cert-manager.io", "{o}: issuerRef.group");
    let name = issuer_ref["name"].as_str().unwrap_or_default();
    let issuer = cm_object(r, "Issuer", name);
    assert_eq!(issuer["metadata"]["namespace"], certificate["metadata"]["namespace"], "{o}: Issuer {name} namespace");
    issuer
}

fn check_cert_manager(
    r: &Rendered,
    service: &Service,
    mutating: &MutatingWebhookConfiguration,
    validating: &ValidatingWebhookConfiguration,
) {
    let o = &r.overlay;
    for object in &r.cert_manager {
        assert_eq!(object["metadata"]["namespace"], NS, "{o}: cert-manager objects live in {NS}");
    }
    let serving: Vec<&Value> =
        r.cert_manager.iter().filter(|v| v["kind"] == "Certificate" && v["spec"]["secretName"] == TLS_SECRET).collect();
    assert_eq!(serving.len(), 1, "{o}: one Certificate writes the Secret {TLS_SECRET}");
    let serving = serving[0];
    assert_ne!(serving["spec"]["isCA"], true, "{o}: the serving certificate is not a CA");
    let dns_names: BTreeSet<&str> = serving["spec"]["dnsNames"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let svc = format!("{}.{}.svc", name_of(&service.metadata), service.metadata.namespace.as_deref().unwrap_or_default());
    for name in [svc.clone(), format!("{svc}.cluster.local")] {
        assert!(dns_names.contains(name.as_str()), "{o}: the serving certificate covers {name}");
    }
    let usages: Vec<&str> = serving["spec"]["usages"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert!(usages.is_empty() || usages.contains(&"server auth"), "{o}: usage server auth");

    // The chain: serving Certificate ← CA Issuer ← CA Certificate ← self-signed Issuer.
    let ca_issuer = issuer_of(r, serving);
    let ca_secret = ca_issuer["spec"]["ca"]["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{o}: the serving certificate's Issuer is not a CA Issuer"));
    let ca_certificate = r
        .cert_manager
        .iter()
        .find(|v| v["kind"] == "Certificate" && v["spec"]["secretName"] == ca_secret)
        .unwrap_or_else(|| panic!("{o}: no Certificate writes the CA Secret {ca_secret}"));
    assert_eq!(ca_certificate["spec"]["isCA"], true, "{o}: the CA certificate has isCA: true");
    let root = issuer_of(r, ca_certificate);
    assert!(root["spec"]["selfSigned"].is_object(), "{o}: the CA is issued by a self-signed Issuer");

    // The CA injector reads the serving Certificate.
    let expected = format!(
        "{}/{}",
        serving["metadata"]["namespace"].as_str().unwrap_or_default(),
        serving["metadata"]["name"].as_str().unwrap_or_default()
    );
    for (kind, meta) in [("mutating", &mutating.metadata), ("validating", &validating.metadata)] {
        let value = meta.annotations.as_ref().and_then(|a| a.get(INJECT_CA_FROM));
        assert_eq!(value, Some(&expected), "{o}: {kind} webhook configuration: {INJECT_CA_FROM}");
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

const CERT_MANAGER_ARGS: &[&str] = &[
    "serve",
    "--config",
    "/etc/dind-injector/config.yaml",
    "--tls-cert",
    "/etc/dind-injector/tls/tls.crt",
    "--tls-key",
    "/etc/dind-injector/tls/tls.key",
];

const SELF_MANAGED_ARGS: &[&str] = &[
    "serve",
    "--config",
    "/etc/dind-injector/config.yaml",
    "--self-managed-certs",
    "--tls-cert",
    "/run/dind-injector/tls/tls.crt",
    "--tls-key",
    "/run/dind-injector/tls/tls.key",
];

#[test]
fn cert_manager_overlay() {
    let r = render("cert-manager");
    let o = &r.overlay;
    let config = check_namespace_and_config(&r);
    let (deployment, container) = check_deployment(&r, CERT_MANAGER_ARGS);
    let service = check_service(&r, &deployment, &container);
    check_pdb(&r, &deployment);
    let mutating = check_mutating(&r, &service);
    let validating = check_validating(&r, &service);
    check_cert_manager(&r, &service, &mutating, &validating);
    assert_eq!(one(&r.service_accounts, "ServiceAccount", o).metadata.name.as_deref(), Some(NAME));

    // --tls-cert and --tls-key are files of the Secret cert-manager writes, readable by the
    // injector's user, updated in place on renewal.
    let pod = req(&deployment.spec.template.spec, "pod spec");
    let volumes = pod.volumes.clone().unwrap_or_default();
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    for (flag, file) in [("--tls-cert", "tls.crt"), ("--tls-key", "tls.key")] {
        let path = arg_value(&args, flag).unwrap_or_else(|| panic!("{o}: no {flag}"));
        let (volume, mount) = mount_for(&volumes, &mounts, path, o);
        let secret = req(&volume.secret, "the TLS volume's secret");
        assert_eq!(secret.secret_name.as_deref(), Some(TLS_SECRET), "{o}: {flag} is read from {TLS_SECRET}");
        assert!(secret.items.is_none(), "{o}: the Secret volume projects every key as is");
        assert_eq!(
            Path::new(path).strip_prefix(&mount.mount_path).ok(),
            Some(Path::new(file)),
            "{o}: {flag} names the Secret's key {file}"
        );
        let mode = secret.default_mode.unwrap_or(0o644);
        let group = pod.security_context.as_ref().and_then(|s| s.fs_group);
        assert!(
            mode & 0o004 != 0 || (mode & 0o040 != 0 && group == Some(UID)),
            "{o}: {file} (mode {mode:o}, fsGroup {group:?}) is not readable by uid/gid {UID}"
        );
    }

    let no_secrets = base_grants(&config);
    assert_grants(&r, &no_secrets);
    assert!(no_secrets.iter().all(|g| g.2 != "secrets"), "{o}: with cert-manager the injector reads no Secret through the API");
}

#[test]
fn self_managed_overlay() {
    let r = render("self-managed");
    let o = &r.overlay;
    let config = check_namespace_and_config(&r);
    let (deployment, container) = check_deployment(&r, SELF_MANAGED_ARGS);
    let service = check_service(&r, &deployment, &container);
    check_pdb(&r, &deployment);
    let mutating = check_mutating(&r, &service);
    let validating = check_validating(&r, &service);
    assert_eq!(one(&r.service_accounts, "ServiceAccount", o).metadata.name.as_deref(), Some(NAME));
    assert!(r.cert_manager.is_empty(), "{o}: no cert-manager objects");
    for meta in [&mutating.metadata, &validating.metadata] {
        assert!(
            meta.annotations.as_ref().is_none_or(|a| !a.contains_key(INJECT_CA_FROM)),
            "{o}: no {INJECT_CA_FROM}: the injector patches caBundle itself"
        );
    }
    // The certificate is read through the API and written to a memory-backed emptyDir.
    let pod = req(&deployment.spec.template.spec, "pod spec");
    assert!(pod.volumes.iter().flatten().all(|v| v.secret.is_none()), "{o}: no Secret volume: the certificate is read through the API");
    let tls = pod.volumes.iter().flatten().find(|v| v.name == "tls").and_then(|v| v.empty_dir.as_ref());
    assert_eq!(tls.and_then(|e| e.medium.as_deref()), Some("Memory"), "{o}: the key never touches a disk");
    assert!(
        container.volume_mounts.iter().flatten().any(|m| m.name == "tls" && m.mount_path == "/run/dind-injector/tls"),
        "{o}: --tls-cert and --tls-key point into the tls emptyDir"
    );

    let mut expected = base_grants(&config);
    expected.extend(expand(
        "cluster",
        "admissionregistration.k8s.io",
        &["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
        &["get", "list", "watch", "patch"],
        &[name_of(&mutating.metadata)],
    ));
    assert_eq!(name_of(&mutating.metadata), name_of(&validating.metadata));
    let scope = format!("namespace/{NS}");
    expected.extend(expand(&scope, "", &["secrets"], &["get", "update"], &[TLS_SECRET]));
    expected.extend(expand(&scope, "", &["secrets"], &["create"], &[]));
    assert_grants(&r, &expected);
}

#[test]
fn base_config_is_the_documented_example() {
    let example = repo_root().join("manifests/config.example.yaml");
    let example = std::fs::read_to_string(&example).unwrap_or_else(|e| panic!("{}: {e}", example.display()));
    assert_eq!(
        base_config_text(),
        example,
        "manifests/base/config.yaml drifted from manifests/config.example.yaml: copy the example over it"
    );
}

#[test]
fn cel_check_catches_broken_expressions() {
    let good = "has(object.metadata.annotations) && 'dind-injector.io/inject' in object.metadata.annotations \
                && object.metadata.annotations['dind-injector.io/inject'] == 'true'";
    assert_eq!(check_cel_plausible(good), Ok(()));
    for bad in [
        "object.metadata.annotations['dind-injector.io/inject'] == 'true'",
        "has(object.metadata.annotations) && object.metadata.annotations['dind-injector.io/inject] == 'true'",
        "has(object.metadata.annotations && object.metadata.annotations['x'] == 'true'",
        "has(object.metadata.annotations)) && object.metadata.annotations['x'] == 'true'",
        "object.metadata.annotations['x'] == 'true' && has(object.metadata.annotations)",
        "has(oldObject.metadata.annotations) && has(object.metadata.annotations)",
        "has(object.metadata.labels)",
    ] {
        assert!(check_cel_plausible(bad).is_err(), "accepted: {bad}");
    }
}

/// `to` as a path relative to `from` (both absolute).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    to[common..].iter().for_each(|c| path.push(c));
    path
}

/// With `policy.level: restricted` in the configuration, namespaces without the level label are
/// at restricted: the component leaves one validating webhook that sends every pod of every
/// opted-in namespace.
#[test]
fn restricted_by_default_component_sends_every_pod() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("restricted-by-default-overlay");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let root = relative(&dir, &repo_root());
    let overlay = format!(
        "resources:\n- {}\ncomponents:\n- {}\n",
        root.join("manifests/overlays/self-managed").display(),
        root.join("manifests/components/restricted-by-default").display()
    );
    std::fs::write(dir.join("kustomization.yaml"), overlay).unwrap_or_else(|e| panic!("{e}"));
    let r = render_dir("self-managed + restricted-by-default", &relative(&repo_root(), &dir).display().to_string());
    let o = &r.overlay;
    let service = one(&r.services, "Service", o);
    let config = one(&r.validating, "ValidatingWebhookConfiguration", o);
    let webhooks = config.webhooks.clone().unwrap_or_default();
    let webhook = one(&webhooks, "validating webhook", o);
    assert_eq!(webhook.name, VALIDATE_RESTRICTED);
    check_client_config(&webhook.client_config, service, "/validate", &webhook.name, o);
    check_namespace_selector(webhook.namespace_selector.as_ref(), &[], &webhook.name, o);
    for level in ["baseline", "restricted", "anything"] {
        let ns = labels(&[(INJECTION_LABEL, INJECTION_ENABLED), (NAME_LABEL, "ci"), (POD_SECURITY, level)]);
        assert!(webhook.namespace_selector.as_ref().is_some_and(|s| selector_matches(s, &ns)), "{o}: {POD_SECURITY}={level}");
    }
    let conditions: Vec<&str> = webhook.match_conditions.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(conditions, ["spec-changed"], "{o}: every pod CREATE and spec UPDATE is sent");
    assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
}
