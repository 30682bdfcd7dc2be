//! What every fuzz target checks, beyond "no panic": shared by the fuzz targets and by
//! `tests/fuzz_regressions.rs`, which replays saved inputs under plain `cargo test`.
//!
//! For any body, `mutate` and `validate` answer 200 or 400 with an `admission.k8s.io/v1`
//! AdmissionReview carrying the request's uid; a 400 is a denial with code 400; a patch is
//! base64 of a JSON Patch that applies to the object, and a second mutating pass over the
//! patched object asks for nothing more. The patched review is then validated too, so the
//! validating targets reach the injected sidecar's exemption.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use base64::Engine;
use dind_injector::admission;
use dind_injector::config::Config;
use dind_injector::inject::{ClusterInfo, KubeVersion};
use dind_injector::namespace::StaticNamespaces;
use dind_injector::webhook::{self, ReviewContext, ReviewOutcome};
use serde_json::Value;

/// The review contexts every input is tried in.
pub struct Contexts {
    config: Config,
    cases: Vec<(StaticNamespaces, ClusterInfo)>,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn version(minor: u32) -> ClusterInfo {
    ClusterInfo { server_version: Some(KubeVersion { major: 1, minor }), ..ClusterInfo::default() }
}

/// Opted in at the default level; opted in, restricted and audited on an old cluster (the
/// container sidecar mode); not opted in.
pub fn contexts() -> &'static Contexts {
    static CONTEXTS: OnceLock<Contexts> = OnceLock::new();
    CONTEXTS.get_or_init(|| {
        let opted_in = [("dind-injector.io/injection", "enabled"), ("pod-security.kubernetes.io/enforce", "privileged")];
        let restricted = [
            ("dind-injector.io/injection", "enabled"),
            ("pod-security.kubernetes.io/enforce", "privileged"),
            ("dind-injector.io/pod-security", "restricted"),
            ("dind-injector.io/policy-mode", "audit"),
        ];
        Contexts {
            config: Config::default(),
            cases: vec![
                (StaticNamespaces::new(labels(&opted_in), BTreeMap::new()), version(34)),
                (StaticNamespaces::new(labels(&restricted), BTreeMap::new()), version(28)),
                (StaticNamespaces::new(BTreeMap::new(), BTreeMap::new()), ClusterInfo::default()),
            ],
        }
    })
}

impl Contexts {
    /// Each context in turn.
    pub fn each(&self) -> impl Iterator<Item = ReviewContext<'_>> {
        self.cases.iter().map(|(namespaces, cluster)| ReviewContext { config: &self.config, namespaces, cluster })
    }
}

/// Decoding: never a panic; a decoded request's uid is the one in the body.
pub fn check_decode(data: &[u8]) {
    let decoded = admission::decode_review(data);
    let recovered = admission::recover_uid(data);
    if let Ok(request) = &decoded
        && !request.uid.is_empty()
        && request.uid.len() <= 128
    {
        assert_eq!(recovered.as_deref(), Some(request.uid.as_str()), "recover_uid disagrees with decode_review");
    }
}

/// The mutating review in every context.
pub fn check_mutate(data: &[u8]) {
    for ctx in contexts().each() {
        let outcome = webhook::mutate(data, ctx);
        if let Some(patched) = check_answer(data, &outcome) {
            // Idempotence: the webhook runs with reinvocationPolicy: IfNeeded.
            let again = webhook::mutate(&patched, ctx);
            let answer = parse(&again.body);
            assert_eq!(again.http_status, 200, "the patched review is refused: {answer}");
            assert!(answer["response"].get("patch").is_none(), "a second pass patches again: {answer}");
        }
    }
}

/// The validating review in every context, and of the injected pod when one is injected.
pub fn check_validate(data: &[u8]) {
    for ctx in contexts().each() {
        check_answer(data, &webhook::validate(data, ctx));
        if let Some(patched) = check_answer(data, &webhook::mutate(data, ctx)) {
            check_answer(&patched, &webhook::validate(&patched, ctx));
        }
    }
}

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// Checks the answer's shape; when it carries a patch, applies it and returns the patched review.
fn check_answer(request_body: &[u8], outcome: &ReviewOutcome) -> Option<Vec<u8>> {
    let answer = parse(&outcome.body);
    assert!(matches!(outcome.http_status, 200 | 400), "HTTP status {}: {answer}", outcome.http_status);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{answer}");
    assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
    let response = &answer["response"];
    assert!(response["uid"].is_string() && response["allowed"].is_boolean(), "{answer}");
    let decoded = admission::decode_review(request_body);
    if let Ok(request) = &decoded {
        assert_eq!(response["uid"], request.uid.as_str(), "the answer names another review");
    }
    if outcome.http_status == 400 {
        assert!(decoded.is_err(), "400 for a review that decodes: {answer}");
        assert_eq!(response["allowed"], false, "{answer}");
        assert_eq!(response["status"]["code"], 400, "{answer}");
    }
    let patch = response.get("patch")?;
    assert_eq!(response["patchType"], "JSONPatch", "{answer}");
    assert_eq!(response["allowed"], true, "a patch on a denial: {answer}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().unwrap_or_else(|| panic!("patch is not a string: {answer}")))
        .unwrap_or_else(|e| panic!("patch is not base64 ({e}): {answer}"));
    let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("patch is not a JSON Patch ({e})"));
    // The review decoded (a patch was made), so the body is JSON; deeper than serde_json's
    // recursion limit (128) it cannot become a Value, and there is nothing more to check.
    let mut review: Value = serde_json::from_slice(request_body).ok()?;
    let object = review.get_mut("request").and_then(|r| r.get_mut("object"))?;
    json_patch::patch(object, &ops.0).unwrap_or_else(|e| panic!("the patch does not apply ({e}): {}", String::from_utf8_lossy(&bytes)));
    Some(serde_json::to_vec(&review).unwrap_or_else(|e| panic!("{e}")))
}
