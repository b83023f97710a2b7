//! Reading a model directory: which files play which part.

use super::tokenizer::{tokenizer_files, TokenizerFiles};
use super::{read_json, require, Architecture, Manifest, Task, MANIFEST_FILE};
use crate::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Files of a sentence-transformers model beyond the transformer itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceTransformerFiles {
    /// `modules.json`.
    pub modules: PathBuf,
    /// The pooling module's `config.json`.
    pub pooling_config: PathBuf,
    /// `sentence_bert_config.json` (max sequence length, lower-casing).
    pub sentence_bert_config: PathBuf,
    /// `tokenizer_config.json`.
    pub tokenizer_config: PathBuf,
    /// A dense projection after pooling: its config and weights.
    pub dense: Option<(PathBuf, PathBuf)>,
}

/// A model directory, inspected: every file the loader needs was found and parses.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLayout {
    /// The directory.
    pub dir: PathBuf,
    /// `so1s.toml`, or the empty manifest.
    pub manifest: Manifest,
    /// The task, from the manifest or inferred.
    pub task: Task,
    /// The transformer's architecture.
    pub architecture: Architecture,
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors` (preferred) or `rust_model.ot`.
    pub weights: PathBuf,
    /// The tokenizer.
    pub tokenizer: TokenizerFiles,
    /// Labels by id, for classification models (from `id2label`).
    pub labels: Vec<String>,
    /// The sentence-transformers modules, for embedding models that have them (a plain
    /// encoder has none: it is mean-pooled).
    pub sentence_transformer: Option<SentenceTransformerFiles>,
    /// Longest input in tokens; longer inputs are truncated.
    pub max_sequence_length: Option<usize>,
}

/// The weights files so1s reads, preferred first: safetensors, sharded safetensors (an index
/// naming the shards), rust-bert's libtorch file.
const WEIGHT_FILES: [&str; 3] = ["model.safetensors", SHARD_INDEX, "rust_model.ot"];

/// The index of a sharded safetensors checkpoint: `{"weight_map": {tensor: shard file}}`.
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// The files holding the weights of `weights` (a [`ModelLayout::weights`]): itself, or the
/// shards its index names (each once, in order), which must lie in its directory.
pub fn weight_files(weights: &Path) -> Result<Vec<PathBuf>> {
    if weights.file_name().and_then(|n| n.to_str()) != Some(SHARD_INDEX) {
        return Ok(vec![weights.to_owned()]);
    }
    let index: Value = read_json(weights)?;
    let map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::InvalidModel(format!("{SHARD_INDEX} has no `weight_map`")))?;
    let dir = weights.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<PathBuf> = Vec::new();
    for shard in map.values() {
        let name = shard.as_str().ok_or_else(|| {
            Error::InvalidModel(format!("{SHARD_INDEX}'s weight_map holds a non-string"))
        })?;
        let single = Path::new(name);
        if single.components().count() != 1 || !name.ends_with(".safetensors") {
            return Err(Error::InvalidModel(format!(
                "{SHARD_INDEX} names shard `{name}`; shards are .safetensors files beside it"
            )));
        }
        let path = dir.join(single);
        if !shards.contains(&path) {
            shards.push(path);
        }
    }
    for shard in &shards {
        if !shard.is_file() {
            return Err(Error::InvalidModel(format!(
                "{SHARD_INDEX} names {}, which is missing",
                shard.display()
            )));
        }
    }
    Ok(shards)
}

impl ModelLayout {
    /// Inspects a model directory: reads the manifest, `config.json` and the small JSON files,
    /// decides the task, and checks that every file the loader will open is there. The error
    /// says what is missing and what to add.
    pub fn inspect(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::InvalidModel(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let manifest = Manifest::read(dir)?;
        let config_path = require(dir, "config.json")?;
        let config: Value = read_json(&config_path)?;
        let model_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::InvalidModel("config.json has no `model_type`".into()))?;
        let architecture = Architecture::parse(model_type)?;
        let task = match manifest.task {
            Some(task) => task,
            None => infer_task(dir, &config)?,
        };
        let weights = WEIGHT_FILES
            .iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
            .ok_or_else(|| {
                Error::InvalidModel(format!(
                    "no weights: add {} (or pytorch_model.bin, which uploads convert to safetensors)",
                    WEIGHT_FILES.join(" or ")
                ))
            })?;
        weight_files(&weights)?;
        let tokenizer_config = optional_json(&dir.join("tokenizer_config.json"))?;
        let tokenizer = tokenizer_files(dir, architecture, tokenizer_config.as_ref())?;

        let (labels, sentence_transformer) = match task {
            Task::SequenceClassification | Task::TokenClassification | Task::Rerank => {
                (labels(&config)?, None)
            }
            // A plain encoder (no modules.json) embeds by mean pooling.
            Task::SentenceEmbeddings => match dir.join("modules.json").is_file() {
                true => (Vec::new(), Some(sentence_transformer_files(dir)?)),
                false => (Vec::new(), None),
            },
        };
        let max_sequence_length = match &sentence_transformer {
            Some(files) => read_json::<Value>(&files.sentence_bert_config)?
                .get("max_seq_length")
                .and_then(Value::as_u64),
            // The tokenizer's `model_max_length` where it is shorter than the positions
            // (Hugging Face writes a huge float there when it has none).
            None => {
                // RoBERTa's positions start after the padding index: two fewer tokens fit.
                let offset = match architecture.positions_after_padding() {
                    true => 2,
                    false => 0,
                };
                let positions = config
                    .get("max_position_embeddings")
                    .and_then(Value::as_u64)
                    .map(|p| p.saturating_sub(offset));
                let tokenizer_max = tokenizer_config
                    .as_ref()
                    .and_then(|c| c.get("model_max_length"))
                    .and_then(Value::as_u64);
                match (positions, tokenizer_max) {
                    (Some(p), Some(t)) => Some(p.min(t)),
                    (p, t) => p.or(t),
                }
            }
        }
        .map(|n| n as usize);

        Ok(Self {
            dir: dir.to_owned(),
            manifest,
            task,
            architecture,
            config: config_path,
            weights,
            tokenizer,
            labels,
            sentence_transformer,
            max_sequence_length,
        })
    }
}

fn infer_task(dir: &Path, config: &Value) -> Result<Task> {
    if dir.join("modules.json").is_file() {
        return Ok(Task::SentenceEmbeddings);
    }
    let heads: Vec<&str> = config
        .get("architectures")
        .and_then(Value::as_array)
        .map(|archs| archs.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let has = |head: &str| heads.iter().any(|arch| arch.ends_with(head));
    if has("ForTokenClassification") {
        return Ok(Task::TokenClassification);
    }
    if has("ForSequenceClassification") {
        // One label is a score, not a choice: a cross-encoder, as TEI and sentence-transformers
        // take it.
        let one_label = config
            .get("id2label")
            .and_then(Value::as_object)
            .is_some_and(|labels| labels.len() == 1);
        return Ok(match one_label {
            true => Task::Rerank,
            false => Task::SequenceClassification,
        });
    }
    Err(Error::InvalidModel(format!(
        "cannot tell the model's task from its files (no modules.json, no \
         *ForSequenceClassification or *ForTokenClassification in config.json's architectures): \
         add {MANIFEST_FILE} with a line such as `task = \"{}\"` (so1s serves {})",
        Task::SentenceEmbeddings,
        Task::ALL.map(Task::as_str).join(", ")
    )))
}

