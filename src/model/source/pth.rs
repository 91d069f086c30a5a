//! PyTorch `.pth` checkpoints as written by `torch.save`: a zip archive holding `<top>/data.pkl`
//! (the pickled dict of tensors) and one raw little-endian entry per storage, `<top>/data/<key>`.
//! torch stores entries uncompressed, so tensors are borrowed straight from the file's bytes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::ops::Range;

use zip::{CompressionMethod, ZipArchive};

use super::pickle::{self, clip, StorageRef, TensorDict, TensorRef};
use super::{DType, FileBytes, TensorData, TensorSource};
use crate::error::{Error, Result};

/// Real `data.pkl` files take a few hundred bytes per tensor; the cap only stops a compressed
/// entry from inflating without bound.
const MAX_PICKLE_BYTES: usize = 64 << 20;
/// A view that repeats storage elements (stride 0) is larger than its storage once gathered;
/// beyond this size a few pickle bytes could demand an absurd allocation.
const MAX_EXPANDED_BYTES: usize = 16 << 20;

type Archive<'a> = ZipArchive<Cursor<&'a [u8]>>;

/// A `.pth` checkpoint whose pickle has been read and whose tensor layouts have
/// been checked against the storages they view.
pub struct PthFile {
    name: String,
    map: FileBytes,
    storages: Vec<Storage>,
    tensors: Vec<Tensor>,
    /// Tensor names in saved order, with their index into `tensors`.
    names: Vec<(String, usize)>,
    by_name: HashMap<String, usize>,
}

struct Storage {
    key: String,
    zip_index: usize,
    /// Where the bytes start in the file, when the entry is stored uncompressed.
    mapped_at: Option<usize>,
    len: usize,
}

struct Tensor {
    dtype: DType,
    element_size: usize,
    shape: Vec<usize>,
    storage: usize,
    /// The tensor's bytes within its storage when they are row-major contiguous; otherwise the
    /// elements are gathered through `offset` and `stride` (in elements).
    contiguous: Option<Range<usize>>,
    offset: usize,
    stride: Vec<usize>,
    byte_len: usize,
}

struct Index {
    storages: Vec<Storage>,
    tensors: Vec<Tensor>,
    names: Vec<(String, usize)>,
}

impl PthFile {
    pub fn from_bytes(name: String, map: FileBytes) -> Result<Self> {
        let Index { storages, tensors, names } =
            index(&map).map_err(|reason| Error::malformed(&name, reason))?;
        let by_name = names.iter().map(|(tensor_name, tensor)| (tensor_name.clone(), *tensor)).collect();
        Ok(Self { name, map, storages, tensors, names, by_name })
    }

    fn lookup(&self, name: &str) -> Result<&Tensor> {
        self.by_name
            .get(name)
            .and_then(|&index| self.tensors.get(index))
            .ok_or_else(|| Error::MissingTensor { name: name.into(), hint: format!(" in {}", self.name) })
    }

    /// The first `len` bytes of a storage: borrowed when stored, inflated when compressed.
    fn storage_bytes(&self, storage: &Storage, len: usize) -> Result<Cow<'_, [u8]>> {
        let outside = || {
            Error::malformed(&self.name, format!("storage `{}` lies outside the file", clip(&storage.key)))
        };
        if let Some(start) = storage.mapped_at {
            let end = start.checked_add(len).ok_or_else(outside)?;
            return self.map.get(start..end).map(Cow::Borrowed).ok_or_else(outside);
        }
        let inflated = Archive::new(Cursor::new(&self.map[..]))
            .and_then(|mut archive| {
                let mut bytes = Vec::new();
                archive.by_index(storage.zip_index)?.take(len as u64).read_to_end(&mut bytes)?;
                Ok(bytes)
            })
            .map_err(|e| {
                Error::malformed(&self.name, format!("cannot inflate storage `{}`: {e}", clip(&storage.key)))
            })?;
        if inflated.len() != len {
            let reason =
                format!("storage `{}` inflates to fewer bytes than its zip entry claims", clip(&storage.key));
            return Err(Error::malformed(&self.name, reason));
        }
        Ok(Cow::Owned(inflated))
    }
}

