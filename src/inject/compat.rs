//! Pipelines written for the runners' DinD documentation keep working: a job container whose env
//! already says `DOCKER_HOST=tcp://docker:2375` (TLS off) or `tcp://docker:2376` (TLS, client
//! certificates in `DOCKER_CERT_PATH` or `$DOCKER_TLS_CERTDIR/client`) reaches the injected
//! daemon unchanged: the daemon serves that address on 127.0.0.1 and the certificates are mounted
//! where the job looks for them.
//!
//! One dockerd has one TLS configuration for all its TCP listeners, so one pod's daemon serves
//! plain TCP (2375) or TLS (2376), not both; the other gets a warning that says so.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, VolumeMount};

use crate::annotations;
use crate::config::{Config, Transport};

use super::runner::Runner;
use super::settings::Settings;
use super::sidecar::{SidecarPlan, TCP_PORT, TLS_PORT};

/// The host names the runners' DinD documentation uses; all resolve to 127.0.0.1 in the pod.
pub const DOCUMENTED_HOSTS: [&str; 3] = ["docker", "localhost", "127.0.0.1"];

/// The transport a documented DinD address needs: `tcp://<host>:2375` plain, `:2376` TLS.
pub fn documented_transport(value: &str) -> Option<Transport> {
    let rest = value.trim().trim_end_matches('/').strip_prefix("tcp://")?;
    let (host, port) = rest.rsplit_once(':')?;
    if !DOCUMENTED_HOSTS.contains(&host) {
        return None;
    }
    match port.parse::<u16>().ok()? {
        TCP_PORT => Some(Transport::Tcp),
        TLS_PORT => Some(Transport::TcpTls),
        _ => None,
    }
}

/// Indices of the containers that will be asked to get `DOCKER_HOST` (the same choice the
/// injection makes, before mount clashes are looked at).
pub fn candidate_targets(spec: &PodSpec, runner: Runner, settings: &Settings) -> Vec<usize> {
    match &settings.containers {
        None => (0..spec.containers.len()).filter(|&i| runner.is_job_container(&spec.containers[i].name)).collect(),
        Some(named) => (0..spec.containers.len()).filter(|&i| named.contains(&spec.containers[i].name)).collect(),
    }
}

/// The documented addresses the job containers use, and how each is served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listeners {
    /// Add a plain `tcp://127.0.0.1:2375` listener beside the Unix socket.
    pub extra_plain: bool,
    /// `DOCKER_HOST` values the daemon serves.
    served: Vec<String>,
    /// `DOCKER_HOST` values that are documented but cannot be served (already warned about).
    refused: Vec<String>,
}

impl Listeners {
    /// Whether the job's `value` was dealt with here (served, or warned about with the reason).
    pub fn handles(&self, value: &str) -> bool {
        let v = value.trim().trim_end_matches('/');
        self.served.iter().chain(self.refused.iter()).any(|s| s == v)
    }

    /// Whether a served address uses the `docker` host name (the pod needs the host alias).
    pub fn needs_alias(&self) -> bool {
        self.served.iter().any(|v| v.starts_with("tcp://docker:"))
    }

    /// Adds the extra listeners to the sidecar's dockerd arguments, bound to 127.0.0.1 only.
    pub fn add_to(&self, sidecar: &mut Container) {
        if self.extra_plain {
            let args = sidecar.args.get_or_insert_with(Vec::new);
            args.push(format!("--host=tcp://127.0.0.1:{TCP_PORT}"));
            args.push("--tls=false".to_owned());
        }
    }
}

