//! The RWKV "World" tokenizer: greedy longest-prefix matching over raw UTF-8 bytes.
//!
//! This reproduces `TRIE_TOKENIZER` from the `rwkv` Python package (0.8.32) id for id. There is no
//! normalisation and no pre-tokenisation: at every position the longest vocabulary entry that is a
//! prefix of the remaining bytes wins. Every single byte is a token (ids 1–256), so any byte string
//! can be encoded and any token sequence decodes to bytes, though not always to valid UTF-8.

use std::fmt;
use std::ops::Range;

use super::python_literal::append_python_literal;
use crate::error::{Error, Result};

/// Embedded so the tokenizer works without any file next to the binary.
const EMBEDDED_VOCAB: &str = include_str!("../../assets/world/rwkv_vocab_v20230424.txt");
const EMBEDDED_VOCAB_NAME: &str = "rwkv_vocab_v20230424.txt";

/// Id 0 marks end of text. It has no bytes and is not listed in the vocabulary file.
pub const END_OF_TEXT: u32 = 0;

/// Rows in a World model's embedding and head: the 65,530 ids of the vocabulary padded to 2^16.
pub const WORLD_MODEL_VOCAB_SIZE: usize = 65536;

/// A vocabulary entry; its bytes are `bytes[start..end]` of the owning tokenizer.
#[derive(Clone, Copy)]
struct Entry {
    start: u32,
    end: u32,
    id: u32,
}

impl Entry {
    fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    fn len(self) -> usize {
        (self.end - self.start) as usize
    }
}

const NO_ENTRY: u32 = u32::MAX;
const MAX_ID: u32 = 1 << 24;

/// The World tokenizer. Cheap to share by reference; construction parses the vocabulary (~20 ms in release).
#[derive(Clone)]
pub struct WorldTokenizer {
    /// All token bytes laid end to end in the order of `sorted`.
    bytes: Vec<u8>,
    /// Entries in lexicographic byte order, so that the tokens sharing any prefix form one contiguous
    /// run, and the token equal to that prefix, if there is one, comes first in it. Encoding narrows
    /// such a run byte by byte instead of walking a pointer-heavy trie.
    sorted: Vec<Entry>,
    /// The token of each byte value, the match of last resort.
    single_bytes: Vec<Entry>,
    /// For each pair of bytes `first * 256 + second`, the run of `sorted` starting with them. Skipping
    /// the two widest levels of the search this way makes encoding several times faster.
    runs_by_two_bytes: Vec<Range<u32>>,
    /// Index into `sorted` for every id below `vocab_size`, or `NO_ENTRY` for ids without bytes.
    entry_by_id: Vec<u32>,
}

