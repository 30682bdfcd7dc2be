//! Small helpers shared by the checks.

use super::*;

pub(crate) fn one<'a, T>(items: &'a [T], what: &str, overlay: &str) -> &'a T {
    assert_eq!(items.len(), 1, "{overlay}: expected exactly one {what}, found {}", items.len());
    &items[0]
}

pub(crate) fn req<'a, T>(value: &'a Option<T>, what: &str) -> &'a T {
    value.as_ref().unwrap_or_else(|| panic!("{what} is missing"))
}

pub(crate) fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

pub(crate) fn assert_in_namespace(meta: &ObjectMeta, what: &str) {
    assert_eq!(meta.namespace.as_deref(), Some(NS), "{what} must be in namespace {NS}");
}

pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// `LabelSelector` semantics, as the apiserver evaluates them.
pub(crate) fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
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

pub(crate) fn pod_labels_of(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment.spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default()
}

pub(crate) fn arg_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str).or_else(|| {
        let prefix = format!("{flag}=");
        args.iter().find_map(|a| a.strip_prefix(&prefix))
    })
}

pub(crate) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}
