//! Table-driven Pod Security Standards corpus.
//!
//! `tests/policy_corpus.yaml` was written from the published standard and from the Pod Security
//! Admission checks (`k8s.io/pod-security-admission/policy/check_*.go`), independently of
//! `src/policy/standards.rs`. Every case is checked at both levels and compared as a set of check
//! ids; all mismatches are reported together in one failure.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;

use dind_injector::policy::{Level, Violation, check_pod_security};
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

const CORPUS: &str = include_str!("policy_corpus.yaml");

/// Every PSA check id the API models, plus dind-injector's own `dockerSocket`.
const ALL_IDS: &[&str] = &[
    "hostProcess",
    "hostNamespaces",
    "privileged",
    "capabilities_baseline",
    "hostPathVolumes",
    "hostPorts",
    "appArmorProfile",
    "seLinuxOptions",
    "procMount",
    "seccompProfile_baseline",
    "sysctls",
    "restrictedVolumes",
    "allowPrivilegeEscalation",
    "runAsNonRoot",
    "runAsUser",
    "seccompProfile_restricted",
    "capabilities_restricted",
    "hostProbesAndHostLifecycle",
    "dockerSocket",
];

/// Controls whose restricted fields exist only on containers, so a violation must name one.
const CONTAINER_LEVEL_IDS: &[&str] = &[
    "privileged",
    "capabilities_baseline",
    "capabilities_restricted",
    "hostPorts",
    "procMount",
    "allowPrivilegeEscalation",
    "hostProbesAndHostLifecycle",
];

const MIN_CASES: usize = 80;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    source: String,
    pod: serde_json::Value,
    baseline: Vec<String>,
    restricted: Vec<String>,
    #[serde(default)]
    exempt: Option<Exempt>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Exempt {
    container: String,
    baseline: Vec<String>,
    restricted: Vec<String>,
}

fn load_cases() -> Vec<Case> {
    serde_saphyr::from_str(CORPUS).unwrap_or_else(|e| panic!("tests/policy_corpus.yaml does not parse: {e}"))
}

fn parse_pod(case: &Case) -> Pod {
    serde_json::from_value(case.pod.clone()).unwrap_or_else(|e| panic!("case `{}`: pod is not a valid v1 Pod: {e}", case.name))
}

/// The corpus pod re-serialized must equal what was written, so no field was silently dropped
/// (a misspelt key would otherwise turn a forbidden value into an absent one).
fn round_trip_problem(case: &Case, pod: &Pod) -> Option<String> {
    let written: serde_json::Value =
        serde_json::to_value(&case.pod).unwrap_or_else(|e| panic!("case `{}`: pod is not JSON-compatible: {e}", case.name));
    let parsed = serde_json::to_value(pod).unwrap_or_else(|e| panic!("case `{}`: pod does not serialize: {e}", case.name));
    (written != parsed).then(|| {
        format!(
            "case `{}`: pod does not round-trip through k8s_openapi (unknown or misspelt field?)\n  written: {written}\n  parsed:  {parsed}",
            case.name
        )
    })
}

fn container_names(pod: &Pod) -> HashSet<String> {
    let mut names = HashSet::new();
    if let Some(spec) = &pod.spec {
        names.extend(spec.containers.iter().map(|c| c.name.clone()));
        names.extend(spec.init_containers.iter().flatten().map(|c| c.name.clone()));
        names.extend(spec.ephemeral_containers.iter().flatten().map(|c| c.name.clone()));
    }
    names
}

fn id_set(violations: &[Violation]) -> BTreeSet<String> {
    violations.iter().map(|v| v.control.id().to_string()).collect()
}

fn expected_set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

