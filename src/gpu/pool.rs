//! Buffers for the intermediate values of steps, shared by every recorded step.
//!
//! Steps of different sizes (a prompt chunk of 256 tokens, a decode step of 4 sequences) are
//! recorded separately, but they never run at the same time, so they can share their scratch
//! memory: each named tensor gets one buffer sized for the largest step, and each recording
//! takes a view of the rows it needs. Names keep tensors in separate buffers, because WebGPU
//! forbids binding one buffer as both read and written in the same dispatch.

use std::collections::HashMap;
use std::sync::Mutex;

use super::buffer::{GpuTensor, Stack};
use super::Gpu;
use crate::error::{Error, Result};

pub struct ScratchPool {
    /// The most rows (tokens) a step may have.
    pub max_rows: usize,
    tensors: Mutex<HashMap<String, Vec<GpuTensor>>>,
    planning: Option<Planning>,
}

/// A pool that allocates nothing: it hands out views of one small buffer (never bound) and
/// notes the tensor that allows the fewest rows per step.
struct Planning {
    placeholder: wgpu::Buffer,
    /// That tensor's label, and the rows it allows.
    tightest: Mutex<Option<(String, usize)>>,
}

impl ScratchPool {
    pub fn new(max_rows: usize) -> ScratchPool {
        ScratchPool { max_rows, tensors: Mutex::default(), planning: None }
    }

    /// A pool that only checks that the tensors asked of it fit steps of `max_rows` rows
    /// ([`ScratchPool::check_planned`]), so that the largest step is checked before one is
    /// recorded, and without the memory it needs.
    pub fn planning(gpu: &Gpu, max_rows: usize) -> Result<ScratchPool> {
        let placeholder = GpuTensor::zeros(gpu, "scratch plan", 1, 4)?.buffer;
        let planning = Planning { placeholder, tightest: Mutex::default() };
        Ok(ScratchPool { planning: Some(planning), ..ScratchPool::new(max_rows) })
    }

    /// For a planning pool where steps of `max_rows` rows need a tensor larger than one storage
    /// binding: that tensor's label and the most rows it allows.
    pub fn planned_shortfall(&self) -> Option<(String, usize)> {
        let tightest = self.planning.as_ref().and_then(|p| lock(&p.tightest).clone());
        tightest.filter(|(_, fits)| *fits < self.max_rows)
    }

    /// The first `rows` rows of the `[max_rows, cols]` tensor called `label`.
    pub fn tensor(&self, gpu: &Gpu, label: &str, rows: usize, cols: usize) -> Result<GpuTensor> {
        self.tensor_of_capacity(gpu, label, self.max_rows, rows, cols)
    }

    /// The first `rows` rows of the `[capacity, cols]` tensor called `label`, for values that
    /// never have a step's every row (one per sequence, say): a chunk of thousands of tokens
    /// must not make them thousands of rows.
    pub fn tensor_of_capacity(
        &self,
        gpu: &Gpu,
        label: &str,
        capacity: usize,
        rows: usize,
        cols: usize,
    ) -> Result<GpuTensor> {
        let (entries, _) = self.entries(gpu, label, (1, capacity.min(self.max_rows)), rows, cols)?;
        Ok(entries.into_iter().next().expect("a stack of one has one entry"))
    }

    /// [`GpuTensor::stack`] of `count` entries of `[max_rows, cols]`, each viewed as `rows` rows.
    pub fn stack(&self, gpu: &Gpu, label: &str, count: usize, rows: usize, cols: usize) -> Result<Stack> {
        self.entries(gpu, label, (count, self.max_rows), rows, cols)
    }

    fn entries(
        &self,
        gpu: &Gpu,
        label: &str,
        (count, capacity): (usize, usize),
        rows: usize,
        cols: usize,
    ) -> Result<Stack> {
        if rows > capacity {
            return Err(Error::InvalidArgument(format!("{label}: a step of {rows} rows exceeds {capacity}")));
        }
        if let Some(planning) = &self.planning {
            return Ok(planning.entries(gpu, label, (count, capacity == self.max_rows), rows, cols));
        }
        let mut tensors = lock(&self.tensors);
        let entries = match tensors.get(label) {
            Some(entries)
                if entries.len() == count && entries[0].cols == cols && entries[0].rows == capacity =>
            {
                entries.clone()
            }
            Some(_) => {
                return Err(Error::Internal(format!("scratch tensor {label} requested with two shapes")))
            }
            None => {
                let (entries, _) = GpuTensor::stack(gpu, label, count, capacity, cols)?;
                tensors.insert(label.to_string(), entries.clone());
                entries
            }
        };
        let stride = if count > 1 { ((entries[1].offset - entries[0].offset) / 4) as usize } else { 0 };
        Ok((entries.iter().map(|e| e.first_rows(rows)).collect(), stride))
    }

    /// [`ScratchPool::stack`] with the number of entries fixed at compile time.
    pub fn stack_of<const N: usize>(
        &self,
        gpu: &Gpu,
        label: &str,
        rows: usize,
        cols: usize,
    ) -> Result<([GpuTensor; N], usize)> {
        let (entries, stride) = self.stack(gpu, label, N, rows, cols)?;
        let entries =
            entries.try_into().map_err(|_| Error::Internal(format!("{label}: expected {N} entries")))?;
        Ok((entries, stride))
    }
}

impl Planning {
    /// Views of the placeholder where `entries` would allocate; a tensor of `max_rows` rows (as
    /// opposed to one of a smaller capacity) notes the rows it allows.
    fn entries(
        &self,
        gpu: &Gpu,
        label: &str,
        (count, of_max_rows): (usize, bool),
        rows: usize,
        cols: usize,
    ) -> Stack {
        if of_max_rows {
            let fits = GpuTensor::stack_rows_within_binding(gpu, count, cols);
            let mut tightest = lock(&self.tightest);
            if tightest.as_ref().is_none_or(|(_, least)| fits < *least) {
                *tightest = Some((label.to_string(), fits));
            }
        }
        let view = GpuTensor { buffer: self.placeholder.clone(), offset: 0, rows, cols };
        (vec![view; count], 0)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
