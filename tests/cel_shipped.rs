//! Every CEL expression the project ships, on requests shaped exactly as kube-apiserver sends
//! them.
//!
//! The shipped expressions are those of both webhook configurations as every renderer produces
//! them: manifests/base/webhooks.yaml, every kustomize overlay, the restricted-by-default
//! component, and the chart with every values set its tests render (tests/support/render.rs).
//! The requests are the ones a real kube-apiserver v1.36.2 sent (tests/fixtures/apiserver/ and
//! its updates/), and every runner fixture and Pod Security corpus pod put into those recorded
//! requests in place of the recorded pod (tests/support/cel.rs): empty fields are absent, never
//! `""`, and reading an absent key is an evaluation error, as on the apiserver. With
//! `failurePolicy: Fail` an evaluation error rejects the request, so any error on any request
//! fails here (issue 19: `request.subResource` on an ordinary pod update refused every label,
//! annotation and finalizer change in opted-in namespaces, and finished Jobs never completed).

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use support::cel::{Conditions, Requests, json_files, recorded_creates, recorded_updates};

const MUTATING: &str = "inject.dind-injector.io";
const RESTRICTED: &str = "validate-restricted.dind-injector.io";

/// The recorded updates that change only metadata: no validating webhook may be called.
const METADATA_ONLY: [&str; 3] = ["label", "annotate", "job-controller-finalizer-removal"];
/// The recorded updates that change what runs: the spec-changed condition lets them through.
const SPEC_CHANGES: [&str; 3] = ["active-deadline", "image-change", "ephemeral-container"];

fn tmp() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Every shipped set of webhook configurations, compiled: (origin, conditions).
fn shipped() -> Vec<(String, Conditions)> {
    support::render::shipped_webhook_configurations(&tmp())
        .into_iter()
        .map(|(origin, configurations)| {
            assert!(!configurations.is_empty(), "{origin}: no webhook configurations rendered");
            let conditions = Conditions::compile(&configurations, &origin);
            (origin, conditions)
        })
        .collect()
}

/// The pods the runners send and the apiserver stores, and every corpus pod.
fn pods() -> Vec<(String, Value)> {
    let mut pods = Vec::new();
    for (file, review) in json_files(&support::fixtures_dir().join("reviews")) {
        pods.push((format!("reviews/{file}"), review["request"]["object"].clone()));
    }
    for (file, exchange) in json_files(&support::fixtures_dir().join("apiserver")) {
        if exchange["created"] == true {
            pods.push((format!("apiserver/{file} as stored"), exchange["stored"].clone()));
        }
    }
    pods.extend(support::corpus_pods());
    pods
}

/// `pod` with `f` applied to a copy.
fn changed(pod: &Value, f: impl FnOnce(&mut Value)) -> Value {
    let mut p = pod.clone();
    f(&mut p);
    p
}

