//! The bytes each token id stands for, as llguidance indexes them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::ParserFactory;

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// llguidance's mark of a special token's bytes: such tokens are never text.
const SPECIAL: u8 = TokTrie::SPECIAL_TOKEN_MARKER;

/// One entry per token id, the model's whole vocabulary (and one more for a made-up end token
/// where the tokenizer has none).
pub(super) struct TokenBytes {
    words: Vec<Vec<u8>>,
    pub end: u32,
}

impl TokenBytes {
    pub fn of(tokenizer: &Tokenizer, vocab: usize) -> Result<TokenBytes> {
        let mut words = match tokenizer {
            Tokenizer::World(world) => {
                // World's ids are sparse: an id without bytes is no token.
                (0..vocab as u32).map(|id| world.decode_bytes(&[id]).unwrap_or_default()).collect()
            }
            Tokenizer::HuggingFace(hugging_face) => {
                let json = hugging_face
                    .inner()
                    .to_string(false)
                    .map_err(|e| Error::Tokenizer(format!("writing the tokenizer as JSON: {e}")))?;
                let json: serde_json::Value =
                    serde_json::from_str(&json).map_err(|e| Error::Tokenizer(e.to_string()))?;
                // llguidance asserts on some malformed vocabularies: a tokenizer file is input.
                let bytes =
                    catch_unwind(AssertUnwindSafe(|| llguidance::token_bytes_from_tokenizer_json(&json)))
                        .map_err(|_| Error::Tokenizer("its vocabulary could not be read as bytes".into()))?;
                bytes.map_err(|e| {
                    Error::Grammar(format!(
                        "constrained decoding needs the bytes of each token, which this tokenizer does not give \
                         (a byte-level or byte-fallback tokenizer does): {e}"
                    ))
                })?
            }
        };
        words.resize(vocab, Vec::new());
        let end = match tokenizer.end_of_text().filter(|&id| (id as usize) < vocab) {
            Some(id) => id,
            None => {
                words.push(Vec::new());
                vocab as u32
            }
        };
        // The end token is never text, whatever the tokenizer says of it.
        let named =
            String::from_utf8_lossy(&words[end as usize]).trim_start_matches(SPECIAL as char).to_string();
        let name = if named.is_empty() { "<|end|>".to_string() } else { named };
        words[end as usize] = [&[SPECIAL], name.as_bytes()].concat();
        Ok(TokenBytes { words, end })
    }

    pub fn into_factory(self) -> Result<ParserFactory> {
        let info = TokRxInfo::new(self.words.len() as u32, self.end);
        // The words come from a tokenizer file: the trie asserts on what it cannot index (e.g. a
        // token of over ~1 KB).
        let trie = catch_unwind(AssertUnwindSafe(|| TokTrie::from(&info, &self.words))).map_err(|_| {
            Error::Grammar("the grammar library could not index this vocabulary (a token too long?)".into())
        })?;
        let env: TokEnv = Arc::new(TrieTokenizer { trie });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| Error::Grammar(format!("indexing the vocabulary: {e}")))?;
        factory.quiet();
        Ok(factory)
    }
}

/// What llguidance asks of a tokenizer: the token trie, and a tokenization of bytes (greedy over
/// the trie; llguidance uses it only for literal text it may force, and forcing is not used here).
struct TrieTokenizer {
    trie: TokTrie,
}

impl TokenizerEnv for TrieTokenizer {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}
