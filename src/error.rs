//! The library's one error type. Every message names what went wrong and where, in one line.

use std::path::PathBuf;

/// Everything that can go wrong in rwkv-wgpu.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file failed at the operating-system level.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A model, state or tokenizer file is not what it claims to be (truncated, corrupt, wrong format).
    #[error("{file}: {reason}")]
    Malformed { file: String, reason: String },

    /// A tensor's structure is wrong: its bytes do not match its shape, or its shape is not one
    /// any version uses.
    #[error("tensor `{name}`: {reason}")]
    MalformedTensor { name: String, reason: String },

    /// A tensor the model needs is absent from the file.
    #[error("missing tensor `{name}`{hint}")]
    MissingTensor { name: String, hint: String },

    /// A tensor is present but has the wrong shape.
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    Shape { name: String, expected: Vec<usize>, found: Vec<usize> },

    /// A tensor is stored in an element type we cannot use.
    #[error("tensor `{name}`: unsupported dtype {dtype} (expected f16, bf16 or f32)")]
    DType { name: String, dtype: String },

    /// A tensor holds values the engine cannot run: NaN or infinite weights (a damaged file, or
    /// one saved from a diverged training run), or matrix weights beyond the range of f16 that
    /// were to be stored in f16 or with f16 scales.
    #[error("tensor `{name}`: {reason}")]
    BadWeights { name: String, reason: String },

    /// The file holds a model layout this engine does not run.
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),

    /// No GPU adapter matched the request.
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),

    /// The GPU rejected an operation or was lost.
    #[error("GPU error: {0}")]
    Gpu(String),

    /// The model computed NaN or infinite logits (its weights or its state overflowed): there is
    /// no next token to choose.
    #[error("the model produced NaN or infinite logits: {0}")]
    NonFiniteLogits(String),

    /// An invariant of rwkv-wgpu itself does not hold: a bug, to be reported.
    #[error("internal error (a bug in rwkv-wgpu): {0}")]
    Internal(String),

    /// The model needs more of the device than it has.
    #[error("model does not fit the device: {0}")]
    TooBig(String),

    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range: the vocabulary has {vocab} tokens (ids 0..{vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },

    /// A tokenizer could not be loaded or could not encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A JSON schema, grammar or regular expression that cannot constrain generation, or a
    /// tokenizer whose token bytes constrained decoding cannot know.
    #[error("constrained decoding: {0}")]
    Grammar(String),

    /// A caller passed an argument outside its domain.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn malformed(file: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Malformed { file: file.into(), reason: reason.into() }
    }

    pub(crate) fn malformed_tensor(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::MalformedTensor { name: name.into(), reason: reason.into() }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
