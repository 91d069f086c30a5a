//! Sampling options shared by `generate` and `chat`.

use clap::Args;

use rwkv_wgpu::runtime::SamplerOptions;

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
    /// Always pick the most likely token.
    #[arg(long)]
    greedy: bool,
    /// Seed for reproducible sampling.
    #[arg(long)]
    seed: Option<u64>,
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
            seed: self.seed,
        }
    }
}
