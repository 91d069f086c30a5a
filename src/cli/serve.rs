//! `rwkv-wgpu serve`: the OpenAI-compatible server.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::{GpuArgs, TextModelArgs};
use rwkv_wgpu::server::template::ChatTemplate;
use rwkv_wgpu::server::{self, ServerOptions};
use rwkv_wgpu::{Error, Result};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: TextModelArgs,
    /// Address to listen on; 0.0.0.0 for every interface.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/* (default: the RWKV_API_KEY variable, if set).
    #[arg(long, env = "RWKV_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The most requests generating together; more wait in the queue.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Decode steps per submit once every request of the batch generates (1 to 16; 1: a submit
    /// and a readback per token).
    #[arg(long, default_value_t = 8)]
    steps_per_submit: usize,
    /// The most requests waiting for the batch; beyond it requests get 429.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// GPU memory for the prefix cache's states, in MiB.
    #[arg(long, default_value_t = 256)]
    cache_mib: u64,
    /// Host memory for states spilled from the GPU cache, in MiB.
    #[arg(long, default_value_t = 1024)]
    host_cache_mib: u64,
    /// Longer prompts get 413.
    #[arg(long, default_value_t = 32768)]
    max_prompt_tokens: usize,
    /// The most tokens one request may generate.
    #[arg(long, default_value_t = 4096)]
    max_tokens: usize,
    /// The model's name in /v1/models (default: the file's name, or rwkv-demo).
    #[arg(long)]
    model_id: Option<String>,
    /// A JSON chat template: {"system", "user", "assistant", "reply", "stop",
    /// "collapse_blank_lines"}, `{content}` standing for a message's text (default: RWKV's
    /// "User: …\n\nAssistant:" form).
    #[arg(long)]
    chat_template: Option<PathBuf>,
}

pub fn run(gpu_args: &GpuArgs, args: ServeArgs) -> Result<()> {
    let template = match &args.chat_template {
        None => ChatTemplate::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            serde_json::from_str(&text).map_err(|e| {
                Error::InvalidArgument(format!("{}: not a chat template: {e}", path.display()))
            })?
        }
    };
    let model_id = args.model_id.clone().unwrap_or_else(|| match &args.model.model.model {
        Some(path) => path.file_stem().map_or("rwkv".into(), |s| s.to_string_lossy().into_owned()),
        None => "rwkv-demo".into(),
    });
    let tokenizer = args.model.tokenizer()?;
    let model = Arc::new(args.model.model.load(gpu_args)?);
    let options = ServerOptions {
        host: args.host,
        port: args.port,
        api_key: args.api_key,
        model_id,
        max_batch: args.max_batch,
        max_queue: args.max_queue,
        cache_mib: args.cache_mib,
        host_cache_mib: args.host_cache_mib,
        max_prompt_tokens: args.max_prompt_tokens,
        max_tokens: args.max_tokens,
        template,
        chunk: args.model.chunk.chunk,
        steps_per_submit: args.steps_per_submit,
        ..ServerOptions::default()
    };
    server::serve(model, tokenizer, options, |addr, cached| {
        eprintln!("prefix cache: {cached} states on the GPU");
        eprintln!("listening on http://{addr} (Ctrl-C stops)");
    })
}
