//! The cluster side against recorded apiserver exchanges (kube's tower-test pattern): each
//! scenario answers the client's requests in order with the shapes a real kube-apiserver sends
//! (status codes, `Status` bodies, resourceVersions) and checks what the client asked.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use dind_injector::cluster::ca_bundle::{BundleWatch, PatchReport, ensure_ca_bundle, watch_ca_bundle};
use dind_injector::cluster::certs::{SelfManaged, ServingCert, ensure_secret, issue};
use dind_injector::cluster::daemon_config::{self, SyncOutcome};
use dind_injector::cluster::namespaces::NamespaceCache;
use dind_injector::cluster::runtime_classes;
use dind_injector::config::Isolation;
use dind_injector::inject::{ClusterInfo, RuntimeClasses, isolation};
use dind_injector::namespace::NamespaceLookup;
use http::{Method, Response};
use kube::client::Body;
use serde_json::{Value, json};
use support::kube_mock::{answer_trusted_cas, bounded, mock_client, next, not_found, respond, status};

fn namespace_meta(name: &str, rv: &str, opted_in: bool) -> Value {
    let mut labels = json!({"kubernetes.io/metadata.name": name});
    if opted_in {
        labels["dind-injector.io/injection"] = json!("enabled");
        labels["pod-security.kubernetes.io/enforce"] = json!("privileged");
    }
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
           "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": rv, "labels": labels,
                        "annotations": {"dind-injector.io/memory": "2Gi"}}})
}

#[tokio::test]
async fn namespace_cache_lists_then_watches_and_keeps_serving_when_the_apiserver_goes() {
    let (client, mut api) = mock_client();
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let (cache, driver) = NamespaceCache::start(client, Some(tx));
    let driver = tokio::spawn(driver);
    assert!(!cache.is_ready(), "not ready before the first list");

    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!(method, Method::GET);
    assert!(uri.starts_with("/api/v1/namespaces?"), "{uri}");
    assert!(!uri.contains("watch=true"), "the first call lists: {uri}");
    send.send_response(respond(
        200,
        json!({
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "1000"},
            "items": [namespace_meta("ci", "990", true), namespace_meta("default", "12", false)]
        }),
    ));

    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!(method, Method::GET);
    assert!(uri.contains("watch=true") && uri.contains("resourceVersion=1000"), "then watches from the list's version: {uri}");
    assert!(cache.is_ready(), "ready once the first list is in");
    let ci = cache.get("ci").unwrap_or_else(|| panic!("ci missing"));
    assert!(ci.is_opted_in());
    assert_eq!(ci.annotations.get("dind-injector.io/memory").map(String::as_str), Some("2Gi"));
    assert!(cache.get("default").is_some_and(|v| !v.is_opted_in()));
    let mut seen =
        vec![bounded("change", changes.recv()).await.unwrap_or_default(), bounded("change", changes.recv()).await.unwrap_or_default()];
    seen.sort();
    assert_eq!(seen, ["ci", "default"], "every namespace is synced after a full list");

    let events = [
        json!({"type": "ADDED", "object": namespace_meta("team-b", "1001", true)}),
        json!({"type": "MODIFIED", "object": namespace_meta("ci", "1002", false)}),
    ];
    let stream: Vec<u8> = events
        .iter()
        .flat_map(|e| {
            let mut line = serde_json::to_vec(e).unwrap_or_default();
            line.push(b'\n');
            line
        })
        .collect();
    send.send_response(Response::builder().status(200).body(Body::from(stream)).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(bounded("change", changes.recv()).await.as_deref(), Some("team-b"));
    assert_eq!(bounded("change", changes.recv()).await.as_deref(), Some("ci"));
    assert!(cache.get("team-b").is_some_and(|v| v.is_opted_in()));
    assert!(cache.get("ci").is_some_and(|v| !v.is_opted_in()), "a label removed is seen");
    assert!(cache.is_connected());

    // The watch ends and the apiserver is gone: the cache keeps what it has.
    let (_, uri, _, send) = next(&mut api).await;
    assert!(uri.contains("watch=true") && uri.contains("resourceVersion=1002"), "re-watches from the last version: {uri}");
    send.send_response(respond(503, status(503, "ServiceUnavailable", "the server is currently unable to handle the request", json!({}))));
    let disconnected = bounded("disconnect", async {
        while cache.is_connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    disconnected.await;
    assert!(cache.is_ready(), "still ready: serving from the cache");
    assert!(cache.get("team-b").is_some_and(|v| v.is_opted_in()));
    driver.abort();
}

const CM: &str = "dind-injector-daemon-config";
const CM_PATH: &str = "/api/v1/namespaces/ci/configmaps/dind-injector-daemon-config";
const DAEMON_JSON: &str = "{\n  \"registry-mirrors\": [\n    \"https://mirror.example.com\"\n  ]\n}";

fn configmap(managed: bool, data: &str, rv: &str) -> Value {
    let mut cm = json!({"kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": CM, "namespace": "ci", "uid": "cm-uid", "resourceVersion": rv},
        "data": {"daemon.json": data}});
    if managed {
        cm["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "dind-injector"});
    }
    cm
}

#[tokio::test]
async fn daemon_json_is_applied_server_side_without_force() {
    let (client, mut api) = mock_client();
    let task = tokio::spawn(async move { daemon_config::ensure(&client, "ci", CM, DAEMON_JSON).await });
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::GET, CM_PATH));
    send.send_response(respond(404, not_found("configmaps", CM)));
    let (method, uri, body, send) = next(&mut api).await;
    assert_eq!(method, Method::PATCH);
    assert!(uri.starts_with(CM_PATH) && uri.contains("fieldManager=dind-injector"), "{uri}");
    assert!(!uri.contains("force"), "never forced: another manager's fields stay theirs: {uri}");
    assert_eq!(body["data"]["daemon.json"], DAEMON_JSON);
    assert_eq!(body["metadata"]["labels"]["app.kubernetes.io/managed-by"], "dind-injector");
    assert_eq!((body["apiVersion"].as_str(), body["kind"].as_str()), (Some("v1"), Some("ConfigMap")));
    send.send_response(respond(200, configmap(true, DAEMON_JSON, "2001")));
    let outcome = bounded("ensure", task).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(outcome, Ok(SyncOutcome::Applied)), "{outcome:?}");
}

