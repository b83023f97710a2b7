//! Predictions: the request and reply types, the pipelines (so1s's own encoder, rust-bert's),
//! the choice of forward pass and precision, and `TransformerService`, the batching handle
//! the servers call. The request and reply types, [`Precision`], [`ForwardPass`] and
//! [`CpuFeatures`] are plain data; the pipelines, so1s's own encoder and the service need the
//! `inference` feature (rust-bert and libtorch).
//!
//! The model lives on one OS thread of its own; the async side holds a cheap [`Clone`] handle
//! that queues texts and awaits a oneshot reply. The thread drains the queue into batches
//! (up to `max_batch_size` texts; an idle model waits at most `max_batch_wait` for a batch to
//! fill, and only while requests keep coming, `max_batch_gap` apart at most), so concurrent
//! requests share one forward pass. A full queue is a fast
//! [`Error::Overloaded`](crate::Error::Overloaded), not a pile-up.

#[cfg(feature = "inference")]
mod classifier;
#[cfg(feature = "inference")]
pub mod encoder;
#[cfg(feature = "inference")]
mod encoder_pipeline;
pub mod oip;
#[cfg(feature = "inference")]
mod pipeline;
mod precision;
mod request;
#[cfg(feature = "inference")]
mod service;

#[cfg(feature = "inference")]
pub use pipeline::{EncoderPipeline, EncoderPlan, ModelInfo, Pipeline, RustBertClassifier};
pub use precision::{CpuFeatures, ForwardPass, Precision};
pub use request::{InputLimits, PredictRequest};
#[cfg(feature = "inference")]
pub use service::{Predictor, ServiceOptions, TransformerService};

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What the model says about one text.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// A sentence embedding.
    Embedding(Vec<f32>),
    /// The most likely label and its probability.
    Label {
        /// The label's name from `id2label`.
        label: String,
        /// Its softmax probability, in `[0, 1]`.
        score: f64,
        /// Every label's probability, in `id2label` order. Replies carry them when the
        /// request asks (`"all_scores": true`).
        scores: Option<Vec<LabelScore>>,
    },
}

/// One label's probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    /// The label's name from `id2label`.
    pub label: String,
    /// Its softmax probability, in `[0, 1]`.
    pub score: f64,
}

impl Prediction {
    /// The prediction without every label's scores: the reply to a request that did not ask
    /// for them.
    pub fn top_only(self) -> Self {
        match self {
            Prediction::Label { label, score, .. } => Prediction::Label {
                label,
                score,
                scores: None,
            },
            embedding => embedding,
        }
    }
}

/// Serialized as the reply object of one text: `{"result": [..]}` for an embedding,
/// `{"result": "<label>", "score": 0.97}` for a label (the original service's shape), with
/// `"scores": [{"label": .., "score": ..}, ..]` when it carries every label's.
impl Serialize for Prediction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Prediction::Embedding(vector) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("result", vector)?;
                map.end()
            }
            Prediction::Label {
                label,
                score,
                scores,
            } => {
                let mut map = serializer.serialize_map(Some(2 + scores.is_some() as usize))?;
                map.serialize_entry("result", label)?;
                map.serialize_entry("score", score)?;
                if let Some(scores) = scores {
                    map.serialize_entry("scores", scores)?;
                }
                map.end()
            }
        }
    }
}

/// Read back from the reply object: a string `result` with a `score` is a label, a list of
/// numbers an embedding.
impl<'de> Deserialize<'de> for Prediction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Reply {
            Label {
                result: String,
                score: f64,
                #[serde(default)]
                scores: Option<Vec<LabelScore>>,
            },
            Embedding {
                result: Vec<f32>,
            },
        }
        Ok(match Reply::deserialize(deserializer)? {
            Reply::Label {
                result,
                score,
                scores,
            } => Prediction::Label {
                label: result,
                score,
                scores,
            },
            Reply::Embedding { result } => Prediction::Embedding(result),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_serialize_under_result() {
        let label = Prediction::Label {
            label: "positive".into(),
            score: 0.75,
            scores: Some(vec![
                LabelScore {
                    label: "negative".into(),
                    score: 0.25,
                },
                LabelScore {
                    label: "positive".into(),
                    score: 0.75,
                },
            ]),
        };
        assert_eq!(
            serde_json::to_value(&label).unwrap(),
            serde_json::json!({"result": "positive", "score": 0.75, "scores": [
                {"label": "negative", "score": 0.25}, {"label": "positive", "score": 0.75}
            ]})
        );
        assert_eq!(
            serde_json::to_value(label.top_only()).unwrap(),
            serde_json::json!({"result": "positive", "score": 0.75})
        );
        let embedding = Prediction::Embedding(vec![0.5, -0.25]);
        assert_eq!(
            serde_json::to_value(&embedding).unwrap(),
            serde_json::json!({"result": [0.5, -0.25]})
        );
    }

    #[test]
    fn predictions_read_back_from_their_reply() {
        for prediction in [
            Prediction::Label {
                label: "긍정".into(),
                score: 0.875,
                scores: None,
            },
            Prediction::Label {
                label: "긍정".into(),
                score: 0.875,
                scores: Some(vec![LabelScore {
                    label: "긍정".into(),
                    score: 0.875,
                }]),
            },
            Prediction::Embedding(vec![0.5, -0.25, 1.0]),
        ] {
            let json = serde_json::to_string(&prediction).unwrap();
            assert_eq!(
                serde_json::from_str::<Prediction>(&json).unwrap(),
                prediction
            );
        }
        assert!(serde_json::from_str::<Prediction>(r#"{"result": 3}"#).is_err());
    }
}
