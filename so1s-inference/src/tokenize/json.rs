//! [`JsonTokenizer`]: a model's `tokenizer.json`, read by Hugging Face's `tokenizers` crate.

use super::{Encoded, Tokenize};
use serde_json::Value;
use so1s_core::model::read_json;
use so1s_core::{Error, Result};
use std::path::Path;
use tokenizers::{
    Decoder, EncodeInput, Encoding, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

/// `tokenizer.json` as transformers' fast tokenizer runs it with `truncation=True`: the
/// file's normalizer, pre-tokenizer, model and post-processor (its special tokens and
/// sentence-pair template), no padding, truncation at the model's length (longest first).
pub struct JsonTokenizer {
    tokenizer: Tokenizer,
    pad_id: i64,
    offsets: bool,
}

impl JsonTokenizer {
    /// Reads `path`, truncating at `max_len`; the padding token is `tokenizer_config.json`'s
    /// `pad_token` in `dir` when it names one, else the file's own padding, else id 0.
    pub fn from_file(path: &Path, dir: &Path, max_len: usize) -> Result<Self> {
        let mut tokenizer = Tokenizer::from_file(path)
            .map_err(|e| Error::InvalidModel(format!("reading {}: {e}", path.display())))?;
        let own_padding = tokenizer.get_padding().map(|padding| padding.pad_id);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| Error::InvalidModel(format!("truncating at {max_len} tokens: {e}")))?;
        let config = dir.join("tokenizer_config.json");
        let named = match config.is_file() {
            true => pad_token(&read_json(&config)?),
            false => None,
        };
        let pad_id = named
            .and_then(|token| tokenizer.token_to_id(&token))
            .or(own_padding)
            .unwrap_or(0);
        Ok(Self {
            tokenizer,
            pad_id: pad_id as i64,
            offsets: false,
        })
    }

    /// Whether [`Tokenize::encode`] gives each token's character span.
    pub fn keep_offsets(&mut self, offsets: bool) {
        self.offsets = offsets;
    }

    /// The id of the padding token.
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }
}

/// `tokenizer_config.json`'s `pad_token`: a string, or an added token's `content`.
fn pad_token(config: &Value) -> Option<String> {
    match config.get("pad_token")? {
        Value::String(token) => Some(token.clone()),
        other => other.get("content")?.as_str().map(str::to_owned),
    }
}

impl Tokenize for JsonTokenizer {
    fn token_ids(&self, texts: &[String]) -> Result<Vec<Vec<i64>>> {
        texts
            .iter()
            .map(|text| {
                let encoding = self.run(text.as_str(), false)?;
                Ok(encoding.get_ids().iter().map(|&id| id as i64).collect())
            })
            .collect()
    }

    fn encode(&self, texts: &[String]) -> Result<Vec<Encoded>> {
        texts
            .iter()
            .map(|text| {
                Ok(encoded(
                    &self.run(text.as_str(), self.offsets)?,
                    self.offsets,
                ))
            })
            .collect()
    }

    fn encode_pairs(&self, query: &str, texts: &[String]) -> Result<Vec<Encoded>> {
        texts
            .iter()
            .map(|text| Ok(encoded(&self.run((query, text.as_str()), false)?, false)))
            .collect()
    }

    fn join_tokens(&self, ids: &[i64]) -> String {
        let tokens: Vec<String> = ids
            .iter()
            .filter_map(|&id| self.tokenizer.id_to_token(id as u32))
            .collect();
        match self.tokenizer.get_decoder() {
            Some(decoder) => decoder
                .decode(tokens.clone())
                .unwrap_or_else(|_| tokens.join(" ")),
            None => tokens.join(" "),
        }
    }
}

impl JsonTokenizer {
    fn run<'s>(&self, input: impl Into<EncodeInput<'s>>, offsets: bool) -> Result<Encoding> {
        let encoded = match offsets {
            true => self.tokenizer.encode_char_offsets(input, true),
            false => self.tokenizer.encode_fast(input, true),
        };
        encoded.map_err(|e| Error::InvalidInput(format!("tokenizing: {e}")))
    }
}

/// `encoding` as the forward pass takes it, with its tokens' spans when `offsets`.
fn encoded(encoding: &Encoding, offsets: bool) -> Encoded {
    let ids = |values: &[u32]| values.iter().map(|&id| id as i64).collect();
    Encoded {
        ids: ids(encoding.get_ids()),
        type_ids: ids(encoding.get_type_ids()),
        offsets: match offsets {
            true => encoding
                .get_offsets()
                .iter()
                .zip(encoding.get_special_tokens_mask())
                .map(|(&span, &special)| (special == 0).then_some(span))
                .collect(),
            false => Vec::new(),
        },
    }
}
