//! Which files a model's tokenizer is read from: `tokenizer.json` (Hugging Face's fast
//! tokenizer, what most hub repositories ship and many ship alone) wherever it is there,
//! the older vocabulary files otherwise.

use super::{require, Architecture};
use crate::Result;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `tokenizer.json`: the whole tokenizer (normalizer, pre-tokenizer, model, special tokens,
/// post-processor) in one file.
pub const TOKENIZER_JSON: &str = "tokenizer.json";

/// The tokenizer's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerFiles {
    /// `tokenizer.json`, read whenever the model ships it.
    pub json: Option<PathBuf>,
    /// The older vocabulary file (`vocab.txt`, `vocab.json`, a sentencepiece model), if the
    /// model ships it: required when there is no `tokenizer.json`; rust-bert's pipelines read
    /// only this.
    pub vocab: Option<PathBuf>,
    /// `merges.txt` for byte-pair-encoding tokenizers (RoBERTa).
    pub merges: Option<PathBuf>,
    /// Lower-case the input before tokenizing (the older files; `tokenizer.json` says so
    /// itself).
    pub lower_case: bool,
    /// Strip accents (BERT-style tokenizers), when the model says.
    pub strip_accents: Option<bool>,
    /// Add a space before the text (RoBERTa-style tokenizers), when the model says.
    pub add_prefix_space: Option<bool>,
}

/// The older vocabulary files of `architecture`'s tokenizer: the vocabulary and, for
/// byte-pair encodings, the merges.
fn vocabulary_files(architecture: Architecture) -> (&'static str, Option<&'static str>) {
    match architecture {
        Architecture::Bert
        | Architecture::DistilBert
        | Architecture::Electra
        | Architecture::Mpnet => ("vocab.txt", None),
        Architecture::Roberta => ("vocab.json", Some("merges.txt")),
        Architecture::XlmRoberta => ("sentencepiece.bpe.model", None),
        Architecture::Camembert => ("sentencepiece.bpe.model", None),
        Architecture::Albert => ("spiece.model", None),
        Architecture::DebertaV2 => ("spm.model", None),
    }
}

/// The tokenizer files of the model in `dir`: `tokenizer.json` when it is there (the older
/// files then optional), else the older files, which must all be there.
pub(super) fn tokenizer_files(
    dir: &Path,
    architecture: Architecture,
    tokenizer_config: Option<&Value>,
) -> Result<TokenizerFiles> {
    let flag = |name: &str| {
        tokenizer_config
            .and_then(|config| config.get(name))
            .and_then(Value::as_bool)
    };
    let json = Some(dir.join(TOKENIZER_JSON)).filter(|path| path.is_file());
    let (vocab_name, merges_name) = vocabulary_files(architecture);
    let found = |name: &str| Some(dir.join(name)).filter(|path| path.is_file());
    let (vocab, merges) = match &json {
        Some(_) => (found(vocab_name), merges_name.and_then(found)),
        None => (
            Some(require(dir, vocab_name).map_err(|missing| {
                crate::Error::InvalidModel(format!(
                    "{missing} (and no {TOKENIZER_JSON}, which so1s reads for every family)"
                ))
            })?),
            match merges_name {
                Some(name) => Some(require(dir, name)?),
                None => None,
            },
        ),
    };
    let (strip_accents, add_prefix_space) = match architecture {
        Architecture::Roberta | Architecture::XlmRoberta | Architecture::Camembert => {
            (None, flag("add_prefix_space"))
        }
        // rust-bert refuses add_prefix_space for BERT-style tokenizers.
        _ => (flag("strip_accents"), None),
    };
    Ok(TokenizerFiles {
        json,
        vocab,
        merges,
        lower_case: flag("do_lower_case").unwrap_or(architecture.lower_cases_by_default()),
        strip_accents,
        add_prefix_space,
    })
}
