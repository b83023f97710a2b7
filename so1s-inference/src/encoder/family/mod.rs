//! The model families so1s's own encoder runs, behind one trait, [`Family`]: each family is
//! one file that knows its `config.json`, its weights' names and its forward quirks, so that
//! the next family is one more such file and [`of`] one more line.
//!
//! The encoder ([`Encoder`](super::Encoder)) is the shared part: packed tokens, the linear
//! layers in f32, bf16 or int8, the attention, the passes. A family says where its weights
//! are and what differs.

mod bert;
mod electra;

use super::EncoderShape;
use so1s_core::model::{read_json, Architecture};
use so1s_core::Result;
use std::path::Path;
use tch::Tensor;

/// A model family of so1s's own encoder (`config.json`'s `model_type`).
pub trait Family: Sync {
    /// Its `model_type`.
    fn model_type(&self) -> &'static str;

    /// What precedes the encoder's weights in a task model's checkpoint (`bert.` in
    /// `BertForSequenceClassification`'s); a bare encoder's (a sentence-transformers model)
    /// has none. The heads' names have none either.
    fn prefix(&self) -> &'static str;

    /// The encoder's shape from `config.json`, checked for what the encoder runs.
    fn shape(&self, config: &Path) -> Result<EncoderShape> {
        let shape: EncoderShape = read_json(config)?;
        shape.check()?;
        Ok(shape)
    }

    /// The names of layer `i`'s weights: BERT's by default.
    fn layer(&self, i: usize) -> LayerNames {
        let p = format!("encoder.layer.{i}");
        LayerNames {
            query: format!("{p}.attention.self.query"),
            key: format!("{p}.attention.self.key"),
            value: format!("{p}.attention.self.value"),
            attention_output: format!("{p}.attention.output.dense"),
            attention_norm: format!("{p}.attention.output.LayerNorm"),
            intermediate: format!("{p}.intermediate.dense"),
            output: format!("{p}.output.dense"),
            output_norm: format!("{p}.output.LayerNorm"),
        }
    }

    /// The layer that projects narrow token embeddings up to the hidden width, when the
    /// config makes them narrower (ELECTRA's `embeddings_project`).
    fn embeddings_project(&self) -> Option<&'static str> {
        None
    }

    /// The head of the family's `*ForSequenceClassification` on the first token.
    fn classifier(&self) -> HeadNames;
}

/// The families so1s's own encoder runs, by architecture: a new family is one more line.
const FAMILIES: [(Architecture, &dyn Family); 2] = [
    (Architecture::Bert, &bert::Bert),
    (Architecture::Electra, &electra::Electra),
];

/// The family of `architecture`, if so1s's own encoder runs it.
pub fn of(architecture: Architecture) -> Option<&'static dyn Family> {
    FAMILIES
        .iter()
        .find(|(known, _)| *known == architecture)
        .map(|&(_, family)| family)
}

/// The model types of the families, for the message that refuses the others.
pub fn supported() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .map(|(_, family)| family.model_type())
        .collect()
}

/// The names of one transformer layer's weights, each the prefix of a `.weight` and a
/// `.bias`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerNames {
    /// The attention's query projection.
    pub query: String,
    /// Its key projection.
    pub key: String,
    /// Its value projection.
    pub value: String,
    /// The projection of the attention's output.
    pub attention_output: String,
    /// The layer norm after the attention's residual sum.
    pub attention_norm: String,
    /// The feed-forward's widening layer.
    pub intermediate: String,
    /// The feed-forward's output projection.
    pub output: String,
    /// The layer norm after the feed-forward's residual sum.
    pub output_norm: String,
}

/// A sequence classifier's head on the first token's state: a dense layer and its
/// activation, if the family has one, then the layer that makes one logit per label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadNames {
    /// The dense layer and its activation (BERT's pooler).
    pub dense: Option<(&'static str, Activation)>,
    /// The output layer.
    pub out: &'static str,
}

/// An activation of a head's dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// BERT's pooler's.
    Tanh,
    /// Exact GELU (ELECTRA's head).
    Gelu,
}

impl Activation {
    /// Applies it.
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Tanh => x.tanh(),
            Activation::Gelu => x.gelu("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bert_and_electra_are_families_and_the_others_are_not_yet() {
        assert_eq!(supported(), ["bert", "electra"]);
        assert!(of(Architecture::Albert).is_none());
        let electra = of(Architecture::Electra).unwrap();
        assert_eq!(electra.prefix(), "electra.");
        assert_eq!(electra.embeddings_project(), Some("embeddings_project"));
        let bert = of(Architecture::Bert).unwrap();
        assert_eq!(bert.embeddings_project(), None);
        assert_eq!(bert.layer(3).query, "encoder.layer.3.attention.self.query");
        assert_eq!(
            bert.classifier().dense,
            Some(("pooler.dense", Activation::Tanh))
        );
    }
}
