//! Row-wise kernels (linear layers, norms, element-wise) against their CPU references, on random
//! inputs with odd sizes and several row counts, on every kernel variant.

mod common;

use common::{assert_close, describe, run, upload, variants, Rng};
use half::f16;
use rwkv_wgpu::gpu::{Backend, Gpu, GpuMatrix, GpuOptions, GpuTensor};
use rwkv_wgpu::kernels::{self, Activation, BonusGate, Epilogue, KeyInputs, Operand, OperandRef, Recorder};
use rwkv_wgpu::quant::{MatrixFormat, PackedMatrix};

/// f32 arithmetic in a different order than the f64 reference: a few ulps per term.
const F32_TOLERANCE: f64 = 2e-5;

/// A random matrix in `format` of `outputs` × `cols`, uploaded, with the values a product of
/// `rows` rows multiplies.
fn random_matrix(
    gpu: &Gpu,
    rng: &mut Rng,
    format: MatrixFormat,
    (outputs, cols): (usize, usize),
    rows: usize,
) -> (GpuMatrix, Vec<f32>) {
    let packed = PackedMatrix::pack(format, outputs, cols, &rng.vec(outputs * cols, -1.0, 1.0)).unwrap();
    common::upload_matrix(gpu, &packed, rows)
}

/// How a linear test case uses its operand vector.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OperandKind {
    None,
    Bias,
    Gate,
}

/// The epilogues a linear test runs: every activation alone, and every operand with and without
/// accumulation (each combination is its own pipeline, and compiling them all takes minutes on
/// a CPU driver).
/// The last case has an input of mostly zeros, read as sparse.
fn epilogue_cases() -> Vec<(Activation, OperandKind, bool, bool)> {
    let activations = Activation::ALL.iter().map(|&a| (a, OperandKind::None, false, false));
    let operands = [OperandKind::None, OperandKind::Bias, OperandKind::Gate]
        .into_iter()
        .flat_map(|kind| [(Activation::Tanh, kind, false, false), (Activation::Silu, kind, true, false)]);
    let sparse = (Activation::None, OperandKind::None, true, true);
    activations.chain(operands).chain([sparse]).collect()
}

/// Every shape × epilogue, for one row count and weight format.
fn check_linear(gpu: &Gpu, rows: usize, format: MatrixFormat) {
    // Odd column counts exercise the row padding; 130 and 300 outputs the workgroup and tile tails.
    for (case, &(outputs, cols)) in [(1, 4), (2, 7), (130, 33), (67, 256), (300, 129)].iter().enumerate() {
        let cases = epilogue_cases();
        // The epilogue is the same code for every format: quantized formats try two of them.
        let cases = if format == MatrixFormat::F16 { &cases[..] } else { &cases[cases.len() - 3..] };
        for (e, &(activation, kind, accumulate, sparse_input)) in cases.iter().enumerate() {
            let seed = (rows * 100_000 + case * 1000 + e) as u64;
            let mut rng = Rng::new(seed);
            let (matrix, weights) = random_matrix(gpu, &mut rng, format, (outputs, cols), rows);
            let mut x = rng.vec(rows * cols, -1.0, 1.0);
            if sparse_input {
                // Whole zero vec4s (skipped) and lone zeros beside non-zeros (not skipped).
                for (i, value) in x.iter_mut().enumerate() {
                    if (i / 4) % 3 != 0 || i % 5 == 0 {
                        *value = 0.0;
                    }
                }
            }
            let operand_len = if kind == OperandKind::Gate { rows * outputs } else { outputs };
            let operand = rng.vec(operand_len, -1.0, 1.0);
            let y0 = rng.vec(rows * outputs, -1.0, 1.0);
            let (x_gpu, operand_gpu, y_gpu) =
                (upload(gpu, cols, &x), upload(gpu, outputs, &operand), upload(gpu, outputs, &y0));
            let (gpu_operand, ref_operand) = match kind {
                OperandKind::None => (Operand::None, OperandRef::None),
                OperandKind::Bias => (Operand::Bias(&operand_gpu), OperandRef::Bias(&operand)),
                OperandKind::Gate => (Operand::Gate(&operand_gpu), OperandRef::Gate(&operand)),
            };
            let epilogue =
                Epilogue { operand: gpu_operand, activation, accumulate, sparse_input, remember: None };
            run(gpu, |rec| kernels::linear(rec, "linear", &matrix, &x_gpu, &y_gpu, epilogue));
            let previous = accumulate.then_some(&y0[..]);
            let expected = kernels::linear_ref(&weights, cols, &x, ref_operand, activation, previous);
            let what = format!(
                "{} {format:?} linear {rows}×{cols} → {outputs} {activation:?} {kind:?} acc={accumulate} sparse={sparse_input} seed={seed}",
                describe(gpu)
            );
            assert_close(&what, &y_gpu.read(gpu).unwrap(), &expected, F32_TOLERANCE);
        }
    }
}

