//! `server`: limits and timings of the HTTPS server.

use serde::{Deserialize, Serialize};

use super::Interval;

/// The shortest `server.maxConnectionAge` accepted (other than `0s`, off).
pub const MIN_CONNECTION_AGE: std::time::Duration = std::time::Duration::from_millis(100);

/// Limits and timings of the server. Every one is explicit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The largest request body accepted (an AdmissionReview carries up to two objects).
    pub max_body_bytes: usize,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Interval,
    /// How long a client may take to send its body, and the whole review at most.
    pub request_timeout: Interval,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Interval,
    /// How often certificate and configuration files are checked for changes.
    pub reload_interval: Interval,
    /// After SIGTERM, how long to keep serving while endpoints are removed.
    pub shutdown_delay: Interval,
    /// After that, how long in-flight reviews may take before the process exits.
    pub shutdown_grace: Interval,
    /// Open connections at most; more wait for a free slot.
    pub max_connections: usize,
    /// How long a connection is kept before the server ends it gracefully (HTTP/1.1: the next
    /// response says `Connection: close`; HTTP/2: a GOAWAY that lets streams in flight finish),
    /// so pooled clients such as the apiserver dial again and spread over the replicas. Each
    /// connection's age is drawn within 10% below this, so connections do not all end at once.
    /// `0s` turns it off.
    pub max_connection_age: Interval,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 6 * 1024 * 1024,
            header_read_timeout: Interval::secs(5),
            request_timeout: Interval::secs(10),
            tls_handshake_timeout: Interval::secs(5),
            reload_interval: Interval::secs(5),
            shutdown_delay: Interval::secs(5),
            shutdown_grace: Interval::secs(20),
            max_connections: 1024,
            max_connection_age: Interval::secs(60),
        }
    }
}

impl ServerConfig {
    /// Every problem with `server.*`.
    pub(super) fn check(&self, bad: &mut dyn FnMut(&str, String)) {
        if self.max_body_bytes < 4096 || self.max_body_bytes > 64 * 1024 * 1024 {
            bad("server.maxBodyBytes", "must be between 4096 and 67108864".into());
        }
        for (path, d) in [
            ("server.headerReadTimeout", self.header_read_timeout),
            ("server.requestTimeout", self.request_timeout),
            ("server.tlsHandshakeTimeout", self.tls_handshake_timeout),
            ("server.reloadInterval", self.reload_interval),
            ("server.shutdownGrace", self.shutdown_grace),
        ] {
            if d.0.is_zero() {
                bad(path, "must be more than 0".into());
            }
        }
        if self.max_connections == 0 {
            bad("server.maxConnections", "must be more than 0".into());
        }
        let age = self.max_connection_age.0;
        if !age.is_zero() && age < MIN_CONNECTION_AGE {
            bad(
                "server.maxConnectionAge",
                "must be 0s (connections live until the client or an idle timeout ends them) or at least 100ms: every new connection costs the client a TLS handshake".into(),
            );
        }
    }
}
