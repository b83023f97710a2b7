//! The rust-bert side: loading a [`ModelLayout`] into a pipeline and running forward passes,
//! by rust-bert's models or, for BERT sentence embeddings, by so1s's own [`BertEncoder`] with
//! rust-bert's tokenizer. This is the only module that touches rust-bert.

use super::encoder::{mean_pool, normalize, plan_passes, BertEncoder, BertShape, Precision};
use super::service::Predictor;
use super::Prediction;
use crate::model::read_json;
use crate::model::{Architecture, ModelLayout, Task};
use crate::{Error, Result};
use rust_bert::pipelines::common::{ModelResource, ModelType, TokenizerOption};
use rust_bert::pipelines::sentence_embeddings::{
    SentenceEmbeddingsConfig, SentenceEmbeddingsModel,
};
use rust_bert::pipelines::sequence_classification::{
    SequenceClassificationConfig, SequenceClassificationModel,
};
use rust_bert::resources::{LocalResource, ResourceProvider};
use rust_tokenizers::tokenizer::TruncationStrategy;
use serde::{Deserialize, Serialize};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use tch::{Device, Tensor};

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
    /// A sequence classifier run by rust-bert.
    Classification(Box<SequenceClassificationModel>),
    /// A BERT sentence-transformers model whose forward pass so1s runs ([`BertEncoder`]).
    Encoder(Box<EncoderPipeline>),
}

/// A BERT sentence-embeddings model on so1s's own forward pass: rust-bert's tokenizer, then
/// [`BertEncoder`], mean pooling and (if the model says so) normalization. A batch is cut
/// into passes of similar lengths ([`plan_passes`]).
pub struct EncoderPipeline {
    tokenizer: TokenizerOption,
    encoder: BertEncoder,
    max_len: usize,
    normalize: bool,
    pad_id: i64,
}

/// The fixed cost of one more forward pass, in tokens computed: what cutting a batch in two
/// must save in padding to be worth it.
const PASS_COST_TOKENS: usize = 16;

impl EncoderPipeline {
    /// Loads a BERT sentence-embeddings model (mean pooling, no dense layer) with its linear
    /// layers in `precision`. Other models get a clear error: rust-bert runs them.
    pub fn load(layout: &ModelLayout, precision: Precision) -> Result<Self> {
        let unsupported = |why: String| {
            Error::InvalidModel(format!(
                "so1s's own forward pass (needed for {} precision) runs BERT sentence-embedding models with mean pooling; {why}",
                precision.as_str()
            ))
        };
        let files = match (
            &layout.task,
            &layout.sentence_transformer,
            layout.architecture,
        ) {
            (Task::SentenceEmbeddings, Some(files), Architecture::Bert) => files,
            _ => {
                return Err(unsupported(format!(
                    "this is a {} {} model",
                    layout.architecture.as_str(),
                    layout.task.as_str()
                )))
            }
        };
        if files.dense.is_some() {
            return Err(unsupported(
                "this model has a dense layer after pooling".into(),
            ));
        }
        let pooling: PoolingConfig = read_json(&files.pooling_config)?;
        if !pooling.pooling_mode_mean_tokens
            || pooling.pooling_mode_cls_token
            || pooling.pooling_mode_max_tokens
            || pooling.pooling_mode_mean_sqrt_len_tokens
        {
            return Err(unsupported("this model does not pool by mean".into()));
        }
        let modules: Vec<ModuleEntry> = read_json(&files.modules)?;
        let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
        let shape: BertShape = read_json(&layout.config)?;
        // The tokenizer exactly as rust-bert's sentence-embeddings pipeline sets it up.
        let tokenizer_config: TokenizerConfig = read_json(&files.tokenizer_config)?;
        let bert_config: SentenceBertConfig = read_json(&files.sentence_bert_config)?;
        let tokenizer = TokenizerOption::from_file(
            ModelType::Bert,
            &layout.tokenizer.vocab.to_string_lossy(),
            None,
            tokenizer_config
                .do_lower_case
                .unwrap_or(bert_config.do_lower_case),
            tokenizer_config.strip_accents,
            None,
        )
        .map_err(|e| Error::Load(format!("loading the tokenizer: {e}")))?;
        let pad_id = tokenizer.get_pad_id().unwrap_or(0);
        let encoder = guard("loading the model", || {
            BertEncoder::load(&layout.weights, &shape, precision)
        })
        .map_err(|e| match e {
            Error::Inference(message) => Error::Load(message),
            other => other,
        })?;
        Ok(Self {
            tokenizer,
            encoder,
            max_len: bert_config.max_seq_length,
            normalize,
            pad_id,
        })
    }

    /// The precision of the linear layers.
    pub fn precision(&self) -> Precision {
        self.encoder.precision()
    }

