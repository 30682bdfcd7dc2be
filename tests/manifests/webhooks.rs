//! The webhook configurations: namespace selectors, client configs, rules, match conditions.

use super::*;

/// Both webhooks: only opted-in namespaces, never kube-system nor the injector's own.
/// `selector` selects opted-in namespaces (labelled with `level` too) and no other.
pub(crate) fn check_namespace_selector(selector: Option<&LabelSelector>, level: &[(&str, &str)], webhook: &str, o: &str) {
    let selector = selector.unwrap_or_else(|| panic!("{o}: {webhook}: no namespaceSelector"));
    let ns = |name: &str, extra: &[(&str, &str)]| {
        let mut l = labels(extra);
        l.insert(NAME_LABEL.to_owned(), name.to_owned());
        l
    };
    let mut opted_in = vec![(INJECTION_LABEL, INJECTION_ENABLED), ("pod-security.kubernetes.io/enforce", "privileged")];
    opted_in.extend_from_slice(level);
    let cases = [
        (ns("ci", &opted_in), true),
        (ns("ci", &[]), false),
        (ns("ci", &[(INJECTION_LABEL, "disabled")]), false),
        (ns("kube-system", &opted_in), false),
        (ns(NS, &opted_in), false),
        (ns("default", &[]), false),
    ];
    for (labels, expected) in cases {
        assert_eq!(selector_matches(selector, &labels), expected, "{o}: {webhook}: namespaceSelector on a namespace labelled {labels:?}");
    }
    let expressions = selector.match_expressions.clone().unwrap_or_default();
    let excluded: BTreeSet<String> = expressions
        .iter()
        .filter(|e| e.key == NAME_LABEL && e.operator == "NotIn")
        .flat_map(|e| e.values.clone().unwrap_or_default())
        .collect();
    assert!(excluded.contains("kube-system") && excluded.contains(NS), "{o}: {webhook}: kube-system and {NS} are excluded by name");
}

pub(crate) fn check_client_config(config: &WebhookClientConfig, service: &Service, path: &str, webhook: &str, o: &str) {
    assert!(config.url.is_none(), "{o}: {webhook}: called through the Service, not a URL");
    assert!(config.ca_bundle.is_none(), "{o}: {webhook}: caBundle is injected at run time, never written in the manifests");
    let ServiceReference { name, namespace, path: service_path, port } = req(&config.service, "clientConfig.service");
    assert_eq!(Some(name.as_str()), service.metadata.name.as_deref(), "{o}: {webhook}: Service name");
    assert_eq!(Some(namespace.as_str()), service.metadata.namespace.as_deref(), "{o}: {webhook}: Service namespace");
    let port = port.unwrap_or(443);
    let service_port = service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| p.port == port)
        .unwrap_or_else(|| panic!("{o}: {webhook}: the Service has no port {port}"));
    assert_eq!(
        service_port.target_port,
        Some(IntOrString::String("https".to_owned())),
        "{o}: {webhook}: port {port} reaches the HTTPS listener"
    );
    assert_eq!(service_path.as_deref(), Some(path), "{o}: {webhook}: path");
    assert!(REVIEW_ENDPOINTS.iter().any(|e| e.path == path), "{o}: {webhook}: the server answers no {path}");
}

pub(crate) fn rule_pairs(rules: &[RuleWithOperations], o: &str) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for rule in rules {
        assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]), "{o}: core API group only");
        assert_eq!(rule.api_versions.as_deref(), Some(&["v1".to_owned()][..]), "{o}: v1 only");
        assert!(rule.scope.as_deref().is_none_or(|s| s == "Namespaced"), "{o}: namespaced scope");
        for resource in rule.resources.iter().flatten() {
            for operation in rule.operations.iter().flatten() {
                assert_ne!(operation, "*", "{o}: no wildcard operation");
                assert_ne!(resource, "*", "{o}: no wildcard resource");
                pairs.insert((resource.clone(), operation.clone()));
            }
        }
    }
    pairs
}

