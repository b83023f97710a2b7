//! A checkpoint's tensors by name, taken one by one as the layers are built.

use so1s_core::model::weight_files;
use so1s_core::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// The tensors of a checkpoint in f32, names without their model prefix.
pub struct Weights {
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Reads `model.safetensors`, the shards a `model.safetensors.index.json` names, or a
    /// libtorch file (`rust_model.ot`), the family's `prefix` (`bert.`,
    /// [`Family::prefix`](super::family::Family::prefix)) taken off the names that have it.
    pub fn read(path: &Path, prefix: &str) -> Result<Self> {
        let mut loaded = Vec::new();
        for file in weight_files(path)? {
            let tensors = match file.extension().and_then(|e| e.to_str()) {
                Some("safetensors") => Tensor::read_safetensors(&file),
                _ => Tensor::load_multi(&file),
            }
            .map_err(|e| Error::Load(format!("reading {}: {e}", file.display())))?;
            loaded.extend(tensors);
        }
        Ok(Self::from_tensors(loaded, prefix))
    }

    /// Named tensors, `prefix` taken off the names that have it, converted to f32.
    pub fn from_tensors(tensors: impl IntoIterator<Item = (String, Tensor)>, prefix: &str) -> Self {
        let tensors = tensors
            .into_iter()
            .map(|(name, tensor)| {
                let name = name
                    .strip_prefix(prefix)
                    .map_or(name.clone(), str::to_owned);
                (name, tensor.to_kind(Kind::Float))
            })
            .collect();
        Self { tensors }
    }

    /// The tensor `name`, or an error naming it.
    pub fn take(&mut self, name: &str) -> Result<Tensor> {
        self.take_optional(name)
            .ok_or_else(|| Error::InvalidModel(format!("the weights have no {name}")))
    }

    /// The tensor `name`, if the checkpoint has it.
    pub fn take_optional(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    /// The tensor `name` with the `shape` the config promises, or an error saying both.
    pub fn take_shaped(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let tensor = self.take(name)?;
        if tensor.size() != shape {
            return Err(Error::InvalidModel(format!(
                "{name} has shape {:?}; config.json makes it {shape:?}",
                tensor.size()
            )));
        }
        Ok(tensor)
    }
}
