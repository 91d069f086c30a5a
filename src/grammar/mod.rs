//! Constrained decoding: output that follows a JSON schema, a Lark-style grammar or a regular
//! expression.
//!
//! [llguidance](https://github.com/guidance-ai/llguidance) decides, before each token, which
//! tokens keep the text inside the language. The engine asks for that mask while the GPU runs the
//! step's forward pass (the step's sampling is submitted on its own, after the mask is uploaded),
//! and the sampling kernel never chooses a token the mask leaves out.
//!
//! ```no_run
//! # use rwkv_wgpu::grammar::{Grammar, Grammars};
//! # use rwkv_wgpu::runtime::GenerateOptions;
//! # fn demo(tokenizer: &rwkv_wgpu::tokenizer::Tokenizer) -> rwkv_wgpu::Result<()> {
//! let grammars = Grammars::new(tokenizer, 65536)?; // once per model: it indexes the vocabulary
//! let schema = serde_json::json!({"type": "object", "properties": {"name": {"type": "string"}}});
//! let options = GenerateOptions { grammar: Some(grammars.compile(&Grammar::JsonSchema(schema))?), ..Default::default() };
//! # Ok(())
//! # }
//! ```

mod vocabulary;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// What the output must follow.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// JSON that validates against this schema (`{"type": "object"}` for any object), written
    /// without whitespace between its tokens unless the schema's `x-guidance` options (see
    /// llguidance) allow it.
    JsonSchema(serde_json::Value),
    /// A grammar in llguidance's Lark-like syntax (`start: ...`).
    Lark(String),
    /// Text that matches this regular expression, whole (Rust `regex` syntax).
    Regex(String),
}

impl Grammar {
    /// What kind of grammar it is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Grammar::JsonSchema(_) => "JSON schema",
            Grammar::Lark(_) => "grammar",
            Grammar::Regex(_) => "regular expression",
        }
    }

    fn to_llguidance(&self) -> TopLevelGrammar {
        match self {
            Grammar::JsonSchema(schema) => TopLevelGrammar::from_json_schema(compact(schema)),
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
            Grammar::Regex(regex) => TopLevelGrammar::from_regex(regex),
        }
    }
}

/// `schema`, asking for JSON without free whitespace unless its `x-guidance` options say
/// otherwise: a model that may write any whitespace between tokens can write nothing else.
fn compact(schema: &serde_json::Value) -> serde_json::Value {
    let mut schema = schema.clone();
    if let Some(object) = schema.as_object_mut() {
        object.entry("x-guidance").or_insert_with(|| serde_json::json!({"whitespace_flexible": false}));
    }
    schema
}

/// Compiles grammars for one vocabulary: a model's token ids and the bytes each stands for. Made
/// once per model (indexing 65536 tokens takes a moment); cheap to clone.
#[derive(Clone)]
pub struct Grammars {
    factory: Arc<ParserFactory>,
    /// The model's vocabulary: tokens at or above it are never allowed.
    vocab: usize,
    end: u32,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").field("vocab", &self.vocab).field("end", &self.end).finish()
    }
}

impl Grammars {
    /// Indexes the tokens of `tokenizer` for a model of `vocab` tokens. A tokenizer whose token
    /// bytes cannot be known (a Hugging Face decoder that is neither byte-level nor byte
    /// fallback) is an error.
    pub fn new(tokenizer: &Tokenizer, vocab: usize) -> Result<Grammars> {
        let tokens = vocabulary::TokenBytes::of(tokenizer, vocab)?;
        let end = tokens.end;
        let factory = tokens.into_factory()?;
        Ok(Grammars { factory: Arc::new(factory), vocab, end })
    }

