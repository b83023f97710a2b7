//! The contract between the model thread and a model: [`Predictor`] turns a batch of
//! [`Input`]s into predictions and hands out the [`Tokenize`]r its requests are tokenized with
//! before they reach the model thread; [`ModelInfo`] says what a loaded model is and answers.

use crate::accuracy::Accuracy;
use crate::tokenize::{Encoded, Tokenize};
use serde::Serialize;
use so1s_core::model::Task;
use so1s_core::{Prediction, Result};
use std::borrow::Cow;
use std::sync::Arc;

/// Something that turns a batch of inputs into one prediction per input.
/// [`Pipeline`](crate::Pipeline) is the real one; tests plug in others.
pub trait Predictor {
    /// The tokenizer of the model's inputs, if it takes token ids: requests are tokenized
    /// with it once, on the caller's thread, and reach [`Predictor::predict`] with their
    /// [`Input::ids`]. `None` (the default) hands on texts alone, their tokens estimated.
    fn tokenizer(&self) -> Option<Arc<dyn Tokenize>> {
        None
    }

    /// Runs one forward pass over `inputs`, returning predictions in the same order.
    fn predict(&mut self, inputs: &[Input]) -> Result<Vec<Prediction>>;
}

/// One text of a request as the model thread gets it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    /// The text the client sent.
    pub text: String,
    /// Its token ids (special tokens in, truncated at the model's length), when the model
    /// has a [`Predictor::tokenizer`].
    pub ids: Option<Vec<i64>>,
    /// Its segment ids (a pair's second text is 1); empty: all 0.
    pub type_ids: Vec<i64>,
    /// Its tokens' character spans in `text` (a token classifier's), `None` for special
    /// tokens; empty when not kept.
    pub offsets: Vec<Option<(usize, usize)>>,
}

impl Input {
    /// Each text, tokenized by `tokenizer` when there is one.
    pub fn batch(texts: Vec<String>, tokenizer: Option<&dyn Tokenize>) -> Result<Vec<Input>> {
        Ok(match tokenizer {
            Some(tokenizer) => {
                let encoded = tokenizer.encode(&texts)?;
                texts.into_iter().zip(encoded).map(Input::encoded).collect()
            }
            None => texts
                .into_iter()
                .map(|text| Input {
                    text,
                    ..Input::default()
                })
                .collect(),
        })
    }

    /// `query` paired with each of `texts`, for a cross-encoder: each input's text is the
    /// second of its pair.
    pub fn pairs(query: &str, texts: Vec<String>, tokenizer: &dyn Tokenize) -> Result<Vec<Input>> {
        let encoded = tokenizer.encode_pairs(query, &texts)?;
        Ok(texts.into_iter().zip(encoded).map(Input::encoded).collect())
    }

    /// The token ids of `inputs`: as the request handler made them, or by `tokenizer` for
    /// an input that came without (a caller that built its [`Input`] by hand).
    pub fn ids<'a>(inputs: &'a [Input], tokenizer: &dyn Tokenize) -> Result<Vec<Cow<'a, [i64]>>> {
        inputs
            .iter()
            .map(|input| match &input.ids {
                Some(ids) => Ok(Cow::Borrowed(ids.as_slice())),
                None => Ok(Cow::Owned(
                    tokenizer
                        .token_ids(std::slice::from_ref(&input.text))?
                        .pop()
                        .unwrap_or_default(),
                )),
            })
            .collect()
    }

    fn encoded((text, encoded): (String, Encoded)) -> Input {
        Input {
            text,
            ids: Some(encoded.ids),
            type_ids: encoded.type_ids,
            offsets: encoded.offsets,
        }
    }

    /// The tokens this input takes in a forward pass: its ids, or estimated from its words.
    pub fn tokens(&self) -> usize {
        match &self.ids {
            Some(ids) => ids.len(),
            None => estimate_tokens(&self.text, None),
        }
    }
}

/// A text's tokens estimated from its words and punctuation (WordPiece and BPE make at
/// least one token of each), plus the two special tokens, at most `max_len`.
pub fn estimate_tokens(text: &str, max_len: Option<usize>) -> usize {
    let words = text.split_whitespace().count();
    let punctuation = text.chars().filter(|c| c.is_ascii_punctuation()).count();
    let estimate = words + words / 3 + punctuation + 2;
    max_len.map_or(estimate, |max| estimate.min(max))
}

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
    /// `so1s-bf16`, `so1s-int8`).
    pub forward_pass: &'static str,
    /// Why that forward pass and precision: what `auto` found (the CPU's bf16, what the
    /// own encoder covers, the accuracy contract) or that they were asked for.
    pub reason: String,
    /// What `auto` precision measured against f32 and chose ([`crate::accuracy`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<Accuracy>,
}
