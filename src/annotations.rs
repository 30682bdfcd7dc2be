//! The labels and annotations dind-injector reads and writes.

/// The prefix of every key dind-injector owns.
pub const PREFIX: &str = "dind-injector.io/";

/// Namespace label that opts a namespace in.
pub const INJECTION_LABEL: &str = "dind-injector.io/injection";
/// The value of [`INJECTION_LABEL`] that opts in.
pub const INJECTION_ENABLED: &str = "enabled";

/// Pod annotation that asks for a Docker daemon (`"true"`) or refuses one (`"false"`).
pub const INJECT: &str = "dind-injector.io/inject";
/// Pod annotation that names the CI runner, overriding detection.
pub const RUNNER: &str = "dind-injector.io/runner";
/// Pod annotation written by the injector: what it injected.
pub const STATUS: &str = "dind-injector.io/status";

/// Override: the sidecar image (must match the administrator's allowlist).
pub const IMAGE: &str = "dind-injector.io/image";
/// Override: `unix`, `tcp-tls` or `tcp`.
pub const TRANSPORT: &str = "dind-injector.io/transport";
/// Override: comma-separated names of the containers that get `DOCKER_HOST`.
pub const CONTAINERS: &str = "dind-injector.io/containers";
/// Override: the sidecar's CPU request.
pub const CPU: &str = "dind-injector.io/cpu";
/// Override: the sidecar's memory request (the limit is raised to at least this).
pub const MEMORY: &str = "dind-injector.io/memory";
/// Override: the size of the `/var/lib/docker` emptyDir.
pub const STORAGE: &str = "dind-injector.io/storage";
/// Override: the daemon's MTU, a number or `auto`.
pub const MTU: &str = "dind-injector.io/mtu";
/// Override: `native`, `container` or `auto`.
pub const SIDECAR_MODE: &str = "dind-injector.io/sidecar-mode";
/// Override: workspace mirroring, `auto`, `off`, or a comma list of job mount paths to add
/// (`/cache`) or leave out (`-/cache`).
pub const WORKSPACE: &str = "dind-injector.io/workspace";

/// Namespace label: the Pod Security level every other container must meet.
pub const POD_SECURITY: &str = "dind-injector.io/pod-security";
/// Namespace label: `enforce`, `audit` or `off` for the validating webhook.
pub const POLICY_MODE: &str = "dind-injector.io/policy-mode";

/// `kubectl` reads this to pick the container for `logs` and `exec` when none is named.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
