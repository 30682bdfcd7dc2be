//! The server's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::webhook::ReviewLog;

/// The review latency buckets, in seconds: 50µs to 1s.
const LATENCY_BUCKETS: [f64; 14] = [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Labels of `dind_injector_reviews_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    endpoint: &'static str,
    decision: &'static str,
    reason: &'static str,
    runner: &'static str,
}

/// Labels of `dind_injector_policy_violations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    mode: &'static str,
    level: &'static str,
    control: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Every metric the server keeps, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    violations: Family<ViolationLabels, Counter>,
    review_duration: Family<EndpointLabel, Histogram>,
    certificate_reloads: Family<ResultLabel, Counter>,
    config_reloads: Family<ResultLabel, Counter>,
    certificate_not_after: Gauge,
    inflight: Gauge,
    namespace_watch_connected: Gauge,
    runtime_class_watch_connected: Gauge,
    ca_bundle_patches: Family<ResultLabel, Counter>,
    ca_bundle_last_patch: Gauge,
    connections_drained: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reviews = Family::<ReviewLabels, Counter>::default();
        let violations = Family::<ViolationLabels, Counter>::default();
        let review_duration = Family::<EndpointLabel, Histogram>::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let certificate_reloads = Family::<ResultLabel, Counter>::default();
        let config_reloads = Family::<ResultLabel, Counter>::default();
        let certificate_not_after = Gauge::default();
        let inflight = Gauge::default();
        let namespace_watch_connected = Gauge::default();
        let runtime_class_watch_connected = Gauge::default();
        let ca_bundle_patches = Family::<ResultLabel, Counter>::default();
        let ca_bundle_last_patch = Gauge::default();
        let connections_drained = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dind_injector_namespace_watch_connected",
            "1 while the namespace watch is connected; 0 while the injector serves from its cache alone",
            namespace_watch_connected.clone(),
        );
        registry.register(
            "dind_injector_runtime_class_watch_connected",
            "1 while the RuntimeClass watch is connected; 0 while it fails (sysbox and kata are checked against the classes last listed, or not injected if none ever were: see /readyz)",
            runtime_class_watch_connected.clone(),
        );
        // Counters get `_total` appended by the encoder.
        registry.register("dind_injector_reviews", "Admission reviews answered", reviews.clone());
        registry.register(
            "dind_injector_policy_violations",
            "Pod Security violations and policy findings, one per problem found by /validate",
            violations.clone(),
        );
        registry.register(
            "dind_injector_review_duration_seconds",
            "Time from request to answer, body read included",
            review_duration.clone(),
        );
        registry.register(
            "dind_injector_certificate_reloads",
            "Serving certificate reloads after a file change",
            certificate_reloads.clone(),
        );
        registry.register("dind_injector_config_reloads", "Configuration reloads after a file change", config_reloads.clone());
        registry.register(
            "dind_injector_certificate_not_after_seconds",
            "When the served certificate expires (Unix time)",
            certificate_not_after.clone(),
        );
        registry.register("dind_injector_inflight_reviews", "Reviews being answered now", inflight.clone());
        registry.register(
            "dind_injector_ca_bundle_patches",
            "caBundle patches of the webhook configurations (self-managed certificates), each one needed because a webhook's caBundle was missing or out of date",
            ca_bundle_patches.clone(),
        );
        registry.register(
            "dind_injector_ca_bundle_last_patch_timestamp_seconds",
            "When caBundle was last patched successfully (Unix time; 0 if never by this replica)",
            ca_bundle_last_patch.clone(),
        );
        registry.register(
            "dind_injector_connections_drained",
            "Connections ended gracefully (HTTP/1.1 Connection: close, HTTP/2 GOAWAY) so the client dials again: reason max-age (server.maxConnectionAge) or shutdown",
            connections_drained.clone(),
        );
        Metrics {
            registry,
            reviews,
            violations,
            review_duration,
            certificate_reloads,
            config_reloads,
            certificate_not_after,
            inflight,
            namespace_watch_connected,
            runtime_class_watch_connected,
            ca_bundle_patches,
            ca_bundle_last_patch,
            connections_drained,
        }
    }

    /// Counts a connection drained for `reason` (`max-age` or `shutdown`).
    pub fn record_connection_drained(&self, reason: &'static str) {
        self.connections_drained.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts one answered review and its latency.
    pub fn record_review(&self, endpoint: &'static str, log: &ReviewLog, seconds: f64) {
        self.reviews.get_or_create(&ReviewLabels { endpoint, decision: log.decision, reason: log.reason, runner: log.runner }).inc();
        for control in &log.violations {
            self.violations.get_or_create(&ViolationLabels { mode: log.policy_mode, level: log.policy_level, control }).inc();
        }
        self.review_duration.get_or_create(&EndpointLabel { endpoint }).observe(seconds);
    }

    /// Counts a certificate reload attempt.
    pub fn record_certificate_reload(&self, ok: bool) {
        self.certificate_reloads.get_or_create(&result(ok)).inc();
    }

    /// Counts a configuration reload attempt.
    pub fn record_config_reload(&self, ok: bool) {
        self.config_reloads.get_or_create(&result(ok)).inc();
    }

    /// Records whether the namespace watch is connected.
    pub fn set_namespace_watch_connected(&self, connected: bool) {
        self.namespace_watch_connected.set(i64::from(connected));
    }

    /// Records whether the RuntimeClass watch is connected.
    pub fn set_runtime_class_watch_connected(&self, connected: bool) {
        self.runtime_class_watch_connected.set(i64::from(connected));
    }

    /// Counts a caBundle patch, and when it succeeded, its time (Unix seconds).
    pub fn record_ca_bundle_patch(&self, ok: bool, unix_seconds: i64) {
        self.ca_bundle_patches.get_or_create(&result(ok)).inc();
        if ok {
            self.ca_bundle_last_patch.set(unix_seconds);
        }
    }

    /// Sets the served certificate's expiry (Unix seconds).
    pub fn set_certificate_not_after(&self, unix_seconds: i64) {
        self.certificate_not_after.set(unix_seconds);
    }

    /// Marks one more review in flight until the guard is dropped.
    pub fn inflight(&self) -> InflightGuard<'_> {
        self.inflight.inc();
        InflightGuard(&self.inflight)
    }

    /// The metrics in the Prometheus/OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        text
    }
}

