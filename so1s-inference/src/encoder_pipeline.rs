//! [`EncoderPipeline`]: a model on so1s's own forward pass ([`Encoder`]): rust-bert's
//! WordPiece tokenizer, the encoder, then mean pooling (sentence embeddings) or a
//! classification head and a softmax over the labels (sequence classifiers).

use crate::encoder::{
    family, mean_pool, normalize, run_in_passes, ClassifierHead, CpuFeatures, Encoder,
    EncoderShape, Family, PassCost, Precision, Weights,
};
use crate::guard::loading;
use crate::output::{label_prediction, rows};
use crate::tokenize::{wordpiece, Tokenize, VocabTokenizer};
use serde::Deserialize;
use so1s_core::model::read_json;
use so1s_core::model::{ModelLayout, Task};
use so1s_core::{Error, Prediction, Result};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// A BERT or ELECTRA model whose forward pass so1s runs. A batch is cut into passes of
/// similar lengths ([`run_in_passes`]).
pub struct EncoderPipeline {
    tokenizer: Arc<VocabTokenizer>,
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

/// What [`EncoderPipeline::plan`] found a model to be, before any weight is read.
pub struct EncoderPlan {
    family: &'static dyn Family,
    shape: EncoderShape,
    output: PlannedOutput,
    lower_case: bool,
    strip_accents: Option<bool>,
    max_len: Option<usize>,
}

enum PlannedOutput {
    Embedding { normalize: bool },
    Labels,
}

impl EncoderPipeline {
    /// Checks from the model's small files (no weights read) that so1s's own forward pass
    /// runs it: a BERT or ELECTRA sentence-embeddings model with mean pooling and no dense
    /// layer, or a single-label BERT or ELECTRA classifier, with exact GELU and absolute
    /// positions. The error says what it does not run; rust-bert may.
    pub fn plan(layout: &ModelLayout) -> Result<EncoderPlan> {
        let unsupported = |why: String| {
            Error::InvalidModel(format!(
                "so1s's own forward pass serves {} sentence-embedding models with mean pooling \
                 and sequence classifiers; {why}",
                family::supported().join(", ")
            ))
        };
        let Some(family) = family::of(layout.architecture) else {
            return Err(unsupported(format!(
                "this is a {} {} model",
                layout.architecture.as_str(),
                layout.task.as_str()
            )));
        };
        let shape = family.shape(&layout.config)?;
        match layout.task {
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
                Ok(EncoderPlan {
                    family,
                    shape,
                    output: PlannedOutput::Embedding { normalize },
                    lower_case: tokenizer_config
                        .do_lower_case
                        .unwrap_or(bert_config.do_lower_case),
                    strip_accents: tokenizer_config.strip_accents,
                    max_len: Some(bert_config.max_seq_length),
                })
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
                Ok(EncoderPlan {
                    family,
                    shape,
                    output: PlannedOutput::Labels,
                    lower_case: layout.tokenizer.lower_case,
                    strip_accents: layout.tokenizer.strip_accents,
                    max_len: layout.max_sequence_length,
                })
            }
        }
    }

