//! A small HTTPS client for the server tests: tokio-rustls plus hyper's client connections,
//! HTTP/1.1 or HTTP/2 by ALPN, TLS 1.2 and/or 1.3, the peer certificate kept for inspection.
//! And a plain HTTP/1.1 GET for the health port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The request body type every connection takes (full or streamed).
pub type Body = BoxBody<Bytes, Infallible>;

/// Which HTTP version to speak (offered by ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    /// HTTP/1.1.
    H1,
    /// HTTP/2.
    H2,
}

/// Which TLS versions the client allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// 1.2 and 1.3.
    Any,
    /// 1.2 only.
    V12,
    /// 1.3 only.
    V13,
}

/// An answer: status, content type, body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `content-type` header, when sent.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
    /// HTTP/1.1 `Connection: close`: the server closes the connection after this answer, and a
    /// client must not send on it again (Go's transport drops it from its pool).
    pub connection_close: bool,
}

/// Why a request got no answer.
#[derive(Debug)]
pub struct SendError {
    /// The server cannot have processed it, so a client may send it again on a new connection
    /// (what Go's HTTP/2 transport does): the connection had received a GOAWAY before it was
    /// sent, the GOAWAY refused its stream (above the last stream id), the stream was refused
    /// (`REFUSED_STREAM`), or hyper never sent it (the connection had ended before it was handed
    /// over: Go's "client connection unusable", which Go sends again too).
    pub unprocessed: bool,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Whether hyper's error says the request was never processed by the server (see [`SendError`]).
fn unprocessed(e: &hyper::Error) -> bool {
    // Canceled: hyper dropped it unsent; ChannelClosed: the connection had ended (after its
    // GOAWAY) before the request was handed to it.
    if e.is_canceled() || e.is_closed() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            let graceful_goaway = h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
            return graceful_goaway || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = s.source();
    }
    false
}

impl Answer {
    /// The body as JSON (a test failure when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

/// One HTTPS connection.
pub struct Connection {
    sender: Sender,
    authority: String,
    /// The DER of the leaf certificate the server presented.
    pub peer_leaf: Vec<u8>,
    /// The protocol ALPN chose.
    pub alpn: Option<Vec<u8>>,
    /// The TLS version negotiated.
    pub tls_version: Option<rustls::ProtocolVersion>,
}

/// A client configuration trusting the CAs in `ca_pems`.
pub fn client_config(ca_pems: &[&str], tls: Tls, http: Http) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("CA PEM: {e}"))?;
            roots.add(cert).map_err(|e| format!("CA: {e}"))?;
        }
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls {
        Tls::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Tls::V12 => &[&rustls::version::TLS12],
        Tls::V13 => &[&rustls::version::TLS13],
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![match http {
        Http::H1 => b"http/1.1".to_vec(),
        Http::H2 => b"h2".to_vec(),
    }];
    Ok(Arc::new(config))
}

/// Connects to `addr` as `localhost`, trusting `ca_pems`.
pub async fn connect(addr: SocketAddr, ca_pems: &[&str], tls: Tls, http: Http) -> Result<Connection, String> {
    connect_as(addr, "localhost", ca_pems, tls, http).await
}

/// Connects to `addr` as `name` (the name the certificate must be for), trusting `ca_pems`.
pub async fn connect_as(addr: SocketAddr, name: &str, ca_pems: &[&str], tls: Tls, http: Http) -> Result<Connection, String> {
    let authority = format!("{name}:{}", addr.port());
    let config = client_config(ca_pems, tls, http)?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let stream = TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    let (_, session) = stream.get_ref();
    let peer_leaf =
        session.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec()).ok_or("the server presented no certificate")?;
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let tls_version = session.protocol_version();
    let io = TokioIo::new(stream);
    let sender = match http {
        Http::H1 => {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H1(sender)
        }
        Http::H2 => {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H2(sender)
        }
    };
    Ok(Connection { sender, authority, peer_leaf, alpn, tls_version })
}

/// The leaf certificate (DER) a new connection to `addr` sees.
pub async fn peer_leaf(addr: SocketAddr, ca_pems: &[&str]) -> Result<Vec<u8>, String> {
    Ok(connect(addr, ca_pems, Tls::Any, Http::H1).await?.peer_leaf)
}

/// A full body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A body sent piece by piece: each `Bytes` sent on the returned sender is one data frame; the
/// body ends when the sender is dropped. No length is declared unless the caller sets one.
pub fn streamed() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    (tx, StreamedBody(rx).boxed())
}

