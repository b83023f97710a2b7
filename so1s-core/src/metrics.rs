//! Prometheus metrics, all named `so1s_*`, with histogram buckets set here and nowhere else.
//!
//! Each server owns its own [`Registry`], so several servers (or tests) in one process never
//! mix their figures.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds: 1 ms to ~8 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 14)
}

/// Batch-size buckets in texts: 1, 2, 4, ... 256.
fn batch_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 9)
}

/// Token buckets per forward pass: 16, 32, ... 32768.
fn token_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(16.0, 2.0, 12)
}

/// Figures of a `TransformerService`'s model thread.
#[derive(Clone, Debug)]
pub struct ServiceMetrics {
    /// Texts per forward pass (its count is the number of forward passes).
    pub batch_size: Histogram,
    /// Duration of each forward pass, tokenization included.
    pub forward_seconds: Histogram,
    /// Time requests spent queued before their batch started.
    pub queue_seconds: Histogram,
    /// Requests waiting for the model right now.
    pub queue_depth: Gauge,
    /// Tokens per forward pass.
    pub batch_tokens: Histogram,
    /// The most tokens any forward pass has held.
    pub max_batch_tokens_seen: Gauge,
    /// Requests dropped because their deadline passed.
    pub timeouts: Counter,
}

impl Default for ServiceMetrics {
    fn default() -> Self {
        Self {
            batch_size: Histogram::new(batch_buckets()),
            forward_seconds: Histogram::new(latency_buckets()),
            queue_seconds: Histogram::new(latency_buckets()),
            queue_depth: Gauge::default(),
            batch_tokens: Histogram::new(token_buckets()),
            max_batch_tokens_seen: Gauge::default(),
            timeouts: Counter::default(),
        }
    }
}

impl ServiceMetrics {
    /// Adds these metrics to a registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "so1s_batch_size",
            "Texts per forward pass",
            self.batch_size.clone(),
        );
        registry.register(
            "so1s_forward_pass_seconds",
            "Duration of a forward pass, tokenization included",
            self.forward_seconds.clone(),
        );
        registry.register(
            "so1s_queue_wait_seconds",
            "Time a request waited for its batch",
            self.queue_seconds.clone(),
        );
        registry.register(
            "so1s_queue_depth",
            "Requests waiting for the model",
            self.queue_depth.clone(),
        );
        registry.register(
            "so1s_batch_tokens",
            "Tokens per forward pass",
            self.batch_tokens.clone(),
        );
        registry.register(
            "so1s_batch_tokens_max",
            "The most tokens a forward pass has held",
            self.max_batch_tokens_seen.clone(),
        );
        registry.register(
            "so1s_request_timeouts",
            "Requests dropped because their deadline passed before the model ran them",
            self.timeouts.clone(),
        );
    }
}

/// Labels of HTTP request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route (`/predict`, `/healthz`, ...; `other` for unknown paths).
    pub route: &'static str,
    /// The response's status code.
    pub status: u16,
}

/// Labels of the request-latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route.
    pub route: &'static str,
}

/// Figures of an HTTP server.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Requests by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by route.
    pub request_seconds: Family<RouteLabels, Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
        }
    }
}

impl HttpMetrics {
    /// Adds these metrics to a registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "so1s_requests",
            "HTTP requests by route and status",
            self.requests.clone(),
        );
        registry.register(
            "so1s_request_duration_seconds",
            "HTTP request latency by route",
            self.request_seconds.clone(),
        );
    }

    /// Records one answered request.
    pub fn observe(&self, route: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }
}

/// Renders a registry in the OpenMetrics text format Prometheus scrapes.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics_with_labels() {
        let mut registry = Registry::default();
        let service = ServiceMetrics::default();
        let http = HttpMetrics::default();
        service.register(&mut registry);
        http.register(&mut registry);
        service.batch_size.observe(3.0);
        http.observe("/predict", 200, 0.01);
        http.observe("/predict", 429, 0.001);
        let text = render(&registry);
        assert!(text.contains("so1s_batch_size_count 1"), "{text}");
        assert!(
            text.contains("so1s_batch_size_bucket{le=\"4.0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("so1s_requests_total{route=\"/predict\",status=\"429\"} 1"),
            "{text}"
        );
        assert!(text.contains("so1s_queue_depth 0"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