    /// Loads a model [`EncoderPipeline::plan`] accepts, its encoder's matrix products in
    /// `precision` ([`Precision::Auto`]: bf16 where the CPU has it natively, else f32).
    pub fn load(layout: &ModelLayout, precision: Precision) -> Result<Self> {
        let plan = Self::plan(layout)?;
        let (precision, _) = precision.resolve(CpuFeatures::detect());
        // The longest input: what the model was trained on (sentence-transformers' or
        // so1s.toml's length), never more than its position embeddings.
        let positions = plan.shape.max_position_embeddings.unwrap_or(512);
        let max_len = plan.max_len.unwrap_or(positions).min(positions);
        let tokenizer = VocabTokenizer::new(
            wordpiece(layout, plan.lower_case, plan.strip_accents)?,
            max_len,
            true,
        );
        let calibration = match precision {
            Precision::Int8 => {
                let texts: Vec<String> = CALIBRATION_TEXTS.iter().map(|t| t.to_string()).collect();
                let mut sequences = tokenizer.token_ids(&texts);
                sequences.extend(vocabulary_samples(&sequences, plan.shape.vocab_size));
                sequences
            }
            _ => Vec::new(),
        };
        let family = plan.family;
        let mut weights = loading(|| Weights::read(&layout.weights, family.prefix()))?;
        let encoder =
            loading(|| Encoder::load(&mut weights, family, &plan.shape, precision, &calibration))?;
        let output = match plan.output {
            PlannedOutput::Embedding { normalize } => Output::Embedding { normalize },
            PlannedOutput::Labels => Output::Labels {
                head: loading(|| {
                    ClassifierHead::load(
                        &mut weights,
                        &family.classifier(),
                        plan.shape.hidden_size,
                        layout.labels.len(),
                    )
                })?,
                labels: layout.labels.clone(),
            },
        };
        if encoder.max_positions() < max_len {
            return Err(Error::InvalidModel(format!(
                "the weights hold {} position embeddings; config.json promises {positions}",
                encoder.max_positions()
            )));
        }
        Ok(Self {
            max_len,
            pad_id: tokenizer.pad_id().unwrap_or(0),
            tokenizer: Arc::new(tokenizer),
            encoder,
            output,
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
        self.tokenizer.token_ids(texts)
    }

    /// The tokenizer of [`EncoderPipeline::token_ids`], to tokenize requests with before they
    /// reach the model thread.
    pub fn tokenizer(&self) -> Arc<dyn Tokenize> {
        self.tokenizer.clone()
    }

    /// One prediction per text, in order: an embedding, or the most likely label with every
    /// label's score.
    pub fn predict(&self, texts: &[String]) -> Result<Vec<Prediction>> {
        self.predict_ids(&self.token_ids(texts))
    }

    /// [`EncoderPipeline::predict`] of texts tokenized already
    /// ([`EncoderPipeline::token_ids`]).
    pub fn predict_ids<S: AsRef<[i64]>>(&self, ids: &[S]) -> Result<Vec<Prediction>> {
        match &self.output {
            Output::Embedding { normalize: unit } => {
                let embeddings = self.run(ids, |hidden, mask| {
                    let pooled = mean_pool(hidden, mask);
                    let pooled = if *unit { normalize(&pooled) } else { pooled };
                    rows(pooled, "the embeddings")
                })?;
                Ok(embeddings.into_iter().map(Prediction::Embedding).collect())
            }
            Output::Labels { head, labels } => {
                let scores = self.run(ids, |hidden, _| {
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
        let ids = self.token_ids(texts);
        self.run(&ids, |hidden, _| rows(head.logits(hidden), "the logits"))
    }

    /// Runs the encoder over token sequences in passes of similar lengths; `per_pass` turns a
    /// pass's hidden states `[texts, tokens, hidden]` and mask into one row per text. Rows
    /// come back in the sequences' order.
    fn run<T: Default + Clone, S: AsRef<[i64]>>(
        &self,
        ids: &[S],
        per_pass: impl Fn(&Tensor, &Tensor) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let cost = PassCost::Packed {
            hidden: self.encoder.hidden_size(),
        };
        run_in_passes(ids, self.pad_id, cost, |ids, mask| {
            let hidden = self.encoder.forward(ids, mask);
            tch::no_grad(|| per_pass(&hidden, mask))
        })
    }
}

/// What int8 calibrates its smoothing on ([`Encoder::load`]): short and long, plain and
/// punctuated, several scripts — the activations' outlier channels are a property of the
/// model more than of the text, so a few varied sentences find them. None of them is a
/// text the tests measure accuracy on.
const CALIBRATION_TEXTS: [&str; 12] = [
    "Good morning, everyone",
    "A cat sleeps on the warm windowsill.",
    "Servers restart, caches warm up, and traffic moves to the new version.",
    "What time is it in Seoul right now?",
    "I loved this movie! The actors were great, and the music too.",
    "Terrible service; never again...",
    "배우들 연기가 좋았고 음악도 훌륭했다!",
    "최악의 영화였다. 시간 낭비",
    "Vectors of sentences feed search, clustering and deduplication.",
    "Rust is a systems programming language: fast, memory-safe, without a garbage collector.",
    "Great job 👍 — see you at 10:30?! “Quotes” (brackets) 100% #1",
    "A longer text goes on about many things, from the weather in the mountains to the \
     price of bread in the city, the history of printing, and why a new version of a \
     service should go live without dropping a single request from its clients.",
];

/// Sequences of tokens drawn evenly (a fixed pseudo-random walk) from the whole vocabulary,
/// framed as the calibration texts are (`first` gives `[CLS]` and `[SEP]`): a vocabulary
/// the calibration texts barely touch (a Korean model's, say) still gets its ranges seen.
fn vocabulary_samples(first: &[Vec<i64>], vocab_size: Option<i64>) -> Vec<Vec<i64>> {
    let (Some(vocab), Some(framed)) = (vocab_size, first.first()) else {
        return Vec::new();
    };
    let (Some(&cls), Some(&sep)) = (framed.first(), framed.last()) else {
        return Vec::new();
    };
    let mut state: u64 = 0x5eed_1234_abcd_9876;
    (0..4)
        .map(|_| {
            let mut ids = vec![cls];
            ids.extend((0..62).map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) % vocab.max(1) as u64) as i64
            }));
            ids.push(sep);
            ids
        })
        .collect()
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
