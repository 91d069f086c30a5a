//! `rwkv-wgpu bench`: prefill and decode speed, on a model file or a synthetic RWKV-7 of a
//! standard shape (random weights, made in memory: no file needed).
//!
//! Every figure is the median of several timed repeats after a warm-up run; steps are recorded
//! before timing.

use std::sync::Arc;
use std::time::Instant;

use clap::{Args, ValueEnum};

use super::GpuArgs;
use rwkv_wgpu::model::synthetic::{Shape, SyntheticV7};
use rwkv_wgpu::model::{source, LoadOptions, Model};
use rwkv_wgpu::runtime::{Batch, Engine, EngineOptions, Logits, RequestOptions, SamplerOptions, Session};
use rwkv_wgpu::{Error, Result};

/// The released RWKV-7 sizes, on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StandardShape {
    #[value(name = "0.1b")]
    B01,
    #[value(name = "0.4b")]
    B04,
    #[value(name = "1.5b")]
    B15,
    #[value(name = "2.9b")]
    B29,
    #[value(name = "7b")]
    B7,
}

impl StandardShape {
    /// The name the command line takes, e.g. "2.9b".
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self).map_or_else(String::new, |v| v.get_name().to_string())
    }

    pub fn shape(self) -> Shape {
        let (layers, embd) = match self {
            StandardShape::B01 => (12, 768),
            StandardShape::B04 => (24, 1024),
            StandardShape::B15 => (24, 2048),
            StandardShape::B29 => (32, 2560),
            StandardShape::B7 => (32, 4096),
        };
        Shape::rwkv7(layers, embd, 65536, 64)
    }
}

#[derive(Args)]
pub struct BenchArgs {
    /// A model file; without it, a synthetic RWKV-7 of --shape or --layers/--embd/--vocab.
    #[arg(long, short = 'm')]
    model: Option<std::path::PathBuf>,
    #[arg(long, value_enum, conflicts_with = "model")]
    shape: Option<StandardShape>,
    #[arg(long, requires = "embd")]
    layers: Option<usize>,
    #[arg(long, requires = "layers")]
    embd: Option<usize>,
    #[arg(long, default_value_t = 65536)]
    vocab: usize,
    #[arg(long, default_value_t = 64)]
    head_size: usize,
    /// Prompt tokens read through prefill.
    #[arg(long, default_value_t = 512)]
    prefill: usize,
    /// Tokens generated per decode measurement.
    #[arg(long, default_value_t = 32)]
    gen: usize,
    /// Sequences decoded together, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    batch: Vec<usize>,
    #[arg(long, default_value_t = EngineOptions::DEFAULT_CHUNK)]
    chunk: usize,
    /// Timed repeats per measurement.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Times `run` after one untimed warm-up, `repeats` times; returns the median seconds.
fn timed(repeats: usize, mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    run()?;
    let mut seconds = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let started = Instant::now();
        run()?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    Ok(median(seconds))
}

/// Decode throughput of `sequences` sequences generating `tokens` tokens each, all together.
fn decode(engine: &Engine, sequences: usize, tokens: usize, repeats: usize) -> Result<f64> {
    let options = RequestOptions {
        max_tokens: tokens,
        stop_token: None,
        sampler: SamplerOptions { greedy: true, ..SamplerOptions::default() },
    };
    let seconds = timed(repeats, || {
        let mut batch = Batch::new(engine);
        for s in 0..sequences {
            batch.add(vec![(s % 200 + 1) as u32], options.clone())?;
        }
        while !batch.is_empty() {
            batch.step()?;
        }
        Ok(())
    })?;
    Ok((sequences * tokens) as f64 / seconds)
}

pub fn run(gpu_args: &GpuArgs, args: BenchArgs) -> Result<()> {
    let gpu = gpu_args.open()?;
    let (model, name) = match (&args.model, args.shape, args.layers.zip(args.embd)) {
        (Some(path), _, _) => {
            let source = source::open(path)?;
            (Model::from_source(gpu, source.as_ref(), &LoadOptions::default())?, path.display().to_string())
        }
        (None, Some(shape), _) => {
            let source = SyntheticV7::new(shape.shape(), 1);
            (Model::from_source(gpu, &source, &LoadOptions::default())?, format!("synthetic {shape:?}"))
        }
        (None, None, Some((layers, embd))) => {
            if args.head_size == 0 || embd % args.head_size != 0 || layers == 0 || args.vocab == 0 {
                return Err(Error::InvalidArgument(format!(
                    "--embd {embd} must be a positive multiple of --head-size {}, with at least one layer and token",
                    args.head_size
                )));
            }
            let source = SyntheticV7::new(Shape::rwkv7(layers, embd, args.vocab, args.head_size), 1);
            (
                Model::from_source(gpu, &source, &LoadOptions::default())?,
                format!("synthetic L{layers} D{embd}"),
            )
        }
        _ => return Err(Error::InvalidArgument("give --model, --shape, or --layers and --embd".into())),
    };
    let config = model.config.clone();
    let most = args.batch.iter().copied().max().unwrap_or(1).max(1);
    let engine = Engine::new(Arc::new(model), EngineOptions { slots: most, chunk: args.chunk })?;
    let dispatches = engine.prepare(1, Logits::Last)?;
    engine.prepare(args.chunk.min(args.prefill.max(1)), Logits::Last)?;

    let prompt: Vec<u32> = (0..args.prefill).map(|i| (i * 7919 % config.vocab) as u32).collect();
    let prefill_seconds = timed(args.repeats, || {
        let mut session = Session::new(&engine)?;
        session.feed(&prompt).map(drop)
    })?;
    let prefill = args.prefill as f64 / prefill_seconds;
    let mut decode_rates = Vec::new();
    for &sequences in &args.batch {
        decode_rates.push((sequences, decode(&engine, sequences.max(1), args.gen, args.repeats)?));
    }
    let gpu = &engine.model().gpu;
    if args.json {
        let batches: serde_json::Map<String, serde_json::Value> =
            decode_rates.iter().map(|(b, rate)| (b.to_string(), serde_json::json!(rate))).collect();
        let value = serde_json::json!({
            "model": name,
            "adapter": gpu.describe(),
            "config": config.as_ref(),
            "chunk": args.chunk,
            "prefill_tokens": args.prefill,
            "prefill_tokens_per_s": prefill,
            "decode_tokens_per_s_by_batch": batches,
            "dispatches_per_token": dispatches,
            "submits_per_token": 1,
        });
        println!("{value:#}");
        return Ok(());
    }
    println!(
        "model:        {name} ({}, {} layers, {} channels, vocab {})",
        config.version.name(),
        config.layers,
        config.embd,
        config.vocab
    );
    println!("adapter:      {}", gpu.describe());
    println!("per token:    {dispatches} dispatches, 1 submit");
    println!("prefill:      {prefill:.1} tokens/s ({} tokens, chunks of {})", args.prefill, args.chunk);
    for (sequences, rate) in decode_rates {
        println!(
            "decode B={sequences:<3} {rate:.1} tokens/s in total ({:.1} per sequence)",
            rate / sequences as f64
        );
    }
    Ok(())
}