#[tokio::test]
async fn a_users_own_configmap_is_left_alone_and_a_conflict_is_not_forced() {
    // The namespace already has a ConfigMap of that name that dind-injector does not manage.
    let (client, mut api) = mock_client();
    let task = tokio::spawn(async move { daemon_config::ensure(&client, "ci", CM, DAEMON_JSON).await });
    let (_, _, _, send) = next(&mut api).await;
    send.send_response(respond(200, configmap(false, "{\"debug\": true}", "77")));
    let outcome = bounded("ensure", task).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(outcome, Ok(SyncOutcome::UserOwned)), "{outcome:?}");

    // A user creates it between our read and our apply: the apiserver reports the conflict.
    let (client, mut api) = mock_client();
    let task = tokio::spawn(async move { daemon_config::ensure(&client, "ci", CM, DAEMON_JSON).await });
    let (_, _, _, send) = next(&mut api).await;
    send.send_response(respond(404, not_found("configmaps", CM)));
    let (method, _, _, send) = next(&mut api).await;
    assert_eq!(method, Method::PATCH);
    send.send_response(respond(409, status(409, "Conflict",
        "Apply failed with 1 conflict: conflict with \"kubectl-create\" using v1: .data.daemon.json",
        json!({"causes": [{"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-create\" using v1", "field": ".data.daemon.json"}]}))));
    let outcome = bounded("ensure", task).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(outcome, Ok(SyncOutcome::Conflict)), "{outcome:?}");
}

#[tokio::test]
async fn an_unchanged_configmap_is_not_written_and_an_opted_out_namespace_loses_only_ours() {
    let (client, mut api) = mock_client();
    let task = tokio::spawn(async move { daemon_config::ensure(&client, "ci", CM, DAEMON_JSON).await });
    let (_, _, _, send) = next(&mut api).await;
    send.send_response(respond(200, configmap(true, DAEMON_JSON, "2001")));
    let outcome = bounded("ensure", task).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(outcome, Ok(SyncOutcome::Unchanged)), "{outcome:?}");

    let (client, mut api) = mock_client();
    let task = tokio::spawn(async move { daemon_config::remove(&client, "ci", CM).await });
    let (_, _, _, send) = next(&mut api).await;
    send.send_response(respond(200, configmap(true, DAEMON_JSON, "2001")));
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!((method, uri.split('?').next()), (Method::DELETE, Some(CM_PATH)));
    send.send_response(respond(
        200,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": CM, "kind": "configmaps", "uid": "cm-uid"}}),
    ));
    let outcome = bounded("remove", task).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(outcome, Ok(SyncOutcome::Removed)), "{outcome:?}");

    let (client, mut api) = mock_client();
    let task = tokio::spawn(async move { daemon_config::remove(&client, "ci", CM).await });
    let (_, _, _, send) = next(&mut api).await;
    send.send_response(respond(200, configmap(false, "{}", "5")));
    let outcome = bounded("remove", task).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(outcome, Ok(SyncOutcome::Absent)), "a user's ConfigMap is never deleted: {outcome:?}");
}

fn self_managed() -> SelfManaged {
    SelfManaged {
        namespace: "dind-injector".into(),
        secret: "dind-injector-tls".into(),
        service: "dind-injector".into(),
        cluster_domain: "cluster.local".into(),
        webhook_configuration: "dind-injector".into(),
    }
}

const SECRET_PATH: &str = "/api/v1/namespaces/dind-injector/secrets/dind-injector-tls";