/// Decides how the job containers' documented `DOCKER_HOST` values are served: the transport
/// follows them unless a `dind-injector.io/transport` annotation chose one; a plain address is
/// also served beside a Unix socket; what cannot be served is warned about.
pub fn plan_listeners(
    settings: &mut Settings,
    spec: &PodSpec,
    candidates: &[usize],
    pod_annotations: Option<&BTreeMap<String, String>>,
    namespace_annotations: &BTreeMap<String, String>,
    config: &Config,
    warnings: &mut Vec<String>,
) -> Listeners {
    let jobs: Vec<(&str, String, Transport)> = candidates
        .iter()
        .filter_map(|&i| spec.containers.get(i))
        .filter_map(|c| {
            let e = c.env.iter().flatten().find(|e| e.name == "DOCKER_HOST")?;
            if e.value_from.is_some() {
                return None;
            }
            let value = e.value.as_deref()?.trim().trim_end_matches('/').to_owned();
            let t = documented_transport(&value)?;
            Some((c.name.as_str(), value, t))
        })
        .collect();
    let mut listeners = Listeners::default();
    if jobs.is_empty() {
        return listeners;
    }

    let chosen_by_annotation = [pod_annotations, Some(namespace_annotations)]
        .iter()
        .flatten()
        .filter_map(|m| m.get(annotations::TRANSPORT))
        .any(|v| Transport::parse(v) == Some(settings.transport));
    let allowed = |t: Transport| t == config.sidecar.transport || config.overrides.allowed_transports.contains(&t);
    let mut decided_by: Option<&str> = None;
    if !chosen_by_annotation {
        let wants = |t: Transport| jobs.iter().find(|(_, _, w)| *w == t && allowed(t));
        // TLS first: one daemon cannot serve both, and the TLS setup is the runners' default.
        if let Some((name, _, t)) = wants(Transport::TcpTls).or_else(|| wants(Transport::Tcp)) {
            settings.transport = *t;
            decided_by = Some(name);
        }
    }

    let chooser = match decided_by {
        Some(name) => format!("container {name:?}'s DOCKER_HOST"),
        None if chosen_by_annotation => format!("the {} annotation", annotations::TRANSPORT),
        None => "the cluster configuration (sidecar.transport)".to_owned(),
    };
    for (name, value, wanted) in jobs {
        if wanted == settings.transport {
            listeners.served.push(value);
            continue;
        }
        let why = if !allowed(wanted) {
            format!("the administrator does not allow the {} transport (overrides.allowedTransports)", wanted.as_str())
        } else if wanted == Transport::Tcp && settings.transport == Transport::Unix {
            listeners.extra_plain = true;
            listeners.served.push(value);
            continue;
        } else if settings.transport == Transport::TcpTls {
            format!(
                "the daemon serves TLS on 127.0.0.1:{TLS_PORT} (chosen by {chooser}), and one dockerd cannot serve plain TCP and TLS at once"
            )
        } else {
            format!("TLS needs the tcp-tls transport, and {chooser} chose {}", settings.transport.as_str())
        };
        warnings.push(format!(
            "dind-injector: container {name:?} sets DOCKER_HOST={value:?}, which cannot be served: {why}. Give every job container the same DOCKER_HOST, or remove it to use the injected daemon ({})",
            super::sidecar::docker_host(settings.transport, config)
        ));
        listeners.refused.push(value);
    }
    listeners
}

