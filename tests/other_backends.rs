//! Every kernel the engine compiles also translates for the backends CI cannot run: Metal (MSL)
//! and DX12 (HLSL), through naga, the translator wgpu itself uses there. The kernels are the ones
//! real work compiles here (each version's model in every storage format, one token and prompt
//! steps, sampling) on three kernel variants, and the tensor-core products where a driver has
//! cooperative matrices (MSL only, on 8×8 matrices: wgpu 30 offers them on Vulkan and, 8×8
//! only, on Metal). A kernel that validates for Vulkan but that naga cannot write for Metal or
//! DX12 would fail only on a Mac or on Windows: here it fails with the kernel's name and naga's
//! error. What Apple's and Microsoft's compilers make of naga's output is not checked (neither
//! runs here), nor the tiled kernels' f16 arithmetic (opt-in).

mod common;

use std::sync::Arc;

use common::{fixture_dir, load_tokens};
use naga::back::{hlsl, msl};
use rwkv_wgpu::gpu::{Backend, CompiledKernel, CoopMatrix, Gpu, GpuOptions, RowMapping};
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::quant::{MatrixFormat, QuantPlan};
use rwkv_wgpu::runtime::{
    Batch, Engine, EngineOptions, GenerateOptions, RequestOptions, SamplerOptions, Session,
};
use rwkv_wgpu::tokenizer::Tokenizer;

const MODELS: [(&str, &str); 6] =
    [("v4", "A"), ("v5.0", "A"), ("v5.1", "A"), ("v5.2", "A"), ("v6", "A"), ("v7", "tiny")];

/// Compiles what reading `models` compiles on `gpu`, in `formats`, one token at a time and in
/// prompt steps.
fn compile_models(gpu: &Arc<Gpu>, models: &[(&str, &str)], formats: &[MatrixFormat]) {
    for &(version, case) in models {
        let dir = fixture_dir(version, case);
        let tokens = load_tokens(&dir.join("tokens.npy"));
        let tokens = &tokens[..tokens.len().min(40)];
        for &format in formats {
            let options = LoadOptions { quant: QuantPlan::all(format), ..LoadOptions::default() };
            let model =
                Arc::new(Model::load(gpu.clone(), &dir.join("model-f32.safetensors"), &options).unwrap());
            for chunk in [1, 32] {
                let engine = Engine::new(model.clone(), EngineOptions { slots: 2, chunk }).unwrap();
                Session::new(&engine).unwrap().feed_positions(tokens).unwrap();
            }
        }
    }
}

/// Compiles what generating compiles on `gpu`: the demo model, greedy and sampling, one sequence
/// and a batch of three (the few-rows products).
fn compile_generation(gpu: &Arc<Gpu>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let model =
        Arc::new(Model::load(gpu.clone(), &root.join("model.safetensors"), &LoadOptions::default()).unwrap());
    let tokenizer = Tokenizer::from_file(&root.join("tokenizer.json")).unwrap();
    let engine = Engine::new(model, EngineOptions { slots: 2, chunk: 32 }).unwrap();
    for greedy in [true, false] {
        let sampler = SamplerOptions {
            greedy,
            temperature: 0.8,
            top_p: 0.9,
            seed: Some(1),
            ..SamplerOptions::default()
        };
        let options = GenerateOptions { max_tokens: 12, sampler, ..GenerateOptions::default() };
        let mut session = Session::new(&engine).unwrap();
        for piece in session.generate(&tokenizer, "KING HENRY. Now,", &options).unwrap() {
            piece.unwrap();
        }
    }
    let batch_engine = Engine::new(engine.model().clone(), EngineOptions { slots: 3, chunk: 32 }).unwrap();
    let mut batch = Batch::new(&batch_engine);
    for prompt in [&[1u32, 2, 3][..], &[4, 5], &[6]] {
        let options = RequestOptions { max_tokens: 4, ..RequestOptions::default() };
        batch.add(prompt.to_vec(), options).unwrap();
    }
    while !batch.is_empty() {
        batch.step().unwrap();
        batch.take_finished();
    }
}

/// Parses and validates a kernel, and fixes its override constants for its entry point.
fn specialise(kernel: &CompiledKernel) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(&kernel.wgsl).map_err(|e| e.emit_to_string(&kernel.wgsl))?;
    let mut validator =
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
    let info = validator.validate(&module).map_err(|e| format!("validation: {e:?}"))?;
    let constants: naga::back::PipelineConstants =
        kernel.constants.iter().map(|&(name, value)| (name.to_string(), value)).collect();
    let entry = Some((naga::ShaderStage::Compute, kernel.entry));
    let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, entry, &constants)
        .map_err(|e| format!("override constants: {e:?}"))?;
    Ok((module.into_owned(), info.into_owned()))
}

