//! Long-run soak: generates for hours and checks that nothing drifts. Not a test (it takes too
//! long for CI); `tools/soak.sh` runs it twice and compares the outputs byte for byte.
//!
//! cargo run --release --example soak -- [--model PATH] [--tokens N] [--sequences S] [--steps K]
//!     [--seed N] [--check-every M] [--out DIR]
//!
//! One sequence generates `--tokens` tokens, then `--sequences` sequences generate `--steps`
//! tokens each, all in one step at a time. Every step's logits come back and must be finite, as
//! must every sampled token; every `--check-every` steps the recurrent states are read and must be
//! finite too, and process and GPU memory are recorded. Tokens go to `OUT/single.tokens` and
//! `OUT/batch.tokens` (little-endian u32), so two runs with one seed can be compared.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rwkv_wgpu::gpu::{Gpu, GpuOptions};
use rwkv_wgpu::kernels::Choice;
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Logits, Sampler, SamplerOptions, Session, Work};
use rwkv_wgpu::{Error, Result};

struct Options {
    model: PathBuf,
    tokens: usize,
    sequences: usize,
    steps: usize,
    seed: u64,
    check_every: usize,
    out: PathBuf,
}

fn parse() -> Options {
    let mut options = Options {
        model: "assets/demo/model.safetensors".into(),
        tokens: 100_000,
        sequences: 16,
        steps: 10_000,
        seed: 1,
        check_every: 1000,
        out: "target/soak".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = || value.parse::<usize>().unwrap_or_else(|_| usage(&format!("{flag}: not a number")));
        match flag.as_str() {
            "--model" => options.model = value.clone().into(),
            "--tokens" => options.tokens = number(),
            "--sequences" => options.sequences = number(),
            "--steps" => options.steps = number(),
            "--seed" => options.seed = number() as u64,
            "--check-every" => options.check_every = number().max(1),
            "--out" => options.out = value.clone().into(),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    options
}

fn usage(problem: &str) -> ! {
    eprintln!("soak: {problem}\nflags: --model --tokens --sequences --steps --seed --check-every --out");
    std::process::exit(2)
}

/// Resident memory of this process, in MiB.
fn process_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(f64::NAN);
    pages * 4096.0 / (1 << 20) as f64
}

/// GPU memory the device has allocated, in MiB, and its number of allocations (where the backend
/// reports them: Vulkan, DX12).
fn gpu_memory(gpu: &Gpu) -> String {
    match gpu.device.generate_allocator_report() {
        Some(report) => format!(
            "{:.2} MiB in {} allocations ({:.2} MiB reserved)",
            report.total_allocated_bytes as f64 / (1 << 20) as f64,
            report.allocations.len(),
            report.total_reserved_bytes as f64 / (1 << 20) as f64
        ),
        None => "not reported by this backend".into(),
    }
}

/// Runs `steps` steps of every session at once, sampling on the GPU; returns the tokens, step by
/// step.
fn run(
    engine: &Engine,
    sessions: &[Session],
    seed: u64,
    steps: usize,
    every: usize,
    name: &str,
) -> Result<Vec<u32>> {
    // Drawn, as the CLI samples by default (the library's default is greedy).
    let options = SamplerOptions {
        greedy: false,
        temperature: 1.0,
        top_p: 0.85,
        presence_penalty: 0.1,
        frequency_penalty: 0.1,
        ..SamplerOptions::default()
    };
    let mut samplers: Vec<Sampler> = (0..sessions.len())
        .map(|i| Sampler::new(SamplerOptions { seed: Some(seed + i as u64), ..options.clone() }))
        .collect::<Result<_>>()?;
    let vocab = engine.model().config.vocab as u32;
    // Each sequence starts from a different byte of a short prompt.
    let mut last: Vec<u32> = (0..sessions.len()).map(|i| b"ROMEO:\n"[i % 7] as u32 % vocab).collect();
    let mut out = Vec::with_capacity(steps * sessions.len());
    let started = Instant::now();
    report(engine, name, 0, steps, started);
    for step in 1..=steps {
        let inputs: Vec<[u32; 1]> = last.iter().map(|&t| [t]).collect();
        let work: Vec<Work> = sessions
            .iter()
            .zip(&inputs)
            .zip(&mut samplers)
            .map(|((s, token), sampler)| Work {
                sample: Some(sampler.choice()),
                ..Work::new(s.slot(), token, Logits::Last)
            })
            .collect();
        let outputs = engine.step(&work)?;
        for ((output, token), sampler) in outputs.iter().zip(&mut last).zip(&mut samplers) {
            if let Some(bad) = output.logits.iter().position(|x| !x.is_finite()) {
                return Err(Error::Gpu(format!("{name} step {step}: logit {bad} is {}", output.logits[bad])));
            }
            *token = match output.token {
                Some(t) if t != Choice::NON_FINITE_LOGITS && t < vocab => t,
                other => return Err(Error::Gpu(format!("{name} step {step}: sampled {other:?}"))),
            };
            sampler.count(*token);
            out.push(*token);
        }
        if step % every == 0 || step == steps {
            for session in sessions {
                let state = session.state()?;
                let values = state.layers.iter().flat_map(|l| l.att_x.iter().chain(&l.wkv).chain(&l.ffn_x));
                if let Some(bad) = values.clone().find(|x| !x.is_finite()) {
                    return Err(Error::Gpu(format!("{name} step {step}: a state value is {bad}")));
                }
            }
            report(engine, name, step, steps, started);
        }
    }
    Ok(out)
}

fn report(engine: &Engine, name: &str, step: usize, steps: usize, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{name}: step {step}/{steps}, {seconds:.0} s, process {:.1} MiB, GPU {}",
        process_mib(),
        gpu_memory(&engine.model().gpu)
    );
}

fn main() -> Result<()> {
    let options = parse();
    std::fs::create_dir_all(&options.out).map_err(|e| Error::io(&options.out, e))?;
    let gpu = Arc::new(Gpu::new(&GpuOptions::default())?);
    println!("adapter: {}", gpu.describe());
    let model = Arc::new(Model::load(gpu, &options.model, &LoadOptions::default())?);
    let engine = Engine::new(model, EngineOptions { slots: options.sequences.max(1), chunk: 16 })?;
    let save = |name: &str, tokens: &[u32]| {
        let path = options.out.join(name);
        std::fs::write(&path, bytemuck::cast_slice(tokens)).map_err(|e| Error::io(&path, e))
    };

    let started = Instant::now();
    let single =
        run(&engine, &[Session::new(&engine)?], options.seed, options.tokens, options.check_every, "single")?;
    save("single.tokens", &single)?;
    println!("single: {} tokens in {:.0} s", single.len(), started.elapsed().as_secs_f64());

    let started = Instant::now();
    let sessions: Vec<Session> =
        (0..options.sequences).map(|_| Session::new(&engine)).collect::<Result<_>>()?;
    let batch = run(&engine, &sessions, options.seed + 1000, options.steps, options.check_every, "batch")?;
    save("batch.tokens", &batch)?;
    // Different seeds must give different sequences: a sampler that ignored its draws would not.
    let sequence = |i: usize| batch.iter().skip(i).step_by(options.sequences).copied().collect::<Vec<u32>>();
    let alike = (1..options.sequences).filter(|&i| sequence(i) == sequence(0)).count();
    if alike > 0 {
        return Err(Error::Gpu(format!("{alike} sequences generated exactly what sequence 0 did")));
    }
    println!(
        "batch: {} sequences × {} steps = {} tokens in {:.0} s",
        options.sequences,
        options.steps,
        batch.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
