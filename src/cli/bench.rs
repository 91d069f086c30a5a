//! `rwkv-wgpu bench`: prefill and decode speed, on a model file or a synthetic RWKV-7 of a
//! standard shape (random weights, made in memory: no file needed).
//!
//! Every figure is the median of several timed repeats after a warm-up run; steps are recorded
//! before timing. Per quantization: GPU memory, prefill and decode speed, what a decoded token
//! costs (dispatches, submits, bytes read back) and, with `--profile`, GPU time per kernel.

use std::sync::Arc;
use std::time::Instant;

use clap::{Args, ValueEnum};

use super::bandwidth::{self, Bandwidth};
use super::{bench_grammar, FormatArg, GpuArgs};
use rwkv_wgpu::gpu::DispatchTime;
use rwkv_wgpu::model::config::ModelConfig;
use rwkv_wgpu::model::memory::{memory, Memory};
use rwkv_wgpu::model::source::{self, TensorSource};
use rwkv_wgpu::model::synthetic::{Shape, SyntheticV7};
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::quant::{MatrixFormat, QuantPlan};
use rwkv_wgpu::runtime::{
    Batch, Engine, EngineOptions, GenerateOptions, Logits, RequestOptions, Sampler, SamplerOptions, Session,
    Work,
};
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
    /// Weight formats to measure, comma-separated, each stored as `--quant` stores it (nf4 keeps
    /// the head in int8).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "f16")]
    quant: Vec<FormatArg>,
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
    /// Also time every kernel of a decode step and a prefill step on the GPU (timestamp queries).
    #[arg(long)]
    profile: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Also measure constrained decoding with the JSON schema in FILE (e.g.
    /// examples/schemas/order.json): the masks' CPU time per token, and decode with and without
    /// it (World vocabulary; the first format).
    #[arg(long, value_name = "FILE")]
    json_schema: Option<std::path::PathBuf>,
}

pub(super) fn median(mut values: Vec<f64>) -> f64 {
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

/// `sequences` sequences generating `tokens` tokens each, all together, greedily, as the server's
/// batch does, with `steps_per_submit` decode steps per submit.
fn decode_once(engine: &Engine, sequences: usize, tokens: usize, steps_per_submit: usize) -> Result<()> {
    let options = RequestOptions {
        max_tokens: tokens,
        stop_token: None,
        sampler: SamplerOptions { greedy: true, ..SamplerOptions::default() },
        ..RequestOptions::default()
    };
    let mut batch = Batch::new(engine);
    batch.set_steps_per_submit(steps_per_submit)?;
    for s in 0..sequences {
        batch.add(vec![(s % 200 + 1) as u32], options.clone())?;
    }
    while !batch.is_empty() {
        batch.step()?;
    }
    Ok(())
}

/// What one decoded token costs at batch 1.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct PerToken {
    dispatches: f64,
    submits: f64,
    bytes_read_back: f64,
}

/// Decode's floor at batch 1: every weight read once per token at the measured bandwidth.
fn floor(m: &Measurement, bandwidth: &Bandwidth) -> f64 {
    bandwidth.bytes_per_second / m.memory.weights.max(1) as f64
}

impl PerToken {
    /// What `decode` costs per step, counted by the engine.
    fn of(engine: &Engine, decode: impl FnOnce() -> Result<()>) -> Result<PerToken> {
        engine.reset_counters();
        decode()?;
        let counters = engine.counters();
        let steps = counters.steps.max(1) as f64;
        Ok(PerToken {
            dispatches: counters.dispatches as f64 / steps,
            submits: counters.submits as f64 / steps,
            bytes_read_back: counters.bytes_read_back as f64 / steps,
        })
    }
}