fn result(ok: bool) -> ResultLabel {
    ResultLabel { result: if ok { "success" } else { "failure" } }
}

/// Decrements the in-flight gauge when dropped (also when the request is cancelled).
#[derive(Debug)]
pub struct InflightGuard<'a>(&'a Gauge);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_name() {
        let m = Metrics::new();
        let log = ReviewLog { decision: "injected", reason: "injected", runner: "gitlab", ..ReviewLog::default() };
        m.record_review("mutate", &log, 0.000_07);
        m.record_certificate_reload(false);
        m.record_config_reload(true);
        m.set_certificate_not_after(1_900_000_000);
        m.record_ca_bundle_patch(true, 1_800_000_000);
        m.record_ca_bundle_patch(false, 1_800_000_100);
        m.set_namespace_watch_connected(true);
        m.set_runtime_class_watch_connected(true);
        m.record_connection_drained("max-age");
        drop(m.inflight());
        let text = m.render();
        for name in [
            "dind_injector_reviews_total{endpoint=\"mutate\",decision=\"injected\",reason=\"injected\",runner=\"gitlab\"} 1",
            "dind_injector_review_duration_seconds_bucket{le=\"0.0001\",endpoint=\"mutate\"} 1",
            "dind_injector_certificate_reloads_total{result=\"failure\"} 1",
            "dind_injector_config_reloads_total{result=\"success\"} 1",
            "dind_injector_certificate_not_after_seconds 1900000000",
            "dind_injector_inflight_reviews 0",
            "dind_injector_ca_bundle_patches_total{result=\"success\"} 1",
            "dind_injector_ca_bundle_patches_total{result=\"failure\"} 1",
            "dind_injector_ca_bundle_last_patch_timestamp_seconds 1800000000",
            "dind_injector_namespace_watch_connected 1",
            "dind_injector_runtime_class_watch_connected 1",
            "dind_injector_connections_drained_total{reason=\"max-age\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
