//! Pipelines, bind groups and dispatches.
//!
//! A kernel's bindings are declared once, as a list of [`Access`] in binding order; that one list
//! builds both the bind group layout and, through [`Pipeline::dispatch`], the bind group. A
//! [`Dispatch`] is a pipeline with its resources bound and its grid size fixed: made once when a
//! session is set up, replayed every step.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use super::buffer::Binding;
use super::Gpu;
use crate::error::{Error, Result};

/// The prelude that defines `workgroup_sum`: kernels list [`REDUCE`], and adapters with subgroup
/// operations get `reduce_subgroup.wgsl` in its place.
pub const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../../shaders/reduce_subgroup.wgsl");

/// How a part that uses subgroup operations begins: assemblies leave it out on adapters
/// without them (naga validates every entry point of a module, used or not).
pub const SUBGROUPS_ONLY: &str = "// subgroups only:";

/// A WGSL program assembled from files in `shaders/`: shared preludes first, then the kernel.
/// Each part is plain WGSL; the assembled text is what naga validates.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// Unique name of this assembly, used for labels and the pipeline cache.
    pub name: &'static str,
    pub parts: &'static [&'static str],
    /// Sizes from Rust constants, declared as WGSL `const`s before the parts: the size of an
    /// array in uniform or function memory cannot be an override constant.
    pub sizes: &'static [(&'static str, usize)],
}

/// How a kernel uses one binding, in binding order (`@binding(0)`, `@binding(1)`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Uniform,
    Read,
    ReadWrite,
}

/// A compiled compute pipeline and the layout of its one bind group.
pub struct Pipeline {
    label: String,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    bindings: &'static [Access],
    compiled: CompiledKernel,
}

/// What a pipeline was compiled from: the assembled WGSL, its entry point and its override
/// constants. Tests translate these for the backends this machine cannot run (Metal, DX12).
#[derive(Debug, Clone)]
pub struct CompiledKernel {
    pub label: String,
    pub wgsl: String,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, f64)>,
}

type CacheKey = (&'static str, &'static str, String);

#[derive(Default)]
pub(crate) struct PipelineCache {
    pipelines: Mutex<HashMap<CacheKey, Arc<Pipeline>>>,
}

/// Specialisation constants (WGSL `override`s) of one pipeline.
pub type Constants = [(&'static str, f64)];

impl Gpu {
    /// The pipeline for `entry` of `source` with `constants`, compiled once and then cached.
    pub fn pipeline(
        &self,
        source: &KernelSource,
        entry: &'static str,
        bindings: &'static [Access],
        constants: &Constants,
    ) -> Result<Arc<Pipeline>> {
        let key = (source.name, entry, format!("{constants:?}"));
        let mut cache = self.pipelines.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pipeline) = cache.get(&key) {
            return Ok(pipeline.clone());
        }
        let label = if constants.is_empty() {
            format!("{}::{entry}", source.name)
        } else {
            format!("{}::{entry}{constants:?}", source.name)
        };
        let pipeline = self.scoped(&format!("compiling kernel {label}"), || {
            Ok(self.compile(source, entry, bindings, constants, &label))
        })?;
        let pipeline = Arc::new(pipeline);
        cache.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Every kernel this device has compiled so far, in no particular order.
    pub fn compiled_kernels(&self) -> Vec<CompiledKernel> {
        let cache = self.pipelines.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        cache.values().map(|pipeline| pipeline.compiled.clone()).collect()
    }

    fn compile(
        &self,
        source: &KernelSource,
        entry: &'static str,
        bindings: &'static [Access],
        constants: &Constants,
        label: &str,
    ) -> Pipeline {
        let sizes = source.sizes.iter().map(|(name, size)| format!("const {name}: u32 = {size}u;\n"));
        let parts = source
            .parts
            .iter()
            .filter(|part| self.subgroups || !part.starts_with(SUBGROUPS_ONLY))
            .map(|&part| if self.subgroups && part == REDUCE { REDUCE_SUBGROUP } else { part });
        let code: String = sizes.chain(parts.map(str::to_string)).collect();
        // WGSL wants its directives (a weights prelude's `enable f16;`) before any declaration,
        // wherever their part comes in the assembly.
        let (mut directives, declarations): (Vec<&str>, Vec<&str>) =
            code.lines().partition(|line| line.starts_with("enable "));
        // Parts that each need an extension each enable it; once is enough.
        directives.sort_unstable();
        directives.dedup();
        let code = directives.into_iter().chain(declarations).collect::<Vec<_>>().join("\n");
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(source.name),
            source: wgpu::ShaderSource::Wgsl(code.as_str().into()),
        });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .enumerate()
            .map(|(index, access)| wgpu::BindGroupLayoutEntry {
                binding: index as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match access {
                        Access::Uniform => wgpu::BufferBindingType::Uniform,
                        Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(label),
            entries: &entries,
        });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants, ..Default::default() },
            cache: None,
        });
        let compiled =
            CompiledKernel { label: label.to_string(), wgsl: code, entry, constants: constants.to_vec() };
        Pipeline { label: label.to_string(), pipeline, layout, bindings, compiled }
    }

    /// A uniform buffer holding `params`, for a kernel's `Params` binding.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, params: &T) -> Result<wgpu::Buffer> {
        super::buffer::buffer_with(self, label, bytemuck::bytes_of(params), wgpu::BufferUsages::UNIFORM)
    }

    /// A grid of `count` workgroups that respects the per-dimension limit. Kernels rebuild the
    /// linear index as `id.x + id.y * num_workgroups.x` and skip indices past the end.
    pub fn grid(&self, count: u32) -> [u32; 3] {
        let max = self.max_workgroups_per_dimension().max(1);
        if count <= max {
            [count.max(1), 1, 1]
        } else {
            [max, count.div_ceil(max), 1]
        }
    }
}

