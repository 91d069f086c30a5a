//! `bench --json-schema FILE`: what constrained decoding costs. The masks' CPU time per token,
//! measured alone along the text a constrained generation wrote, and decode at batch 1 with and
//! without the schema, side by side on one engine: the masks are computed while the GPU runs the
//! forward pass, so in steady state the constrained rate should be the free one.

use std::path::Path;
use std::time::Instant;

use super::bench::median;
use rwkv_wgpu::grammar::{Grammar, Grammars};
use rwkv_wgpu::runtime::{Engine, GenerateOptions, SamplerOptions, Session};
use rwkv_wgpu::tokenizer::{Tokenizer, WORLD_MODEL_VOCAB_SIZE};
use rwkv_wgpu::{Error, Result};

#[derive(Debug, Clone, serde::Serialize)]
pub struct GrammarMeasurement {
    pub schema: String,
    /// Indexing the vocabulary for grammars (once per model).
    pub index_seconds: f64,
    pub compile_seconds: f64,
    /// CPU time of one token's mask: median and mean over the text.
    pub mask_ms_median: f64,
    pub mask_ms_mean: f64,
    pub tokens: usize,
    pub free_tokens_per_s: f64,
    pub constrained_tokens_per_s: f64,
}

/// Sampled generations of at most `tokens` tokens, free and constrained by the schema in `path`,
/// `repeats` times each (medians), on a model of the World vocabulary.
pub fn measure(engine: &Engine, path: &Path, tokens: usize, repeats: usize) -> Result<GrammarMeasurement> {
    let vocab = engine.model().config.vocab;
    if vocab != WORLD_MODEL_VOCAB_SIZE {
        return Err(Error::InvalidArgument(format!(
            "--json-schema measures with the World vocabulary ({WORLD_MODEL_VOCAB_SIZE} tokens); this model has {vocab}"
        )));
    }
    let tokenizer = Tokenizer::world()?;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let schema = serde_json::from_str(&text)
        .map_err(|e| Error::Grammar(format!("{}: not JSON: {e}", path.display())))?;
    let started = Instant::now();
    let grammars = Grammars::new(&tokenizer, vocab)?;
    let index_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let grammar = grammars.compile(&Grammar::JsonSchema(schema))?;
    let compile_seconds = started.elapsed().as_secs_f64();

    let sampler =
        SamplerOptions { greedy: false, temperature: 1.0, seed: Some(1), ..SamplerOptions::default() };
    let free =
        GenerateOptions { max_tokens: tokens, sampler, stop_at_end_of_text: false, ..Default::default() };
    let constrained = GenerateOptions { grammar: Some(grammar.clone()), ..free.clone() };
    let rate = |options: &GenerateOptions| -> Result<(f64, Vec<u32>)> {
        let mut rates = Vec::new();
        let mut written = Vec::new();
        for _ in 0..repeats.max(1) + 1 {
            let mut session = Session::new(engine)?;
            let mut generation = session.generate_tokens(&tokenizer, &[1], options)?;
            let started = Instant::now();
            written = generation.by_ref().map(|piece| piece.map(|p| p.token)).collect::<Result<_>>()?;
            rates.push(written.len() as f64 / started.elapsed().as_secs_f64().max(1e-9));
        }
        rates.remove(0); // the warm-up
        Ok((median(rates), written))
    };
    let (free_rate, _) = rate(&free)?;
    let (constrained_rate, written) = rate(&constrained)?;

    // The masks alone, along the text the constrained generation wrote.
    let constraint = grammar.start();
    let mut words = vec![0u32; rwkv_wgpu::kernels::mask_words(vocab)];
    let mut times = Vec::with_capacity(written.len());
    for &token in &written {
        let started = Instant::now();
        constraint.allowed_tokens(&mut words)?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        if constraint.is_end(token) {
            break;
        }
        constraint.accept(token)?;
    }
    Ok(GrammarMeasurement {
        schema: path.display().to_string(),
        index_seconds,
        compile_seconds,
        mask_ms_mean: times.iter().sum::<f64>() / times.len().max(1) as f64,
        mask_ms_median: if times.is_empty() { 0.0 } else { median(times.clone()) },
        tokens: times.len(),
        free_tokens_per_s: free_rate,
        constrained_tokens_per_s: constrained_rate,
    })
}

pub fn print(m: &GrammarMeasurement) {
    println!("\n[constrained decoding] {}", m.schema);
    println!(
        "  index the vocabulary {:.2} s (once per model); compile the schema {:.1} ms",
        m.index_seconds,
        m.compile_seconds * 1e3
    );
    println!(
        "  mask per token: {:.3} ms median, {:.3} ms mean over {} tokens (CPU, while the GPU runs)",
        m.mask_ms_median, m.mask_ms_mean, m.tokens
    );
    println!(
        "  decode B=1: {:.1} tokens/s free, {:.1} tokens/s constrained ({:.2}×)",
        m.free_tokens_per_s,
        m.constrained_tokens_per_s,
        m.constrained_tokens_per_s / m.free_tokens_per_s.max(1e-9)
    );
}