/// The weight formats to test on a variant: all but f16 read their words the same way with or
/// without SHADER_F16, so they run on the f16 variants only (both row mappings).
fn formats_for(gpu: &Gpu) -> Vec<MatrixFormat> {
    if gpu.f16 {
        MatrixFormat::ALL.to_vec()
    } else {
        vec![MatrixFormat::F16]
    }
}

/// One row runs the matrix-vector kernels.
#[test]
fn linear_one_row_matches_reference() {
    for gpu in variants() {
        for format in formats_for(&gpu) {
            check_linear(&gpu, 1, format);
        }
    }
}

/// Several rows run the matrix-matrix kernels: fewer rows than a block, and more than a tile.
#[test]
fn linear_many_rows_matches_reference() {
    for gpu in variants() {
        for format in formats_for(&gpu) {
            // Up to 8 rows run the matrix-vector kernel where it takes a subgroup per row.
            for rows in [2, 5, 8, 9, 67] {
                check_linear(&gpu, rows, format);
            }
        }
    }
}

/// The longest rows of released models (16384 inputs: the 7B's channel-mix value) in every
/// format and kernel, on both drivers: llvmpipe ends a kernel's loops after 65535 iterations in
/// all, so a product whose loops over a row ran that long would silently stop short.
#[test]
fn products_over_the_longest_rows_finish() {
    let mut gpus = variants();
    gpus.push(common::gl_gpu());
    let (outputs, cols) = (24, 16384);
    for gpu in gpus {
        for format in formats_for(&gpu) {
            for rows in [1, 40] {
                let mut rng = Rng::new(rows as u64);
                let (matrix, weights) = random_matrix(&gpu, &mut rng, format, (outputs, cols), rows);
                let x = rng.vec(rows * cols, -1.0, 1.0);
                let (x_gpu, y) =
                    (upload(&gpu, cols, &x), GpuTensor::zeros(&gpu, "y", rows, outputs).unwrap());
                run(&gpu, |rec| kernels::linear(rec, "long rows", &matrix, &x_gpu, &y, Epilogue::PLAIN));
                let expected =
                    kernels::linear_ref(&weights, cols, &x, OperandRef::None, Activation::None, None);
                let what = format!("{} {format:?} {rows}×{cols} → {outputs}", describe(&gpu));
                assert_close(&what, &y.read(&gpu).unwrap(), &expected, F32_TOLERANCE);
            }
        }
    }
}

/// A matrix larger than a storage binding may hold is split into parts by rows; the result is
/// the same as unsplit, for every format, one row and many.
#[test]
fn matrices_split_over_small_bindings_give_the_same_results() {
    let whole = common::default_gpu();
    let small = common::open(&GpuOptions { binding_limit: Some(8192), ..common::default_options() });
    for format in MatrixFormat::ALL {
        for rows in [1, 6] {
            let mut rng = Rng::new(77);
            let (outputs, cols) = (300, 129);
            let packed =
                PackedMatrix::pack(format, outputs, cols, &rng.vec(outputs * cols, -1.0, 1.0)).unwrap();
            let x = rng.vec(rows * cols, -1.0, 1.0);
            let bias = rng.vec(outputs, -1.0, 1.0);
            let results: Vec<Vec<f32>> = [&whole, &small]
                .iter()
                .map(|gpu| {
                    let matrix = GpuMatrix::upload(gpu, "w", &packed).unwrap();
                    let (x_gpu, bias_gpu) = (upload(gpu, cols, &x), upload(gpu, outputs, &bias));
                    let y = GpuTensor::zeros(gpu, "y", rows, outputs).unwrap();
                    let epilogue = Epilogue::bias(&bias_gpu, Activation::Tanh);
                    run(gpu, |rec| kernels::linear(rec, "split", &matrix, &x_gpu, &y, epilogue));
                    y.read(gpu).unwrap()
                })
                .collect();
            let parts = GpuMatrix::upload(&small, "w", &packed).unwrap().parts.len();
            assert!(parts > 2, "{format:?}: expected a split into several parts, got {parts}");
            assert_close(&format!("{format:?} {rows} rows split in {parts}"), &results[1], &results[0], 0.0);
        }
    }
}