#[tokio::test]
async fn the_first_replica_creates_the_secret_and_the_second_uses_it() {
    rustls::crypto::ring::default_provider().install_default().ok();
    let theirs = dind_injector::certs::generate_dev_certs(&["dind-injector.dind-injector.svc".into()]).unwrap_or_else(|e| panic!("{e}"));
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let their_secret = json!({"kind": "Secret", "apiVersion": "v1", "type": "kubernetes.io/tls",
        "metadata": {"name": "dind-injector-tls", "namespace": "dind-injector", "resourceVersion": "501",
                     "labels": {"app.kubernetes.io/managed-by": "dind-injector"}},
        "data": {"tls.crt": b64(&theirs.tls_cert_pem), "tls.key": b64(&theirs.tls_key_pem), "ca.crt": b64(&theirs.ca_cert_pem)}});

    let (client, mut api) = mock_client();
    let task = tokio::spawn(async move { ensure_secret(&client, &self_managed()).await });
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::GET, SECRET_PATH));
    send.send_response(respond(404, not_found("secrets", "dind-injector-tls")));
    // A first install: no webhook configuration trusts anything yet.
    answer_trusted_cas(&mut api, None, None).await;
    let (method, uri, body, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::POST, "/api/v1/namespaces/dind-injector/secrets?"));
    assert_eq!(body["type"], "kubernetes.io/tls");
    assert_eq!(ders(&String::from_utf8_lossy(&unb64(&body["data"]["ca.crt"]))).len(), 1, "a first install's bundle is its one CA");
    assert!(body["data"]["tls.key"].is_string() && body["data"]["ca.crt"].is_string());
    // The other replica was faster.
    send.send_response(respond(
        409,
        status(
            409,
            "AlreadyExists",
            "secrets \"dind-injector-tls\" already exists",
            json!({"name": "dind-injector-tls", "kind": "secrets"}),
        ),
    ));
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::GET, SECRET_PATH));
    send.send_response(respond(200, their_secret));
    let cert = bounded("ensure_secret", task).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cert.cert_pem, theirs.tls_cert_pem, "the loser serves the winner's certificate");
    assert_eq!(cert.ca_bundle_pem, theirs.ca_cert_pem);
}

fn unb64(v: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `kubectl delete secret dind-injector-tls` (the README's way to switch certificates.mode, or
/// to start over) while replicas still serve the old certificate: the replica that makes the new
/// Secret keeps every CA the webhook configurations still trust, so the apiserver, given the new
/// caBundle, still trusts the old replicas until they have moved to the new certificate.
#[tokio::test]
async fn a_secret_made_anew_keeps_every_ca_the_webhooks_still_trust() {
    rustls::crypto::ring::default_provider().install_default().ok();
    let cfg = self_managed();
    let old = issue(&cfg, SystemTime::now()).unwrap_or_else(|e| panic!("{e}"));
    let cert_manager =
        dind_injector::certs::generate_dev_certs(&["dind-injector.dind-injector.svc".into()]).unwrap_or_else(|e| panic!("{e}"));
    let (client, mut api) = mock_client();
    let task = tokio::spawn(async move { ensure_secret(&client, &self_managed()).await });
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::GET, SECRET_PATH));
    send.send_response(respond(404, not_found("secrets", "dind-injector-tls")));
    // The mutating configuration trusts the old self-managed CA, the validating one also
    // cert-manager's (a switch half done).
    let both = format!("{}{}", old.ca_cert_pem, cert_manager.ca_cert_pem);
    answer_trusted_cas(&mut api, Some(&old.ca_cert_pem), Some(&both)).await;
    let (method, uri, mut body, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::POST, "/api/v1/namespaces/dind-injector/secrets?"));
    body["metadata"]["resourceVersion"] = json!("900");
    send.send_response(respond(201, body));
    let made = bounded("ensure_secret", task).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));

    let bundle = ders(&made.ca_bundle_pem);
    assert_eq!(bundle.len(), 3, "the new CA, the old self-managed CA and cert-manager's, each once");
    let new_leaf = &ders(&made.cert_pem)[0];
    let name = "dind-injector.dind-injector.svc";
    assert!(trusted(&cas_pem(&bundle[0]), new_leaf, name), "the new CA is first in ca.crt");
    assert!(trusted(&made.ca_bundle_pem, new_leaf, name));
    assert!(trusted(&made.ca_bundle_pem, &ders(&old.cert_pem)[0], name), "a replica still serving the old certificate stays trusted");
    assert!(trusted(&made.ca_bundle_pem, &ders(&cert_manager.tls_cert_pem)[0], name), "and one serving cert-manager's");
    // What it was before: the new CA alone, which refuses the old replicas (x509: certificate
    // signed by unknown authority).
    assert!(!trusted(&cas_pem(&bundle[0]), &ders(&old.cert_pem)[0], name));
}

