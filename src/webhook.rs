//! From an AdmissionReview body to an AdmissionReview answer, with no IO: the server calls this
//! and does the reading, writing, logging and counting.

use k8s_openapi::api::core::v1::Pod;

use crate::admission::{self, AdmissionRequest, AdmissionResponse, ReviewError};
use crate::annotations;
use crate::config::Config;
use crate::config::PolicyMode;
use crate::inject::{self, ClusterInfo, InjectionStatus, Outcome, SkipReason};
use crate::namespace::{NamespaceLookup, NamespaceView};
use crate::pod;
use crate::policy;

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
    /// The policy mode in force (`enforce`, `audit`, `off`), for validating reviews.
    pub policy_mode: &'static str,
    /// The Pod Security level in force, for validating reviews.
    pub policy_level: &'static str,
    /// The control ids and finding labels found, one per violation.
    pub violations: Vec<&'static str>,
}

/// Reviews a Pod CREATE for injection.
pub fn mutate(body: &[u8], ctx: ReviewContext<'_>) -> ReviewOutcome {
    // One pass over the body: the review, and the pod read as the decision reads it (only its
    // metadata when it was injected already: the reinvocation call).
    if let Some(mut request) = admission::decode_pod_review::<pod::ForMutation>(body) {
        let pod = request.object.take().map(|p| Ok(p.0));
        return mutate_request(&request, pod, ctx);
    }
    // Not a review whose object reads as a pod: read again, step by step, to say what is wrong.
    let request = match admission::decode_review(body) {
        Ok(r) => r,
        Err(e) => return bad_request(body, &e),
    };
    let pod = request.object.as_deref().map(|raw| pod::decode(raw.get()).map_err(|e| e.to_string()));
    mutate_request(&request, pod, ctx)
}

/// The answer to a body that is not a usable AdmissionReview: 400 with an AdmissionReview that
/// says why, carrying the uid when it can be found.
pub fn bad_request(body: &[u8], error: &ReviewError) -> ReviewOutcome {
    let uid = admission::recover_uid(body).unwrap_or_default();
    ReviewOutcome {
        http_status: 400,
        body: AdmissionResponse::deny(uid.clone(), 400, format!("dind-injector: {error}")).into_review_json(),
        log: ReviewLog { uid, runner: "-", decision: "error", reason: error.metric_label(), ..ReviewLog::default() },
    }
}

impl ReviewLog {
    /// The facts a request carries before anything is decided: allowed until said otherwise.
    fn begin<O>(request: &AdmissionRequest<O>) -> ReviewLog {
        ReviewLog {
            uid: request.uid.clone(),
            namespace: request.namespace.clone().unwrap_or_default(),
            pod: request.name.clone().unwrap_or_default(),
            operation: request.operation.clone(),
            runner: "-",
            decision: "allowed",
            ..ReviewLog::default()
        }
    }
}

/// `pod` is the request's object read as a pod, or why it could not be read.
fn mutate_request<O>(request: &AdmissionRequest<O>, pod: Option<Result<Pod, String>>, ctx: ReviewContext<'_>) -> ReviewOutcome {
    let mut log = ReviewLog::begin(request);
    let allow = answer;

    if !request.is_pod() || request.sub_resource.is_some() {
        log.reason = "not-a-pod";
        return allow(log, AdmissionResponse::allow(&request.uid));
    }
    if request.operation != "CREATE" {
        log.reason = "not-a-create";
        return allow(log, AdmissionResponse::allow(&request.uid));
    }
    let pod: Pod = match pod {
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
    if already_injected(&pod) {
        // The apiserver calls again after its own plugins changed the injected pod (the
        // ServiceAccount plugin re-runs): no patch, and no namespace lookup or decision.
        log.decision = "skipped";
        log.reason = SkipReason::AlreadyInjected.label();
        if log.pod.is_empty() {
            log.pod = pod_display_name(&pod);
        }
        if log.namespace.is_empty() {
            log.namespace = pod.metadata.namespace.clone().unwrap_or_default();
        }
        return allow(log, AdmissionResponse::allow(&request.uid));
    }
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
    display_name(pod.metadata.name.as_deref(), pod.metadata.generate_name.as_deref())
}

fn display_name(name: Option<&str>, generate_name: Option<&str>) -> String {
    match (name, generate_name) {
        (Some(n), _) if !n.is_empty() => n.to_owned(),
        (_, Some(g)) => format!("{g}*"),
        _ => String::new(),
    }
}

/// Whether the pod carries a status record dind-injector wrote: it was injected on an earlier
/// call and must get no patch now.
fn already_injected(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::STATUS))
        .is_some_and(|status| InjectionStatus::parse(status).is_some())
}

