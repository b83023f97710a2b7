//! Tensors to predictions: rows of a tensor, a classifier's scores of its logits, a label
//! with every label's score.

use serde::Deserialize;
use so1s_core::model::{read_json, ModelLayout};
use so1s_core::predict::LabelScore;
use so1s_core::{Error, Prediction, Result};
use tch::{Kind, Tensor};

/// How a classifier's logits become scores: transformers' text-classification pipeline's
/// rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    /// A softmax over the labels: one label per text.
    Softmax,
    /// A sigmoid per label: a multi-label classifier (`problem_type`
    /// `multi_label_classification`) or one with a single label (a score, a cross-encoder).
    Sigmoid,
}

#[derive(Deserialize)]
struct ClassifierConfig {
    #[serde(default)]
    problem_type: Option<String>,
}

impl Scoring {
    /// The scoring of the classifier `layout`.
    pub fn of(layout: &ModelLayout) -> Result<Self> {
        let config: ClassifierConfig = read_json(&layout.config)?;
        let multi = config.problem_type.as_deref() == Some("multi_label_classification");
        Ok(match multi || layout.labels.len() == 1 {
            true => Scoring::Sigmoid,
            false => Scoring::Softmax,
        })
    }

    /// The scores `[batch, labels]` (f64) of `logits`.
    pub fn apply(self, logits: &Tensor) -> Tensor {
        let logits = logits.to_kind(Kind::Double);
        match self {
            Scoring::Softmax => logits.softmax(-1, Kind::Double),
            Scoring::Sigmoid => logits.sigmoid(),
        }
    }
}

/// The most likely of `labels` and every label's score.
pub(crate) fn label_prediction(labels: &[String], scores: &[f64]) -> Prediction {
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
pub(crate) fn rows<T>(tensor: Tensor, what: &str) -> Result<Vec<Vec<T>>>
where
    Vec<Vec<T>>: TryFrom<Tensor, Error = tch::TchError>,
{
    Vec::try_from(tensor).map_err(|e| Error::Inference(format!("reading {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
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