/// The env and mounts job container `c` gets: with TLS, the client certificates are mounted where
/// `c` looks for them (`DOCKER_CERT_PATH`, else `$DOCKER_TLS_CERTDIR/client`), and an added
/// `DOCKER_CERT_PATH` says the same. The message says why `c`'s own setting was not followed.
/// Borrowed from the plan unless the certificates move.
pub fn job_side<'a>(
    c: &Container,
    plan: &'a SidecarPlan,
    transport: Transport,
) -> (Cow<'a, [EnvVar]>, Cow<'a, [VolumeMount]>, Option<String>) {
    let env = Cow::Borrowed(plan.job_env.as_slice());
    let mut mounts = Cow::Borrowed(plan.job_mounts.as_slice());
    if transport != Transport::TcpTls {
        return (env, mounts, None);
    }
    let literal = |name: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name && e.value_from.is_none())
            .and_then(|e| e.value.as_deref())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let (source, wanted) = match (literal("DOCKER_CERT_PATH"), literal("DOCKER_TLS_CERTDIR")) {
        (Some(p), _) => ("DOCKER_CERT_PATH", p.trim_end_matches('/').to_owned()),
        (None, Some(d)) => ("DOCKER_TLS_CERTDIR", format!("{}/client", d.trim_end_matches('/'))),
        (None, None) => return (env, mounts, None),
    };
    let Some(at) = mounts.iter().position(|m| m.sub_path.as_deref() == Some("client")) else {
        return (env, mounts, None);
    };
    let certs = &mut mounts.to_mut()[at];
    if !wanted.starts_with('/') || wanted.len() < 2 || wanted.split('/').any(|p| p == "..") {
        let message = format!(
            "dind-injector: container {:?} sets {source} so that the client certificates would be at {wanted:?}, which is not an absolute path; they are mounted at {} instead. Set DOCKER_CERT_PATH to an absolute path",
            c.name, certs.mount_path
        );
        return (env, mounts, Some(message));
    }
    certs.mount_path = wanted.clone();
    let mut env = env.into_owned();
    for e in env.iter_mut().filter(|e| e.name == "DOCKER_CERT_PATH") {
        e.value = Some(wanted.clone());
    }
    (Cow::Owned(env), mounts, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::sidecar::{self, InjectedNames};

    #[test]
    fn documented_addresses() {
        let table = [
            ("tcp://docker:2375", Some(Transport::Tcp)),
            ("tcp://localhost:2375/", Some(Transport::Tcp)),
            (" tcp://127.0.0.1:2376", Some(Transport::TcpTls)),
            ("tcp://docker:2376", Some(Transport::TcpTls)),
            ("tcp://docker:2377", None),
            ("tcp://dind:2375", None),
            ("tcp://0.0.0.0:2375", None),
            ("unix:///var/run/docker.sock", None),
            ("tcp://docker", None),
            ("", None),
        ];
        for (v, want) in table {
            assert_eq!(documented_transport(v), want, "{v:?}");
        }
    }

    fn pod(envs: &[&[(&str, &str)]]) -> PodSpec {
        PodSpec {
            containers: envs
                .iter()
                .enumerate()
                .map(|(i, env)| Container {
                    name: format!("c{i}"),
                    env: Some(
                        env.iter().map(|(k, v)| EnvVar { name: (*k).into(), value: Some((*v).into()), ..EnvVar::default() }).collect(),
                    ),
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        }
    }

    fn settings(transport: Transport) -> Settings {
        let c = Config::default();
        let (mut s, _) = crate::inject::settings::resolve(None, &BTreeMap::new(), &c, &Default::default());
        s.transport = transport;
        s
    }

    fn listen(spec: &PodSpec, start: Transport, pod_transport: Option<&str>, config: &Config) -> (Transport, Listeners, Vec<String>) {
        let mut s = settings(start);
        let ann: BTreeMap<String, String> = pod_transport.map(|t| (annotations::TRANSPORT.to_owned(), t.to_owned())).into_iter().collect();
        let mut w = Vec::new();
        let all: Vec<usize> = (0..spec.containers.len()).collect();
        let l = plan_listeners(&mut s, spec, &all, Some(&ann), &BTreeMap::new(), config, &mut w);
        (s.transport, l, w)
    }

    #[test]
    fn the_transport_follows_the_jobs_unless_an_annotation_chose() {
        let c = Config::default();
        let plain = pod(&[&[("DOCKER_HOST", "tcp://docker:2375"), ("DOCKER_TLS_CERTDIR", "")]]);
        let (t, l, w) = listen(&plain, Transport::Unix, None, &c);
        assert_eq!(t, Transport::Tcp);
        assert!(w.is_empty() && l.handles("tcp://docker:2375") && l.needs_alias() && !l.extra_plain, "{w:?}");

        let tls = pod(&[&[("DOCKER_HOST", "tcp://docker:2376"), ("DOCKER_TLS_CERTDIR", "/certs")]]);
        assert_eq!(listen(&tls, Transport::Unix, None, &c).0, Transport::TcpTls);

        // The annotation chose unix: plain TCP is served beside the socket, TLS cannot be.
        let (t, l, w) = listen(&plain, Transport::Unix, Some("unix"), &c);
        assert_eq!(t, Transport::Unix);
        assert!(l.extra_plain && w.is_empty(), "{w:?}");
        let (t, l, w) = listen(&tls, Transport::Unix, Some("unix"), &c);
        assert_eq!(t, Transport::Unix);
        assert!(!l.extra_plain && l.handles("tcp://docker:2376"));
        assert!(
            w.len() == 1 && w[0].contains("\"c0\"") && w[0].contains("tcp-tls") && w[0].contains("dind-injector.io/transport"),
            "{w:?}"
        );
    }

    #[test]
    fn mixed_plain_and_tls_serves_tls_and_says_why_not_plain() {
        let both = pod(&[
            &[("DOCKER_HOST", "tcp://docker:2375")],
            &[("DOCKER_HOST", "tcp://localhost:2376")],
            &[("DOCKER_HOST", "tcp://127.0.0.1:2376/")],
        ]);
        let (t, l, w) = listen(&both, Transport::Unix, None, &Config::default());
        assert_eq!(t, Transport::TcpTls);
        assert!(l.handles("tcp://localhost:2376") && l.handles("tcp://127.0.0.1:2376"));
        assert!(w.len() == 1 && w[0].contains("\"c0\"") && w[0].contains("plain TCP and TLS"), "{w:?}");
    }

    #[test]
    fn the_administrators_allowlist_holds() {
        let mut c = Config::default();
        c.overrides.allowed_transports = vec![Transport::Unix];
        let plain = pod(&[&[("DOCKER_HOST", "tcp://docker:2375")]]);
        let (t, l, w) = listen(&plain, Transport::Unix, None, &c);
        assert_eq!(t, Transport::Unix);
        assert!(!l.extra_plain && w.len() == 1 && w[0].contains("overrides.allowedTransports"), "{w:?}");
    }

    #[test]
    fn other_addresses_are_left_to_the_usual_warning() {
        let other = pod(&[&[("DOCKER_HOST", "tcp://dind:2375")]]);
        let (t, l, w) = listen(&other, Transport::Unix, None, &Config::default());
        assert_eq!(t, Transport::Unix);
        assert!(w.is_empty() && !l.handles("tcp://dind:2375"));
    }

    #[test]
    fn extra_plain_listener_is_bound_to_loopback() {
        let mut sidecar = Container { args: Some(vec!["dockerd".into()]), ..Container::default() };
        Listeners { extra_plain: true, ..Listeners::default() }.add_to(&mut sidecar);
        assert_eq!(sidecar.args.unwrap_or_default(), ["dockerd", "--host=tcp://127.0.0.1:2375", "--tls=false"]);
    }

    #[test]
    fn certificates_go_where_the_job_looks() {
        let c = Config::default();
        let names = InjectedNames {
            container: "dind".into(),
            storage: "s".into(),
            daemon_config: "d".into(),
            no_token: "t".into(),
            shared: Some("certs".into()),
            cache: None,
        };
        let storage = crate::inject::storage::plan("20Gi", &PodSpec::default());
        let mode = crate::inject::mode::Mode::of(crate::config::Isolation::Privileged, &c);
        let plan = sidecar::build(&settings(Transport::TcpTls), &mode, &c, &names, 0, None, &storage);
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, bool);
        let table: [Case; 5] = [
            (&[], "/certs/client", false),
            (&[("DOCKER_TLS_CERTDIR", "/tls/")], "/tls/client", false),
            (&[("DOCKER_TLS_CERTDIR", "/tls"), ("DOCKER_CERT_PATH", "/job/certs")], "/job/certs", false),
            (&[("DOCKER_TLS_CERTDIR", "")], "/certs/client", false),
            (&[("DOCKER_CERT_PATH", "certs")], "/certs/client", true),
        ];
        for (env, path, warns) in table {
            let spec = pod(&[env]);
            let (job_env, mounts, w) = job_side(&spec.containers[0], &plan, Transport::TcpTls);
            assert_eq!(
                mounts.iter().find(|m| m.sub_path.as_deref() == Some("client")).map(|m| m.mount_path.as_str()),
                Some(path),
                "{env:?}"
            );
            assert_eq!(mounts.iter().find(|m| m.sub_path.is_some()).and_then(|m| m.read_only), Some(true));
            let cert_env = job_env.iter().find(|e| e.name == "DOCKER_CERT_PATH").and_then(|e| e.value.as_deref());
            assert_eq!(cert_env, Some(path), "{env:?}");
            assert_eq!(w.is_some(), warns, "{env:?}: {w:?}");
        }
    }
}
