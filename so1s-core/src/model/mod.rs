//! What a model directory holds and how so1s reads it: the task it serves, its architecture,
//! weights and tokenizer files, and the optional `so1s.toml` manifest.
//!
//! Nothing here loads weights: [`ModelLayout::inspect`] only reads small JSON and TOML files,
//! so an upload can be checked before anything heavy runs.

mod architecture;
pub mod checkpoint;
mod layout;
mod manifest;
mod name;
pub mod size;
mod tokenizer;

pub use architecture::Architecture;
pub use layout::{weight_files, ModelLayout, SHARD_INDEX};
pub use manifest::{Manifest, ServingOptions, MANIFEST_FILE};
pub use name::{ModelName, VersionId};
pub use tokenizer::{TokenizerFiles, TOKENIZER_JSON};

use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// What a model does with a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Text → fixed-size vector (sentence-transformers models).
    SentenceEmbeddings,
    /// Text → one label of `config.json`'s `id2label`, with its probability.
    SequenceClassification,
    /// Text → the entities among its tokens, labelled by `id2label` (a
    /// `*ForTokenClassification`: named entities).
    TokenClassification,
    /// A query and texts → each text's relevance to the query (a cross-encoder: a
    /// `*ForSequenceClassification` with one label).
    Rerank,
}

impl Task {
    /// Every task, in the spelling manifests use.
    pub const ALL: [Task; 4] = [
        Task::SentenceEmbeddings,
        Task::SequenceClassification,
        Task::TokenClassification,
        Task::Rerank,
    ];

    /// The task's name as written in `so1s.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::SentenceEmbeddings => "sentence-embeddings",
            Task::SequenceClassification => "sequence-classification",
            Task::TokenClassification => "token-classification",
            Task::Rerank => "rerank",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Task {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Task::ALL
            .into_iter()
            .find(|task| task.as_str() == s)
            .ok_or_else(|| {
                crate::Error::InvalidModel(format!(
                    "unknown task `{s}`; so1s serves {}",
                    Task::ALL.map(Task::as_str).join(", ")
                ))
            })
    }
}

/// Reads a JSON file of a model directory (`config.json`, `modules.json`, ...) into `T`: a
/// file that cannot be read is an [`Error::ModelFile`], one that does not parse into `T` an
/// [`Error::ModelJson`].
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|source| Error::ModelFile {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::ModelJson {
        path: path.to_owned(),
        source,
    })
}

/// The file `name` in `dir`, or an error naming it as missing.
pub(crate) fn require(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::InvalidModel(format!(
            "missing {name} in {}",
            dir.display()
        )))
    }
}