struct StreamedBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for StreamedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|data| data.map(|d| Ok(hyper::body::Frame::data(d))))
    }
}

impl Connection {
    /// Builds a request for `path` on this connection (HTTP/2 wants the full URI).
    pub fn request(&self, method: &str, path: &str, body: Body) -> Result<Request<Body>, String> {
        let builder = Request::builder().method(method);
        let builder = match self.sender {
            Sender::H1(_) => builder.uri(path).header("host", &self.authority),
            Sender::H2(_) => builder.uri(format!("https://{}{path}", self.authority)),
        };
        builder.header("content-type", "application/json").body(body).map_err(|e| e.to_string())
    }

    /// Sends `request` and reads the whole answer.
    pub async fn send(&mut self, request: Request<Body>) -> Result<Answer, String> {
        self.send_request(request).await.map_err(|e| e.message)
    }

    /// Sends `request` and reads the whole answer; an error says whether the server cannot
    /// have processed the request.
    pub async fn send_request(&mut self, request: Request<Body>) -> Result<Answer, SendError> {
        let failed = |e: hyper::Error| SendError { unprocessed: unprocessed(&e), message: format!("request failed: {e} ({e:?})") };
        let response = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.map_err(failed)?;
                s.send_request(request).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(failed)?;
                s.send_request(request).await
            }
        }
        .map_err(failed)?;
        let status = response.status();
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let connection_close = response.headers().get_all("connection").iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| SendError { unprocessed: false, message: format!("reading the answer: {e}") })?
            .to_bytes()
            .to_vec();
        Ok(Answer { status, content_type, body, connection_close })
    }

    /// Another handle on the same HTTP/2 connection (requests on it are multiplexed); `None` on
    /// HTTP/1.1, where a connection carries one request at a time.
    pub fn share(&self) -> Option<Connection> {
        match &self.sender {
            Sender::H1(_) => None,
            Sender::H2(s) => Some(Connection {
                sender: Sender::H2(s.clone()),
                authority: self.authority.clone(),
                peer_leaf: self.peer_leaf.clone(),
                alpn: self.alpn.clone(),
                tls_version: self.tls_version,
            }),
        }
    }

    /// Whether the connection can take another request (it has not closed, and on HTTP/1.1 the
    /// last answer did not say `Connection: close`; the caller checks that).
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// `method path` with `body`.
    pub async fn call(&mut self, method: &str, path: &str, body: impl Into<Bytes>) -> Result<Answer, String> {
        let request = self.request(method, path, full(body))?;
        self.send(request).await
    }
}

/// A plain HTTP/1.1 GET (the health port).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<Answer, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::builder().uri(path).header("host", addr.to_string()).body(full(Bytes::new())).map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes().to_vec();
    Ok(Answer { status, content_type, body, connection_close: false })
}

/// A new development CA and serving certificate for 127.0.0.1 and localhost.
pub fn new_certs() -> dind_injector::certs::DevCerts {
    dind_injector::certs::generate_dev_certs(&[]).unwrap_or_else(|e| panic!("{e}"))
}

/// The DER of the serving certificate (the first in tls.crt).
pub fn leaf_der(certs: &dind_injector::certs::DevCerts) -> Vec<u8> {
    let first = CertificateDer::pem_slice_iter(certs.tls_cert_pem.as_bytes()).next();
    first.unwrap_or_else(|| panic!("no certificate in tls.crt")).unwrap_or_else(|e| panic!("{e}")).as_ref().to_vec()
}

/// What the kubelet does for a Secret volume: write a new timestamped directory, point a
/// temporary symlink at it, rename that over `..data`.
pub fn swap_in(dir: &std::path::Path, version: &str, certs: &dind_injector::certs::DevCerts) {
    let ok = |r: std::io::Result<()>| r.unwrap_or_else(|e| panic!("{e}"));
    dind_injector::certs::write_dev_certs(&dir.join(version), certs).unwrap_or_else(|e| panic!("{e}"));
    let tmp = dir.join("..data_tmp");
    ok(std::os::unix::fs::symlink(version, &tmp));
    ok(std::fs::rename(&tmp, dir.join("..data")));
}

/// Whether the server at `addr` serves `certs`' leaf within 3 s (new connections, polled).
pub async fn serves(addr: SocketAddr, cas: &[&str], certs: &dind_injector::certs::DevCerts) -> bool {
    let want = leaf_der(certs);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        if peer_leaf(addr, cas).await.is_ok_and(|got| got == want) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}
