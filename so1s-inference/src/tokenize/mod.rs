//! Texts to token ids, as Hugging Face's tokenizers make them: [`Tokenize`], the contract a
//! request is tokenized through once, before it reaches the model thread, and its two
//! implementations:
//!
//! - [`JsonTokenizer`]: a model's `tokenizer.json` read by Hugging Face's own Rust
//!   `tokenizers` — the same code transformers' fast tokenizers run, so the same ids, for
//!   every family. Taken whenever a model ships the file.
//! - [`VocabTokenizer`]: rust_tokenizers over the older vocabulary files (WordPiece's
//!   `vocab.txt`, BPE's `vocab.json` and `merges.txt`, sentencepiece models), for models
//!   that ship no `tokenizer.json`.

mod json;
mod vocab;

pub use json::JsonTokenizer;
pub use vocab::VocabTokenizer;
pub(crate) use vocab::{composes, rust_bert_type, vocab_tokenizer};

use so1s_core::model::ModelLayout;
use so1s_core::Result;

/// Texts to the token ids a model's forward pass takes. Shared by the request handlers
/// (which tokenize a request once, on their own threads) and the model thread.
pub trait Tokenize: Send + Sync {
    /// Each text's token ids, special tokens in, truncated at the model's length.
    fn token_ids(&self, texts: &[String]) -> Result<Vec<Vec<i64>>>;
}

/// A tokenizer that strips each text's surrounding whitespace first, as
/// sentence-transformers does before tokenizing.
pub(crate) struct Stripped(pub(crate) Box<dyn Tokenize>);

impl Tokenize for Stripped {
    fn token_ids(&self, texts: &[String]) -> Result<Vec<Vec<i64>>> {
        match texts.iter().any(|t| t.trim() != t) {
            true => {
                let stripped: Vec<String> = texts.iter().map(|t| t.trim().to_owned()).collect();
                self.0.token_ids(&stripped)
            }
            false => self.0.token_ids(texts),
        }
    }
}

/// A tokenizer for so1s's own encoder with its padding id.
pub(crate) struct Chosen {
    pub(crate) tokenizer: Box<dyn Tokenize>,
    pub(crate) pad_id: i64,
}

/// The tokenizer of `layout` for so1s's own encoder, truncating at `max_len`:
/// `tokenizer.json` when the model ships it, else its older vocabulary files (lower-casing
/// and accents as `lower_case` and `strip_accents` say).
pub(crate) fn for_encoder(
    layout: &ModelLayout,
    max_len: usize,
    lower_case: bool,
    strip_accents: Option<bool>,
) -> Result<Chosen> {
    if let Some(json) = &layout.tokenizer.json {
        let tokenizer = JsonTokenizer::from_file(json, &layout.dir, max_len)?;
        let pad_id = tokenizer.pad_id();
        return Ok(Chosen {
            tokenizer: Box::new(tokenizer),
            pad_id,
        });
    }
    let tokenizer = VocabTokenizer::new(
        vocab_tokenizer(layout, lower_case, strip_accents)?,
        max_len,
        composes(layout.architecture),
    );
    Ok(Chosen {
        pad_id: tokenizer.pad_id().unwrap_or(0),
        tokenizer: Box::new(tokenizer),
    })
}
