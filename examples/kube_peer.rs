//! The peer of the load benchmark (`make bench-load`, issue 11): what kube-rs's admission
//! controller example (`examples/admission_controller.rs` in kube-rs) does per review, served on
//! exactly the floor's TLS and HTTP stack (`examples/floor.rs`: the injector's own rustls
//! `server_config`, tokio, hyper-util's auto builder for HTTP/1.1 and HTTP/2, TCP_NODELAY, the
//! same timeouts and body limit) instead of the example's warp.
//!
//! Per request, as the example: the body is read as kube-core's
//! `AdmissionReview<DynamicObject>`, turned into an `AdmissionRequest` (`try_into`), answered
//! with `AdmissionResponse::from(&request)`; an object labelled `illegal` is denied, one without
//! the label `admission` gets a JSON Patch adding it (and `/metadata/labels` first when the
//! object has no labels), set with `with_patch`; the answer is `into_review()` serialized with
//! `serde_json::to_vec`. A body that is not an AdmissionReview gets 400 (warp's JSON filter
//! rejects it so), one without a request gets the example's `AdmissionResponse::invalid`.
//!
//! Kept faithful where kube-core differs from the apiserver's wire format: its response
//! serializes the patch as an array of numbers, not base64 (kube-rs/kube#1781), so a real
//! apiserver would refuse it; the benchmark only needs a 200 with the work done. The example's
//! one log line per request is left out (the stack has no subscriber), which makes the peer a
//! stricter yardstick for the injector, whose numbers include its log line.
//!
//! ```text
//! cargo run --release --example kube_peer -- --listen 127.0.0.1:9443 --tls-cert DIR/tls.crt --tls-key DIR/tls.key
//! ```
//! It prints `listening on ADDR` once it accepts connections, and stops on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::{DynamicObject, ResourceExt};

use dind_injector::server::{CertPaths, CertStore, certified_key, server_config};

/// As the injector's default server.maxBodyBytes (and the floor's).
const MAX_BODY: usize = 6 * 1024 * 1024;

/// The label the peer adds, as the example's.
const LABEL: &str = "admission";
const LABEL_VALUE: &str = "modified-by-kube-rs";

fn answer(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

/// The example's business logic: deny an object labelled `illegal`, label the others.
fn label(response: AdmissionResponse, object: &DynamicObject) -> Result<AdmissionResponse, String> {
    if object.labels().contains_key("illegal") {
        return Err("the object carries the label \"illegal\"".to_owned());
    }
    if object.labels().contains_key(LABEL) {
        return Ok(response);
    }
    let mut ops = Vec::with_capacity(2);
    if object.metadata.labels.is_none() {
        // A JSON Patch cannot add a key under a map that is not there.
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "labels"]),
            value: serde_json::json!({}),
        }));
    }
    ops.push(PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(["metadata", "labels", LABEL]),
        value: serde_json::Value::String(LABEL_VALUE.to_owned()),
    }));
    response.with_patch(Patch(ops)).map_err(|e| e.to_string())
}

/// One review, body to answer, as the example's `mutate_handler`.
fn mutate(body: &[u8]) -> Response<Full<Bytes>> {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) => return answer(StatusCode::BAD_REQUEST, b"{}".to_vec()),
    };
    // kube-core implements `TryInto` (not `TryFrom`) for this conversion.
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            let review = AdmissionResponse::invalid(e.to_string()).into_review();
            return answer(StatusCode::OK, serde_json::to_vec(&review).unwrap_or_default());
        }
    };
    let mut response = AdmissionResponse::from(&request);
    if let Some(object) = request.object.as_ref() {
        response = match label(response.clone(), object) {
            Ok(labelled) => labelled,
            Err(reason) => response.deny(reason),
        };
    }
    answer(StatusCode::OK, serde_json::to_vec(&response.into_review()).unwrap_or_default())
}

async fn review(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(mutate(&collected.to_bytes())),
        Err(_) => Ok(answer(StatusCode::PAYLOAD_TOO_LARGE, b"{}".to_vec())),
    }
}

struct Args {
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut listen = None;
    let mut cert = None;
    let mut key = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().map_err(|e| format!("--listen: {e}"))?),
            "--tls-cert" => cert = Some(PathBuf::from(value)),
            "--tls-key" => key = Some(PathBuf::from(value)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen ADDR:PORT is required")?,
        cert: cert.ok_or("--tls-cert FILE is required")?,
        key: key.ok_or("--tls-key FILE is required")?,
    })
}

/// The floor's server loop (`examples/floor.rs`), unchanged but for the handler.
async fn serve(args: Args) -> Result<(), String> {
    let paths = CertPaths { cert: args.cert, key: args.key };
    let (cert, key) = paths.read().map_err(|e| e.to_string())?;
    let certified = certified_key(&cert, &key, &paths).map_err(|e| e.to_string())?;
    let tls = server_config(Arc::new(CertStore::new(certified))).map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| format!("{}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    loop {
        let (tcp, _) = tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await else {
                return;
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(5));
            builder.http2().timer(TokioTimer::new());
            let service = hyper::service::service_fn(review);
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kube_peer: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube_peer: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube_peer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
