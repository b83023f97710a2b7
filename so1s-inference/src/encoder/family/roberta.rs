//! RoBERTa and its kin, XLM-RoBERTa and CamemBERT (`roberta`, `xlm-roberta`, `camembert`):
//! BERT's layers under the `roberta.` prefix, positions that start after the padding index,
//! and a classifier head of `classifier.dense` + tanh and `classifier.out_proj`.

use super::{Activation, Family, HeadNames};
use crate::encoder::EncoderShape;
use so1s_core::model::read_json;
use so1s_core::Result;
use std::path::Path;

/// A RoBERTa-style family, by its `model_type`.
pub(super) struct Roberta {
    model_type: &'static str,
}

/// RoBERTa.
pub(super) const ROBERTA: Roberta = Roberta {
    model_type: "roberta",
};
/// XLM-RoBERTa (multilingual-e5, the BGE-M3 encoder, XLM-R classifiers).
pub(super) const XLM_ROBERTA: Roberta = Roberta {
    model_type: "xlm-roberta",
};
/// CamemBERT.
pub(super) const CAMEMBERT: Roberta = Roberta {
    model_type: "camembert",
};

impl Family for Roberta {
    fn model_type(&self) -> &'static str {
        self.model_type
    }

    fn prefix(&self) -> &'static str {
        "roberta."
    }

    /// BERT's config, with positions counted from `pad_token_id + 1`.
    fn shape(&self, config: &Path) -> Result<EncoderShape> {
        let mut shape: EncoderShape = read_json(config)?;
        shape.position_offset = shape.pad_token_id.unwrap_or(1) + 1;
        shape.check()?;
        Ok(shape)
    }

    /// `RobertaForSequenceClassification`: `classifier.dense` + tanh on the first token,
    /// then `classifier.out_proj`.
    fn classifier(&self) -> HeadNames {
        HeadNames {
            dense: Some(("classifier.dense", Activation::Tanh)),
            out: "classifier.out_proj",
        }
    }
}
