//! `rwkv-wgpu perplexity`: the model's average loss on a text file, read through prefill with
//! the logits of every position.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::{encode, GpuArgs, TextModelArgs};
use rwkv_wgpu::runtime::Session;
use rwkv_wgpu::{Error, Result};

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: TextModelArgs,
    /// The text to score (UTF-8).
    #[arg(long)]
    text: PathBuf,
}

/// −log softmax(logits)[target], in f64.
fn loss(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let sum: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    sum.ln() - f64::from(logits[target as usize] - max)
}

pub fn run(gpu_args: &GpuArgs, args: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.text).map_err(|e| Error::io(&args.text, e))?;
    let tokenizer = args.model.tokenizer()?;
    let engine = args.model.engine(gpu_args, 1)?;
    let vocab = engine.model().config.vocab;
    let tokens = encode(&tokenizer, &text, vocab)?;
    if tokens.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "{}: needs at least two tokens of text",
            args.text.display()
        )));
    }
    let mut session = Session::new(&engine)?;
    let started = Instant::now();
    let mut total = 0.0;
    // The logits after token t predict token t + 1; the last token predicts nothing we have.
    let inputs = &tokens[..tokens.len() - 1];
    session.feed_positions_with(inputs, |first, logits| {
        for (offset, row) in logits.chunks_exact(vocab).enumerate() {
            total += loss(row, tokens[first + offset + 1]);
        }
        Ok(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let predicted = inputs.len() as f64;
    let average = total / predicted;
    println!("tokens:      {} ({} bytes)", tokens.len(), text.len());
    println!("loss:        {average:.6} nats per token");
    println!("perplexity:  {:.4}", average.exp());
    println!("bits/byte:   {:.4}", total / std::f64::consts::LN_2 / text.len() as f64);
    eprintln!(
        "read {} tokens in {seconds:.2} s ({:.1} tokens/s, chunks of {})",
        inputs.len(),
        predicted / seconds.max(1e-9),
        engine.options().chunk
    );
    Ok(())
}