/// Every request a webhook could be sent: the recorded ones, and each pod of [`pods`] created,
/// relabelled, annotated, its Job finalizer removed, its spec changed and debugged, each in the
/// recorded request of that kind.
fn requests() -> Vec<(String, Value)> {
    let mut out = recorded_creates();
    out.extend(recorded_updates().into_iter().map(|(step, r)| (format!("updates/{step}"), r)));
    let r = Requests::recorded();
    for (what, pod) in pods() {
        out.push((format!("{what}: CREATE"), r.create(&pod)));
        let labelled = changed(&pod, |p| p["metadata"]["labels"]["team"] = json!("ci"));
        out.push((format!("{what}: label"), r.update(&pod, &labelled)));
        let annotated = changed(&pod, |p| p["metadata"]["annotations"]["note"] = json!("x"));
        out.push((format!("{what}: annotate"), r.update(&pod, &annotated)));
        let tracked = changed(&pod, |p| p["metadata"]["finalizers"] = json!(["batch.kubernetes.io/job-tracking"]));
        let untracked = changed(&pod, |p| p["metadata"]["finalizers"] = json!([]));
        out.push((format!("{what}: finalizer removal"), r.update(&tracked, &untracked)));
        let deadline = changed(&pod, |p| p["spec"]["activeDeadlineSeconds"] = json!(60));
        out.push((format!("{what}: spec change"), r.update(&pod, &deadline)));
        let debugged = changed(&pod, |p| {
            p["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "image": "busybox", "terminationMessagePolicy": "File"}])
        });
        out.push((format!("{what}: kubectl debug"), r.ephemeral(&pod, &debugged)));
    }
    out
}

#[test]
fn every_shipped_expression_evaluates_without_error_on_every_request() {
    let sources = shipped();
    let requests = requests();
    // The same expression is shipped by many renderers: evaluate each distinct one once per
    // request, and name every origin when it fails.
    let mut origins: BTreeMap<(String, String, String), Vec<&str>> = BTreeMap::new();
    let mut first: BTreeMap<(String, String, String), &Conditions> = BTreeMap::new();
    for (origin, conditions) in &sources {
        for (webhook, list) in &conditions.by_webhook {
            for c in list {
                let key = (webhook.clone(), c.name.clone(), c.expression.clone());
                origins.entry(key.clone()).or_default().push(origin);
                first.entry(key).or_insert(conditions);
            }
        }
    }
    let mut errors = Vec::new();
    let mut evaluations = 0;
    for ((webhook, name, _), conditions) in &first {
        for (what, request) in &requests {
            evaluations += 1;
            if let Err(e) = conditions.eval(webhook, name, request) {
                errors.push(format!("{what}: {e}"));
            }
        }
    }
    let kinds: Vec<String> = origins.keys().map(|(w, n, _)| format!("{w}/{n}")).collect();
    println!(
        "{} shipped sources, {} distinct expressions ({}), {} requests, {evaluations} evaluations, {} errors",
        sources.len(),
        first.len(),
        kinds.join(", "),
        requests.len(),
        errors.len()
    );
    assert!(requests.len() > 1000, "{} requests: the recordings or the corpus went missing", requests.len());
    if !errors.is_empty() {
        let listed: Vec<String> = origins.iter().map(|((w, n, _), o)| format!("{w}/{n}: {}", o.join("; "))).collect();
        panic!(
            "{} evaluation errors (each rejects the request under failurePolicy Fail):\n  {}\nshipped by:\n  {}",
            errors.len(),
            errors.iter().take(40).cloned().collect::<Vec<_>>().join("\n  "),
            listed.join("\n  ")
        );
    }
}

/// Every source ships the mutating webhook and a validating webhook with the spec-changed
/// condition (the restricted-by-default component keeps only the restricted entry).
#[test]
fn every_source_ships_both_configurations() {
    for (origin, conditions) in shipped() {
        assert!(conditions.by_webhook.contains_key(MUTATING), "{origin}: no {MUTATING}");
        assert!(conditions.by_webhook.contains_key(RESTRICTED), "{origin}: no {RESTRICTED}");
        for (webhook, list) in &conditions.by_webhook {
            if webhook != MUTATING {
                assert!(list.iter().any(|c| c.name == "spec-changed"), "{origin}: {webhook} has no spec-changed condition");
            }
        }
    }
}

/// The recorded label, annotate and finalizer-removal requests reach no validating webhook;
/// the spec changes and `kubectl debug` pass the spec-changed condition, and the restricted
/// entry (which has no other condition) is called for them.
#[test]
fn recorded_updates_reach_the_validating_webhooks_as_intended() {
    let updates: BTreeMap<String, Value> = recorded_updates().into_iter().collect();
    for step in METADATA_ONLY.iter().chain(&SPEC_CHANGES) {
        assert!(updates.contains_key(*step), "updates/: no recorded {step} request");
    }
    for (origin, conditions) in shipped() {
        for webhook in conditions.by_webhook.keys().filter(|w| *w != MUTATING) {
            for (step, request) in &updates {
                let sent = conditions.sends(webhook, request).unwrap_or_else(|e| panic!("{origin}: updates/{step}: {e}"));
                let spec_changed =
                    conditions.eval(webhook, "spec-changed", request).unwrap_or_else(|e| panic!("{origin}: updates/{step}: {e}"));
                if METADATA_ONLY.contains(&step.as_str()) {
                    assert!(!spec_changed && !sent, "{origin}: {webhook}: the recorded {step} request is sent");
                } else {
                    assert!(spec_changed, "{origin}: {webhook}: the recorded {step} request does not pass spec-changed");
                    if webhook == RESTRICTED {
                        assert!(sent, "{origin}: {webhook}: the recorded {step} request is not sent");
                    }
                }
            }
        }
    }
}

/// The same updates on an injected pod as the apiserver stored it (it asks for Docker, so the
/// baseline entry's pre-filter lets it through too): metadata-only changes are sent to neither
/// validating webhook, spec changes and debug containers to both.
#[test]
fn updates_of_an_injected_pod_reach_both_validating_webhooks_only_for_spec_changes() {
    let exchange = json_files(&support::fixtures_dir().join("apiserver"))
        .into_iter()
        .find(|(f, _)| f == "gitlab-unix-native.json")
        .map(|(_, e)| e)
        .unwrap_or_else(|| panic!("no apiserver/gitlab-unix-native.json"));
    let stored = &exchange["stored"];
    let r = Requests::recorded();
    let cases = [
        ("label", r.update(stored, &changed(stored, |p| p["metadata"]["labels"]["team"] = json!("ci"))), false),
        ("annotate", r.update(stored, &changed(stored, |p| p["metadata"]["annotations"]["note"] = json!("x"))), false),
        (
            "finalizer removal",
            r.update(&changed(stored, |p| p["metadata"]["finalizers"] = json!(["batch.kubernetes.io/job-tracking"])), stored),
            false,
        ),
        ("spec change", r.update(stored, &changed(stored, |p| p["spec"]["activeDeadlineSeconds"] = json!(60))), true),
        (
            "kubectl debug",
            r.ephemeral(stored, &changed(stored, |p| p["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "image": "busybox"}]))),
            true,
        ),
    ];
    for (origin, conditions) in shipped() {
        for webhook in conditions.by_webhook.keys().filter(|w| *w != MUTATING) {
            for (what, request, expected) in &cases {
                let sent = conditions.sends(webhook, request).unwrap_or_else(|e| panic!("{origin}: {what}: {e}"));
                assert_eq!(sent, *expected, "{origin}: {webhook}: {what} of the injected GitLab pod");
            }
        }
        let create = r.create(stored);
        assert_eq!(conditions.sends(MUTATING, &create), Ok(true), "{origin}: the mutating webhook, on the injected pod's CREATE");
    }
}

/// The harness sees what the apiserver saw: the condition shipped before issue 19 fails on the
/// recorded label request with the same error (`no such key: subResource`), and its guarded
/// form does not. Without this, a harness that filled in `""` would pass anything.
#[test]
fn the_unguarded_condition_of_before_fails_on_the_recorded_updates() {
    let unguarded = "request.operation != 'UPDATE' || request.subResource == 'ephemeralcontainers' || object.spec != oldObject.spec";
    let configuration = json!({"webhooks": [{"name": "old", "matchConditions": [{"name": "spec-changed", "expression": unguarded}]}]});
    let old = Conditions::compile(&[configuration], "the condition before issue 19");
    let updates: BTreeMap<String, Value> = recorded_updates().into_iter().collect();
    for step in METADATA_ONLY {
        let Err(e) = old.eval("old", "spec-changed", &updates[step]) else {
            panic!("{step}: reading the absent subResource must be an evaluation error")
        };
        assert!(e.to_lowercase().contains("no such key") && e.contains("subResource"), "{step}: {e}");
    }
    for step in SPEC_CHANGES {
        assert_eq!(old.eval("old", "spec-changed", &updates[step]), Ok(true), "{step}: rescued by the spec comparison");
    }
}