impl fmt::Debug for WorldTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorldTokenizer")
            .field("tokens", &self.sorted.len())
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl WorldTokenizer {
    /// The tokenizer of the RWKV World models (vocabulary `rwkv_vocab_v20230424`), built into the binary.
    pub fn new() -> Result<Self> {
        Self::parse(EMBEDDED_VOCAB, EMBEDDED_VOCAB_NAME)
    }

    /// A tokenizer from the text of a vocabulary file in the World format: one token per line,
    /// `<id> <Python str or bytes literal> <length in bytes>`. Ids must be unique and at least 1 (0 is
    /// end of text), tokens must be distinct, and every one of the 256 single bytes must be a token.
    pub fn from_vocab_text(text: &str) -> Result<Self> {
        Self::parse(text, "World vocabulary")
    }

    fn parse(text: &str, source: &str) -> Result<Self> {
        let malformed = |reason: String| Error::malformed(source, reason);
        let mut bytes = Vec::with_capacity(text.len() / 2);
        let mut entries = Vec::with_capacity(70_000);
        // `lines` also strips the CR of the CRLF line ends the published file uses.
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let start = bytes.len();
            let id = parse_vocab_line(line, &mut bytes)
                .map_err(|reason| malformed(format!("line {}: {reason}", index + 1)))?;
            entries.push(Entry { start: offset(start, source)?, end: offset(bytes.len(), source)?, id });
        }
        Self::build(bytes, entries, source)
    }

    /// The World vocabulary as llama.cpp's converter stores it in a GGUF file: token `i` at index
    /// `i`, each as the inside of Python's `repr()` of its bytes, with type 1 (normal) for the
    /// vocabulary's tokens; id 0 and the padding have other types.
    pub fn from_gguf_tokens(tokens: &[String], types: &[i64], source: &str) -> Result<Self> {
        const NORMAL: i64 = 1;
        let mut bytes = Vec::new();
        let mut entries = Vec::new();
        for (id, token) in tokens.iter().enumerate() {
            if types.get(id).is_some_and(|&kind| kind != NORMAL) || id == END_OF_TEXT as usize {
                continue;
            }
            let start = bytes.len();
            // repr() quotes with ' unless the bytes hold a ' and no ".
            if append_python_literal(&format!("b'{token}'"), &mut bytes).is_err() {
                bytes.truncate(start);
                append_python_literal(&format!("b\"{token}\""), &mut bytes)
                    .map_err(|reason| Error::malformed(source, format!("token {id}: {reason}")))?;
            }
            let id = u32::try_from(id).ok().filter(|&id| id < MAX_ID);
            let id = id.ok_or_else(|| Error::malformed(source, "more tokens than a vocabulary holds"))?;
            entries.push(Entry { start: offset(start, source)?, end: offset(bytes.len(), source)?, id });
        }
        Self::build(bytes, entries, source)
    }

    /// The tokenizer of `entries`, whose bytes are in `bytes`.
    fn build(bytes: Vec<u8>, entries: Vec<Entry>, source: &str) -> Result<Self> {
        let malformed = |reason: String| Error::malformed(source, reason);
        // Comparing a big-endian prefix first avoids most slice comparisons; zero padding cannot
        // misorder because a tie falls through to the full comparison.
        let sort_key = |entry: &Entry| {
            let token = &bytes[entry.range()];
            let mut prefix = [0u8; 8];
            let prefix_len = token.len().min(8);
            prefix[..prefix_len].copy_from_slice(&token[..prefix_len]);
            u64::from_be_bytes(prefix)
        };
        let mut keyed: Vec<(u64, Entry)> = entries.iter().map(|&entry| (sort_key(&entry), entry)).collect();
        keyed.sort_unstable_by(|(key_a, a), (key_b, b)| {
            key_a.cmp(key_b).then_with(|| bytes[a.range()].cmp(&bytes[b.range()]))
        });

        let highest_id = entries.iter().map(|entry| entry.id as usize).max().unwrap_or(0);
        let vocab_size = WORLD_MODEL_VOCAB_SIZE.max(highest_id + 1);
        let mut entry_by_id = vec![NO_ENTRY; vocab_size];
        let mut sorted_bytes = Vec::with_capacity(bytes.len());
        let mut sorted = Vec::with_capacity(keyed.len());
        let mut single_bytes = vec![None; 256];
        let mut runs_by_two_bytes = vec![0..0; 1 << 16];
        let mut previous: Option<(&[u8], u32)> = None;
        for (index, &(_, entry)) in keyed.iter().enumerate() {
            let token = &bytes[entry.range()];
            if let Some((previous_token, previous_id)) = previous.filter(|&(previous, _)| previous == token) {
                let (first, second) = (previous_id.min(entry.id), previous_id.max(entry.id));
                return Err(malformed(format!(
                    "ids {first} and {second} are the same token {previous_token:?}"
                )));
            }
            previous = Some((token, entry.id));
            let slot = &mut entry_by_id[entry.id as usize];
            if *slot != NO_ENTRY {
                return Err(malformed(format!("id {} appears twice", entry.id)));
            }
            let index = offset(index, source)?;
            *slot = index;
            let start = offset(sorted_bytes.len(), source)?;
            sorted_bytes.extend_from_slice(token);
            let entry = Entry { start, end: offset(sorted_bytes.len(), source)?, id: entry.id };
            sorted.push(entry);
            match *token {
                [byte] => single_bytes[usize::from(byte)] = Some(entry),
                [first, second, ..] => {
                    // Sorting made every pair's run contiguous, so it grows one entry at a time.
                    let run = &mut runs_by_two_bytes[usize::from(first) << 8 | usize::from(second)];
                    if run.start == run.end {
                        *run = index..index;
                    }
                    run.end = index + 1;
                }
                [] => return Err(malformed(format!("token {} is empty", entry.id))),
            }
        }
        let single_bytes = (0..=255u8)
            .zip(single_bytes)
            .map(|(byte, entry)| {
                entry.ok_or_else(|| malformed(format!("byte {byte:#04x} is not a token by itself")))
            })
            .collect::<Result<_>>()?;

        Ok(Self { bytes: sorted_bytes, sorted, single_bytes, runs_by_two_bytes, entry_by_id })
    }

    /// The number of token ids a model using this vocabulary has (65536 for the World vocabulary, whose
    /// highest id is 65529). Ids below this without bytes (0 and the padding ids) decode to nothing.
    pub fn vocab_size(&self) -> usize {
        self.entry_by_id.len()
    }

    /// The ids of the UTF-8 bytes of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_bytes(text.as_bytes())
    }

    /// The ids of arbitrary bytes (which need not be UTF-8), matched greedily, longest token first.
    pub fn encode_bytes(&self, input: &[u8]) -> Vec<u32> {
        // World text averages a little over three bytes per token.
        let mut ids = Vec::with_capacity(input.len() / 3 + 1);
        let mut position = 0;
        while position < input.len() {
            let entry = self.longest_prefix(&input[position..]);
            ids.push(entry.id);
            position += entry.len();
        }
        ids
    }

    /// The longest token that `input` (non-empty) starts with.
    fn longest_prefix(&self, input: &[u8]) -> Entry {
        let single = self.single_bytes[usize::from(input[0])];
        let Some(&second) = input.get(1) else {
            return single;
        };
        let run = &self.runs_by_two_bytes[usize::from(input[0]) << 8 | usize::from(second)];
        if run.is_empty() {
            return single;
        }
        let (mut low, mut high) = (run.start as usize, run.end as usize);
        let mut best = if self.sorted[low].len() == 2 { self.sorted[low] } else { single };
        for (depth, &byte) in input.iter().enumerate().skip(2) {
            // Every entry in low..high starts with input[..depth]; only the first may be that short.
            let longer_from = if self.sorted[low].len() == depth { low + 1 } else { low };
            let candidates = &self.sorted[longer_from..high];
            let byte_at_depth = |entry: &Entry| self.bytes[entry.start as usize + depth];
            let below = candidates.partition_point(|entry| byte_at_depth(entry) < byte);
            let through = below + candidates[below..].partition_point(|entry| byte_at_depth(entry) == byte);
            if below == through {
                break;
            }
            (low, high) = (longer_from + below, longer_from + through);
            if self.sorted[low].len() == depth + 1 {
                best = self.sorted[low];
            }
        }
        best
    }

    /// The bytes of one token: empty for end of text and for padding ids that have no token.
    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        let index = *self
            .entry_by_id
            .get(id as usize)
            .ok_or(Error::TokenOutOfRange { id, vocab: self.vocab_size() })?;
        Ok(match self.sorted.get(index as usize) {
            Some(entry) => &self.bytes[entry.range()],
            None => &[],
        })
    }

    /// The exact bytes of `ids`, which may end inside a UTF-8 character or be no UTF-8 at all.
    /// Ids 0 (end of text) and 65530..65536 (padding) contribute nothing; higher ids are an error.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(out)
    }

    /// The text of `ids`, with every invalid UTF-8 sequence replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(invalid) => String::from_utf8_lossy(invalid.as_bytes()).into_owned(),
        })
    }
}