/// MSL 2.4 (macOS 12, iOS 15): newer than what f16, SIMD-group functions and SIMD-group
/// matrices (2.3) need; with the bounds checks wgpu's Metal backend asks of shader modules.
fn to_msl(kernel: &CompiledKernel) -> Result<String, String> {
    let (module, info) = specialise(kernel)?;
    let restrict = naga::proc::BoundsCheckPolicy::Restrict;
    let bounds_check_policies = naga::proc::BoundsCheckPolicies {
        index: restrict,
        buffer: restrict,
        image_load: restrict,
        binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
    };
    let options = msl::Options { lang_version: (2, 4), bounds_check_policies, ..msl::Options::default() };
    let pipeline = msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, kernel.entry.to_string())),
        ..msl::PipelineOptions::default()
    };
    msl::write_string(&module, &info, &options, &pipeline)
        .map(|(text, _)| text)
        .map_err(|e| format!("MSL: {e:?}"))
}

/// HLSL for shader model 6.2, the first with 16-bit types (wave operations need 6.0).
fn to_hlsl(kernel: &CompiledKernel) -> Result<String, String> {
    let (module, info) = specialise(kernel)?;
    let options = hlsl::Options { shader_model: hlsl::ShaderModel::V6_2, ..hlsl::Options::default() };
    let pipeline =
        hlsl::PipelineOptions { entry_point: Some((naga::ShaderStage::Compute, kernel.entry.to_string())) };
    let mut text = String::new();
    hlsl::Writer::new(&mut text, &options, &pipeline)
        .write(&module, &info, None)
        .map_err(|e| format!("HLSL: {e:?}"))?;
    Ok(text)
}

type Translate = fn(&CompiledKernel) -> Result<String, String>;

/// Translates every kernel; returns how many, after failing with every kernel that did not, or
/// whose translation declares no compute entry point (MSL's `kernel void`, HLSL's
/// `[numthreads(…)]`).
fn translate_all(kernels: &[CompiledKernel], hlsl_too: bool) -> usize {
    let mut failures = Vec::new();
    let targets: [(Translate, &str); 2] = [(to_msl, "kernel void "), (to_hlsl, "[numthreads(")];
    for kernel in kernels {
        for (translate, compute_entry) in &targets[..if hlsl_too { 2 } else { 1 }] {
            match translate(kernel) {
                Ok(text) if text.contains(compute_entry) => {}
                Ok(_) => failures.push(format!("{} ({}): no `{compute_entry}`", kernel.label, kernel.entry)),
                Err(e) => failures.push(format!("{} ({}): {e}", kernel.label, kernel.entry)),
            }
        }
    }
    assert!(failures.is_empty(), "{} kernels do not translate:\n{}", failures.len(), failures.join("\n"));
    kernels.len()
}

/// The kernel variants: native f16 with subgroups (as on discrete GPUs, with their fused decode
/// and chunked recurrence), packed f16 without subgroups (baseline WebGPU), and the CPU drivers'
/// default choices with W_v stored by output.
#[test]
fn every_kernel_translates_to_metal_and_dx12() {
    let gpu_like = GpuOptions {
        backend: Some(Backend::Vulkan),
        allow_f16: Some(true),
        allow_subgroups: Some(true),
        row_mapping: Some(RowMapping::SubgroupPerRow),
        fused_decode: Some(true),
        wkv_chunks: Some(true),
        coop: Some(false),
        ..GpuOptions::default()
    };
    let baseline = GpuOptions {
        allow_f16: Some(false),
        allow_subgroups: Some(false),
        row_mapping: Some(RowMapping::WorkgroupPerRow),
        ..gpu_like.clone()
    };
    let mut names = std::collections::BTreeSet::new();
    // The CPU drivers' choices, but with W_v stored by output, so that both layouts translate.
    let cpu_default = GpuOptions { value_by_input: Some(false), ..common::default_options() };
    for options in [gpu_like, baseline, cpu_default] {
        let gpu = Arc::new(common::open(&options));
        compile_models(&gpu, &MODELS, &MatrixFormat::ALL);
        compile_generation(&gpu);
        let kernels = gpu.compiled_kernels();
        println!("{} kernels translate on {options:?}", translate_all(&kernels, true));
        names.extend(kernels.iter().map(|k| k.label.clone()));
    }
    println!("{} distinct kernels in all", names.len());
}

/// The tensor-core products in every format they take, exact and with f16 arithmetic, on the
/// 8×8 matrices that wgpu's Metal backend offers (where a driver has cooperative matrices; see
/// common::coop_gpus).
#[test]
fn tensor_core_kernels_translate_to_metal() {
    let exact = common::coop_gpus(false);
    // Empty where the test runs again under the cooperative-matrix runner: once is enough.
    let f16_arithmetic = if exact.is_empty() { Vec::new() } else { common::coop_gpus(true) };
    let metal_size = |gpu: &Gpu| gpu.coop == Some(CoopMatrix::Side8);
    for gpu in exact.into_iter().chain(f16_arithmetic).filter(metal_size) {
        let what = common::describe(&gpu);
        let gpu = Arc::new(gpu);
        compile_models(&gpu, &[("v7", "tiny")], &[MatrixFormat::F16, MatrixFormat::Int8, MatrixFormat::Nf4]);
        let kernels = gpu.compiled_kernels();
        let coop: Vec<_> =
            kernels.iter().filter(|k| k.wgsl.contains("enable wgpu_cooperative_matrix")).cloned().collect();
        assert!(!coop.is_empty(), "{what}: no tensor-core kernel was compiled");
        println!("{} tensor-core kernels translate on {what}", translate_all(&coop, false));
    }
}
