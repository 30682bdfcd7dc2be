//! The cost of one mutating review, without the network: the pure decision and patch on a parsed
//! pod, and the whole review (AdmissionReview JSON in, AdmissionReview JSON out) per fixture and
//! per pod size.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dind_injector::config::Config;
use dind_injector::inject::{self, ClusterInfo};
use dind_injector::namespace::{NamespaceView, StaticNamespaces};
use dind_injector::webhook::{self, ReviewContext};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

const FIXTURES: [&str; 4] = ["gitlab", "buildkite", "harness", "arc-dind-mode"];

fn review(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/reviews/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
}

/// The GitLab review with `n` job containers shaped like its `build` container.
pub fn review_with_containers(n: usize) -> Value {
    let mut r = review("gitlab");
    let build = r["request"]["object"]["spec"]["containers"][0].clone();
    let containers: Vec<Value> = (0..n)
        .map(|i| {
            let mut c = build.clone();
            c["name"] = json!(format!("build-{i}"));
            c
        })
        .collect();
    r["request"]["object"]["spec"]["containers"] = Value::Array(containers);
    r
}

fn benches(c: &mut Criterion) {
    let config = Config::default();
    let cluster = ClusterInfo::default();
    let view = NamespaceView::opted_in("ci");
    let namespaces = StaticNamespaces::new(view.labels.clone(), Default::default());
    let ctx = ReviewContext { config: &config, namespaces: &namespaces, cluster: &cluster };

    let mut plan = c.benchmark_group("plan_injection");
    for name in FIXTURES {
        let pod: Pod = serde_json::from_value(review(name)["request"]["object"].clone()).unwrap_or_else(|e| panic!("{e}"));
        plan.bench_function(name, |b| b.iter(|| inject::plan_injection(black_box(&pod), &view, &config, &cluster)));
    }
    plan.finish();

    let mut whole = c.benchmark_group("mutate_review");
    for name in FIXTURES {
        let body = serde_json::to_vec(&review(name)).unwrap_or_default();
        whole.throughput(Throughput::Bytes(body.len() as u64));
        whole.bench_function(name, |b| b.iter(|| webhook::mutate(black_box(&body), ctx)));
    }
    whole.finish();

    // The validating review sees the pod after injection.
    let mut validate = c.benchmark_group("validate_review");
    for name in ["gitlab", "buildkite", "harness"] {
        let mut r = review(name);
        let pod: Pod = serde_json::from_value(r["request"]["object"].clone()).unwrap_or_else(|e| panic!("{e}"));
        if let inject::Outcome::Inject(i) = inject::plan_injection(&pod, &view, &config, &cluster).outcome {
            let ops = i.patch.to_json_patch().unwrap_or_else(|e| panic!("{e}"));
            json_patch::patch(&mut r["request"]["object"], &ops.0).unwrap_or_else(|e| panic!("{e}"));
        }
        let body = serde_json::to_vec(&r).unwrap_or_default();
        validate.bench_function(name, |b| b.iter(|| webhook::validate(black_box(&body), ctx)));
    }
    validate.finish();

    let mut size = c.benchmark_group("mutate_review_by_containers");
    for n in [1usize, 10, 50, 100, 200] {
        let body = serde_json::to_vec(&review_with_containers(n)).unwrap_or_default();
        size.throughput(Throughput::Elements(n as u64));
        size.bench_with_input(BenchmarkId::from_parameter(n), &body, |b, body| b.iter(|| webhook::mutate(black_box(body), ctx)));
    }
    size.finish();
}

criterion_group!(decision, benches);
criterion_main!(decision);
