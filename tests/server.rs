//! The HTTPS server end to end: real TLS on 127.0.0.1 port 0, certificates generated into a
//! temporary directory, HTTP/1.1 and HTTP/2, rotation, bad input, health and shutdown.

mod support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use dind_injector::certs::write_dev_certs;
use dind_injector::server::{CertPaths, Server, ServerOptions};
use hyper::body::Bytes;
use serde_json::{Value, json};
use support::serve::{InProcess, namespaces, start, start_at};
use support::tls_client::{self, Answer, Http, Tls, leaf_der, new_certs, serves, swap_in};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// No test may take longer than this.
const LIMIT: Duration = Duration::from_secs(30);
/// A configuration with quick reloads and a short shutdown.
const QUICK: &str = "server:\n  reloadInterval: 100ms\n  shutdownDelay: 300ms\n  shutdownGrace: 5s\n";

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, test).await.unwrap_or_else(|_| panic!("the test took longer than {LIMIT:?}"))
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    ok(std::fs::read(support::fixtures_dir().join(format!("reviews/{name}.json"))))
}

fn message(answer: &Answer) -> String {
    answer.json()["response"]["status"]["message"].as_str().unwrap_or_default().to_owned()
}

/// Writes `text` to `path` the way a careful writer (or the kubelet) does: whole or not at all.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    ok(std::fs::write(&tmp, text));
    ok(std::fs::rename(&tmp, path));
}

fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} missing from\n{metrics}"))
}

