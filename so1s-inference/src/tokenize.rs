//! Texts to token ids, as Hugging Face's tokenizers make them: [`Tokenize`], the contract a
//! request is tokenized through once, before it reaches the model thread, and
//! [`VocabTokenizer`], rust_tokenizers' tokenizer of a model's vocabulary files (WordPiece's
//! `vocab.txt`, BPE's `vocab.json` and `merges.txt`), WordPiece text composed (NFC) first as
//! transformers' BERT tokenizer does.

use rust_bert::pipelines::common::{ModelType, TokenizerOption};
use rust_tokenizers::tokenizer::TruncationStrategy;
use so1s_core::model::ModelLayout;
use so1s_core::{Error, Result};
use std::borrow::Cow;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// Texts to the token ids a model's forward pass takes. Shared by the request handlers
/// (which tokenize a request once, on their own threads) and the model thread.
pub trait Tokenize: Send + Sync {
    /// Each text's token ids, special tokens in, truncated at the model's length.
    fn token_ids(&self, texts: &[String]) -> Vec<Vec<i64>>;
}

/// A rust_tokenizers tokenizer of the model's vocabulary files, truncating at `max_len`.
pub struct VocabTokenizer {
    tokenizer: TokenizerOption,
    max_len: usize,
    /// WordPiece tokenizers read NFC text (Hugging Face's BERT tokenizer normalizes so).
    compose: bool,
}

impl VocabTokenizer {
    /// `tokenizer`, truncating at `max_len`; `compose` NFC-normalizes texts first.
    pub(crate) fn new(tokenizer: TokenizerOption, max_len: usize, compose: bool) -> Self {
        Self {
            tokenizer,
            max_len,
            compose,
        }
    }

    /// The id of the padding token.
    pub(crate) fn pad_id(&self) -> Option<i64> {
        self.tokenizer.get_pad_id()
    }
}

impl Tokenize for VocabTokenizer {
    fn token_ids(&self, texts: &[String]) -> Vec<Vec<i64>> {
        encode(&self.tokenizer, texts, self.max_len, self.compose)
    }
}

/// `texts` as token ids, `[CLS] … [SEP]`, truncated at `max_len`; with `compose`,
/// NFC-normalized first, as Hugging Face's BERT (WordPiece) tokenizer does.
fn encode(
    tokenizer: &TokenizerOption,
    texts: &[String],
    max_len: usize,
    compose: bool,
) -> Vec<Vec<i64>> {
    let texts: Vec<Cow<str>> = texts
        .iter()
        .map(|t| match compose {
            true => nfc(t),
            false => Cow::Borrowed(t.as_str()),
        })
        .collect();
    tokenizer
        .encode_list(&texts, max_len, &TruncationStrategy::LongestFirst, 0)
        .into_iter()
        .map(|encoded| encoded.token_ids)
        .collect()
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

/// rust-bert's BERT WordPiece tokenizer for the model's `vocab.txt`. Accents are stripped
/// only when the model says so or lower-cases (Hugging Face's rule): stripping decomposes
/// Hangul syllables into jamo, which a Korean vocabulary does not hold.
pub(crate) fn wordpiece(
    layout: &ModelLayout,
    lower_case: bool,
    strip_accents: Option<bool>,
) -> Result<TokenizerOption> {
    TokenizerOption::from_file(
        ModelType::Bert,
        &layout.tokenizer.vocab.to_string_lossy(),
        None,
        lower_case,
        strip_accents,
        None,
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
