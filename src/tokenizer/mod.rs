//! Text to token ids and back: the RWKV World tokenizer built in, or any Hugging Face `tokenizer.json`.

mod hugging_face;
mod python_literal;
mod stream;
mod world;

use std::path::Path;

pub use hugging_face::HuggingFaceTokenizer;
pub use stream::{TextStream, Utf8Stream};
pub use world::{WorldTokenizer, END_OF_TEXT, WORLD_MODEL_VOCAB_SIZE};

use crate::error::{Error, Result};

/// The tokenizer a model is paired with.
#[derive(Debug, Clone)]
pub enum Tokenizer {
    World(WorldTokenizer),
    /// Boxed because the `tokenizers` crate's type is large and this one is passed around by value.
    HuggingFace(Box<HuggingFaceTokenizer>),
}

impl Tokenizer {
    /// The built-in tokenizer of the RWKV World models.
    pub fn world() -> Result<Self> {
        Ok(Tokenizer::World(WorldTokenizer::new()?))
    }

    /// Loads a tokenizer file: a World-format vocabulary if the name ends in `.txt`, otherwise a
    /// Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if path.extension().is_some_and(|extension| extension.eq_ignore_ascii_case("txt")) {
            let text = std::fs::read_to_string(path).map_err(|error| Error::io(path, error))?;
            let world = WorldTokenizer::from_vocab_text(&text).map_err(|error| match error {
                Error::Malformed { reason, .. } => Error::malformed(path.display().to_string(), reason),
                other => other,
            })?;
            return Ok(Tokenizer::World(world));
        }
        Ok(Tokenizer::HuggingFace(Box::new(HuggingFaceTokenizer::from_file(path)?)))
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::World(world) => Ok(world.encode(text)),
            Tokenizer::HuggingFace(hugging_face) => hugging_face.encode(text),
        }
    }

    /// The text of `ids`; invalid UTF-8 (World tokens can split characters) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::World(world) => world.decode(ids),
            Tokenizer::HuggingFace(hugging_face) => hugging_face.decode(ids),
        }
    }

    /// The exact bytes of `ids`. Hugging Face decoders produce text, so for them this is the UTF-8
    /// of [`Tokenizer::decode`].
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        match self {
            Tokenizer::World(world) => world.decode_bytes(ids),
            Tokenizer::HuggingFace(hugging_face) => Ok(hugging_face.decode(ids)?.into_bytes()),
        }
    }

    /// The number of ids a model paired with this tokenizer must accept: 65536 for World.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::World(world) => world.vocab_size(),
            Tokenizer::HuggingFace(hugging_face) => hugging_face.vocab_size(),
        }
    }

    /// The id that ends a text, where one is known: 0 for World; for Hugging Face, the first of
    /// `<|endoftext|>`, `<|end_of_text|>`, `</s>`, `<eos>` that the vocabulary has.
    pub fn end_of_text(&self) -> Option<u32> {
        match self {
            Tokenizer::World(_) => Some(END_OF_TEXT),
            Tokenizer::HuggingFace(hugging_face) => hugging_face.end_of_text(),
        }
    }

    /// A decoder that turns ids into text one at a time, never splitting a character.
    pub fn stream(&self) -> TextStream<'_> {
        TextStream::new(self)
    }
}
