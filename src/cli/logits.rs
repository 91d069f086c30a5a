//! `rwkv-wgpu logits`: the conformance interface. Writes the logits after every token, from the
//! zero state, as a float32 .npy [T, V]; several token lists run together as one batch and go to
//! an .npz with arrays seq0, seq1, …. Keep its behaviour stable.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{ChunkArg, GpuArgs, ModelArg};
use rwkv_wgpu::npy::{self, Array};
use rwkv_wgpu::runtime::{Engine, Logits, Session, Work};
use rwkv_wgpu::{Error, Result};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One step per token.
    Rnn,
    /// The whole token list through prefill, in chunks of --chunk tokens.
    Seq,
}

#[derive(Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Token ids, comma-separated; repeat the option for several sequences run as one batch.
    #[arg(long, action = clap::ArgAction::Append, required_unless_present = "tokens_file")]
    tokens: Vec<String>,
    /// Token ids from a 1-D int32 or int64 .npy file.
    #[arg(long, conflicts_with = "tokens")]
    tokens_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "rnn")]
    mode: Mode,
    #[command(flatten)]
    chunk: ChunkArg,
    /// Where to write the logits: .npy for one token list, .npz for several.
    #[arg(long)]
    out: PathBuf,
}

/// The token lists: each `--tokens` occurrence is one list.
fn token_lists(args: &LogitsArgs) -> Result<Vec<Vec<u32>>> {
    let lists = match &args.tokens_file {
        Some(path) => vec![match npy::read(path)? {
            Array::I64 { shape, data } if shape.len() == 1 => data
                .into_iter()
                .map(|id| {
                    u32::try_from(id)
                        .map_err(|_| Error::InvalidArgument(format!("token id {id} is not valid")))
                })
                .collect::<Result<_>>()?,
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
        }],
        None => args
            .tokens
            .iter()
            .map(|list| {
                list.split(',')
                    .filter(|id| !id.trim().is_empty())
                    .map(|id| {
                        id.trim()
                            .parse::<u32>()
                            .map_err(|_| Error::InvalidArgument(format!("`{id}` is not a token id")))
                    })
                    .collect::<Result<Vec<u32>>>()
            })
            .collect::<Result<_>>()?,
    };
    if lists.is_empty() || lists.iter().any(Vec::is_empty) {
        return Err(Error::InvalidArgument("no tokens given".into()));
    }
    Ok(lists)
}

/// Feeds every list, several per step, and returns each list's logits after every token.
fn run_batch(engine: &Engine, lists: &[Vec<u32>], per_step: usize) -> Result<Vec<Vec<f32>>> {
    let sessions = lists.iter().map(|_| Session::new(engine)).collect::<Result<Vec<_>>>()?;
    let mut fed = vec![0; lists.len()];
    let mut logits = vec![Vec::new(); lists.len()];
    while fed.iter().zip(lists).any(|(&fed, list)| fed < list.len()) {
        let mut budget = engine.max_rows();
        let mut work = Vec::new();
        let mut members = Vec::new();
        for (i, list) in lists.iter().enumerate() {
            let take = (list.len() - fed[i]).min(per_step).min(budget);
            if take > 0 {
                budget -= take;
                work.push(Work::new(sessions[i].slot(), &list[fed[i]..fed[i] + take], Logits::All));
                members.push(i);
            }
        }
        for (i, output) in members.iter().zip(engine.step(&work)?) {
            fed[*i] += output.logits.len() / engine.model().config.vocab;
            logits[*i].extend(output.logits);
        }
    }
    Ok(logits)
}

pub fn run(gpu_args: &GpuArgs, args: LogitsArgs) -> Result<()> {
    let lists = token_lists(&args)?;
    let engine = args.model.engine(gpu_args, &args.chunk, lists.len())?;
    let vocab = engine.model().config.vocab;
    if let Some(&id) = lists.iter().flatten().find(|&&id| id as usize >= vocab) {
        return Err(Error::TokenOutOfRange { id, vocab });
    }
    let per_step = match args.mode {
        Mode::Rnn => 1,
        Mode::Seq => engine.options().chunk,
    };
    let logits = run_batch(&engine, &lists, per_step)?;
    if lists.len() == 1 {
        npy::write_f32(&args.out, &[lists[0].len(), vocab], &logits[0])?;
    } else {
        let arrays: Vec<(String, Vec<usize>, Vec<f32>)> = logits
            .into_iter()
            .zip(&lists)
            .enumerate()
            .map(|(i, (values, list))| (format!("seq{i}"), vec![list.len(), vocab], values))
            .collect();
        npy::write_npz(&args.out, &arrays)?;
    }
    eprintln!("wrote the logits of {} token list(s) to {}", lists.len(), args.out.display());
    Ok(())
}