#[tokio::test]
async fn ca_bundle_is_patched_where_it_differs() {
    let bundle = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let (client, mut api) = mock_client();
    let (report, patched) = counting_report();
    let task = tokio::spawn(async move { ensure_ca_bundle(&client, &self_managed(), bundle, &report).await });
    let hook = |name: &str, ca: Option<&str>| {
        let mut h = json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": {"namespace": "dind-injector", "name": "dind-injector", "path": "/mutate", "port": 443}}});
        if let Some(ca) = ca {
            use base64::Engine;
            h["clientConfig"]["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(ca));
        }
        h
    };
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::GET, "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/dind-injector"));
    send.send_response(respond(
        200,
        json!({"kind": "MutatingWebhookConfiguration", "apiVersion": "admissionregistration.k8s.io/v1",
        "metadata": {"name": "dind-injector", "resourceVersion": "42"}, "webhooks": [hook("inject.dind-injector.io", None)]}),
    ));
    let (method, uri, body, send) = next(&mut api).await;
    assert_eq!(method, Method::PATCH);
    assert!(uri.starts_with("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/dind-injector"), "{uri}");
    assert_eq!(body[0]["path"], "/webhooks/0/clientConfig/caBundle", "{body}");
    use base64::Engine;
    assert_eq!(body[0]["value"], base64::engine::general_purpose::STANDARD.encode(bundle));
    send.send_response(respond(
        200,
        json!({"kind": "MutatingWebhookConfiguration", "apiVersion": "admissionregistration.k8s.io/v1",
        "metadata": {"name": "dind-injector", "resourceVersion": "43"}, "webhooks": [hook("inject.dind-injector.io", Some(bundle))]}),
    ));
    // The validating configuration already trusts this bundle: no patch.
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!(
        (method, uri.as_str()),
        (Method::GET, "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/dind-injector")
    );
    send.send_response(respond(
        200,
        json!({"kind": "ValidatingWebhookConfiguration", "apiVersion": "admissionregistration.k8s.io/v1",
        "metadata": {"name": "dind-injector", "resourceVersion": "44"}, "webhooks": [hook("validate.dind-injector.io", Some(bundle))]}),
    ));
    let changed = bounded("ensure_ca_bundle", task).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    assert!(changed);
    assert_eq!(patched.load(Ordering::SeqCst), 1, "one patch reported");
}