impl Pipeline {
    /// How many bindings the kernel has.
    pub fn binding_count(&self) -> usize {
        self.bindings.len()
    }

    /// Whether binding `index` is a uniform buffer.
    pub fn binds_uniform(&self, index: usize) -> bool {
        self.bindings.get(index) == Some(&Access::Uniform)
    }

    /// Binds `resources` (in binding order) and fixes the grid: the result is replayed as is.
    pub fn dispatch(
        self: &Arc<Self>,
        gpu: &Gpu,
        label: &str,
        resources: &[Binding],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        if resources.len() != self.bindings.len() {
            return Err(Error::Gpu(format!(
                "{label}: kernel {} takes {} bindings, {} given",
                self.label,
                self.bindings.len(),
                resources.len()
            )));
        }
        let max = gpu.max_workgroups_per_dimension();
        if workgroups.iter().any(|&n| n > max) {
            return Err(Error::TooBig(format!(
                "{label}: grid {workgroups:?} exceeds {max} workgroups per dimension"
            )));
        }
        let mut entries = Vec::with_capacity(resources.len());
        for (index, resource) in resources.iter().enumerate() {
            let size = NonZeroU64::new(resource.size)
                .ok_or_else(|| Error::Gpu(format!("{label}: binding {index} of {} is empty", self.label)))?;
            entries.push(wgpu::BindGroupEntry {
                binding: index as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &resource.buffer,
                    offset: resource.offset,
                    size: Some(size),
                }),
            });
        }
        let bind_group = gpu.scoped(label, || {
            Ok(gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &self.layout,
                entries: &entries,
            }))
        })?;
        Ok(Dispatch { label: label.to_string(), pipeline: self.clone(), bind_group, workgroups })
    }
}

/// A kernel with its resources bound and its grid fixed.
pub struct Dispatch {
    pub label: String,
    pipeline: Arc<Pipeline>,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
}

impl Dispatch {
    pub fn encode(&self, pass: &mut wgpu::ComputePass) {
        pass.set_pipeline(&self.pipeline.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// The kernel it runs.
    pub fn kernel(&self) -> &str {
        &self.pipeline.label
    }
}

/// The dispatches of one step, in order. Recorded once; encoded into one compute pass per run.
#[derive(Default)]
pub struct Step {
    pub dispatches: Vec<Dispatch>,
}

impl Step {
    pub fn push(&mut self, dispatch: Dispatch) {
        self.dispatches.push(dispatch);
    }

    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }

    /// Encodes every dispatch into one compute pass. Storage writes of one dispatch are visible
    /// to the next within a pass, so no barriers are needed between them.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("step"), timestamp_writes: None });
        self.encode_into(&mut pass);
    }

    /// Appends every dispatch to a compute pass that others share.
    pub fn encode_into(&self, pass: &mut wgpu::ComputePass) {
        for dispatch in &self.dispatches {
            dispatch.encode(pass);
        }
    }

    /// Encodes the step into its own command buffer and submits it.
    pub fn run(&self, gpu: &Gpu) {
        let mut encoder =
            gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        self.encode(&mut encoder);
        gpu.queue.submit([encoder.finish()]);
    }
}
