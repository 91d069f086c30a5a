//! Model files as sources of named tensors.
//!
//! Every file format (safetensors, PyTorch `.pth`, GGUF, a Hugging Face folder of shards)
//! implements [`TensorSource`]: names, dtypes, shapes and little-endian bytes in row-major order.
//! [`layout`] presents other projects' names (Hugging Face, llama.cpp) as the official ones, so
//! everything above this module is format-blind; validation of presence, shape and dtype happens
//! once, in `model::loader`.

mod folder;
pub mod gguf;
pub mod layout;
mod pickle;
pub mod progress;
mod pth;
pub mod quantized;
mod safetensors;

use std::borrow::Cow;
use std::path::Path;

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::quant::MatrixFormat;

pub use self::pth::PthFile;
pub use self::safetensors::SafetensorsFile;

/// Element type of a stored tensor. Only the float types are loadable as weights; the others
/// exist so that error messages can say what was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F16,
    BF16,
    F32,
    /// Any other element type, by its name in the file (e.g. "I64", "F64").
    Other(&'static str),
}

impl DType {
    /// Bytes per element, for the float types we read.
    pub fn size(self) -> Option<usize> {
        match self {
            DType::F16 | DType::BF16 => Some(2),
            DType::F32 => Some(4),
            DType::Other(_) => None,
        }
    }

    /// The matrix format that holds this type's values exactly (f16 for types that cannot load).
    pub fn exact_format(self) -> MatrixFormat {
        match self {
            DType::F32 => MatrixFormat::F32,
            DType::BF16 => MatrixFormat::Bf16,
            DType::F16 | DType::Other(_) => MatrixFormat::F16,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DType::F16 => f.write_str("f16"),
            DType::BF16 => f.write_str("bf16"),
            DType::F32 => f.write_str("f32"),
            DType::Other(name) => f.write_str(name),
        }
    }
}

/// One tensor as stored: its element type, shape, and row-major little-endian bytes.
#[derive(Debug, Clone)]
pub struct TensorData<'a> {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Cow<'a, [u8]>,
}

impl TensorData<'_> {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements converted to f32 (exact for f16, bf16 and f32). `name` is used in errors.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        let b = &self.bytes[..];
        let out = match self.dtype {
            DType::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            DType::F16 => b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::BF16 => b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::Other(dtype) => return Err(Error::DType { name: name.into(), dtype: dtype.into() }),
        };
        Ok(out)
    }
}

/// A file of named tensors.
pub trait TensorSource: Send + Sync {
    /// Short name of the format, for `info` ("safetensors", "pth").
    fn format(&self) -> &'static str;
    /// All tensor names in the file.
    fn names(&self) -> Vec<String>;
    /// Element type and shape of one tensor, without touching its bytes.
    fn meta(&self, name: &str) -> Option<(DType, Vec<usize>)>;
    /// One tensor's data. Borrowed from the memory map where the layout allows it.
    fn tensor(&self, name: &str) -> Result<TensorData<'_>>;
    /// A matrix the file holds already quantized (written by `rwkv-wgpu quantize`), if this one is.
    fn packed(&self, _name: &str) -> Result<Option<crate::quant::PackedMatrix>> {
        Ok(None)
    }
    /// Whose names the file uses, for `info`: "official", or the project whose layout was mapped.
    fn layout(&self) -> &'static str {
        "official"
    }
    /// How a tensor is stored in the file, for `info` ("bf16", or a GGUF block type like "Q4_K").
    fn stored_type(&self, name: &str) -> Option<String> {
        self.meta(name).map(|(dtype, _)| dtype.to_string())
    }
    /// Whether the file holds a tensor in a quantized type (GGUF blocks), which reading decodes.
    fn is_quantized(&self, _name: &str) -> bool {
        false
    }
    /// The tokenizer the file carries or sits beside (GGUF metadata, a Hugging Face folder's
    /// `tokenizer.json`), if any.
    fn tokenizer(&self) -> Option<Result<crate::tokenizer::Tokenizer>> {
        None
    }
}

/// The bytes of a model file: memory-mapped from disk, or already in memory (a model built into
/// a binary, a file a browser handed over).
pub enum FileBytes {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
    Static(&'static [u8]),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            FileBytes::Mapped(map) => map,
            FileBytes::Static(bytes) => bytes,
            FileBytes::Owned(bytes) => bytes,
        }
    }
}

/// Opens a model file, or a Hugging Face folder (config.json, one or several safetensors shards),
/// choosing the reader by the file's first bytes rather than its name, and presents its tensors
/// under the official names.
pub fn open(path: &Path) -> Result<Box<dyn TensorSource>> {
    if path.is_dir() {
        return layout::official(folder::open(path)?);
    }
    open_file(path)
}

/// Opens a safetensors or `.pth` file with its own names (a LoRA adapter, whose names are
/// mapped one by one).
pub fn open_raw(path: &Path) -> Result<Box<dyn TensorSource>> {
    raw_from_bytes(path.display().to_string(), file_bytes(path)?)
}

/// Opens one file (see [`open`]).
fn open_file(path: &Path) -> Result<Box<dyn TensorSource>> {
    from_bytes(path.display().to_string(), file_bytes(path)?)
}

/// Reads a model file held in memory; `name` is what error messages call it.
pub fn from_bytes(name: impl Into<String>, bytes: FileBytes) -> Result<Box<dyn TensorSource>> {
    let name = name.into();
    if bytes.is_empty() {
        return Err(Error::malformed(name, "the file is empty"));
    }
    if bytes.starts_with(b"version https://git-lfs") {
        return Err(Error::malformed(
            name,
            "this is a git-lfs pointer file, not the model: fetch the real file with `git lfs pull` or download it directly",
        ));
    }
    if bytes.starts_with(gguf::MAGIC) {
        return layout::from_gguf(gguf::GgufFile::from_bytes(name, bytes)?);
    }
    layout::official(raw_from_bytes(name, bytes)?)
}

/// A safetensors or `.pth` file with its own names.
fn raw_from_bytes(name: String, bytes: FileBytes) -> Result<Box<dyn TensorSource>> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Ok(Box::new(PthFile::from_bytes(name, bytes)?));
    }
    if bytes.len() >= 9 && bytes[8] == b'{' {
        return Ok(Box::new(SafetensorsFile::from_bytes(name, bytes)?));
    }
    Err(Error::malformed(
        name,
        "not a model file: expected a .safetensors file, a PyTorch .pth checkpoint (zip) or a GGUF file",
    ))
}

/// Maps a file into memory (or reads it, in a browser); `shown` names it in errors.
fn file_bytes(path: &Path) -> Result<FileBytes> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(Error::malformed(path.display().to_string(), "the file is empty"));
    }
    // SAFETY: the map is read-only; as with every memory-mapped loader, the file must not be
    // truncated by another process while the model loads.
    #[cfg(not(target_arch = "wasm32"))]
    let bytes = FileBytes::Mapped(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
    // A browser has no files to map (std's file calls fail there before this point).
    #[cfg(target_arch = "wasm32")]
    let bytes = FileBytes::Owned(std::fs::read(path).map_err(|e| Error::io(path, e))?);
    Ok(bytes)
}
