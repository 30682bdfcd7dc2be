//! The labels and annotations dind-injector reads and writes.

/// The prefix of every key dind-injector owns.
pub const PREFIX: &str = "dind-injector.io/";

/// Namespace label that opts a namespace in.
pub const INJECTION_LABEL: &str = "dind-injector.io/injection";
/// The value of [`INJECTION_LABEL`] that opts in.
pub const INJECTION_ENABLED: &str = "enabled";

/// Pod annotation, or pod label, that asks for a Docker daemon (`"true"`) or refuses one
/// (`"false"`). The annotation wins when both are set.
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

/// Pod annotation, namespace label or annotation: `"off"` starts the daemon empty where the
/// configuration gives it a node cache (`cache.mode: node`); nothing can turn the cache on.
pub const CACHE: &str = "dind-injector.io/cache";

/// Override (pod or namespace annotation): `privileged`, `sysbox` or `kata`, within
/// `overrides.allowedIsolations`.
pub const ISOLATION: &str = "dind-injector.io/isolation";

/// Namespace label: the Pod Security level every other container must meet.
pub const POD_SECURITY: &str = "dind-injector.io/pod-security";
/// Namespace label: `enforce`, `audit` or `off` for the validating webhook.
pub const POLICY_MODE: &str = "dind-injector.io/policy-mode";

/// `kubectl` reads this to pick the container for `logs` and `exec` when none is named.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// Every pod annotation dind-injector reads or writes.
pub const POD_ANNOTATIONS: &[&str] =
    &[INJECT, RUNNER, STATUS, IMAGE, TRANSPORT, CONTAINERS, CPU, MEMORY, STORAGE, MTU, SIDECAR_MODE, WORKSPACE, CACHE, ISOLATION];

/// Where a pod's [`INJECT`] request was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestSource {
    /// The pod annotation.
    Annotation,
    /// The pod label.
    Label,
}

impl RequestSource {
    /// `annotation` or `label`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestSource::Annotation => "annotation",
            RequestSource::Label => "label",
        }
    }
}

/// A pod's [`INJECT`] setting: the annotation when present, else the label.
pub fn inject_request<'a>(
    annotations: Option<&'a std::collections::BTreeMap<String, String>>,
    labels: Option<&'a std::collections::BTreeMap<String, String>>,
) -> Option<(RequestSource, &'a str)> {
    annotations
        .and_then(|a| a.get(INJECT))
        .map(|v| (RequestSource::Annotation, v.as_str()))
        .or_else(|| labels.and_then(|l| l.get(INJECT)).map(|v| (RequestSource::Label, v.as_str())))
}

/// Warnings about a pod's dind-injector keys that will not do what their writer meant: an
/// [`INJECT`] value that is neither `"true"` nor `"false"` (matched exactly, as the webhook
/// configurations' conditions match it), a key under [`PREFIX`] that does not exist, and a key that
/// looks like a misspelt one of ours.
pub fn request_problems(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((source, value)) = inject_request(annotations, labels)
        && value != "true"
        && value != "false"
    {
        out.push(format!(
            "dind-injector: pod {} {INJECT}={value:?} is neither \"true\" nor \"false\", so no Docker daemon was injected; set it to exactly \"true\" (lower case, no spaces)",
            source.as_str()
        ));
    }
    let annotation_keys = annotations.into_iter().flat_map(|m| m.keys()).map(|k| ("annotation", k.as_str()));
    let label_keys = labels.into_iter().flat_map(|m| m.keys()).map(|k| ("label", k.as_str()));
    for (kind, key) in annotation_keys.chain(label_keys) {
        let known = if kind == "annotation" { POD_ANNOTATIONS.contains(&key) } else { key == INJECT };
        if known {
            continue;
        }
        let lower = key.to_ascii_lowercase();
        let ours = key.starts_with(PREFIX);
        let lookalike = !ours && (lower.contains("dind-injector") || lower.contains("dind_injector") || lower.contains("dindinjector"));
        if ours || lookalike {
            let hint = closest_key(key, if kind == "annotation" { POD_ANNOTATIONS } else { &[INJECT] });
            out.push(format!(
                "dind-injector: pod {kind} {key:?} is not one dind-injector reads and is ignored{}",
                hint.map(|h| format!("; did you mean {h:?}?")).unwrap_or_default()
            ));
        }
    }
    out
}

/// The known key whose last segment is closest to `key`'s, when it is close.
fn closest_key(key: &str, known: &[&'static str]) -> Option<&'static str> {
    let tail = |k: &str| k.rsplit(['/', '.']).next().unwrap_or(k).to_ascii_lowercase();
    let wanted = tail(key);
    known.iter().map(|k| (edit_distance(&wanted, &tail(k)), *k)).filter(|(d, _)| *d <= 2).min().map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_annotation_wins_over_the_label() {
        let a = map(&[(INJECT, "false")]);
        let l = map(&[(INJECT, "true")]);
        assert_eq!(inject_request(Some(&a), Some(&l)), Some((RequestSource::Annotation, "false")));
        assert_eq!(inject_request(None, Some(&l)), Some((RequestSource::Label, "true")));
        assert_eq!(inject_request(Some(&map(&[])), None), None);
    }

    #[test]
    fn malformed_requests_are_named_with_the_fix() {
        assert!(request_problems(Some(&map(&[(INJECT, "true"), (TRANSPORT, "tcp")])), Some(&map(&[("app", "x")]))).is_empty());
        let yes = request_problems(Some(&map(&[(INJECT, "yes")])), None);
        assert!(yes[0].contains("\"yes\" is neither") && yes[0].contains("exactly \"true\""), "{yes:?}");
        assert_eq!(request_problems(None, Some(&map(&[(INJECT, "True ")]))).len(), 1);
        let typo = request_problems(Some(&map(&[("dind-injector.io/injct", "true")])), None);
        assert!(typo[0].contains("did you mean \"dind-injector.io/inject\""), "{typo:?}");
        let prefix = request_problems(None, Some(&map(&[("dind-injector/inject", "true")])));
        assert!(prefix[0].contains("label \"dind-injector/inject\"") && prefix[0].contains("did you mean"), "{prefix:?}");
        // A label under our prefix other than inject is not read either.
        assert_eq!(request_problems(None, Some(&map(&[(TRANSPORT, "tcp")]))).len(), 1);
    }
}
