//! How much of RWKV-7's channel mix the squared ReLU's zeros save when decoding: per layer, the
//! share of k = relu(W_k·x_k)² that is zero, which is the share of W_v the one-token product
//! skips with W_v stored by input (the default), and the share it skips stored by output (groups
//! of 4 inputs that are all zero), over a text read by the CPU reference.
//!
//!     cargo run --release --example sparsity -- MODEL TOKENIZER TEXT [TOKENS]
//!     cargo run --release --example sparsity -- assets/demo/model.safetensors \
//!         assets/demo/tokenizer.json assets/demo/heldout.txt 1024

use std::path::PathBuf;

use rwkv_wgpu::model::source;
use rwkv_wgpu::model::v7::reference::{ReferenceModel, Sparsity};
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
    println!(
        "{} tokens; per layer: W_v skipped stored by input (zero entries of k), by output",
        tokens.len()
    );
    for (layer, s) in layers.iter().enumerate() {
        println!(
            "  layer {layer:>2}: {:>5.1}%  {:>5.1}%",
            100.0 * s.skipped_by_input(),
            100.0 * s.skipped_by_output()
        );
    }
    let total = |part: fn(&Sparsity) -> u64, whole: fn(&Sparsity) -> u64| {
        let (p, w) = layers.iter().fold((0, 0), |(p, w), s| (p + part(s), w + whole(s)));
        p as f64 / w.max(1) as f64
    };
    for (how, share) in [
        ("by input", total(|s| s.zero_channels, |s| s.channels)),
        ("by output", total(|s| s.zero_groups, |s| s.groups)),
    ] {
        println!(
            "W_v stored {how}: {:.1}% of its reads skipped, i.e. {:.1}% of the channel mix's weights (W_k and W_v)",
            100.0 * share,
            50.0 * share
        );
    }
    Ok(())
}
