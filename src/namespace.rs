//! What the injector knows about a namespace: its labels and annotations. The cluster cache fills
//! it in production; the CLI and `serve --static-namespace-*` stand in for it without a cluster.

use std::collections::BTreeMap;

use crate::annotations;

/// Labels and annotations of one namespace, as the decision functions see them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceView {
    /// The namespace's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations (namespace-wide defaults for the per-pod override annotations).
    pub annotations: BTreeMap<String, String>,
}

/// The Pod Security Admission label that sets a namespace's enforced level.
pub const PSA_ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

impl NamespaceView {
    /// A view of namespace `name` with the given labels and annotations.
    pub fn new(name: impl Into<String>, labels: BTreeMap<String, String>, annotations: BTreeMap<String, String>) -> Self {
        NamespaceView { name: name.into(), labels, annotations }
    }

    /// A namespace that has opted in and allows privileged pods: what the CLI assumes when it
    /// is not told otherwise.
    pub fn opted_in(name: impl Into<String>) -> Self {
        let labels = BTreeMap::from([
            (annotations::INJECTION_LABEL.to_owned(), annotations::INJECTION_ENABLED.to_owned()),
            (PSA_ENFORCE_LABEL.to_owned(), "privileged".to_owned()),
        ]);
        NamespaceView::new(name, labels, BTreeMap::new())
    }

    /// Whether the namespace carries `dind-injector.io/injection: enabled`.
    pub fn is_opted_in(&self) -> bool {
        self.labels.get(annotations::INJECTION_LABEL).map(String::as_str) == Some(annotations::INJECTION_ENABLED)
    }

    /// The Pod Security level the namespace enforces, when it is labelled with one.
    pub fn pod_security_enforce(&self) -> Option<&str> {
        self.labels.get(PSA_ENFORCE_LABEL).map(String::as_str)
    }
}

/// Where the server looks namespaces up. The request path only reads memory.
pub trait NamespaceLookup: Send + Sync {
    /// The view of namespace `name`, or `None` when it is not known (yet).
    fn get(&self, name: &str) -> Option<NamespaceView>;
    /// Whether the source has its data (the cache has synced).
    fn is_ready(&self) -> bool;
}

/// Every namespace looks the same: the labels and annotations given. For development and for
/// running without a cluster.
#[derive(Debug, Clone, Default)]
pub struct StaticNamespaces {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

impl StaticNamespaces {
    /// All namespaces carry these labels and annotations.
    pub fn new(labels: BTreeMap<String, String>, annotations: BTreeMap<String, String>) -> Self {
        StaticNamespaces { labels, annotations }
    }
}

impl NamespaceLookup for StaticNamespaces {
    fn get(&self, name: &str) -> Option<NamespaceView> {
        Some(NamespaceView::new(name, self.labels.clone(), self.annotations.clone()))
    }

    fn is_ready(&self) -> bool {
        true
    }
}

/// Parses `key=value,key=value` (the form of `--namespace-labels`). Whitespace around items is
/// ignored; an item without `=` is an error naming it.
pub fn parse_key_values(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| format!("{item:?} is not key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("{item:?} has an empty key"));
        }
        map.insert(k.to_owned(), v.trim().to_owned());
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_parse_and_errors_name_the_item() {
        let m = parse_key_values("a=1, b = two ,c=").unwrap_or_default();
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert_eq!(m.get("b").map(String::as_str), Some("two"));
        assert_eq!(m.get("c").map(String::as_str), Some(""));
        let e = parse_key_values("a=1,oops").err().unwrap_or_default();
        assert!(e.contains("oops"), "{e}");
    }

    #[test]
    fn opt_in_needs_the_exact_label_value() {
        let mut ns = NamespaceView::opted_in("ci");
        assert!(ns.is_opted_in());
        ns.labels.insert(annotations::INJECTION_LABEL.into(), "true".into());
        assert!(!ns.is_opted_in());
    }
}
