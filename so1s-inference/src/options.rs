//! [`ServiceOptions`]: how a model is loaded (threads, forward pass, precision) and how its
//! thread batches (texts and tokens per pass, waits, queue, deadlines). A leaf: the service
//! and the batch scheduler both read it.

use so1s_core::predict::{ForwardPass, Precision};
use std::time::Duration;

/// How the model thread batches and how much may wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOptions {
    /// Most texts in one forward pass.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for more to arrive, at most. Requests
    /// that queue while a forward pass runs join the next batch whatever this is.
    pub max_batch_wait: Duration,
    /// The batch stops waiting once no request has arrived for this long: concurrent
    /// clients' requests come close together and fill it. An idle model waits at all only
    /// when its last busy spell served more than one request: a lone client's requests
    /// (nobody else to wait for) run at once.
    pub max_batch_gap: Duration,
    /// Most tokens in one forward pass (at least one text goes in each). A request with
    /// more is split into several passes, interleaved with other requests' texts.
    pub max_batch_tokens: usize,
    /// Most requests waiting for the model; beyond that a request fails at once with
    /// [`Error::Overloaded`](so1s_core::Error::Overloaded).
    pub queue_capacity: usize,
    /// How long a request may wait for the model when it brings no deadline of its own;
    /// past it, its texts not yet run are dropped and it fails with [`Error::Timeout`](so1s_core::Error::Timeout).
    pub request_timeout: Duration,
    /// libtorch intra-op threads (`None`: libtorch's default, one per core).
    pub threads: Option<usize>,
    /// Who runs the forward pass ([`Pipeline::choose`](crate::Pipeline::choose)).
    pub forward_pass: ForwardPass,
    /// The precision of so1s's own forward pass ([`Precision::Auto`]: bf16 where the CPU
    /// has it natively and the model keeps the accuracy contract in it, else f32).
    pub precision: Precision,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            max_batch_size: 32,
            max_batch_wait: Duration::from_millis(2),
            max_batch_gap: Duration::from_micros(250),
            max_batch_tokens: 4096,
            queue_capacity: 512,
            request_timeout: Duration::from_secs(30),
            threads: None,
            forward_pass: ForwardPass::Auto,
            precision: Precision::Auto,
        }
    }
}
