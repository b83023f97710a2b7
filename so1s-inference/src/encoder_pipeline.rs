//! [`EncoderPipeline`]: a model on so1s's own forward pass ([`Encoder`]): its tokenizer
//! (`tokenizer.json`, else the older vocabulary files), the encoder, then the
//! sentence-transformers modules (pooling, Dense, Normalize: sentence embeddings) or a
//! classification head and its softmax or sigmoid (sequence classifiers).

use crate::accuracy::{self, Accuracy};
use crate::embedding::{Modules, Pooling};
use crate::encoder::{
    family, run_in_passes, ClassifierHead, CpuFeatures, Encoder, EncoderShape, Family, PassCost,
    Precision, Weights,
};
use crate::entities::{self, Token};
use crate::guard::loading;
use crate::output::{label_prediction, rows, Scoring};
use crate::tokenize::{self, Encoded, Stripped, Tokenize};
use crate::Input;
use serde::Deserialize;
use so1s_core::model::read_json;
use so1s_core::model::{ModelLayout, Task};
use so1s_core::predict::BuildRecord;
use so1s_core::{Error, Prediction, Result};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// A model whose forward pass so1s runs, of any of the families in [`family`]. A batch is
/// cut into passes of similar lengths ([`run_in_passes`]).
pub struct EncoderPipeline {
    tokenizer: Arc<dyn Tokenize>,
    encoder: Encoder,
    output: Output,
    max_len: usize,
    pad_id: i64,
    /// What `auto` precision measured and chose.
    accuracy: Option<Accuracy>,
}

/// What the pipeline makes of the encoder's hidden states.
enum Output {
    /// Pooling, a Dense projection, unit length: as the model's modules say.
    Embedding(Modules),
    /// The head's logits, scored over `labels`.
    Labels {
        head: ClassifierHead,
        labels: Vec<String>,
        scoring: Scoring,
    },
    /// Each token's logits, softmaxed over `labels`, grouped into entities.
    Entities {
        head: ClassifierHead,
        labels: Vec<String>,
    },
    /// A cross-encoder's one logit and its sigmoid.
    Relevance(ClassifierHead),
}

/// What [`EncoderPipeline::plan`] found a model to be, before any weight is read.
pub struct EncoderPlan {
    family: &'static dyn Family,
    shape: EncoderShape,
    /// The pooling of an embeddings model.
    pooling: Option<Pooling>,
    scoring: Scoring,
    lower_case: bool,
    strip_accents: Option<bool>,
    max_len: Option<usize>,
}

impl EncoderPlan {
    /// How an embeddings model pools its token states.
    pub fn pooling(&self) -> Option<&Pooling> {
        self.pooling.as_ref()
    }
}

impl EncoderPipeline {
    /// Checks from the model's small files (no weights read) that so1s's own forward pass
    /// runs it: a model of one of the [`family`] families, as a sentence-embeddings model
    /// (any sentence-transformers pooling, Dense and Normalize; mean pooling for a plain
    /// encoder) or a sequence classifier (softmax, or sigmoid for multi-label and one-label
    /// ones). The error says what it does not run.
    pub fn plan(layout: &ModelLayout) -> Result<EncoderPlan> {
        let Some(family) = family::of(layout.architecture) else {
            return Err(Error::InvalidModel(format!(
                "so1s's own forward pass serves the families {}; this is a {} {} model",
                family::supported().join(", "),
                layout.architecture.as_str(),
                layout.task.as_str()
            )));
        };
        let shape = family.shape(&layout.config)?;
        let tokens = &layout.tokenizer;
        let mut plan = EncoderPlan {
            family,
            shape,
            pooling: None,
            scoring: Scoring::Softmax,
            lower_case: tokens.lower_case,
            strip_accents: tokens.strip_accents,
            max_len: layout.max_sequence_length,
        };
        match layout.task {
            Task::SentenceEmbeddings => {
                plan.pooling = Some(Modules::plan(layout)?.0);
                if let Some(files) = &layout.sentence_transformer {
                    // The older tokenizer files as sentence-transformers sets them up.
                    let config: TokenizerConfig = read_json(&files.tokenizer_config)?;
                    let bert_config: SentenceBertConfig = read_json(&files.sentence_bert_config)?;
                    plan.lower_case = config.do_lower_case.unwrap_or(bert_config.do_lower_case);
                    plan.strip_accents = config.strip_accents;
                }
            }
            Task::SequenceClassification => plan.scoring = Scoring::of(layout)?,
            Task::TokenClassification => {}
            Task::Rerank => {
                if layout.labels.len() != 1 {
                    return Err(Error::InvalidModel(format!(
                        "a reranker (cross-encoder) answers one score; this model has {} labels",
                        layout.labels.len()
                    )));
                }
            }
        }
        Ok(plan)
    }

