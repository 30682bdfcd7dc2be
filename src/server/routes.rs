//! The HTTP routes: the review endpoints (HTTPS) and the health endpoints (plain HTTP).

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::admission::AdmissionResponse;
use crate::webhook::{self, ReviewContext, ReviewLog, ReviewOutcome};

use super::state::AppState;

/// A review function: AdmissionReview bytes in, answer out. Pure and fast, so it runs inline.
pub type ReviewFn = fn(&[u8], ReviewContext<'_>) -> ReviewOutcome;

/// One admission endpoint.
#[derive(Debug, Clone, Copy)]
pub struct ReviewEndpoint {
    /// The URL path.
    pub path: &'static str,
    /// Its name in logs and metrics (`endpoint` label).
    pub name: &'static str,
    /// What answers it.
    pub review: ReviewFn,
}

/// Every admission endpoint the server answers; adding one is adding a row.
pub const REVIEW_ENDPOINTS: &[ReviewEndpoint] = &[
    ReviewEndpoint { path: "/mutate", name: "mutate", review: webhook::mutate },
    ReviewEndpoint { path: "/validate", name: "validate", review: webhook::validate },
];

/// The HTTPS router: `POST` on each of [`REVIEW_ENDPOINTS`], a plain 404 elsewhere.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for endpoint in REVIEW_ENDPOINTS {
        router = router.route(
            endpoint.path,
            post(move |State(state): State<AppState>, request: Request| review(state, endpoint, request)).fallback(method_not_allowed),
        );
    }
    router.fallback(not_found).with_state(state)
}

/// The plain-HTTP health router: `/healthz`, `/readyz`, `/metrics`.
pub fn health_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.readiness() {
        Ok(degraded) => {
            let mut body = String::from("ready\n");
            for line in degraded {
                body.push_str("degraded: ");
                body.push_str(&line);
                body.push('\n');
            }
            (StatusCode::OK, body).into_response()
        }
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], state.metrics().render()).into_response()
}

async fn not_found(request: Request) -> Response {
    let paths: Vec<&str> = REVIEW_ENDPOINTS.iter().map(|e| e.path).collect();
    let message = format!(
        "404 not found: {}; this server answers POST {} (HTTPS) and GET /healthz, /readyz, /metrics (health port)\n",
        request.uri().path(),
        paths.join(", ")
    );
    (StatusCode::NOT_FOUND, message).into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    let message = format!("405 method not allowed: {} {} takes POST with an AdmissionReview\n", request.method(), request.uri().path());
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")], message).into_response()
}

/// Why the body could not be had.
enum BodyError {
    TooLarge,
    Timeout,
    Unreadable(String),
}

async fn read_body(request: Request, limit: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let body = Limited::new(request.into_body(), limit);
    match tokio::time::timeout(timeout, body.collect()).await {
        Err(_) => Err(BodyError::Timeout),
        // One frame (the usual case) is handed over without a copy.
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Ok(Err(e)) => Err(BodyError::Unreadable(e.to_string())),
    }
}

fn body_error_outcome(error: &BodyError, limit: usize, timeout: Duration) -> ReviewOutcome {
    let (http_status, reason, message) = match error {
        BodyError::TooLarge => (
            413,
            "body-too-large",
            format!(
                "dind-injector: the request body is larger than server.maxBodyBytes ({limit} bytes); raise server.maxBodyBytes in the configuration if objects this large are expected"
            ),
        ),
        BodyError::Timeout => (
            408,
            "body-timeout",
            format!(
                "dind-injector: the request body did not arrive within server.requestTimeout ({timeout:?}); the client sent it too slowly"
            ),
        ),
        BodyError::Unreadable(e) => (400, "body-unreadable", format!("dind-injector: the request body could not be read: {e}")),
    };
    ReviewOutcome {
        http_status,
        // The body was not read, so its uid is unknown.
        body: AdmissionResponse::deny("", http_status, message).into_review_json(),
        log: ReviewLog { runner: "-", decision: "error", reason, ..ReviewLog::default() },
    }
}

