//! `rwkv-wgpu quantize`: writes a pre-quantized `.safetensors` that loads without quantizing again.

use std::path::PathBuf;

use clap::Args;

use super::ModelArg;
use rwkv_wgpu::model::config::ModelConfig;
use rwkv_wgpu::model::planned_matrices;
use rwkv_wgpu::model::source::quantized;
use rwkv_wgpu::{Error, Result};

#[derive(Args)]
pub struct QuantizeArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Where to write the quantized model (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let plan = args.model.plan();
    if ![plan.layers, plan.head].iter().flatten().any(|format| format.is_quantized()) {
        return Err(Error::InvalidArgument(
            "choose --quant int8 or nf4 (and optionally --quant-head): the float formats need no file of their own".into(),
        ));
    }
    let source = args.model.source()?;
    let config = ModelConfig::from_source(source.as_ref())?;
    let matrices = planned_matrices(source.as_ref(), &config, &plan)?;
    let scheme = plan.describe();
    let written = quantized::write(source.as_ref(), &matrices, &scheme, &args.out)?;
    let quantized = matrices.iter().filter(|m| m.format.is_quantized()).count();
    let original = args.model.file_len()?;
    eprintln!(
        "wrote {} ({scheme}): {quantized} matrices quantized, {:.1} MiB (from {:.1} MiB)",
        args.out.display(),
        written as f64 / (1u64 << 20) as f64,
        original as f64 / (1u64 << 20) as f64
    );
    Ok(())
}
