//! `rwkv-wgpu chat`: an interactive conversation in the "User: …\n\nAssistant: …" format. The
//! state is kept between turns, so each turn reads only its new text.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::Args;

use super::sampling::SamplingArgs;
use super::{encode, GpuArgs, TextModelArgs};
use rwkv_wgpu::runtime::{Finish, GenerateOptions, Session, State};
use rwkv_wgpu::{Error, Result};

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: TextModelArgs,
    /// The most tokens of one reply.
    #[arg(short = 'n', long, default_value_t = 500)]
    max_tokens: usize,
    /// Start from a state saved by --save-state.
    #[arg(long)]
    load_state: Option<PathBuf>,
    /// Save the conversation's state after every reply.
    #[arg(long)]
    save_state: Option<PathBuf>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

/// A reply ends at a blank line (the start of the next turn).
const TURN_END: &str = "\n\n";

pub fn run(gpu_args: &GpuArgs, args: ChatArgs) -> Result<()> {
    let mut options = GenerateOptions {
        max_tokens: args.max_tokens,
        stop: vec![TURN_END.into()],
        sampler: args.sampling.options(),
        ..GenerateOptions::default()
    };
    options.sampler.validate()?;
    let tokenizer = args.model.tokenizer()?;
    let engine = args.model.engine(gpu_args, 1)?;
    let vocab = engine.model().config.vocab;
    // Each reply follows the grammar.
    options.grammar = args.sampling.grammar(&tokenizer, vocab)?;
    let mut session = Session::new(&engine)?;
    if let Some(path) = &args.load_state {
        session.set_state(&State::load(path)?)?;
    }
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let write = |out: &mut std::io::Stdout, text: &str| -> Result<()> {
        out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| Error::io("<stdout>", e))
    };
    // Tokens the model has produced but not yet read, carried into the next turn.
    let mut carried: Vec<u32> = Vec::new();
    // What separates the next turn from the text before it: nothing at the start of a fresh
    // conversation or after a reply that ended with its blank line.
    let mut separator = if args.load_state.is_none() { "" } else { TURN_END };
    eprintln!("chat: type a message and press enter; end with Ctrl-D");
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| Error::io("<stdin>", e))?;
        if line.trim().is_empty() {
            continue;
        }
        let mut turn = carried.clone();
        turn.extend(encode(&tokenizer, &format!("{separator}User: {}\n\nAssistant:", line.trim()), vocab)?);
        write(&mut stdout, "Assistant:")?;
        let mut generation = session.generate_tokens(&tokenizer, &turn, &options)?;
        for piece in generation.by_ref() {
            write(&mut stdout, &piece?.text)?;
        }
        carried = generation.unfed_token().into_iter().collect();
        separator = match generation.finish() {
            Some(Finish::Stop(_)) => "",
            _ => TURN_END,
        };
        drop(generation);
        write(&mut stdout, "\n\n")?;
        if let Some(path) = &args.save_state {
            // The saved state has read the whole reply, so a later chat can start right after it.
            if !carried.is_empty() {
                session.advance(&std::mem::take(&mut carried))?;
            }
            session.state()?.save(path)?;
        }
    }
    Ok(())
}