    /// Loads a model [`EncoderPipeline::plan`] accepts, its encoder's matrix products in
    /// `precision`. [`Precision::Auto`] takes bf16 where the CPU has it natively *and* the
    /// model keeps to the accuracy contract in it ([`crate::accuracy`]: measured against
    /// f32 on the calibration texts, [`EncoderPipeline::accuracy`]), else f32. What the
    /// build measured (its [`BuildRecord`] in the model directory) is served as it chose,
    /// without loading the model twice.
    pub fn load(layout: &ModelLayout, precision: Precision) -> Result<Self> {
        let plan = Self::plan(layout)?;
        let (resolved, _) = precision.resolve(CpuFeatures::detect());
        if precision != Precision::Auto || resolved == Precision::F32 {
            return Self::load_in(layout, &plan, resolved);
        }
        let built = BuildRecord::read(&layout.dir)?
            .and_then(|record| record.precision)
            .filter(|accuracy| accuracy.measured == resolved);
        if let Some(accuracy) = built {
            let mut chosen = Self::load_in(layout, &plan, accuracy.chosen)?;
            chosen.accuracy = Some(accuracy);
            return Ok(chosen);
        }
        let candidate = Self::load_in(layout, &plan, resolved)?;
        let reference = Self::load_in(layout, &plan, Precision::F32)?;
        let inputs = candidate.calibration_inputs(layout)?;
        let drift = accuracy::compare(
            &reference.predict_inputs(&inputs)?,
            &candidate.predict_inputs(&inputs)?,
        );
        let accuracy = Accuracy::of(resolved, drift);
        let mut chosen = match accuracy.chosen == resolved {
            true => candidate,
            false => reference,
        };
        chosen.accuracy = Some(accuracy);
        Ok(chosen)
    }

    /// What `auto` measured and chose, when it measured.
    pub fn accuracy(&self) -> Option<&Accuracy> {
        self.accuracy.as_ref()
    }

    /// The inputs the accuracy contract is measured on: the calibration texts (each paired
    /// with the first, for a cross-encoder).
    fn calibration_inputs(&self, layout: &ModelLayout) -> Result<Vec<Input>> {
        let texts: Vec<String> = CALIBRATION_TEXTS.iter().map(|t| t.to_string()).collect();
        match layout.task {
            Task::Rerank => Input::pairs(&texts[0], texts[1..].to_vec(), &*self.tokenizer),
            _ => Input::batch(texts, Some(&*self.tokenizer)),
        }
    }

