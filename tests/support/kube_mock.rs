//! A kube client whose apiserver is the test (kube's tower-test pattern): each request the
//! client sends is taken with [`next`] and answered with [`respond`], in the shapes a real
//! kube-apiserver sends (status codes, `Status` bodies).

use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

/// The test's end of the client.
pub type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// How long any one exchange may take.
pub const LIMIT: Duration = Duration::from_secs(10);

/// A client (namespace `default`) and the handle that answers it.
pub fn mock_client() -> (Client, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// `f`, or a test failure naming `what` after [`LIMIT`].
pub async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.unwrap_or_else(|_| panic!("{what}: timed out"))
}

/// A JSON answer with status `code`.
pub fn respond(code: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The next request: method, path with query, body (as JSON when it is), and the reply handle.
pub async fn next(handle: &mut ApiHandle) -> (Method, String, Value, mock::SendResponse<Response<Body>>) {
    let (request, send) = bounded("waiting for a request", handle.next_request()).await.unwrap_or_else(|| panic!("the client stopped"));
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (method, uri, body, send)
}

/// A `Status` failure body.
pub fn status(code: u16, reason: &str, message: &str, details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "details": details, "code": code})
}

/// The 404 body for `kind` `name`.
pub fn not_found(kind: &str, name: &str) -> Value {
    status(404, "NotFound", &format!("{kind} \"{name}\" not found"), json!({"name": name, "kind": kind}))
}

/// The injector's webhook configuration of `kind` (`Mutating` or `Validating`), one webhook,
/// whose caBundle is `ca` (PEM) when given.
pub fn webhook_configuration(kind: &str, rv: &str, ca: Option<&str>) -> Value {
    use base64::Engine;
    let (hook, path) = if kind == "Mutating" { ("inject.dind-injector.io", "/mutate") } else { ("validate.dind-injector.io", "/validate") };
    let mut webhook = json!({"name": hook, "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "clientConfig": {"service": {"namespace": "dind-injector", "name": "dind-injector", "path": path, "port": 443}}});
    if let Some(ca) = ca {
        webhook["clientConfig"]["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(ca));
    }
    json!({"kind": format!("{kind}WebhookConfiguration"), "apiVersion": "admissionregistration.k8s.io/v1",
           "metadata": {"name": "dind-injector", "uid": format!("uid-{rv}"), "resourceVersion": rv}, "webhooks": [webhook]})
}

/// Answers the two reads of the webhook configurations a replica makes before it creates a new
/// Secret (for the CAs they still trust): each configuration with caBundle `ca`, or 404 when
/// `None` (not installed yet).
pub async fn answer_trusted_cas(api: &mut ApiHandle, mutating: Option<&str>, validating: Option<&str>) {
    for (kind, plural, ca) in
        [("Mutating", "mutatingwebhookconfigurations", mutating), ("Validating", "validatingwebhookconfigurations", validating)]
    {
        let (method, uri, _, send) = next(api).await;
        assert_eq!((method, uri.as_str()), (Method::GET, format!("/apis/admissionregistration.k8s.io/v1/{plural}/dind-injector").as_str()));
        match ca {
            Some(ca) => send.send_response(respond(200, webhook_configuration(kind, "7", Some(ca)))),
            None => send.send_response(respond(404, not_found(plural, "dind-injector"))),
        }
    }
}
