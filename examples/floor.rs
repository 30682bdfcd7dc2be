//! The floor of the load benchmark (`make bench-load`, issue 11): the least an admission webhook
//! can do on the injector's TLS and HTTP stack (`examples/support/stack.rs`, shared with the
//! kube-rs-style peer: the injector's own rustls `server_config`, tokio, hyper-util's auto
//! builder, TCP_NODELAY, the same timeouts and body limit). Per request it reads the body, parses the whole AdmissionReview into a `serde_json::Value`
//! (every field built: maps, arrays, strings), takes `request.uid` from it and answers
//! `allowed: true` with that uid. No logging, no metrics, no decision. The injector's CPU per
//! review is compared with this one's on the same body.
//!
//! With `--decide` it answers with the injector's own decision instead (`webhook::mutate`, an
//! opted-in privileged namespace, the default configuration): the floor plus the decision,
//! without the server's routing, logging, metrics and spans, to see where the time goes.
//!
//! ```text
//! cargo run --release --example floor -- --listen 127.0.0.1:9443 --tls-cert DIR/tls.crt --tls-key DIR/tls.key [--decide]
//! ```
//! It prints `listening on ADDR` once it accepts connections, and stops on SIGTERM or SIGINT.

#[path = "support/stack.rs"]
mod stack;

use hyper::StatusCode;

use dind_injector::config::Config;
use dind_injector::inject::ClusterInfo;
use dind_injector::namespace::{NamespaceView, StaticNamespaces};
use dind_injector::webhook::{self, ReviewContext};

use stack::{Answer, answer};

/// What `--decide` decides with.
struct Decider {
    config: Config,
    namespaces: StaticNamespaces,
    cluster: ClusterInfo,
}

impl Decider {
    fn new() -> Self {
        Decider {
            config: Config::default(),
            namespaces: StaticNamespaces::new(NamespaceView::opted_in("ci").labels, Default::default()),
            cluster: ClusterInfo::default(),
        }
    }

    fn decide(&self, body: &[u8]) -> Answer {
        let ctx = ReviewContext { config: &self.config, namespaces: &self.namespaces, cluster: &self.cluster };
        let outcome = webhook::mutate(body, ctx);
        answer(StatusCode::from_u16(outcome.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), outcome.body)
    }
}

/// The floor itself: the whole review into a `serde_json::Value`, its uid echoed.
fn echo(body: &[u8]) -> Answer {
    let review = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(review) => review,
        Err(_) => return answer(StatusCode::BAD_REQUEST, b"{}".to_vec()),
    };
    let Some(uid) = review.pointer("/request/uid").and_then(serde_json::Value::as_str) else {
        return answer(StatusCode::BAD_REQUEST, b"{}".to_vec());
    };
    let out = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true},
    });
    answer(StatusCode::OK, serde_json::to_vec(&out).unwrap_or_default())
}

fn main() -> std::process::ExitCode {
    stack::run("floor", &["--decide"], |args| {
        let decider = args.has("--decide").then(Decider::new);
        move |body: &[u8]| match &decider {
            Some(decider) => decider.decide(body),
            None => echo(body),
        }
    })
}
