//! The `rwkv-wgpu` command line.

mod bandwidth;
mod bench;
mod bench_grammar;
mod chat;
mod demo;
mod generate;
mod info;
mod logits;
mod perplexity;
mod quantize;
mod sampling;
mod serve;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

use rwkv_wgpu::gpu::{self, Backend, Gpu, GpuOptions};
use rwkv_wgpu::model::config::ModelConfig;
use rwkv_wgpu::model::{source, LoadOptions, Model};
use rwkv_wgpu::quant::{MatrixFormat, QuantPlan};
use rwkv_wgpu::runtime::{Engine, EngineOptions};
use rwkv_wgpu::tokenizer::{HuggingFaceTokenizer, Tokenizer};
use rwkv_wgpu::Result;

#[derive(Parser)]
#[command(name = "rwkv-wgpu", version, about = "RWKV language models on any GPU through WebGPU")]
pub struct Cli {
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GpuArgs {
    /// Graphics API to use (default: the best available, GL last).
    #[arg(long, global = true, value_enum)]
    backend: Option<BackendArg>,
    /// Use the first adapter whose name contains this text (case-insensitive).
    #[arg(long, global = true, value_name = "NAME")]
    adapter: Option<String>,
    /// Prefer an integrated GPU over a discrete one.
    #[arg(long, global = true)]
    low_power: bool,
    /// Do not use native f16 shaders even where the adapter has them.
    #[arg(long, global = true, conflicts_with = "f16")]
    no_f16: bool,
    /// Do not use subgroup operations even where the adapter has them.
    #[arg(long, global = true)]
    no_subgroups: bool,
    /// Multiply in f16 when reading prompts (with native f16): faster on GPUs, logits ~2e-3 × std
    /// from exact.
    #[arg(long, global = true, conflicts_with = "no_f16")]
    f16_arithmetic: bool,
    /// Use native f16 shaders wherever the adapter has them (by default CPU drivers use the
    /// packed kernels, which are faster there).
    #[arg(long, global = true)]
    f16: bool,
    /// Treat storage bindings as at most this many bytes, to see whether a model fits a smaller
    /// device (browsers allow 134217728 by default).
    #[arg(long, global = true, value_name = "BYTES")]
    binding_limit: Option<u64>,
    /// Decode with a dispatch per layer norm, token shift and LoRA output instead of the fused
    /// kernels (for comparison).
    #[arg(long, global = true)]
    no_fused_decode: bool,
    /// Walk RWKV-7's recurrence over prompts in chunks side by side (`true`) or token after
    /// token (`false`); by default in chunks everywhere but on CPU drivers.
    #[arg(long, global = true, value_name = "BOOL")]
    wkv_chunks: Option<bool>,
    /// Store the channel mix's value matrix by input (`true`, the default), so that decoding
    /// skips the weights of each zero input, or by output (`false`), skipping only groups of
    /// four zero inputs.
    #[arg(long, global = true, value_name = "BOOL")]
    value_by_input: Option<bool>,
    /// Outputs per workgroup of the one-token product by input, in lanes of four (a power of
    /// two; by default 16 on CPU drivers, 4 on GPUs): for tuning.
    #[arg(long, global = true, value_name = "LANES")]
    by_input_lanes: Option<usize>,
    /// Multiply prompts on the tiled kernels even where the adapter has cooperative matrices
    /// (tensor cores).
    #[arg(long, global = true)]
    no_coop: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl From<BackendArg> for Backend {
    fn from(arg: BackendArg) -> Backend {
        match arg {
            BackendArg::Vulkan => Backend::Vulkan,
            BackendArg::Metal => Backend::Metal,
            BackendArg::Dx12 => Backend::Dx12,
            BackendArg::Gl => Backend::Gl,
        }
    }
}

impl GpuArgs {
    fn options(&self) -> GpuOptions {
        GpuOptions {
            backend: self.backend.map(Backend::from),
            adapter: self.adapter.clone(),
            high_performance: !self.low_power,
            allow_f16: if self.no_f16 {
                Some(false)
            } else if self.f16 {
                Some(true)
            } else {
                None
            },
            row_mapping: None,
            allow_subgroups: if self.no_subgroups { Some(false) } else { None },
            f16_arithmetic: self.f16_arithmetic,
            binding_limit: self.binding_limit,
            fused_decode: self.no_fused_decode.then_some(false),
            wkv_chunks: self.wkv_chunks,
            value_by_input: self.value_by_input,
            by_input_lanes: self.by_input_lanes,
            coop: self.no_coop.then_some(false),
            coop_matrix: None,
        }
    }

    /// Opens the device and says which adapter was chosen (on stderr, so stdout stays clean).
    fn open(&self) -> Result<Arc<Gpu>> {
        let gpu = Gpu::new(&self.options())?;
        let tensor_cores = if gpu.coop.is_some() { ", cooperative matrices" } else { "" };
        eprintln!("adapter: {}{tensor_cores}", gpu.describe());
        Ok(Arc::new(gpu))
    }
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU adapters wgpu can see.
    Adapters,
    /// Describe a model: version, shape, parameters, memory, and the adapter it would run on.
    Info(info::InfoArgs),
    /// Generate text from a prompt, streaming it to stdout.
    Generate(generate::GenerateArgs),
    /// Chat interactively ("User: …\n\nAssistant: …"), keeping the state between turns.
    Chat(chat::ChatArgs),
    /// Write the logits after every token as a float32 .npy [T, V] (or an .npz for several
    /// token lists run as one batch).
    Logits(logits::LogitsArgs),
    /// Average loss and perplexity of a model on a text file.
    Perplexity(perplexity::PerplexityArgs),
    /// Measure prefill and decode speed on a model file or a synthetic model of a standard shape.
    Bench(bench::BenchArgs),
    /// Write a pre-quantized model (int8 or nf4) that loads without quantizing again.
    Quantize(quantize::QuantizeArgs),
    /// Serve the model over an OpenAI-compatible HTTP API, batching every request on one engine.
    Serve(serve::ServeArgs),
}

/// A model file argument shared by the commands.
#[derive(Args)]
struct ModelArg {
    /// Model file or folder: .safetensors (f16/bf16/f32, or pre-quantized by `quantize`), an
    /// official PyTorch .pth checkpoint, a llama.cpp .gguf file, or a Hugging Face folder
    /// (fla-hub or Transformers layout, sharded or not). Without it, the small Shakespeare demo
    /// model built into the binary.
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// Storage of the large weight matrices. Without it each keeps its file's precision (f32,
    /// bf16 or f16), which runs the checkpoint's own weights; f16 halves an f32 file's memory;
    /// int8 and nf4 quantize while loading.
    #[arg(long, value_enum)]
    quant: Option<FormatArg>,
    /// Format of the head (the largest matrix); defaults to --quant (int8 for nf4).
    #[arg(long, value_enum)]
    quant_head: Option<FormatArg>,
    /// A LoRA adapter to merge as the model loads: a PEFT folder or adapter_model.safetensors,
    /// or an RWKV-LM/RWKV-PEFT .pth, with an optional scale (default 1; PEFT files also apply
    /// their own lora_alpha / r). May be given several times.
    #[arg(long, value_name = "FILE[:SCALE]")]
    lora: Vec<rwkv_wgpu::model::lora::Lora>,
}

/// A weight format on the command line.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    F32,
    Bf16,
    F16,
    Int8,
    Nf4,
}

impl From<FormatArg> for MatrixFormat {
    fn from(arg: FormatArg) -> MatrixFormat {
        match arg {
            FormatArg::F32 => MatrixFormat::F32,
            FormatArg::Bf16 => MatrixFormat::Bf16,
            FormatArg::F16 => MatrixFormat::F16,
            FormatArg::Int8 => MatrixFormat::Int8,
            FormatArg::Nf4 => MatrixFormat::Nf4,
        }
    }
}

impl ModelArg {
    /// Opens and checks the file before touching the GPU, so a bad file fails fast and alone,
    /// then loads it onto the chosen adapter.
    fn load(&self, gpu_args: &GpuArgs) -> Result<Model> {
        let source = self.source()?;
        ModelConfig::from_source(source.as_ref())?;
        Model::from_source(
            gpu_args.open()?,
            source.as_ref(),
            &LoadOptions { quant: self.plan(), ..LoadOptions::default() },
        )
    }

