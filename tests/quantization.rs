//! Quantized weights against the official implementation's golden outputs: how far int8 and nf4
//! move the next-token distribution (mean KL divergence) and how often they keep its most likely
//! token, over every position of every version's fixtures, random and trained. Also: matrices
//! split over small bindings change nothing.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{divergence, fixture_dir, load_f32, load_tokens, relative_error, trained_dir, TRAINED};
use rwkv_wgpu::gpu::{Backend, Gpu, GpuOptions};
use rwkv_wgpu::model::synthetic::{Shape, SyntheticV7};
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::quant::{MatrixFormat, PackedMatrix, QuantPlan};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Session};

const CASES: [(&str, &str); 8] = [
    ("v4", "A"),
    ("v5.0", "A"),
    ("v5.1", "A"),
    ("v5.2", "A"),
    ("v6", "A"),
    ("v6", "B"),
    ("v7", "tiny"),
    ("v7", "small"),
];

/// Mean KL and argmax agreement of `model` read with `plan`, against the official logits in
/// `fixtures` (tokens.npy, logits.npy).
fn measure(gpu: &Arc<Gpu>, model: &Path, fixtures: &Path, plan: &QuantPlan) -> (f64, f64) {
    measure_against(gpu, model, fixtures, "logits.npy", plan)
}

/// The same, against the official logits in the file `logits` of `fixtures`.
fn measure_against(
    gpu: &Arc<Gpu>,
    model: &Path,
    fixtures: &Path,
    logits: &str,
    plan: &QuantPlan,
) -> (f64, f64) {
    let model =
        Model::load(gpu.clone(), model, &LoadOptions { quant: plan.clone(), ..LoadOptions::default() })
            .unwrap();
    let engine = Engine::new(Arc::new(model), EngineOptions { slots: 1, chunk: 32 }).unwrap();
    let tokens = load_tokens(&fixtures.join("tokens.npy"));
    let (shape, official) = load_f32(&fixtures.join(logits));
    let ours = Session::new(&engine).unwrap().feed_positions(&tokens).unwrap();
    divergence(&official, &ours, shape[1])
}

/// Mean KL and argmax agreement over every version's random-weight fixtures in `format` (head
/// included), printed per fixture.
fn random_fixture_figures(gpu: &Arc<Gpu>, format: MatrixFormat) -> (f64, f64, String) {
    let mut report = Vec::new();
    let (mut total_kl, mut total_agreement) = (0.0, 0.0);
    for case in CASES {
        let dir = fixture_dir(case.0, case.1);
        let (divergence, agreement) = measure(gpu, &dir.join("model.pth"), &dir, &QuantPlan::all(format));
        report.push(format!("{}/{}: KL {divergence:.2e}, argmax {:.1}%", case.0, case.1, agreement * 100.0));
        total_kl += divergence;
        total_agreement += agreement;
    }
    let (kl, agreement) = (total_kl / CASES.len() as f64, total_agreement / CASES.len() as f64);
    let report = format!(
        "{format:?} on {}: mean KL {kl:.2e}, argmax {:.1}%\n  {}",
        gpu.describe(),
        agreement * 100.0,
        report.join("\n  ")
    );
    println!("{report}");
    (kl, agreement, report)
}

/// Random weights spread to make every path matter, with outlier channels, in a network chaotic
/// enough that the official fp32 run differs from float64: much harder to quantize than trained
/// weights, and uniform rather than normal, which nf4's levels are made for. What quantization
/// reaches on them (README, "Quantization") is held here so that it cannot silently get worse;
/// the bounds (int8: KL ≤ 1e-3, argmax ≥ 97%; nf4: KL ≤ 2e-2, argmax ≥ 85%) are checked
/// on trained models: the demo model and a small one of every version.
/// Measured on lavapipe and GL alike: int8 4.9e-3 and 97.5%, nf4 0.222 and 69.6%; held there with
/// a margin of a fifth on the divergence and half a point to three points on agreement.
const RANDOM_INT8: (f64, f64) = (6e-3, 0.97);
const RANDOM_NF4: (f64, f64) = (0.27, 0.67);

fn check_random_fixtures(gpu: &Arc<Gpu>, format: MatrixFormat, (max_kl, min_agreement): (f64, f64)) {
    let (kl, agreement, report) = random_fixture_figures(gpu, format);
    assert!(kl <= max_kl && agreement >= min_agreement, "{report}");
}

#[test]
fn int8_on_random_fixtures() {
    check_random_fixtures(&Arc::new(common::default_gpu()), MatrixFormat::Int8, RANDOM_INT8);
}

#[test]
fn nf4_on_random_fixtures() {
    check_random_fixtures(&Arc::new(common::default_gpu()), MatrixFormat::Nf4, RANDOM_NF4);
}

