//! The predict request body and its validation.

use super::Prediction;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// `POST /predict` body: one text or a list of texts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// One text; the reply is one prediction object.
    pub text: Option<String>,
    /// Several texts; the reply is `{"results": [...]}` in the same order.
    pub texts: Option<Vec<String>>,
    /// For a classifier: every label's score in each prediction (`"scores"`), not only the
    /// most likely label's.
    #[serde(default)]
    pub all_scores: bool,
}

/// `POST /rerank` body (text-embeddings-inference's shape): a query and the texts to order
/// by their relevance to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankRequest {
    /// What the texts are scored against.
    pub query: String,
    /// The texts to rank.
    pub texts: Vec<String>,
    /// The model's raw scores (logits) instead of their sigmoid.
    #[serde(default)]
    pub raw_scores: bool,
    /// Each ranked text in the reply beside its index.
    #[serde(default)]
    pub return_text: bool,
    /// Accepted for TEI's clients: so1s always truncates at the model's length.
    #[serde(default)]
    pub truncate: Option<bool>,
}

/// One ranked text of a `/rerank` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// The text's position in the request's `texts`.
    pub index: usize,
    /// Its relevance: the sigmoid of the model's score, or the score itself with
    /// `raw_scores`.
    pub score: f64,
    /// The text, with `return_text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl RerankRequest {
    /// The request checked against `limits` (the query and every text): empty `texts` is an
    /// invalid input.
    pub fn check(&self, limits: &InputLimits) -> Result<()> {
        if self.texts.is_empty() {
            return Err(Error::InvalidInput(
                "`texts` is empty: nothing to rank".into(),
            ));
        }
        limits.check(std::slice::from_ref(&self.query), |_| "`query`".into())?;
        limits.check(&self.texts, |i| format!("`texts[{i}]`"))
    }

    /// The texts ranked by `relevance` (one [`Prediction::Relevance`] per text, in order),
    /// most relevant first.
    pub fn rank(self, relevance: Vec<Prediction>) -> Result<Vec<Ranked>> {
        if relevance.len() != self.texts.len() {
            return Err(Error::Inference(format!(
                "the model scored {} of {} texts",
                relevance.len(),
                self.texts.len()
            )));
        }
        let mut ranked = Vec::with_capacity(self.texts.len());
        for (index, (text, prediction)) in self.texts.into_iter().zip(relevance).enumerate() {
            let Prediction::Relevance { score, logit } = prediction else {
                return Err(Error::InvalidInput(
                    "this model is no reranker (cross-encoder): POST /predict instead".into(),
                ));
            };
            ranked.push(Ranked {
                index,
                score: if self.raw_scores { logit } else { score },
                text: self.return_text.then_some(text),
            });
        }
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        Ok(ranked)
    }
}

/// Bounds on what one request may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Longest text in characters. Token sequences beyond the model's maximum length are
    /// truncated; this bound only stops absurd inputs before tokenization.
    pub max_input_chars: usize,
    /// Most texts in one request.
    pub max_texts: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_input_chars: 20_000,
            max_texts: 256,
        }
    }
}

impl InputLimits {
    /// Checks texts against the limits: how many, none blank, none too long. `which(i)` names
    /// the `i`th text in errors.
    pub fn check(&self, texts: &[String], which: impl Fn(usize) -> String) -> Result<()> {
        if texts.len() > self.max_texts {
            return Err(Error::InvalidInput(format!(
                "{} texts in one request; the limit is {}",
                texts.len(),
                self.max_texts
            )));
        }
        for (i, text) in texts.iter().enumerate() {
            if text.trim().is_empty() {
                return Err(Error::InvalidInput(format!("{} is empty", which(i))));
            }
            let chars = text.chars().count();
            if chars > self.max_input_chars {
                return Err(Error::InvalidInput(format!(
                    "{} has {chars} characters; the limit is {}",
                    which(i),
                    self.max_input_chars
                )));
            }
        }
        Ok(())
    }
}