/// A syntactic sanity check of a CEL expression (no CEL compiler here): quotes and brackets
/// balance, and every subscript of `object.metadata.annotations` is guarded by `has()`.
pub(crate) fn check_cel_plausible(expression: &str) -> Result<(), String> {
    let mut stack = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for ch in expression.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == q {
                quote = None;
            }
            continue;
        }
        match ch {
            '\'' | '"' => quote = Some(ch),
            '(' | '[' | '{' => stack.push(ch),
            ')' | ']' | '}' => {
                let open = stack.pop().ok_or_else(|| format!("unbalanced {ch}"))?;
                if !matches!((open, ch), ('(', ')') | ('[', ']') | ('{', '}')) {
                    return Err(format!("{open} closed by {ch}"));
                }
            }
            _ => {}
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} string"));
    }
    if let Some(open) = stack.pop() {
        return Err(format!("unclosed {open}"));
    }
    if expression.contains("&&&") || expression.contains("|||") || expression.contains("===") {
        return Err("not a CEL operator".to_owned());
    }
    let access = "object.metadata.annotations";
    if !expression.contains(access) {
        return Err(format!("does not read {access}"));
    }
    let guard = format!("has({access})");
    let guarded_at =
        expression.find(&guard).ok_or_else(|| format!("no {guard}: a pod without annotations would make the expression fail"))?;
    let first_subscript = expression.find(&format!("{access}[")).unwrap_or(usize::MAX);
    if first_subscript < guarded_at {
        return Err(format!("{access}[...] is read before {guard}"));
    }
    if expression.contains("oldObject") {
        return Err("oldObject is null on CREATE".to_owned());
    }
    Ok(())
}

pub(crate) fn check_mutating(r: &Rendered, service: &Service) -> MutatingWebhookConfiguration {
    let o = &r.overlay;
    let config = one(&r.mutating, "MutatingWebhookConfiguration", o).clone();
    assert_eq!(name_of(&config.metadata), NAME);
    let webhooks = config.webhooks.clone().unwrap_or_default();
    let webhook = one(&webhooks, "mutating webhook", o);
    let w = webhook.name.as_str();
    assert_eq!(w, "inject.dind-injector.io");
    assert_eq!(webhook.admission_review_versions, strings(&["v1"]), "{o}: {w}: admissionReviewVersions");
    assert_eq!(webhook.side_effects, "None", "{o}: {w}: sideEffects");
    assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"), "{o}: {w}: failurePolicy");
    assert!(webhook.timeout_seconds.is_some_and(|t| (1..=10).contains(&t)), "{o}: {w}: timeoutSeconds set and at most 10");
    assert_eq!(webhook.reinvocation_policy.as_deref(), Some("IfNeeded"), "{o}: {w}: reinvocationPolicy");
    assert!(webhook.object_selector.is_none(), "{o}: {w}: no objectSelector");
    check_client_config(&webhook.client_config, service, "/mutate", w, o);
    check_namespace_selector(webhook.namespace_selector.as_ref(), &[], w, o);
    let rules = rule_pairs(webhook.rules.as_deref().unwrap_or_default(), o);
    assert_eq!(rules, BTreeSet::from([("pods".to_owned(), "CREATE".to_owned())]), "{o}: {w}: pods CREATE only");

    let conditions = webhook.match_conditions.clone().unwrap_or_default();
    let condition = one(&conditions, "matchCondition", o);
    let e = condition.expression.as_str();
    check_cel_plausible(e).unwrap_or_else(|problem| panic!("{o}: {w}: matchCondition {e:?}: {problem}"));
    assert!(
        e.contains(&format!("'{INJECT}'")) || e.contains(&format!("\"{INJECT}\"")),
        "{o}: {w}: the matchCondition reads the {INJECT} annotation"
    );
    assert!(e.contains("== 'true'") || e.contains("== \"true\""), "{o}: {w}: the matchCondition requires the value \"true\"");
    config
}