/// The trained demo model (assets/demo, tools/train_demo.py) on held-out text against the
/// official package, every matrix quantized, the head included: the bounds.
fn check_demo(format: MatrixFormat, head: MatrixFormat, (max_kl, min_agreement): (f64, f64)) {
    let gpu = Arc::new(common::default_gpu());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plan = QuantPlan { head: Some(head), ..QuantPlan::all(format) };
    let (kl, agreement) =
        measure(&gpu, &root.join("assets/demo/model.safetensors"), &root.join("tests/fixtures/demo"), &plan);
    println!("demo model, {format:?} (head {head:?}): mean KL {kl:.2e}, argmax {:.1}%", agreement * 100.0);
    assert!(
        kl <= max_kl && agreement >= min_agreement,
        "demo model {format:?} (head {head:?}): mean KL {kl:.2e} (bound {max_kl:.0e}), argmax {:.1}% (bound {:.0}%)",
        agreement * 100.0,
        min_agreement * 100.0
    );
}

#[test]
fn int8_on_the_trained_demo_model() {
    // Measured 8.0e-6 and 99.8% (the bound: 1e-3 and 97%).
    check_demo(MatrixFormat::Int8, MatrixFormat::Int8, (1e-5, 0.99));
}

#[test]
fn nf4_on_the_trained_demo_model() {
    // Measured 2.1e-3 and 95.7% (the bound: 2e-2 and 85%).
    check_demo(MatrixFormat::Nf4, MatrixFormat::Nf4, (2.6e-3, 0.94));
}

/// Small trained models of every version (tools/train_small.py, fp32) on held-out text against
/// the official fp32 logits, stored as `plan` says: the bounds hold for each version.
fn check_trained(plan: QuantPlan, (max_kl, min_agreement): (f64, f64)) {
    let gpu = Arc::new(common::default_gpu());
    let mut failures = Vec::new();
    for version in TRAINED {
        let dir = trained_dir(version);
        let (kl, agreement) =
            measure_against(&gpu, &dir.join("model-f32.pth"), &dir, "logits-f32.npy", &plan);
        let figures = format!(
            "trained {version}, {}: mean KL {kl:.2e}, argmax {:.1}%",
            plan.describe(),
            agreement * 100.0
        );
        println!("{figures}");
        if kl > max_kl || agreement < min_agreement {
            failures.push(figures);
        }
    }
    assert!(
        failures.is_empty(),
        "beyond the bounds (mean KL ≤ {max_kl:.0e}, argmax ≥ {:.0}%): {}",
        min_agreement * 100.0,
        failures.join("; ")
    );
}

/// `--quant int8` and `--quant nf4` (whose head is int8), for every version, within issue 16's
/// bounds (int8 mean KL ≤ 1e-3 and argmax ≥ 97%, nf4 mean KL ≤ 2e-2 and argmax ≥ 85%). Measured:
/// int8 6.7e-5…9.9e-5 and ≥ 98.8%; nf4 1.1e-2…1.6e-2 and ≥ 89.5%.
#[test]
fn int8_on_trained_models_of_every_version() {
    // Measured at most 9.9e-5 and at least 98.8%: held there, a fifth above.
    check_trained(QuantPlan::with(MatrixFormat::Int8), (1.2e-4, 0.98));
}

#[test]
fn nf4_on_trained_models_of_every_version() {
    check_trained(QuantPlan::with(MatrixFormat::Nf4), (2e-2, 0.85));
}

/// The head in nf4 too (`--quant-head nf4`): measured 1.4e-2…2.1e-2 and ≥ 88%, held there with
/// a margin of a fifth.
#[test]
fn nf4_with_an_nf4_head_on_trained_models() {
    check_trained(QuantPlan::all(MatrixFormat::Nf4), (2.6e-2, 0.85));
}

/// The quantized kernels without SHADER_F16 or subgroups (wgpu's GL backend).
#[test]
fn quantized_formats_on_gl() {
    let gpu = Arc::new(common::gl_gpu());
    check_random_fixtures(&gpu, MatrixFormat::Int8, RANDOM_INT8);
    check_random_fixtures(&gpu, MatrixFormat::Nf4, RANDOM_NF4);
}

/// A model whose head and channel-mix matrices exceed a 1 MiB binding limit gives the same
/// logits split into parts as whole, in every format, on both backends.
#[test]
fn a_one_mebibyte_binding_limit_changes_nothing() {
    let shape = Shape { layers: 2, heads: 4, head_size: 64, ffn: 2048, vocab: 16384, lora: [32, 32, 16, 64] };
    let source = SyntheticV7::new(shape, 9);
    let tokens: Vec<u32> = (0..20).map(|i| i * 977 % 16384).collect();
    for backend in [Backend::Vulkan, Backend::Gl] {
        for format in MatrixFormat::ALL {
            let logits: Vec<Vec<f32>> = [None, Some(1 << 20)]
                .into_iter()
                .map(|binding_limit| {
                    let gpu = Arc::new(common::open(&GpuOptions {
                        backend: Some(backend),
                        binding_limit,
                        ..GpuOptions::default()
                    }));
                    let options = LoadOptions { quant: QuantPlan::all(format), ..LoadOptions::default() };
                    let model = Model::from_source(gpu, &source, &options).unwrap();
                    if binding_limit.is_some() {
                        assert!(model.head().parts.len() > 1, "{format:?}: the head was not split");
                    }
                    let engine = Engine::new(Arc::new(model), EngineOptions { slots: 1, chunk: 8 }).unwrap();
                    Session::new(&engine).unwrap().feed_positions(&tokens).unwrap()
                })
                .collect();
            let error = relative_error(&logits[1], &logits[0]);
            assert!(error <= 1e-6, "{backend:?} {format:?}: split changed the logits by {error:.1e} × std");
        }
    }
}