/// A grouped product: three matrices of 5, 12 and 7 rows stacked into one, each reading its own
/// entry of an input stack and writing its own entry of an output stack with its own activation,
/// plus a bias over all rows; every format, one row (one dispatch) and many (one per segment),
/// whole and split over small bindings (parts that straddle segments). The gaps stay zero.
#[test]
fn grouped_linear_gives_each_segment_its_input_output_and_activation() {
    let small = common::open(&GpuOptions {
        backend: Some(Backend::Vulkan),
        binding_limit: Some(1536),
        ..GpuOptions::default()
    });
    // The small bindings hold the stacks of one or two rows only.
    let mut gpus: Vec<(Gpu, &[usize])> = variants().into_iter().map(|gpu| (gpu, &[1, 3, 70][..])).collect();
    gpus.push((small, &[1, 2]));
    let (widths, activations, cols) =
        ([5, 12, 7], [Activation::Tanh, Activation::None, Activation::Sigmoid], 41);
    let outputs: usize = widths.iter().sum();
    for (gpu, row_counts) in gpus {
        for format in formats_for(&gpu) {
            for &rows in row_counts {
                let mut rng = Rng::new(31 + rows as u64);
                let (matrix, weights) = random_matrix(&gpu, &mut rng, format, (outputs, cols), rows);
                if row_counts.len() == 2 {
                    assert!(matrix.parts.len() > 1, "{format:?}: the small bindings should split the matrix");
                }
                let (inputs, _) = GpuTensor::stack(&gpu, "inputs", 3, rows, cols).unwrap();
                let x: Vec<Vec<f32>> = inputs
                    .iter()
                    .map(|entry| {
                        let values = rng.vec(rows * cols, -1.0, 1.0);
                        entry.write(&gpu, &values).unwrap();
                        values
                    })
                    .collect();
                let bias = rng.vec(outputs, -1.0, 1.0);
                let bias_gpu = upload(&gpu, outputs, &bias);
                let (entries, stride) = GpuTensor::stack(&gpu, "outputs", 3, rows, 12).unwrap();
                let views: Vec<GpuTensor> =
                    entries.iter().zip(widths).map(|(e, cols)| GpuTensor { cols, ..e.clone() }).collect();
                let segments: Vec<_> = (0..3)
                    .map(|s| kernels::Segment { x: &inputs[s], y: &views[s], activation: activations[s] })
                    .collect();
                let epilogue = Epilogue { operand: Operand::Bias(&bias_gpu), ..Epilogue::PLAIN };
                run(&gpu, |rec| kernels::linear_grouped(rec, "grouped", &matrix, &segments, epilogue));
                let mut first = 0;
                for s in 0..3 {
                    let rows_of = |v: &[f32]| v[first * cols..(first + widths[s]) * cols].to_vec();
                    let segment_bias = &bias[first..first + widths[s]];
                    let expected = kernels::linear_ref(
                        &rows_of(&weights),
                        cols,
                        &x[s],
                        OperandRef::Bias(segment_bias),
                        activations[s],
                        None,
                    );
                    let what = format!("{} {format:?} {rows} rows, segment {s}", describe(&gpu));
                    assert_close(&what, &views[s].read(&gpu).unwrap(), &expected, F32_TOLERANCE);
                    first += widths[s];
                }
                let whole = GpuTensor { offset: 0, rows: 1, cols: 3 * stride, ..entries[0].clone() };
                let whole = whole.read(&gpu).unwrap();
                for (s, view) in views.iter().enumerate() {
                    let used = rows * view.stride();
                    assert!(
                        whole[s * stride + used..(s + 1) * stride].iter().all(|&v| v == 0.0),
                        "gap written"
                    );
                }
            }
        }
    }
}

