//! The sidecar itself: container, volumes, and what job containers get to reach it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, ExecAction, HostPathVolumeSource, Lifecycle, LifecycleHandler, Probe,
    ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use crate::config::{Config, Mtu, SidecarMode, Transport};
use crate::image::ImageRef;

use super::cache::{CACHE_MOUNT, CachePlan};
use super::mode::Mode;
use super::settings::Settings;
use super::shell::shell_quote;
use super::storage::{EPHEMERAL_STORAGE, StoragePlan};

/// The plain-TCP port, bound to 127.0.0.1 only.
pub const TCP_PORT: u16 = 2375;
/// The TLS port, bound to 127.0.0.1 only.
pub const TLS_PORT: u16 = 2376;
/// Where the apiserver's ServiceAccount admission mounts the pod's API token into every container
/// that has nothing mounted there yet.
pub const SERVICE_ACCOUNT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The daemon's socket in its own filesystem, where `docker run -v /var/run/docker.sock:...`
/// looks for it; not shared with any other container.
pub const OWN_SOCKET: &str = "unix:///var/run/docker.sock";
/// The first Docker major version whose dockerd knows `--default-network-opt`.
pub const DEFAULT_NETWORK_OPT_SINCE: u32 = 24;

/// Names of everything injected, already made unique against the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedNames {
    /// The sidecar container.
    pub container: String,
    /// `/var/lib/docker`.
    pub storage: String,
    /// `/etc/docker` (the daemon.json ConfigMap).
    pub daemon_config: String,
    /// The empty directory over the service-account token path, so the apiserver mounts no
    /// Kubernetes API token into the daemon.
    pub no_token: String,
    /// The socket directory (`unix`) or certificate directory (`tcp-tls`); none for `tcp`.
    pub shared: Option<String>,
    /// The node's cache directory of the pod's scope (a hostPath), when the cache is on.
    pub cache: Option<String>,
}

/// What one injection adds.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarPlan {
    /// The sidecar container.
    pub container: Container,
    /// The volumes it needs.
    pub volumes: Vec<Volume>,
    /// The environment each job container gets (each variable only if not set already).
    pub job_env: Vec<EnvVar>,
    /// The mounts each job container gets.
    pub job_mounts: Vec<VolumeMount>,
}

/// The `DOCKER_HOST` job containers get.
pub fn docker_host(transport: Transport, config: &Config) -> String {
    match transport {
        Transport::Unix => format!("unix://{}/docker.sock", config.sidecar.socket_dir),
        Transport::Tcp => format!("tcp://127.0.0.1:{TCP_PORT}"),
        Transport::TcpTls => format!("tcp://127.0.0.1:{TLS_PORT}"),
    }
}

/// Whether a user's `DOCKER_HOST` reaches the injected daemon (the `docker` host alias and
/// `localhost` resolve to 127.0.0.1 in the pod).
pub fn points_at_injected_daemon(value: &str, transport: Transport, config: &Config) -> bool {
    let value = value.trim().trim_end_matches('/');
    if value == docker_host(transport, config) {
        return true;
    }
    let port = match transport {
        Transport::Unix => return false,
        Transport::Tcp => TCP_PORT,
        Transport::TcpTls => TLS_PORT,
    };
    ["127.0.0.1", "localhost", "docker"].iter().any(|h| value == format!("tcp://{h}:{port}"))
}

