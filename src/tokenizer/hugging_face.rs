//! Tokenizers in the Hugging Face `tokenizer.json` format, through the `tokenizers` crate.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

/// Names that tokenizers conventionally give their end-of-text token, most specific first.
const END_OF_TEXT_NAMES: [&str; 4] = ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"];

/// A Hugging Face tokenizer with the conventions of this crate: encoding adds no special tokens (the
/// text is the whole prompt, as with World), and decoding keeps them, so decode inverts encode.
#[derive(Clone)]
pub struct HuggingFaceTokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
}

impl fmt::Debug for HuggingFaceTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HuggingFaceTokenizer").field("vocab_size", &self.vocab_size).finish()
    }
}

impl HuggingFaceTokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let json = std::fs::read(path).map_err(|error| Error::io(path, error))?;
        Self::from_json(&json).map_err(|error| match error {
            Error::Tokenizer(reason) => Error::malformed(path.display().to_string(), reason),
            other => other,
        })
    }

    /// Parses the contents of a `tokenizer.json`.
    pub fn from_json(json: &[u8]) -> Result<Self> {
        let inner =
            tokenizers::Tokenizer::from_bytes(json).map_err(|error| Error::Tokenizer(error.to_string()))?;
        Ok(Self::from_tokenizer(inner))
    }

    pub fn from_tokenizer(mut inner: tokenizers::Tokenizer) -> Self {
        // Text is read whole: a file's truncation or padding (common in exported tokenizers) would
        // cut or pad every prompt unseen, and a truncation stride beyond its length panics.
        let _cleared = inner.with_truncation(None);
        inner.with_padding(None);
        // Ids may be sparse, so the size a model needs is one past the highest, not the entry count.
        let vocab_size = inner.get_vocab(true).values().max().map_or(0, |&highest| highest as usize + 1);
        Self { inner, vocab_size }
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// One past the highest id, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(|error| Error::Tokenizer(error.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Unknown ids are an error here; the `tokenizers` crate would silently drop them.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.check_ids(ids)?;
        self.inner.decode(ids, false).map_err(|error| Error::Tokenizer(error.to_string()))
    }

    pub(crate) fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            Some(&id) => Err(Error::TokenOutOfRange { id, vocab: self.vocab_size }),
            None => Ok(()),
        }
    }

    /// The id of the first conventionally named end-of-text token the vocabulary has, if any.
    pub fn end_of_text(&self) -> Option<u32> {
        END_OF_TEXT_NAMES.iter().find_map(|name| self.inner.token_to_id(name))
    }
}
