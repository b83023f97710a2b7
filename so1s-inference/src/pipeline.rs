//! Loading a [`ModelLayout`] into a pipeline and running forward passes: by rust-bert's
//! models, or by so1s's own encoder ([`EncoderPipeline`]) for BERT and ELECTRA.

use crate::classifier::RustBertClassifier;
use crate::encoder_pipeline::EncoderPipeline;
use crate::guard::{guard, loading, local};
use crate::predictor::{Input, ModelInfo, Predictor};
use crate::tokenize::{rust_bert_type, Tokenize};
use rust_bert::pipelines::sentence_embeddings::{
    SentenceEmbeddingsConfig, SentenceEmbeddingsModel,
};
use so1s_core::model::{Architecture, ModelLayout, Task};
use so1s_core::predict::{CpuFeatures, ForwardPass, Precision};
use so1s_core::{Error, Prediction, Result};
use std::sync::Arc;
use tch::Device;

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
    ///
    /// `pass` and `precision` choose who runs the forward pass ([`Pipeline::choose`]).
    pub fn load(
        layout: &ModelLayout,
        pass: ForwardPass,
        precision: Precision,
    ) -> Result<(Self, ModelInfo)> {
        let (own, reason) = Self::choose(layout, pass, precision, CpuFeatures::detect())?;
        if let Some(resolved) = own {
            // `auto` is measured against the accuracy contract as it loads.
            let precision = match precision {
                Precision::Auto => Precision::Auto,
                _ => resolved,
            };
            let pipeline = EncoderPipeline::load(layout, precision)?;
            let accuracy = pipeline.accuracy().cloned();
            let reason = match &accuracy {
                Some(accuracy) => format!("{reason}; {accuracy}"),
                None => reason,
            };
            let info = ModelInfo {
                task: layout.task,
                architecture: layout.architecture.as_str(),
                output_shape: vec![pipeline.output_dim()],
                labels: layout.labels.clone(),
                max_sequence_length: Some(pipeline.max_len()),
                forward_pass: match pipeline.precision() {
                    Precision::Auto | Precision::F32 => "so1s-f32",
                    Precision::Bf16 => "so1s-bf16",
                    Precision::Int8 => "so1s-int8",
                },
                reason,
                accuracy,
            };
            return Ok((Pipeline::Encoder(Box::new(pipeline)), info));
        }
        let model_type = rust_bert_type(layout.architecture).ok_or_else(|| {
            Error::InvalidModel(format!(
                "rust-bert has no {} model",
                layout.architecture.as_str()
            ))
        })?;
        let tokenizer = &layout.tokenizer;
        let pipeline = loading(|| match layout.task {
            Task::SentenceEmbeddings => {
                let files = layout.sentence_transformer.as_ref().ok_or_else(|| {
                    Error::InvalidModel("rust-bert's sentence embeddings need modules.json".into())
                })?;
                let vocab = tokenizer.vocab.as_ref().ok_or_else(|| {
                    Error::InvalidModel(
                        "rust-bert's sentence embeddings read vocabulary files; this model \
                         ships only tokenizer.json"
                            .into(),
                    )
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
                    tokenizer_vocab_resource: local(vocab),
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
            task @ (Task::TokenClassification | Task::Rerank) => Err(Error::InvalidModel(format!(
                "rust-bert serves sentence embeddings and sequence classification here; {task} \
                 runs on so1s's own encoder"
            ))),
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
            reason,
            accuracy: None,
        };
        Ok((pipeline, info))
    }

    /// Who runs the forward pass of `layout` on `cpu`: so1s's own encoder in the returned
    /// precision, or rust-bert (`None`); and why, for `/v1/model` and the start-up log.
    ///
    /// `auto` takes the own encoder wherever [`EncoderPipeline::plan`] accepts the model
    /// (in bf16 where the CPU has native bf16, else f32) and rust-bert for the rest — unless
    /// bf16 or int8 was asked for, which only the own encoder runs. rust-bert runs f32 only
    /// and has no ELECTRA classifier.
    pub fn choose(
        layout: &ModelLayout,
        pass: ForwardPass,
        precision: Precision,
        cpu: &CpuFeatures,
    ) -> Result<(Option<Precision>, String)> {
        let rust_bert_runs = |why: String| {
            let has_model = rust_bert_type(layout.architecture).is_some()
                && !matches!(
                    layout.architecture,
                    Architecture::Electra | Architecture::DebertaV2
                )
                && matches!(
                    layout.task,
                    Task::SentenceEmbeddings | Task::SequenceClassification
                );
            if !has_model {
                return Err(Error::InvalidModel(format!(
                    "rust-bert has no {} {} pipeline; {why}",
                    layout.architecture.as_str(),
                    layout.task.as_str()
                )));
            }
            if layout.tokenizer.vocab.is_none() {
                return Err(Error::InvalidModel(format!(
                    "rust-bert reads vocabulary files and this model ships only \
                     tokenizer.json; {why}"
                )));
            }
            match precision {
                Precision::Auto | Precision::F32 => Ok((None, why)),
                other => Err(Error::InvalidModel(format!(
                    "precision {} needs so1s's own forward pass; {why}",
                    other.as_str()
                ))),
            }
        };
        let own = |why: &str| {
            let (precision, because) = precision.resolve(cpu);
            Ok((Some(precision), format!("{why}; {because}")))
        };
        match pass {
            ForwardPass::RustBert => rust_bert_runs("forward pass rust-bert as asked".into()),
            ForwardPass::So1s => {
                EncoderPipeline::plan(layout)?;
                own("forward pass so1s as asked")
            }
            ForwardPass::Auto => match EncoderPipeline::plan(layout) {
                Ok(_) => own("forward pass auto: so1s's own encoder runs this model"),
                Err(not_covered) => {
                    rust_bert_runs(format!("forward pass auto: rust-bert, since {not_covered}"))
                }
            },
        }
    }
}

impl Predictor for Pipeline {
    fn tokenizer(&self) -> Option<Arc<dyn Tokenize>> {
        match self {
            Pipeline::Encoder(model) => Some(model.tokenizer()),
            Pipeline::Classification(model) => Some(model.tokenizer()),
            // rust-bert's sentence-embeddings pipeline tokenizes itself.
            Pipeline::Embeddings(_) => None,
        }
    }

    fn predict(&mut self, inputs: &[Input]) -> Result<Vec<Prediction>> {
        guard("the forward pass", || match self {
            Pipeline::Embeddings(model) => {
                let texts: Vec<&str> = inputs.iter().map(|input| input.text.as_str()).collect();
                Ok(model
                    .encode(&texts)
                    .map_err(|e| Error::Inference(e.to_string()))?
                    .into_iter()
                    .map(Prediction::Embedding)
                    .collect())
            }
            Pipeline::Classification(model) => {
                model.predict_ids(&Input::ids(inputs, &*model.tokenizer())?)
            }
            Pipeline::Encoder(model) => model.predict_inputs(inputs),
        })
    }
}
