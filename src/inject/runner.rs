//! Which CI runner made a pod, and which of its containers are the job's.

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::annotations;
use crate::image::ImageRef;

/// The CI runners whose pods are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runner {
    /// GitLab Runner, Kubernetes executor.
    GitLab,
    /// Buildkite agent-stack-k8s.
    Buildkite,
    /// Harness CI, Kubernetes build infrastructure.
    Harness,
    /// Anything else: every regular container is a job container.
    Generic,
}

impl Runner {
    /// The spelling in annotations, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Runner::GitLab => "gitlab",
            Runner::Buildkite => "buildkite",
            Runner::Harness => "harness",
            Runner::Generic => "generic",
        }
    }

    /// Parses the annotation spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gitlab" => Some(Runner::GitLab),
            "buildkite" => Some(Runner::Buildkite),
            "harness" => Some(Runner::Harness),
            "generic" => Some(Runner::Generic),
            _ => None,
        }
    }

    /// Recognises the runner from the pod's labels and container names.
    pub fn detect(pod: &Pod) -> Runner {
        let labels = pod.metadata.labels.as_ref();
        let has_label = |key: &str| labels.is_some_and(|l| l.contains_key(key));
        let has_label_prefix = |prefix: &str| labels.is_some_and(|l| l.keys().any(|k| k.starts_with(prefix)));
        if has_label("job.runner.gitlab.com/pod") || has_label_prefix("job.runner.gitlab.com/") {
            return Runner::GitLab;
        }
        if has_label("buildkite.com/job-uuid") {
            return Runner::Buildkite;
        }
        let containers = pod.spec.as_ref().map_or(&[][..], |s| &s.containers[..]);
        let harness_names = containers.iter().any(|c| c.name == "lite-engine" || is_numbered(&c.name, "step-"));
        if has_label("pipelineExecutionID") && harness_names {
            return Runner::Harness;
        }
        Runner::Generic
    }

    /// Regular containers the runner owns and that never get `DOCKER_HOST`.
    fn infrastructure(self) -> &'static [&'static str] {
        match self {
            Runner::GitLab => &["helper"],
            Runner::Buildkite => &["agent"],
            Runner::Harness => &["lite-engine"],
            Runner::Generic => &[],
        }
    }

    /// Whether the regular container `name` runs the job's commands for this runner.
    pub fn is_job_container(self, name: &str) -> bool {
        !self.infrastructure().contains(&name)
    }
}

/// The runner named by the pod's `dind-injector.io/runner` annotation, or detected. The second
/// value is a warning when the annotation names no runner.
pub fn runner_of(pod: &Pod) -> (Runner, Option<String>) {
    let named = pod.metadata.annotations.as_ref().and_then(|a| a.get(annotations::RUNNER));
    match named {
        None => (Runner::detect(pod), None),
        Some(value) => match Runner::parse(value) {
            Some(r) => (r, None),
            None => {
                let detected = Runner::detect(pod);
                let warning = format!(
                    "dind-injector: annotation {}={value:?} names no runner (use gitlab, buildkite, harness or generic); using {}, recognised from the pod",
                    annotations::RUNNER,
                    detected.as_str()
                );
                (detected, Some(warning))
            }
        },
    }
}

fn is_numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether a container runs a Docker daemon of its own: it starts `dockerd` (or the dind
/// entrypoint), or it runs a dind image with the image's own entrypoint doing so.
pub fn runs_docker_daemon(c: &Container) -> bool {
    let program = |s: &String| {
        let base = s.rsplit('/').next().unwrap_or(s);
        matches!(base, "dockerd" | "dockerd-entrypoint.sh" | "dind" | "dockerd-rootless.sh")
    };
    let command = c.command.as_deref().unwrap_or_default();
    let args = c.args.as_deref().unwrap_or_default();
    if command.first().is_some_and(program) || (command.is_empty() && args.first().is_some_and(program)) {
        return true;
    }
    let dind_image = c.image.as_deref().and_then(|i| ImageRef::parse(i).ok()).is_some_and(|r| r.is_dind());
    // The dind image's entrypoint starts dockerd unless the pod gives it another program to run.
    dind_image && command.is_empty() && args.first().is_none_or(|a| a.starts_with('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, command: &[&str], args: &[&str]) -> Container {
        let list = |v: &[&str]| (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect());
        Container { name: "c".into(), image: Some(image.into()), command: list(command), args: list(args), ..Container::default() }
    }

    #[test]
    fn tells_a_daemon_from_a_client() {
        assert!(runs_docker_daemon(&container("docker:dind", &[], &["dockerd", "--host=unix:///var/run/docker.sock"])));
        assert!(runs_docker_daemon(&container("docker:27-dind", &[], &[])));
        assert!(runs_docker_daemon(&container("docker:27-dind", &[], &["--tls=false"])));
        assert!(runs_docker_daemon(&container("alpine", &["/usr/local/bin/dockerd"], &[])));
        assert!(!runs_docker_daemon(&container("docker:27-cli", &["sh", "-c", "docker build ."], &[])));
        assert!(!runs_docker_daemon(&container("docker:27-dind", &["sh"], &[])));
        assert!(!runs_docker_daemon(&container("golang:1.23", &[], &[])));
    }

    #[test]
    fn numbered_names() {
        assert!(is_numbered("step-12", "step-"));
        assert!(!is_numbered("step-", "step-"));
        assert!(!is_numbered("step-a", "step-"));
    }
}
