//! The install manifests: `kubectl kustomize manifests/overlays/<overlay>` for both overlays,
//! every object parsed into its Kubernetes type, and what must hold for the webhook to work and
//! stay least-privileged: selectors, ports, paths, certificates, security context, RBAC.
//!
//! Needs `kubectl` (it bundles kustomize); set `KUBECTL` to use another binary.
//!
//! By concern: `render.rs` (the renderer's output, typed), `workload.rs` (namespace, config,
//! Deployment, Service, PodDisruptionBudget), `webhooks.rs`, `rbac.rs`, `cert_manager.rs`, and the
//! tests, one per overlay, here.

#[path = "../support/mod.rs"]
mod support;

mod cert_manager;
mod helpers;
mod rbac;
mod render;
mod webhooks;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

pub(crate) const NS: &str = "dind-injector";
pub(crate) const NAME: &str = "dind-injector";
pub(crate) const CONFIG_MAP: &str = "dind-injector-config";
pub(crate) const TLS_SECRET: &str = "dind-injector-tls";
pub(crate) const IMAGE: &str = "ghcr.io/dind-injector/dind-injector:0.1.0";
pub(crate) const UID: i64 = 65532;
pub(crate) const HTTPS_PORT: i32 = 8443;
pub(crate) const HEALTH_PORT: i32 = 8080;
pub(crate) const INJECT_CA_FROM: &str = "cert-manager.io/inject-ca-from";
pub(crate) const NAME_LABEL: &str = "kubernetes.io/metadata.name";
pub(crate) const VALIDATE_BASELINE: &str = "validate.dind-injector.io";
pub(crate) const VALIDATE_RESTRICTED: &str = "validate-restricted.dind-injector.io";

use cert_manager::*;
use helpers::*;
use rbac::*;
use render::*;
use support::render::restricted_by_default_overlay;
use support::repo_root;
use webhooks::*;
use workload::*;

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

/// With `policy.level: restricted` in the configuration, namespaces without the level label are
/// at restricted: the component leaves one validating webhook that sends every pod of every
/// opted-in namespace.
#[test]
fn restricted_by_default_component_sends_every_pod() {
    let dir = restricted_by_default_overlay(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let r = render_dir("self-managed + restricted-by-default", &dir);
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

/// Tests (and test binaries) render the restricted-by-default overlay in parallel: however many
/// ask for it at once, its kustomization.yaml is never seen other than whole.
#[test]
fn the_restricted_by_default_overlay_is_never_read_half_written() {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("overlay-race");
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    restricted_by_default_overlay(&tmp);
    let path = tmp.join("restricted-by-default-overlay/kustomization.yaml");
    let whole = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reads = 20_000;
    let torn = std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| (0..2000).for_each(|_| drop(restricted_by_default_overlay(&tmp))));
        }
        let reader = s.spawn(|| (0..reads).filter(|_| std::fs::read_to_string(&path).ok().as_deref() != Some(whole.as_str())).count());
        reader.join().unwrap_or_else(|_| panic!("the reader panicked"))
    });
    assert_eq!(torn, 0, "{torn} of {reads} reads saw a kustomization.yaml other than the whole one");
}
