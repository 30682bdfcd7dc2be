//! The floor of the load benchmark (`make bench-load`, issue 11): the least an admission webhook
//! can do on the injector's TLS and HTTP stack. The same rustls configuration (ring, the
//! injector's own `server_config`), tokio, hyper-util's auto builder (HTTP/1.1 and HTTP/2) with
//! TCP_NODELAY and the same header-read timeout; per request it reads the body (up to the
//! injector's default body limit), parses the whole AdmissionReview into a `serde_json::Value`
//! (every field built: maps, arrays, strings), takes `request.uid` from it and answers
//! `allowed: true` with that uid. No logging, no metrics, no decision. The injector's CPU per
//! review is compared with this one's on the same body.
//!
//! With `--decide` it answers with the injector's own decision instead (`webhook::mutate`, an
//! opted-in privileged namespace, the default configuration): the floor plus the decision,
//! without the server's routing, logging, metrics and spans, to see where the time goes.
//!
//! ```text
//! cargo run --release --example floor -- --listen 127.0.0.1:9443 --tls-cert DIR/tls.crt --tls-key DIR/tls.key [--decide]
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

use dind_injector::config::Config;
use dind_injector::inject::ClusterInfo;
use dind_injector::namespace::{NamespaceView, StaticNamespaces};
use dind_injector::server::{CertPaths, CertStore, certified_key, server_config};
use dind_injector::webhook::{self, ReviewContext};

/// As the injector's default server.maxBodyBytes.
const MAX_BODY: usize = 6 * 1024 * 1024;

fn answer(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

/// What `--decide` decides with.
struct Decider {
    config: Config,
    namespaces: StaticNamespaces,
    cluster: ClusterInfo,
}

impl Decider {
    fn new() -> Self {
        Decider {
            config: Config::default(),
            namespaces: StaticNamespaces::new(NamespaceView::opted_in("ci").labels, Default::default()),
            cluster: ClusterInfo::default(),
        }
    }

    fn decide(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let ctx = ReviewContext { config: &self.config, namespaces: &self.namespaces, cluster: &self.cluster };
        let outcome = webhook::mutate(body, ctx);
        answer(StatusCode::from_u16(outcome.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), outcome.body)
    }
}

async fn review(request: Request<Incoming>, decider: Option<Arc<Decider>>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(answer(StatusCode::PAYLOAD_TOO_LARGE, b"{}".to_vec())),
    };
    if let Some(decider) = decider {
        return Ok(decider.decide(&body));
    }
    let review = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(review) => review,
        Err(_) => return Ok(answer(StatusCode::BAD_REQUEST, b"{}".to_vec())),
    };
    let Some(uid) = review.pointer("/request/uid").and_then(serde_json::Value::as_str) else {
        return Ok(answer(StatusCode::BAD_REQUEST, b"{}".to_vec()));
    };
    let out = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true},
    });
    Ok(answer(StatusCode::OK, serde_json::to_vec(&out).unwrap_or_default()))
}

struct Args {
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    decide: bool,
}

fn args() -> Result<Args, String> {
    let mut listen = None;
    let mut cert = None;
    let mut key = None;
    let mut decide = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--decide" {
            decide = true;
            continue;
        }
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
        decide,
    })
}

async fn serve(args: Args) -> Result<(), String> {
    let paths = CertPaths { cert: args.cert, key: args.key };
    let (cert, key) = paths.read().map_err(|e| e.to_string())?;
    let certified = certified_key(&cert, &key, &paths).map_err(|e| e.to_string())?;
    let tls = server_config(Arc::new(CertStore::new(certified))).map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let decider = args.decide.then(|| Arc::new(Decider::new()));
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
        let decider = decider.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await else {
                return;
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(5));
            builder.http2().timer(TokioTimer::new());
            let service = hyper::service::service_fn(move |request| review(request, decider.clone()));
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("floor: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("floor: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