/// A report that counts successful patches.
fn counting_report() -> (PatchReport, Arc<AtomicUsize>) {
    let patched = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&patched);
    let report: PatchReport = Arc::new(move |ok| {
        if ok {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (report, patched)
}

async fn until(what: &str, condition: impl Fn() -> bool) {
    bounded(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

fn watch_stream(events: &[Value]) -> Response<Body> {
    let stream: Vec<u8> = events
        .iter()
        .flat_map(|e| {
            let mut line = serde_json::to_vec(e).unwrap_or_default();
            line.push(b'\n');
            line
        })
        .collect();
    Response::builder().status(200).body(Body::from(stream)).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_namespace_watch_is_connected_again_after_a_drop_though_nothing_changed() {
    let (client, mut api) = mock_client();
    let (cache, driver) = NamespaceCache::start(client, None);
    let driver = tokio::spawn(driver);
    assert!(!cache.is_connected(), "not connected before the apiserver answered");

    let (_, uri, _, send) = next(&mut api).await;
    assert!(uri.starts_with("/api/v1/namespaces?") && !uri.contains("watch=true"), "{uri}");
    send.send_response(respond(
        200,
        json!({
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "1000"}, "items": [namespace_meta("ci", "990", true)]
        }),
    ));
    let (_, uri, _, send) = next(&mut api).await;
    assert!(uri.contains("watch=true") && uri.contains("resourceVersion=1000"), "{uri}");
    assert!(cache.is_connected(), "a successful list is a connection");

    // The apiserver goes away: the connection drops before any answer.
    send.send_error(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer"));
    until("the drop is seen", || !cache.is_connected()).await;

    // After a backoff the same watch again; the apiserver is back and nothing has changed, so the
    // watch sends no event at all (here it even ends at once).
    let (_, uri, _, send) = next(&mut api).await;
    assert!(uri.contains("watch=true") && uri.contains("resourceVersion=1000"), "resumes, no relist: {uri}");
    send.send_response(watch_stream(&[]));
    let (_, uri, _, _pending) = next(&mut api).await;
    assert!(cache.is_connected(), "connected again as soon as the watch was answered, with no event");
    assert!(uri.contains("watch=true") && uri.contains("resourceVersion=1000") && uri.contains("timeoutSeconds=290"), "{uri}");
    assert!(cache.is_ready() && cache.get("ci").is_some_and(|v| v.is_opted_in()), "the cache kept its namespaces");
    driver.abort();
}

const MUTATING: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn mutating_configuration(rv: &str, ca: Option<&str>) -> Value {
    let mut hook = json!({"name": "inject.dind-injector.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "clientConfig": {"service": {"namespace": "dind-injector", "name": "dind-injector", "path": "/mutate", "port": 443}}});
    if let Some(ca) = ca {
        hook["clientConfig"]["caBundle"] = json!(b64(ca));
    }
    json!({"kind": "MutatingWebhookConfiguration", "apiVersion": "admissionregistration.k8s.io/v1",
           "metadata": {"name": "dind-injector", "uid": format!("uid-{rv}"), "resourceVersion": rv}, "webhooks": [hook]})
}

fn tls_secret(rv: &str, cert: &str, key: &str, ca: &str) -> Value {
    json!({"kind": "Secret", "apiVersion": "v1", "type": "kubernetes.io/tls",
        "metadata": {"name": "dind-injector-tls", "namespace": "dind-injector", "resourceVersion": rv,
                     "labels": {"app.kubernetes.io/managed-by": "dind-injector"}},
        "data": {"tls.crt": b64(cert), "tls.key": b64(key), "ca.crt": b64(ca)}})
}

const BUNDLE: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

#[tokio::test]
async fn a_webhook_configuration_recreated_without_ca_bundle_is_corrected_by_the_watch() {
    let (client, mut api) = mock_client();
    let (report, patched) = counting_report();
    let (_current_tx, current) = tokio::sync::watch::channel(BUNDLE.to_owned());
    let shared = BundleWatch { current, secret_changed: Arc::new(tokio::sync::Notify::new()), report };
    let task = tokio::spawn(watch_ca_bundle::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>(
        client,
        self_managed(),
        shared,
    ));

    // Listed by name, and already right: nothing to do.
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!(method, Method::GET);
    assert!(uri.starts_with(&format!("{MUTATING}?")) && uri.contains("fieldSelector=metadata.name%3Ddind-injector"), "by name only: {uri}");
    send.send_response(respond(
        200,
        json!({"kind": "MutatingWebhookConfigurationList", "apiVersion": "admissionregistration.k8s.io/v1",
        "metadata": {"resourceVersion": "100"}, "items": [mutating_configuration("42", Some(BUNDLE))]}),
    ));

    // Then watched; a GitOps prune deletes it and applies it again, without caBundle.
    let (_, uri, _, send) = next(&mut api).await;
    assert!(
        uri.contains("watch=true") && uri.contains("resourceVersion=100") && uri.contains("fieldSelector=metadata.name%3Ddind-injector"),
        "{uri}"
    );
    send.send_response(watch_stream(&[
        json!({"type": "DELETED", "object": mutating_configuration("101", Some(BUNDLE))}),
        json!({"type": "ADDED", "object": mutating_configuration("102", None)}),
    ]));

    // Corrected at once (no poll here at all): the Secret is asked for the bundle, then the patch.
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::GET, SECRET_PATH));
    send.send_response(respond(200, tls_secret("7", "CERT", "KEY", BUNDLE)));
    let (method, uri, body, send) = next(&mut api).await;
    assert_eq!(method, Method::PATCH);
    assert!(uri.starts_with(&format!("{MUTATING}/dind-injector?")), "{uri}");
    assert_eq!(body, json!([{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": b64(BUNDLE)}]));
    send.send_response(respond(200, mutating_configuration("103", Some(BUNDLE))));

    // The watch resumes after the recreated object; our own patch is seen and left alone.
    let (_, uri, _, send) = next(&mut api).await;
    assert!(uri.contains("watch=true") && uri.contains("resourceVersion=102"), "{uri}");
    assert_eq!(patched.load(Ordering::SeqCst), 1);
    send.send_response(watch_stream(&[json!({"type": "MODIFIED", "object": mutating_configuration("103", Some(BUNDLE))})]));
    let (_, uri, _, _pending) = next(&mut api).await;
    assert!(uri.contains("watch=true") && uri.contains("resourceVersion=103"), "no patch for a current bundle: {uri}");
    assert_eq!(patched.load(Ordering::SeqCst), 1);
    task.abort();
}

#[tokio::test]
async fn a_bundle_renewed_by_another_replica_is_kept_not_overwritten() {
    let (client, mut api) = mock_client();
    let (report, patched) = counting_report();
    let (_current_tx, current) = tokio::sync::watch::channel(BUNDLE.to_owned());
    let secret_changed = Arc::new(tokio::sync::Notify::new());
    let shared = BundleWatch { current, secret_changed: Arc::clone(&secret_changed), report };
    let task = tokio::spawn(watch_ca_bundle::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>(
        client,
        self_managed(),
        shared,
    ));
    let renewed = format!("-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n{BUNDLE}");
    let (_, _, _, send) = next(&mut api).await;
    send.send_response(respond(
        200,
        json!({"kind": "MutatingWebhookConfigurationList", "apiVersion": "admissionregistration.k8s.io/v1",
        "metadata": {"resourceVersion": "100"}, "items": [mutating_configuration("42", Some(&renewed))]}),
    ));
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::GET, SECRET_PATH), "a bundle we do not know: ask the Secret first");
    send.send_response(respond(200, tls_secret("8", "CERT2", "KEY2", &renewed)));
    let (_, uri, _, _pending) = next(&mut api).await;
    assert!(uri.contains("watch=true"), "no patch: the Secret has that bundle: {uri}");
    assert_eq!(patched.load(Ordering::SeqCst), 0);
    bounded("the certificate loop is woken", secret_changed.notified()).await;
    task.abort();
}

/// The subjectAltName entries of a certificate (DNS names as text, anything else tagged).
fn subject_alt_names(cert: &[u8]) -> Vec<String> {
    fn item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            let (bytes, after) = (rest.get(..n)?, rest.get(n..)?);
            rest = after;
            bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        Some((tag, rest.get(..len)?, rest.get(len..)?))
    }
    let oid = [0x06, 0x03, 0x55, 0x1d, 0x11];
    let Some(at) = cert.windows(oid.len()).position(|w| w == oid) else { return vec![] };
    let Some((mut tag, mut value, rest)) = cert.get(at + oid.len()..).and_then(item) else { return vec![] };
    if tag == 0x01 {
        let Some((t, v, _)) = item(rest) else { return vec![] };
        (tag, value) = (t, v);
    }
    assert_eq!(tag, 0x04, "extnValue is an OCTET STRING");
    let Some((0x30, mut names, _)) = item(value) else { panic!("GeneralNames is a SEQUENCE") };
    let mut out = Vec::new();
    while let Some((tag, value, rest)) = item(names) {
        out.push(match tag {
            0x82 => String::from_utf8_lossy(value).into_owned(),
            0x87 => format!("IP {value:?}"),
            other => format!("tag {other:#x}"),
        });
        names = rest;
    }
    out
}

fn ders(pem: &str) -> Vec<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).map(|c| c.map(|c| c.as_ref().to_vec()).unwrap_or_else(|e| panic!("{e}"))).collect()
}

fn contains(der: &[u8], text: &str) -> bool {
    der.windows(text.len()).any(|w| w == text.as_bytes())
}

/// Whether a TLS client trusting `bundle` accepts `leaf` for `name`.
fn trusted(bundle: &str, leaf: &[u8], name: &str) -> bool {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    for ca in ders(bundle) {
        roots.add(CertificateDer::from(ca)).unwrap_or_else(|e| panic!("{e}"));
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots)).build().unwrap_or_else(|e| panic!("{e}"));
    let name = ServerName::try_from(name.to_owned()).unwrap_or_else(|e| panic!("{e}"));
    verifier.verify_server_cert(&CertificateDer::from(leaf.to_vec()), &[], &name, &[], UnixTime::now()).is_ok()
}

#[test]
fn self_managed_certificates_carry_exactly_the_service_names_and_production_names() {
    rustls::crypto::ring::default_provider().install_default().ok();
    let mut cfg = self_managed();
    cfg.service = "dind".into();
    cfg.namespace = "ci-tools".into();
    cfg.cluster_domain = "corp.example".into();
    let issued = issue(&cfg, SystemTime::now()).unwrap_or_else(|e| panic!("{e}"));
    let leaf = ders(&issued.cert_pem);
    assert_eq!(leaf.len(), 1, "tls.crt is the serving certificate");
    assert_eq!(
        subject_alt_names(&leaf[0]),
        ["dind", "dind.ci-tools", "dind.ci-tools.svc", "dind.ci-tools.svc.corp.example"],
        "exactly the Service's names: no 127.0.0.1, ::1 or localhost"
    );
    assert!(contains(&leaf[0], "dind.ci-tools.svc"), "CN is the Service's DNS name");
    let ca = ders(&issued.ca_cert_pem);
    assert!(contains(&ca[0], "dind-injector webhook CA"));
    for der in [&leaf[0], &ca[0]] {
        assert!(!contains(der, "development"), "no development names");
    }
    for name in ["dind.ci-tools.svc", "dind.ci-tools.svc.corp.example", "dind"] {
        assert!(trusted(&issued.ca_cert_pem, &leaf[0], name), "{name}");
    }
    for name in ["localhost", "127.0.0.1", "::1", "dind.ci-tools.svc.cluster.local", "other.ci-tools.svc"] {
        assert!(!trusted(&issued.ca_cert_pem, &leaf[0], name), "{name} must not be trusted");
    }
    assert!(!format!("{issued:?}").contains("PRIVATE"), "Debug never shows the key");

    cfg.cluster_domain = "bad domain".into();
    let e = issue(&cfg, SystemTime::now()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("--cluster-domain") && e.contains("bad domain"), "{e}");
}

#[cfg(unix)]
#[test]
fn key_files_are_written_0600_and_owned_by_the_injector() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (cert, key) = (dir.path().join("tls/tls.crt"), dir.path().join("tls/tls.key"));
    // An older key file left readable by everyone is replaced, not reused.
    std::fs::create_dir_all(dir.path().join("tls")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&key, "old").unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap_or_else(|e| panic!("{e}"));
    let serving = ServingCert { cert_pem: "CERT\n".into(), key_pem: "KEY\n".into(), ca_bundle_pem: "CA\n".into() };
    serving.write(&cert, &key).unwrap_or_else(|e| panic!("{e}"));
    let meta = |p: &std::path::Path| std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(meta(&key).permissions().mode() & 0o777, 0o600);
    assert_eq!(meta(&cert).permissions().mode() & 0o777, 0o644);
    assert_eq!(meta(&key).uid(), meta(dir.path()).uid(), "owned by the user the injector runs as");
    assert_eq!(std::fs::read_to_string(&key).ok().as_deref(), Some("KEY\n"));
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tls")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert_eq!(left.len(), 2, "no temporary files left: {left:?}");
}

#[tokio::test]
async fn renewal_keeps_the_cas_still_valid_and_drops_the_expired_ones() {
    rustls::crypto::ring::default_provider().install_default().ok();
    let cfg = self_managed();
    let days = |n: u64| Duration::from_secs(n * 86_400);
    // The certificate in use expires in 15 days; an older CA in the bundle expired a year ago.
    let in_use = issue(&cfg, SystemTime::now() - days(350)).unwrap_or_else(|e| panic!("{e}"));
    let expired = issue(&cfg, SystemTime::now() - days(800)).unwrap_or_else(|e| panic!("{e}"));
    let old_bundle = format!("{}{}", in_use.ca_cert_pem, expired.ca_cert_pem);

    let (client, mut api) = mock_client();
    let task = tokio::spawn(async move { ensure_secret(&client, &self_managed()).await });
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::GET, SECRET_PATH));
    send.send_response(respond(200, tls_secret("501", &in_use.cert_pem, &in_use.key_pem, &old_bundle)));
    let (method, uri, mut body, send) = next(&mut api).await;
    assert_eq!((method, uri.split('?').next()), (Method::PUT, Some(SECRET_PATH)));
    assert_eq!(body["metadata"]["resourceVersion"], "501", "the first replica to renew wins; the others get a conflict");
    let field = |k: &str| {
        use base64::Engine;
        let text = body["data"][k].as_str().unwrap_or_default();
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default()).unwrap_or_default()
    };
    let (bundle, leaf) = (field("ca.crt"), ders(&field("tls.crt")));
    let cas = ders(&bundle);
    assert_eq!(cas.len(), 2, "the new CA and the one still in use, not the expired one");
    assert_eq!(cas[1], ders(&in_use.ca_cert_pem)[0], "the CA of the certificate still served stays");
    assert!(!cas.contains(&ders(&expired.ca_cert_pem)[0]), "the expired CA is dropped");
    assert!(trusted(&bundle, &leaf[0], "dind-injector.dind-injector.svc"), "the new certificate is trusted");
    assert!(trusted(&bundle, &ders(&in_use.cert_pem)[0], "dind-injector.dind-injector.svc"), "so is the one still in use");
    assert!(!trusted(&cas_pem(&cas[1]), &leaf[0], "dind-injector.dind-injector.svc"), "the new certificate has a new CA");
    body["kind"] = json!("Secret");
    body["apiVersion"] = json!("v1");
    body["metadata"]["resourceVersion"] = json!("502");
    send.send_response(respond(200, body));
    let cert = bounded("ensure_secret", task).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cert.ca_bundle_pem, bundle);
}

