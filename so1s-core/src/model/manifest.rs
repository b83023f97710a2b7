//! `so1s.toml`: the optional manifest a model archive may carry.
//!
//! ```toml
//! task = "sequence-classification"   # or "sentence-embeddings"
//!
//! [serving]
//! max_batch_size = 32      # texts per forward pass
//! max_batch_wait_ms = 2    # how long the first request of a batch waits for company
//! forward_pass = "auto"    # or "so1s" (its own encoder) or "rust-bert"
//! precision = "auto"       # or "f32", "bf16", "int8": so1s's own forward pass (BERT, ELECTRA)
//! ```

use super::Task;
use crate::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// The manifest's file name inside a model directory.
pub const MANIFEST_FILE: &str = "so1s.toml";

/// The parsed `so1s.toml`. Every field is optional: without a manifest the task is inferred
/// from the files and serving options take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The task the model serves.
    pub task: Option<Task>,
    /// Serving options the model's author recommends; command-line flags override them.
    #[serde(default)]
    pub serving: ServingOptions,
}

/// Batching options a manifest may set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingOptions {
    /// Most texts in one forward pass.
    pub max_batch_size: Option<usize>,
    /// Longest wait, in milliseconds, for a batch to fill once its first request arrived.
    pub max_batch_wait_ms: Option<u64>,
    /// Most tokens in one forward pass.
    pub max_batch_tokens: Option<usize>,
    /// Who runs the forward pass (`"auto"`, `"so1s"`, `"rust-bert"`).
    pub forward_pass: Option<crate::predict::ForwardPass>,
    /// The precision of so1s's own forward pass (`"auto"`, `"f32"`, `"bf16"`, `"int8"`).
    pub precision: Option<crate::predict::Precision>,
}

impl Manifest {
    /// Parses a manifest's text.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|source| Error::Manifest {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Reads `so1s.toml` from a model directory; a missing file is an empty manifest.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(Error::ModelFile { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_task_and_serving_options() {
        let manifest = Manifest::parse(
            "task = \"sequence-classification\"\n[serving]\nmax_batch_size = 8\nmax_batch_wait_ms = 3\nprecision = \"int8\"\n",
            Path::new("so1s.toml"),
        )
        .unwrap();
        assert_eq!(manifest.task, Some(Task::SequenceClassification));
        assert_eq!(manifest.serving.max_batch_size, Some(8));
        assert_eq!(manifest.serving.max_batch_wait_ms, Some(3));
        assert_eq!(
            manifest.serving.precision,
            Some(crate::predict::Precision::Int8)
        );
    }

    #[test]
    fn empty_manifest_has_no_task() {
        let manifest = Manifest::parse("", Path::new("so1s.toml")).unwrap();
        assert_eq!(manifest, Manifest::default());
    }

    #[test]
    fn unknown_task_and_fields_are_rejected_with_the_file_named() {
        let err = Manifest::parse("task = \"translation\"", Path::new("m/so1s.toml")).unwrap_err();
        let text = err.chain();
        assert!(text.contains("m/so1s.toml"), "{text}");
        assert!(text.contains("translation"), "{text}");

        let err =
            Manifest::parse("tsak = \"sentence-embeddings\"", Path::new("so1s.toml")).unwrap_err();
        assert!(err.chain().contains("tsak"), "{}", err.chain());
    }
}
