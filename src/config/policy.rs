//! `policy`: the validating webhook's defaults, and the Pod Security levels it can hold pods to.

use serde::{Deserialize, Serialize};

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Prevents known privilege escalations.
    Baseline,
    /// Baseline plus hardening best practices.
    Restricted,
}

impl Level {
    /// `baseline` or `restricted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }

    /// Parses the label spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }
}

/// What the validating webhook does with a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyMode {
    /// Nothing is checked.
    Off,
    /// Allowed, with warnings, audit annotations and metrics.
    Audit,
    /// Denied, with every violation in the message.
    Enforce,
}

impl PolicyMode {
    /// The spelling in labels and the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Off => "off",
            PolicyMode::Audit => "audit",
            PolicyMode::Enforce => "enforce",
        }
    }

    /// Parses the label spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "off" => Some(PolicyMode::Off),
            "audit" => Some(PolicyMode::Audit),
            "enforce" => Some(PolicyMode::Enforce),
            _ => None,
        }
    }
}

/// The validating webhook's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// `enforce`, `audit` or `off`, where the namespace does not say.
    pub mode: PolicyMode,
    /// `baseline` or `restricted`, where the namespace does not say.
    pub level: Level,
    /// Whether a namespace label may choose a looser mode or level than these defaults.
    pub allow_looser_namespaces: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig { mode: PolicyMode::Enforce, level: Level::Baseline, allow_looser_namespaces: false }
    }
}