/// Reviews a Pod CREATE or UPDATE, or a `pods/ephemeralcontainers` update, against the
/// namespace's Pod Security level with the injected sidecar exempt.
pub fn validate(body: &[u8], ctx: ReviewContext<'_>) -> ReviewOutcome {
    // One pass over the body, as in `mutate`; an UPDATE of the pod itself compares the old and
    // new spec as JSON, so it takes the path that keeps the object raw.
    if let Some(mut request) = admission::decode_pod_review::<pod::Decoded>(body)
        && !(request.operation == "UPDATE" && request.sub_resource.is_none())
    {
        let pod = request.object.take().map(|p| Ok(p.0));
        return validate_request(&request, None, pod, ctx);
    }
    let request = match admission::decode_review(body) {
        Ok(r) => r,
        Err(e) => return bad_request(body, &e),
    };
    let pod = request.object.as_deref().map(|raw| pod::decode(raw.get()).map_err(|e| e.to_string()));
    validate_request(&request, request.object.as_deref(), pod, ctx)
}

fn answer(log: ReviewLog, response: AdmissionResponse) -> ReviewOutcome {
    ReviewOutcome { http_status: 200, log: ReviewLog { warnings: response.warnings.len(), ..log }, body: response.into_review_json() }
}

/// `raw_object` is the object as JSON when an UPDATE must be compared with the old one; `pod` is
/// the object read as a pod, or why it could not be read.
fn validate_request<O>(
    request: &AdmissionRequest<O>,
    raw_object: Option<&serde_json::value::RawValue>,
    pod: Option<Result<Pod, String>>,
    ctx: ReviewContext<'_>,
) -> ReviewOutcome {
    let mut log = ReviewLog::begin(request);
    let allow = AdmissionResponse::allow(&request.uid);
    if !request.is_pod() {
        log.reason = "not-a-pod";
        return answer(log, allow);
    }
    match (request.operation.as_str(), request.sub_resource.as_deref()) {
        ("CREATE", None) | ("UPDATE", Some("ephemeralcontainers")) => {}
        ("UPDATE", None) => {
            let spec = |raw: Option<&serde_json::value::RawValue>| {
                raw.and_then(|r| serde_json::from_str::<serde_json::Value>(r.get()).ok()).map(|v| v["spec"].clone())
            };
            if spec(raw_object) == spec(request.old_object.as_deref()) {
                log.reason = "spec-unchanged";
                return answer(log, allow);
            }
        }
        _ => {
            log.reason = "not-checked";
            return answer(log, allow);
        }
    }
    let pod: Pod = match pod {
        Some(Ok(pod)) => pod,
        Some(Err(e)) => {
            log.decision = "denied";
            log.reason = "unreadable-pod";
            let m = format!("dind-injector: the pod could not be read for the Pod Security check ({e})");
            return answer(log, AdmissionResponse::deny(&request.uid, 400, m));
        }
        None => {
            log.reason = "no-object";
            return answer(log, allow);
        }
    };
    if log.pod.is_empty() {
        log.pod = pod_display_name(&pod);
    }
    if log.namespace.is_empty() {
        log.namespace = pod.metadata.namespace.clone().unwrap_or_default();
    }
    let mut warnings = Vec::new();
    let namespace = ctx.namespaces.get(&log.namespace).unwrap_or_else(|| {
        // Only opted-in namespaces are sent (the webhook's namespaceSelector), so a namespace
        // the cache has not seen yet is checked with the cluster defaults rather than let through.
        warnings.push(format!(
            "dind-injector: namespace {:?} is not in the injector's cache yet; checked with the cluster's default policy",
            log.namespace
        ));
        NamespaceView::new(
            log.namespace.clone(),
            [(annotations::INJECTION_LABEL.to_owned(), annotations::INJECTION_ENABLED.to_owned())].into(),
            Default::default(),
        )
    });
    if !namespace.is_opted_in() {
        log.reason = "namespace-not-opted-in";
        return answer(log, allow);
    }
    let verdict = policy::validate_pod(&pod, &namespace, ctx.config, ctx.cluster);
    log.runner = inject::runner::runner_of(&pod).0.as_str();
    log.policy_mode = verdict.mode.as_str();
    log.policy_level = verdict.level.as_str();
    log.violations = verdict.findings.iter().map(|f| f.label).chain(verdict.violations.iter().map(|v| v.control.id())).collect();
    warnings.extend(verdict.warnings.iter().cloned());
    if verdict.mode == PolicyMode::Off {
        log.reason = "policy-off";
        return answer(log, allow.with_warnings(warnings));
    }
    if verdict.is_clean() {
        log.reason = "compliant";
        return answer(log, allow.with_warnings(warnings));
    }
    match verdict.mode {
        PolicyMode::Enforce => {
            log.decision = "denied";
            log.reason = "violations";
            let message = verdict.denial(&log.pod, &log.namespace);
            answer(log, AdmissionResponse::deny(&request.uid, 403, message).with_warnings(warnings))
        }
        _ => {
            log.reason = "violations-audited";
            warnings.extend(verdict.lines().into_iter().map(|l| format!("dind-injector audit ({}): {l}", verdict.level.as_str())));
            let mut response = allow.with_warnings(warnings);
            response.audit_annotations = policy::audit_annotations(&verdict);
            answer(log, response)
        }
    }
}