    /// Tokens of each text after truncation, as [`EncoderPipeline::embed`] runs them.
    pub fn token_counts(&self, texts: &[String]) -> Vec<usize> {
        self.tokenizer
            .encode_list(texts, self.max_len, &TruncationStrategy::LongestFirst, 0)
            .iter()
            .map(|encoded| encoded.token_ids.len())
            .collect()
    }

    /// One embedding per text, in order.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let encoded =
            self.tokenizer
                .encode_list(texts, self.max_len, &TruncationStrategy::LongestFirst, 0);
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| encoded[i].token_ids.len());
        let lengths: Vec<usize> = order.iter().map(|&i| encoded[i].token_ids.len()).collect();
        let mut embeddings = vec![Vec::new(); encoded.len()];
        for pass in plan_passes(&lengths, PASS_COST_TOKENS) {
            let longest = lengths[pass.end - 1].max(1);
            let rows = &order[pass];
            let (mut ids, mut mask) = (Vec::new(), Vec::new());
            for &i in rows {
                let tokens = &encoded[i].token_ids;
                ids.extend_from_slice(tokens);
                ids.extend(std::iter::repeat_n(self.pad_id, longest - tokens.len()));
                mask.extend(std::iter::repeat_n(1i64, tokens.len()));
                mask.extend(std::iter::repeat_n(0i64, longest - tokens.len()));
            }
            let shape = [rows.len() as i64, longest as i64];
            let ids = Tensor::from_slice(&ids).view(shape);
            let mask = Tensor::from_slice(&mask).view(shape);
            let pooled = mean_pool(&self.encoder.forward(&ids, &mask), &mask);
            let pooled = match self.normalize {
                true => normalize(&pooled),
                false => pooled,
            };
            let pooled: Vec<Vec<f32>> = Vec::try_from(pooled)
                .map_err(|e| Error::Inference(format!("reading the embeddings: {e}")))?;
            for (&i, embedding) in rows.iter().zip(pooled) {
                embeddings[i] = embedding;
            }
        }
        Ok(embeddings)
    }

    fn dim(&self) -> usize {
        self.encoder.hidden_size()
    }
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct TokenizerConfig {
    do_lower_case: Option<bool>,
    strip_accents: Option<bool>,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
    #[serde(default)]
    do_lower_case: bool,
}

impl Pipeline {
    /// Loads the model of an inspected directory on the CPU. Weights load as uploaded
    /// (`model.safetensors` or `rust_model.ot`). Runs on the calling thread and takes a while:
    /// call it from the model's own thread.
    /// With `precision`, the model runs on so1s's own forward pass ([`EncoderPipeline`]);
    /// without, on rust-bert's.
    pub fn load(layout: &ModelLayout, precision: Option<Precision>) -> Result<(Self, ModelInfo)> {
        if let Some(precision) = precision {
            let pipeline = EncoderPipeline::load(layout, precision)?;
            let info = ModelInfo {
                task: layout.task,
                architecture: layout.architecture.as_str(),
                output_shape: vec![pipeline.dim()],
                labels: Vec::new(),
                max_sequence_length: layout.max_sequence_length,
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
            Task::SequenceClassification => {
                let config = SequenceClassificationConfig {
                    model_type,
                    model_resource: ModelResource::Torch(local(&layout.weights)),
                    config_resource: local(&layout.config),
                    vocab_resource: local(&tokenizer.vocab),
                    merges_resource: tokenizer.merges.as_deref().map(local),
                    lower_case: tokenizer.lower_case,
                    strip_accents: tokenizer.strip_accents,
                    add_prefix_space: tokenizer.add_prefix_space,
                    device: Device::Cpu,
                    kind: None,
                };
                let model = SequenceClassificationModel::new(config)
                    .map_err(|e| Error::Load(e.to_string()))?;
                Ok(Pipeline::Classification(Box::new(model)))
            }
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
            Pipeline::Encoder(model) => vec![model.dim()],
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
            // rust-bert's pipelines truncate at the model's length, 512 at most for the
            // architectures so1s serves.
            _ => texts
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
            Pipeline::Classification(model) => {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                Ok(model
                    .predict(texts)
                    .into_iter()
                    .map(|label| Prediction::Label {
                        label: label.text,
                        score: label.score,
                    })
                    .collect())
            }
            Pipeline::Encoder(model) => Ok(model
                .embed(texts)?
                .into_iter()
                .map(Prediction::Embedding)
                .collect()),
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
    }
}

fn local(path: &Path) -> Box<dyn ResourceProvider + Send> {
    Box::new(LocalResource::from(path.to_owned()))
}

/// Runs rust-bert code that may panic on bad files or tensors, turning a panic into an error
/// that names the step.
fn guard<T>(step: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Err(Error::Inference(format!("{step} panicked: {message}")))
    })
}
