//! [`EncoderPipeline`]: a model on so1s's own forward pass ([`Encoder`]): rust-bert's
//! WordPiece tokenizer, the encoder, then mean pooling (sentence embeddings) or a
//! classification head and a softmax over the labels (sequence classifiers).

use super::encoder::{
    mean_pool, normalize, run_in_passes, ClassifierHead, Encoder, EncoderShape, Precision, Weights,
};
use super::pipeline::guard;
use super::{LabelScore, Prediction};
use crate::model::read_json;
use crate::model::{Architecture, ModelLayout, Task};
use crate::{Error, Result};
use rust_bert::pipelines::common::{ModelType, TokenizerOption};
use rust_tokenizers::tokenizer::TruncationStrategy;
use serde::Deserialize;
use std::borrow::Cow;
use tch::{Kind, Tensor};
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// A BERT or ELECTRA model whose forward pass so1s runs. A batch is cut into passes of
/// similar lengths ([`run_in_passes`]).
pub struct EncoderPipeline {
    tokenizer: TokenizerOption,
    encoder: Encoder,
    output: Output,
    max_len: usize,
    pad_id: i64,
}

/// What the pipeline makes of the encoder's hidden states.
enum Output {
    /// Mean pooling, then (if the model says so) unit length.
    Embedding { normalize: bool },
    /// The head's logits, a softmax over `labels`.
    Labels {
        head: ClassifierHead,
        labels: Vec<String>,
    },
}

impl EncoderPipeline {
    /// Loads a BERT or ELECTRA model — a sentence-embeddings model with mean pooling and no
    /// dense layer, or a sequence classifier — with its encoder's linear layers in
    /// `precision`. Other models get a clear error: rust-bert runs them.
    pub fn load(layout: &ModelLayout, precision: Precision) -> Result<Self> {
        let unsupported = |why: String| {
            Error::InvalidModel(format!(
                "so1s's own forward pass (which runs {} precision) serves BERT and ELECTRA \
                 sentence-embedding models with mean pooling and sequence classifiers; {why}",
                precision.as_str()
            ))
        };
        if !matches!(
            layout.architecture,
            Architecture::Bert | Architecture::Electra
        ) {
            return Err(unsupported(format!(
                "this is a {} {} model",
                layout.architecture.as_str(),
                layout.task.as_str()
            )));
        }
        let shape: EncoderShape = read_json(&layout.config)?;
        let mut weights = loading(|| Weights::read(&layout.weights))?;
        let encoder =
            loading(|| Encoder::load(&mut weights, &shape, precision)).map_err(|e| match e {
                Error::InvalidModel(why) => Error::InvalidModel(format!(
                    "serving in {} precision: {why}",
                    precision.as_str()
                )),
                other => other,
            })?;
        let (output, tokenizer, max_len) = match layout.task {
            Task::SentenceEmbeddings => {
                let files = layout.sentence_transformer.as_ref().ok_or_else(|| {
                    Error::InvalidModel("a sentence-embeddings model needs modules.json".into())
                })?;
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
                // The tokenizer exactly as rust-bert's sentence-embeddings pipeline sets it up.
                let tokenizer_config: TokenizerConfig = read_json(&files.tokenizer_config)?;
                let bert_config: SentenceBertConfig = read_json(&files.sentence_bert_config)?;
                let lower_case = tokenizer_config
                    .do_lower_case
                    .unwrap_or(bert_config.do_lower_case);
                let tokenizer = wordpiece(layout, lower_case, tokenizer_config.strip_accents)?;
                (
                    Output::Embedding { normalize },
                    tokenizer,
                    bert_config.max_seq_length,
                )
            }
            Task::SequenceClassification => {
                let config: ClassifierConfig = read_json(&layout.config)?;
                if config.problem_type.as_deref() == Some("multi_label_classification") {
                    return Err(unsupported(
                        "this classifier is multi-label (problem_type in config.json); \
                         so1s answers one label per text"
                            .into(),
                    ));
                }
                let head = loading(|| {
                    ClassifierHead::load(
                        &mut weights,
                        layout.architecture,
                        shape.hidden_size,
                        layout.labels.len(),
                    )
                })?;
                let tokens = &layout.tokenizer;
                let tokenizer = wordpiece(layout, tokens.lower_case, tokens.strip_accents)?;
                let max_len = layout
                    .max_sequence_length
                    .unwrap_or_else(|| encoder.max_positions());
                let labels = layout.labels.clone();
                (Output::Labels { head, labels }, tokenizer, max_len)
            }
        };
        let pad_id = tokenizer.get_pad_id().unwrap_or(0);
        Ok(Self {
            max_len: max_len.min(encoder.max_positions()),
            tokenizer,
            encoder,
            output,
            pad_id,
        })
    }

    /// The precision of the encoder's linear layers.
    pub fn precision(&self) -> Precision {
        self.encoder.precision()
    }

    /// The width of one text's output: the embedding's dimension or the number of labels.
    pub fn output_dim(&self) -> usize {
        match &self.output {
            Output::Embedding { .. } => self.encoder.hidden_size(),
            Output::Labels { labels, .. } => labels.len(),
        }
    }

    /// The longest input in tokens, special tokens included; longer texts are truncated.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The token ids of each text as the forward pass gets them: `[CLS] … [SEP]`, truncated
    /// at [`EncoderPipeline::max_len`]. Texts are NFC-normalized first, as Hugging Face's
    /// BERT tokenizer does.
    pub fn token_ids(&self, texts: &[String]) -> Vec<Vec<i64>> {
        let texts: Vec<Cow<str>> = texts.iter().map(|t| nfc(t)).collect();
        self.tokenizer
            .encode_list(&texts, self.max_len, &TruncationStrategy::LongestFirst, 0)
            .into_iter()
            .map(|encoded| encoded.token_ids)
            .collect()
    }

