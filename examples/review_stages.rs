//! Where a review's CPU goes, step by step, without the network (`make bench-load` runs it
//! for the README's breakdown): each step of `webhook::mutate` and `webhook::validate` on the
//! GitLab review, timed alone in a hot loop, beside the floor's parse into `serde_json::Value`.
//! Prints one JSON object: nanoseconds per call for each step.
//!
//! ```text
//! cargo run --release --example review_stages [-- --iterations 20000] [--only plan_injection]
//! ```

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

#[path = "support/pieces.rs"]
mod pieces;

use dind_injector::admission::{self, AdmissionResponse};
use dind_injector::config::Config;
use dind_injector::inject::{self, ClusterInfo};
use dind_injector::namespace::{NamespaceView, StaticNamespaces};
use dind_injector::pod;
use dind_injector::webhook::{self, ReviewContext};
use serde_json::Value;

/// Nanoseconds per call of each step: the best of ten rounds, the steps taking turns in each
/// round so that a shared machine's slow moments fall on all of them alike (noise only adds).
/// A named step and what runs it.
type Step<'a> = (&'static str, Box<dyn FnMut() + 'a>);

fn time(iterations: u32, steps: &mut [Step<'_>]) -> Vec<(&'static str, f64)> {
    let round = (iterations / 10).max(1);
    for (_, f) in steps.iter_mut() {
        for _ in 0..round {
            f();
        }
    }
    let mut best = vec![f64::INFINITY; steps.len()];
    for _ in 0..10 {
        for ((_, f), best) in steps.iter_mut().zip(best.iter_mut()) {
            let t = Instant::now();
            for _ in 0..round {
                f();
            }
            *best = best.min(t.elapsed().as_nanos() as f64 / f64::from(round));
        }
    }
    steps.iter().map(|(k, _)| *k).zip(best).collect()
}

fn main() -> Result<(), String> {
    let iterations: u32 = match std::env::args().skip_while(|a| a != "--iterations").nth(1) {
        Some(n) => n.parse().map_err(|e| format!("--iterations {n}: {e}"))?,
        None => 20_000,
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reviews/gitlab.json");
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    // As the apiserver sends it: compact JSON, not the fixture's indentation.
    let body = serde_json::to_vec(&serde_json::from_slice::<Value>(&text).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let config = Config::default();
    let cluster = ClusterInfo::default();
    let view = NamespaceView::opted_in("ci");
    let namespaces = StaticNamespaces::new(view.labels.clone(), Default::default());
    let ctx = ReviewContext { config: &config, namespaces: &namespaces, cluster: &cluster };

    // The review as the validating webhook and the reinvocation get it: the patch applied.
    let pieces::Pieces { raw, pod: typed, decision, injection, injected } = pieces::pieces(&body, &view, &config, &cluster)?;

    // `--only STEP` times that step alone (for a profiler).
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    let mut steps: Vec<Step<'_>> = Vec::new();
    steps.push((
        "floor_value_parse",
        Box::new(|| {
            black_box(serde_json::from_slice::<Value>(black_box(&body)).ok());
        }),
    ));
    steps.push((
        "decode_review",
        Box::new(|| {
            black_box(admission::decode_review(black_box(&body)).ok());
        }),
    ));
    steps.push((
        "decode_pod_full",
        Box::new(|| {
            black_box(serde_json::from_str::<k8s_openapi::api::core::v1::Pod>(black_box(&raw)).ok());
        }),
    ));
    steps.push((
        "decode_pod",
        Box::new(|| {
            black_box(pod::decode(black_box(&raw)).ok());
        }),
    ));
    steps.push((
        "plan_injection",
        Box::new(|| {
            black_box(inject::plan_injection(black_box(&typed), &view, &config, &cluster));
        }),
    ));
    steps.push((
        "answer",
        Box::new(|| {
            let r = AdmissionResponse::allow("uid").with_patch(&injection.patch).with_warnings(decision.warnings.clone());
            black_box(r.into_review_json());
        }),
    ));
    steps.push((
        "mutate",
        Box::new(|| {
            black_box(webhook::mutate(black_box(&body), ctx));
        }),
    ));
    steps.push((
        "mutate_reinvocation",
        Box::new(|| {
            black_box(webhook::mutate(black_box(&injected), ctx));
        }),
    ));
    steps.push((
        "validate",
        Box::new(|| {
            black_box(webhook::validate(black_box(&injected), ctx));
        }),
    ));
    steps.retain(|(k, _)| only.as_deref().is_none_or(|o| o == *k));
    let mut out = serde_json::Map::new();
    for (k, ns) in time(iterations, &mut steps) {
        out.insert(k.into(), Value::from((ns / 10.0).round() * 10.0));
    }
    println!("{}", Value::Object(out));
    Ok(())
}
