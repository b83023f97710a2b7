//! The contract between the model thread and a model: [`Predictor`] turns a batch of texts
//! into predictions and says how many tokens each text takes; [`ModelInfo`] says what a
//! loaded model is and answers.

use serde::Serialize;
use so1s_core::model::Task;
use so1s_core::{Prediction, Result};

/// Something that turns a batch of texts into one prediction per text.
/// [`Pipeline`](crate::Pipeline) is the real one; tests plug in others.
pub trait Predictor {
    /// Runs one forward pass over `texts`, returning predictions in the same order.
    fn predict(&mut self, texts: &[String]) -> Result<Vec<Prediction>>;

    /// How many tokens each text takes in a forward pass (after truncation): what
    /// `max_batch_tokens` counts. The default estimates from the words.
    fn token_counts(&self, texts: &[String]) -> Vec<usize> {
        texts.iter().map(|t| estimate_tokens(t, None)).collect()
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
    /// own encoder covers) or that they were asked for.
    pub reason: String,
}
