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
    let data = std::fs::metadata(path)
        .map_err(io)?
        .len()
        .saturating_sub(8 + length);
    let mut parameters = 0u64;
    for (name, tensor) in tensors.iter().filter(|(name, _)| *name != "__metadata__") {
        let elements = checked_tensor(tensor, data).map_err(|why| {
            Error::InvalidModel(format!(
                "{}: tensor `{name}` {why}: the header does not describe the data (nothing \
                 was loaded)",
                file_name(path)
            ))
        })?;
        parameters = parameters.saturating_add(elements);
    }
    Ok(parameters)
}

/// The elements of one safetensors tensor, checked against the data it claims: its dtype is
/// known, its shape's size in bytes is what its `data_offsets` span, and they lie within the
/// `data` bytes after the header.
fn checked_tensor(tensor: &Value, data: u64) -> std::result::Result<u64, String> {
    let dtype = tensor["dtype"].as_str().ok_or("has no dtype")?;
    let width: u64 = match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        other => return Err(format!("has an unknown dtype {other}")),
    };
    let shape = tensor["shape"].as_array().ok_or("has no shape")?;
    let elements = shape.iter().try_fold(1u64, |n, d| {
        d.as_u64()
            .and_then(|d| n.checked_mul(d))
            .ok_or("has a shape that is not a size")
    })?;
    let bytes = elements
        .checked_mul(width)
        .ok_or("has a shape too large for any file")?;
    let offsets = tensor["data_offsets"]
        .as_array()
        .ok_or("has no data_offsets")?;
    let (start, end) = match offsets.as_slice() {
        [start, end] => (start.as_u64(), end.as_u64()),
        _ => (None, None),
    };
    let (Some(start), Some(end)) = (start, end) else {
        return Err("has data_offsets that are not [start, end]".into());
    };
    if end < start || end - start != bytes {
        return Err(format!(
            "claims {elements} {dtype} values ({bytes} bytes) in {} bytes of data",
            end.saturating_sub(start)
        ));
    }
    if end > data {
        return Err(format!(
            "ends at byte {end} of the data, which has {data} bytes"
        ));
    }
    Ok(elements)
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

    /// A safetensors file of `tensors` (name, dtype, shape, offsets) and `data` bytes.
    fn safetensors(path: &Path, tensors: Value, data: usize) {
        let header = tensors.to_string();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(vec![0u8; data]);
        std::fs::write(path, &bytes).unwrap();
    }

    #[test]
    fn a_header_whose_sizes_do_not_match_the_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let ok = json!({"a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}});
        safetensors(&path, ok, 12);
        assert_eq!(weight_parameters(&path).unwrap(), 6);
        for (tensors, data, says) in [
            // 1e15 elements in zero bytes: the header lies about the data.
            (
                json!({"huge": {"dtype": "F32", "shape": [1_000_000_000_000_000u64],
                        "data_offsets": [0, 0]}}),
                0,
                "claims 1000000000000000 F32 values",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}),
                8,
                "ends at byte 16 of the data, which has 8 bytes",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [u64::MAX, 2], "data_offsets": [0, 8]}}),
                8,
                "not a size",
            ),
            (
                json!({"a": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 2]}}),
                2,
                "unknown dtype Q4",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [1]}}),
                4,
                "no data_offsets",
            ),
        ] {
            safetensors(&path, tensors, data);
            let err = weight_parameters(&path).unwrap_err().to_string();
            assert!(err.contains(says), "{says}: {err}");
            assert!(err.contains("nothing was loaded"), "{err}");
        }
    }
}