/// Polls `probe` until it returns true or `within` passes.
async fn eventually<F: Future<Output = bool>>(within: Duration, mut probe: impl FnMut() -> F) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_is_answered_over_http1_and_http2() {
    bounded(async {
        let server = start(Some(QUICK)).await;
        for http in [Http::H1, Http::H2] {
            let mut conn = server.connect(http).await;
            let want_alpn: &[u8] = if http == Http::H2 { b"h2" } else { b"http/1.1" };
            assert_eq!(conn.alpn.as_deref(), Some(want_alpn));
            // One connection for the four reviews: keep-alive and stream reuse work.
            for name in support::FIXTURES {
                let answer = ok(conn.call("POST", "/mutate", fixture_bytes(name)).await);
                assert_eq!(answer.status, 200, "{name} over {http:?}: {}", answer.text());
                assert_eq!(answer.content_type.as_deref(), Some("application/json"));
                let review = answer.json();
                let response = &review["response"];
                assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
                assert_eq!(review["kind"], "AdmissionReview");
                assert_eq!(response["uid"], support::review(name)["request"]["uid"], "{name}");
                assert_eq!(response["allowed"], true, "{name}");
                if support::INJECTED_FIXTURES.contains(&name) {
                    assert_eq!(response["patchType"], "JSONPatch", "{name}");
                    let patch = response["patch"].as_str().unwrap_or_default();
                    let decoded = ok(base64::engine::general_purpose::STANDARD.decode(patch));
                    let ops: Value = ok(serde_json::from_slice(&decoded));
                    assert!(ops.as_array().is_some_and(|a| !a.is_empty()), "{name}: {ops}");
                } else {
                    assert!(response.get("patch").is_none(), "{name}: {response}");
                    assert!(response["warnings"].as_array().is_some_and(|w| !w.is_empty()), "{name}: {response}");
                }
            }
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_only_and_1_3_only_clients_are_served() {
    bounded(async {
        let server = start(Some(QUICK)).await;
        for (tls, version) in [(Tls::V12, rustls::ProtocolVersion::TLSv1_2), (Tls::V13, rustls::ProtocolVersion::TLSv1_3)] {
            for http in [Http::H1, Http::H2] {
                let mut conn = ok(tls_client::connect(server.addr, &[server.ca()], tls, http).await);
                assert_eq!(conn.tls_version, Some(version));
                let answer = ok(conn.call("POST", "/mutate", fixture_bytes("gitlab")).await);
                assert_eq!(answer.status, 200, "{tls:?} {http:?}: {}", answer.text());
                assert_eq!(answer.json()["response"]["allowed"], true);
            }
        }
        server.stop().await;
    })
    .await;
}

fn small_review(api_version: &str, kind: Value, object: Value) -> Vec<u8> {
    ok(serde_json::to_vec(&json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "d1f0c2a4-0000-4000-8000-000000000001",
            "kind": kind,
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": "ci",
            "name": "web",
            "operation": "CREATE",
            "userInfo": {"username": "tester"},
            "object": object,
        }
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_answer_and_the_server_keeps_serving() {
    bounded(async {
        let config = "server:\n  maxBodyBytes: 4096\n  requestTimeout: 500ms\n  headerReadTimeout: 500ms\n  shutdownDelay: 0s\n";
        let server = start(Some(config)).await;
        for http in [Http::H1, Http::H2] {
            let a = server.post(http, "/mutate", "{\"apiVersion\": ").await;
            assert_eq!(a.status, 400, "{http:?}");
            assert!(message(&a).contains("JSON"), "{}", message(&a));

            let a = server.post(http, "/mutate", vec![b' '; 8192]).await;
            assert_eq!(a.status, 413, "{http:?}: {}", a.text());
            assert!(message(&a).contains("server.maxBodyBytes (4096 bytes)"), "{}", message(&a));

            let pod_kind = json!({"group": "", "version": "v1", "kind": "Pod"});
            let a = server.post(http, "/mutate", small_review("admission.k8s.io/v1beta1", pod_kind, json!({}))).await;
            assert_eq!(a.status, 400);
            assert!(message(&a).contains("[\"v1\"]"), "{}", message(&a));
            assert_eq!(a.json()["response"]["uid"], "d1f0c2a4-0000-4000-8000-000000000001");

            let a = server.post(http, "/mutate", r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).await;
            assert_eq!(a.status, 400);
            assert!(message(&a).contains("no `request`"), "{}", message(&a));

            let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
            let kind = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
            let a = server.post(http, "/mutate", small_review("admission.k8s.io/v1", kind, deployment)).await;
            assert_eq!(a.status, 200, "{}", a.text());
            assert_eq!(a.json()["response"]["allowed"], true);
            assert!(a.json()["response"].get("patch").is_none());

            let a = ok(server.connect(http).await.call("GET", "/mutate", "").await);
            assert_eq!(a.status, 405);
            assert!(a.text().contains("POST"), "{}", a.text());

            let a = server.post(http, "/nowhere", "{}").await;
            assert_eq!(a.status, 404);
            assert!(a.text().contains("/mutate"), "{}", a.text());
        }

        // A body streamed without a length is cut at the limit too.
        let mut conn = server.connect(Http::H2).await;
        let (tx, body) = tls_client::streamed();
        let request = ok(conn.request("POST", "/mutate", body));
        let sending = tokio::spawn(async move {
            for _ in 0..8 {
                if tx.send(Bytes::from(vec![b' '; 1024])).await.is_err() {
                    break;
                }
            }
        });
        let a = ok(conn.send(request).await);
        assert_eq!(a.status, 413, "{}", a.text());
        sending.abort();

        // A client that stops sending its body gets 408 after server.requestTimeout.
        let mut conn = server.connect(Http::H1).await;
        let (tx, body) = tls_client::streamed();
        let request = ok(conn.request("POST", "/mutate", body));
        ok(tx.send(Bytes::from_static(b"{\"apiVersion\"")).await);
        let started = std::time::Instant::now();
        let a = ok(conn.send(request).await);
        assert_eq!(a.status, 408, "{}", a.text());
        assert!(message(&a).contains("server.requestTimeout"), "{}", message(&a));
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(tx);

        // A client that never finishes its headers is disconnected after headerReadTimeout.
        let config = ok(tls_client::client_config(&[server.ca()], Tls::Any, Http::H1));
        let tcp = ok(tokio::net::TcpStream::connect(server.addr).await);
        let name = ok(rustls::pki_types::ServerName::try_from("localhost"));
        let mut tls = ok(tokio_rustls::TlsConnector::from(config).connect(name, tcp).await);
        ok(tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n").await);
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a slow-header connection was left open");

        // Still serving.
        let a = server
            .post(
                Http::H1,
                "/mutate",
                small_review("admission.k8s.io/v1", json!({"group": "apps", "version": "v1", "kind": "Deployment"}), json!({})),
            )
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(server.health("/readyz").await.status, 200);
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_certificates_are_served_and_bad_ones_ignored() {
    bounded(async {
        let server = start(Some(QUICK)).await;
        let first = server.certs.clone();
        let second = new_certs();
        let cas = [first.ca_cert_pem.as_str(), second.ca_cert_pem.as_str()];
        assert!(serves(server.addr, &cas, &first).await);
        // An open connection stays usable across the rotation.
        let mut kept = server.connect(Http::H2).await;

        ok(write_dev_certs(server.dir.path(), &second));
        assert!(serves(server.addr, &cas, &second).await, "the rewritten certificate is not served");
        assert_eq!(ok(kept.call("POST", "/mutate", fixture_bytes("gitlab")).await).status, 200);

        // Each bad pair differs from the one before in one file, replaced whole: one new pair for
        // the reloader, so one more failed reload once it has read it (the event each step waits
        // for, however loaded the machine), and the rotated certificate still served.
        let reload_failures = || async {
            let metrics = server.health("/metrics").await.text();
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("dind_injector_certificate_reloads_total{result=\"failure\"} "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let before = reload_failures().await;
        let bad_cert = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
        for (step, (cert, key)) in [
            (bad_cert, second.tls_key_pem.as_str()),
            (first.tls_cert_pem.as_str(), second.tls_key_pem.as_str()),
            ("", second.tls_key_pem.as_str()),
            ("", ""),
        ]
        .into_iter()
        .enumerate()
        {
            write_atomically(&server.dir.path().join("tls.crt"), cert);
            write_atomically(&server.dir.path().join("tls.key"), key);
            let expected = before + step as f64 + 1.0;
            let read = eventually(Duration::from_secs(10), || async { reload_failures().await >= expected }).await;
            assert!(read, "bad pair {step}: no failed reload counted within 10 s (expected {expected})");
            assert_eq!(ok(tls_client::peer_leaf(server.addr, &cas).await), leaf_der(&second), "bad pair {step} replaced the certificate");
            assert_eq!(server.health("/readyz").await.status, 200);
        }
        let metrics = server.health("/metrics").await.text();
        assert!(metrics.contains("dind_injector_certificate_reloads_total{result=\"success\"} 1"), "{metrics}");
        // Exactly one failure per bad pair: each was read once, and none was taken.
        let failures = metric_value(&metrics, "dind_injector_certificate_reloads_total{result=\"failure\"}");
        assert_eq!(failures, before + 4.0, "{metrics}");
        assert!(metrics.contains("dind_injector_certificate_not_after_seconds "), "{metrics}");
        server.stop().await;
    })
    .await;
}

#[cfg(unix)]
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_style_symlink_swap_is_picked_up() {
    bounded(async {
        let dir = ok(tempfile::tempdir());
        let first = new_certs();
        swap_in(dir.path(), "..2025_01_01_v1", &first);
        for name in ["tls.crt", "tls.key", "ca.crt"] {
            ok(std::os::unix::fs::symlink(PathBuf::from("..data").join(name), dir.path().join(name)));
        }
        let paths = CertPaths { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key") };
        let server = start_at(dir, first.clone(), paths, Some(QUICK)).await;
        let second = new_certs();
        let cas = [first.ca_cert_pem.as_str(), second.ca_cert_pem.as_str()];
        assert!(serves(server.addr, &cas, &first).await);
        swap_in(server.dir.path(), "..2025_01_02_v2", &second);
        assert!(serves(server.addr, &cas, &second).await, "the swapped-in certificate is not served");
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_changes_apply_and_bad_ones_are_ignored() {
    bounded(async {
        let server = start(Some("server:\n  reloadInterval: 100ms\n  maxBodyBytes: 4096\n  shutdownDelay: 0s\n")).await;
        let big = vec![b' '; 6000];
        assert_eq!(server.post(Http::H1, "/mutate", big.clone()).await.status, 413);
        let config = server.dir.path().join("config.yaml");
        write_atomically(&config, "server:\n  reloadInterval: 100ms\n  maxBodyBytes: 65536\n  shutdownDelay: 0s\n");
        let raised =
            eventually(Duration::from_secs(3), || async { server.post(Http::H1, "/mutate", big.clone()).await.status == 400 }).await;
        assert!(raised, "the new server.maxBodyBytes was not applied");
        write_atomically(&config, "server:\n  reloadInterval: 100ms\n  maxBodyBytes: 12\n  bogus: 1\n");
        // Once the reloader has read (and refused) it: a failed reload is counted.
        let refused = eventually(Duration::from_secs(10), || async {
            server.health("/metrics").await.text().contains("dind_injector_config_reloads_total{result=\"failure\"} 1")
        })
        .await;
        assert!(refused, "the bad configuration was not read within 10 s");
        assert_eq!(server.post(Http::H1, "/mutate", big).await.status, 400, "a bad configuration was applied");
        let metrics = server.health("/metrics").await.text();
        assert!(metrics.contains("dind_injector_config_reloads_total{result=\"failure\"} 1"), "{metrics}");
        assert!(metrics.contains("dind_injector_config_reloads_total{result=\"success\"} 1"), "{metrics}");
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_a_graceful_shutdown() {
    bounded(async {
        let server = start(Some(QUICK)).await;
        let healthz = server.health("/healthz").await;
        assert_eq!(healthz.status, 200);
        assert_eq!(server.health("/readyz").await.status, 200);
        assert_eq!(server.health("/nowhere").await.status, 404);
        assert_eq!(server.post(Http::H2, "/mutate", fixture_bytes("gitlab")).await.status, 200);
        let metrics = server.health("/metrics").await.text();
        assert!(
            metrics
                .contains("dind_injector_reviews_total{endpoint=\"mutate\",decision=\"injected\",reason=\"injected\",runner=\"gitlab\"} 1"),
            "{metrics}"
        );
        assert!(metrics.contains("dind_injector_review_duration_seconds_bucket{le=\"0.00005\",endpoint=\"mutate\"}"), "{metrics}");

        // A review whose body is still arriving when the shutdown starts.
        let mut conn = server.connect(Http::H1).await;
        let body = fixture_bytes("buildkite");
        let (head, tail) = body.split_at(body.len() / 2);
        let (tx, streamed) = tls_client::streamed();
        let mut request = ok(conn.request("POST", "/mutate", streamed));
        request.headers_mut().insert("content-length", ok(body.len().to_string().parse()));
        let answer = tokio::spawn(async move { conn.send(request).await });
        ok(tx.send(Bytes::copy_from_slice(head)).await);
        let inflight = eventually(Duration::from_secs(3), || async {
            server.health("/metrics").await.text().contains("dind_injector_inflight_reviews 1")
        })
        .await;
        assert!(inflight, "the review never started");

        server.shutdown.trigger();
        let ready = server.health("/readyz").await;
        assert_eq!(ready.status, 503);
        assert!(ready.text().contains("shutting down"), "{}", ready.text());
        assert_eq!(server.health("/healthz").await.status, 200);
        // Past server.shutdownDelay (300ms) new connections are refused …
        let refused = eventually(Duration::from_secs(3), || async { tokio::net::TcpStream::connect(server.addr).await.is_err() }).await;
        assert!(refused, "the listener was not closed after shutdownDelay");
        // … while the one in flight still gets its answer.
        ok(tx.send(Bytes::copy_from_slice(tail)).await);
        drop(tx);
        let a = ok(ok(answer.await));
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.json()["response"]["uid"], support::review("buildkite")["request"]["uid"]);
        let result = tokio::time::timeout(Duration::from_secs(10), server.task).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "the server did not stop cleanly: {result:?}");
    })
    .await;
}

#[test]
fn startup_fails_on_bad_files_naming_them() {
    let dir = ok(tempfile::tempdir());
    let certs = new_certs();
    ok(write_dev_certs(dir.path(), &certs));
    let other = new_certs();
    let options = |cert: &str, key: &str, config: Option<PathBuf>| ServerOptions {
        listen: ok("127.0.0.1:0".parse()),
        health_listen: ok("127.0.0.1:0".parse()),
        certs: CertPaths { cert: dir.path().join(cert), key: dir.path().join(key) },
        config_path: config,
        namespaces: namespaces(),
        cluster: Default::default(),
    };
    let error = |o| Server::new(o).err().map(|e| e.to_string()).unwrap_or_default();

    let e = error(options("missing.crt", "tls.key", None));
    assert!(e.contains("missing.crt") && e.contains("certificate"), "{e}");
    ok(std::fs::write(dir.path().join("junk.key"), "not a key"));
    let e = error(options("tls.crt", "junk.key", None));
    assert!(e.contains("junk.key") && e.contains("PRIVATE KEY"), "{e}");
    ok(std::fs::write(dir.path().join("other.key"), &other.tls_key_pem));
    let e = error(options("tls.crt", "other.key", None));
    assert!(e.contains("other.key") && e.contains("does not match"), "{e}");
    ok(std::fs::write(dir.path().join("ca-only.crt"), ""));
    let e = error(options("ca-only.crt", "tls.key", None));
    assert!(e.contains("ca-only.crt") && e.contains("BEGIN CERTIFICATE"), "{e}");
    let bad_config = dir.path().join("bad.yaml");
    ok(std::fs::write(&bad_config, "server:\n  maxBodyBytes: lots\n"));
    let e = error(options("tls.crt", "tls.key", Some(bad_config)));
    assert!(e.contains("server.maxBodyBytes"), "{e}");
    assert!(Server::new(options("tls.crt", "tls.key", None)).is_ok());
}

/// The review the apiserver would send to /validate for `object` after the mutating webhooks.
fn validate_review(uid: &str, object: &Value) -> Vec<u8> {
    ok(serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "ci", "operation": "CREATE", "object": object}
    })))
}

/// The whole admission chain over HTTPS: /mutate's patch applied, then /validate on the result.
async fn mutate_then_patch(server: &InProcess, name: &str) -> Value {
    let answer = server.post(Http::H2, "/mutate", fixture_bytes(name)).await;
    let patch = answer.json()["response"]["patch"].as_str().unwrap_or_default().to_owned();
    let ops: json_patch::Patch = ok(serde_json::from_slice(&ok(base64::engine::general_purpose::STANDARD.decode(patch))));
    support::apply_ops(&support::review(name)["request"]["object"], &ops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_pods_pass_validation_and_what_must_be_caught_is_caught_over_https() {
    bounded(async {
        let enforce = start(Some(QUICK)).await;
        let audit = start(Some(&format!("{QUICK}policy:\n  mode: audit\n"))).await;
        for name in support::INJECTED_FIXTURES {
            let pod = mutate_then_patch(&enforce, name).await;
            let answer = enforce.post(Http::H1, "/validate", validate_review(name, &pod)).await;
            assert_eq!(answer.status, 200);
            assert_eq!(answer.json()["response"]["uid"], name);
            assert_eq!(answer.json()["response"]["allowed"], true, "{name}: {}", message(&answer));
        }

        let pod = mutate_then_patch(&enforce, "gitlab").await;
        let mut privileged = pod.clone();
        if let Some(c) = privileged["spec"]["containers"].as_array_mut() {
            c.push(serde_json::json!({"name": "extra", "image": "alpine", "securityContext": {"privileged": true}}))
        }
        let mut socket = pod.clone();
        if let Some(v) = socket["spec"]["volumes"].as_array_mut() {
            v.push(serde_json::json!({"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}}))
        }
        if let Some(m) = socket["spec"]["containers"][0]["volumeMounts"].as_array_mut() {
            m.push(serde_json::json!({"name": "sock", "mountPath": "/var/run/docker.sock"}))
        }
        let mut tampered = pod.clone();
        if let Some(sidecar) = tampered["spec"]["initContainers"].as_array_mut().and_then(|c| c.iter_mut().find(|c| c["name"] == "dind")) {
            sidecar["args"] = serde_json::json!(["dockerd", "--host=tcp://0.0.0.0:2375"]);
        }
        let cases = [
            ("privileged", privileged, vec!["(privileged)"]),
            ("socket", socket, vec!["(hostPathVolumes)", "(dockerSocket)"]),
            ("tampered", tampered, vec!["injected dind sidecar", "(privileged)"]),
        ];
        for (what, pod, expected) in cases {
            let body = validate_review(what, &pod);
            let denied = enforce.post(Http::H2, "/validate", body.clone()).await;
            let response = &denied.json()["response"];
            assert_eq!(response["allowed"], false, "{what}");
            assert_eq!(response["status"]["code"], 403, "{what}");
            let text = message(&denied);
            for e in &expected {
                assert!(text.contains(e), "{what}: the denial must name {e}:\n{text}");
            }
            let audited = audit.post(Http::H1, "/validate", body).await;
            let response = &audited.json()["response"];
            assert_eq!(response["allowed"], true, "{what} in audit");
            let warnings = response["warnings"].as_array().map_or(0, Vec::len);
            assert!(warnings >= expected.len(), "{what}: {response}");
            assert!(response["auditAnnotations"]["violation-1"].is_string(), "{what}: {response}");
        }
        let metrics = enforce.health("/metrics").await.text();
        assert!(
            metric_value(&metrics, "dind_injector_policy_violations_total{mode=\"enforce\",level=\"baseline\",control=\"dockerSocket\"}")
                >= 1.0
        );
        enforce.stop().await;
        audit.stop().await;
    })
    .await;
}
