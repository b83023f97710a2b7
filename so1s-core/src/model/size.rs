//! Does `config.json` describe the model the weights hold? Checked before anything loads.
//!
//! Loading allocates every tensor `config.json` describes before the weights are read: a
//! config claiming 5000 layers asks for tens of GiB. The parameter count the config implies
//! (BERT-family formula) is compared with the count in the weights file (the safetensors
//! header, exact; a `.ot` file, its size over 4 bytes per f32): a config that describes far
//! more than the weights hold is refused with both numbers.

use super::{Architecture, ModelLayout};
use crate::{Error, Result};
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// Largest safetensors header read (the format's own limit is 100 MB).
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// How much more than the weights hold a config may describe: heads, poolers and tied
/// embeddings make the two differ a little, never by half.
const TOLERANCE: f64 = 1.5;

/// Parameters the config describes, for the BERT-family encoders so1s loads.
pub fn config_parameters(config: &Value, architecture: Architecture) -> u64 {
    let get = |key: &str, default: u64| config.get(key).and_then(Value::as_u64).unwrap_or(default);
    // Every product saturates: a hostile config must not overflow into a small number.
    let layer = |h: u64, i: u64| {
        4u64.saturating_mul(h.saturating_mul(h))
            .saturating_add(2u64.saturating_mul(h.saturating_mul(i)))
            .saturating_add(9u64.saturating_mul(h))
            .saturating_add(i)
    };
    let embeddings = |v: u64, p: u64, t: u64, e: u64| {
        v.saturating_add(p)
            .saturating_add(t)
            .saturating_mul(e)
            .saturating_add(2u64.saturating_mul(e))
    };
    match architecture {
        Architecture::DistilBert => {
            let (h, i) = (get("dim", 768), get("hidden_dim", 3072));
            embeddings(
                get("vocab_size", 30_522),
                get("max_position_embeddings", 512),
                0,
                h,
            )
            .saturating_add(get("n_layers", 6).saturating_mul(layer(h, i)))
        }
        Architecture::Albert => {
            let (h, e) = (get("hidden_size", 4096), get("embedding_size", 128));
            let i = get("intermediate_size", h.saturating_mul(4));
            let shared = get("num_hidden_groups", 1).saturating_mul(get("inner_group_num", 1));
            embeddings(
                get("vocab_size", 30_000),
                get("max_position_embeddings", 512),
                get("type_vocab_size", 2),
                e,
            )
            .saturating_add(e.saturating_mul(h).saturating_add(h))
            .saturating_add(shared.saturating_mul(layer(h, i)))
        }
        Architecture::Electra => {
            let (h, e) = (get("hidden_size", 256), get("embedding_size", 128));
            let i = get("intermediate_size", 1024);
            let project = match e == h {
                true => 0,
                false => e.saturating_mul(h).saturating_add(h),
            };
            embeddings(
                get("vocab_size", 30_522),
                get("max_position_embeddings", 512),
                get("type_vocab_size", 2),
                e,
            )
            .saturating_add(project)
            .saturating_add(get("num_hidden_layers", 12).saturating_mul(layer(h, i)))
        }
        Architecture::Bert
        | Architecture::Roberta
        | Architecture::XlmRoberta
        | Architecture::Camembert
        | Architecture::Mpnet
        | Architecture::DebertaV2 => {
            let h = get("hidden_size", 768);
            let i = get("intermediate_size", h.saturating_mul(4));
            embeddings(
                get("vocab_size", 30_522),
                get("max_position_embeddings", 512),
                get("type_vocab_size", 2),
                h,
            )
            .saturating_add(get("num_hidden_layers", 12).saturating_mul(layer(h, i)))
        }
    }
}