/// GPU time of one kernel over a profiled step.
#[derive(Debug, Clone, serde::Serialize)]
struct KernelTime {
    kernel: String,
    dispatches: usize,
    seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Measurement {
    quant: &'static str,
    memory: Memory,
    prefill_tokens_per_s: f64,
    /// One decode step per submit.
    decode_tokens_per_s_by_batch: Vec<(usize, f64)>,
    per_token: PerToken,
    /// The same batches as generations and the server decode them,
    /// [`GenerateOptions::DEFAULT_STEPS_PER_SUBMIT`] steps per submit; empty with the embedding
    /// table in host memory.
    decode_in_blocks_by_batch: Vec<(usize, f64)>,
    /// What a token costs at batch 1 in blocks.
    per_token_in_blocks: Option<PerToken>,
    profile_decode: Vec<KernelTime>,
    profile_prefill: Vec<KernelTime>,
}

/// Sums dispatch times by kernel, largest first.
fn by_kernel(times: Vec<DispatchTime>) -> Vec<KernelTime> {
    let mut kernels: Vec<KernelTime> = Vec::new();
    for time in times {
        match kernels.iter_mut().find(|k| k.kernel == time.kernel) {
            Some(k) => {
                k.dispatches += 1;
                k.seconds += time.seconds;
            }
            None => kernels.push(KernelTime { kernel: time.kernel, dispatches: 1, seconds: time.seconds }),
        }
    }
    kernels.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    kernels
}

fn measure(args: &BenchArgs, engine: &Engine, quant: &'static str, memory: Memory) -> Result<Measurement> {
    let vocab = engine.model().config.vocab;
    let prompt: Vec<u32> = (0..args.prefill).map(|i| (i * 7919 % vocab) as u32).collect();
    let prefill_seconds = timed(args.repeats, || {
        let mut session = Session::new(engine)?;
        session.feed(&prompt).map(drop)
    })?;
    let blocks = GenerateOptions::DEFAULT_STEPS_PER_SUBMIT;
    let (mut decode, mut in_blocks, mut per_token_in_blocks) = (Vec::new(), Vec::new(), None);
    for &sequences in &args.batch {
        let sequences = sequences.max(1);
        let seconds = timed(args.repeats, || decode_once(engine, sequences, args.gen, 1))?;
        decode.push((sequences, (sequences * args.gen) as f64 / seconds));
        if engine.decodes_in_blocks() {
            let seconds = timed(args.repeats, || decode_once(engine, sequences, args.gen, blocks))?;
            in_blocks.push((sequences, (sequences * args.gen) as f64 / seconds));
        }
    }
    let per_token = PerToken::of(engine, || decode_once(engine, 1, args.gen, 1))?;
    if engine.decodes_in_blocks() {
        per_token_in_blocks = Some(PerToken::of(engine, || decode_once(engine, 1, args.gen, blocks))?);
    }
    let (mut profile_decode, mut profile_prefill) = (Vec::new(), Vec::new());
    if args.profile {
        let mut session = Session::new(engine)?;
        let choice = Sampler::new(SamplerOptions::default())?.choice();
        let token = [1];
        let work = Work { sample: Some(choice), ..Work::new(session.slot(), &token, Logits::None) };
        profile_decode = by_kernel(engine.profile(&[work])?);
        let chunk = &prompt[..prompt.len().min(engine.options().chunk)];
        if !chunk.is_empty() {
            profile_prefill = by_kernel(engine.profile(&[Work::new(session.slot(), chunk, Logits::Last)])?);
        }
        session.reset()?;
    }
    Ok(Measurement {
        quant,
        memory,
        prefill_tokens_per_s: args.prefill as f64 / prefill_seconds,
        decode_tokens_per_s_by_batch: decode,
        per_token,
        decode_in_blocks_by_batch: in_blocks,
        per_token_in_blocks,
        profile_decode,
        profile_prefill,
    })
}

/// The model to measure: a file, or a synthetic RWKV-7 made in memory.
fn open_source(args: &BenchArgs) -> Result<(Box<dyn TensorSource>, String)> {
    match (&args.model, args.shape, args.layers.zip(args.embd)) {
        (Some(path), _, _) => Ok((source::open(path)?, path.display().to_string())),
        (None, Some(shape), _) => {
            Ok((Box::new(SyntheticV7::new(shape.shape(), 1)), format!("synthetic {}", shape.name())))
        }
        (None, None, Some((layers, embd))) => {
            if args.head_size == 0 || embd % args.head_size != 0 || layers == 0 || args.vocab == 0 {
                return Err(Error::InvalidArgument(format!(
                    "--embd {embd} must be a positive multiple of --head-size {}, with at least one layer and token",
                    args.head_size
                )));
            }
            let shape = Shape::rwkv7(layers, embd, args.vocab, args.head_size);
            Ok((Box::new(SyntheticV7::new(shape, 1)), format!("synthetic L{layers} D{embd} V{}", args.vocab)))
        }
        _ => Err(Error::InvalidArgument("give --model, --shape, or --layers and --embd".into())),
    }
}

pub fn run(gpu_args: &GpuArgs, args: BenchArgs) -> Result<()> {
    let (source, name) = open_source(&args)?;
    let config = ModelConfig::from_source(source.as_ref())?;
    let gpu = gpu_args.open()?;
    if args.profile && !gpu.timestamps {
        return Err(Error::InvalidArgument(format!(
            "--profile needs timestamp queries, which {} does not offer",
            gpu.describe()
        )));
    }
    let most = args.batch.iter().copied().max().unwrap_or(1).max(1);
    let mut measurements = Vec::new();
    let mut grammar = None;
    for &format in &args.quant {
        let format = MatrixFormat::from(format);
        let plan = QuantPlan::with(format);
        let memory = memory(source.as_ref(), &config, &plan, args.chunk)?;
        let model = Model::from_source(
            gpu.clone(),
            source.as_ref(),
            &LoadOptions { quant: plan, ..LoadOptions::default() },
        )?;
        let engine = Engine::new(Arc::new(model), EngineOptions { slots: most, chunk: args.chunk })?;
        engine.prepare(1, Logits::Last)?;
        engine.prepare(args.chunk.min(args.prefill.max(1)), Logits::Last)?;
        measurements.push(measure(&args, &engine, format.name(), memory)?);
        if let (None, Some(path)) = (&grammar, &args.json_schema) {
            grammar = Some(bench_grammar::measure(&engine, path, 4 * args.gen.max(16), args.repeats)?);
        }
    }
    let bandwidth = bandwidth::measure(&gpu, args.repeats)?;
    if args.json {
        let floors: Vec<f64> = measurements.iter().map(|m| floor(m, &bandwidth)).collect();
        let value = serde_json::json!({
            "model": name,
            "adapter": gpu.describe(),
            "config": &config,
            "chunk": args.chunk,
            "prefill_tokens": args.prefill,
            "gen_tokens": args.gen,
            "repeats": args.repeats,
            "measurements": measurements,
            "read_bandwidth": bandwidth,
            "decode_floor_tokens_per_s": floors,
            "constrained": grammar,
        });
        println!("{value:#}");
        return Ok(());
    }
    println!(
        "model:    {name} ({}, {} layers, {} channels, vocab {})",
        config.version.name(),
        config.layers,
        config.embd,
        config.vocab
    );
    println!("adapter:  {}", gpu.describe());
    println!(
        "medians of {} runs after a warm-up; prefill of {} tokens in chunks of {}; decode of {} tokens",
        args.repeats, args.prefill, args.chunk, args.gen
    );
    println!(
        "read bandwidth: {:.1} GB/s ({} MiB read {}× per submit, wall clock)",
        bandwidth.bytes_per_second / 1e9,
        bandwidth.buffer_bytes >> 20,
        bandwidth.reads_per_submit
    );
    for m in &measurements {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        println!(
            "\n[{}] GPU memory {:.1} MiB weights + {:.2} MiB per sequence + {:.1} MiB scratch",
            m.quant,
            mib(m.memory.weights),
            mib(m.memory.state_per_sequence),
            mib(m.memory.scratch)
        );
        println!(
            "  per token: {:.0} dispatches, {:.0} submit, {:.0} bytes read back",
            m.per_token.dispatches, m.per_token.submits, m.per_token.bytes_read_back
        );
        println!("  prefill:     {:.1} tokens/s", m.prefill_tokens_per_s);
        for (sequences, rate) in &m.decode_tokens_per_s_by_batch {
            let blocks = m.decode_in_blocks_by_batch.iter().find(|(b, _)| b == sequences);
            let blocks = blocks.map_or(String::new(), |(_, r)| {
                format!("; {r:.1} with {} steps per submit", GenerateOptions::DEFAULT_STEPS_PER_SUBMIT)
            });
            println!(
                "  decode B={sequences:<3} {rate:.1} tokens/s in total ({:.1} per sequence){blocks}",
                rate / *sequences as f64
            );
        }
        let at_one = |rates: &[(usize, f64)]| {
            rates.iter().filter(|(b, _)| *b == 1).map(|&(_, r)| r).fold(0.0, f64::max)
        };
        let best = at_one(&m.decode_in_blocks_by_batch).max(at_one(&m.decode_tokens_per_s_by_batch));
        let floor = floor(m, &bandwidth);
        println!(
            "  decode floor at batch 1: {floor:.1} tokens/s (the weights over the read bandwidth); B=1 reached {:.1}% of it",
            100.0 * best / floor
        );
        if let Some(cost) = &m.per_token_in_blocks {
            println!(
                "  in blocks of {}: {:.2} submits and {:.0} bytes read back per token at B=1",
                GenerateOptions::DEFAULT_STEPS_PER_SUBMIT,
                cost.submits,
                cost.bytes_read_back
            );
        }
        for (what, kernels) in [("decode step", &m.profile_decode), ("prefill step", &m.profile_prefill)] {
            if kernels.is_empty() {
                continue;
            }
            let total: f64 = kernels.iter().map(|k| k.seconds).sum();
            println!("  GPU time of one {what}: {:.3} ms", total * 1e3);
            for k in kernels {
                println!(
                    "    {:>9.3} ms {:>5.1}% {:>4}× {}",
                    k.seconds * 1e3,
                    100.0 * k.seconds / total.max(1e-12),
                    k.dispatches,
                    k.kernel
                );
            }
        }
    }
    if let Some(grammar) = &grammar {
        bench_grammar::print(grammar);
    }
    Ok(())
}
