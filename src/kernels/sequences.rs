//! The sequence table of a step: which rows belong to which sequence, and which state slot each
//! sequence keeps its recurrent state in. Written each step into a small uniform buffer that
//! the recorded dispatches bind once.

use crate::error::{Error, Result};
use crate::gpu::Access::{Read, ReadWrite, Uniform};
use crate::gpu::{Access, Gpu};

/// The bindings of the RWKV-4 and RWKV-5/6 recurrences (wkv4.wgsl, wkv5.wgsl): params, the
/// sequence table, the state slots, the inputs r, k, v, w and u, and the output.
pub(super) const WKV_BINDINGS: &[Access] =
    &[Uniform, Uniform, ReadWrite, Read, Read, Read, Read, Read, ReadWrite];

/// The most sequences one step can hold (the size of the uniform array in `sequences.wgsl`).
pub const MAX_SEQUENCES: usize = 256;

/// Heads up to this size keep a row of their state in registers (wkv5.wgsl, wkv7.wgsl).
pub const MAX_HEAD_SIZE: usize = 64;

/// The sizes `sequences.wgsl` needs, for the kernels that include it.
pub(super) const SEQUENCE_SIZES: &[(&str, usize)] =
    &[("MAX_SEQUENCES", MAX_SEQUENCES), ("MAX_HEAD_SIZE", MAX_HEAD_SIZE)];

/// One sequence of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceEntry {
    /// Its state slot.
    pub slot: usize,
    /// Its first row in the step.
    pub first_row: usize,
    /// How many rows (tokens) it has in the step.
    pub rows: usize,
}

/// The GPU copy of a step's sequence table, for a step of `count` sequences.
pub struct Sequences {
    pub buffer: wgpu::Buffer,
    pub count: usize,
}

impl Sequences {
    pub fn new(gpu: &Gpu, count: usize) -> Result<Sequences> {
        if count == 0 || count > MAX_SEQUENCES {
            return Err(Error::InvalidArgument(format!(
                "a step holds 1 to {MAX_SEQUENCES} sequences, not {count}"
            )));
        }
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("sequences"),
            size: ((MAX_SEQUENCES + 1) * 16) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Sequences { buffer, count })
    }

    /// Writes the table for the next submitted step.
    pub fn write(&self, gpu: &Gpu, entries: &[SequenceEntry]) -> Result<()> {
        if entries.len() != self.count {
            return Err(Error::InvalidArgument(format!(
                "{} sequences for a step recorded for {}",
                entries.len(),
                self.count
            )));
        }
        let mut words = vec![0u32; 4 + 4 * entries.len()];
        words[0] = entries.len() as u32;
        for (i, entry) in entries.iter().enumerate() {
            let field = |value: usize| {
                u32::try_from(value).map_err(|_| Error::TooBig(format!("sequence table value {value}")))
            };
            words[4 + 4 * i] = field(entry.slot)?;
            words[5 + 4 * i] = field(entry.first_row)?;
            words[6 + 4 * i] = field(entry.rows)?;
        }
        gpu.queue.write_buffer(&self.buffer, 0, bytemuck::cast_slice(&words));
        Ok(())
    }
}

/// Loop iterations one invocation of a kernel may run. llvmpipe (Mesa's CPU driver, under both
/// lavapipe and its GL driver) ends every loop of an invocation once the invocation has run 65535
/// loop iterations in all, leaving what it had not yet written unwritten: a recurrence walking
/// 500 tokens of a 64-wide head did so, and every logit after them was wrong. Half of that
/// leaves room for the iterations a compiler adds around each loop.
pub const LOOP_BUDGET: usize = 32_768;

/// Iterations a compiler may add per pass of a walking kernel's token loop, beyond its own
/// inner loops (measured: 5 on llvmpipe for the RWKV-7 walk).
const LOOP_OVERHEAD_PER_TOKEN: usize = 8;

/// The rows of each sequence that one dispatch of a walking kernel covers (`Window` in
/// sequences.wgsl): `count` rows from `first`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Window {
    pub first: u32,
    pub count: u32,
}

/// The params of a recurrence over heads (wkv5, wkv7), walked in windows (`HeadWalk` in
/// sequences.wgsl).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct HeadWalk {
    pub heads: u32,
    pub head_size: u32,
    pub window: Window,
}

/// The windows that cover up to `rows` rows of each sequence when one token costs
/// `inner_loops` iterations of the kernel's loops inside its token loop, each within
/// [`LOOP_BUDGET`]. Always at least one window, so that a step of no rows still records.
pub fn windows(rows: usize, inner_loops: usize) -> Vec<Window> {
    let per_window = (LOOP_BUDGET / (inner_loops + LOOP_OVERHEAD_PER_TOKEN)).max(1);
    (0..rows.max(1))
        .step_by(per_window)
        .map(|first| Window { first: first as u32, count: per_window as u32 })
        .collect()
}
