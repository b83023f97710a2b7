//! [`RustBertClassifier`]: a sequence classifier whose forward pass rust-bert runs (the
//! architectures so1s's own encoder does not cover: DistilBERT, RoBERTa, XLM-RoBERTa,
//! ALBERT; and BERT unless a precision is asked for).
//!
//! rust-bert's own `SequenceClassificationModel::predict` pads a batch without an attention
//! mask, so a text's label depends on the longer texts that share its batch. so1s builds
//! the same model (`SequenceClassificationOption`) and tokenizer and runs them itself, with
//! a mask and in passes of similar lengths, so that a batch answers exactly as each text
//! alone.

use crate::encoder::{run_in_passes, PassCost};
use crate::guard::{loading, local};
use crate::output::{label_prediction, rows, Scoring};
use crate::tokenize::{composes, vocab_tokenizer, Tokenize, VocabTokenizer};
use rust_bert::pipelines::common::{ModelResource, ModelType};
use rust_bert::pipelines::sequence_classification::{
    SequenceClassificationConfig, SequenceClassificationOption,
};
use so1s_core::model::ModelLayout;
use so1s_core::{Error, Prediction, Result};
use std::sync::Arc;
use tch::{Device, Tensor};

/// A rust-bert sequence classifier, run with an attention mask.
pub struct RustBertClassifier {
    tokenizer: Arc<VocabTokenizer>,
    model: SequenceClassificationOption,
    labels: Vec<String>,
    scoring: Scoring,
    pad_id: i64,
}

impl RustBertClassifier {
    /// Loads the classifier of an inspected model directory (its `id2label` labels).
    pub fn load(layout: &ModelLayout, model_type: ModelType) -> Result<Self> {
        let tokens = &layout.tokenizer;
        let vocab = tokens.vocab.as_ref().ok_or_else(|| {
            Error::InvalidModel(
                "rust-bert's classifiers read vocabulary files; this model ships only \
                 tokenizer.json (so1s's own forward pass reads it)"
                    .into(),
            )
        })?;
        let config = SequenceClassificationConfig {
            model_type,
            model_resource: ModelResource::Torch(local(&layout.weights)),
            config_resource: local(&layout.config),
            vocab_resource: local(vocab),
            merges_resource: tokens.merges.as_deref().map(local),
            lower_case: tokens.lower_case,
            strip_accents: tokens.strip_accents,
            add_prefix_space: tokens.add_prefix_space,
            device: Device::Cpu,
            kind: None,
        };
        let model = loading(|| {
            SequenceClassificationOption::new(&config).map_err(|e| Error::Load(e.to_string()))
        })?;
        let tokenizer = vocab_tokenizer(layout, tokens.lower_case, tokens.strip_accents)?;
        let pad_id = tokenizer
            .get_pad_id()
            .ok_or_else(|| Error::InvalidModel("the tokenizer has no padding token".into()))?;
        let max_len = layout.max_sequence_length.ok_or_else(|| {
            Error::InvalidModel("config.json has no `max_position_embeddings`".into())
        })?;
        Ok(Self {
            tokenizer: Arc::new(VocabTokenizer::new(
                tokenizer,
                max_len,
                composes(layout.architecture),
            )),
            model,
            labels: layout.labels.clone(),
            scoring: Scoring::of(layout)?,
            pad_id,
        })
    }

    /// The token ids of each text, truncated at the model's length.
    pub fn token_ids(&self, texts: &[String]) -> Result<Vec<Vec<i64>>> {
        self.tokenizer.token_ids(texts)
    }

    /// The tokenizer of [`RustBertClassifier::token_ids`], to tokenize requests with before
    /// they reach the model thread.
    pub fn tokenizer(&self) -> Arc<dyn Tokenize> {
        self.tokenizer.clone()
    }

    /// The most likely label of each text, with every label's score.
    pub fn predict(&self, texts: &[String]) -> Result<Vec<Prediction>> {
        self.predict_ids(&self.token_ids(texts)?)
    }

    /// [`RustBertClassifier::predict`] of texts tokenized already.
    pub fn predict_ids<S: AsRef<[i64]>>(&self, ids: &[S]) -> Result<Vec<Prediction>> {
        let scores = run_in_passes(ids, self.pad_id, PassCost::Padded, |_, ids, mask| {
            let logits = tch::no_grad(|| {
                self.model.forward_t(
                    Some(ids),
                    Some(mask),
                    Some(&Tensor::zeros_like(ids)),
                    None,
                    None,
                    false,
                )
            });
            rows::<f64>(self.scoring.apply(&logits), "the scores")
        })?;
        Ok(scores
            .iter()
            .map(|scores| label_prediction(&self.labels, scores))
            .collect())
    }
}
