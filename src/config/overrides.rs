//! `overrides`: what pod and namespace annotations may change, and how far.

use serde::{Deserialize, Serialize};

use super::{Isolation, Transport, quantity_problem};

/// What overrides may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OverrideLimits {
    /// Images an annotation may choose; `*` matches any run of characters.
    pub allowed_images: Vec<String>,
    /// Transports an annotation may choose.
    pub allowed_transports: Vec<Transport>,
    /// The largest CPU request an annotation may ask for.
    pub max_cpu: String,
    /// The largest memory request an annotation may ask for.
    pub max_memory: String,
    /// The largest storage an annotation may ask for.
    pub max_storage: String,
    /// Isolation modes an annotation may choose (a refused one leaves the pod without a daemon:
    /// a requested isolation is never quietly replaced by another).
    pub allowed_isolations: Vec<Isolation>,
}

impl Default for OverrideLimits {
    fn default() -> Self {
        OverrideLimits {
            allowed_images: vec!["docker:*-dind".into()],
            allowed_transports: vec![Transport::Unix, Transport::TcpTls, Transport::Tcp],
            max_cpu: "4".into(),
            max_memory: "16Gi".into(),
            max_storage: "100Gi".into(),
            allowed_isolations: Isolation::ALL.to_vec(),
        }
    }
}

impl OverrideLimits {
    /// Every problem with `overrides.*`.
    pub(super) fn check(&self, bad: &mut dyn FnMut(&str, String)) {
        for (i, p) in self.allowed_images.iter().enumerate() {
            if p.trim().is_empty() {
                bad(&format!("overrides.allowedImages[{i}]"), "is empty".into());
            }
        }
        for (path, v) in
            [("overrides.maxCpu", &self.max_cpu), ("overrides.maxMemory", &self.max_memory), ("overrides.maxStorage", &self.max_storage)]
        {
            quantity_problem(bad, path, Some(v));
        }
    }
}
