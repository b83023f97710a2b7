//! BERT (`bert`): MiniLM and most sentence-transformers models, BERT classifiers. The
//! encoder's defaults are BERT's: post-norm layers, absolute positions, token types.

use super::{Activation, Family, HeadNames};

/// BERT.
pub(super) struct Bert;

impl Family for Bert {
    fn model_type(&self) -> &'static str {
        "bert"
    }

    fn prefix(&self) -> &'static str {
        "bert."
    }

    /// `BertForSequenceClassification`: the pooler (dense + tanh), then `classifier`.
    fn classifier(&self) -> HeadNames {
        HeadNames {
            dense: Some(("pooler.dense", Activation::Tanh)),
            out: "classifier",
        }
    }
}