impl TensorSource for PthFile {
    fn format(&self) -> &'static str {
        "pth"
    }

    fn names(&self) -> Vec<String> {
        self.names.iter().map(|(name, _)| name.clone()).collect()
    }

    fn meta(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        let tensor = self.lookup(name).ok()?;
        Some((tensor.dtype, tensor.shape.clone()))
    }

    fn tensor(&self, name: &str) -> Result<TensorData<'_>> {
        let tensor = self.lookup(name)?;
        let storage = self.storages.get(tensor.storage).ok_or_else(|| {
            Error::malformed(&self.name, format!("tensor `{name}` refers to a storage that was never read"))
        })?;
        let outside = || Error::malformed(&self.name, format!("tensor `{name}` reaches outside its storage"));
        let bytes = match &tensor.contiguous {
            Some(range) => match self.storage_bytes(storage, range.end)? {
                Cow::Borrowed(all) => Cow::Borrowed(all.get(range.clone()).ok_or_else(outside)?),
                Cow::Owned(all) => Cow::Owned(all.get(range.clone()).ok_or_else(outside)?.to_vec()),
            },
            None => {
                Cow::Owned(gather(&self.storage_bytes(storage, storage.len)?, tensor).ok_or_else(outside)?)
            }
        };
        Ok(TensorData { dtype: tensor.dtype, shape: tensor.shape.clone(), bytes })
    }
}

/// Reads the archive's directory and pickle, and checks every tensor against its storage, so
/// that `tensor()` can only fail on I/O of compressed entries.
fn index(file: &[u8]) -> Result<Index, String> {
    let mut archive = Archive::new(Cursor::new(file)).map_err(|e| {
        format!("cannot read the zip archive ({e}); the file is truncated or not a checkpoint")
    })?;
    let (top, pickle_index) = find_pickle(&archive)?;
    check_byteorder(&mut archive, file, &top)?;
    let pickle = read_entry(&mut archive, file, pickle_index, MAX_PICKLE_BYTES)?;
    let dict = pickle::read_tensor_dict(&pickle)?;

    let storage_prefix = format!("{top}/data/");
    let storage_entries: HashMap<String, usize> = (0..archive.len())
        .filter_map(|index| {
            let key = archive.name_for_index(index)?.strip_prefix(&storage_prefix)?;
            Some((key.to_owned(), index))
        })
        .collect();
    let storages = dict
        .storages
        .iter()
        .map(|storage| locate_storage(&mut archive, file.len(), &storage_entries, &top, storage))
        .collect::<Result<Vec<_>, _>>()?;

    let TensorDict { storages: storage_refs, tensors: tensor_refs, names } = dict;
    let mut first_names = vec![""; tensor_refs.len()];
    for (name, tensor) in names.iter().rev() {
        if let Some(first) = first_names.get_mut(*tensor) {
            *first = name;
        }
    }
    let tensors = tensor_refs
        .iter()
        .zip(&first_names)
        .map(|(tensor, name)| {
            let storage = storages.get(tensor.storage).zip(storage_refs.get(tensor.storage));
            let (storage, storage_ref) = storage.ok_or("data.pkl lost track of a storage")?;
            layout(name, tensor, storage, storage_ref)
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Index { storages, tensors, names })
}

/// torch names every entry `<top>/…`, where `<top>` is `archive` or the file's stem at save time.
fn find_pickle(archive: &Archive<'_>) -> Result<(String, usize), String> {
    let mut found = (0..archive.len()).filter_map(|index| {
        let top = archive.name_for_index(index)?.strip_suffix("/data.pkl")?;
        (!top.is_empty() && !top.contains('/')).then(|| (top.to_owned(), index))
    });
    match (found.next(), found.next()) {
        (Some(first), None) => Ok(first),
        (None, _) => {
            Err("the zip archive has no `<folder>/data.pkl`, so it is not a PyTorch checkpoint".into())
        }
        (Some((first, _)), Some((second, _))) => Err(format!(
            "the zip archive holds two checkpoints (`{}/data.pkl` and `{}/data.pkl`)",
            clip(&first),
            clip(&second)
        )),
    }
}

/// Storages hold raw machine-order bytes. Checkpoints too old to record the byte order were all
/// written on little-endian machines.
fn check_byteorder<'a>(archive: &mut Archive<'a>, file: &'a [u8], top: &str) -> Result<(), String> {
    let Some(index) = archive.index_for_name(&format!("{top}/byteorder")) else {
        return Ok(());
    };
    let order = read_entry(archive, file, index, 16)?;
    match order.trim_ascii() {
        b"little" => Ok(()),
        b"big" => Err("the checkpoint was saved on a big-endian machine (byteorder `big`); only \
                       little-endian checkpoints are supported"
            .into()),
        other => Err(format!("byteorder is `{}`; expected `little`", String::from_utf8_lossy(other))),
    }
}