/// The value-residual epilogue: y ← y + (target − y) · σ(W·x + bias), target later in y's buffer.
#[test]
fn linear_lerp_pulls_the_output_towards_its_target() {
    for gpu in variants() {
        for rows in [1, 5] {
            let mut rng = Rng::new(5 + rows as u64);
            let (outputs, cols) = (70, 33);
            let (matrix, weights) = random_matrix(&gpu, &mut rng, MatrixFormat::F16, (outputs, cols), rows);
            let (x, bias) = (rng.vec(rows * cols, -1.0, 1.0), rng.vec(outputs, -1.0, 1.0));
            let (y0, target) = (rng.vec(rows * outputs, -1.0, 1.0), rng.vec(rows * outputs, -1.0, 1.0));
            let (x_gpu, bias_gpu) = (upload(&gpu, cols, &x), upload(&gpu, outputs, &bias));
            let (stack, _) = GpuTensor::stack(&gpu, "values", 2, rows, outputs).unwrap();
            stack[0].write(&gpu, &y0).unwrap();
            stack[1].write(&gpu, &target).unwrap();
            let epilogue = Epilogue::lerp(&bias_gpu, &stack[1], Activation::Sigmoid);
            run(&gpu, |rec| kernels::linear(rec, "lerp", &matrix, &x_gpu, &stack[0], epilogue));
            let mix =
                kernels::linear_ref(&weights, cols, &x, OperandRef::Bias(&bias), Activation::Sigmoid, None);
            let expected = kernels::lerp_ref(&y0, &target, &mix);
            let what = format!("{} lerp epilogue, {rows} rows", describe(&gpu));
            assert_close(&what, &stack[0].read(&gpu).unwrap(), &expected, F32_TOLERANCE);
            assert_eq!(stack[1].read(&gpu).unwrap(), target, "the target is read, never written");
        }
    }
}

/// The matrix-matrix kernel with f16 arithmetic, on inputs that are already f16 values (so that
/// the only differences from the f64 reference are the f16 products and 4-term sums, each rounded
/// by at most 2^-11 of terms below 1, summed over ≤ 33 rounds in f32): within 2e-3 of the scale.
#[test]
fn matmul_with_f16_arithmetic_matches_reference() {
    let options = GpuOptions {
        backend: Some(Backend::Vulkan),
        allow_f16: Some(true),
        row_mapping: Some(rwkv_wgpu::gpu::RowMapping::WorkgroupPerRow),
        f16_arithmetic: true,
        ..GpuOptions::default()
    };
    let gpu = common::open(&options);
    assert!(gpu.f16_arithmetic, "the test adapter needs SHADER_F16");
    for (outputs, cols) in [(130, 33), (300, 129)] {
        let mut rng = Rng::new(outputs as u64);
        let rows = 67;
        let (matrix, weights) = random_matrix(&gpu, &mut rng, MatrixFormat::F16, (outputs, cols), rows);
        let x: Vec<f32> =
            rng.vec(rows * cols, -1.0, 1.0).iter().map(|&v| f16::from_f32(v).to_f32()).collect();
        let (x_gpu, y) = (upload(&gpu, cols, &x), GpuTensor::zeros(&gpu, "y", rows, outputs).unwrap());
        run(&gpu, |rec| kernels::linear(rec, "f16 matmul", &matrix, &x_gpu, &y, Epilogue::PLAIN));
        let expected = kernels::linear_ref(&weights, cols, &x, OperandRef::None, Activation::None, None);
        assert_close(
            &format!("f16 arithmetic {rows}×{cols} → {outputs}"),
            &y.read(&gpu).unwrap(),
            &expected,
            2e-3,
        );
    }
}