impl PredictRequest {
    /// Checks the request against the limits and returns its texts, and whether the request
    /// was for a single text.
    pub fn into_texts(self, limits: &InputLimits) -> Result<(Vec<String>, bool)> {
        let (texts, single) = match (self.text, self.texts) {
            (Some(text), None) => (vec![text], true),
            (None, Some(texts)) => (texts, false),
            (Some(_), Some(_)) => {
                return Err(Error::InvalidInput(
                    "give either `text` or `texts`, not both".into(),
                ))
            }
            (None, None) => {
                return Err(Error::InvalidInput(
                    "the body needs `text` (a string) or `texts` (a list of strings)".into(),
                ))
            }
        };
        if texts.is_empty() {
            return Err(Error::InvalidInput("`texts` is empty".into()));
        }
        limits.check(&texts, |i| {
            if single {
                "`text`".to_owned()
            } else {
                format!("`texts[{i}]`")
            }
        })?;
        Ok((texts, single))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<(Vec<String>, bool)> {
        let limits = InputLimits {
            max_input_chars: 10,
            max_texts: 2,
        };
        serde_json::from_str::<PredictRequest>(json)
            .unwrap()
            .into_texts(&limits)
    }

    #[test]
    fn accepts_text_and_texts() {
        assert_eq!(
            parse(r#"{"text": "hi"}"#).unwrap(),
            (vec!["hi".into()], true)
        );
        assert_eq!(
            parse(r#"{"texts": ["a", "b"]}"#).unwrap(),
            (vec!["a".into(), "b".into()], false)
        );
        let request: PredictRequest =
            serde_json::from_str(r#"{"text": "a", "all_scores": true}"#).unwrap();
        assert!(request.all_scores);
        let request: PredictRequest = serde_json::from_str(r#"{"text": "a"}"#).unwrap();
        assert!(!request.all_scores);
    }

    #[test]
    fn rejects_empty_long_and_ambiguous_input() {
        for (json, expected) in [
            (r#"{"text": "  "}"#, "`text` is empty"),
            (r#"{"texts": []}"#, "`texts` is empty"),
            (r#"{"texts": ["a", ""]}"#, "`texts[1]` is empty"),
            (
                r#"{"text": "ééééééééééé"}"#,
                "11 characters; the limit is 10",
            ),
            (r#"{"texts": ["a", "b", "c"]}"#, "3 texts"),
            (r#"{"text": "a", "texts": ["b"]}"#, "not both"),
            (r#"{}"#, "needs `text`"),
        ] {
            let err = parse(json).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{json}: {err:?}");
            assert!(err.to_string().contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<PredictRequest>(r#"{"txt": "a"}"#).is_err());
    }

    #[test]
    fn reranked_texts_come_most_relevant_first_with_their_index() {
        let request: RerankRequest = serde_json::from_str(
            r#"{"query": "q", "texts": ["a", "b", "c"], "return_text": true}"#,
        )
        .unwrap();
        let limits = InputLimits {
            max_input_chars: 10,
            max_texts: 3,
        };
        request.check(&limits).unwrap();
        let relevance = |score: f64, logit: f64| Prediction::Relevance { score, logit };
        let scores = vec![
            relevance(0.2, -1.4),
            relevance(0.9, 2.2),
            relevance(0.5, 0.0),
        ];
        let ranked = request.clone().rank(scores.clone()).unwrap();
        let order: Vec<(usize, f64, Option<&str>)> = ranked
            .iter()
            .map(|r| (r.index, r.score, r.text.as_deref()))
            .collect();
        assert_eq!(
            order,
            [
                (1, 0.9, Some("b")),
                (2, 0.5, Some("c")),
                (0, 0.2, Some("a"))
            ]
        );
        let raw = RerankRequest {
            raw_scores: true,
            return_text: false,
            ..request.clone()
        };
        let ranked = raw.rank(scores).unwrap();
        assert_eq!((ranked[0].score, ranked[0].text.clone()), (2.2, None));
        assert!(request.clone().rank(vec![relevance(0.1, 0.0)]).is_err());
        let too_many = InputLimits {
            max_input_chars: 10,
            max_texts: 2,
        };
        assert!(request.check(&too_many).is_err());
        let empty: RerankRequest = serde_json::from_str(r#"{"query": "q", "texts": []}"#).unwrap();
        assert!(empty.check(&limits).is_err());
    }
}