/// Splits `<id> <literal> <length>` and appends the token to `bytes`. The literal may itself contain
/// spaces, so the id ends at the first space and the length starts after the last, as in the official
/// loader.
fn parse_vocab_line(line: &str, bytes: &mut Vec<u8>) -> Result<u32, String> {
    let (id_text, rest) = line.split_once(' ').ok_or("expected `<id> <literal> <length>`")?;
    let (literal, length_text) = rest.rsplit_once(' ').ok_or("expected `<id> <literal> <length>`")?;
    let id: u32 = id_text.trim().parse().map_err(|_| format!("`{id_text}` is not a token id"))?;
    if id == END_OF_TEXT {
        return Err("id 0 is reserved for end of text".into());
    }
    // Ids index a dense table, so an absurd id must not turn into an absurd allocation.
    if id >= MAX_ID {
        return Err(format!("id {id} is not below {MAX_ID}"));
    }
    let length: usize = length_text.trim().parse().map_err(|_| format!("`{length_text}` is not a length"))?;
    let start = bytes.len();
    append_python_literal(literal.trim(), bytes)?;
    let parsed_length = bytes.len() - start;
    if parsed_length != length {
        return Err(format!("token {id} has {parsed_length} bytes but the file says {length}"));
    }
    Ok(id)
}

/// Offsets are stored as u32 to halve the index; a vocabulary of 4 GiB is not a vocabulary.
fn offset(value: usize, source: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::malformed(source, "vocabulary larger than 4 GiB"))
}
