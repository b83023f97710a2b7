//! DeBERTa-v2 and -v3 (`deberta-v2`): no absolute positions (`position_biased_input` off)
//! and no token types in v3; instead *disentangled attention*: each layer's scores add, to
//! the content–content product, content–position and position–content terms between the
//! tokens' states and the embeddings of their (log-bucketed) relative distances, projected
//! by the layer's own key and query projections. The classifier head is the `pooler.dense`
//! of the first token with GELU, then `classifier`.

use super::{Activation, EmbeddingNames, Family, HeadNames, LayerNames};
use crate::encoder::{Disentanglement, EncoderShape};
use serde::Deserialize;
use so1s_core::model::read_json;
use so1s_core::{Error, Result};
use std::path::Path;

/// DeBERTa-v2 (and v3, which shares its model type).
pub(super) struct DebertaV2;

/// `DebertaV2Config`'s names beyond BERT's.
#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    relative_attention: bool,
    #[serde(default = "minus_one")]
    max_relative_positions: i64,
    #[serde(default = "minus_one")]
    position_buckets: i64,
    #[serde(default)]
    pos_att_type: Vec<String>,
    #[serde(default)]
    share_att_key: bool,
    #[serde(default = "yes")]
    position_biased_input: bool,
    #[serde(default)]
    norm_rel_ebd: String,
    #[serde(default)]
    conv_kernel_size: i64,
    #[serde(default)]
    pooler_hidden_act: Option<String>,
    #[serde(default)]
    pooler_hidden_size: Option<i64>,
    #[serde(default)]
    attention_head_size: Option<i64>,
}

fn minus_one() -> i64 {
    -1
}

fn yes() -> bool {
    true
}

impl Family for DebertaV2 {
    fn model_type(&self) -> &'static str {
        "deberta-v2"
    }

    fn prefix(&self) -> &'static str {
        "deberta."
    }

    fn shape(&self, path: &Path) -> Result<EncoderShape> {
        let mut shape: EncoderShape = read_json(path)?;
        let config: Config = read_json(path)?;
        let refuse = |what: String| {
            Err(Error::InvalidModel(format!(
                "so1s's DeBERTa runs the v2/v3 models of the hub; this one has {what}"
            )))
        };
        if config.conv_kernel_size > 0 {
            return refuse(format!(
                "a convolution layer (conv_kernel_size {})",
                config.conv_kernel_size
            ));
        }
        if config.pooler_hidden_act.as_deref().unwrap_or("gelu") != "gelu"
            || config
                .pooler_hidden_size
                .is_some_and(|s| s != shape.hidden_size)
        {
            return refuse("a pooler other than a hidden-wide GELU layer".into());
        }
        if config
            .attention_head_size
            .is_some_and(|s| s * shape.num_attention_heads != shape.hidden_size)
        {
            return refuse("attention heads narrower than the hidden states".into());
        }
        shape.absolute_positions = config.position_biased_input;
        if config.relative_attention {
            let max_distance = match config.max_relative_positions {
                d if d < 1 => shape.max_position_embeddings.unwrap_or(512) as i64,
                d => d,
            };
            let span = match config.position_buckets {
                b if b > 0 => b,
                _ => max_distance,
            };
            let has = |kind: &str| config.pos_att_type.iter().any(|t| t == kind);
            shape.disentanglement = Some(Disentanglement {
                span,
                buckets: config.position_buckets,
                max_distance,
                content_to_position: has("c2p"),
                position_to_content: has("p2c"),
                shared_key: config.share_att_key,
                normalized: config.norm_rel_ebd.contains("layer_norm"),
            });
        }
        shape.check()?;
        Ok(shape)
    }

    fn embeddings(&self) -> EmbeddingNames {
        EmbeddingNames {
            word: "embeddings.word_embeddings",
            position: Some("embeddings.position_embeddings"),
            token_type: Some("embeddings.token_type_embeddings"),
            norm: "embeddings.LayerNorm",
        }
    }

    fn layer(&self, i: usize) -> LayerNames {
        let p = format!("encoder.layer.{i}");
        LayerNames {
            query: format!("{p}.attention.self.query_proj"),
            key: format!("{p}.attention.self.key_proj"),
            value: format!("{p}.attention.self.value_proj"),
            attention_output: format!("{p}.attention.output.dense"),
            attention_norm: format!("{p}.attention.output.LayerNorm"),
            intermediate: format!("{p}.intermediate.dense"),
            output: format!("{p}.output.dense"),
            output_norm: format!("{p}.output.LayerNorm"),
            position_key: Some(format!("{p}.attention.self.pos_key_proj")),
            position_query: Some(format!("{p}.attention.self.pos_query_proj")),
        }
    }

    fn relative_embeddings(&self) -> Option<(&'static str, Option<&'static str>)> {
        Some(("encoder.rel_embeddings", Some("encoder.LayerNorm")))
    }

    /// `DebertaV2ForSequenceClassification`: the `ContextPooler` (`pooler.dense` + GELU on
    /// the first token), then `classifier`.
    fn classifier(&self) -> HeadNames {
        HeadNames {
            dense: Some(("pooler.dense", Activation::Gelu)),
            out: "classifier",
        }
    }
}
