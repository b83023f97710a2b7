//! The model thread's Prometheus metrics, named `so1s_*` like every other (latency buckets
//! from [`so1s_core::metrics::latency_buckets`]).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use so1s_core::metrics::latency_buckets;

/// Batch-size buckets in texts: 1, 2, 4, ... 256.
fn batch_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 9)
}

/// Token buckets per forward pass: 16, 32, ... 32768.
fn token_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(16.0, 2.0, 12)
}

/// Figures of a [`TransformerService`](crate::TransformerService)'s model thread.
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

#[cfg(test)]
mod tests {
    use super::*;
    use so1s_core::metrics::render;

    #[test]
    fn renders_prefixed_metrics() {
        let mut registry = Registry::default();
        let service = ServiceMetrics::default();
        service.register(&mut registry);
        service.batch_size.observe(3.0);
        let text = render(&registry);
        assert!(text.contains("so1s_batch_size_count 1"), "{text}");
        assert!(
            text.contains("so1s_batch_size_bucket{le=\"4.0\"} 1"),
            "{text}"
        );
        assert!(text.contains("so1s_queue_depth 0"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
