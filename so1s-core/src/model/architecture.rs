//! [`Architecture`]: the transformer families so1s reads, by `config.json`'s `model_type`.

use crate::{Error, Result};

/// Transformer architectures so1s can load, from `config.json`'s `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `bert` (MiniLM and most sentence-transformers models are BERTs).
    Bert,
    /// `distilbert`.
    DistilBert,
    /// `roberta`.
    Roberta,
    /// `xlm-roberta`.
    XlmRoberta,
    /// `albert`.
    Albert,
    /// `electra` (the seed's KoELECTRA sentiment model): run by so1s's own encoder, since
    /// rust-bert has no ELECTRA sequence-classification pipeline.
    Electra,
    /// `camembert`: RoBERTa's layers with a sentencepiece vocabulary.
    Camembert,
    /// `mpnet` (all-mpnet-base-v2 and its kin): relative position buckets.
    Mpnet,
    /// `deberta-v2` (DeBERTa-v2 and -v3): disentangled attention.
    DebertaV2,
}

impl Architecture {
    const NAMES: [(&'static str, Architecture); 9] = [
        ("bert", Architecture::Bert),
        ("distilbert", Architecture::DistilBert),
        ("roberta", Architecture::Roberta),
        ("xlm-roberta", Architecture::XlmRoberta),
        ("camembert", Architecture::Camembert),
        ("albert", Architecture::Albert),
        ("electra", Architecture::Electra),
        ("mpnet", Architecture::Mpnet),
        ("deberta-v2", Architecture::DebertaV2),
    ];

    /// The `model_type` spelling of `config.json`.
    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, arch)| *arch == self)
            .map(|(name, _)| *name)
            .unwrap_or("bert")
    }

    pub(super) fn parse(model_type: &str) -> Result<Self> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == model_type)
            .map(|(_, arch)| *arch)
            .ok_or_else(|| {
                Error::InvalidModel(format!(
                    "config.json has model_type `{model_type}`; so1s loads {}",
                    Self::NAMES.map(|(name, _)| name).join(", ")
                ))
            })
    }

    /// Whether the tokenizer lower-cases when the model does not say (the Hugging Face default).
    pub(super) fn lower_cases_by_default(self) -> bool {
        matches!(
            self,
            Architecture::Bert
                | Architecture::DistilBert
                | Architecture::Albert
                | Architecture::Electra
                | Architecture::Mpnet
        )
    }

    /// Whether the positions of its tokens start after the padding index (RoBERTa's
    /// `padding_idx + 1`): its position embeddings then hold two more rows than it has
    /// positions.
    pub fn positions_after_padding(self) -> bool {
        matches!(
            self,
            Architecture::Roberta
                | Architecture::XlmRoberta
                | Architecture::Camembert
                | Architecture::Mpnet
        )
    }
}
