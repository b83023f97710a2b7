//! # so1s-core
//!
//! Turn an uploaded model into a live inference endpoint: upload → store → build → roll out →
//! serve. This crate is the library; `so1s-bin` holds thin binaries over it.
//!
//! # Layout
//!
//! - [`model`]: what a model directory holds — task, architecture, weights, tokenizer files,
//!   the `so1s.toml` manifest — read without loading weights.
//! - [`predict`]: the rust-bert pipelines and [`TransformerService`], the batching handle to a
//!   model running on its own thread.
//! - [`http`] (feature `http`): the warp servers; today the predict server.
//! - [`metrics`]: Prometheus metrics, `so1s_` prefix, buckets in one place.
//! - [`alloc`]: allocator settings for inference processes.
//! - [`Error`]: the crate's one error type.

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod alloc;
mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod metrics;
pub mod model;
pub mod predict;

pub use error::{Error, Result};
pub use model::{ModelLayout, Task};
pub use predict::{Prediction, TransformerService};