    /// Compiles `grammar`; a bad schema, grammar or expression is an error that names the
    /// problem, before any token is generated.
    pub fn compile(&self, grammar: &Grammar) -> Result<CompiledGrammar> {
        let bad = |error: String| Error::Grammar(format!("the {}: {error}", grammar.kind()));
        // A grammar is input: a panic in the library on a strange one is its error, not ours.
        let parser = catch_unwind(AssertUnwindSafe(|| self.factory.create_parser(grammar.to_llguidance())))
            .map_err(|_| bad("the library failed on it".into()))?
            .map_err(|e| bad(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(error) = matcher.get_error() {
            return Err(bad(error));
        }
        Ok(CompiledGrammar {
            start: Arc::new(matcher),
            kind: grammar.kind(),
            vocab: self.vocab,
            end: self.end,
        })
    }
}

/// A grammar ready to constrain generations; each generation starts its own [`Constraint`].
#[derive(Clone)]
pub struct CompiledGrammar {
    start: Arc<Matcher>,
    kind: &'static str,
    vocab: usize,
    end: u32,
}

impl std::fmt::Debug for CompiledGrammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CompiledGrammar({})", self.kind)
    }
}

impl CompiledGrammar {
    /// A constraint at the start of the text.
    pub fn start(&self) -> Constraint {
        Constraint { matcher: Mutex::new(self.start.deep_clone()), vocab: self.vocab, end: self.end }
    }

    /// The token that ends the text: the tokenizer's end of text, or one past the model's
    /// vocabulary where it has none (the model cannot choose it: a grammar that can only end
    /// leaves no token, and the sampling kernel reports [`crate::kernels::Choice::NOTHING_ALLOWED`]).
    pub fn end_token(&self) -> u32 {
        self.end
    }
}

/// Where one sequence stands in its grammar. The engine reads its mask during a step
/// ([`Constraint::allowed_tokens`]); the generation tells it each token chosen
/// ([`Constraint::accept`]).
pub struct Constraint {
    matcher: Mutex<Matcher>,
    vocab: usize,
    end: u32,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("finished", &self.is_finished()).finish()
    }
}

impl Constraint {
    fn matcher(&self) -> MutexGuard<'_, Matcher> {
        self.matcher.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves past `token`, which the last mask allowed.
    pub fn accept(&self, token: u32) -> Result<()> {
        self.matcher().consume_token(token).map_err(|e| Error::Grammar(format!("token {token}: {e}")))
    }

    /// Whether the text is complete and nothing may follow (the end token was accepted, or the
    /// grammar allows no continuation).
    pub fn is_finished(&self) -> bool {
        self.matcher().is_stopped()
    }

    /// Whether `token` ends the text.
    pub fn is_end(&self, token: u32) -> bool {
        token == self.end
    }

    /// The tokens allowed next, as bits (token t: bit t % 32 of word t / 32) in `words`, which
    /// has room for the model's vocabulary; tokens beyond it are left out.
    pub fn allowed_tokens(&self, words: &mut [u32]) -> Result<()> {
        let mask = self.matcher().compute_mask_or_eos().map_err(|e| Error::Grammar(e.to_string()))?;
        let bits = mask.as_slice();
        for (at, word) in words.iter_mut().enumerate() {
            let first = at * 32;
            let valid = self.vocab.saturating_sub(first).min(32);
            let keep = if valid == 32 { u32::MAX } else { (1u32 << valid) - 1 };
            *word = bits.get(at).copied().unwrap_or(0) & keep;
        }
        Ok(())
    }

    /// Whether the library's token-by-token checker accepts `token` next: a second opinion on
    /// the mask (which is computed over the whole vocabulary at once), for tests.
    pub fn accepts(&self, token: u32) -> Result<bool> {
        let valid = self.matcher().validate_tokens(&[token]).map_err(|e| Error::Grammar(e.to_string()))?;
        Ok(valid == 1)
    }

    /// The allowed tokens as a list (for tests and tools; the engine uses the bits).
    pub fn allowed_list(&self) -> Result<Vec<u32>> {
        let mut words = vec![0; crate::kernels::mask_words(self.vocab)];
        self.allowed_tokens(&mut words)?;
        Ok((0..self.vocab as u32).filter(|&t| words[t as usize / 32] >> (t % 32) & 1 != 0).collect())
    }
}
