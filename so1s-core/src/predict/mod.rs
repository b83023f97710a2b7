//! Predictions as plain data, shared by the predict server (so1s-inference), the gateway and
//! the api client: the request and reply types, the Open Inference Protocol's messages
//! ([`oip`]), and the serving choices a model's `so1s.toml` may make ([`Precision`],
//! [`ForwardPass`]) with the CPU features `auto` reads ([`CpuFeatures`]). Running a model is
//! so1s-inference's: this module links no libtorch.

pub mod oip;
mod precision;
mod request;

pub use precision::{CpuFeatures, ForwardPass, Precision};
pub use request::{InputLimits, PredictRequest};

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
