//! The TLS and HTTP stack the load benchmark's floor (`examples/floor.rs`) and kube-rs-style peer
//! (`examples/kube_peer.rs`) share, so that the two differ only in what they do per review: the
//! injector's own rustls `server_config` (ring), tokio, hyper-util's auto builder (HTTP/1.1 and
//! HTTP/2) with TCP_NODELAY, the injector's TLS-handshake and header-read timeouts and its default
//! body limit. Included by both with `#[path = "support/stack.rs"] mod stack;` (a directory
//! without `main.rs` is not an example of its own).
//!
//! Both take `--listen ADDR:PORT --tls-cert FILE --tls-key FILE` and their own switches, print
//! `listening on ADDR` once they accept connections, and stop on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use dind_injector::server::{CertPaths, CertStore, certified_key, server_config};

/// As the injector's default server.maxBodyBytes.
const MAX_BODY: usize = 6 * 1024 * 1024;

/// What a handler answers a review with.
pub type Answer = Response<Full<Bytes>>;

/// A JSON answer with `status`.
pub fn answer(status: StatusCode, body: Vec<u8>) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

/// The command line: where to listen, the serving certificate, and the switches given.
pub struct Args {
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    switches: Vec<&'static str>,
}

impl Args {
    /// Whether the switch `name` (one of those `run` was told about) was given.
    #[allow(dead_code)] // not every example has switches
    pub fn has(&self, name: &str) -> bool {
        self.switches.contains(&name)
    }
}

fn args(switches: &[&'static str]) -> Result<Args, String> {
    let mut listen = None;
    let mut cert = None;
    let mut key = None;
    let mut given = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if let Some(switch) = switches.iter().find(|s| **s == flag) {
            given.push(*switch);
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
        switches: given,
    })
}

async fn serve<H>(args: Args, handle: Arc<H>) -> Result<(), String>
where
    H: Fn(&[u8]) -> Answer + Send + Sync + 'static,
{
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
        let handle = handle.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await else {
                return;
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(5));
            builder.http2().timer(TokioTimer::new());
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let handle = handle.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(match Limited::new(request.into_body(), MAX_BODY).collect().await {
                        Ok(collected) => handle(&collected.to_bytes()),
                        Err(_) => answer(StatusCode::PAYLOAD_TOO_LARGE, b"{}".to_vec()),
                    })
                }
            });
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

/// Read the command line (`switches` are the flags without a value this example knows), build
/// the per-review handler with `make`, and serve until SIGTERM or SIGINT. Errors go to stderr
/// prefixed with `name`; a bad command line exits 2.
pub fn run<H, M>(name: &str, switches: &[&'static str], make: M) -> ExitCode
where
    H: Fn(&[u8]) -> Answer + Send + Sync + 'static,
    M: FnOnce(&Args) -> H,
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match args(switches) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let handle = Arc::new(make(&args));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args, handle)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
