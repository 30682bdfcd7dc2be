//! From an AdmissionReview body to an AdmissionReview answer, with no IO: the server calls this
//! and does the reading, writing, logging and counting.

use k8s_openapi::api::core::v1::Pod;

use crate::admission::{self, AdmissionRequest, AdmissionResponse, ReviewError};
use crate::config::Config;
use crate::inject::{self, ClusterInfo, Outcome};
use crate::namespace::NamespaceLookup;

/// What a review needs besides its body.
#[derive(Clone, Copy)]
pub struct ReviewContext<'a> {
    /// The configuration in force.
    pub config: &'a Config,
    /// Where namespaces are looked up.
    pub namespaces: &'a dyn NamespaceLookup,
    /// What is known about the cluster.
    pub cluster: &'a ClusterInfo,
}

/// The answer to one review, and what the log line and metrics need to know about it.
#[derive(Debug)]
pub struct ReviewOutcome {
    /// The HTTP status to answer with.
    pub http_status: u16,
    /// The AdmissionReview JSON.
    pub body: Vec<u8>,
    /// The facts for the log line and the metrics.
    pub log: ReviewLog,
}

/// The facts about one review that are logged and counted. Nothing secret: names and labels only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewLog {
    /// The request uid (empty when the body had none).
    pub uid: String,
    /// The namespace.
    pub namespace: String,
    /// The pod's name, or its `generateName` followed by `*`.
    pub pod: String,
    /// The operation (CREATE, UPDATE, …).
    pub operation: String,
    /// The CI runner recognised (`gitlab`, `buildkite`, `harness`, `generic`), or `-`.
    pub runner: &'static str,
    /// `injected`, `skipped`, `allowed`, `denied` or `error`.
    pub decision: &'static str,
    /// A stable label for the reason (`not-annotated`, `own-dind`, `not-json`, …).
    pub reason: &'static str,
    /// How many warnings the answer carries.
    pub warnings: usize,
}

/// Reviews a Pod CREATE for injection.
pub fn mutate(body: &[u8], ctx: ReviewContext<'_>) -> ReviewOutcome {
    let request = match admission::decode_review(body) {
        Ok(r) => r,
        Err(e) => return bad_request(body, &e),
    };
    mutate_request(&request, ctx)
}

/// The answer to a body that is not a usable AdmissionReview: 400 with an AdmissionReview that
/// says why, carrying the uid when it can be found.
pub fn bad_request(body: &[u8], error: &ReviewError) -> ReviewOutcome {
    let uid = admission::recover_uid(body).unwrap_or_default();
    ReviewOutcome {
        http_status: 400,
        body: AdmissionResponse::deny(uid.clone(), 400, format!("dind-injector: {error}")).into_review_json(),
        log: ReviewLog {
            uid,
            runner: "-",
            decision: "error",
            reason: error.metric_label(),
            ..ReviewLog::default()
        },
    }
}

fn mutate_request(request: &AdmissionRequest, ctx: ReviewContext<'_>) -> ReviewOutcome {
    let mut log = ReviewLog {
        uid: request.uid.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        pod: request.name.clone().unwrap_or_default(),
        operation: request.operation.clone(),
        runner: "-",
        decision: "allowed",
        reason: "",
        warnings: 0,
    };
    let allow = |log: ReviewLog, response: AdmissionResponse| ReviewOutcome {
        http_status: 200,
        log: ReviewLog {
            warnings: response.warnings.len(),
            ..log
        },
        body: response.into_review_json(),
    };

    if !request.is_pod() || request.sub_resource.is_some() {
        log.reason = "not-a-pod";
        return allow(log, AdmissionResponse::allow(&request.uid));
    }
    if request.operation != "CREATE" {
        log.reason = "not-a-create";
        return allow(log, AdmissionResponse::allow(&request.uid));
    }
    let pod: Pod = match request.object.as_deref().map(|raw| serde_json::from_str(raw.get())) {
        Some(Ok(pod)) => pod,
        Some(Err(e)) => {
            log.decision = "skipped";
            log.reason = "unreadable-pod";
            let w = format!("dind-injector: the pod could not be read ({e}); no Docker daemon was injected");
            return allow(log, AdmissionResponse::allow(&request.uid).with_warnings(vec![w]));
        }
        None => {
            log.decision = "skipped";
            log.reason = "no-object";
            return allow(log, AdmissionResponse::allow(&request.uid));
        }
    };
    if log.pod.is_empty() {
        log.pod = pod_display_name(&pod);
    }
    if log.namespace.is_empty() {
        log.namespace = pod.metadata.namespace.clone().unwrap_or_default();
    }
    let Some(namespace) = ctx.namespaces.get(&log.namespace) else {
        log.decision = "skipped";
        log.reason = "namespace-unknown";
        let w = format!(
            "dind-injector: namespace {:?} is not in the injector's cache yet; no Docker daemon was injected. Recreate the pod in a few seconds",
            log.namespace
        );
        return allow(log, AdmissionResponse::allow(&request.uid).with_warnings(vec![w]));
    };

    let decision = inject::plan_injection(&pod, &namespace, ctx.config, ctx.cluster);
    log.runner = decision.runner.as_str();
    let response = AdmissionResponse::allow(&request.uid);
    let response = match &decision.outcome {
        Outcome::Inject(injection) => {
            log.decision = "injected";
            log.reason = "injected";
            response.with_patch(&injection.patch)
        }
        Outcome::Skip(reason) => {
            log.decision = "skipped";
            log.reason = reason.label();
            response
        }
    };
    allow(log, response.with_warnings(decision.warnings))
}

/// The pod's name, or `generateName*` when the name is not chosen yet.
pub fn pod_display_name(pod: &Pod) -> String {
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(g)) => format!("{g}*"),
        _ => String::new(),
    }
}