/// Parameters in a weights file, read without loading it.
pub fn weight_parameters(path: &Path) -> Result<u64> {
    let io = |source| Error::ModelFile {
        path: path.to_owned(),
        source,
    };
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    if !is_safetensors {
        // rust-bert's .ot: f32 tensors and a little framing.
        return Ok(std::fs::metadata(path).map_err(io)?.len() / 4);
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).map_err(io)?;
    let length = u64::from_le_bytes(length);
    if length > MAX_HEADER_BYTES {
        return Err(Error::InvalidModel(format!(
            "{} claims a {length}-byte header; safetensors allows {MAX_HEADER_BYTES}",
            file_name(path)
        )));
    }
    let mut header = Vec::with_capacity(length as usize);
    file.take(length).read_to_end(&mut header).map_err(io)?;
    let header: Value = serde_json::from_slice(&header).map_err(|e| {
        Error::InvalidModel(format!("{} has no valid header: {e}", file_name(path)))
    })?;
    let tensors = header.as_object().ok_or_else(|| {
        Error::InvalidModel(format!("{}'s header is not a JSON object", file_name(path)))
    })?;
    Ok(tensors
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(_, tensor)| tensor.get("shape")?.as_array())
        .map(|shape| {
            shape
                .iter()
                .map(|d| d.as_u64().unwrap_or(0))
                .fold(1u64, u64::saturating_mul)
        })
        .fold(0u64, u64::saturating_add))
}

/// Refuses a model whose `config.json` describes far more parameters than its weights hold.
pub fn check_config_matches_weights(layout: &ModelLayout) -> Result<()> {
    let config: Value = super::read_json(&layout.config)?;
    let described = config_parameters(&config, layout.architecture);
    let held = super::weight_files(&layout.weights)?
        .iter()
        .map(|file| weight_parameters(file))
        .try_fold(0u64, |sum, n| n.map(|n| sum.saturating_add(n)))?;
    if described as f64 > held as f64 * TOLERANCE + 1e6 {
        return Err(Error::InvalidModel(format!(
            "config.json describes about {} parameters but {} holds {}: the config does not \
             match the weights (nothing was loaded)",
            millions(described),
            file_name(&layout.weights),
            millions(held)
        )));
    }
    Ok(())
}

fn millions(n: u64) -> String {
    format!("{:.1}M", n as f64 / 1e6)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// MiniLM-L6's shape: 22.7M parameters in its safetensors file.
    fn minilm() -> Value {
        json!({
            "model_type": "bert", "hidden_size": 384, "intermediate_size": 1536,
            "num_hidden_layers": 6, "vocab_size": 30522, "max_position_embeddings": 512,
            "type_vocab_size": 2
        })
    }

    #[test]
    fn the_bert_formula_matches_a_known_model() {
        let n = config_parameters(&minilm(), Architecture::Bert);
        // 22,565,376; the file holds 22,713,216 with the pooler.
        assert!((22_500_000..22_900_000).contains(&n), "{n}");
    }

    #[test]
    fn hostile_configs_saturate_instead_of_wrapping() {
        let mut config = minilm();
        config["hidden_size"] = json!(u64::MAX / 2);
        assert_eq!(config_parameters(&config, Architecture::Bert), u64::MAX);
        config["num_hidden_layers"] = json!(5000);
        config["hidden_size"] = json!(384);
        assert!(config_parameters(&config, Architecture::Bert) > 8_000_000_000);
    }

    #[test]
    fn safetensors_headers_are_counted_without_reading_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let header = json!({
            "__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
            "b": {"dtype": "F32", "shape": [5], "data_offsets": [48, 68]}
        })
        .to_string();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend([0u8; 68]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(weight_parameters(&path).unwrap(), 17);
        // A header that claims a gigabyte is refused before it is read.
        let mut lying = (1u64 << 30).to_le_bytes().to_vec();
        lying.extend(b"{}");
        std::fs::write(&path, &lying).unwrap();
        let err = weight_parameters(&path).unwrap_err();
        assert!(err.to_string().contains("header"), "{err}");
    }
}
