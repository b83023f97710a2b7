//! [`VocabTokenizer`]: rust_tokenizers' tokenizer of a model's older vocabulary files
//! (WordPiece's `vocab.txt`, BPE's `vocab.json` and `merges.txt`, sentencepiece models),
//! WordPiece text composed (NFC) first as transformers' BERT tokenizer does.

use super::{Encoded, Tokenize};
use rust_bert::pipelines::common::{ModelType, TokenizerOption};
use rust_tokenizers::tokenizer::TruncationStrategy;
use rust_tokenizers::TokenizedInput;
use so1s_core::model::{Architecture, ModelLayout, TOKENIZER_JSON};
use so1s_core::{Error, Result};
use std::borrow::Cow;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// A rust_tokenizers tokenizer of the model's vocabulary files, truncating at `max_len`.
pub struct VocabTokenizer {
    tokenizer: TokenizerOption,
    max_len: usize,
    /// WordPiece tokenizers read NFC text (Hugging Face's BERT tokenizer normalizes so).
    compose: bool,
    /// Whether [`Tokenize::encode`] gives each token's character span.
    offsets: bool,
}

impl VocabTokenizer {
    /// `tokenizer`, truncating at `max_len`; `compose` NFC-normalizes texts first.
    pub(crate) fn new(tokenizer: TokenizerOption, max_len: usize, compose: bool) -> Self {
        Self {
            tokenizer,
            max_len,
            compose,
            offsets: false,
        }
    }

    /// Whether [`Tokenize::encode`] gives each token's character span (of the composed
    /// text, which for WordPiece is the text sent unless it was decomposed).
    pub(crate) fn keep_offsets(&mut self, offsets: bool) {
        self.offsets = offsets;
    }

    /// The id of the padding token.
    pub(crate) fn pad_id(&self) -> Option<i64> {
        self.tokenizer.get_pad_id()
    }
}

impl Tokenize for VocabTokenizer {
    fn token_ids(&self, texts: &[String]) -> Result<Vec<Vec<i64>>> {
        Ok(encode(&self.tokenizer, texts, self.max_len, self.compose)
            .into_iter()
            .map(|encoded| encoded.token_ids)
            .collect())
    }

    fn encode(&self, texts: &[String]) -> Result<Vec<Encoded>> {
        Ok(encode(&self.tokenizer, texts, self.max_len, self.compose)
            .into_iter()
            .map(|input| encoded(input, self.offsets))
            .collect())
    }

    fn encode_pairs(&self, query: &str, texts: &[String]) -> Result<Vec<Encoded>> {
        let query = self.composed(query);
        let texts: Vec<Cow<str>> = texts.iter().map(|t| self.composed(t)).collect();
        let pairs: Vec<(&str, &str)> = texts.iter().map(|t| (query.as_ref(), t.as_ref())).collect();
        Ok(self
            .tokenizer
            .encode_pair_list(&pairs, self.max_len, &TruncationStrategy::LongestFirst, 0)
            .into_iter()
            .map(|input| encoded(input, false))
            .collect())
    }

    fn join_tokens(&self, ids: &[i64]) -> String {
        self.tokenizer.decode(ids, false, false)
    }
}

impl VocabTokenizer {
    fn composed<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match self.compose {
            true => nfc(text),
            false => Cow::Borrowed(text),
        }
    }
}

/// rust_tokenizers' encoding as the forward pass takes it.
fn encoded(input: TokenizedInput, offsets: bool) -> Encoded {
    Encoded {
        type_ids: input.segment_ids.iter().map(|&s| s as i64).collect(),
        offsets: match offsets {
            true => input
                .token_offsets
                .iter()
                .zip(&input.special_tokens_mask)
                .map(|(span, &special)| {
                    span.filter(|_| special == 0)
                        .map(|o| (o.begin as usize, o.end as usize))
                })
                .collect(),
            false => Vec::new(),
        },
        ids: input.token_ids,
    }
}

/// Whether `architecture`'s tokenizer is WordPiece, whose text is NFC-composed first.
pub(crate) fn composes(architecture: Architecture) -> bool {
    matches!(
        architecture,
        Architecture::Bert | Architecture::DistilBert | Architecture::Electra
    )
}

/// `texts` encoded, `[CLS] … [SEP]`, truncated at `max_len`; with `compose`,
/// NFC-normalized first, as Hugging Face's BERT (WordPiece) tokenizer does.
fn encode(
    tokenizer: &TokenizerOption,
    texts: &[String],
    max_len: usize,
    compose: bool,
) -> Vec<TokenizedInput> {
    let texts: Vec<Cow<str>> = texts
        .iter()
        .map(|t| match compose {
            true => nfc(t),
            false => Cow::Borrowed(t.as_str()),
        })
        .collect();
    tokenizer.encode_list(&texts, max_len, &TruncationStrategy::LongestFirst, 0)
}

/// `text` in Unicode normalization form C (composed): what Hugging Face's BERT tokenizer
/// reads, so that a decomposed `é` or a Hangul syllable typed as jamo finds its vocabulary
/// entry. Borrowed when already composed (the common case).
fn nfc(text: &str) -> Cow<'_, str> {
    match is_nfc_quick(text.chars()) {
        IsNormalized::Yes => Cow::Borrowed(text),
        _ => Cow::Owned(text.nfc().collect()),
    }
}

/// rust-bert's model type of `architecture`, where rust-bert has one.
pub(crate) fn rust_bert_type(architecture: Architecture) -> Option<ModelType> {
    Some(match architecture {
        Architecture::Bert => ModelType::Bert,
        Architecture::DistilBert => ModelType::DistilBert,
        Architecture::Roberta => ModelType::Roberta,
        Architecture::XlmRoberta => ModelType::XLMRoberta,
        Architecture::Albert => ModelType::Albert,
        Architecture::Electra => ModelType::Electra,
        Architecture::DebertaV2 => ModelType::DebertaV2,
        Architecture::Camembert | Architecture::Mpnet => return None,
    })
}

/// rust_tokenizers' tokenizer of the model's older vocabulary files. WordPiece strips
/// accents only when the model says so or lower-cases (Hugging Face's rule): stripping
/// decomposes Hangul syllables into jamo, which a Korean vocabulary does not hold.
pub(crate) fn vocab_tokenizer(
    layout: &ModelLayout,
    lower_case: bool,
    strip_accents: Option<bool>,
) -> Result<TokenizerOption> {
    let files = &layout.tokenizer;
    let no_file = || {
        Error::InvalidModel(format!(
            "a {} model needs {TOKENIZER_JSON} here: so1s reads no other tokenizer file of it",
            layout.architecture.as_str()
        ))
    };
    let model_type = rust_bert_type(layout.architecture).ok_or_else(no_file)?;
    let vocab = files.vocab.as_ref().ok_or_else(no_file)?;
    let merges = files.merges.as_ref().map(|m| m.to_string_lossy());
    TokenizerOption::from_file(
        model_type,
        &vocab.to_string_lossy(),
        merges.as_deref(),
        lower_case,
        strip_accents,
        files.add_prefix_space,
    )
    .map_err(|e| Error::Load(format!("loading the tokenizer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decomposed_text_is_composed_and_composed_text_borrowed() {
        assert!(matches!(nfc("이 영화 정말 재밌어요"), Cow::Borrowed(_)));
        assert_eq!(nfc("e\u{301}cole"), "\u{e9}cole");
        // 한 typed as its three jamo.
        assert_eq!(nfc("\u{1112}\u{1161}\u{11ab}"), "한");
    }
}