fn levels() -> [(&'static str, Level); 2] {
    [("baseline", Level::Baseline), ("restricted", Level::Restricted)]
}

/// Structural expectations on every violation, independent of which controls fire.
fn violation_problems(case: &Case, level: &str, pod: &Pod, violations: &[Violation]) -> Vec<String> {
    let names = container_names(pod);
    let mut problems = Vec::new();
    for v in violations {
        let id = v.control.id();
        if v.field.trim().is_empty() {
            problems.push(format!("case `{}` [{level}]: {id} violation has an empty `field`", case.name));
        }
        if v.fix.trim().is_empty() {
            problems.push(format!("case `{}` [{level}]: {id} violation has an empty `fix`", case.name));
        }
        if CONTAINER_LEVEL_IDS.contains(&id) {
            match &v.container {
                None => problems.push(format!(
                    "case `{}` [{level}]: container-level {id} violation has container = None (field {})",
                    case.name, v.field
                )),
                Some(c) if !names.contains(c) => {
                    problems.push(format!("case `{}` [{level}]: {id} violation names container `{c}`, which is not in the pod", case.name))
                }
                Some(_) => {}
            }
        }
    }
    problems
}

fn unknown_ids(case: &Case, ids: &[String]) -> Vec<String> {
    ids.iter()
        .filter(|id| !ALL_IDS.contains(&id.as_str()))
        .map(|id| format!("case `{}`: expectation lists unknown check id `{id}`", case.name))
        .collect()
}

fn fmt_set(set: &BTreeSet<String>) -> String {
    format!("[{}]", set.iter().cloned().collect::<Vec<_>>().join(", "))
}

#[test]
fn corpus_matches_pod_security_standards() {
    let cases = load_cases();
    let mut corpus_problems: Vec<String> = Vec::new();
    let mut mismatches: Vec<String> = Vec::new();
    let mut structural: Vec<String> = Vec::new();

    if cases.len() < MIN_CASES {
        corpus_problems.push(format!("corpus has {} cases, want at least {MIN_CASES}", cases.len()));
    }
    let mut seen = HashSet::new();
    for case in &cases {
        if !seen.insert(case.name.as_str()) {
            corpus_problems.push(format!("duplicate case name `{}`", case.name));
        }
        if case.source.trim().is_empty() {
            corpus_problems.push(format!("case `{}` has an empty source", case.name));
        }
        corpus_problems.extend(unknown_ids(case, &case.baseline));
        corpus_problems.extend(unknown_ids(case, &case.restricted));
    }
    let covered: HashSet<&str> = cases.iter().flat_map(|c| c.baseline.iter().chain(c.restricted.iter())).map(String::as_str).collect();
    for id in ALL_IDS {
        if !covered.contains(id) {
            corpus_problems.push(format!("no case expects check id `{id}`"));
        }
    }

    let mut checked = 0usize;
    for case in &cases {
        let pod = parse_pod(case);
        corpus_problems.extend(round_trip_problem(case, &pod));
        for (level_name, level) in levels() {
            let expected = expected_set(if level_name == "baseline" { &case.baseline } else { &case.restricted });
            let violations = check_pod_security(&pod, level, None);
            let got = id_set(&violations);
            checked += 1;
            if got != expected {
                mismatches.push(format!("case `{}` [{level_name}]: expected {}, got {}", case.name, fmt_set(&expected), fmt_set(&got)));
            }
            structural.extend(violation_problems(case, level_name, &pod, &violations));
        }
    }

    if corpus_problems.is_empty() && mismatches.is_empty() && structural.is_empty() {
        return;
    }
    let mut report = String::new();
    if !corpus_problems.is_empty() {
        let _ = writeln!(report, "{} problem(s) in the corpus itself:", corpus_problems.len());
        for p in &corpus_problems {
            let _ = writeln!(report, "  {p}");
        }
    }
    if !mismatches.is_empty() {
        let _ = writeln!(report, "{} of {checked} case/level checks disagree with the Pod Security Standards:", mismatches.len());
        for m in &mismatches {
            let _ = writeln!(report, "  {m}");
        }
    }
    if !structural.is_empty() {
        let _ = writeln!(report, "{} malformed violation(s):", structural.len());
        for s in &structural {
            let _ = writeln!(report, "  {s}");
        }
    }
    panic!("{report}");
}

#[test]
fn exempting_the_offending_container_removes_its_violations() {
    let cases = load_cases();
    let with_exempt: Vec<&Case> = cases.iter().filter(|c| c.exempt.is_some()).collect();
    assert!(with_exempt.len() >= 3, "the corpus should carry at least 3 exemption cases, has {}", with_exempt.len());

    let mut problems = Vec::new();
    for case in with_exempt {
        let Some(exempt) = &case.exempt else { continue };
        let pod = parse_pod(case);
        if !container_names(&pod).contains(&exempt.container) {
            problems.push(format!("case `{}`: exempt container `{}` is not in the pod", case.name, exempt.container));
            continue;
        }
        for (level_name, level) in levels() {
            let expected = expected_set(if level_name == "baseline" { &exempt.baseline } else { &exempt.restricted });
            let violations = check_pod_security(&pod, level, Some(exempt.container.as_str()));
            let got = id_set(&violations);
            if got != expected {
                problems.push(format!(
                    "case `{}` [{level_name}] exempt `{}`: expected {}, got {}",
                    case.name,
                    exempt.container,
                    fmt_set(&expected),
                    fmt_set(&got)
                ));
            }
            for v in &violations {
                if v.container.as_deref() == Some(exempt.container.as_str()) {
                    problems.push(format!(
                        "case `{}` [{level_name}]: {} violation still attributed to exempt container `{}`",
                        case.name,
                        v.control.id(),
                        exempt.container
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} exemption problem(s):\n  {}", problems.len(), problems.join("\n  "));
}
