//! DistilBERT (`distilbert`): BERT's layers under other names and config keys (`dim`,
//! `n_heads`, `n_layers`, `hidden_dim`, `activation`), no token types, and a classifier head
//! of `pre_classifier` + ReLU.

use super::{Activation, EmbeddingNames, Family, HeadNames, LayerNames};
use crate::encoder::EncoderShape;
use serde::Deserialize;
use so1s_core::model::read_json;
use so1s_core::Result;
use std::path::Path;

/// DistilBERT.
pub(super) struct DistilBert;

/// `DistilBertConfig`'s names.
#[derive(Deserialize)]
struct Config {
    dim: i64,
    n_heads: i64,
    n_layers: usize,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    vocab_size: Option<i64>,
    #[serde(default = "gelu")]
    activation: String,
}

fn gelu() -> String {
    "gelu".into()
}

impl Family for DistilBert {
    fn model_type(&self) -> &'static str {
        "distilbert"
    }

    fn prefix(&self) -> &'static str {
        "distilbert."
    }

    /// DistilBERT's layer norms are fixed at ε = 1e-12 (its config has none).
    fn shape(&self, config: &Path) -> Result<EncoderShape> {
        let config: Config = read_json(config)?;
        let shape = EncoderShape {
            hidden_size: config.dim,
            num_attention_heads: config.n_heads,
            num_hidden_layers: config.n_layers,
            max_position_embeddings: config.max_position_embeddings,
            vocab_size: config.vocab_size,
            layer_norm_eps: 1e-12,
            hidden_act: config.activation,
            ..EncoderShape::default()
        };
        shape.check()?;
        Ok(shape)
    }

    fn embeddings(&self) -> EmbeddingNames {
        EmbeddingNames {
            word: "embeddings.word_embeddings",
            position: Some("embeddings.position_embeddings"),
            token_type: None,
            norm: "embeddings.LayerNorm",
        }
    }

    fn layer(&self, i: usize) -> LayerNames {
        let p = format!("transformer.layer.{i}");
        LayerNames {
            query: format!("{p}.attention.q_lin"),
            key: format!("{p}.attention.k_lin"),
            value: format!("{p}.attention.v_lin"),
            attention_output: format!("{p}.attention.out_lin"),
            attention_norm: format!("{p}.sa_layer_norm"),
            intermediate: format!("{p}.ffn.lin1"),
            output: format!("{p}.ffn.lin2"),
            output_norm: format!("{p}.output_layer_norm"),
            ..LayerNames::default()
        }
    }

    /// `DistilBertForSequenceClassification`: `pre_classifier` + ReLU on the first token,
    /// then `classifier`.
    fn classifier(&self) -> HeadNames {
        HeadNames {
            dense: Some(("pre_classifier", Activation::Relu)),
            out: "classifier",
        }
    }
}