async fn review(state: AppState, endpoint: &'static ReviewEndpoint, request: Request) -> Response {
    let started = Instant::now();
    let _inflight = state.metrics().inflight();
    let config = state.config();
    let cluster = state.cluster();
    let limit = config.server.max_body_bytes;
    let timeout = config.server.request_timeout.0;
    let outcome = match read_body(request, limit, timeout).await {
        Ok(body) => (endpoint.review)(&body, ReviewContext { config: &config, namespaces: state.namespaces(), cluster: &cluster }),
        Err(e) => body_error_outcome(&e, limit, timeout),
    };
    let elapsed = started.elapsed();
    state.metrics().record_review(endpoint.name, &outcome.log, elapsed.as_secs_f64());
    log_review(endpoint.name, &outcome, elapsed);
    let status = StatusCode::from_u16(outcome.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(outcome.body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The one log line per review. Names and labels only: never the body.
fn log_review(endpoint: &'static str, outcome: &ReviewOutcome, elapsed: Duration) {
    let log = &outcome.log;
    tracing::info!(
        target: "dind_injector::review",
        endpoint,
        uid = %log.uid,
        namespace = %log.namespace,
        pod = %log.pod,
        operation = %log.operation,
        runner = log.runner,
        decision = log.decision,
        reason = log.reason,
        warnings = log.warnings,
        policy_mode = log.policy_mode,
        policy_level = log.policy_level,
        violations = %log.violations.join(","),
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        http_status = outcome.http_status,
        "review"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hyper::service::Service;
    use hyper_util::service::TowerToHyperService;

    use super::*;
    use crate::config::Config;
    use crate::inject::RuntimeClasses;
    use crate::namespace::StaticNamespaces;

    fn state() -> AppState {
        AppState::new(Config::default(), Arc::new(StaticNamespaces::default()), Default::default())
    }

    async fn call(app: &Router, method: &str, path: &str, body: &'static str) -> (StatusCode, String) {
        let request = axum::http::Request::builder().method(method).uri(path).body(Body::from(body));
        let Ok(request) = request else { panic!("bad test request") };
        let Ok(response) = TowerToHyperService::new(app.clone()).call(request).await;
        let status = response.status();
        let bytes = response.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn routes_answer_in_process() {
        let state = state();
        let app = router(state.clone());
        let (status, body) = call(&app, "POST", "/mutate", "{").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("AdmissionReview") && body.contains("JSON"), "{body}");
        assert_eq!(call(&app, "GET", "/mutate", "").await.0, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(call(&app, "POST", "/other", "").await.0, StatusCode::NOT_FOUND);

        let health = health_router(state.clone());
        assert_eq!(call(&health, "GET", "/healthz", "").await.0, StatusCode::OK);
        let (status, body) = call(&health, "GET", "/readyz", "").await;
        assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "not ready: no serving certificate loaded\n"));
        state.set_certificates_loaded(true);
        assert_eq!(call(&health, "GET", "/readyz", "").await, (StatusCode::OK, "ready\n".to_owned()));
        // In a cluster: not ready until the RuntimeClasses have been listed once; ready when the
        // list is refused, saying what is not served.
        state.set_runtime_classes(RuntimeClasses::Syncing);
        let (status, body) = call(&health, "GET", "/readyz", "").await;
        assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "not ready: the RuntimeClasses have not been listed yet\n"));
        state.set_runtime_classes(RuntimeClasses::Unlisted("runtimeclasses.node.k8s.io is forbidden".into()));
        let (status, body) = call(&health, "GET", "/readyz", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("ready\ndegraded: cannot list RuntimeClasses (runtimeclasses.node.k8s.io is forbidden)"), "{body}");
        state.set_runtime_classes(RuntimeClasses::Known(Default::default()));
        assert_eq!(call(&health, "GET", "/readyz", "").await, (StatusCode::OK, "ready\n".to_owned()));
        state.shutdown_handle().trigger();
        assert_eq!(call(&health, "GET", "/readyz", "").await.1, "not ready: shutting down\n");
        let (_, metrics) = call(&health, "GET", "/metrics", "").await;
        assert!(
            metrics.contains("dind_injector_reviews_total{endpoint=\"mutate\",decision=\"error\",reason=\"not-json\",runner=\"-\"} 1"),
            "{metrics}"
        );
    }
}
