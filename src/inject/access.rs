//! Who may open the Unix socket: dockerd creates it `root:<group>` mode 0660, so a job container
//! running as a non-root user needs that group. Without a pod `fsGroup` (which every container
//! gets) or `sidecar.socketGroup`, a group the non-root job containers all have is chosen: their
//! `runAsGroup`, or one of the pod's `supplementalGroups`. When there is none, the response says
//! which line to add.

use k8s_openapi::api::core::v1::{Container, PodSecurityContext, PodSpec};

use crate::config::{Config, Transport};

/// A job container that runs as a non-root user, and the groups it is known to have.
struct NonRoot<'a> {
    name: &'a str,
    user: Option<i64>,
    run_as_group: Option<i64>,
}

fn non_root<'a>(c: &'a Container, pod: Option<&PodSecurityContext>) -> Option<NonRoot<'a>> {
    let sc = c.security_context.as_ref();
    let user = sc.and_then(|s| s.run_as_user).or(pod.and_then(|p| p.run_as_user));
    let non_root_required = sc.and_then(|s| s.run_as_non_root).or(pod.and_then(|p| p.run_as_non_root)) == Some(true);
    let is_non_root = match user {
        Some(u) => u != 0,
        None => non_root_required,
    };
    is_non_root.then(|| NonRoot { name: &c.name, user, run_as_group: sc.and_then(|s| s.run_as_group).or(pod.and_then(|p| p.run_as_group)) })
}

/// The socket's group for a pod without `fsGroup` and a cluster without `sidecar.socketGroup`:
/// a group every non-root job container in `targets` has, else root (0) with a warning for the
/// `unix` transport.
pub fn socket_group(spec: &PodSpec, targets: &[usize], transport: Transport, config: &Config, warnings: &mut Vec<String>) -> u32 {
    let pod = spec.security_context.as_ref();
    let supplemental: Vec<i64> = pod.and_then(|p| p.supplemental_groups.clone()).unwrap_or_default();
    let jobs: Vec<NonRoot> = targets.iter().filter_map(|&i| spec.containers.get(i)).filter_map(|c| non_root(c, pod)).collect();
    if jobs.is_empty() {
        return 0;
    }
    let has = |j: &NonRoot, g: i64| j.run_as_group == Some(g) || supplemental.contains(&g);
    let candidates = jobs.iter().filter_map(|j| j.run_as_group).chain(supplemental.iter().copied());
    let common = candidates.filter(|&g| jobs.iter().all(|j| has(j, g))).find_map(|g| u32::try_from(g).ok());
    if let Some(g) = common {
        return g;
    }
    if transport == Transport::Unix {
        for j in &jobs {
            let gid = j.run_as_group.or(j.user).filter(|g| *g > 0);
            let fix = match gid {
                Some(g) => format!("add `fsGroup: {g}` to the pod's spec.securityContext"),
                None => "add `fsGroup: <a group id>` to the pod's spec.securityContext".to_owned(),
            };
            warnings.push(format!(
                "dind-injector: container {:?} runs as non-root user {} with no group that can open the Docker socket {}/docker.sock (root-owned, mode 0660): the pod has no fsGroup, and no runAsGroup or supplementalGroups common to the job containers. {fix} (or set sidecar.socketGroup in the cluster configuration)",
                j.name,
                j.user.map_or_else(|| "(from the image)".to_owned(), |u| u.to_string()),
                config.sidecar.socket_dir,
            ));
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::SecurityContext;

    fn job(name: &str, user: Option<i64>, group: Option<i64>, non_root: Option<bool>) -> Container {
        Container {
            name: name.into(),
            security_context: Some(SecurityContext {
                run_as_user: user,
                run_as_group: group,
                run_as_non_root: non_root,
                ..SecurityContext::default()
            }),
            ..Container::default()
        }
    }

    fn spec(containers: Vec<Container>, pod: PodSecurityContext) -> PodSpec {
        PodSpec { containers, security_context: Some(pod), ..PodSpec::default() }
    }

    #[test]
    fn a_group_the_job_has_is_chosen_or_the_fix_is_named() {
        let c = Config::default();
        let none = PodSecurityContext::default();
        let supp = PodSecurityContext { supplemental_groups: Some(vec![4000]), ..PodSecurityContext::default() };
        let pod_group = PodSecurityContext { run_as_user: Some(1000), run_as_group: Some(3000), ..PodSecurityContext::default() };
        #[allow(clippy::type_complexity)]
        let table: Vec<(Vec<Container>, PodSecurityContext, u32, usize)> = vec![
            (vec![job("build", None, None, None)], none.clone(), 0, 0),
            (vec![job("build", Some(0), None, None)], none.clone(), 0, 0),
            (vec![job("build", Some(1000), Some(1000), None)], none.clone(), 1000, 0),
            (vec![job("build", Some(1000), None, None)], supp.clone(), 4000, 0),
            (vec![job("build", Some(1000), Some(1000), None), job("svc", Some(1001), Some(1001), None)], supp, 4000, 0),
            (vec![job("build", None, None, None)], pod_group, 3000, 0),
            (vec![job("build", Some(1000), None, None)], none.clone(), 0, 1),
            (vec![job("build", None, None, Some(true))], none.clone(), 0, 1),
            (vec![job("build", Some(1000), Some(1000), None), job("svc", Some(1001), Some(1001), None)], none, 0, 2),
        ];
        for (i, (containers, pod, want, warns)) in table.into_iter().enumerate() {
            let s = spec(containers, pod);
            let all: Vec<usize> = (0..s.containers.len()).collect();
            let mut w = Vec::new();
            assert_eq!(socket_group(&s, &all, Transport::Unix, &c, &mut w), want, "case {i}");
            assert_eq!(w.len(), warns, "case {i}: {w:?}");
            let mut quiet = Vec::new();
            socket_group(&s, &all, Transport::Tcp, &c, &mut quiet);
            assert!(quiet.is_empty(), "case {i}: no socket, no warning");
        }
        let s = spec(vec![job("build", Some(1000), None, None)], PodSecurityContext::default());
        let mut w = Vec::new();
        socket_group(&s, &[0], Transport::Unix, &c, &mut w);
        assert!(w[0].contains("\"build\"") && w[0].contains("fsGroup: 1000") && w[0].contains("spec.securityContext"), "{}", w[0]);
    }
}
