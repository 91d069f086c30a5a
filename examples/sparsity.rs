//! How much of RWKV-7's channel mix the squared ReLU's zeros save when decoding: per layer, the
//! share of k = relu(W_k·x_k)² that is zero and the share of W_v's columns the one-token product
//! skips (groups of 4 inputs that are all zero), over a text read by the CPU reference.
//!
//!     cargo run --release --example sparsity -- MODEL TOKENIZER TEXT [TOKENS]
//!     cargo run --release --example sparsity -- assets/demo/model.safetensors \
//!         assets/demo/tokenizer.json assets/demo/heldout.txt 1024

use std::path::PathBuf;

use rwkv_wgpu::model::source;
use rwkv_wgpu::model::v7::reference::ReferenceModel;
use rwkv_wgpu::tokenizer::Tokenizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, tokenizer, text, rest @ ..] = args.as_slice() else {
        eprintln!("usage: sparsity MODEL TOKENIZER TEXT [TOKENS]");
        std::process::exit(2);
    };
    let limit = rest.first().and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
    let source = source::open(&PathBuf::from(model))?;
    let reference = ReferenceModel::from_source(source.as_ref())?;
    let text = std::fs::read_to_string(text)?;
    let mut tokens = Tokenizer::from_file(&PathBuf::from(tokenizer))?.encode(&text)?;
    tokens.truncate(limit);
    let layers = reference.channel_mix_sparsity(&tokens)?;
    println!("{} tokens; per layer: zero entries of k, W_v columns skipped", tokens.len());
    for (layer, s) in layers.iter().enumerate() {
        let zero = s.zero_channels as f64 / s.channels.max(1) as f64;
        println!("  layer {layer:>2}: {:>5.1}%  {:>5.1}%", 100.0 * zero, 100.0 * s.skipped());
    }
    let (skipped, groups) = layers.iter().fold((0, 0), |(z, g), s| (z + s.zero_groups, g + s.groups));
    let share = skipped as f64 / groups.max(1) as f64;
    println!(
        "W_v reads skipped: {:.1}%, i.e. {:.1}% of the channel mix's weights (W_k and W_v)",
        100.0 * share,
        50.0 * share
    );
    Ok(())
}