/// `quantize` writes a file that loads without quantizing again and gives exactly the logits of
/// quantizing while loading, on both backends.
#[test]
fn pre_quantized_files_round_trip() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("quantized");
    std::fs::create_dir_all(&dir).unwrap();
    let tokens: Vec<u32> = (0..12).map(|i| i * 7 % 100).collect();
    // bf16 originals, and fp32 ones, whose small matrices an int8 or nf4 plan keeps in f16.
    let originals = [
        ("v4", "A", "model.pth"),
        ("v6", "A", "model.pth"),
        ("v6", "A", "model-f32.safetensors"),
        ("v7", "tiny", "model-f32.safetensors"),
    ];
    for (version, case, file) in originals {
        let original = fixture_dir(version, case).join(file);
        let source = rwkv_wgpu::model::source::open(&original).unwrap();
        let config = rwkv_wgpu::model::config::ModelConfig::from_source(source.as_ref()).unwrap();
        for plan in [
            QuantPlan::all(MatrixFormat::Int8),
            QuantPlan { head: Some(MatrixFormat::F16), ..QuantPlan::all(MatrixFormat::Nf4) },
        ] {
            let path =
                dir.join(format!("{version}-{}.safetensors", plan.layers.map_or("file", MatrixFormat::name)));
            let matrices = rwkv_wgpu::model::planned_matrices(source.as_ref(), &config, &plan).unwrap();
            rwkv_wgpu::model::source::quantized::write(source.as_ref(), &matrices, "test", &path).unwrap();
            for gpu in [common::default_gpu(), common::gl_gpu()] {
                let gpu = Arc::new(gpu);
                let run = |path: &std::path::Path, quant: QuantPlan| {
                    let model =
                        Model::load(gpu.clone(), path, &LoadOptions { quant, ..LoadOptions::default() })
                            .unwrap();
                    let engine = Engine::new(Arc::new(model), EngineOptions { slots: 1, chunk: 4 }).unwrap();
                    Session::new(&engine).unwrap().feed_positions(&tokens).unwrap()
                };
                // The file's own formats win over the plan it is loaded with.
                assert_eq!(
                    run(&path, QuantPlan::default()),
                    run(&original, plan.clone()),
                    "{version}/{file} {plan:?} on {}",
                    gpu.describe()
                );
            }
        }
    }
}

#[test]
fn a_model_whose_rows_exceed_the_binding_limit_is_refused_before_loading() {
    let options =
        GpuOptions { backend: Some(Backend::Vulkan), binding_limit: Some(64), ..GpuOptions::default() };
    let gpu = Arc::new(common::open(&options));
    let path = fixture_dir("v7", "tiny").join("model.pth");
    let error = Model::load(gpu, &path, &LoadOptions::default()).err().expect("a 64-byte binding limit");
    let message = error.to_string();
    assert!(message.contains("does not fit") && message.contains("storage bindings"), "{message}");
}

/// Matrices stacked after packing (r, k and v, read in one pass) are exactly the packing of the
/// stacked values, in every format; odd row counts put nf4's paired block parameters across the
/// seams.
#[test]
fn stacking_packed_matrices_equals_packing_the_stack() {
    let mut rng = common::Rng::new(9);
    for format in MatrixFormat::ALL {
        for cols in [70, 256] {
            let rows = [3, 1, 2];
            let values: Vec<Vec<f32>> = rows.iter().map(|&r| rng.vec(r * cols, -2.0, 2.0)).collect();
            let packed: Vec<PackedMatrix> = rows
                .iter()
                .zip(&values)
                .map(|(&r, v)| PackedMatrix::pack(format, r, cols, v).unwrap())
                .collect();
            let whole = PackedMatrix::pack(format, 6, cols, &values.concat()).unwrap();
            assert_eq!(PackedMatrix::stack_rows(&packed).unwrap(), whole, "{format:?}, {cols} columns");
        }
    }
    let mixed = [
        PackedMatrix::pack(MatrixFormat::Int8, 1, 4, &[0.0; 4]).unwrap(),
        PackedMatrix::pack(MatrixFormat::Nf4, 1, 4, &[0.0; 4]).unwrap(),
    ];
    let error = PackedMatrix::stack_rows(&mixed).unwrap_err().to_string();
    assert!(error.contains("must share a format"), "{error}");
}
