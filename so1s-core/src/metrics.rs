//! Prometheus metrics, all named `so1s_*`, with histogram buckets set here and nowhere else.
//!
//! Each server owns its own [`Registry`], so several servers (or tests) in one process never
//! mix their figures. The model thread's figures (batch sizes, queue, tokens) are
//! so1s-inference's `ServiceMetrics`, on the same latency buckets.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds: 1 ms to ~8 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 14)
}

/// Buckets of a model's wake from zero, in seconds: 50 ms to ~100 s.
pub fn wake_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.05, 2.0, 12)
}

/// Labels of a model's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// The model's name.
    pub model: String,
}

/// The api server's figures of scale to zero.
#[derive(Clone, Debug)]
pub struct ScaleMetrics {
    /// Wakes from zero, by model.
    pub wakeups: Family<ModelLabels, Counter>,
    /// How long each wake took, from the first held request to the model routed again.
    pub wake_seconds: Family<ModelLabels, Histogram>,
    /// Scale-downs after the idle policy's time without a request, by model.
    pub scale_downs: Family<ModelLabels, Counter>,
    /// Models whose instances run (routed, not scaled to zero).
    pub running_models: Gauge,
}

impl Default for ScaleMetrics {
    fn default() -> Self {
        Self {
            wakeups: Family::default(),
            wake_seconds: Family::new_with_constructor(|| Histogram::new(wake_buckets())),
            scale_downs: Family::default(),
            running_models: Gauge::default(),
        }
    }
}

impl ScaleMetrics {
    /// Adds these metrics to a registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "so1s_wakeups",
            "Wakes of models scaled to zero",
            self.wakeups.clone(),
        );
        registry.register(
            "so1s_wake_duration_seconds",
            "How long a model scaled to zero took to serve again",
            self.wake_seconds.clone(),
        );
        registry.register(
            "so1s_scale_downs",
            "Models scaled to zero after their idle time",
            self.scale_downs.clone(),
        );
        registry.register(
            "so1s_running_models",
            "Models whose predict servers run",
            self.running_models.clone(),
        );
    }
}

/// The gateway's figures of faults: what it held, tried again, timed out and condemned.
#[derive(Clone, Debug, Default)]
pub struct GatewayMetrics {
    /// Requests held while a version's instance was started again.
    pub held: Family<ModelLabels, Counter>,
    /// Requests sent again after a refused or reset connection.
    pub retries: Family<ModelLabels, Counter>,
    /// Requests answered 504: the predict server did not answer in time.
    pub timeouts: Family<ModelLabels, Counter>,
    /// Instances condemned for timeouts or server errors in a row.
    pub condemned: Family<ModelLabels, Counter>,
}

impl GatewayMetrics {
    /// Adds these metrics to a registry.
    pub fn register(&self, registry: &mut Registry) {
        for (name, help, family) in [
            (
                "so1s_gateway_held",
                "Requests held while their version's instance was started again",
                &self.held,
            ),
            (
                "so1s_gateway_retries",
                "Requests sent again after a refused or reset connection",
                &self.retries,
            ),
            (
                "so1s_gateway_timeouts",
                "Requests answered 504: the predict server did not answer in time",
                &self.timeouts,
            ),
            (
                "so1s_gateway_condemned",
                "Instances condemned for timeouts or server errors in a row",
                &self.condemned,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
    }

    /// Counts one in `family` for `model`.
    pub fn count(family: &Family<ModelLabels, Counter>, model: &str) {
        family
            .get_or_create(&ModelLabels {
                model: model.to_owned(),
            })
            .inc();
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
        let http = HttpMetrics::default();
        http.register(&mut registry);
        http.observe("/predict", 200, 0.01);
        http.observe("/predict", 429, 0.001);
        let text = render(&registry);
        assert!(
            text.contains(
                "so1s_request_duration_seconds_bucket{le=\"0.001\",route=\"/predict\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("so1s_requests_total{route=\"/predict\",status=\"429\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
