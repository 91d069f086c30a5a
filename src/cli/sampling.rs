//! Sampling options shared by `generate` and `chat`.

use clap::Args;

use std::path::PathBuf;

use rwkv_wgpu::grammar::{CompiledGrammar, Grammar, Grammars};
use rwkv_wgpu::runtime::SamplerOptions;
use rwkv_wgpu::tokenizer::Tokenizer;
use rwkv_wgpu::{Error, Result};

#[derive(Args)]
pub struct SamplingArgs {
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
    /// The penalties' counts are multiplied by this after each token (the official pipeline uses
    /// 0.996), in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    penalty_decay: f32,
    /// Keep only tokens at least this share as likely as the most likely one, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Typical sampling: keep the tokens whose surprise is nearest the entropy until they carry
    /// this share of the mass, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    typical_p: f32,
    /// Add BIAS to token ID's logit (repeatable).
    #[arg(long, value_name = "ID:BIAS", value_parser = parse_bias)]
    logit_bias: Vec<(u32, f32)>,
    /// Never generate this token id (repeatable).
    #[arg(long, value_name = "ID")]
    ban: Vec<u32>,
    /// Always pick the most likely token.
    #[arg(long)]
    greedy: bool,
    /// Seed for reproducible sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Report each token's log-probability and those of the N most likely tokens (0 to 20).
    #[arg(long, value_name = "N")]
    logprobs: Option<usize>,
    /// Generate JSON that validates against the JSON schema in FILE.
    #[arg(long, value_name = "FILE", group = "constraint")]
    json_schema: Option<PathBuf>,
    /// Generate text of the grammar in FILE (llguidance's Lark syntax: `start: ...`).
    #[arg(long, value_name = "FILE", group = "constraint")]
    grammar: Option<PathBuf>,
    /// Generate text that matches this regular expression.
    #[arg(long, value_name = "RE", group = "constraint")]
    regex: Option<String>,
}

impl SamplingArgs {
    pub fn options(&self) -> SamplerOptions {
        SamplerOptions {
            greedy: self.greedy,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            penalty_decay: self.penalty_decay,
            min_p: self.min_p,
            typical_p: self.typical_p,
            logit_bias: self.logit_bias.clone(),
            banned: self.ban.clone(),
            logprobs: self.logprobs,
            seed: self.seed,
        }
    }
}

impl SamplingArgs {
    /// The grammar asked for, compiled for `tokenizer` and a model of `vocab` tokens: a bad file,
    /// schema, grammar or expression is an error before the model is read.
    pub fn grammar(&self, tokenizer: &Tokenizer, vocab: usize) -> Result<Option<CompiledGrammar>> {
        let read = |path: &PathBuf| std::fs::read_to_string(path).map_err(|e| Error::io(path, e));
        let grammar = if let Some(path) = &self.json_schema {
            let schema = serde_json::from_str(&read(path)?)
                .map_err(|e| Error::Grammar(format!("{}: not JSON: {e}", path.display())))?;
            Grammar::JsonSchema(schema)
        } else if let Some(path) = &self.grammar {
            Grammar::Lark(read(path)?)
        } else if let Some(regex) = &self.regex {
            Grammar::Regex(regex.clone())
        } else {
            return Ok(None);
        };
        Ok(Some(Grammars::new(tokenizer, vocab)?.compile(&grammar)?))
    }
}

fn parse_bias(text: &str) -> Result<(u32, f32), String> {
    let (id, bias) = text.split_once(':').ok_or_else(|| format!("`{text}` is not ID:BIAS"))?;
    let id = id.trim().parse().map_err(|_| format!("`{id}` is not a token id"))?;
    let bias = bias.trim().parse().map_err(|_| format!("`{bias}` is not a number"))?;
    Ok((id, bias))
}