fn labels(config: &Value) -> Result<Vec<String>> {
    let id2label = config
        .get("id2label")
        .and_then(Value::as_object)
        .filter(|map| !map.is_empty())
        .ok_or_else(|| {
            Error::InvalidModel("a classification model needs `id2label` in config.json".into())
        })?;
    let mut labels = vec![None; id2label.len()];
    for (id, label) in id2label {
        let index = id
            .parse::<usize>()
            .ok()
            .filter(|&i| i < labels.len())
            .ok_or_else(|| {
                Error::InvalidModel(format!(
                    "id2label in config.json must number its labels 0..{}; found id `{id}`",
                    labels.len()
                ))
            })?;
        let label = label.as_str().ok_or_else(|| {
            Error::InvalidModel(format!("id2label[{id}] in config.json is not a string"))
        })?;
        labels[index] = Some(label.to_owned());
    }
    Ok(labels.into_iter().flatten().collect())
}

fn sentence_transformer_files(dir: &Path) -> Result<SentenceTransformerFiles> {
    let modules_path = require(dir, "modules.json")?;
    let modules: Value = read_json(&modules_path)?;
    let modules = modules.as_array().ok_or_else(|| {
        Error::InvalidModel("modules.json must be a list of sentence-transformers modules".into())
    })?;
    let kind_of = |module: &Value| {
        module
            .get("type")
            .and_then(Value::as_str)
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("")
            .to_owned()
    };
    let path_of = |module: &Value| {
        module
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let kinds: Vec<String> = modules.iter().map(kind_of).collect();
    if kinds.first().map(String::as_str) != Some("Transformer")
        || kinds.get(1).map(String::as_str) != Some("Pooling")
    {
        return Err(Error::InvalidModel(format!(
            "modules.json must start with Transformer then Pooling; it lists [{}]",
            kinds.join(", ")
        )));
    }
    if let Some(other) = kinds
        .iter()
        .skip(2)
        .find(|k| !matches!(k.as_str(), "Dense" | "Normalize"))
    {
        return Err(Error::InvalidModel(format!(
            "modules.json lists a `{other}` module; so1s supports Dense and Normalize after pooling"
        )));
    }
    let pooling_dir = safe_join(dir, &path_of(&modules[1]))?;
    let pooling_config = require(&pooling_dir, "config.json")?;
    read_json::<Value>(&pooling_config)?;
    let dense = match modules.iter().skip(2).find(|m| kind_of(m) == "Dense") {
        Some(module) => {
            let dense_dir = safe_join(dir, &path_of(module))?;
            let config = require(&dense_dir, "config.json")?;
            read_json::<Value>(&config)?;
            let weights = WEIGHT_FILES
                .iter()
                .map(|name| dense_dir.join(name))
                .find(|path| path.is_file())
                .ok_or_else(|| {
                    Error::InvalidModel(format!(
                        "the Dense module in {} has no {}",
                        dense_dir.display(),
                        WEIGHT_FILES.join(" or ")
                    ))
                })?;
            Some((config, weights))
        }
        None => None,
    };
    let sentence_bert_config = require(dir, "sentence_bert_config.json")?;
    read_json::<Value>(&sentence_bert_config)?;
    let tokenizer_config = require(dir, "tokenizer_config.json")?;
    Ok(SentenceTransformerFiles {
        modules: modules_path,
        pooling_config,
        sentence_bert_config,
        tokenizer_config,
        dense,
    })
}

/// Joins a path taken from a model file onto the model directory, refusing anything that
/// would leave it.
fn safe_join(dir: &Path, relative: &str) -> Result<PathBuf> {
    let relative = Path::new(relative);
    let stays_inside = relative.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if !stays_inside {
        return Err(Error::InvalidModel(format!(
            "module path `{}` in modules.json leaves the model directory",
            relative.display()
        )));
    }
    Ok(dir.join(relative))
}

fn optional_json(path: &Path) -> Result<Option<Value>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn classifier_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "config.json",
            r#"{"model_type": "bert", "architectures": ["BertForSequenceClassification"],
                "id2label": {"1": "positive", "0": "negative"}, "max_position_embeddings": 128}"#,
        );
        write(dir.path(), "vocab.txt", "[PAD]\n[UNK]\n");
        write(dir.path(), "rust_model.ot", "");
        dir
    }

    fn embedding_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config.json", r#"{"model_type": "bert"}"#);
        write(dir.path(), "vocab.txt", "[PAD]\n");
        write(dir.path(), "model.safetensors", "");
        write(
            dir.path(),
            "modules.json",
            r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
                {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#,
        );
        write(dir.path(), "1_Pooling/config.json", "{}");
        write(
            dir.path(),
            "sentence_bert_config.json",
            r#"{"max_seq_length": 256}"#,
        );
        write(
            dir.path(),
            "tokenizer_config.json",
            r#"{"do_lower_case": true}"#,
        );
        dir
    }

    #[test]
    fn infers_classification_and_orders_labels_by_id() {
        let dir = classifier_dir();
        let layout = ModelLayout::inspect(dir.path()).unwrap();
        assert_eq!(layout.task, Task::SequenceClassification);
        assert_eq!(layout.architecture, Architecture::Bert);
        assert_eq!(layout.labels, ["negative", "positive"]);
        assert_eq!(layout.weights, dir.path().join("rust_model.ot"));
        assert!(layout.tokenizer.lower_case, "BERT lower-cases by default");
        assert_eq!(layout.max_sequence_length, Some(128));
    }

    #[test]
    fn infers_sentence_embeddings_from_modules_json() {
        let dir = embedding_dir();
        let layout = ModelLayout::inspect(dir.path()).unwrap();
        assert_eq!(layout.task, Task::SentenceEmbeddings);
        assert_eq!(layout.weights, dir.path().join("model.safetensors"));
        let files = layout.sentence_transformer.unwrap();
        assert_eq!(
            files.pooling_config,
            dir.path().join("1_Pooling/config.json")
        );
        assert_eq!(files.dense, None);
        assert_eq!(layout.max_sequence_length, Some(256));
    }

    #[test]
    fn safetensors_is_preferred_over_ot() {
        let dir = classifier_dir();
        write(dir.path(), "model.safetensors", "");
        let layout = ModelLayout::inspect(dir.path()).unwrap();
        assert_eq!(layout.weights, dir.path().join("model.safetensors"));
    }

    #[test]
    fn manifest_task_wins_over_inference() {
        let dir = embedding_dir();
        write(
            dir.path(),
            "so1s.toml",
            "task = \"sequence-classification\"",
        );
        let err = ModelLayout::inspect(dir.path()).unwrap_err();
        assert!(err.to_string().contains("id2label"), "{err}");
    }

    #[test]
    fn token_classifiers_and_one_label_cross_encoders_are_told_from_their_config() {
        let dir = classifier_dir();
        let config = |architecture: &str, labels: &str| {
            format!(
                r#"{{"model_type": "bert", "architectures": ["{architecture}"], "id2label": {labels}}}"#
            )
        };
        let cases = [
            (
                "BertForTokenClassification",
                r#"{"0": "O", "1": "B-PER"}"#,
                Task::TokenClassification,
            ),
            (
                "BertForSequenceClassification",
                r#"{"0": "LABEL_0"}"#,
                Task::Rerank,
            ),
            (
                "BertForSequenceClassification",
                r#"{"0": "neg", "1": "pos"}"#,
                Task::SequenceClassification,
            ),
        ];
        for (architecture, labels, task) in cases {
            write(dir.path(), "config.json", &config(architecture, labels));
            let layout = ModelLayout::inspect(dir.path()).unwrap();
            assert_eq!(layout.task, task, "{architecture} {labels}");
            assert!(!layout.labels.is_empty());
        }
        // so1s.toml overrides: a one-label classifier kept as a classifier.
        write(
            dir.path(),
            "so1s.toml",
            "task = \"sequence-classification\"\n",
        );
        let layout = ModelLayout::inspect(dir.path()).unwrap();
        assert_eq!(layout.task, Task::SequenceClassification);
    }

    #[test]
    fn ambiguous_model_asks_for_a_manifest() {
        let dir = classifier_dir();
        write(dir.path(), "config.json", r#"{"model_type": "bert"}"#);
        let err = ModelLayout::inspect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("so1s.toml"), "{err}");
        assert!(err.contains("task = \"sentence-embeddings\""), "{err}");
    }

    #[test]
    fn missing_weights_and_vocab_are_named() {
        let dir = classifier_dir();
        fs::remove_file(dir.path().join("rust_model.ot")).unwrap();
        let err = ModelLayout::inspect(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors or model.safetensors.index.json or rust_model.ot"),
            "{err}"
        );

        let dir = classifier_dir();
        fs::remove_file(dir.path().join("vocab.txt")).unwrap();
        let err = ModelLayout::inspect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("missing vocab.txt"), "{err}");
    }

    #[test]
    fn tokenizer_json_alone_serves_and_older_files_are_optional_beside_it() {
        let dir = classifier_dir();
        fs::remove_file(dir.path().join("vocab.txt")).unwrap();
        write(dir.path(), "tokenizer.json", "{}");
        let layout = ModelLayout::inspect(dir.path()).unwrap();
        assert_eq!(
            layout.tokenizer.json,
            Some(dir.path().join("tokenizer.json"))
        );
        assert_eq!(layout.tokenizer.vocab, None);
        // An XLM-R with neither names both.
        write(
            dir.path(),
            "config.json",
            r#"{"model_type": "xlm-roberta", "architectures": ["XLMRobertaForSequenceClassification"],
                "id2label": {"0": "a"}}"#,
        );
        fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
        let err = ModelLayout::inspect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("sentencepiece.bpe.model"), "{err}");
        assert!(err.contains("tokenizer.json"), "{err}");
    }

    #[test]
    fn sharded_weights_are_found_by_their_index_and_must_stay_beside_it() {
        let dir = classifier_dir();
        fs::remove_file(dir.path().join("rust_model.ot")).unwrap();
        write(dir.path(), "a.safetensors", "");
        write(dir.path(), "b.safetensors", "");
        write(
            dir.path(),
            SHARD_INDEX,
            r#"{"weight_map": {"x": "a.safetensors", "y": "b.safetensors", "z": "a.safetensors"}}"#,
        );
        let layout = ModelLayout::inspect(dir.path()).unwrap();
        assert_eq!(layout.weights, dir.path().join(SHARD_INDEX));
        assert_eq!(
            weight_files(&layout.weights).unwrap(),
            [
                dir.path().join("a.safetensors"),
                dir.path().join("b.safetensors")
            ]
        );
        for (map, says) in [
            (
                r#"{"x": "../a.safetensors"}"#,
                "shards are .safetensors files beside it",
            ),
            (r#"{"x": "c.safetensors"}"#, "which is missing"),
        ] {
            write(
                dir.path(),
                SHARD_INDEX,
                &format!(r#"{{"weight_map": {map}}}"#),
            );
            let err = ModelLayout::inspect(dir.path()).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn a_plain_encoder_embeds_without_modules_json() {
        let dir = classifier_dir();
        write(dir.path(), "so1s.toml", "task = \"sentence-embeddings\"");
        let layout = ModelLayout::inspect(dir.path()).unwrap();
        assert_eq!(layout.task, Task::SentenceEmbeddings);
        assert_eq!(layout.sentence_transformer, None);
        assert_eq!(layout.max_sequence_length, Some(128));
    }

    #[test]
    fn bad_json_names_the_file() {
        let dir = embedding_dir();
        write(dir.path(), "1_Pooling/config.json", "{not json");
        let err = ModelLayout::inspect(dir.path()).unwrap_err();
        assert!(err.to_string().contains("1_Pooling"), "{}", err.chain());
    }

    #[test]
    fn unsupported_architecture_and_label_gaps_are_rejected() {
        let dir = classifier_dir();
        write(dir.path(), "config.json", r#"{"model_type": "gpt2"}"#);
        let err = ModelLayout::inspect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("gpt2") && err.contains("distilbert"), "{err}");

        write(
            dir.path(),
            "config.json",
            r#"{"model_type": "bert", "architectures": ["BertForSequenceClassification"],
                "id2label": {"0": "a", "2": "c"}}"#,
        );
        let err = ModelLayout::inspect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("found id `2`"), "{err}");
    }

    #[test]
    fn module_paths_cannot_leave_the_model_directory() {
        let dir = embedding_dir();
        write(
            dir.path(),
            "modules.json",
            r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
                {"path": "../../etc", "type": "sentence_transformers.models.Pooling"}]"#,
        );
        let err = ModelLayout::inspect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("leaves the model directory"), "{err}");
    }
}
