//! The validating path: the Kubernetes Pod Security Standards as pure checks, and the narrowed
//! exemption for the injected sidecar.

mod prefilter;
mod standards;
mod validate;

pub use prefilter::{EXCLUDED_NAMESPACES, Route, baseline_prefilter, validating_route};
pub use standards::{
    BASELINE_CAPABILITIES, Control, Level, RESTRICTED_VOLUME_SOURCES, SAFE_SYSCTLS, SELINUX_TYPES, Violation, check_pod_security,
    check_pod_security_except,
};
pub use validate::{Finding, Verdict, audit_annotations, effective_policy, validate_pod};
