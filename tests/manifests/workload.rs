//! The injector's own workload: its namespace and configuration, the Deployment (arguments,
//! mounts, probes, the Pod Security "restricted" profile), the Service and the PodDisruptionBudget.

use super::*;

pub(crate) fn base_config_text() -> String {
    let path = repo_root().join("manifests/base/config.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The namespace, and the ConfigMap whose config.yaml must load. Returns the configuration.
pub(crate) fn check_namespace_and_config(r: &Rendered) -> Config {
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
pub(crate) fn check_deployment(r: &Rendered, expected_args: &[&str]) -> (Deployment, Container) {
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
pub(crate) fn mount_for<'a>(volumes: &'a [Volume], mounts: &'a [VolumeMount], path: &str, o: &str) -> (&'a Volume, &'a VolumeMount) {
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
pub(crate) fn check_restricted(pod: &PodSpec, o: &str) {
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
pub(crate) fn check_service(r: &Rendered, deployment: &Deployment, container: &Container) -> Service {
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

pub(crate) fn check_pdb(r: &Rendered, deployment: &Deployment) {
    let o = &r.overlay;
    let pdb = one(&r.pdbs, "PodDisruptionBudget", o);
    assert_eq!(name_of(&pdb.metadata), NAME);
    assert_in_namespace(&pdb.metadata, "the PodDisruptionBudget");
    let spec = req(&pdb.spec, "PDB spec");
    assert_eq!(spec.min_available, Some(IntOrString::Int(1)), "{o}: minAvailable 1");
    let pod_labels = pod_labels_of(deployment);
    assert!(spec.selector.as_ref().is_some_and(|s| selector_matches(s, &pod_labels)), "{o}: the PDB selects the injector's pods");
}
