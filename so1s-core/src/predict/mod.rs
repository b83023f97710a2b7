//! Predictions as plain data, shared by the predict server (so1s-inference), the gateway and
//! the api client: the request and reply types, the Open Inference Protocol's messages
//! ([`oip`]), and the serving choices a model's `so1s.toml` may make ([`Precision`],
//! [`ForwardPass`]) with the CPU features `auto` reads ([`CpuFeatures`]), and what `auto`
//! precision measured against f32 and chose ([`accuracy`]: kept by the build in the bundle
//! and the version's record). Running a model is so1s-inference's: this module links no
//! libtorch.

pub mod accuracy;
pub mod oip;
mod precision;
mod request;

pub use accuracy::{Accuracy, BuildRecord, Drift, Measure};
pub use precision::{CpuFeatures, ForwardPass, Precision};
pub use request::{InputLimits, PredictRequest, Ranked, RerankRequest};

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
    /// The entities of a token classifier, grouped as transformers' token-classification
    /// pipeline does with `aggregation_strategy="simple"`.
    Entities(Vec<Entity>),
    /// A cross-encoder's relevance of a (query, text) pair.
    Relevance {
        /// The sigmoid of the logit, in `[0, 1]`.
        score: f64,
        /// The model's raw score.
        logit: f64,
    },
}

/// One entity of a text: adjacent tokens of one entity type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// The entity type: the label without its `B-` / `I-` prefix.
    pub entity_group: String,
    /// The entity's text as the tokenizer decodes its tokens.
    pub word: String,
    /// Where it starts in the text sent, in characters (Unicode scalar values).
    pub start: usize,
    /// Where it ends (exclusive), in characters.
    pub end: usize,
    /// The mean of its tokens' scores.
    pub score: f64,
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
/// `"scores": [{"label": .., "score": ..}, ..]` when it carries every label's;
/// `{"result": [{"entity_group", "word", "start", "end", "score"}, ..]}` for entities and
/// `{"result": 0.93, "logit": 2.6}` for a relevance.
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
            Prediction::Entities(entities) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("result", entities)?;
                map.end()
            }
            Prediction::Relevance { score, logit } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("result", score)?;
                map.serialize_entry("logit", logit)?;
                map.end()
            }
        }
    }
}

/// Read back from the reply object: a string `result` with a `score` is a label, a number
/// with a `logit` a relevance, a list of entity objects entities (an empty list too), a list
/// of numbers an embedding.
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
            Relevance {
                result: f64,
                logit: f64,
            },
            Entities {
                result: Vec<Entity>,
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
            Reply::Relevance { result, logit } => Prediction::Relevance {
                score: result,
                logit,
            },
            Reply::Entities { result } => Prediction::Entities(result),
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
            Prediction::Entities(vec![Entity {
                entity_group: "PER".into(),
                word: "봉준호".into(),
                start: 3,
                end: 6,
                score: 0.75,
            }]),
            Prediction::Entities(Vec::new()),
            Prediction::Relevance {
                score: 0.875,
                logit: 1.9459,
            },
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