    /// [`EncoderPipeline::load`] in `precision`, resolved already.
    fn load_in(layout: &ModelLayout, plan: &EncoderPlan, precision: Precision) -> Result<Self> {
        // The longest input: what the model was trained on (sentence-transformers' or
        // so1s.toml's length), never more than its position embeddings.
        let positions = plan.shape.max_tokens().unwrap_or(512);
        let max_len = plan.max_len.unwrap_or(positions).min(positions);
        let chosen = tokenize::for_encoder(layout, max_len, plan.lower_case, plan.strip_accents)?;
        // sentence-transformers strips the texts it embeds.
        let tokenizer: Arc<dyn Tokenize> = match layout.sentence_transformer.is_some() {
            true => Arc::new(Stripped(chosen.tokenizer)),
            false => Arc::from(chosen.tokenizer),
        };
        let calibration = match precision {
            Precision::Int8 => {
                let texts: Vec<String> = CALIBRATION_TEXTS.iter().map(|t| t.to_string()).collect();
                let mut sequences = tokenizer.token_ids(&texts)?;
                sequences.extend(vocabulary_samples(&sequences, plan.shape.vocab_size));
                sequences
            }
            _ => Vec::new(),
        };
        let family = plan.family;
        let mut weights = loading(|| Weights::read(&layout.weights, family.prefix()))?;
        let encoder =
            loading(|| Encoder::load(&mut weights, family, &plan.shape, precision, &calibration))?;
        let hidden = plan.shape.hidden_size;
        let labels = layout.labels.len();
        let mut sequence_head =
            || loading(|| ClassifierHead::load(&mut weights, &family.classifier(), hidden, labels));
        let output = match layout.task {
            Task::SentenceEmbeddings => Output::Embedding(loading(|| Modules::load(layout))?),
            Task::SequenceClassification => Output::Labels {
                head: sequence_head()?,
                labels: layout.labels.clone(),
                scoring: plan.scoring,
            },
            Task::Rerank => Output::Relevance(sequence_head()?),
            Task::TokenClassification => Output::Entities {
                head: loading(|| ClassifierHead::per_token(&mut weights, hidden, labels))?,
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
            pad_id: chosen.pad_id,
            tokenizer,
            encoder,
            output,
            accuracy: None,
        })
    }

    /// The precision of the encoder's linear layers.
    pub fn precision(&self) -> Precision {
        self.encoder.precision()
    }

    /// The width of one text's output: the embedding's dimension or the number of labels.
    pub fn output_dim(&self) -> usize {
        match &self.output {
            Output::Embedding(modules) => modules.width(self.encoder.hidden_size()),
            Output::Labels { labels, .. } | Output::Entities { labels, .. } => labels.len(),
            Output::Relevance(_) => 1,
        }
    }

    /// The longest input in tokens, special tokens included; longer texts are truncated.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The token ids of each text as the forward pass gets them: special tokens in,
    /// truncated at [`EncoderPipeline::max_len`].
    pub fn token_ids(&self, texts: &[String]) -> Result<Vec<Vec<i64>>> {
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
        self.predict_ids(&self.token_ids(texts)?)
    }

    /// [`EncoderPipeline::predict`] of texts tokenized already
    /// ([`EncoderPipeline::token_ids`]).
    pub fn predict_ids<S: AsRef<[i64]>>(&self, ids: &[S]) -> Result<Vec<Prediction>> {
        match &self.output {
            Output::Embedding(modules) => {
                let embeddings = self.run(ids, |hidden, mask| {
                    rows(modules.embed(hidden, mask), "the embeddings")
                })?;
                Ok(embeddings.into_iter().map(Prediction::Embedding).collect())
            }
            Output::Labels {
                head,
                labels,
                scoring,
            } => {
                let scores = self.run(ids, |hidden, _| {
                    let logits = head.logits(hidden).to_kind(Kind::Double);
                    rows::<f64>(scoring.apply(&logits), "the scores")
                })?;
                Ok(scores
                    .into_iter()
                    .map(|scores| label_prediction(labels, &scores))
                    .collect())
            }
            Output::Entities { .. } | Output::Relevance(_) => {
                let inputs = ids
                    .iter()
                    .map(|ids| Input {
                        ids: Some(ids.as_ref().to_vec()),
                        ..Input::default()
                    })
                    .collect::<Vec<_>>();
                self.predict_inputs(&inputs)
            }
        }
    }

