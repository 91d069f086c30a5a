//! Weight storage in a checkpoint's own precision: small trained models of every version
//! (tools/train_small.py), saved in fp32 and in bf16, against the official package's logits for
//! each file (tests/fixtures/trained/<version>). Trained fp32 weights are where f16 storage
//! shows: rounding their matrices to f16 moves the logits by `f16_error` (meta.json: the official
//! package run on f16-rounded matrices), beyond the conformance bound for some versions, which
//! is why an fp32 file keeps f32 storage unless asked otherwise. The same files' int8 and nf4
//! accuracy is in tests/quantization.rs.

mod common;

use std::sync::Arc;

use common::{load_f32, relative_error, trained_dir, TRAINED};
use rwkv_wgpu::gpu::Gpu;
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::quant::{MatrixFormat, QuantPlan};

/// The conformance bound: at every position, max |ours − official| ≤ 1e-3 × std(official).
const CONFORMANCE_BOUND: f64 = 1e-3;

/// Worst error over positions, each relative to its own std.
fn worst_error(ours: &[f32], official: &[f32], vocab: usize) -> f64 {
    ours.chunks(vocab).zip(official.chunks(vocab)).map(|(o, r)| relative_error(o, r)).fold(0.0, f64::max)
}

/// Each file, loaded with no --quant (its own precision) and with that precision named, within
/// the bound at every position; the prompt read in chunks of 1 (decoding) and 64 (prefill).
fn check_own_precision(gpu: Gpu) {
    let gpu = Arc::new(gpu);
    for version in TRAINED {
        let dir = trained_dir(version);
        for (file, logits, format) in [
            ("model-f32.pth", "logits-f32.npy", MatrixFormat::F32),
            ("model-bf16.pth", "logits-bf16.npy", MatrixFormat::Bf16),
        ] {
            let (shape, official) = load_f32(&dir.join(logits));
            for plan in [QuantPlan::default(), QuantPlan::all(format)] {
                let options = LoadOptions { quant: plan.clone(), ..LoadOptions::default() };
                let model = Arc::new(Model::load(gpu.clone(), &dir.join(file), &options).unwrap());
                assert_eq!(model.storage, format.name(), "{version}/{file} with {plan:?}");
                for chunk in [1, 64] {
                    let ours = common::feed_trained(&model, version, chunk);
                    let error = worst_error(&ours, &official, shape[1]);
                    println!(
                        "{version}/{file} ({}) chunk {chunk} on {}: worst {error:.2e} × std",
                        plan.describe(),
                        gpu.describe()
                    );
                    assert!(
                        error <= CONFORMANCE_BOUND,
                        "{version}/{file} stored as {} read in chunks of {chunk} on {}: worst error {error:.2e} × std (bound {CONFORMANCE_BOUND:.0e})",
                        format.name(),
                        gpu.describe()
                    );
                }
            }
        }
    }
}

#[test]
fn fp32_and_bf16_checkpoints_match_the_official_logits_in_their_own_precision() {
    check_own_precision(common::default_gpu());
}

#[test]
fn fp32_and_bf16_checkpoints_on_gl() {
    check_own_precision(common::gl_gpu());
}
