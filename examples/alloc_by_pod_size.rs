//! Allocations per mutating review by pod size, for `make bench`'s scaling table: the GitLab
//! review with 1 to 200 job containers shaped like its `build` container (as
//! `benches/decision.rs`'s `mutate_review_by_containers`, whose criterion times go beside these
//! counts). Prints one JSON object per size: allocations and bytes allocated per review.

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

fn main() -> Result<(), String> {
    let config = Config::default();
    let cluster = ClusterInfo::default();
    let view = NamespaceView::opted_in("ci");
    let namespaces = StaticNamespaces::new(view.labels.clone(), Default::default());
    let ctx = ReviewContext { config: &config, namespaces: &namespaces, cluster: &cluster };
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
