//! The peer of the load benchmark (`make bench-load`, issue 11): what kube-rs's admission
//! controller example (`examples/admission_controller.rs` in kube-rs) does per review, served on
//! exactly the floor's TLS and HTTP stack (`examples/support/stack.rs`: the injector's own rustls
//! `server_config`, tokio, hyper-util's auto builder for HTTP/1.1 and HTTP/2, TCP_NODELAY, the
//! same timeouts and body limit) instead of the example's warp.
//!
//! Per request, as the example: the body is read as kube-core's
//! `AdmissionReview<DynamicObject>`, turned into an `AdmissionRequest` (`try_into`), answered
//! with `AdmissionResponse::from(&request)`; an object labelled `illegal` is denied, one without
//! the label `admission` gets a JSON Patch adding it (and `/metadata/labels` first when the
//! object has no labels), set with `with_patch`; the answer is `into_review()` serialized with
//! `serde_json::to_vec`. A body that is not an AdmissionReview gets 400 (warp's JSON filter
//! rejects it so), one without a request gets the example's `AdmissionResponse::invalid`.
//!
//! Kept faithful where kube-core differs from the apiserver's wire format: its response
//! serializes the patch as an array of numbers, not base64 (kube-rs/kube#1781), so a real
//! apiserver would refuse it; the benchmark only needs a 200 with the work done. The example's
//! one log line per request is left out (the stack has no subscriber), which makes the peer a
//! stricter yardstick for the injector, whose numbers include its log line.
//!
//! ```text
//! cargo run --release --example kube_peer -- --listen 127.0.0.1:9443 --tls-cert DIR/tls.crt --tls-key DIR/tls.key
//! ```
//! It prints `listening on ADDR` once it accepts connections, and stops on SIGTERM or SIGINT.

#[path = "support/stack.rs"]
mod stack;

use hyper::StatusCode;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::{DynamicObject, ResourceExt};

use stack::{Answer, answer};

/// The label the peer adds, as the example's.
const LABEL: &str = "admission";
const LABEL_VALUE: &str = "modified-by-kube-rs";

/// The example's business logic: deny an object labelled `illegal`, label the others.
fn label(response: AdmissionResponse, object: &DynamicObject) -> Result<AdmissionResponse, String> {
    if object.labels().contains_key("illegal") {
        return Err("the object carries the label \"illegal\"".to_owned());
    }
    if object.labels().contains_key(LABEL) {
        return Ok(response);
    }
    let mut ops = Vec::with_capacity(2);
    if object.metadata.labels.is_none() {
        // A JSON Patch cannot add a key under a map that is not there.
        ops.push(PatchOperation::Add(AddOperation { path: PointerBuf::from_tokens(["metadata", "labels"]), value: serde_json::json!({}) }));
    }
    ops.push(PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(["metadata", "labels", LABEL]),
        value: serde_json::Value::String(LABEL_VALUE.to_owned()),
    }));
    response.with_patch(Patch(ops)).map_err(|e| e.to_string())
}

/// One review, body to answer, as the example's `mutate_handler`.
fn mutate(body: &[u8]) -> Answer {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) => return answer(StatusCode::BAD_REQUEST, b"{}".to_vec()),
    };
    // kube-core implements `TryInto` (not `TryFrom`) for this conversion.
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            let review = AdmissionResponse::invalid(e.to_string()).into_review();
            return answer(StatusCode::OK, serde_json::to_vec(&review).unwrap_or_default());
        }
    };
    let mut response = AdmissionResponse::from(&request);
    if let Some(object) = request.object.as_ref() {
        response = match label(response.clone(), object) {
            Ok(labelled) => labelled,
            Err(reason) => response.deny(reason),
        };
    }
    answer(StatusCode::OK, serde_json::to_vec(&response.into_review()).unwrap_or_default())
}

fn main() -> std::process::ExitCode {
    stack::run("kube_peer", &[], |_| mutate)
}