/// Where an entry's bytes are: `Some(offset in the file)` when stored uncompressed, and its size.
fn entry_location(
    archive: &mut Archive<'_>,
    file_len: usize,
    index: usize,
) -> Result<(Option<usize>, usize), String> {
    let entry = archive.by_index_raw(index).map_err(|e| format!("cannot read zip entry #{index}: {e}"))?;
    let name = clip(entry.name());
    if entry.encrypted() {
        return Err(format!("zip entry `{name}` is encrypted"));
    }
    let len = usize::try_from(entry.size()).map_err(|_| format!("zip entry `{name}` is too large"))?;
    if entry.compression() != CompressionMethod::Stored {
        return Ok((None, len));
    }
    if entry.compressed_size() != entry.size() {
        let stored = entry.compressed_size();
        return Err(format!("zip entry `{name}` is stored uncompressed but has {stored} bytes for {len}"));
    }
    let start = usize::try_from(entry.data_start()).unwrap_or(usize::MAX);
    match start.checked_add(len) {
        Some(end) if end <= file_len => Ok((Some(start), len)),
        _ => Err(format!(
            "zip entry `{name}` needs bytes {start}..{} but the file has {file_len}: it is truncated",
            start.saturating_add(len)
        )),
    }
}

/// A small entry's bytes (the pickle, the byte order), refusing entries larger than `limit`.
fn read_entry<'a>(
    archive: &mut Archive<'a>,
    file: &'a [u8],
    index: usize,
    limit: usize,
) -> Result<Cow<'a, [u8]>, String> {
    let (mapped_at, len) = entry_location(archive, file.len(), index)?;
    let name = archive.name_for_index(index).map(clip).unwrap_or_default();
    if len > limit {
        return Err(format!("zip entry `{name}` has {len} bytes, more than the {limit} it could need"));
    }
    if let Some(start) = mapped_at {
        let bytes = start.checked_add(len).and_then(|end| file.get(start..end));
        return bytes.map(Cow::Borrowed).ok_or_else(|| format!("zip entry `{name}` lies outside the file"));
    }
    let mut bytes = Vec::new();
    let mut entry = archive.by_index(index).map_err(|e| format!("cannot read zip entry `{name}`: {e}"))?;
    entry
        .by_ref()
        .take(len as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot inflate zip entry `{name}`: {e}"))?;
    if bytes.len() != len {
        return Err(format!("zip entry `{name}` inflates to {} bytes, not the {len} it claims", bytes.len()));
    }
    Ok(Cow::Owned(bytes))
}

fn locate_storage(
    archive: &mut Archive<'_>,
    file_len: usize,
    entries: &HashMap<String, usize>,
    top: &str,
    storage: &StorageRef,
) -> Result<Storage, String> {
    let key = clip(&storage.key);
    let &zip_index = entries.get(&storage.key).ok_or_else(|| {
        format!("data.pkl refers to storage `{key}` but the archive has no `{top}/data/{key}`")
    })?;
    let (mapped_at, len) = entry_location(archive, file_len, zip_index)?;
    let (dtype, size) = (storage.element.dtype, storage.element.size);
    if len % size != 0 {
        return Err(format!(
            "storage `{key}` holds {len} bytes, not a whole number of {dtype} elements ({size} bytes each)"
        ));
    }
    if storage.numel.checked_mul(size) != Some(len) {
        let numel = storage.numel;
        return Err(format!("storage `{key}` should hold {numel} {dtype} elements but holds {}", len / size));
    }
    Ok(Storage { key: storage.key.clone(), zip_index, mapped_at, len })
}