    /// The file's tensors (or the demo model's when no file is given), adapters merged in.
    fn source(&self) -> Result<Box<dyn source::TensorSource>> {
        let source = match &self.model {
            Some(path) => source::open(path)?,
            None => {
                eprintln!("model: {} (pass --model for a real one)", demo::NAME);
                source::from_bytes(demo::NAME, source::FileBytes::Static(demo::MODEL))?
            }
        };
        rwkv_wgpu::model::lora::merge(source, &self.lora)
    }

    /// The size of the model file in bytes.
    fn file_len(&self) -> Result<u64> {
        match &self.model {
            Some(path) => Ok(std::fs::metadata(path).map_err(|e| rwkv_wgpu::Error::io(path, e))?.len()),
            None => Ok(demo::MODEL.len() as u64),
        }
    }

    /// The quantization the options ask for.
    fn plan(&self) -> QuantPlan {
        let mut plan = self.quant.map_or_else(QuantPlan::default, |format| QuantPlan::with(format.into()));
        if let Some(head) = self.quant_head {
            plan.head = Some(head.into());
        }
        plan
    }

    /// The model on an engine with room for `slots` sequences.
    fn engine(&self, gpu_args: &GpuArgs, chunk: &ChunkArg, slots: usize) -> Result<Engine> {
        let model = Arc::new(self.load(gpu_args)?);
        Engine::new(model, EngineOptions { slots, chunk: chunk.chunk })
    }
}

/// A model that reads text: the model, its tokenizer and the prefill chunk.
#[derive(Args)]
struct TextModelArgs {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    tokenizer: TokenizerArg,
    #[command(flatten)]
    chunk: ChunkArg,
}

impl TextModelArgs {
    fn tokenizer(&self) -> Result<Tokenizer> {
        self.tokenizer.load(&self.model)
    }

