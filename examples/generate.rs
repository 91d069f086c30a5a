//! Load a model, read a prompt, and sample a continuation through the library API.
//!
//! cargo run --release --example generate -- MODEL [TOKENIZER_JSON] [PROMPT]
//! e.g. cargo run --release --example generate -- tests/fixtures/v7/tiny/model.pth \
//!          assets/demo/tokenizer.json "Hello"

use std::path::PathBuf;
use std::sync::Arc;

use rwkv_wgpu::gpu::{Gpu, GpuOptions};
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Sampler, SamplerOptions, Session};
use rwkv_wgpu::tokenizer::Tokenizer;

fn main() -> rwkv_wgpu::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_path = PathBuf::from(args.next().unwrap_or_else(|| "tests/fixtures/v7/tiny/model.pth".into()));
    let tokenizer = match args.next() {
        Some(path) => Tokenizer::from_file(path.as_ref())?,
        None => Tokenizer::from_file("assets/demo/tokenizer.json".as_ref())?,
    };
    let prompt = args.next().unwrap_or_else(|| "Hello".into());

    let gpu = Arc::new(Gpu::new(&GpuOptions::default())?);
    println!("adapter: {}", gpu.describe());
    let model = Model::load(gpu, &model_path, &LoadOptions::default())?;
    let engine = Engine::new(Arc::new(model), EngineOptions::default())?;
    let mut session = Session::new(&engine)?;
    let mut sampler =
        Sampler::new(SamplerOptions { greedy: false, seed: Some(0), ..SamplerOptions::default() })?;

    let mut logits = session.feed(&tokenizer.encode(&prompt)?)?;
    let mut text = tokenizer.stream();
    print!("{prompt}");
    for _ in 0..50 {
        let token = sampler.sample(&logits)?;
        print!("{}", text.push(token)?);
        logits = session.feed(&[token])?;
    }
    println!("{}", text.finish()?);
    Ok(())
}
