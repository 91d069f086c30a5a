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
}

impl ScratchPool {
    pub fn new(max_rows: usize) -> ScratchPool {
        ScratchPool { max_rows, tensors: Mutex::default() }
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
        let mut tensors = self.tensors.lock().unwrap_or_else(|p| p.into_inner());
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
