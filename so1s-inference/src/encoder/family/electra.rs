//! ELECTRA (`electra`, the seed's KoELECTRA sentiment model): BERT's layers, with token
//! embeddings that may be narrower than the hidden states and are then projected up, and a
//! classification head of its own.

use super::{Activation, Family, HeadNames};

/// ELECTRA's discriminator.
pub(super) struct Electra;

impl Family for Electra {
    fn model_type(&self) -> &'static str {
        "electra"
    }

    fn prefix(&self) -> &'static str {
        "electra."
    }

    fn embeddings_project(&self) -> Option<&'static str> {
        Some("embeddings_project")
    }

    /// `ElectraForSequenceClassification`: `classifier.dense` + GELU on the first token,
    /// then `classifier.out_proj`.
    fn classifier(&self) -> HeadNames {
        HeadNames {
            dense: Some(("classifier.dense", Activation::Gelu)),
            out: "classifier.out_proj",
        }
    }
}