fn cas_pem(der: &[u8]) -> String {
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(der)
    })
}

#[tokio::test]
async fn a_development_certificate_in_the_secret_is_replaced() {
    rustls::crypto::ring::default_provider().install_default().ok();
    let dev = dind_injector::certs::generate_dev_certs(&["dind-injector.dind-injector.svc".into()]).unwrap_or_else(|e| panic!("{e}"));
    let (client, mut api) = mock_client();
    let task = tokio::spawn(async move { ensure_secret(&client, &self_managed()).await });
    let (_, _, _, send) = next(&mut api).await;
    send.send_response(respond(200, tls_secret("9", &dev.tls_cert_pem, &dev.tls_key_pem, &dev.ca_cert_pem)));
    let (method, _, body, send) = next(&mut api).await;
    assert_eq!(method, Method::PUT, "replaced though far from expiry");
    let tls = body["data"]["tls.crt"].as_str().unwrap_or_default().to_owned();
    let tls = {
        use base64::Engine;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(tls).unwrap_or_default()).unwrap_or_default()
    };
    assert_eq!(subject_alt_names(&ders(&tls)[0]).len(), 4);
    send.send_response(respond(
        409,
        status(409, "Conflict", "the object has been modified", json!({"name": "dind-injector-tls", "kind": "secrets"})),
    ));
    // Another replica replaced it first: theirs is used.
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::GET, SECRET_PATH));
    send.send_response(respond(200, tls_secret("10", "THEIRS", "KEY", "CA")));
    let cert = bounded("ensure_secret", task).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cert.cert_pem, "THEIRS");
}