/// Builds the sidecar for `settings` with `names`; `socket_group` owns the Unix socket; `cache`
/// is the node cache the daemon may take a slot of.
pub fn build(
    settings: &Settings,
    mode: &Mode,
    config: &Config,
    names: &InjectedNames,
    socket_group: u32,
    cache: Option<&CachePlan>,
    storage: &StoragePlan,
) -> SidecarPlan {
    let sc = &config.sidecar;
    let transport = settings.transport;
    let docker_major = ImageRef::parse(&settings.image).ok().and_then(|r| r.docker_major());
    let network_opt = docker_major.is_none_or(|m| m >= DEFAULT_NETWORK_OPT_SINCE);
    // Kata: the emptyDir is virtio-fs in the VM, which overlayfs cannot use (isolation.rs). An
    // unparsable storage never gets here (the configuration and the override are checked).
    let kata_disk = mode.loop_disk.then(|| super::isolation::kata_disk_bytes(storage.data_root_bytes()));

    let mut args = vec!["dockerd".to_owned(), format!("--host={}", docker_host(transport, config))];
    if docker_host(transport, config) != OWN_SOCKET {
        // The daemon's own socket, private to the sidecar: `-v /var/run/docker.sock:...` works.
        args.push(format!("--host={OWN_SOCKET}"));
    }
    match transport {
        Transport::Unix => args.push(format!("--group={socket_group}")),
        Transport::Tcp => args.push("--tls=false".to_owned()),
        Transport::TcpTls => {
            let d = &sc.cert_dir;
            args.push("--tlsverify".to_owned());
            args.push(format!("--tlscacert={d}/server/ca.pem"));
            args.push(format!("--tlscert={d}/server/cert.pem"));
            args.push(format!("--tlskey={d}/server/key.pem"));
        }
    }
    if let Mtu::Fixed(mtu) = settings.mtu {
        args.push(format!("--mtu={mtu}"));
        if network_opt {
            args.push(format!("--default-network-opt=bridge=com.docker.network.driver.mtu={mtu}"));
        }
    }

    let mut mounts = vec![
        mount(&names.storage, "/var/lib/docker", false),
        mount(&names.daemon_config, "/etc/docker", true),
        // The apiserver re-runs its ServiceAccount admission after this webhook and would mount
        // the pod's API token here; an empty read-only directory keeps the privileged daemon, and
        // every container it runs, without Kubernetes credentials. It has no sizeLimit: it stays
        // empty, and an empty directory still measures a block, more than any tiny limit
        // (storage.rs).
        mount(&names.no_token, SERVICE_ACCOUNT_TOKEN_PATH, true),
    ];
    let mut volumes = vec![
        Volume {
            name: names.storage.clone(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(K8sQuantity(storage.data_root.clone())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: names.daemon_config.clone(),
            config_map: Some(ConfigMapVolumeSource {
                name: sc.daemon_config_map.clone(),
                optional: Some(true),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume { name: names.no_token.clone(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
    ];
    if let (Some(plan), Some(volume)) = (cache, &names.cache) {
        mounts.push(mount(volume, CACHE_MOUNT, false));
        volumes.push(Volume {
            name: volume.clone(),
            host_path: Some(HostPathVolumeSource { path: plan.host_path.clone(), type_: Some("DirectoryOrCreate".to_owned()) }),
            ..Volume::default()
        });
    }
    let mut job_env = vec![env("DOCKER_HOST", &docker_host(transport, config))];
    let mut job_mounts = Vec::new();
    if let Some(shared) = &names.shared {
        volumes.push(Volume { name: shared.clone(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() });
        match transport {
            Transport::Unix => {
                mounts.push(mount(shared, &sc.socket_dir, false));
                job_mounts.push(mount(shared, &sc.socket_dir, false));
            }
            Transport::TcpTls => {
                mounts.push(mount(shared, &sc.cert_dir, false));
                job_mounts
                    .push(VolumeMount { sub_path: Some("client".to_owned()), ..mount(shared, &format!("{}/client", sc.cert_dir), true) });
                job_env.push(env("DOCKER_TLS_VERIFY", "1"));
                job_env.push(env("DOCKER_CERT_PATH", &format!("{}/client", sc.cert_dir)));
            }
            Transport::Tcp => {}
        }
    }

    let probe_command = probe_command(transport, config);
    let timeout_secs = i32::try_from(sc.startup_timeout.0.as_secs().max(1)).unwrap_or(i32::MAX);
    let startup_probe = Probe {
        exec: Some(ExecAction { command: Some(probe_command.clone()) }),
        period_seconds: Some(1),
        timeout_seconds: Some(5),
        failure_threshold: Some(timeout_secs),
        success_threshold: Some(1),
        ..Probe::default()
    };

    let mut requests = BTreeMap::from([
        ("cpu".to_owned(), K8sQuantity(settings.cpu.clone())),
        ("memory".to_owned(), K8sQuantity(settings.memory.clone())),
        (EPHEMERAL_STORAGE.to_owned(), K8sQuantity(storage.request.clone())),
    ]);
    let mut limits: BTreeMap<String, K8sQuantity> =
        storage.limit.iter().map(|l| (EPHEMERAL_STORAGE.to_owned(), K8sQuantity(l.clone()))).collect();
    if let Some(l) = &settings.cpu_limit {
        limits.insert("cpu".to_owned(), K8sQuantity(l.clone()));
    }
    if let Some(l) = &settings.memory_limit {
        limits.insert("memory".to_owned(), K8sQuantity(l.clone()));
    }
    requests.retain(|_, q| !q.0.is_empty());

    let (restart_policy, lifecycle) = match settings.mode {
        SidecarMode::Container => (None, Some(hold_until_ready(&probe_command, timeout_secs))),
        _ => (Some("Always".to_owned()), None),
    };

    let container = Container {
        name: names.container.clone(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(sc.image_pull_policy.clone()),
        command: Some(vec![
            "/bin/sh".to_owned(),
            "-ec".to_owned(),
            startup_script(transport, settings.mtu, &sc.cert_dir, network_opt, cache, kata_disk, mode.cgroup_probe),
            "dind-injector".to_owned(),
        ]),
        args: Some(args),
        // Empty: the image's entrypoint makes no certificates and adds no listener of its own. Written
        // without a value, as the apiserver stores an empty one.
        env: Some(vec![EnvVar { name: "DOCKER_TLS_CERTDIR".to_owned(), ..EnvVar::default() }]),
        // An empty map is not stored (omitempty), so it is not written.
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: (!limits.is_empty()).then_some(limits),
            ..ResourceRequirements::default()
        }),
        // The mode's (mode.rs): privileged on the node or inside the Kata VM; under Sysbox root in
        // the pod's user namespace with no capability added; under userns the same plus SYS_ADMIN,
        // NET_ADMIN, an unmasked /proc and the configured seccomp profile.
        security_context: Some(mode.security_context()),
        volume_mounts: Some(mounts),
        startup_probe: Some(startup_probe),
        restart_policy,
        lifecycle,
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };
    SidecarPlan { container, volumes, job_env, job_mounts }
}

/// `docker info` against the injected daemon, with every connection flag explicit.
pub fn probe_command(transport: Transport, config: &Config) -> Vec<String> {
    let mut cmd = vec!["docker".to_owned(), format!("--host={}", docker_host(transport, config))];
    if transport == Transport::TcpTls {
        let d = format!("{}/client", config.sidecar.cert_dir);
        cmd.push("--tlsverify".to_owned());
        cmd.push(format!("--tlscacert={d}/ca.pem"));
        cmd.push(format!("--tlscert={d}/cert.pem"));
        cmd.push(format!("--tlskey={d}/key.pem"));
    }
    cmd.push("info".to_owned());
    cmd
}

/// In `container` mode the sidecar comes first and its postStart hook blocks until dockerd
/// answers: the kubelet starts the next container only once a postStart hook returns.
fn hold_until_ready(probe: &[String], timeout_secs: i32) -> Lifecycle {
    let probe = probe.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
    let script = format!(
        "i=0; until {probe} >/dev/null 2>&1; do i=$((i+1)); if [ \"$i\" -ge {timeout_secs} ]; then echo 'dind-injector: dockerd did not answer within {timeout_secs}s' >&2; exit 1; fi; sleep 1; done"
    );
    Lifecycle {
        post_start: Some(LifecycleHandler {
            exec: Some(ExecAction { command: Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), script]) }),
            ..LifecycleHandler::default()
        }),
        ..Lifecycle::default()
    }
}

/// The sidecar's shell wrapper. The dockerd arguments stay in `args` where anyone can read them;
/// the script only prepares TLS certificates and the MTU, then hands over to the image's
/// entrypoint with `dockerd` first, so the entrypoint never adds its own `0.0.0.0` listener.
pub fn startup_script(
    transport: Transport,
    mtu: Mtu,
    cert_dir: &str,
    network_opt: bool,
    cache: Option<&CachePlan>,
    kata_disk: Option<u64>,
    cgroup_probe: bool,
) -> String {
    let mut s = String::from("# dind-injector: prepare, then start dockerd with the arguments below.\n");
    if let Some(plan) = cache {
        s.push_str(&super::cache::slot_script(plan));
    }
    if let Some(bytes) = kata_disk {
        s.push_str(&super::isolation::kata_disk_script(bytes));
    }
    if transport == Transport::TcpTls {
        // The image's entrypoint generates certificates only when it also adds a 0.0.0.0
        // listener, so they are made here: ECDSA P-256, valid for 127.0.0.1, docker and localhost.
        // The CA key is deleted once both certificates are signed: nothing else can be issued.
        s.push_str(&format!(
            r#"d={dir}
if [ ! -s "$d/server/cert.pem" ] || [ ! -s "$d/client/cert.pem" ]; then
  mkdir -p "$d/ca" "$d/server" "$d/client"
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/ca/key.pem"
  openssl req -new -x509 -days 825 -key "$d/ca/key.pem" -subj "/CN=dind-injector CA" -out "$d/ca/cert.pem"
  for who in server client; do
    openssl ecparam -name prime256v1 -genkey -noout -out "$d/$who/key.pem"
    openssl req -new -key "$d/$who/key.pem" -subj "/CN=docker:dind $who" -out "$d/$who/csr.pem"
  done
  printf 'subjectAltName=IP:127.0.0.1,DNS:docker,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$d/server/ext.cnf"
  printf 'extendedKeyUsage=clientAuth\n' > "$d/client/ext.cnf"
  for who in server client; do
    openssl x509 -req -days 825 -in "$d/$who/csr.pem" -CA "$d/ca/cert.pem" -CAkey "$d/ca/key.pem" -CAcreateserial -extfile "$d/$who/ext.cnf" -out "$d/$who/cert.pem"
    cp "$d/ca/cert.pem" "$d/$who/ca.pem"
    rm -f "$d/$who/csr.pem" "$d/$who/ext.cnf"
  done
  chmod 0644 "$d/client/key.pem"
  rm -f "$d/ca/key.pem"
fi
"#,
            dir = shell_quote(cert_dir)
        ));
    }
    if mtu == Mtu::Auto {
        s.push_str("if mtu=$(cat /sys/class/net/eth0/mtu 2>/dev/null) && [ -n \"$mtu\" ]; then\n  set -- \"$@\" \"--mtu=$mtu\"");
        if network_opt {
            s.push_str(" \"--default-network-opt=bridge=com.docker.network.driver.mtu=$mtu\"");
        }
        s.push_str("\nfi\n");
    }
    if cgroup_probe {
        s.push_str(USERNS_CGROUP_SCRIPT);
    }
    s.push_str("exec dockerd-entrypoint.sh \"$@\"\n");
    s
}

/// The `userns` sidecar's choice of cgroup mode, made from what it can actually do: with a
/// writable, delegated cgroup v2 (a runtime handler with `cgroup_writable`) dockerd runs as it is
/// and applies each container's limits; otherwise it runs `--rootless` (the same binary; no
/// cgroup writes, so inner `--memory`/`--cpus` are accepted but not applied, while the pod's own
/// limits still cap the total). One log line says which, and why.
///
/// On cgroup v2 the image's `dind` wrapper writes the cgroup (it moves every process into a child
/// group to enable controllers) and, under `set -e`, exits where it cannot; there the script does
/// what else the entrypoint and wrapper do (stale pid files, shared mount propagation, a private
/// /tmp) and starts dockerd under `docker-init` itself.
pub const USERNS_CGROUP_SCRIPT: &str = r#"c=/sys/fs/cgroup
if [ -f "$c/cgroup.controllers" ] && [ -w "$c/cgroup.subtree_control" ] && mkdir "$c/dind-injector-probe" 2>/dev/null; then
  rmdir "$c/dind-injector-probe" 2>/dev/null || :
  echo "dind-injector userns: the pod's cgroup is writable and delegated: dockerd runs as it is, and inner --memory/--cpus apply" >&2
else
  set -- "$@" --rootless
  echo "dind-injector userns: the pod's cgroup is not writable here, so dockerd runs --rootless: inner --memory/--cpus are accepted but NOT applied; the pod's own limits still hold" >&2
  if [ -f "$c/cgroup.controllers" ]; then
    find /run /var/run -iname 'docker*.pid' -delete 2>/dev/null || :
    mount --make-rshared / 2>/dev/null || :
    mountpoint -q /tmp || mount -t tmpfs none /tmp
    exec docker-init -- "$@"
  fi
fi
"#;

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.to_owned()), ..EnvVar::default() }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount { name: volume.to_owned(), mount_path: path.to_owned(), read_only: read_only.then_some(true), ..VolumeMount::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_docker_hosts_that_reach_the_daemon() {
        let c = Config::default();
        assert!(points_at_injected_daemon("unix:///var/run/dind/docker.sock", Transport::Unix, &c));
        assert!(!points_at_injected_daemon("tcp://docker:2375", Transport::Unix, &c));
        assert!(points_at_injected_daemon("tcp://docker:2376", Transport::TcpTls, &c));
        assert!(points_at_injected_daemon("tcp://localhost:2375/", Transport::Tcp, &c));
        assert!(!points_at_injected_daemon("tcp://docker:2376", Transport::Tcp, &c));
    }

    #[test]
    fn script_never_starts_dockerd_without_explicit_arguments() {
        for t in [Transport::Unix, Transport::Tcp, Transport::TcpTls] {
            for mtu in [Mtu::Auto, Mtu::Fixed(1400)] {
                let s = startup_script(t, mtu, "/certs", true, None, None, false);
                assert!(s.ends_with("exec dockerd-entrypoint.sh \"$@\"\n"), "{s}");
                assert!(!s.contains("0.0.0.0"));
            }
        }
        assert!(!startup_script(Transport::Unix, Mtu::Auto, "/certs", false, None, None, false).contains("default-network-opt"));
        let userns = startup_script(Transport::Unix, Mtu::Auto, "/certs", true, None, None, true);
        assert!(userns.contains("set -- \"$@\" --rootless") && userns.ends_with("exec dockerd-entrypoint.sh \"$@\"\n"), "{userns}");
    }
}
