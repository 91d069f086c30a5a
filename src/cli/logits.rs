//! `rwkv-wgpu logits`: the conformance interface. Feeds tokens one at a time from the zero state
//! and writes the logits after each as a float32 .npy [T, V]. Keep its behaviour stable.

use std::path::PathBuf;

use clap::Args;

use super::{GpuArgs, ModelArg};
use rwkv_wgpu::npy::{self, Array};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Session};
use rwkv_wgpu::{Error, Result};

#[derive(Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Token ids, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "tokens_file",
        required_unless_present = "tokens_file"
    )]
    tokens: Vec<i64>,
    /// Token ids from a 1-D int32 or int64 .npy file.
    #[arg(long)]
    tokens_file: Option<PathBuf>,
    /// Where to write the logits.
    #[arg(long)]
    out: PathBuf,
}

fn token_ids(args: &LogitsArgs) -> Result<Vec<u32>> {
    let ids = match &args.tokens_file {
        Some(path) => match npy::read(path)? {
            Array::I64 { shape, data } if shape.len() == 1 => data,
            Array::I64 { shape, .. } => {
                return Err(Error::InvalidArgument(format!(
                    "{}: expected a 1-D array, found shape {shape:?}",
                    path.display()
                )))
            }
            Array::F32 { .. } => {
                return Err(Error::InvalidArgument(format!(
                    "{}: token ids must be int32 or int64, found float32",
                    path.display()
                )))
            }
        },
        None => args.tokens.clone(),
    };
    if ids.is_empty() {
        return Err(Error::InvalidArgument("no tokens given".into()));
    }
    ids.into_iter()
        .map(|id| {
            u32::try_from(id).map_err(|_| Error::InvalidArgument(format!("token id {id} is not a valid id")))
        })
        .collect()
}

pub fn run(gpu_args: &GpuArgs, args: LogitsArgs) -> Result<()> {
    let tokens = token_ids(&args)?;
    let model = args.model.load(gpu_args)?;
    let vocab = model.config.vocab;
    if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(Error::TokenOutOfRange { id, vocab });
    }
    let engine = Engine::new(std::sync::Arc::new(model), EngineOptions::default())?;
    let mut session = Session::new(&engine)?;
    let mut logits = Vec::with_capacity(tokens.len() * vocab);
    for &token in &tokens {
        logits.extend(session.feed(&[token])?);
    }
    npy::write_f32(&args.out, &[tokens.len(), vocab], &logits)?;
    eprintln!("wrote {} × {} logits to {}", tokens.len(), vocab, args.out.display());
    Ok(())
}
