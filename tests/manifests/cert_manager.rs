//! The cert-manager overlay's objects: the Certificate, its Issuer, and what the webhooks take from
//! them.

use super::*;

pub(crate) fn cm_object<'a>(r: &'a Rendered, kind: &str, name: &str) -> &'a Value {
    r.cert_manager
        .iter()
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{}: no {kind} {name}", r.overlay))
}

/// The Issuer a Certificate names, which must be a namespaced Issuer of the same namespace.
pub(crate) fn issuer_of<'a>(r: &'a Rendered, certificate: &Value) -> &'a Value {
    let o = &r.overlay;
    let issuer_ref = &certificate["spec"]["issuerRef"];
    assert_eq!(issuer_ref["kind"], "Issuer", "{o}: the certificates use a namespaced Issuer");
    assert!(issuer_ref["group"].is_null() || issuer_ref["group"] == "cert-manager.io", "{o}: issuerRef.group");
    let name = issuer_ref["name"].as_str().unwrap_or_default();
    let issuer = cm_object(r, "Issuer", name);
    assert_eq!(issuer["metadata"]["namespace"], certificate["metadata"]["namespace"], "{o}: Issuer {name} namespace");
    issuer
}

pub(crate) fn check_cert_manager(
    r: &Rendered,
    service: &Service,
    mutating: &MutatingWebhookConfiguration,
    validating: &ValidatingWebhookConfiguration,
) {
    let o = &r.overlay;
    for object in &r.cert_manager {
        assert_eq!(object["metadata"]["namespace"], NS, "{o}: cert-manager objects live in {NS}");
    }
    let serving: Vec<&Value> =
        r.cert_manager.iter().filter(|v| v["kind"] == "Certificate" && v["spec"]["secretName"] == TLS_SECRET).collect();
    assert_eq!(serving.len(), 1, "{o}: one Certificate writes the Secret {TLS_SECRET}");
    let serving = serving[0];
    assert_ne!(serving["spec"]["isCA"], true, "{o}: the serving certificate is not a CA");
    let dns_names: BTreeSet<&str> = serving["spec"]["dnsNames"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let svc = format!("{}.{}.svc", name_of(&service.metadata), service.metadata.namespace.as_deref().unwrap_or_default());
    for name in [svc.clone(), format!("{svc}.cluster.local")] {
        assert!(dns_names.contains(name.as_str()), "{o}: the serving certificate covers {name}");
    }
    let usages: Vec<&str> = serving["spec"]["usages"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert!(usages.is_empty() || usages.contains(&"server auth"), "{o}: usage server auth");

    // The chain: serving Certificate ← CA Issuer ← CA Certificate ← self-signed Issuer.
    let ca_issuer = issuer_of(r, serving);
    let ca_secret = ca_issuer["spec"]["ca"]["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{o}: the serving certificate's Issuer is not a CA Issuer"));
    let ca_certificate = r
        .cert_manager
        .iter()
        .find(|v| v["kind"] == "Certificate" && v["spec"]["secretName"] == ca_secret)
        .unwrap_or_else(|| panic!("{o}: no Certificate writes the CA Secret {ca_secret}"));
    assert_eq!(ca_certificate["spec"]["isCA"], true, "{o}: the CA certificate has isCA: true");
    let root = issuer_of(r, ca_certificate);
    assert!(root["spec"]["selfSigned"].is_object(), "{o}: the CA is issued by a self-signed Issuer");

    // The CA injector reads the serving Certificate.
    let expected = format!(
        "{}/{}",
        serving["metadata"]["namespace"].as_str().unwrap_or_default(),
        serving["metadata"]["name"].as_str().unwrap_or_default()
    );
    for (kind, meta) in [("mutating", &mutating.metadata), ("validating", &validating.metadata)] {
        let value = meta.annotations.as_ref().and_then(|a| a.get(INJECT_CA_FROM));
        assert_eq!(value, Some(&expected), "{o}: {kind} webhook configuration: {INJECT_CA_FROM}");
    }
}
