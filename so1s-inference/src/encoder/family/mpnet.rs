//! MPNet (`mpnet`: all-mpnet-base-v2 and its kin): BERT's layers under other names, no token
//! types, positions after the padding index as RoBERTa's, and a relative position bias added
//! to every layer's attention scores (one learned value per head and distance bucket, the
//! buckets as T5's: exact up to 8 tokens apart, logarithmic up to 128, by direction).

use super::{Activation, EmbeddingNames, Family, HeadNames, LayerNames};
use crate::encoder::EncoderShape;
use so1s_core::model::read_json;
use so1s_core::Result;
use std::path::Path;

/// MPNet.
pub(super) struct Mpnet;

impl Family for Mpnet {
    fn model_type(&self) -> &'static str {
        "mpnet"
    }

    fn prefix(&self) -> &'static str {
        "mpnet."
    }

    fn shape(&self, config: &Path) -> Result<EncoderShape> {
        let mut shape: EncoderShape = read_json(config)?;
        shape.position_offset = shape.pad_token_id.unwrap_or(1) + 1;
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
        let p = format!("encoder.layer.{i}");
        LayerNames {
            query: format!("{p}.attention.attn.q"),
            key: format!("{p}.attention.attn.k"),
            value: format!("{p}.attention.attn.v"),
            attention_output: format!("{p}.attention.attn.o"),
            attention_norm: format!("{p}.attention.LayerNorm"),
            intermediate: format!("{p}.intermediate.dense"),
            output: format!("{p}.output.dense"),
            output_norm: format!("{p}.output.LayerNorm"),
            ..LayerNames::default()
        }
    }

    fn relative_attention_bias(&self) -> Option<&'static str> {
        Some("encoder.relative_attention_bias")
    }

    /// `MPNetForSequenceClassification`: `classifier.dense` + tanh on the first token, then
    /// `classifier.out_proj`.
    fn classifier(&self) -> HeadNames {
        HeadNames {
            dense: Some(("classifier.dense", Activation::Tanh)),
            out: "classifier.out_proj",
        }
    }
}