/// Hand-worked: W = [[1, 2], [3, 4]], x = [1, -1] → W·x = [-1, -1]; bias [0.5, 2] → [-0.5, 1];
/// ReLU² → [0, 1].
#[test]
fn linear_small_worked_example() {
    let gpu = common::default_gpu();
    let weights: Vec<f16> = [1.0, 2.0, 3.0, 4.0].map(f16::from_f32).to_vec();
    let matrix = GpuMatrix::from_f16(&gpu, "w", 2, 2, &weights).unwrap();
    let (x, bias, y) =
        (upload(&gpu, 2, &[1.0, -1.0]), upload(&gpu, 2, &[0.5, 2.0]), upload(&gpu, 2, &[9.0, 9.0]));
    run(&gpu, |rec| {
        kernels::linear(rec, "linear", &matrix, &x, &y, Epilogue::bias(&bias, Activation::ReluSquared))
    });
    assert_eq!(y.read(&gpu).unwrap(), vec![0.0, 1.0]);
}

#[test]
fn linear_rejects_wrong_shapes() {
    let gpu = common::default_gpu();
    let matrix = GpuMatrix::from_f32(&gpu, "w", 3, 5, &[0.0; 15]).unwrap();
    let x = upload(&gpu, 4, &[0.0; 4]);
    let y = upload(&gpu, 3, &[0.0; 3]);
    let mut rec = Recorder::new(&gpu);
    let error = kernels::linear(&mut rec, "L0.att.key", &matrix, &x, &y, Epilogue::PLAIN).unwrap_err();
    assert!(error.to_string().contains("L0.att.key: `x` has 4 columns, the matrix takes 5"), "{error}");
}

#[test]
fn layer_norm_matches_reference() {
    for gpu in common::with_and_without_subgroups() {
        for (seed, rows, len) in [(1u64, 1, 1usize), (2, 3, 33), (3, 1, 64), (4, 2, 260), (5, 5, 1025)] {
            let mut rng = Rng::new(seed);
            // An offset mean checks the two-pass variance.
            let x: Vec<f32> = rng.vec(rows * len, -2.0, 2.0).into_iter().map(|v| v + 30.0).collect();
            let (weight, bias) = (rng.vec(len, 0.5, 1.5), rng.vec(len, -0.5, 0.5));
            let norm = upload(&gpu, len, &[weight.clone(), bias.clone()].concat());
            let (x_gpu, out) = (upload(&gpu, len, &x), GpuTensor::zeros(&gpu, "out", rows, len).unwrap());
            run(&gpu, |rec| kernels::layer_norm(rec, "ln", &x_gpu, &norm, &out));
            let expected = kernels::layer_norm_ref(&x, &weight, &bias);
            assert_close(
                &format!("layer_norm {rows}×{len} seed={seed}"),
                &out.read(&gpu).unwrap(),
                &expected,
                1e-4,
            );
        }
    }
}

/// Head shapes: a single head, sizes that are not powers of two, and more channels than a workgroup.
const HEAD_SHAPES: [(usize, usize); 5] = [(1, 8), (3, 5), (4, 16), (2, 64), (3, 96)];

#[test]
fn wkv7_keys_matches_reference() {
    for gpu in common::with_and_without_subgroups() {
        for (seed, &(heads, n)) in HEAD_SHAPES.iter().enumerate() {
            let rows = 1 + seed % 3;
            let mut rng = Rng::new(seed as u64);
            let c = heads * n;
            let (k, a) = (rng.vec(rows * c, -2.0, 2.0), rng.vec(rows * c, 0.0, 1.0));
            let (k_k, k_a) = (rng.vec(c, 0.5, 1.5), rng.vec(c, 0.0, 1.0));
            let kk = GpuTensor::zeros(&gpu, "kk", rows, c).unwrap();
            let k_out = GpuTensor::zeros(&gpu, "k_out", rows, c).unwrap();
            let inputs = [&k, &a, &k_k, &k_a].map(|v| upload(&gpu, c, v));
            run(&gpu, |rec| {
                let keys = KeyInputs { k: &inputs[0], a: &inputs[1], k_k: &inputs[2], k_a: &inputs[3] };
                kernels::wkv7_keys(rec, "keys", heads, keys, &kk, &k_out)
            });
            let (kk_ref, k_out_ref) = kernels::wkv7_keys_ref(heads, &k, &a, &k_k, &k_a);
            let what = format!("wkv7_keys {rows} rows of {heads}×{n}");
            assert_close(&format!("{what} kk"), &kk.read(&gpu).unwrap(), &kk_ref, 1e-5);
            assert_close(&format!("{what} k_out"), &k_out.read(&gpu).unwrap(), &k_out_ref, 1e-6);
        }
    }
}

