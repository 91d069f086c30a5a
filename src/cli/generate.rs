//! `rwkv-wgpu generate`: continue a prompt, streaming text to stdout as it is produced.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::{GpuArgs, ModelArg};
use rwkv_wgpu::model::Model;
use rwkv_wgpu::runtime::{Engine, EngineOptions, Sampler, SamplerOptions, Session};
use rwkv_wgpu::tokenizer::Tokenizer;
use rwkv_wgpu::{Error, Result};

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Text to continue.
    #[arg(long, short = 'p')]
    prompt: String,
    /// Number of tokens to generate.
    #[arg(short = 'n', long, default_value_t = 200)]
    max_tokens: usize,
    /// Sampling temperature (> 0).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this total probability, in (0, 1].
    #[arg(long, default_value_t = 0.85)]
    top_p: f32,
    /// Keep only the k most likely tokens (0: no limit).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Penalty on tokens that already appeared in the output.
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    /// Penalty per earlier occurrence in the output.
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Always pick the most likely token.
    #[arg(long)]
    greedy: bool,
    /// Seed for reproducible sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// A Hugging Face tokenizer.json for models not trained on the RWKV World vocabulary.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

pub fn run(gpu_args: &GpuArgs, args: GenerateArgs) -> Result<()> {
    let sampler = Sampler::new(SamplerOptions {
        greedy: args.greedy,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        seed: args.seed,
    })?;
    let tokenizer = match &args.tokenizer {
        Some(path) => Tokenizer::from_file(path)?,
        None => Tokenizer::world()?,
    };
    let prompt = tokenizer.encode(&args.prompt)?;
    if prompt.is_empty() {
        return Err(Error::InvalidArgument("the prompt is empty".into()));
    }
    let model = args.model.load(gpu_args)?;
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= model.config.vocab) {
        return Err(Error::InvalidArgument(format!(
            "the prompt encodes to token {id}, outside the model's vocabulary of {}: is this the model's tokenizer? \
             (pass --tokenizer tokenizer.json for models not trained on the World vocabulary)",
            model.config.vocab
        )));
    }
    generate(model, &tokenizer, &prompt, sampler, args.max_tokens)
}

fn generate(
    model: Model,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    mut sampler: Sampler,
    max_tokens: usize,
) -> Result<()> {
    let engine = Engine::new(std::sync::Arc::new(model), EngineOptions::default())?;
    let mut session = Session::new(&engine)?;
    let mut stdout = std::io::stdout().lock();
    let started = Instant::now();
    let mut logits = session.feed(prompt)?;
    let prompt_time = started.elapsed();

    let started = Instant::now();
    let mut text = tokenizer.stream();
    let mut generated = 0;
    while generated < max_tokens {
        let token = sampler.sample(&logits)?;
        generated += 1;
        if Some(token) == tokenizer.end_of_text() {
            break;
        }
        write!(stdout, "{}", text.push(token)?).and_then(|()| stdout.flush()).map_err(stdout_error)?;
        if generated < max_tokens {
            logits = session.feed(&[token])?;
        }
    }
    writeln!(stdout, "{}", text.finish()?).map_err(stdout_error)?;
    let generate_time = started.elapsed();
    let rate = |tokens: usize, seconds: f64| tokens as f64 / seconds.max(1e-9);
    eprintln!(
        "prompt: {} tokens, {:.1} tokens/s; generated: {generated} tokens, {:.1} tokens/s",
        prompt.len(),
        rate(prompt.len(), prompt_time.as_secs_f64()),
        rate(generated, generate_time.as_secs_f64()),
    );
    Ok(())
}

fn stdout_error(e: std::io::Error) -> Error {
    Error::io("<stdout>", e)
}
