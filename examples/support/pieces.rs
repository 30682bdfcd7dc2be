//! What the step-by-step examples (`review_stages`, `alloc_by_pod_size --stages`) start from:
//! a review's pod read as each step reads it, the injector's decision on it, and the review as the
//! apiserver sends it after the injection (the patch applied: the reinvocation call's and
//! `/validate`'s body). Included with `#[path = "support/pieces.rs"] mod pieces;`.

use dind_injector::admission;
use dind_injector::config::Config;
use dind_injector::inject::{self, ClusterInfo, Decision, Injection, Outcome};
use dind_injector::namespace::NamespaceView;
use dind_injector::pod;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

/// One review taken apart.
pub struct Pieces {
    /// The pod as raw JSON (what `pod::decode` reads).
    pub raw: String,
    /// The pod decoded (what `plan_injection` reads).
    pub pod: Pod,
    /// The decision on it.
    pub decision: Decision,
    /// The injection the decision makes.
    pub injection: Injection,
    /// The review with the patch applied, compact JSON.
    pub injected: Vec<u8>,
}

/// Takes `body` (a review the injector injects) apart; an error when it is not injected.
pub fn pieces(body: &[u8], view: &NamespaceView, config: &Config, cluster: &ClusterInfo) -> Result<Pieces, String> {
    let request = admission::decode_review(body).map_err(|e| e.to_string())?;
    let raw = request.object.as_deref().map(|r| r.get().to_owned()).unwrap_or_default();
    let pod = pod::decode(&raw).map_err(|e| e.to_string())?;
    let decision = inject::plan_injection(&pod, view, config, cluster);
    let Outcome::Inject(injection) = &decision.outcome else {
        return Err(format!("the review is not injected: {:?}", decision.outcome));
    };
    let injection = (**injection).clone();
    let mut injected: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let ops = injection.patch.to_json_patch().map_err(|e| e.to_string())?;
    json_patch::patch(&mut injected["request"]["object"], &ops.0).map_err(|e| e.to_string())?;
    let injected = serde_json::to_vec(&injected).map_err(|e| e.to_string())?;
    Ok(Pieces { raw, pod, decision, injection, injected })
}
