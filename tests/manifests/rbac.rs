//! RBAC: the exact set of grants bound to the injector's service account.

use super::*;

/// (scope, apiGroup, resource, verb, resourceName) where scope is "cluster" or "namespace/<ns>"
/// and resourceName is "" for "any".
pub(crate) type Grant = (String, String, String, String, String);

pub(crate) fn grants_of(rules: &[PolicyRule], scope: &str, o: &str) -> BTreeSet<Grant> {
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

pub(crate) fn is_injector_account(subjects: &Option<Vec<Subject>>, binding: &str, o: &str) -> bool {
    let subjects = subjects.clone().unwrap_or_default();
    let ours = |s: &Subject| s.kind == "ServiceAccount" && s.name == NAME && s.namespace.as_deref() == Some(NS);
    if subjects.iter().any(ours) {
        assert!(subjects.iter().all(ours), "{o}: binding {binding} grants the injector's permissions to someone else too");
        true
    } else {
        false
    }
}

pub(crate) fn bound_grants(r: &Rendered) -> BTreeSet<Grant> {
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

pub(crate) fn expand(scope: &str, group: &str, resources: &[&str], verbs: &[&str], names: &[&str]) -> BTreeSet<Grant> {
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

pub(crate) fn base_grants(config: &Config) -> BTreeSet<Grant> {
    let daemon_config_map = config.sidecar.daemon_config_map.as_str();
    let mut grants = expand("cluster", "", &["namespaces"], &["get", "list", "watch"], &[]);
    grants.extend(expand("cluster", "node.k8s.io", &["runtimeclasses"], &["get", "list", "watch"], &[]));
    grants.extend(expand("cluster", "", &["configmaps"], &["get", "patch", "delete"], &[daemon_config_map]));
    grants.extend(expand("cluster", "", &["configmaps"], &["create"], &[]));
    grants
}

pub(crate) fn show(grants: &BTreeSet<Grant>) -> String {
    grants
        .iter()
        .map(|(s, g, r, v, n)| format!("  {s} {g}/{r} {v} {}", if n.is_empty() { "*any*" } else { n }))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn assert_grants(r: &Rendered, expected: &BTreeSet<Grant>) {
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
