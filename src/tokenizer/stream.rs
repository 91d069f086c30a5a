//! Turning tokens into text as they arrive, without ever printing half a character.
//!
//! A single token may hold only part of a UTF-8 character (World splits rare characters and emoji
//! into byte tokens), and with Hugging Face decoders the text of a token can depend on its
//! neighbours (a leading space is dropped at the start of a decode). Both streams below emit exactly
//! the text the whole sequence decodes to, only in pieces.

use super::{HuggingFaceTokenizer, Tokenizer};
use crate::error::Result;

/// Collects bytes and hands out the longest complete UTF-8 text so far, holding back an incomplete
/// character until its remaining bytes arrive. Invalid sequences become U+FFFD exactly as
/// [`String::from_utf8_lossy`] would make them for the whole byte string.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `bytes` and returns all text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        let mut consumed = 0;
        loop {
            let rest = &self.pending[consumed..];
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    consumed = self.pending.len();
                    break;
                }
                Err(error) => {
                    let valid_len = error.valid_up_to();
                    // Cannot produce U+FFFD: these bytes were just checked to be valid.
                    text.push_str(&String::from_utf8_lossy(&rest[..valid_len]));
                    consumed += valid_len;
                    match error.error_len() {
                        // Only the end is cut short: later bytes may complete the character.
                        None => break,
                        Some(invalid_len) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            consumed += invalid_len;
                        }
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        text
    }

    /// Returns whatever is held back, an unfinished character becoming U+FFFD, and starts afresh.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }

    /// Bytes held back because they may be the start of a character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }
}

/// Streaming decoder for either kind of tokenizer; obtain one with [`Tokenizer::stream`].
///
/// ```no_run
/// # fn main() -> rwkv_wgpu::error::Result<()> {
/// use rwkv_wgpu::tokenizer::Tokenizer;
/// let tokenizer = Tokenizer::world()?;
/// let mut stream = tokenizer.stream();
/// for id in tokenizer.encode("naïve café ☕")? {
///     print!("{}", stream.push(id)?);
/// }
/// println!("{}", stream.finish()?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TextStream<'t> {
    tokenizer: &'t Tokenizer,
    utf8: Utf8Stream,
    window: IdWindow,
}

/// Hugging Face decoders turn ids into strings directly, so their stream re-decodes a short window:
/// `ids[..read]` has been emitted, and `ids[..prefix]` is kept only as context so that `ids[prefix..]`
/// decodes the way it would in the middle of the whole sequence.
#[derive(Debug, Default)]
struct IdWindow {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl IdWindow {
    fn push(&mut self, tokenizer: &HuggingFaceTokenizer, id: u32) -> Result<String> {
        // Checked before the id joins the window, so that a rejected id does not poison later ones.
        tokenizer.check_ids(&[id])?;
        self.ids.push(id);
        let emitted = tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let extended = tokenizer.decode(&self.ids[self.prefix..])?;
        // A trailing U+FFFD is usually a byte-fallback character still missing bytes.
        if extended.len() <= emitted.len() || extended.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(String::new());
        }
        let Some(new_text) = extended.get(emitted.len()..) else {
            return Ok(String::new());
        };
        let new_text = new_text.to_owned();
        self.ids.drain(..self.prefix);
        self.prefix = self.read - self.prefix;
        self.read = self.ids.len();
        Ok(new_text)
    }

    fn finish(&mut self, tokenizer: &HuggingFaceTokenizer) -> Result<String> {
        let emitted = tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let extended = tokenizer.decode(&self.ids[self.prefix..])?;
        let rest = extended.get(emitted.len()..).unwrap_or_default().to_owned();
        *self = Self::default();
        Ok(rest)
    }
}

impl<'t> TextStream<'t> {
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        Self { tokenizer, utf8: Utf8Stream::new(), window: IdWindow::default() }
    }

    /// Feeds one token and returns the text that became complete (often empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        match self.tokenizer {
            Tokenizer::World(world) => Ok(self.utf8.push(world.token_bytes(id)?)),
            Tokenizer::HuggingFace(hugging_face) => self.window.push(hugging_face, id),
        }
    }

    /// Returns the text still held back (an unfinished character becomes U+FFFD) and starts afresh.
    pub fn finish(&mut self) -> Result<String> {
        match self.tokenizer {
            Tokenizer::World(_) => Ok(self.utf8.finish()),
            Tokenizer::HuggingFace(hugging_face) => self.window.finish(hugging_face),
        }
    }
}
