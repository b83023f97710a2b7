//! Predictions: the request and reply types, the rust-bert pipelines, and
//! [`TransformerService`], the batching handle the servers call.
//!
//! The model lives on one OS thread of its own; the async side holds a cheap [`Clone`] handle
//! that queues texts and awaits a oneshot reply. The thread drains the queue into batches
//! (up to `max_batch_size` texts, waiting at most `max_batch_wait` for a batch to fill), so
//! concurrent requests share one forward pass. A full queue is a fast
//! [`Error::Overloaded`](crate::Error::Overloaded), not a pile-up.

pub mod encoder;
mod pipeline;
mod request;
mod service;

pub use pipeline::{ModelInfo, Pipeline};
pub use request::{InputLimits, PredictRequest};
pub use service::{Predictor, ServiceOptions, TransformerService};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

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
    },
}

/// Serialized as the reply object of one text: `{"result": [..]}` for an embedding,
/// `{"result": "<label>", "score": 0.97}` for a label (the original service's shape).
impl Serialize for Prediction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Prediction::Embedding(vector) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("result", vector)?;
                map.end()
            }
            Prediction::Label { label, score } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("result", label)?;
                map.serialize_entry("score", score)?;
                map.end()
            }
        }
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
        };
        assert_eq!(
            serde_json::to_value(&label).unwrap(),
            serde_json::json!({"result": "positive", "score": 0.75})
        );
        let embedding = Prediction::Embedding(vec![0.5, -0.25]);
        assert_eq!(
            serde_json::to_value(&embedding).unwrap(),
            serde_json::json!({"result": [0.5, -0.25]})
        );
    }
}
