//! The model families so1s's own encoder runs, behind one trait, [`Family`]: each family is
//! one file that knows its `config.json`, its weights' names and its forward quirks, so that
//! the next family is one more such file and [`of`] one more line.
//!
//! The encoder ([`Encoder`](super::Encoder)) is the shared part: packed tokens, the linear
//! layers in f32, bf16 or int8, the attention, the passes. A family says where its weights
//! are and what differs.

mod bert;
mod deberta;
mod distilbert;
mod electra;
mod mpnet;
mod roberta;

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

    /// The encoder's shape from `config.json` (BERT's names by default), checked for what
    /// the encoder runs.
    fn shape(&self, config: &Path) -> Result<EncoderShape> {
        let shape: EncoderShape = read_json(config)?;
        shape.check()?;
        Ok(shape)
    }

    /// The names of the embedding tables and their layer norm: BERT's by default.
    fn embeddings(&self) -> EmbeddingNames {
        EmbeddingNames {
            word: "embeddings.word_embeddings",
            position: Some("embeddings.position_embeddings"),
            token_type: Some("embeddings.token_type_embeddings"),
            norm: "embeddings.LayerNorm",
        }
    }

    /// The table of relative position biases the attention adds, one per bucket and head
    /// (MPNet's), if the family has one.
    fn relative_attention_bias(&self) -> Option<&'static str> {
        None
    }

    /// The relative position embeddings of disentangled attention and their layer norm
    /// (DeBERTa's), if the family has them.
    fn relative_embeddings(&self) -> Option<(&'static str, Option<&'static str>)> {
        None
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
            ..LayerNames::default()
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
const FAMILIES: [(Architecture, &dyn Family); 8] = [
    (Architecture::Bert, &bert::Bert),
    (Architecture::DistilBert, &distilbert::DistilBert),
    (Architecture::Roberta, &roberta::ROBERTA),
    (Architecture::XlmRoberta, &roberta::XLM_ROBERTA),
    (Architecture::Camembert, &roberta::CAMEMBERT),
    (Architecture::Electra, &electra::Electra),
    (Architecture::Mpnet, &mpnet::Mpnet),
    (Architecture::DebertaV2, &deberta::DebertaV2),
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

/// The names of the embedding tables (each a `.weight`) and of their layer norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingNames {
    /// The token embeddings.
    pub word: &'static str,
    /// The absolute position embeddings, if the family has them.
    pub position: Option<&'static str>,
    /// The token type (segment) embeddings, if the family has them.
    pub token_type: Option<&'static str>,
    /// The layer norm over their sum.
    pub norm: &'static str,
}

/// The names of one transformer layer's weights, each the prefix of a `.weight` and a
/// `.bias`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Disentangled attention's own projections of the relative embeddings, when the layer
    /// does not share its key and query projections with them (DeBERTa's `pos_key_proj`,
    /// `pos_query_proj`).
    pub position_key: Option<String>,
    /// See [`LayerNames::position_key`].
    pub position_query: Option<String>,
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

/// An activation: of the feed-forward layers (`hidden_act`) or of a head's dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// BERT's pooler's, RoBERTa's head's.
    Tanh,
    /// Exact GELU (`gelu`; ELECTRA's head).
    Gelu,
    /// GELU's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// `relu` (DistilBERT's classifier head).
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    /// The activation of a config's `hidden_act` (or DistilBERT's `activation`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            "tanh" => Activation::Tanh,
            _ => return None,
        })
    }

    /// Applies it.
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Tanh => x.tanh(),
            Activation::Gelu => x.gelu("none"),
            Activation::GeluTanh => x.gelu("tanh"),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_their_names_and_the_others_are_not_yet() {
        assert_eq!(
            supported(),
            [
                "bert",
                "distilbert",
                "roberta",
                "xlm-roberta",
                "camembert",
                "electra",
                "mpnet",
                "deberta-v2"
            ]
        );
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