#[tokio::test]
async fn an_expired_resource_version_lists_again() {
    let (client, mut api) = mock_client();
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let (cache, driver) = NamespaceCache::start(client, Some(tx));
    let driver = tokio::spawn(driver);
    let list = |rv: &str, names: &[&str]| {
        respond(
            200,
            json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "items": names.iter().map(|n| namespace_meta(n, "5", true)).collect::<Vec<_>>()}),
        )
    };
    let (_, _, _, send) = next(&mut api).await;
    send.send_response(list("1000", &["ci"]));
    assert_eq!(bounded("change", changes.recv()).await.as_deref(), Some("ci"));
    let (_, uri, _, send) = next(&mut api).await;
    assert!(uri.contains("watch=true"), "{uri}");
    // What a real apiserver sends when the version was compacted away.
    send.send_response(watch_stream(&[json!({"type": "ERROR", "object": status(410, "Expired",
        "too old resource version: 1000 (5000)", json!({}))})]));
    let (_, uri, _, send) = next(&mut api).await;
    assert!(uri.starts_with("/api/v1/namespaces?") && !uri.contains("watch=true"), "lists again: {uri}");
    send.send_response(list("5001", &["team-b"]));
    assert_eq!(bounded("change", changes.recv()).await.as_deref(), Some("team-b"));
    assert!(cache.get("ci").is_none(), "the relist replaced the cache");
    let (_, uri, _, _pending) = next(&mut api).await;
    assert!(uri.contains("watch=true") && uri.contains("resourceVersion=5001"), "{uri}");
    assert!(cache.is_connected());
    driver.abort();
}

fn runtime_class_meta(name: &str, rv: &str) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
           "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": rv}})
}

fn runtime_class_list(rv: &str, names: &[&str]) -> Response<Body> {
    respond(
        200,
        json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
               "items": names.iter().map(|n| runtime_class_meta(n, "7")).collect::<Vec<_>>()}),
    )
}

fn known(names: &[&str]) -> RuntimeClasses {
    RuntimeClasses::Known(Arc::new(names.iter().map(|n| (*n).to_owned()).collect()))
}

