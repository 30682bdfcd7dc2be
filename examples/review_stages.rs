//! Where a review's CPU goes, step by step, without the network (`make bench-load` runs it
//! for the README's breakdown): each step of `webhook::mutate` and `webhook::validate` on the
//! GitLab review, timed alone in a hot loop, beside the floor's parse into `serde_json::Value`.
//! Prints one JSON object: nanoseconds per call for each step.
//!
//! ```text
//! cargo run --release --example review_stages [-- --iterations 20000]
//! ```

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use dind_injector::admission::{self, AdmissionResponse};
use dind_injector::config::Config;
use dind_injector::inject::{self, ClusterInfo, Outcome};
use dind_injector::namespace::{NamespaceView, StaticNamespaces};
use dind_injector::pod;
use dind_injector::webhook::{self, ReviewContext};
use serde_json::Value;

fn time(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..iterations {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn main() -> Result<(), String> {
    let iterations: u32 = match std::env::args().skip_while(|a| a != "--iterations").nth(1) {
        Some(n) => n.parse().map_err(|e| format!("--iterations {n}: {e}"))?,
        None => 20_000,
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reviews/gitlab.json");
    let body = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = Config::default();
    let cluster = ClusterInfo::default();
    let view = NamespaceView::opted_in("ci");
    let namespaces = StaticNamespaces::new(view.labels.clone(), Default::default());
    let ctx = ReviewContext {
        config: &config,
        namespaces: &namespaces,
        cluster: &cluster,
    };

    let request = admission::decode_review(&body).map_err(|e| e.to_string())?;
    let raw = request.object.as_deref().map(|r| r.get().to_owned()).unwrap_or_default();
    let typed = pod::decode(&raw).map_err(|e| e.to_string())?;
    let decision = inject::plan_injection(&typed, &view, &config, &cluster);
    let Outcome::Inject(injection) = &decision.outcome else {
        return Err(format!("the GitLab review is not injected: {:?}", decision.outcome));
    };
    // The review as the validating webhook and the reinvocation get it: the patch applied.
    let mut injected: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    json_patch::patch(&mut injected["request"]["object"], &injection.patch.0).map_err(|e| e.to_string())?;
    let injected = serde_json::to_vec(&injected).map_err(|e| e.to_string())?;

    let mut out = serde_json::Map::new();
    let mut put = |k: &str, ns: f64| {
        out.insert(k.into(), Value::from((ns / 10.0).round() * 10.0));
    };
    put("floor_value_parse", time(iterations, || {
        black_box(serde_json::from_slice::<Value>(black_box(&body)).ok());
    }));
    put("decode_review", time(iterations, || {
        black_box(admission::decode_review(black_box(&body)).ok());
    }));
    put("decode_pod_full", time(iterations, || {
        black_box(serde_json::from_str::<k8s_openapi::api::core::v1::Pod>(black_box(&raw)).ok());
    }));
    put("decode_pod", time(iterations, || {
        black_box(pod::decode(black_box(&raw)).ok());
    }));
    put("plan_injection", time(iterations, || {
        black_box(inject::plan_injection(black_box(&typed), &view, &config, &cluster));
    }));
    put("answer", time(iterations, || {
        let r = AdmissionResponse::allow("uid")
            .with_patch(&injection.patch)
            .with_warnings(decision.warnings.clone());
        black_box(r.into_review_json());
    }));
    put("mutate", time(iterations, || {
        black_box(webhook::mutate(black_box(&body), ctx));
    }));
    put("mutate_reinvocation", time(iterations, || {
        black_box(webhook::mutate(black_box(&injected), ctx));
    }));
    put("validate", time(iterations, || {
        black_box(webhook::validate(black_box(&injected), ctx));
    }));
    println!("{}", Value::Object(out));
    Ok(())
}
