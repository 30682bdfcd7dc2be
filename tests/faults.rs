//! Faults under load, on loopback, each bounded in time and asserting the counts it claims:
//! certificates replaced while reviews keep coming, SIGTERM to the real binary under load and a
//! grace period that runs out, slow and idle clients, oversized and deeply nested bodies.
//!
//! Every load here is a few tasks with keep-alive connections sending the GitLab review with a
//! fresh uid each time; a request counts as answered only with a 200 that names its uid.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dind_injector::certs::DevCerts;
use dind_injector::server::CertPaths;
use hyper::body::Bytes;
use serde_json::Value;
use support::binary::Binary;
use support::serve::{InProcess, start, start_at};
use support::tls_client::{self, Http, Tls, leaf_der, new_certs, serves, swap_in};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// No test may take longer than this.
const LIMIT: Duration = Duration::from_secs(60);

/// The fault tests load the machine on purpose and assert timings: one at a time, or one
/// test's load starves another's timers (seen as a flake under `make test`).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[allow(clippy::await_holding_lock)]
async fn bounded<T>(test: impl Future<Output = T>) -> T {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tokio::time::timeout(LIMIT, test).await.unwrap_or_else(|_| panic!("the test took longer than {LIMIT:?}"))
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

// ---------------------------------------------------------------------------------------------
// The load: tasks sending reviews with unique uids, every request recorded.

/// The GitLab review, parsed once.
fn gitlab() -> Arc<Value> {
    Arc::new(support::review("gitlab"))
}

fn review_with_uid(template: &Value, uid: &str) -> Vec<u8> {
    let mut review = template.clone();
    review["request"]["uid"] = Value::String(uid.to_owned());
    ok(serde_json::to_vec(&review))
}

/// What happened to one request.
#[derive(Debug, Clone)]
struct Record {
    uid: String,
    /// When it was sent, from the start of the load.
    at: Duration,
    latency: Duration,
    /// `Ok` is a 200 naming the uid.
    result: Result<(), String>,
}

/// A load task's settings.
#[derive(Clone)]
struct Worker {
    name: String,
    addr: SocketAddr,
    cas: Arc<Vec<String>>,
    http: Http,
    /// A new connection (a new TLS handshake) after this many requests.
    reconnect_every: u64,
    template: Arc<Value>,
    started: Instant,
    stop: Arc<AtomicBool>,
    deadline: Instant,
    /// Stop at the first failed connection attempt (the listener is gone after a shutdown).
    stop_on_connect_error: bool,
    /// Send a request again, once, on a new connection when the server cannot have processed
    /// it (as Go's HTTP/2 transport does for a stream refused by GOAWAY).
    retry_unprocessed: bool,
    /// Send a request again, once, on a new connection whenever its connection failed under
    /// it. The test then checks with the server's counters that nothing was answered twice.
    retry_on_connection_error: bool,
    /// Requests done so far by every worker of the load (answered or not): what a test waits on.
    done: Arc<AtomicUsize>,
}

/// What a load task saw.
#[derive(Debug, Default)]
struct Seen {
    requests: Vec<Record>,
    /// Requests sent again after their connection failed under them.
    retried: usize,
    /// Failed connection attempts (connect or TLS handshake), with when they happened.
    connect_errors: Vec<(Duration, String)>,
}

/// Why a review failed: `transport` when its connection failed, `unprocessed` when the server
/// cannot have seen it.
struct Failure {
    transport: bool,
    unprocessed: bool,
    message: String,
}

impl Worker {
    /// One review on `c`; whether `c` may be used again (not after `Connection: close`).
    async fn send(c: &mut tls_client::Connection, body: Vec<u8>, uid: &str) -> Result<bool, Failure> {
        let wrong = |message: String| Failure { transport: false, unprocessed: false, message };
        let request = c.request("POST", "/mutate", tls_client::full(body)).map_err(wrong)?;
        match tokio::time::timeout(Duration::from_secs(10), c.send_request(request)).await {
            Err(_) => Err(wrong("no answer within 10s".to_owned())),
            Ok(Err(e)) => Err(Failure { transport: true, unprocessed: e.unprocessed, message: e.message }),
            Ok(Ok(a)) if a.status != 200 => Err(wrong(format!("HTTP {}: {}", a.status, a.text()))),
            Ok(Ok(a)) => match serde_json::from_slice::<Value>(&a.body) {
                Ok(v) if v["response"]["uid"] == uid => Ok(!a.connection_close),
                Ok(v) => Err(wrong(format!("the answer names another uid: {}", v["response"]["uid"]))),
                Err(e) => Err(wrong(format!("the answer is not JSON: {e}"))),
            },
        }
    }

    /// Sends reviews until stopped, the way a pooling client does: a connection is used until
    /// the server says `Connection: close` (or `reconnect_every` requests), and a connection
    /// that closed while idle is not used again.
    async fn run(self) -> Seen {
        let mut seen = Seen::default();
        let mut conn: Option<tls_client::Connection> = None;
        let mut on_conn = 0;
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline {
            if conn.as_ref().is_none_or(tls_client::Connection::is_closed) || on_conn >= self.reconnect_every {
                let cas: Vec<&str> = self.cas.iter().map(String::as_str).collect();
                match tls_client::connect(self.addr, &cas, Tls::Any, self.http).await {
                    Ok(c) => {
                        conn = Some(c);
                        on_conn = 0;
                    }
                    Err(e) => {
                        seen.connect_errors.push((self.started.elapsed(), e));
                        if self.stop_on_connect_error {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
            }
            let uid = format!("{}-{n}", self.name);
            n += 1;
            on_conn += 1;
            let body = review_with_uid(&self.template, &uid);
            let at = self.started.elapsed();
            let sent = Instant::now();
            let mut result = match conn.as_mut() {
                Some(c) => Self::send(c, body.clone(), &uid).await,
                None => continue,
            };
            let retry = |f: &Failure| (f.unprocessed && self.retry_unprocessed) || (f.transport && self.retry_on_connection_error);
            if result.as_ref().is_err_and(retry) {
                let cas: Vec<&str> = self.cas.iter().map(String::as_str).collect();
                match tls_client::connect(self.addr, &cas, Tls::Any, self.http).await {
                    Ok(mut c) => {
                        seen.retried += 1;
                        result = Self::send(&mut c, body, &uid).await;
                        conn = Some(c);
                        on_conn = 1;
                    }
                    Err(e) => result = Err(Failure { transport: true, unprocessed: false, message: e }),
                }
            }
            if !matches!(result, Ok(true)) {
                conn = None;
            }
            let result = result.map(|_| ()).map_err(|f| f.message);
            seen.requests.push(Record { uid, at, latency: sent.elapsed(), result });
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        seen
    }
}

/// Waits until the load has done `n` requests in all (`done` of its workers); panics after 20 s,
/// a generous bound: the wait is for the requests, however slow the machine.
async fn until_done(done: &AtomicUsize, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "{what}: the load did {} of {n} requests within 20 s", done.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Counts over every task's records.
#[derive(Debug, Default)]
struct Totals {
    sent: usize,
    answered: usize,
    failed: usize,
    connect_errors: usize,
    retried: usize,
    max_latency: Duration,
    records: Vec<Record>,
    connect_error_list: Vec<(Duration, String)>,
}

fn totals(seen: Vec<Seen>) -> Totals {
    let mut t = Totals::default();
    for s in seen {
        t.retried += s.retried;
        t.connect_errors += s.connect_errors.len();
        t.connect_error_list.extend(s.connect_errors);
        for r in s.requests {
            t.sent += 1;
            if r.result.is_ok() {
                t.answered += 1;
                t.max_latency = t.max_latency.max(r.latency);
            } else {
                t.failed += 1;
            }
            t.records.push(r);
        }
    }
    t
}

impl Totals {
    fn failures(&self) -> Vec<String> {
        let requests = self.records.iter().filter_map(|r| r.result.as_ref().err().map(|e| format!("{} at {}ms: {e}", r.uid, ms(r.at))));
        let connects = self.connect_error_list.iter().map(|(at, e)| format!("connect at {}ms: {e}", ms(*at)));
        requests.chain(connects).take(20).collect()
    }

    fn latency_quantile(&self, q: f64) -> Duration {
        let mut l: Vec<Duration> = self.records.iter().filter(|r| r.result.is_ok()).map(|r| r.latency).collect();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        let i = ((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1;
        l[i]
    }
}

/// Starts one task per worker.
fn start_load(workers: Vec<Worker>) -> Vec<JoinHandle<Seen>> {
    workers.into_iter().map(|w| tokio::spawn(w.run())).collect()
}

async fn collect(tasks: Vec<JoinHandle<Seen>>) -> Totals {
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(ok(t.await));
    }
    totals(seen)
}

fn workers(addr: SocketAddr, cas: &[&str], count: usize, reconnect_every: u64, within: Duration) -> (Arc<AtomicBool>, Vec<Worker>) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let template = gitlab();
    let cas = Arc::new(cas.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>());
    let list = (0..count)
        .map(|i| Worker {
            name: format!("w{i}"),
            addr,
            cas: Arc::clone(&cas),
            http: if i % 2 == 0 { Http::H1 } else { Http::H2 },
            reconnect_every,
            template: Arc::clone(&template),
            started,
            stop: Arc::clone(&stop),
            deadline: started + within,
            stop_on_connect_error: false,
            retry_unprocessed: false,
            retry_on_connection_error: false,
            done: Arc::clone(&done),
        })
        .collect();
    (stop, list)
}

// ---------------------------------------------------------------------------------------------
// Servers: in-process (ShutdownHandle) and the real binary (SIGTERM).

async fn start_in_process(dir: tempfile::TempDir, certs: DevCerts, paths: CertPaths, config: &str) -> InProcess {
    start_at(dir, certs, paths, Some(config)).await
}

async fn start_plain(config: &str) -> InProcess {
    start(Some(config)).await
}

async fn readyz(health: SocketAddr) -> Option<u16> {
    tls_client::http_get(health, "/readyz").await.ok().map(|a| a.status.as_u16())
}

fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// A TLS stream to `addr` that has done its handshake and sent nothing (`http` offered by ALPN).
async fn raw_tls(addr: SocketAddr, ca: &str, http: Http) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = ok(tls_client::client_config(&[ca], Tls::Any, http));
    let tcp = ok(tokio::net::TcpStream::connect(addr).await);
    let name = ok(rustls::pki_types::ServerName::try_from("localhost"));
    ok(tokio_rustls::TlsConnector::from(config).connect(name, tcp).await)
}

/// When a connection was closed: from before connecting, and from when the client had done its
/// part (the handshake and what it sent).
#[derive(Debug, Clone, Copy)]
struct Closed {
    since_connect: Duration,
    since_ready: Duration,
}

/// Reads until the peer closes (or `within` passes); when that was, and what was read; `None`
/// if it stayed open. `since` is taken before connecting.
async fn closed_within<R: tokio::io::AsyncRead + Unpin>(stream: &mut R, since: Instant, within: Duration) -> Option<(Closed, Vec<u8>)> {
    let ready = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((Closed { since_connect: since.elapsed(), since_ready: ready.elapsed() }, got)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// What a tool writing the files in place does: each file whole (a rename), one after the other.
fn write_each(dir: &Path, certs: &DevCerts) {
    for (name, text) in [("tls.crt", &certs.tls_cert_pem), ("tls.key", &certs.tls_key_pem)] {
        let tmp = dir.join(format!("{name}.tmp"));
        ok(std::fs::write(&tmp, text));
        ok(std::fs::rename(&tmp, dir.join(name)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_replaced_repeatedly_under_load_fail_no_request() {
    bounded(async {
        const ROTATIONS: usize = 8;
        let sets: Vec<DevCerts> = (0..=ROTATIONS).map(|_| new_certs()).collect();
        let cas: Vec<&str> = sets.iter().map(|c| c.ca_cert_pem.as_str()).collect();

        // Secret-volume layout for the first half of the rotations, files replaced one by one
        // for the second half.
        let dir = ok(tempfile::tempdir());
        swap_in(dir.path(), "..v0", &sets[0]);
        for name in ["tls.crt", "tls.key", "ca.crt"] {
            ok(std::os::unix::fs::symlink(PathBuf::from("..data").join(name), dir.path().join(name)));
        }
        let paths = CertPaths { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key") };
        let config = "server:\n  reloadInterval: 50ms\n  shutdownDelay: 0s\n";
        let server = start_in_process(dir, sets[0].clone(), paths, config).await;
        assert!(serves(server.addr, &cas, &sets[0]).await);

        // Four tasks, HTTP/1.1 and HTTP/2; each makes a new connection (a new TLS handshake)
        // every 10 requests, so handshakes happen all through the rotations.
        let (stop, list) = workers(server.addr, &cas, 4, 10, Duration::from_secs(40));
        let done = Arc::clone(&list[0].done);
        let load = start_load(list);
        // A keep-alive connection opened before the first rotation and used after the last.
        let mut kept = ok(tls_client::connect(server.addr, &cas, Tls::Any, Http::H2).await);

        // Each rotation under load: 15 more requests done (a new connection every 10) before it.
        let mut marker = 0;
        for (i, set) in sets.iter().enumerate().skip(1) {
            marker = marker.max(done.load(Ordering::Relaxed)) + 15;
            until_done(&done, marker, &format!("before rotation {i}")).await;
            if i <= ROTATIONS / 2 {
                swap_in(server.dir.path(), &format!("..v{i}"), set);
            } else {
                // Plain files from here on: replace the symlinks once.
                for name in ["tls.crt", "tls.key"] {
                    let p = server.dir.path().join(name);
                    if p.is_symlink() {
                        ok(std::fs::remove_file(&p));
                    }
                }
                write_each(server.dir.path(), set);
            }
            assert!(serves(server.addr, &cas, set).await, "rotation {i}: the new certificate is not served");
        }
        until_done(&done, done.load(Ordering::Relaxed) + 15, "after the last rotation").await;
        stop.store(true, Ordering::Relaxed);
        let t = collect(load).await;
        let kept_answer = ok(kept.call("POST", "/mutate", review_with_uid(&gitlab(), "kept")).await);

        let metrics = server.metrics().await;
        let reloads = metric_value(&metrics, "dind_injector_certificate_reloads_total{result=\"success\"}");
        let failures = metric_value(&metrics, "dind_injector_certificate_reloads_total{result=\"failure\"}");
        eprintln!(
            "rotation under load: {ROTATIONS} rotations ({reloads} reloads, {failures} failed reloads); sent {}, answered {}, failed {}, failed connections {}; p99 {:?}, max {:?}",
            t.sent,
            t.answered,
            t.failed,
            t.connect_errors,
            t.latency_quantile(0.99),
            t.max_latency
        );
        assert!(t.sent >= 100, "too little load to say anything: {} requests", t.sent);
        assert_eq!((t.failed, t.connect_errors), (0, 0), "requests or handshakes failed during rotations: {:#?}", t.failures());
        assert_eq!(t.answered, t.sent);
        assert_eq!(kept_answer.status, 200, "the connection opened before the rotations broke");
        assert!(reloads >= ROTATIONS as f64, "{reloads} reloads for {ROTATIONS} rotations");
        assert!(serves(server.addr, &cas, &sets[ROTATIONS]).await, "the last certificate is not served");
        assert_ne!(leaf_der(&server.certs), leaf_der(&sets[ROTATIONS]));
        server.stop().await;
    })
    .await;
}

/// A review whose body arrives in pieces over `over`, on its own connection. `begun` counts it
/// once the request is on its way: its headers sent, its first piece of body taken.
async fn trickled_review(
    addr: SocketAddr,
    ca: String,
    http: Http,
    uid: String,
    over: Duration,
    begun: Arc<AtomicUsize>,
) -> Result<(), String> {
    let mut conn = tls_client::connect(addr, &[&ca], Tls::Any, http).await?;
    let body = review_with_uid(&gitlab(), &uid);
    let (tx, streamed) = tls_client::streamed();
    let request = conn.request("POST", "/mutate", streamed)?;
    let pieces = 6;
    let sending = tokio::spawn(async move {
        for (i, chunk) in body.chunks(body.len().div_ceil(pieces)).enumerate() {
            if tx.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                return;
            }
            if i == 0 {
                // The client reads the body only once the headers are written.
                while tx.capacity() < tx.max_capacity() && !tx.is_closed() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                begun.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(over / pieces as u32).await;
        }
    });
    let answer = conn.send(request).await?;
    sending.abort();
    if answer.status != 200 {
        return Err(format!("HTTP {}: {}", answer.status, answer.text()));
    }
    match answer.json()["response"]["uid"].as_str() {
        Some(u) if u == uid => Ok(()),
        other => Err(format!("the answer names {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_every_review_and_exits_within_the_grace_period() {
    bounded(async {
        let delay = Duration::from_millis(500);
        let grace = Duration::from_secs(4);
        let mut server = Binary::start("server:\n  shutdownDelay: 500ms\n  shutdownGrace: 4s\n  reloadInterval: 1s\n");
        let ca = server.ca.clone();
        assert_eq!(readyz(server.health).await, Some(200));

        let (_, mut list) = workers(server.addr, &[&ca], 6, u64::MAX, Duration::from_secs(20));
        for w in &mut list {
            w.stop_on_connect_error = true;
            w.retry_unprocessed = true;
        }
        let started = list[0].started;
        let done = Arc::clone(&list[0].done);
        let load = start_load(list);
        until_done(&done, 100, "before the slow reviews").await;

        // Reviews whose bodies take 1.5 s to arrive: in flight when SIGTERM comes and still
        // after the shutdown delay, when the server stops accepting and drains.
        let begun = Arc::new(AtomicUsize::new(0));
        let slow: Vec<JoinHandle<Result<(), String>>> = [Http::H1, Http::H2, Http::H1, Http::H2]
            .into_iter()
            .enumerate()
            .map(|(i, http)| {
                let review = trickled_review(server.addr, ca.clone(), http, format!("slow-{i}"), Duration::from_millis(1500), Arc::clone(&begun));
                tokio::spawn(review)
            })
            .collect();
        // All four in flight (headers sent, body arriving) before SIGTERM.
        let deadline = Instant::now() + Duration::from_secs(20);
        while begun.load(Ordering::Relaxed) < 4 {
            assert!(Instant::now() < deadline, "the slow reviews did not all start within 20 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let term_at = started.elapsed();
        let term = Instant::now();
        server.signal("TERM");
        // Readiness fails at once.
        let mut not_ready_after = None;
        while term.elapsed() < Duration::from_secs(1) {
            if readyz(server.health).await == Some(503) {
                not_ready_after = Some(term.elapsed());
                break;
            }
        }
        let not_ready_after = not_ready_after.unwrap_or_else(|| panic!("/readyz did not fail within 1s of SIGTERM"));

        let mut slow_results = Vec::new();
        for s in slow {
            slow_results.push(ok(s.await));
        }
        let exit = tokio::task::block_in_place(|| server.wait(delay + grace + Duration::from_secs(3)));
        let (status, exited) = exit.unwrap_or_else(|| panic!("the server did not exit within shutdownDelay + shutdownGrace + 3s"));
        let exit_after = exited.duration_since(term);
        let t = collect(load).await;
        let logged = server.answered_uids();

        let answered_after_term = t.records.iter().filter(|r| r.result.is_ok() && r.at > term_at).count();
        eprintln!(
            "SIGTERM under load: readyz 503 after {:?}; sent {}, answered {} ({} after SIGTERM), failed {} (connections refused after: {}); slow in-flight reviews {}/{} answered; exit {:?} after {:?}",
            not_ready_after,
            t.sent,
            t.answered,
            answered_after_term,
            t.failed,
            t.connect_errors,
            slow_results.iter().filter(|r| r.is_ok()).count(),
            slow_results.len(),
            status.code(),
            exit_after
        );
        assert!(not_ready_after < Duration::from_millis(100), "/readyz took {not_ready_after:?} to fail");
        assert!(status.success(), "exit status {status:?}");
        assert!(exit_after < delay + grace, "exit {exit_after:?} after SIGTERM, past shutdownDelay + shutdownGrace");
        for (i, r) in slow_results.iter().enumerate() {
            assert!(r.is_ok(), "the in-flight review slow-{i} did not complete: {r:?}");
        }
        assert!(t.sent >= 100, "too little load: {} requests", t.sent);
        assert!(answered_after_term > 0, "nothing was answered during shutdownDelay");
        // Every review reached its client whole and none failed on its connection: from SIGTERM
        // on, each HTTP/1.1 answer says `Connection: close` and each HTTP/2 connection gets a
        // graceful GOAWAY, so no connection is closed under a request. The only errors are new
        // connections refused once the listener has closed (after shutdownDelay): a client that
        // dialled then (a request GOAWAY sent back, resent on a new connection) finds no
        // listener, where in a cluster the endpoint is long gone and it dials another replica.
        let stopped_serving = term_at + delay - Duration::from_millis(50);
        for r in &t.records {
            match &r.result {
                Ok(()) => assert!(logged.contains(&r.uid), "{} was answered but not logged", r.uid),
                Err(e) => {
                    let refused_after_close = e.starts_with("connect ") && r.at + r.latency >= stopped_serving;
                    assert!(
                        refused_after_close && !logged.contains(&r.uid),
                        "{} (sent {}ms after the start, SIGTERM at {}ms) failed: {e}",
                        r.uid,
                        ms(r.at),
                        ms(term_at)
                    );
                }
            }
        }
        for (at, e) in &t.connect_error_list {
            assert!(*at >= stopped_serving, "a connection failed at {}ms, before the listener closed: {e}", ms(*at));
        }
        for i in 0..4 {
            assert!(logged.contains(&format!("slow-{i}")));
        }
        assert_eq!(t.answered + t.failed, t.sent);
        assert!(server.logged("shutdown complete"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_stuck_past_the_grace_period_does_not_hold_the_exit() {
    bounded(async {
        let server = start_plain("server:\n  shutdownDelay: 0s\n  shutdownGrace: 1s\n  requestTimeout: 30s\n").await;
        let ca = server.certs.ca_cert_pem.clone();
        // A body that never finishes.
        let mut conn = ok(tls_client::connect(server.addr, &[&ca], Tls::Any, Http::H1).await);
        let (tx, body) = tls_client::streamed();
        let request = ok(conn.request("POST", "/mutate", body));
        ok(tx.send(Bytes::from_static(b"{\"apiVersion\":")).await);
        let stuck = tokio::spawn(async move { conn.send(request).await });
        // In flight (the server reads its body) before the shutdown, however long that takes.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.metrics().await.contains("dind_injector_inflight_reviews 1") {
            assert!(Instant::now() < deadline, "the stuck review was not in flight within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let started = Instant::now();
        server.shutdown.trigger();
        let result = tokio::time::timeout(Duration::from_secs(5), server.task).await;
        let took = started.elapsed();
        assert!(matches!(result, Ok(Ok(Ok(())))), "the server did not stop: {result:?}");
        eprintln!("a stuck review at shutdown: the server stopped after {took:?}");
        // The grace (1 s), then up to 1 s for health clients: bounded whatever the client does.
        assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2500), "stopped after {took:?}");
        assert!(!stuck.is_finished(), "the stuck review was answered");
        // In a process, `serve` returns and the exit closes the connection.
        stuck.abort();
        drop(tx);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_dropped_at_their_timeouts_while_others_are_answered() {
    bounded(async {
        let config = "server:\n  headerReadTimeout: 1s\n  requestTimeout: 2s\n  tlsHandshakeTimeout: 1s\n  shutdownDelay: 0s\n";
        let server = start_plain(config).await;
        let ca = server.certs.ca_cert_pem.clone();
        let addr = server.addr;
        let within = Duration::from_secs(8);

        // With a 1 s idle timeout, a load client starved of CPU by the hundreds of handshakes
        // below can look idle to the server, which closes its connection as it sends the next
        // review; like Go's client it sends that review again, and the counters below show the
        // server had not answered it.
        let (stop, mut list) = workers(addr, &[&ca], 2, u64::MAX, Duration::from_secs(20));
        for w in &mut list {
            w.retry_on_connection_error = true;
        }
        let load = start_load(list);

        // 100 TCP connections that never start TLS.
        let mut tasks: Vec<JoinHandle<(&'static str, Option<Closed>)>> = Vec::new();
        for _ in 0..100 {
            tasks.push(tokio::spawn(async move {
                let since = Instant::now();
                let mut tcp = ok(tokio::net::TcpStream::connect(addr).await);
                ("tcp without TLS", closed_within(&mut tcp, since, within).await.map(|c| c.0))
            }));
        }
        // TLS connections that never send a byte: 100 offering HTTP/1.1, 20 offering HTTP/2.
        for (what, http, count) in [("TLS, silent, ALPN http/1.1", Http::H1, 100), ("TLS, silent, ALPN h2", Http::H2, 20)] {
            for _ in 0..count {
                let ca = ca.clone();
                tasks.push(tokio::spawn(async move {
                    let since = Instant::now();
                    let mut tls = raw_tls(addr, &ca, http).await;
                    (what, closed_within(&mut tls, since, within).await.map(|c| c.0))
                }));
            }
        }
        // 20 HTTP/2 connections idle after the preface and SETTINGS.
        for _ in 0..20 {
            let ca = ca.clone();
            tasks.push(tokio::spawn(async move {
                let since = Instant::now();
                let mut tls = raw_tls(addr, &ca, Http::H2).await;
                let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
                let wrote = tls.write_all(preface).await.and(tls.flush().await);
                assert!(wrote.is_ok(), "the HTTP/2 preface could not be sent {:?} after connecting: {wrote:?}", since.elapsed());
                ("HTTP/2, idle after the preface", closed_within(&mut tls, since, within).await.map(|c| c.0))
            }));
        }
        // 10 HTTP/1.1 keep-alive connections idle after one review.
        for i in 0..10 {
            let ca = ca.clone();
            tasks.push(tokio::spawn(async move {
                let since = Instant::now();
                let mut tls = raw_tls(addr, &ca, Http::H1).await;
                let body = review_with_uid(&gitlab(), &format!("keep-alive-{i}"));
                let head = format!("POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
                let wrote = tls.write_all(&[head.as_bytes(), &body].concat()).await.and(tls.flush().await);
                assert!(wrote.is_ok(), "the review could not be sent {:?} after connecting: {wrote:?}", since.elapsed());
                let closed = closed_within(&mut tls, since, within).await;
                let answered = closed.as_ref().is_some_and(|(_, got)| got.starts_with(b"HTTP/1.1 200"));
                assert!(answered || closed.is_none(), "the keep-alive review was not answered");
                ("HTTP/1.1 keep-alive, idle after one review", closed.map(|c| c.0))
            }));
        }
        // 10 request heads trickled a byte every 100 ms (they would take 5 s).
        for i in 0..10 {
            let ca = ca.clone();
            tasks.push(tokio::spawn(async move {
                let since = Instant::now();
                let tls = raw_tls(addr, &ca, Http::H1).await;
                let head = format!("POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-Slow: {i:>04}\r\n\r\n");
                let (mut read, mut write) = tokio::io::split(tls);
                let writing = tokio::spawn(async move {
                    for b in head.bytes().take(50) {
                        if write.write_all(&[b]).await.is_err() || write.flush().await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                let closed = closed_within(&mut read, since, within).await.map(|c| c.0);
                writing.abort();
                ("trickled head", closed)
            }));
        }
        // 10 bodies (HTTP/1.1 and HTTP/2) trickled 10 bytes every 100 ms: 408 at requestTimeout.
        let mut bodies: Vec<JoinHandle<(Http, Duration, u16)>> = Vec::new();
        for i in 0..10 {
            let ca = ca.clone();
            let http = if i % 2 == 0 { Http::H1 } else { Http::H2 };
            bodies.push(tokio::spawn(async move {
                let mut conn = ok(tls_client::connect(addr, &[&ca], Tls::Any, http).await);
                let (tx, body) = tls_client::streamed();
                let request = ok(conn.request("POST", "/mutate", body));
                let sending = tokio::spawn(async move {
                    for _ in 0..50 {
                        if tx.send(Bytes::from_static(b"          ")).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                let started = Instant::now();
                let answer = ok(conn.send(request).await);
                sending.abort();
                (http, started.elapsed(), answer.status.as_u16())
            }));
        }

        let mut closed: BTreeMap<&'static str, Vec<Option<Closed>>> = BTreeMap::new();
        for t in tasks {
            let (what, c) = ok(t.await);
            closed.entry(what).or_default().push(c);
        }
        let mut answered_bodies = Vec::new();
        for b in bodies {
            answered_bodies.push(ok(b.await));
        }
        stop.store(true, Ordering::Relaxed);
        let t = collect(load).await;

        for (what, list) in &closed {
            let open = list.iter().filter(|c| c.is_none()).count();
            let slowest = list.iter().flatten().map(|c| c.since_ready).max().unwrap_or_default();
            let fastest = list.iter().flatten().map(|c| c.since_connect).min().unwrap_or_default();
            eprintln!("{what}: {} connections, {open} still open after {within:?}; closed {fastest:?} after connecting at the earliest, {slowest:?} after the client's last byte at the latest", list.len());
        }
        eprintln!(
            "meanwhile: sent {}, answered {}, failed {}, sent again on a new connection {}; p50 {:?}, p99 {:?}, max {:?}",
            t.sent,
            t.answered,
            t.failed,
            t.retried,
            t.latency_quantile(0.5),
            t.latency_quantile(0.99),
            t.max_latency
        );
        for (http, took, status) in &answered_bodies {
            eprintln!("trickled body over {http:?}: {status} after {took:?}");
        }

        // Others kept being answered.
        assert_eq!((t.failed, t.connect_errors), (0, 0), "{:#?}", t.failures());
        assert!(t.sent >= 50, "too little load: {} requests", t.sent);
        assert!(t.latency_quantile(0.99) < Duration::from_secs(1), "p99 {:?} while slow clients were connected", t.latency_quantile(0.99));
        // Slow ones were dropped at their timeout, not before, not much after (timed from before
        // connecting; the idle HTTP/2 client never answers the PING of the GOAWAY exchange, so
        // it is dropped after a second timeout).
        let expect = [
            ("tcp without TLS", 1000),
            ("TLS, silent, ALPN http/1.1", 1000),
            ("TLS, silent, ALPN h2", 1000),
            ("HTTP/2, idle after the preface", 1000),
            ("HTTP/1.1 keep-alive, idle after one review", 1000),
            ("trickled head", 1000),
        ];
        for (what, timeout_ms) in expect {
            let list = &closed[what];
            for c in list {
                let c = c.unwrap_or_else(|| panic!("{what}: a connection was still open after {within:?}"));
                assert!(
                    c.since_connect >= Duration::from_millis(timeout_ms - 10) && c.since_ready < Duration::from_millis(2 * timeout_ms + 1000),
                    "{what}: closed {c:?}, the timeout is {timeout_ms}ms"
                );
            }
        }
        for (http, took, status) in &answered_bodies {
            assert_eq!(*status, 408, "{http:?}");
            assert!(*took >= Duration::from_millis(1950) && *took < Duration::from_millis(3500), "{http:?}: 408 after {took:?}");
        }
        let metrics = server.metrics().await;
        assert_eq!(metric_value(&metrics, "dind_injector_reviews_total{endpoint=\"mutate\",decision=\"error\",reason=\"body-timeout\",runner=\"-\"}"), 10.0, "{metrics}");
        // Every GitLab review the server answered is one of the load's or the 10 keep-alive
        // ones: none was answered twice, so none sent again had been answered the first time.
        let injected = metric_value(&metrics, "dind_injector_reviews_total{endpoint=\"mutate\",decision=\"injected\",reason=\"injected\",runner=\"gitlab\"}");
        assert_eq!(injected, (t.answered + 10) as f64, "{metrics}");
        assert!(t.retried <= 4, "{} reviews sent again", t.retried);
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_deeply_nested_bodies_are_refused_fast_with_memory_bounded() {
    bounded(async {
        // The default server.maxBodyBytes (6 MiB), on the real binary, so its memory can be read.
        let server = Binary::start("server:\n  shutdownDelay: 0s\n");
        let ca = server.ca.clone();
        let limit: usize = 6 * 1024 * 1024;
        let before_kib = server.peak_rss_kib();
        let message = |a: &tls_client::Answer| a.json()["response"]["status"]["message"].as_str().unwrap_or_default().to_owned();

        // 100k-deep nesting: a 400 saying what is wrong, not a stack overflow. (The review is
        // read into structs with the object kept raw, and serde_json skips what it does not
        // keep without recursing, so its recursion limit (128) is never even reached.)
        let mut cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
            ("100k-deep [[[", "[".repeat(100_000).into_bytes(), 400, "AdmissionReview"),
            ("100k-deep {\"a\":", "{\"a\":".repeat(100_000).into_bytes(), 400, "not JSON"),
            ("6 MiB - 1 of [", vec![b'['; limit - 1], 400, "AdmissionReview"),
            ("6 MiB + 1 of spaces", vec![b' '; limit + 1], 413, "server.maxBodyBytes"),
        ];
        // Deep nesting inside the pod: the raw object is skipped without recursion; the pod
        // decoder refuses it or ignores it, and either way the answer is quick.
        let mut deep_pod = support::review("gitlab");
        deep_pod["request"]["object"]["spec"]["x"] = Value::Null;
        let text =
            ok(serde_json::to_string(&deep_pod)).replace("\"x\":null", &format!("\"x\":{}{}", "[".repeat(100_000), "]".repeat(100_000)));
        cases.push(("100k-deep unknown pod field", text.into_bytes(), 200, ""));
        for http in [Http::H1, Http::H2] {
            for (what, body, status, says) in &cases {
                let mut conn = ok(tls_client::connect(server.addr, &[&ca], Tls::Any, http).await);
                let started = Instant::now();
                let answer = conn.call("POST", "/mutate", body.clone()).await;
                let took = started.elapsed();
                // Over HTTP/1.1 the server answers 413 from Content-Length and closes while the
                // client is still writing; hyper's client then reports the write, not the answer
                // (the raw-socket case below reads that answer).
                let answer = match answer {
                    Err(e) if http == Http::H1 && *status == 413 && e.contains("error writing a body") => {
                        eprintln!("{what} over {http:?}: the client saw {e:?} after {took:?}");
                        assert!(took < Duration::from_secs(3), "{what} over {http:?} took {took:?}");
                        continue;
                    }
                    other => ok(other),
                };
                eprintln!(
                    "{what} over {http:?}: HTTP {} after {took:?}: {}",
                    answer.status,
                    message(&answer).chars().take(160).collect::<String>()
                );
                assert_eq!(answer.status, *status, "{what} over {http:?}: {}", answer.text());
                assert!(message(&answer).contains(says), "{what}: {}", message(&answer));
                assert!(took < Duration::from_secs(3), "{what} over {http:?} took {took:?}");
            }
        }

        // A declared length past the limit is refused before the body is sent.
        let mut tls = raw_tls(server.addr, &ca, Http::H1).await;
        let head = "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n";
        let started = Instant::now();
        ok(tls.write_all(head.as_bytes()).await);
        ok(tls.flush().await);
        let (closed, got) =
            closed_within(&mut tls, started, Duration::from_secs(5)).await.unwrap_or_else(|| panic!("no answer to a 1 GiB Content-Length"));
        let took = closed.since_connect;
        let got = String::from_utf8_lossy(&got).into_owned();
        eprintln!("Content-Length 1 GiB, no body: {:?} after {took:?}", got.lines().next());
        assert!(got.starts_with("HTTP/1.1 413"), "{got}");
        assert!(got.contains("server.maxBodyBytes"), "{got}");
        assert!(started.elapsed() < Duration::from_secs(1));

        // 64 MiB streamed without a length, over HTTP/2: cut at the limit.
        let mut conn = ok(tls_client::connect(server.addr, &[&ca], Tls::Any, Http::H2).await);
        let (tx, body) = tls_client::streamed();
        let request = ok(conn.request("POST", "/mutate", body));
        let sending = tokio::spawn(async move {
            let mut sent = 0usize;
            for _ in 0..1024 {
                if tx.send(Bytes::from(vec![b'['; 64 * 1024])).await.is_err() {
                    break;
                }
                sent += 64 * 1024;
            }
            sent
        });
        let started = Instant::now();
        let answer = ok(conn.send(request).await);
        let took = started.elapsed();
        sending.abort();
        eprintln!("64 MiB streamed without a length: HTTP {} after {took:?}", answer.status);
        assert_eq!(answer.status, 413);
        assert!(took < Duration::from_secs(5));

        // 8 clients at once, each with a body just under the limit: memory stays bounded.
        let mut at_once = Vec::new();
        for i in 0..8 {
            let ca = ca.clone();
            let addr = server.addr;
            at_once.push(tokio::spawn(async move {
                let http = if i % 2 == 0 { Http::H1 } else { Http::H2 };
                let mut conn = ok(tls_client::connect(addr, &[&ca], Tls::Any, http).await);
                ok(conn.call("POST", "/mutate", vec![b'['; limit - 1]).await).status
            }));
        }
        for t in at_once {
            assert_eq!(ok(t.await), 400);
        }
        let peak_kib = server.peak_rss_kib();
        let growth_mib = peak_kib.saturating_sub(before_kib) as f64 / 1024.0;
        eprintln!(
            "peak RSS {:.1} MiB (from {:.1} MiB at start, +{growth_mib:.1} MiB)",
            peak_kib as f64 / 1024.0,
            before_kib as f64 / 1024.0
        );
        // Each body in flight is held at most twice (the frames as collected, and one
        // contiguous copy); 8 bodies of 6 MiB bound the growth at ~100 MiB.
        assert!(growth_mib < 8.0 * 2.0 * 6.0 + 16.0, "peak RSS grew by {growth_mib:.1} MiB");
        // Still serving.
        let mut conn = ok(tls_client::connect(server.addr, &[&ca], Tls::Any, Http::H1).await);
        assert_eq!(ok(conn.call("POST", "/mutate", review_with_uid(&gitlab(), "after")).await).status, 200);
    })
    .await;
}
