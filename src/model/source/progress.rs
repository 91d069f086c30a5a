//! Loading progress: a source that counts the bytes of the tensors read so far, for callers that
//! show how far a load has come (a browser page whose worker converts and uploads for seconds).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::{DType, TensorData, TensorSource};
use crate::error::Result;
use crate::quant::PackedMatrix;

/// Called as `progress(done, total)` in bytes of the file's tensors, after each tensor is read.
#[derive(Clone)]
pub struct Progress(pub Arc<dyn Fn(u64, u64) + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// `inner`, reporting each tensor the first time it is read.
pub struct Reporting<'a> {
    inner: &'a dyn TensorSource,
    progress: Progress,
    total: u64,
    read: Mutex<(HashSet<String>, u64)>,
}

impl<'a> Reporting<'a> {
    pub fn new(inner: &'a dyn TensorSource, progress: Progress) -> Self {
        let total = inner.names().iter().map(|name| weight(inner, name)).sum();
        Reporting { inner, progress, total, read: Mutex::new((HashSet::new(), 0)) }
    }

    /// Reports the load as complete (tensors a version never reads still count towards the total).
    pub fn finish(&self) {
        (self.progress.0)(self.total, self.total);
    }

    fn count(&self, name: &str) {
        let done = {
            let mut read = self.read.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if !read.0.insert(name.to_owned()) {
                return;
            }
            read.1 += weight(self.inner, name);
            read.1
        };
        (self.progress.0)(done.min(self.total), self.total);
    }
}

/// A tensor's share of the load: its bytes, or its elements for block-quantized types.
fn weight(source: &dyn TensorSource, name: &str) -> u64 {
    source.meta(name).map_or(0, |(dtype, shape)| {
        let elements: usize = shape.iter().product();
        (elements * DType::size(dtype).unwrap_or(1)) as u64
    })
}

impl TensorSource for Reporting<'_> {
    fn format(&self) -> &'static str {
        self.inner.format()
    }
    fn names(&self) -> Vec<String> {
        self.inner.names()
    }
    fn meta(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        self.inner.meta(name)
    }
    fn tensor(&self, name: &str) -> Result<TensorData<'_>> {
        let data = self.inner.tensor(name)?;
        self.count(name);
        Ok(data)
    }
    fn packed(&self, name: &str) -> Result<Option<PackedMatrix>> {
        let packed = self.inner.packed(name)?;
        if packed.is_some() {
            self.count(name);
        }
        Ok(packed)
    }
    fn layout(&self) -> &'static str {
        self.inner.layout()
    }
    fn stored_type(&self, name: &str) -> Option<String> {
        self.inner.stored_type(name)
    }
    fn is_quantized(&self, name: &str) -> bool {
        self.inner.is_quantized(name)
    }
    fn tokenizer(&self) -> Option<Result<crate::tokenizer::Tokenizer>> {
        self.inner.tokenizer()
    }
}