    /// Tokens of each text after truncation, as the forward pass runs them.
    pub fn token_counts(&self, texts: &[String]) -> Vec<usize> {
        self.token_ids(texts).iter().map(Vec::len).collect()
    }

    /// One prediction per text, in order: an embedding, or the most likely label with every
    /// label's score.
    pub fn predict(&self, texts: &[String]) -> Result<Vec<Prediction>> {
        match &self.output {
            Output::Embedding { normalize: unit } => {
                let embeddings = self.run(texts, |hidden, mask| {
                    let pooled = mean_pool(hidden, mask);
                    let pooled = if *unit { normalize(&pooled) } else { pooled };
                    rows(pooled, "the embeddings")
                })?;
                Ok(embeddings.into_iter().map(Prediction::Embedding).collect())
            }
            Output::Labels { head, labels } => {
                let scores = self.run(texts, |hidden, _| {
                    let logits = head.logits(hidden).to_kind(Kind::Double);
                    rows::<f64>(logits.softmax(-1, Kind::Double), "the scores")
                })?;
                Ok(scores
                    .into_iter()
                    .map(|scores| label_prediction(labels, &scores))
                    .collect())
            }
        }
    }

    /// A classifier's logits of each text (before the softmax), in order.
    pub fn logits(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let Output::Labels { head, .. } = &self.output else {
            return Err(Error::InvalidInput(
                "logits are a classifier's; this model answers embeddings".into(),
            ));
        };
        self.run(texts, |hidden, _| rows(head.logits(hidden), "the logits"))
    }

    /// Runs the encoder over `texts` in passes of similar lengths; `per_pass` turns a pass's
    /// hidden states `[texts, tokens, hidden]` and mask into one row per text. Rows come back
    /// in the texts' order.
    fn run<T: Default + Clone>(
        &self,
        texts: &[String],
        per_pass: impl Fn(&Tensor, &Tensor) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        run_in_passes(&self.token_ids(texts), self.pad_id, |ids, mask| {
            let hidden = self.encoder.forward(ids, mask);
            tch::no_grad(|| per_pass(&hidden, mask))
        })
    }
}

/// Runs a loading step, a panic in libtorch becoming a load error.
pub(super) fn loading<T>(step: impl FnOnce() -> Result<T>) -> Result<T> {
    guard("loading the model", step).map_err(|e| match e {
        Error::Inference(message) => Error::Load(message),
        other => other,
    })
}

/// The most likely of `labels` and every label's score.
pub(super) fn label_prediction(labels: &[String], scores: &[f64]) -> Prediction {
    let top = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    Prediction::Label {
        label: labels.get(top).cloned().unwrap_or_default(),
        score: scores.get(top).copied().unwrap_or(0.0),
        scores: Some(
            labels
                .iter()
                .zip(scores)
                .map(|(label, &score)| LabelScore {
                    label: label.clone(),
                    score,
                })
                .collect(),
        ),
    }
}

/// A `[rows, n]` tensor as rows.
pub(super) fn rows<T>(tensor: Tensor, what: &str) -> Result<Vec<Vec<T>>>
where
    Vec<Vec<T>>: TryFrom<Tensor, Error = tch::TchError>,
{
    Vec::try_from(tensor).map_err(|e| Error::Inference(format!("reading {what}: {e}")))
}

/// `text` in Unicode normalization form C (composed): what Hugging Face's BERT tokenizer
/// reads, so that a decomposed `é` or a Hangul syllable typed as jamo finds its vocabulary
/// entry. Borrowed when already composed (the common case).
pub(super) fn nfc(text: &str) -> Cow<'_, str> {
    match is_nfc_quick(text.chars()) {
        IsNormalized::Yes => Cow::Borrowed(text),
        _ => Cow::Owned(text.nfc().collect()),
    }
}

/// rust-bert's BERT WordPiece tokenizer for the model's `vocab.txt`. Accents are stripped
/// only when the model says so or lower-cases (Hugging Face's rule): stripping decomposes
/// Hangul syllables into jamo, which a Korean vocabulary does not hold.
fn wordpiece(
    layout: &ModelLayout,
    lower_case: bool,
    strip_accents: Option<bool>,
) -> Result<TokenizerOption> {
    TokenizerOption::from_file(
        ModelType::Bert,
        &layout.tokenizer.vocab.to_string_lossy(),
        None,
        lower_case,
        strip_accents,
        None,
    )
    .map_err(|e| Error::Load(format!("loading the tokenizer: {e}")))
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

#[derive(Deserialize)]
struct ClassifierConfig {
    #[serde(default)]
    problem_type: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decomposed_text_is_composed_and_composed_text_borrowed() {
        assert!(matches!(nfc("이 영화 정말 재밌어요"), Cow::Borrowed(_)));
        assert_eq!(nfc("e\u{301}cole"), "\u{e9}cole");
        // 한 typed as its three jamo.
        assert_eq!(nfc("\u{1112}\u{1161}\u{11ab}"), "한");
    }

    #[test]
    fn the_top_label_comes_with_every_score() {
        let labels = ["부정".to_owned(), "긍정".to_owned()];
        let Prediction::Label {
            label,
            score,
            scores,
        } = label_prediction(&labels, &[0.25, 0.75])
        else {
            panic!("a label");
        };
        assert_eq!((label.as_str(), score), ("긍정", 0.75));
        let scores = scores.unwrap();
        assert_eq!(scores[0].label, "부정");
        assert_eq!(scores[0].score, 0.25);
        assert_eq!(scores.len(), 2);
    }
}
