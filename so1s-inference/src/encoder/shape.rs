//! [`EncoderShape`]: the shape of an encoder, from its `config.json` (a family may read other
//! names: [`Family::shape`](super::Family::shape)).

use super::family::Activation;
use so1s_core::{Error, Result};

/// The shape of a BERT-style encoder, from its `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct EncoderShape {
    /// Width of the hidden states.
    pub hidden_size: i64,
    /// Width of the token embeddings, when narrower than the hidden states (ELECTRA); they
    /// are projected up by `embeddings_project`.
    #[serde(default)]
    pub embedding_size: Option<i64>,
    /// Attention heads per layer.
    pub num_attention_heads: i64,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Positions the model has embeddings for: the longest input in tokens.
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Tokens in the vocabulary.
    #[serde(default)]
    pub vocab_size: Option<i64>,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// The feed-forward activation ([`Activation::parse`] names those so1s runs).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Only `absolute` position embeddings are supported (a family with other positions
    /// says so in its own way).
    #[serde(default = "default_position")]
    pub position_embedding_type: String,
    /// The padding token's id (RoBERTa's positions start after it).
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    /// The position of a text's first token: 0, or RoBERTa's `pad_token_id + 1`. Set by the
    /// family.
    #[serde(skip)]
    pub position_offset: i64,
    /// Whether the embeddings add absolute positions (DeBERTa-v3's do not). Set by the
    /// family.
    #[serde(skip, default = "yes")]
    pub absolute_positions: bool,
    /// Disentangled attention's settings (DeBERTa's). Set by the family.
    #[serde(skip)]
    pub disentanglement: Option<Disentanglement>,
}

/// How a DeBERTa layer's attention sees relative positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disentanglement {
    /// Relative distances embedded each way (`position_buckets`, else
    /// `max_relative_positions`): the table holds `2 · span` rows.
    pub span: i64,
    /// Log buckets of distances (`position_buckets`); 0 or less: exact distances.
    pub buckets: i64,
    /// The largest distance the buckets reach (`max_relative_positions`).
    pub max_distance: i64,
    /// `c2p`: content attends to position.
    pub content_to_position: bool,
    /// `p2c`: position attends to content.
    pub position_to_content: bool,
    /// The relative embeddings go through the layer's own key and query projections
    /// (`share_att_key`), not projections of their own.
    pub shared_key: bool,
    /// The relative embeddings are layer-normed first (`norm_rel_ebd` `layer_norm`).
    pub normalized: bool,
}

fn yes() -> bool {
    true
}

impl Default for EncoderShape {
    fn default() -> Self {
        Self {
            hidden_size: 0,
            embedding_size: None,
            num_attention_heads: 0,
            num_hidden_layers: 0,
            max_position_embeddings: None,
            vocab_size: None,
            layer_norm_eps: default_eps(),
            hidden_act: default_act(),
            position_embedding_type: default_position(),
            pad_token_id: None,
            position_offset: 0,
            absolute_positions: true,
            disentanglement: None,
        }
    }
}

fn default_eps() -> f64 {
    1e-12
}

fn default_act() -> String {
    "gelu".into()
}

fn default_position() -> String {
    "absolute".into()
}

impl EncoderShape {
    /// Whether so1s's own forward pass runs this shape: an activation it has, absolute
    /// positions, a hidden width its heads divide.
    pub fn check(&self) -> Result<()> {
        if self.activation().is_none() || self.position_embedding_type != "absolute" {
            return Err(Error::InvalidModel(format!(
                "so1s's own forward pass runs gelu, gelu_new, relu or silu and absolute \
                 positions, not {} and {}",
                self.hidden_act, self.position_embedding_type
            )));
        }
        if self.num_attention_heads <= 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::InvalidModel(format!(
                "hidden size {} is not a multiple of {} attention heads",
                self.hidden_size, self.num_attention_heads
            )));
        }
        Ok(())
    }

    /// The feed-forward activation, if so1s runs it.
    pub fn activation(&self) -> Option<Activation> {
        Activation::parse(&self.hidden_act)
    }

    /// Width of the token embeddings.
    pub fn embedding_width(&self) -> i64 {
        self.embedding_size.unwrap_or(self.hidden_size)
    }

    /// The most tokens a text may have: the position embeddings after the offset.
    pub fn max_tokens(&self) -> Option<usize> {
        self.max_position_embeddings
            .map(|p| p.saturating_sub(self.position_offset as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_read_electra_and_bert_configs() {
        let electra: EncoderShape = serde_json::from_str(
            r#"{"hidden_size": 64, "embedding_size": 32, "num_attention_heads": 4,
                "num_hidden_layers": 2, "max_position_embeddings": 128}"#,
        )
        .unwrap();
        assert_eq!(electra.embedding_width(), 32);
        assert_eq!(electra.max_position_embeddings, Some(128));
        let bert: EncoderShape = serde_json::from_str(
            r#"{"hidden_size": 48, "num_attention_heads": 4, "num_hidden_layers": 1}"#,
        )
        .unwrap();
        assert_eq!(bert.embedding_width(), 48);
        assert_eq!(bert.hidden_act, "gelu");
        assert_eq!(bert.activation(), Some(Activation::Gelu));
        let swiglu = EncoderShape {
            hidden_act: "swiglu".into(),
            ..bert
        };
        assert!(swiglu.check().unwrap_err().to_string().contains("swiglu"));
    }
}
