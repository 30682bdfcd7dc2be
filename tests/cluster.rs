//! The cluster side against recorded apiserver exchanges (kube's tower-test pattern): each
//! scenario answers the client's requests in order with the shapes a real kube-apiserver sends
//! (status codes, `Status` bodies, resourceVersions) and checks what the client asked.

use std::time::Duration;

use dind_injector::cluster::certs::{SelfManaged, ensure_ca_bundle, ensure_secret};
use dind_injector::cluster::daemon_config::{self, SyncOutcome};
use dind_injector::cluster::namespaces::NamespaceCache;
use dind_injector::namespace::NamespaceLookup;
use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const LIMIT: Duration = Duration::from_secs(10);

fn mock_client() -> (Client, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.unwrap_or_else(|_| panic!("{what}: timed out"))
}

fn respond(code: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The next request: method, path with query, body (as JSON when it is), and the reply handle.
async fn next(handle: &mut ApiHandle) -> (Method, String, Value, mock::SendResponse<Response<Body>>) {
    let (request, send) = bounded("waiting for a request", handle.next_request()).await.unwrap_or_else(|| panic!("the client stopped"));
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (method, uri, body, send)
}

fn status(code: u16, reason: &str, message: &str, details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "details": details, "code": code})
}

fn not_found(kind: &str, name: &str) -> Value {
    status(404, "NotFound", &format!("{kind} \"{name}\" not found"), json!({"name": name, "kind": kind}))
}

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
    send.send_response(respond(200, json!({
        "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "1000"},
        "items": [namespace_meta("ci", "990", true), namespace_meta("default", "12", false)]
    })));

    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!(method, Method::GET);
    assert!(uri.contains("watch=true") && uri.contains("resourceVersion=1000"), "then watches from the list's version: {uri}");
    assert!(cache.is_ready(), "ready once the first list is in");
    let ci = cache.get("ci").unwrap_or_else(|| panic!("ci missing"));
    assert!(ci.is_opted_in());
    assert_eq!(ci.annotations.get("dind-injector.io/memory").map(String::as_str), Some("2Gi"));
    assert!(cache.get("default").is_some_and(|v| !v.is_opted_in()));
    let mut seen = vec![bounded("change", changes.recv()).await.unwrap_or_default(), bounded("change", changes.recv()).await.unwrap_or_default()];
    seen.sort();
    assert_eq!(seen, ["ci", "default"], "every namespace is synced after a full list");

    let events = [
        json!({"type": "ADDED", "object": namespace_meta("team-b", "1001", true)}),
        json!({"type": "MODIFIED", "object": namespace_meta("ci", "1002", false)}),
    ];
    let stream: Vec<u8> = events.iter().flat_map(|e| {
        let mut line = serde_json::to_vec(e).unwrap_or_default();
        line.push(b'\n');
        line
    }).collect();
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
    send.send_response(respond(200, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": CM, "kind": "configmaps", "uid": "cm-uid"}})));
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
    let (method, uri, body, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::POST, "/api/v1/namespaces/dind-injector/secrets?"));
    assert_eq!(body["type"], "kubernetes.io/tls");
    assert!(body["data"]["tls.key"].is_string() && body["data"]["ca.crt"].is_string());
    // The other replica was faster.
    send.send_response(respond(409, status(409, "AlreadyExists", "secrets \"dind-injector-tls\" already exists", json!({"name": "dind-injector-tls", "kind": "secrets"}))));
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::GET, SECRET_PATH));
    send.send_response(respond(200, their_secret));
    let cert = bounded("ensure_secret", task).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cert.cert_pem, theirs.tls_cert_pem, "the loser serves the winner's certificate");
    assert_eq!(cert.ca_bundle_pem, theirs.ca_cert_pem);
}

#[tokio::test]
async fn ca_bundle_is_patched_where_it_differs() {
    let bundle = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let (client, mut api) = mock_client();
    let task = tokio::spawn(async move { ensure_ca_bundle(&client, &self_managed(), bundle).await });
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
    send.send_response(respond(200, json!({"kind": "MutatingWebhookConfiguration", "apiVersion": "admissionregistration.k8s.io/v1",
        "metadata": {"name": "dind-injector", "resourceVersion": "42"}, "webhooks": [hook("inject.dind-injector.io", None)]})));
    let (method, uri, body, send) = next(&mut api).await;
    assert_eq!(method, Method::PATCH);
    assert!(uri.starts_with("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/dind-injector"), "{uri}");
    assert_eq!(body[0]["path"], "/webhooks/0/clientConfig/caBundle", "{body}");
    use base64::Engine;
    assert_eq!(body[0]["value"], base64::engine::general_purpose::STANDARD.encode(bundle));
    send.send_response(respond(200, json!({"kind": "MutatingWebhookConfiguration", "apiVersion": "admissionregistration.k8s.io/v1",
        "metadata": {"name": "dind-injector", "resourceVersion": "43"}, "webhooks": [hook("inject.dind-injector.io", Some(bundle))]})));
    // The validating configuration already trusts this bundle: no patch.
    let (method, uri, _, send) = next(&mut api).await;
    assert_eq!((method, uri.as_str()), (Method::GET, "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/dind-injector"));
    send.send_response(respond(200, json!({"kind": "ValidatingWebhookConfiguration", "apiVersion": "admissionregistration.k8s.io/v1",
        "metadata": {"name": "dind-injector", "resourceVersion": "44"}, "webhooks": [hook("validate.dind-injector.io", Some(bundle))]})));
    let changed = bounded("ensure_ca_bundle", task).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    assert!(changed);
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
    send.send_response(respond(200, json!({
        "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "1000"}, "items": [namespace_meta("ci", "990", true)]
    })));
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
