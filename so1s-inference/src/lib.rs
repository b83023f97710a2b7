//! # so1s-inference
//!
//! so1s's data plane: a transformer model loaded from a [`ModelLayout`](so1s_core::ModelLayout) and served in
//! batches. [`so1s_core`] is the control plane (store, builds, rollouts, the api server and
//! gateway) and links no libtorch; this crate is what runs the model: rust-bert, tch and
//! libtorch.
//!
//! # Layout
//!
//! - `predictor`: the [`Predictor`] contract between the model thread and a model (a batch
//!   of [`Input`]s, tokenized before they were queued), token estimates
//!   ([`estimate_tokens`]), and [`ModelInfo`], what a loaded model is and answers.
//! - `tokenize`: [`Tokenize`], texts to token ids. A request is tokenized once, by
//!   [`TransformerService`] on the caller's thread (a large one on a blocking thread); the
//!   model thread gets the ids and runs forward passes only.
//! - `service`: [`TransformerService`], the cheap [`Clone`] handle to a model on its own OS
//!   thread, and its [`ServiceOptions`]; `batch` is that thread's scheduler: requests drained
//!   from a bounded queue into forward passes bounded in texts and tokens.
//! - `pipeline`: [`Pipeline`], the loaded model the thread runs, and the choice of who runs
//!   the forward pass ([`Pipeline::choose`]): so1s's own encoder ([`EncoderPipeline`]) or
//!   rust-bert ([`RustBertClassifier`], rust-bert's sentence embeddings).
//! - `encoder`: so1s's own forward pass of BERT-style encoders, in f32, bf16 or int8; the
//!   model families it runs are one file each in `encoder::family`, behind one trait.
//!   `encoder_pipeline` puts a tokenizer, the encoder and a task's output together
//!   (embeddings, labels, `entities` of a token classifier, a cross-encoder's relevance).
//! - [`accuracy`]: the accuracy contract `auto` precision keeps: bf16 only within tolerance
//!   of f32 on calibration texts.
//! - [`server`]: the predict server of one model version (`so1s-predict`): `POST /predict`,
//!   `POST /rerank`, health, readiness, metrics, model metadata and the Open Inference Protocol.
//! - [`smoke`]: a build's smoke test in this process ([`InProcessSmokeTest`], the
//!   [`so1s_core::build::SmokeRunner`] binaries with inference supply).
//! - `metrics`: the model thread's Prometheus metrics ([`ServiceMetrics`]).
//! - [`alloc`]: allocator settings and the memory cap of processes that run models.
//!
//! Inside, the helpers the pipelines share are leaves (`guard`: panics to errors; `tokenize`;
//! `output`: tensors to predictions), so no module imports one that imports it.
//! Errors are [`so1s_core::Error`]'s kinds (`InvalidModel`, `Load`, `Inference`,
//! `InvalidInput`, `Overloaded`, `NotReady`, `Timeout`): the servers map them to the one
//! JSON error shape.
//!
//! ```no_run
//! # async fn run() -> so1s_core::Result<()> {
//! use so1s_core::ModelLayout;
//! use so1s_inference::{ServiceOptions, TransformerService};
//!
//! let layout = ModelLayout::inspect(".cache/models/all-MiniLM-L6-v2".as_ref())?;
//! let service = TransformerService::load(layout, ServiceOptions::default()).await?;
//! let prediction = service.predict_one("Hello world").await?;
//! # let _ = prediction; Ok(()) }
//! ```

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod accuracy;
pub mod alloc;
mod batch;
mod classifier;
mod embedding;
mod encoder;
mod encoder_pipeline;
mod entities;
mod guard;
mod metrics;
mod options;
mod output;
mod pipeline;
mod predictor;
pub mod server;
mod service;
pub mod smoke;
mod tokenize;

pub use classifier::RustBertClassifier;
pub use embedding::{Pooling, PoolingMode};
pub use encoder_pipeline::{EncoderPipeline, EncoderPlan};
pub use metrics::ServiceMetrics;
pub use options::ServiceOptions;
pub use pipeline::Pipeline;
pub use predictor::{estimate_tokens, Input, ModelInfo, Predictor};
pub use service::TransformerService;
pub use smoke::InProcessSmokeTest;
pub use tokenize::{Encoded, JsonTokenizer, Tokenize, VocabTokenizer};