#[test]
fn group_norm_bonus_gate_matches_reference() {
    for gpu in common::with_and_without_subgroups() {
        for (seed, &(heads, n)) in HEAD_SHAPES.iter().enumerate() {
            let rows = 1 + seed % 3;
            let mut rng = Rng::new(200 + seed as u64);
            let c = heads * n;
            let y = rng.vec(rows * c, -3.0, 3.0);
            let (weight, bias, r_k) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5), rng.vec(c, -1.0, 1.0));
            let [r, k, v, g] = [(); 4].map(|_| rng.vec(rows * c, -1.0, 1.0));
            let norm = upload(&gpu, c, &[weight.clone(), bias.clone()].concat());
            let y_gpu = upload(&gpu, c, &y);
            let [r_gpu, k_gpu, v_gpu, r_k_gpu, g_gpu] = [&r, &k, &v, &r_k, &g].map(|x| upload(&gpu, c, x));
            let out = GpuTensor::zeros(&gpu, "out", rows, c).unwrap();
            run(&gpu, |rec| {
                let operands = BonusGate { rkv: [&r_gpu, &k_gpu, &v_gpu], r_k: &r_k_gpu, g: &g_gpu };
                kernels::group_norm_bonus_gate(rec, "gn", heads, &y_gpu, &norm, operands, &out)
            });
            let expected =
                kernels::group_norm_bonus_gate_ref(heads, &y, (&weight, &bias), &r, &k, &v, &r_k, &g);
            assert_close(
                &format!("group_norm_bonus_gate {rows} rows of {heads}×{n}"),
                &out.read(&gpu).unwrap(),
                &expected,
                1e-4,
            );
        }
    }
}

#[test]
fn group_norm_with_and_without_gate_matches_reference() {
    for gpu in common::with_and_without_subgroups() {
        for (seed, &(heads, n)) in HEAD_SHAPES.iter().enumerate() {
            for gated in [false, true] {
                let rows = 1 + seed % 3;
                let mut rng = Rng::new(500 + seed as u64);
                let c = heads * n;
                let y = rng.vec(rows * c, -3.0, 3.0);
                let (weight, bias, gate) =
                    (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5), rng.vec(rows * c, -1.0, 1.0));
                let norm = upload(&gpu, c, &[weight.clone(), bias.clone()].concat());
                let (y_gpu, gate_gpu) = (upload(&gpu, c, &y), upload(&gpu, c, &gate));
                let out = GpuTensor::zeros(&gpu, "out", rows, c).unwrap();
                let gate_arg = gated.then_some(&gate_gpu);
                run(&gpu, |rec| kernels::group_norm(rec, "gn", heads, &y_gpu, &norm, gate_arg, &out));
                let expected =
                    kernels::group_norm_ref(heads, &y, (&weight, &bias), gated.then_some(&gate[..]));
                let what = format!("group_norm {rows} rows of {heads}×{n} gated={gated}");
                assert_close(&what, &out.read(&gpu).unwrap(), &expected, 1e-4);
            }
        }
    }
}

/// The bandwidth probe's reads are real: each workgroup's sum of its span, a short last span
/// included, on every backend.
#[test]
fn read_sum_sums_each_span() {
    for gpu in [common::default_gpu(), common::gl_gpu()] {
        let values = 3 * kernels::read_sum_span(1 << 20) * 4 + 4 * 37;
        let data: Vec<f32> = Rng::new(5).vec(values, -1.0, 1.0);
        let data_gpu = upload(&gpu, values, &data);
        let expected = kernels::read_sum_ref(&data);
        assert_eq!(expected.len(), 4, "three whole spans and a short one");
        let sums = GpuTensor::zeros(&gpu, "sums", 1, expected.len()).unwrap();
        run(&gpu, |rec| kernels::read_sum(rec, "read_sum", &data_gpu, &sums));
        assert_close(&describe(&gpu), &sums.read(&gpu).unwrap(), &expected, 1e-5);
    }
}