/// Checks with overflow-safe arithmetic that every element the view can reach lies inside its
/// storage, and decides whether its bytes can be borrowed as they are.
fn layout(
    name: &str,
    tensor: &TensorRef,
    storage: &Storage,
    storage_ref: &StorageRef,
) -> Result<Tensor, String> {
    let (dtype, element_size) = (storage_ref.element.dtype, storage_ref.element.size);
    let TensorRef { offset, ref shape, ref stride, .. } = *tensor;
    let too_large = || {
        let view = format!("storage offset {offset}, shape {shape:?}, stride {stride:?}");
        format!("tensor `{name}` ({view}) is too large to address")
    };
    // An empty dimension makes the tensor empty, but the other sizes must still multiply without
    // overflow: whoever counts the elements multiplies them all.
    let nonzero =
        shape.iter().filter(|&&dim| dim != 0).try_fold(1usize, |count, &dim| count.checked_mul(dim));
    let nonzero = nonzero.ok_or_else(too_large)?;
    let numel = if shape.contains(&0) { 0 } else { nonzero };
    let byte_len = numel.checked_mul(element_size).ok_or_else(too_large)?;
    let contiguous = numel == 0 || is_row_major(shape, stride);
    let mut range = 0..0;
    if numel > 0 {
        let last = shape
            .iter()
            .zip(stride)
            .try_fold(offset, |last, (&dim, &step)| last.checked_add(dim.checked_sub(1)?.checked_mul(step)?));
        let start = offset.checked_mul(element_size);
        let end = last.and_then(|last| last.checked_add(1)?.checked_mul(element_size));
        let (start, end) = start.zip(end).ok_or_else(too_large)?;
        if end > storage.len {
            return Err(format!(
                "tensor `{name}` needs bytes {start}..{end} of storage `{}` but it has {}",
                clip(&storage.key),
                storage.len
            ));
        }
        if !contiguous && byte_len > storage.len.max(MAX_EXPANDED_BYTES) {
            return Err(format!(
                "tensor `{name}` repeats elements of its storage and would expand to {byte_len} bytes"
            ));
        }
        // Row-major contiguity means the last reachable byte is exactly `start + byte_len`.
        range = start..end;
    }
    Ok(Tensor {
        dtype,
        element_size,
        shape: shape.clone(),
        storage: tensor.storage,
        contiguous: contiguous.then_some(range),
        offset,
        stride: stride.clone(),
        byte_len,
    })
}

/// Whether the strides are those of a row-major array of this shape. Dimensions of size 1 are
/// never stepped over, so torch leaves arbitrary strides on them.
fn is_row_major(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&size, &step) in shape.iter().zip(stride).rev() {
        if size != 1 && step != expected {
            return false;
        }
        expected = expected.saturating_mul(size);
    }
    true
}

/// Copies a strided view's elements out in row-major order. `layout` has already checked every
/// reachable element against the storage, so `None` here means the storage changed size.
fn gather(storage: &[u8], tensor: &Tensor) -> Option<Vec<u8>> {
    let size = tensor.element_size;
    let element =
        |index: usize| storage.get(index.checked_mul(size)?..index.checked_add(1)?.checked_mul(size)?);
    let Some((&inner_len, outer_shape)) = tensor.shape.split_last() else {
        return element(tensor.offset).map(<[u8]>::to_vec);
    };
    let (&inner_step, outer_stride) = tensor.stride.split_last()?;
    let mut out = Vec::with_capacity(tensor.byte_len);
    if tensor.byte_len == 0 {
        return Some(out);
    }
    let mut position = vec![0usize; outer_shape.len()];
    loop {
        let row = position
            .iter()
            .zip(outer_stride)
            .try_fold(tensor.offset, |row, (&at, &step)| row.checked_add(at.checked_mul(step)?))?;
        for column in 0..inner_len {
            out.extend_from_slice(element(row.checked_add(column.checked_mul(inner_step)?)?)?);
        }
        // Advance the outer index like an odometer; when every digit wraps, all rows are done.
        let mut wrapped = true;
        for (at, &dim) in position.iter_mut().zip(outer_shape).rev() {
            *at += 1;
            if *at < dim {
                wrapped = false;
                break;
            }
            *at = 0;
        }
        if wrapped {
            return Some(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty tensor whose other sizes overflow together is refused (whoever counted its
    /// elements would overflow); one whose sizes fit is read as empty.
    #[test]
    fn empty_tensors_must_have_sizes_that_multiply() {
        let storage = Storage { key: "0".into(), zip_index: 0, mapped_at: None, len: 0 };
        let element = pickle::Element { dtype: DType::F32, size: 4 };
        let storage_ref = StorageRef { key: "0".into(), element, numel: 0 };
        let tensor =
            |shape: Vec<usize>| TensorRef { storage: 0, offset: 0, stride: vec![1; shape.len()], shape };
        let huge = layout("t", &tensor(vec![1 << 32, 1 << 32, 0]), &storage, &storage_ref);
        assert!(huge.err().is_some_and(|e| e.contains("too large to address")));
        let empty = layout("t", &tensor(vec![3, 0]), &storage, &storage_ref);
        assert!(empty.is_ok_and(|t| t.shape == [3, 0]));
    }
}