    /// One prediction per input, in order: [`EncoderPipeline::predict_ids`] of their ids,
    /// with what a token classifier (the tokens' spans) and a cross-encoder (the pairs'
    /// segment ids) need beside. An input without ids is tokenized here.
    pub fn predict_inputs(&self, inputs: &[Input]) -> Result<Vec<Prediction>> {
        match &self.output {
            Output::Embedding(_) | Output::Labels { .. } => {
                self.predict_ids(&Input::ids(inputs, &*self.tokenizer)?)
            }
            Output::Relevance(head) => {
                let ids = Input::ids(inputs, &*self.tokenizer)?;
                let types: Vec<&[i64]> = inputs.iter().map(|i| i.type_ids.as_slice()).collect();
                let logits = self.run_typed(&ids, Some(&types), |_, hidden, _| {
                    rows::<f64>(head.logits(hidden).to_kind(Kind::Double), "the scores")
                })?;
                Ok(logits
                    .into_iter()
                    .map(|logit| {
                        let logit = logit.first().copied().unwrap_or(f64::NAN);
                        Prediction::Relevance {
                            score: 1.0 / (1.0 + (-logit).exp()),
                            logit,
                        }
                    })
                    .collect())
            }
            Output::Entities { head, labels } => {
                // The tokens' spans: as the request handler kept them, else made here.
                let mut encoded: Vec<Encoded> = Vec::with_capacity(inputs.len());
                for input in inputs {
                    encoded.push(match (&input.ids, input.offsets.is_empty()) {
                        (Some(ids), false) => Encoded {
                            ids: ids.clone(),
                            type_ids: Vec::new(),
                            offsets: input.offsets.clone(),
                        },
                        _ => self
                            .tokenizer
                            .encode(std::slice::from_ref(&input.text))?
                            .pop()
                            .unwrap_or_default(),
                    });
                }
                let ids: Vec<&[i64]> = encoded.iter().map(|e| e.ids.as_slice()).collect();
                let scores = self.run_typed(&ids, None, |texts, hidden, _| {
                    let scores = head.token_logits(hidden).softmax(-1, Kind::Double);
                    texts
                        .iter()
                        .enumerate()
                        .map(|(row, &text)| {
                            let tokens = ids[text].len() as i64;
                            rows::<f64>(scores.get(row as i64).narrow(0, 0, tokens), "the scores")
                        })
                        .collect()
                })?;
                Ok(encoded
                    .iter()
                    .zip(scores)
                    .map(|(encoded, scores)| {
                        let tokens: Vec<Token> = encoded
                            .ids
                            .iter()
                            .zip(&scores)
                            .enumerate()
                            .map(|(i, (&id, scores))| Token {
                                id,
                                span: encoded.offsets.get(i).copied().flatten(),
                                scores,
                            })
                            .collect();
                        let words = |ids: &[i64]| self.tokenizer.join_tokens(ids);
                        Prediction::Entities(entities::group(labels, &tokens, words))
                    })
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
        let ids = self.token_ids(texts)?;
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
        self.run_typed(ids, None, |_, hidden, mask| per_pass(hidden, mask))
    }

    /// [`EncoderPipeline::run`] with each sequence's segment ids (`types`: a pair's; an empty
    /// one is all 0), and `per_pass` told which sequences (indices into `ids`) the pass holds.
    fn run_typed<T: Default + Clone, S: AsRef<[i64]>>(
        &self,
        ids: &[S],
        types: Option<&[&[i64]]>,
        per_pass: impl Fn(&[usize], &Tensor, &Tensor) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let cost = PassCost::Packed {
            hidden: self.encoder.hidden_size(),
        };
        run_in_passes(ids, self.pad_id, cost, |texts, pass_ids, mask| {
            let hidden = match types {
                Some(types) => {
                    let longest = pass_ids.size().get(1).copied().unwrap_or(0) as usize;
                    let mut padded = Vec::with_capacity(texts.len() * longest);
                    for &text in texts {
                        let own = types.get(text).copied().unwrap_or_default();
                        padded.extend(own.iter().take(longest));
                        padded.extend(std::iter::repeat_n(0, longest - own.len().min(longest)));
                    }
                    let types = Tensor::from_slice(&padded).view([texts.len() as i64, -1]);
                    self.encoder.forward_pairs(pass_ids, &types, mask)
                }
                None => self.encoder.forward(pass_ids, mask),
            };
            tch::no_grad(|| per_pass(texts, &hidden, mask))
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
struct TokenizerConfig {
    do_lower_case: Option<bool>,
    strip_accents: Option<bool>,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    #[serde(default)]
    do_lower_case: bool,
}
