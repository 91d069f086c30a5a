//! `rwkv-wgpu info`: what a model file holds, checked tensor by tensor, without loading it.

use clap::Args;

use std::path::PathBuf;

use super::bench::StandardShape;
use super::GpuArgs;
use rwkv_wgpu::gpu::padded4;
use rwkv_wgpu::kernels::EMBED_PARTS;
use rwkv_wgpu::model::config::ModelConfig;
use rwkv_wgpu::model::embedding::table_parts;
use rwkv_wgpu::model::memory::memory;
use rwkv_wgpu::model::source::TensorSource;
use rwkv_wgpu::model::synthetic::SyntheticV7;
use rwkv_wgpu::model::{check_fits, describe_storage, planned_matrices, source, validate};
use rwkv_wgpu::quant::{MatrixFormat, QuantPlan};
use rwkv_wgpu::runtime::EngineOptions;
use rwkv_wgpu::Error;
use rwkv_wgpu::Result;

#[derive(Args)]
pub struct InfoArgs {
    /// Model file (.safetensors, .pth or .gguf) or Hugging Face folder.
    #[arg(long, short = 'm', required_unless_present = "shape")]
    model: Option<PathBuf>,
    /// Instead of a file, a synthetic RWKV-7 of a released size (memory figures without a download).
    #[arg(long, value_enum, conflicts_with = "model")]
    shape: Option<StandardShape>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(gpu_args: &GpuArgs, args: InfoArgs) -> Result<()> {
    let (source, file): (Box<dyn TensorSource>, String) = match (&args.model, args.shape) {
        (Some(path), _) => (source::open(path)?, path.display().to_string()),
        (None, Some(shape)) => (
            Box::new(SyntheticV7::new(shape.shape(), 0)),
            format!("none: random weights in the shape of RWKV-7 {}", shape.name()),
        ),
        (None, None) => return Err(Error::InvalidArgument("give --model or --shape".into())),
    };
    let config = ModelConfig::from_source(source.as_ref())?;
    // Reads and checks every tensor's presence, shape and dtype, so `info` also says whether the
    // file will load.
    validate(source.as_ref(), &config)?;
    let parameters: usize = source
        .names()
        .iter()
        .filter_map(|name| source.meta(name))
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    let dtype = source.meta("head.weight").map_or_else(|| "?".into(), |(dtype, _)| dtype.to_string());
    let stored = stored_types(source.as_ref());
    // What loading without --quant stores: each matrix in its file's precision.
    let storage = describe_storage(&planned_matrices(source.as_ref(), &config, &QuantPlan::default())?);
    let gpu = gpu_args.open()?;
    let rows = EngineOptions::DEFAULT_CHUNK;
    let mut choices = Vec::new();
    for format in MatrixFormat::ALL {
        let plan = QuantPlan::with(format);
        let fits = check_fits(&gpu, source.as_ref(), &config, &plan).err().map(|e| e.to_string());
        choices.push((format.name(), memory(source.as_ref(), &config, &plan, rows)?, fits));
    }
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    if args.json {
        let value = serde_json::json!({
            "file": file,
            "format": source.format(),
            "layout": source.layout(),
            "stored_types": stored,
            "dtype": dtype,
            "storage": storage,
            "config": config,
            "parameters": parameters,
            "memory_by_format": choices.iter().map(|(name, m, _)| (name.to_string(), serde_json::json!(m))).collect::<serde_json::Map<_, _>>(),
            "does_not_fit_by_format": choices.iter().map(|(name, _, fits)| (name.to_string(), serde_json::json!(fits))).collect::<serde_json::Map<_, _>>(),
            "adapter": gpu.describe(),
            "shader_f16": gpu.f16,
        });
        println!("{value:#}");
        return Ok(());
    }
    println!("file:        {file} ({}, {dtype})", source.format());
    println!("layout:      {} names", source.layout());
    println!("stored as:   {}", describe_stored(&stored));
    if stored.iter().any(|(kind, _)| kind.starts_with('Q')) {
        println!("             (GGUF blocks are decoded at load and stored in int8; --quant nf4 for 4-bit");
        println!("             memory, --quant f16 for the decoded values exactly)");
    }
    println!("version:     {}", config.version.name());
    println!("layers:      {}", config.layers);
    println!("embedding:   {}", config.embd);
    if config.heads == 0 {
        println!("heads:       none (per-channel state)");
    } else {
        println!("heads:       {} × head size {}", config.heads, config.head_size);
    }
    println!("ffn:         {}", config.ffn);
    if !config.lora.is_empty() {
        let ranks: Vec<String> = config.lora.iter().map(|l| format!("{} {}", l.name, l.rank)).collect();
        println!("LoRA ranks:  {}", ranks.join(", "));
    }
    println!("vocabulary:  {}", config.vocab);
    println!("parameters:  {parameters} ({:.3} B)", parameters as f64 / 1e9);
    let why = if stored.iter().any(|(kind, _)| kind.starts_with('Q')) {
        "by the file's block types"
    } else {
        "the file's precision"
    };
    println!("storage:     {storage} ({why}; --quant chooses f32, bf16, f16, int8 or nf4)");
    println!("GPU memory:  weights, state per sequence, scratch for {rows}-token steps");
    for (name, m, fits) in &choices {
        println!(
            "  {name:<5} {:>10.1} MiB + {:.2} MiB per sequence + {:.1} MiB{}",
            mib(m.weights),
            mib(m.state_per_sequence),
            mib(m.scratch),
            fits.as_ref().map_or(String::new(), |why| format!(" ({why})"))
        );
    }
    let table = (config.vocab * padded4(config.embd) * 4) as u64;
    let (_, parts) = table_parts(&gpu, config.vocab, config.embd);
    let place = if parts <= EMBED_PARTS {
        "on the GPU"
    } else {
        "in host memory: it needs more storage bindings than the kernel reads"
    };
    println!("  embedding table {:.1} MiB in f32, {place}", mib(table));
    println!("adapter:     {} (shader f16: {})", gpu.describe(), gpu.f16);
    Ok(())
}

/// The file's tensor types with their share of the parameters, largest first (a GGUF file
/// mixes block types: "Q4_K 71%, Q6_K 22%, F32 7%").
fn stored_types(source: &dyn TensorSource) -> Vec<(String, f64)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for name in source.names() {
        let (Some(kind), Some((_, shape))) = (source.stored_type(&name), source.meta(&name)) else {
            continue;
        };
        let elements: usize = shape.iter().product();
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, total)) => *total += elements,
            None => counts.push((kind, elements)),
        }
    }
    counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let all = counts.iter().map(|(_, n)| n).sum::<usize>().max(1) as f64;
    counts.into_iter().map(|(kind, n)| (kind, 100.0 * n as f64 / all)).collect()
}

fn describe_stored(stored: &[(String, f64)]) -> String {
    stored.iter().map(|(kind, share)| format!("{kind} {share:.0}%")).collect::<Vec<_>>().join(", ")
}
