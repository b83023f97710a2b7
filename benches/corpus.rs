//! The sentences the benchmarks send: 2 to 11 words, as short requests to an embedding
//! model are.

/// In rotation, one per request (so1s-load) or per text of a batch (the service bench).
pub const TEXTS: [&str; 8] = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Model serving should never drop a request during a rollout.",
    "A new version of the model goes live in a few seconds.",
    "Which of these sentences is closest in meaning to the question?",
    "Batching concurrent requests shares one forward pass.",
    "The predict server answers with a 384-dimensional embedding.",
    "Latency percentiles matter more than averages under load.",
];
