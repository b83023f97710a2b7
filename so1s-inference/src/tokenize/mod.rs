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

use so1s_core::model::{ModelLayout, Task};
use so1s_core::{Error, Result};

/// Texts to the token ids a model's forward pass takes. Shared by the request handlers
/// (which tokenize a request once, on their own threads) and the model thread.
pub trait Tokenize: Send + Sync {
    /// Each text's token ids, special tokens in, truncated at the model's length.
    fn token_ids(&self, texts: &[String]) -> Result<Vec<Vec<i64>>>;

    /// Each text encoded: its ids, and its tokens' character spans where the tokenizer
    /// keeps them (a token classifier's does).
    fn encode(&self, texts: &[String]) -> Result<Vec<Encoded>> {
        Ok(self
            .token_ids(texts)?
            .into_iter()
            .map(|ids| Encoded {
                ids,
                ..Encoded::default()
            })
            .collect())
    }

    /// The text of tokens `ids` as the tokenizer's decoder joins them (transformers'
    /// `convert_tokens_to_string`): a token classifier's entity words.
    fn join_tokens(&self, ids: &[i64]) -> String {
        let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
        ids.join(" ")
    }

    /// `query` paired with each of `texts` (a cross-encoder's input): the pair's ids with
    /// the family's separators and its segment ids, truncated longest first.
    fn encode_pairs(&self, query: &str, texts: &[String]) -> Result<Vec<Encoded>> {
        let _ = (query, texts);
        Err(Error::InvalidInput(
            "this model's tokenizer does not take sentence pairs".into(),
        ))
    }
}

/// One text (or pair of texts) as the forward pass takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens in.
    pub ids: Vec<i64>,
    /// Segment (token type) ids: 0 for the first text of a pair, 1 for the second. Empty:
    /// all 0.
    pub type_ids: Vec<i64>,
    /// Each token's span in the text, in characters (Unicode scalar values), `None` for
    /// special tokens. Empty unless the tokenizer keeps offsets.
    pub offsets: Vec<Option<(usize, usize)>>,
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

    fn encode_pairs(&self, query: &str, texts: &[String]) -> Result<Vec<Encoded>> {
        self.0.encode_pairs(query, texts)
    }

    fn join_tokens(&self, ids: &[i64]) -> String {
        self.0.join_tokens(ids)
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
    // A token classifier answers with character offsets into the text.
    let offsets = layout.task == Task::TokenClassification;
    if let Some(json) = &layout.tokenizer.json {
        let mut tokenizer = JsonTokenizer::from_file(json, &layout.dir, max_len)?;
        tokenizer.keep_offsets(offsets);
        let pad_id = tokenizer.pad_id();
        return Ok(Chosen {
            tokenizer: Box::new(tokenizer),
            pad_id,
        });
    }
    let mut tokenizer = VocabTokenizer::new(
        vocab_tokenizer(layout, lower_case, strip_accents)?,
        max_len,
        composes(layout.architecture),
    );
    tokenizer.keep_offsets(offsets);
    Ok(Chosen {
        pad_id: tokenizer.pad_id().unwrap_or(0),
        tokenizer: Box::new(tokenizer),
    })
}
