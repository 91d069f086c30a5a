//! The products on cooperative matrices (tensor cores, `shaders/matmul_coop.wgsl`) against their
//! CPU reference: f16, int8 and nf4 weights, row counts around the 32-row tiles, odd shapes,
//! rows far beyond f16's range and far below it, and the opt-in f16 arithmetic.
//!
//! Only adapters with wgpu's cooperative matrices run them: GPUs with tensor cores, and lavapipe
//! from Mesa 25.1 on. CI's lavapipe (Mesa 22.3) has none; there each test runs again under sid's
//! lavapipe (`.ci/mesa-coop`, see common::coop_gpus).

mod common;

use common::{assert_close, describe, run, upload, Rng};
use half::f16;
use rwkv_wgpu::gpu::{Gpu, GpuMatrix};
use rwkv_wgpu::kernels::{self, Activation, Epilogue, Operand, OperandRef};
use rwkv_wgpu::quant::{MatrixFormat, PackedMatrix};

/// f32 arithmetic in a different order than the f64 reference, with inputs split into two f16
/// parts (2^-22 relative): a few ulps per term.
const SPLIT_TOLERANCE: f64 = 2e-5;

/// One product of `rows` rows against the reference, within `tolerance` of the largest output;
/// `x_scale` multiplies the inputs.
fn check(gpu: &Gpu, format: MatrixFormat, rows: usize, shape: (usize, usize), x_scale: f32, tolerance: f64) {
    check_inputs_as(gpu, format, rows, shape, x_scale, tolerance, |v| v);
}

/// `check`, with the reference multiplying `as_multiplied(x)` for each input x.
fn check_inputs_as(
    gpu: &Gpu,
    format: MatrixFormat,
    rows: usize,
    (outputs, cols): (usize, usize),
    x_scale: f32,
    tolerance: f64,
    as_multiplied: fn(f32) -> f32,
) {
    let seed = (rows * 1000 + outputs * 7 + cols) as u64;
    let mut rng = Rng::new(seed);
    let packed = PackedMatrix::pack(format, outputs, cols, &rng.vec(outputs * cols, -1.0, 1.0)).unwrap();
    let matrix = GpuMatrix::upload(gpu, "w", &packed).unwrap();
    // Quantized weights are dequantized into f16 tiles: the reference rounds them the same way.
    let weights: Vec<f32> = packed.unpack().iter().map(|&w| f16::from_f32(w).to_f32()).collect();
    let x: Vec<f32> = rng.vec(rows * cols, -1.0, 1.0).iter().map(|v| v * x_scale).collect();
    let x_seen: Vec<f32> = x.iter().map(|&v| as_multiplied(v)).collect();
    let bias = rng.vec(outputs, -1.0, 1.0);
    let y0 = rng.vec(rows * outputs, -1.0, 1.0);
    let (x_gpu, bias_gpu, y_gpu) =
        (upload(gpu, cols, &x), upload(gpu, outputs, &bias), upload(gpu, outputs, &y0));
    let cases = [
        (Operand::None, OperandRef::None, Activation::None, false),
        (Operand::Bias(&bias_gpu), OperandRef::Bias(&bias), Activation::Tanh, true),
    ];
    for (operand, operand_ref, activation, accumulate) in cases {
        y_gpu.write(gpu, &y0).unwrap();
        let epilogue = Epilogue { operand, activation, accumulate, sparse_input: false, remember: None };
        run(gpu, |rec| kernels::linear(rec, "linear", &matrix, &x_gpu, &y_gpu, epilogue));
        let previous = accumulate.then_some(&y0[..]);
        let expected = kernels::linear_ref(&weights, cols, &x_seen, operand_ref, activation, previous);
        let what = format!(
            "{} {format:?} {rows}×{cols} → {outputs}, inputs × {x_scale:e}, {activation:?} acc={accumulate}",
            describe(gpu)
        );
        assert_close(&what, &y_gpu.read(gpu).unwrap(), &expected, tolerance);
    }
}

const SHAPES: [(usize, usize); 4] = [(64, 64), (130, 33), (67, 256), (300, 129)];

#[test]
fn coop_products_match_reference_for_every_format() {
    for gpu in common::coop_gpus(false) {
        for format in [MatrixFormat::F16, MatrixFormat::Int8, MatrixFormat::Nf4] {
            // Quantized formats share the tiles' code: one row count each (lavapipe emulates
            // cooperative matrices slowly).
            let rows: &[usize] = if format == MatrixFormat::F16 { &[9, 16, 33, 70] } else { &[33] };
            for &rows in rows {
                for shape in SHAPES {
                    check(&gpu, format, rows, shape, 1.0, SPLIT_TOLERANCE);
                }
            }
        }
    }
}

/// The longest rows of a released model (a 7B's channel-mix value reads 16384 inputs) run
/// through as many rounds of tiles as there are, for every format, into a tile of outputs only
/// partly filled. Without an activation, so that the tolerance is relative to the sums
/// themselves (a tanh would squash outputs of ~100 to 1 but not their rounding).
#[test]
fn coop_products_over_the_longest_rows_match_reference() {
    let (rows, outputs, cols) = (40, 24, 16384);
    for gpu in common::coop_gpus(false) {
        for format in [MatrixFormat::F16, MatrixFormat::Int8, MatrixFormat::Nf4] {
            let mut rng = Rng::new(cols as u64);
            let packed =
                PackedMatrix::pack(format, outputs, cols, &rng.vec(outputs * cols, -1.0, 1.0)).unwrap();
            let matrix = GpuMatrix::upload(&gpu, "w", &packed).unwrap();
            let weights: Vec<f32> = packed.unpack().iter().map(|&w| f16::from_f32(w).to_f32()).collect();
            let x = rng.vec(rows * cols, -1.0, 1.0);
            let (x_gpu, y_gpu) = (upload(&gpu, cols, &x), upload(&gpu, outputs, &vec![0.0; rows * outputs]));
            run(&gpu, |rec| kernels::linear(rec, "long rows", &matrix, &x_gpu, &y_gpu, Epilogue::PLAIN));
            let expected = kernels::linear_ref(&weights, cols, &x, OperandRef::None, Activation::None, None);
            let what = format!("{} {format:?} {rows}×{cols} → {outputs}", describe(&gpu));
            assert_close(&what, &y_gpu.read(&gpu).unwrap(), &expected, SPLIT_TOLERANCE);
        }
    }
}

/// Rows are scaled by powers of two into f16's range and back: inputs of 10^6 (beyond f16's
/// 65504) and of 10^-6 (f16 subnormals) multiply as exactly as those near 1.
#[test]
fn coop_products_scale_rows_beyond_f16s_range() {
    for gpu in common::coop_gpus(false) {
        for x_scale in [1e6, 3e-6] {
            check(&gpu, MatrixFormat::F16, 40, (130, 200), x_scale, SPLIT_TOLERANCE);
        }
    }
}

/// The opt-in single f16 product rounds each input to the nearest f16 and multiplies that
/// exactly: against a reference on the rounded inputs it is as close as the exact path is to the
/// plain one (truncated inputs, half an f16 step further on average, would be ~2^-12 away).
#[test]
fn coop_f16_arithmetic_rounds_inputs_to_nearest_f16() {
    for gpu in common::coop_gpus(true) {
        for shape in SHAPES {
            check_inputs_as(&gpu, MatrixFormat::F16, 33, shape, 1.0, SPLIT_TOLERANCE, |v| {
                f16::from_f32(v).to_f32()
            });
        }
    }
}
