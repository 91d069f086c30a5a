//! `rwkv-wgpu generate`: continue a prompt, streaming text to stdout as it is produced.

use std::io::Write;
use std::time::Instant;

use clap::Args;

use super::sampling::SamplingArgs;
use super::{encode, GpuArgs, TextModelArgs};
use rwkv_wgpu::runtime::{Engine, GenerateOptions, Logits, Session};
use rwkv_wgpu::{Error, Result};

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: TextModelArgs,
    /// Text to continue.
    #[arg(long, short = 'p')]
    prompt: String,
    /// Number of tokens to generate.
    #[arg(short = 'n', long, default_value_t = 200)]
    max_tokens: usize,
    /// Stop before this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

pub fn run(gpu_args: &GpuArgs, args: GenerateArgs) -> Result<()> {
    let mut options = GenerateOptions {
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
        sampler: args.sampling.options(),
        ..GenerateOptions::default()
    };
    options.sampler.validate()?;
    let tokenizer = args.model.tokenizer()?;
    if args.prompt.is_empty() {
        return Err(Error::InvalidArgument("the prompt is empty".into()));
    }
    let engine = args.model.engine(gpu_args, 1)?;
    options.grammar = args.sampling.grammar(&tokenizer, engine.model().config.vocab)?;
    let prompt = encode(&tokenizer, &args.prompt, engine.model().config.vocab)?;
    generate(&engine, &tokenizer, &prompt, &options)
}

fn generate(
    engine: &Engine,
    tokenizer: &rwkv_wgpu::tokenizer::Tokenizer,
    prompt: &[u32],
    options: &GenerateOptions,
) -> Result<()> {
    let mut session = Session::new(engine)?;
    // Record the steps this run will take before timing it.
    let chunk = engine.options().chunk;
    engine.prepare(prompt.len().min(chunk), Logits::Last)?;
    if prompt.len() > chunk {
        engine.prepare(chunk, Logits::None)?;
        engine.prepare((prompt.len() - 1) % chunk + 1, Logits::Last)?;
    }
    engine.prepare(1, Logits::Last)?;
    let mut stdout = std::io::stdout().lock();
    let started = Instant::now();
    let mut generation = session.generate_tokens(tokenizer, prompt, options)?;
    let prompt_time = started.elapsed();

    let started = Instant::now();
    let mut generated = 0;
    let mut reports = Vec::new();
    for piece in generation.by_ref() {
        let piece = piece?;
        generated += 1;
        write!(stdout, "{}", piece.text)
            .and_then(|()| stdout.flush())
            .map_err(|e| Error::io("<stdout>", e))?;
        reports.extend(piece.logprobs.map(|logprobs| (piece.token, logprobs)));
    }
    writeln!(stdout).map_err(|e| Error::io("<stdout>", e))?;
    let generate_time = started.elapsed();
    print_logprobs(tokenizer, &reports)?;
    let rate = |tokens: usize, seconds: f64| tokens as f64 / seconds.max(1e-9);
    eprintln!(
        "prompt: {} tokens, {:.1} tokens/s (prefill, chunks of {}); generated: {generated} tokens, {:.1} tokens/s",
        prompt.len(),
        rate(prompt.len(), prompt_time.as_secs_f64()),
        engine.options().chunk,
        rate(generated, generate_time.as_secs_f64()),
    );
    Ok(())
}

/// One line per generated token on stderr: its id, text and log-probability, then the most
/// likely tokens with theirs.
fn print_logprobs(
    tokenizer: &rwkv_wgpu::tokenizer::Tokenizer,
    reports: &[(u32, rwkv_wgpu::kernels::TokenLogprobs)],
) -> Result<()> {
    let text = |token: u32| tokenizer.decode(&[token]).map(|text| format!("{text:?}"));
    for (token, logprobs) in reports {
        let top = logprobs
            .top
            .iter()
            .map(|&(id, logprob)| Ok(format!("{}={logprob:.4}", text(id)?)))
            .collect::<Result<Vec<_>>>()?;
        eprintln!("logprob {token} {} {:.4}  top: {}", text(*token)?, logprobs.logprob, top.join(" "));
    }
    Ok(())
}
