//! Allocations per mutating review by pod size, for `make bench`'s scaling table: the GitLab
//! review with 1 to 200 job containers shaped like its `build` container (as
//! `benches/decision.rs`'s `mutate_review_by_containers`, whose criterion times go beside these
//! counts). Prints one JSON object per size: allocations and bytes allocated per review.
//! `--stages` prints instead, for the GitLab review, the allocations of each step of a review
//! (the floor's parse, the review's and the pod's decode, the decision, the answer, the injected
//! pod's decode and policy check, the three calls whole): where the allocations of the first table
//! come from.

#[path = "support/pieces.rs"]
mod pieces;

use std::alloc::System;
use std::path::PathBuf;

use dind_injector::config::Config;
use dind_injector::inject::ClusterInfo;
use dind_injector::namespace::{NamespaceView, StaticNamespaces};
use dind_injector::webhook::{self, ReviewContext};
use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The GitLab review with `n` job containers shaped like its `build` container.
fn review_with_containers(n: usize) -> Result<Vec<u8>, String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reviews/gitlab.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut review: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let build = review["request"]["object"]["spec"]["containers"][0].clone();
    let containers: Vec<Value> = (0..n)
        .map(|i| {
            let mut c = build.clone();
            c["name"] = json!(format!("build-{i}"));
            c
        })
        .collect();
    review["request"]["object"]["spec"]["containers"] = Value::Array(containers);
    serde_json::to_vec(&review).map_err(|e| e.to_string())
}

/// Allocations and bytes allocated per call of `f`, over `REVIEWS` calls after an untimed one.
fn count(f: &mut dyn FnMut()) -> Value {
    const REVIEWS: usize = 20;
    f();
    let region = Region::new(GLOBAL);
    for _ in 0..REVIEWS {
        f();
    }
    let stats = region.change();
    json!({ "allocations": stats.allocations / REVIEWS, "bytes_allocated": stats.bytes_allocated / REVIEWS })
}

/// Each step of the GitLab review's `/mutate` (and of the injected pod's reinvocation and
/// `/validate`), counted alone.
fn stages(ctx: ReviewContext<'_>, view: &NamespaceView) -> Result<(), String> {
    use dind_injector::admission::{self, AdmissionResponse};
    use dind_injector::inject;
    use dind_injector::pod;
    use std::hint::black_box;

    let body = review_with_containers(1)?;
    let pieces::Pieces { raw, pod: typed, decision, injection, injected } = pieces::pieces(&body, view, ctx.config, ctx.cluster)?;
    let mut out = serde_json::Map::new();
    let mut step = |name: &str, f: &mut dyn FnMut()| {
        out.insert(name.into(), count(f));
    };
    step("floor_value_parse", &mut || drop(black_box(serde_json::from_slice::<Value>(black_box(&body)).ok())));
    step("decode_review", &mut || drop(black_box(admission::decode_review(black_box(&body)).ok())));
    step("decode_pod", &mut || drop(black_box(pod::decode(black_box(&raw)).ok())));
    step("plan_injection", &mut || drop(black_box(inject::plan_injection(black_box(&typed), view, ctx.config, ctx.cluster))));
    step("patch_to_answer", &mut || {
        let r = AdmissionResponse::allow("uid").with_patch(&injection.patch).with_warnings(decision.warnings.clone());
        drop(black_box(r.into_review_json()));
    });
    step("mutate", &mut || drop(black_box(webhook::mutate(black_box(&body), ctx))));
    step("mutate_reinvocation", &mut || drop(black_box(webhook::mutate(black_box(&injected), ctx))));
    let injected_request = admission::decode_review(&injected).map_err(|e| e.to_string())?;
    let injected_raw = injected_request.object.as_deref().map(|r| r.get().to_owned()).unwrap_or_default();
    let injected_pod = pod::decode(&injected_raw).map_err(|e| e.to_string())?;
    step("decode_injected_pod", &mut || drop(black_box(pod::decode(black_box(&injected_raw)).ok())));
    step("validate_pod", &mut || {
        drop(black_box(dind_injector::policy::validate_pod(black_box(&injected_pod), view, ctx.config, ctx.cluster)))
    });
    step("validate", &mut || drop(black_box(webhook::validate(black_box(&injected), ctx))));
    println!("{}", Value::Object(out));
    Ok(())
}

fn main() -> Result<(), String> {
    let config = Config::default();
    let cluster = ClusterInfo::default();
    let view = NamespaceView::opted_in("ci");
    let namespaces = StaticNamespaces::new(view.labels.clone(), Default::default());
    let ctx = ReviewContext { config: &config, namespaces: &namespaces, cluster: &cluster };
    if std::env::args().any(|a| a == "--stages") {
        return stages(ctx, &view);
    }
    const REVIEWS: usize = 20;
    for n in [1usize, 10, 50, 100, 200] {
        let body = review_with_containers(n)?;
        // One untimed review first (lazily built statics).
        let first = webhook::mutate(&body, ctx);
        if first.http_status != 200 {
            return Err(format!("{n} containers: HTTP {}", first.http_status));
        }
        let region = Region::new(GLOBAL);
        for _ in 0..REVIEWS {
            std::hint::black_box(webhook::mutate(std::hint::black_box(&body), ctx));
        }
        let stats = region.change();
        println!(
            "{}",
            json!({
                "containers": n,
                "body_bytes": body.len(),
                "allocations": stats.allocations / REVIEWS,
                "bytes_allocated": stats.bytes_allocated / REVIEWS,
            })
        );
    }
    Ok(())
}