/// The RuntimeClass watch on a mock apiserver: the apiserver's handle, the watch, what it
/// publishes, and its running driver.
fn runtime_class_watch() -> (
    support::kube_mock::ApiHandle,
    runtime_classes::RuntimeClassWatch,
    tokio::sync::mpsc::UnboundedReceiver<RuntimeClasses>,
    tokio::task::JoinHandle<()>,
) {
    let (client, api) = mock_client();
    let (tx, published) = tokio::sync::mpsc::unbounded_channel();
    let (watch, driver) = runtime_classes::start(client, move |classes| {
        let _ = tx.send(classes);
    });
    (api, watch, published, tokio::spawn(driver))
}

#[tokio::test]
async fn runtime_classes_are_listed_then_watched_and_kept_when_the_watch_is_lost() {
    let (mut api, watch, mut published, driver) = runtime_class_watch();
    assert!(!watch.is_connected());

    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!(method, Method::GET);
    assert!(uri.starts_with("/apis/node.k8s.io/v1/runtimeclasses?") && !uri.contains("watch=true"), "lists first: {uri}");
    send.send_response(runtime_class_list("400", &["sysbox-runc", "kata"]));
    assert_eq!(bounded("publish", published.recv()).await, Some(known(&["kata", "sysbox-runc"])));
    let (_, uri, _, send) = next(&mut api).await;
    assert!(uri.contains("watch=true") && uri.contains("resourceVersion=400"), "then watches from the list's version: {uri}");
    assert!(watch.is_connected());

    // A class installed, another removed: each change is published whole.
    send.send_response(watch_stream(&[
        json!({"type": "ADDED", "object": runtime_class_meta("kata-qemu", "401")}),
        json!({"type": "DELETED", "object": runtime_class_meta("kata", "402")}),
    ]));
    assert_eq!(bounded("publish", published.recv()).await, Some(known(&["kata", "kata-qemu", "sysbox-runc"])));
    assert_eq!(bounded("publish", published.recv()).await, Some(known(&["kata-qemu", "sysbox-runc"])));

    // The apiserver goes away: disconnected, and nothing published, so the classes last seen stay.
    let (_, uri, _, send) = next(&mut api).await;
    assert!(uri.contains("watch=true") && uri.contains("resourceVersion=402"), "{uri}");
    send.send_response(respond(503, status(503, "ServiceUnavailable", "the server is currently unable to handle the request", json!({}))));
    until("the loss is seen", || !watch.is_connected()).await;
    let (_, uri, _, send) = next(&mut api).await;
    assert!(uri.contains("watch=true") && uri.contains("resourceVersion=402"), "resumes, no relist: {uri}");
    assert!(published.try_recv().is_err(), "a lost watch publishes nothing");
    send.send_response(watch_stream(&[]));
    let (_, _, _, _pending) = next(&mut api).await;
    assert!(watch.is_connected(), "connected again once the watch was answered");
    driver.abort();
}

#[tokio::test]
async fn a_runtime_class_list_the_cluster_role_forbids_is_published_with_the_apiservers_reason() {
    let (mut api, watch, mut published, driver) = runtime_class_watch();

    // What a real apiserver answers when the ClusterRole lacks the rule.
    let forbidden = "runtimeclasses.node.k8s.io is forbidden: User \"system:serviceaccount:dind-injector:dind-injector\" cannot list resource \"runtimeclasses\" in API group \"node.k8s.io\" at the cluster scope";
    let (_, uri, _, send) = next(&mut api).await;
    assert!(uri.starts_with("/apis/node.k8s.io/v1/runtimeclasses?"), "{uri}");
    send.send_response(respond(403, status(403, "Forbidden", forbidden, json!({"group": "node.k8s.io", "kind": "runtimeclasses"}))));
    let Some(RuntimeClasses::Unlisted(error)) = bounded("publish", published.recv()).await else {
        panic!("a refused list is published as unlisted")
    };
    assert!(error.contains("cannot list resource \"runtimeclasses\""), "the apiserver's reason is kept: {error}");
    assert!(!watch.is_connected());

    // What a pod asking for sysbox is told, and what readiness says.
    let config = dind_injector::config::Config::default();
    let cluster = ClusterInfo { runtime_classes: RuntimeClasses::Unlisted(Arc::clone(&error)), ..ClusterInfo::default() };
    let reason = isolation::class_problem(&dind_injector::inject::mode::Mode::of(Isolation::Sysbox, &config), &cluster)
        .unwrap_or_else(|| panic!("sysbox was not refused"));
    assert_eq!(reason.label(), "runtime-classes-unknown");
    assert!(reason.message().contains("is forbidden") && reason.message().contains("grant its ClusterRole"), "{}", reason.message());

    // The rule is granted: the retried list succeeds and the classes are known.
    let (_, uri, _, send) = next(&mut api).await;
    assert!(uri.starts_with("/apis/node.k8s.io/v1/runtimeclasses?") && !uri.contains("watch=true"), "lists again: {uri}");
    send.send_response(runtime_class_list("9", &["sysbox-runc"]));
    assert_eq!(bounded("publish", published.recv()).await, Some(known(&["sysbox-runc"])));
    let (_, _, _, _pending) = next(&mut api).await;
    assert!(watch.is_connected());
    driver.abort();
}
