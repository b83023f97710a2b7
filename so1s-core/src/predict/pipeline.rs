//! Loading a [`ModelLayout`] into a pipeline and running forward passes: by rust-bert's
//! models, or by so1s's own encoder ([`EncoderPipeline`]) for BERT and ELECTRA.

pub use super::classifier::RustBertClassifier;
use super::encoder::Precision;
pub use super::encoder_pipeline::EncoderPipeline;
use super::service::Predictor;
use super::Prediction;
use crate::model::{Architecture, ModelLayout, Task};
use crate::{Error, Result};
use rust_bert::pipelines::common::ModelType;
use rust_bert::pipelines::sentence_embeddings::{
    SentenceEmbeddingsConfig, SentenceEmbeddingsModel,
};
use rust_bert::resources::{LocalResource, ResourceProvider};
use serde::Serialize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use tch::Device;

/// What a loaded model answers with, for clients and metadata endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// The task.
    pub task: Task,
    /// The transformer architecture (`config.json`'s `model_type`).
    pub architecture: &'static str,
    /// The shape of one text's output: `[dim]` for embeddings, `[labels]` for classification
    /// (the reply carries the most likely label of those).
    pub output_shape: Vec<usize>,
    /// The labels a classifier can answer, by id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Longest input in tokens; longer inputs are truncated.
    pub max_sequence_length: Option<usize>,
    /// Who runs the forward pass: `rust-bert`, or so1s's own encoder (`so1s-f32`,
    /// `so1s-int8`).
    pub forward_pass: &'static str,
}

/// A loaded pipeline.
pub enum Pipeline {
    /// A sentence-transformers model run by rust-bert.
    Embeddings(Box<SentenceEmbeddingsModel>),
    /// A sequence classifier run by rust-bert (with an attention mask).
    Classification(Box<RustBertClassifier>),
    /// A BERT or ELECTRA model whose forward pass so1s runs ([`EncoderPipeline`]).
    Encoder(Box<EncoderPipeline>),
}

impl Pipeline {
    /// Loads the model of an inspected directory on the CPU. Weights load as uploaded
    /// (`model.safetensors` or `rust_model.ot`). Runs on the calling thread and takes a while:
    /// call it from the model's own thread.
    /// With `precision`, the model runs on so1s's own forward pass ([`EncoderPipeline`]);
    /// without, on rust-bert's — except ELECTRA, which rust-bert has no pipeline for and so1s
    /// runs in f32.
    pub fn load(layout: &ModelLayout, precision: Option<Precision>) -> Result<(Self, ModelInfo)> {
        let precision = precision.or(match layout.architecture {
            Architecture::Electra => Some(Precision::F32),
            _ => None,
        });
        if let Some(precision) = precision {
            let pipeline = EncoderPipeline::load(layout, precision)?;
            let info = ModelInfo {
                task: layout.task,
                architecture: layout.architecture.as_str(),
                output_shape: vec![pipeline.output_dim()],
                labels: layout.labels.clone(),
                max_sequence_length: Some(pipeline.max_len()),
                forward_pass: match precision {
                    Precision::F32 => "so1s-f32",
                    Precision::Int8 => "so1s-int8",
                },
            };
            return Ok((Pipeline::Encoder(Box::new(pipeline)), info));
        }
        let model_type = model_type(layout.architecture);
        let tokenizer = &layout.tokenizer;
        let pipeline = guard("loading the model", || match layout.task {
            Task::SentenceEmbeddings => {
                let files = layout.sentence_transformer.as_ref().ok_or_else(|| {
                    Error::InvalidModel("a sentence-embeddings model needs modules.json".into())
                })?;
                let config = SentenceEmbeddingsConfig {
                    modules_config_resource: local(&files.modules),
                    transformer_type: model_type,
                    transformer_config_resource: local(&layout.config),
                    transformer_weights_resource: local(&layout.weights),
                    pooling_config_resource: local(&files.pooling_config),
                    dense_config_resource: files.dense.as_ref().map(|(c, _)| local(c)),
                    dense_weights_resource: files.dense.as_ref().map(|(_, w)| local(w)),
                    sentence_bert_config_resource: local(&files.sentence_bert_config),
                    tokenizer_config_resource: local(&files.tokenizer_config),
                    tokenizer_vocab_resource: local(&tokenizer.vocab),
                    tokenizer_merges_resource: tokenizer.merges.as_deref().map(local),
                    device: Device::Cpu,
                    kind: None,
                };
                let model =
                    SentenceEmbeddingsModel::new(config).map_err(|e| Error::Load(e.to_string()))?;
                Ok(Pipeline::Embeddings(Box::new(model)))
            }
            Task::SequenceClassification => Ok(Pipeline::Classification(Box::new(
                RustBertClassifier::load(layout, model_type)?,
            ))),
        })
        .map_err(|e| match e {
            Error::Inference(message) => Error::Load(message),
            other => other,
        })?;
        let output_shape = match &pipeline {
            Pipeline::Embeddings(model) => {
                let dim = model
                    .get_embedding_dim()
                    .map_err(|e| Error::Load(e.to_string()))?;
                vec![dim as usize]
            }
            Pipeline::Classification(_) => vec![layout.labels.len()],
            Pipeline::Encoder(model) => vec![model.output_dim()],
        };
        let info = ModelInfo {
            task: layout.task,
            architecture: layout.architecture.as_str(),
            output_shape,
            labels: layout.labels.clone(),
            max_sequence_length: layout.max_sequence_length,
            forward_pass: "rust-bert",
        };
        Ok((pipeline, info))
    }
}

impl Predictor for Pipeline {
    fn token_counts(&self, texts: &[String]) -> Vec<usize> {
        match self {
            Pipeline::Encoder(model) => model.token_counts(texts),
            Pipeline::Classification(model) => {
                model.token_ids(texts).iter().map(Vec::len).collect()
            }
            // rust-bert's pipelines truncate at the model's length, 512 at most for the
            // architectures so1s serves.
            Pipeline::Embeddings(_) => texts
                .iter()
                .map(|t| super::service::estimate_tokens(t, Some(512)))
                .collect(),
        }
    }

    fn predict(&mut self, texts: &[String]) -> Result<Vec<Prediction>> {
        guard("the forward pass", || match self {
            Pipeline::Embeddings(model) => Ok(model
                .encode(texts)
                .map_err(|e| Error::Inference(e.to_string()))?
                .into_iter()
                .map(Prediction::Embedding)
                .collect()),
            Pipeline::Classification(model) => model.predict(texts),
            Pipeline::Encoder(model) => model.predict(texts),
        })
    }
}

fn model_type(architecture: Architecture) -> ModelType {
    match architecture {
        Architecture::Bert => ModelType::Bert,
        Architecture::DistilBert => ModelType::DistilBert,
        Architecture::Roberta => ModelType::Roberta,
        Architecture::XlmRoberta => ModelType::XLMRoberta,
        Architecture::Albert => ModelType::Albert,
        Architecture::Electra => ModelType::Electra,
    }
}

pub(super) fn local(path: &Path) -> Box<dyn ResourceProvider + Send> {
    Box::new(LocalResource::from(path.to_owned()))
}

/// Runs rust-bert code that may panic on bad files or tensors, turning a panic into an error
/// that names the step.
pub(super) fn guard<T>(step: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Err(Error::Inference(format!("{step} panicked: {message}")))
    })
}
