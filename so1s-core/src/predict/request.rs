//! The predict request body and its validation.

use crate::{Error, Result};
use serde::Deserialize;

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
}