    /// The model on an engine with room for `slots` sequences.
    fn engine(&self, gpu_args: &GpuArgs, slots: usize) -> Result<Engine> {
        self.model.engine(gpu_args, &self.chunk, slots)
    }
}

/// How many tokens of a prompt one step reads.
#[derive(Args)]
struct ChunkArg {
    /// Prompt tokens read per step (prefill chunk size).
    #[arg(long, default_value_t = EngineOptions::DEFAULT_CHUNK, value_parser = clap::value_parser!(usize))]
    chunk: usize,
}

/// The tokenizer for text commands.
#[derive(Args)]
struct TokenizerArg {
    /// A Hugging Face tokenizer.json (or a World-format vocabulary .txt), for models not trained
    /// on the RWKV World vocabulary (default: the tokenizer a GGUF file or Hugging Face folder
    /// carries, else World; the byte-level one of the built-in demo model).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

impl TokenizerArg {
    /// `--tokenizer`, else the one the model file carries or sits beside (GGUF metadata, a Hugging
    /// Face folder's tokenizer.json), else World.
    fn load(&self, model: &ModelArg) -> Result<Tokenizer> {
        match (&self.tokenizer, &model.model) {
            (Some(path), _) => Tokenizer::from_file(path),
            (None, Some(path)) => source::open(path)?.tokenizer().unwrap_or_else(Tokenizer::world),
            (None, None) => {
                Ok(Tokenizer::HuggingFace(Box::new(HuggingFaceTokenizer::from_json(demo::TOKENIZER)?)))
            }
        }
    }
}

/// Encodes `text` and checks that every id fits the model.
fn encode(tokenizer: &Tokenizer, text: &str, vocab: usize) -> Result<Vec<u32>> {
    let tokens = tokenizer.encode(text)?;
    if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(rwkv_wgpu::Error::InvalidArgument(format!(
            "the text encodes to token {id}, outside the model's vocabulary of {vocab}: is this the model's tokenizer? \
             (pass --tokenizer tokenizer.json for models not trained on the World vocabulary)"
        )));
    }
    Ok(tokens)
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Adapters => {
            let adapters = gpu::list_adapters(cli.gpu.backend.map(Backend::from));
            if adapters.is_empty() {
                return Err(rwkv_wgpu::Error::NoAdapter(
                    "no adapters; install a GPU driver (on Linux without a GPU: `apt-get install mesa-vulkan-drivers`)".into(),
                ));
            }
            for (info, cooperative_matrices) in adapters {
                println!("{}", gpu::describe_adapter(&info));
                if !cooperative_matrices.is_empty() {
                    println!("  cooperative matrices: {}", cooperative_matrices.join(", "));
                }
            }
            Ok(())
        }
        Command::Info(args) => info::run(&cli.gpu, args),
        Command::Generate(args) => generate::run(&cli.gpu, args),
        Command::Chat(args) => chat::run(&cli.gpu, args),
        Command::Logits(args) => logits::run(&cli.gpu, args),
        Command::Perplexity(args) => perplexity::run(&cli.gpu, args),
        Command::Bench(args) => bench::run(&cli.gpu, args),
        Command::Quantize(args) => quantize::run(args),
        Command::Serve(args) => serve::run(&cli.gpu, args),
    }
}
