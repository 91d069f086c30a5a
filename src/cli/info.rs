//! `rwkv-wgpu info`: what a model file holds, checked tensor by tensor, without loading it.

use clap::Args;

use super::{GpuArgs, ModelArg};
use rwkv_wgpu::model::config::ModelConfig;
use rwkv_wgpu::model::{gpu_bytes, source, validate};
use rwkv_wgpu::Result;

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(gpu_args: &GpuArgs, args: InfoArgs) -> Result<()> {
    let source = source::open(&args.model.model)?;
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
    let gpu = gpu_args.open()?;
    let weights = gpu_bytes(source.as_ref());
    let state_per_layer =
        if config.heads == 0 { 5 * config.embd } else { config.embd * (config.head_size + 2) };
    let state = (config.layers * state_per_layer * 4) as u64;
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    if args.json {
        let value = serde_json::json!({
            "file": args.model.model.display().to_string(),
            "format": source.format(),
            "dtype": dtype,
            "config": config,
            "parameters": parameters,
            "gpu_weight_bytes": weights,
            "state_bytes": state,
            "adapter": gpu.describe(),
            "shader_f16": gpu.f16,
        });
        println!("{value:#}");
        return Ok(());
    }
    println!("file:        {} ({}, {dtype})", args.model.model.display(), source.format());
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
    println!(
        "GPU memory:  {:.1} MiB weights (f16 matrices) + {:.2} MiB state per sequence; embedding stays in host memory",
        mib(weights),
        mib(state)
    );
    println!("adapter:     {} (shader f16: {})", gpu.describe(), gpu.f16);
    Ok(())
}