/// The validating webhooks: one entry per level of the namespace label `dind-injector.io/pod-security`.
pub(crate) fn check_validating(r: &Rendered, service: &Service) -> ValidatingWebhookConfiguration {
    let o = &r.overlay;
    let config = one(&r.validating, "ValidatingWebhookConfiguration", o).clone();
    assert_eq!(name_of(&config.metadata), NAME);
    let webhooks = config.webhooks.clone().unwrap_or_default();
    let names: Vec<&str> = webhooks.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, [VALIDATE_BASELINE, VALIDATE_RESTRICTED], "{o}: the validating webhooks, one per level");
    for webhook in &webhooks {
        let w = webhook.name.as_str();
        assert_eq!(webhook.admission_review_versions, strings(&["v1"]), "{o}: {w}: admissionReviewVersions");
        assert_eq!(webhook.side_effects, "None", "{o}: {w}: sideEffects");
        assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"), "{o}: {w}: failurePolicy");
        assert!(webhook.timeout_seconds.is_some_and(|t| (1..=10).contains(&t)), "{o}: {w}: timeoutSeconds set and at most 10");
        check_client_config(&webhook.client_config, service, "/validate", w, o);
        let level: &[(&str, &str)] = if w == VALIDATE_RESTRICTED { &[(POD_SECURITY, "restricted")] } else { &[] };
        check_namespace_selector(webhook.namespace_selector.as_ref(), level, w, o);
        let rules = rule_pairs(webhook.rules.as_deref().unwrap_or_default(), o);
        assert_eq!(
            rules,
            BTreeSet::from([
                ("pods".to_owned(), "CREATE".to_owned()),
                ("pods".to_owned(), "UPDATE".to_owned()),
                ("pods/ephemeralcontainers".to_owned(), "UPDATE".to_owned()),
            ]),
            "{o}: {w}: rules: pods CREATE and UPDATE, pods/ephemeralcontainers UPDATE"
        );
        // An opted-in namespace runs at Pod Security `privileged`: what a webhook skips, only
        // its matchConditions decide (and tests/cel_prefilter.rs proves them).
        assert!(webhook.object_selector.is_none(), "{o}: {w}: no objectSelector");
        let conditions = webhook.match_conditions.clone().unwrap_or_default();
        assert!(conditions.len() <= 64, "{o}: {w}: at most 64 matchConditions");
        // Only metadata-only UPDATEs may be skipped by both: CREATE, debug containers and spec
        // changes are sent.
        let e = &conditions
            .iter()
            .find(|c| c.name == "spec-changed")
            .unwrap_or_else(|| panic!("{o}: {w}: no spec-changed matchCondition"))
            .expression;
        for part in [
            "request.operation != 'UPDATE'",
            "(has(request.subResource) && request.subResource == 'ephemeralcontainers')",
            "object.spec != oldObject.spec",
        ] {
            assert!(e.contains(part), "{o}: {w}: the condition must keep {part:?}: {e}");
        }
        let others: Vec<&str> = conditions.iter().map(|c| c.name.as_str()).filter(|n| *n != "spec-changed").collect();
        if w == VALIDATE_RESTRICTED {
            assert!(others.is_empty(), "{o}: {w}: at restricted every pod is sent; found {others:?}");
        } else {
            assert_eq!(others, ["may-break-baseline"], "{o}: {w}: the baseline pre-filter");
        }
    }
    // The expressions are those of manifests/base/webhooks.yaml, which tests/cel_prefilter.rs
    // evaluates: no overlay patches them.
    let base = base_match_conditions();
    for webhook in &webhooks {
        for condition in webhook.match_conditions.iter().flatten() {
            let w = webhook.name.as_str();
            let key = (w.to_owned(), condition.name.clone());
            let written =
                base.get(&key).unwrap_or_else(|| panic!("{o}: {w}: matchCondition {} is not in manifests/base/webhooks.yaml", key.1));
            assert_eq!(
                &condition.expression, written,
                "{o}: {w}: matchCondition {} is not the one in manifests/base/webhooks.yaml",
                condition.name
            );
        }
    }

    // Every opted-in namespace goes to exactly one of them, by its level label; a namespace
    // without the label, or with a value the server does not read as restricted, is at
    // baseline (the server's default, src/policy/validate.rs).
    for (value, expected) in [
        (None, VALIDATE_BASELINE),
        (Some("baseline"), VALIDATE_BASELINE),
        (Some("privileged"), VALIDATE_BASELINE),
        (Some("Restricted"), VALIDATE_BASELINE),
        (Some("restricted"), VALIDATE_RESTRICTED),
    ] {
        let mut ns = labels(&[(INJECTION_LABEL, INJECTION_ENABLED), (NAME_LABEL, "ci")]);
        if let Some(v) = value {
            ns.insert(POD_SECURITY.to_owned(), v.to_owned());
        }
        let selected: Vec<&str> = webhooks
            .iter()
            .filter(|w| w.namespace_selector.as_ref().is_some_and(|s| selector_matches(s, &ns)))
            .map(|w| w.name.as_str())
            .collect();
        assert_eq!(selected, [expected], "{o}: namespace labelled {POD_SECURITY}={value:?}");
    }
    config
}

/// The validating webhooks' matchConditions as manifests/base/webhooks.yaml writes them:
/// (webhook, condition) -> the whole expression.
fn base_match_conditions() -> BTreeMap<(String, String), String> {
    let path = repo_root().join("manifests/base/webhooks.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut conditions = BTreeMap::new();
    for doc in docs.into_iter().filter(|d| d["kind"] == "ValidatingWebhookConfiguration") {
        let config: ValidatingWebhookConfiguration = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for webhook in config.webhooks.into_iter().flatten() {
            for condition in webhook.match_conditions.into_iter().flatten() {
                conditions.insert((webhook.name.clone(), condition.name), condition.expression);
            }
        }
    }
    assert!(!conditions.is_empty(), "{}: no validating matchCondition", path.display());
    conditions
}
