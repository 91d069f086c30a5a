//! Matrices stored by input (the channel mix's W_v on GPUs, src/quant/by_input.rs): every kernel
//! that reads them against the CPU reference, on every variant and on GL, and where the loader
//! stores W_v so.

mod common;

use common::{assert_close, describe, run, upload, variants, Rng};
use rwkv_wgpu::gpu::{Backend, Gpu, GpuMatrix, GpuOptions, GpuTensor, RowMapping};
use rwkv_wgpu::kernels::{self, Activation, Epilogue, OperandRef, Recorder, Segment};
use rwkv_wgpu::model::loader::Loader;
use rwkv_wgpu::model::source;
use rwkv_wgpu::quant::{MatrixFormat, PackedMatrix, QuantPlan};

/// f32 arithmetic in a different order than the f64 reference: a few ulps per term.
const F32_TOLERANCE: f64 = 2e-5;

/// A random `[rows, cols]` matrix in `format` stored by input, uploaded, with the values the GPU
/// decodes from it (row-major by output, as the reference reads them).
fn random_by_input(
    gpu: &Gpu,
    rng: &mut Rng,
    format: MatrixFormat,
    rows: usize,
    cols: usize,
) -> (GpuMatrix, Vec<f32>) {
    let packed = PackedMatrix::pack_by_input(format, rows, cols, &rng.vec(rows * cols, -1.0, 1.0)).unwrap();
    let matrix = GpuMatrix::upload_by_input(gpu, "w", &packed, cols).unwrap();
    assert!(matrix.by_input && (matrix.rows, matrix.cols) == (rows, cols));
    (matrix, packed.unpack_by_input(cols))
}

/// What a case multiplies: a squared ReLU's zeros, accumulated (W_v in RWKV-7); a dense input
/// gated and accumulated (RWKV-4…6); a dense input with a bias and an activation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    SparseAccumulate,
    Gated,
    BiasTanh,
}

/// Every shape × case for one row count and format; shapes with odd inputs (zero-padded stored
/// rows), outputs off a vec4, tile and workgroup tails.
fn check(gpu: &Gpu, rows: usize, format: MatrixFormat, cases: &[Case]) {
    check_shapes(gpu, rows, format, cases, &[(1, 4), (2, 7), (130, 33), (67, 256), (300, 129)]);
}

/// The same on `(outputs, inputs)` shapes.
fn check_shapes(gpu: &Gpu, rows: usize, format: MatrixFormat, cases: &[Case], shapes: &[(usize, usize)]) {
    for (shape, &(outputs, cols)) in shapes.iter().enumerate() {
        for &case in cases {
            let seed = (rows * 1000 + shape * 10 + case as usize) as u64;
            let mut rng = Rng::new(seed);
            let (matrix, weights) = random_by_input(gpu, &mut rng, format, outputs, cols);
            let mut x = rng.vec(rows * cols, -1.0, 1.0);
            if case == Case::SparseAccumulate {
                // Lone nonzeros and whole zero vec4s, as after a squared ReLU.
                for (i, value) in x.iter_mut().enumerate() {
                    if i % 3 != 0 || (i / 4) % 5 == 1 {
                        *value = 0.0;
                    }
                }
            }
            let operand = rng.vec(rows * outputs, -1.0, 1.0);
            let y0 = rng.vec(rows * outputs, -1.0, 1.0);
            let (x_gpu, operand_gpu, y) =
                (upload(gpu, cols, &x), upload(gpu, outputs, &operand), upload(gpu, outputs, &y0));
            let bias = &operand[..outputs];
            let bias_gpu = upload(gpu, outputs, bias);
            let (epilogue, reference, activation, previous) = match case {
                Case::SparseAccumulate => {
                    (Epilogue::ACCUMULATE.sparse_input(), OperandRef::None, Activation::None, Some(&y0[..]))
                }
                Case::Gated => (
                    Epilogue::gated_accumulate(&operand_gpu),
                    OperandRef::Gate(&operand),
                    Activation::None,
                    Some(&y0[..]),
                ),
                Case::BiasTanh => (
                    Epilogue::bias(&bias_gpu, Activation::Tanh),
                    OperandRef::Bias(bias),
                    Activation::Tanh,
                    None,
                ),
            };
            run(gpu, |rec| kernels::linear(rec, "by input", &matrix, &x_gpu, &y, epilogue));
            let expected = kernels::linear_ref(&weights, cols, &x, reference, activation, previous);
            let what = format!(
                "{} {format:?} by input {rows}×{cols} → {outputs} {case:?} seed={seed}",
                describe(gpu)
            );
            assert_close(&what, &y.read(gpu).unwrap(), &expected, F32_TOLERANCE);
        }
    }
}

/// The formats stored by input (int8 and nf4 keep their blocks along inputs) that a variant
/// reads differently: all on native f16, f16 alone on packed f16.
fn formats_for(gpu: &Gpu) -> Vec<MatrixFormat> {
    if gpu.f16 {
        vec![MatrixFormat::F32, MatrixFormat::Bf16, MatrixFormat::F16]
    } else {
        vec![MatrixFormat::F16]
    }
}

/// One row runs `by_input` (which skips zero inputs' rows), up to 8 on the GPU row mappings
/// `by_input_rows`; more rows (and several on thread-per-row) run the blocked or tiled kernels
/// reading the weights transposed; on every variant and on GL.
#[test]
fn products_with_weights_stored_by_input_match_reference() {
    let mut gpus = variants();
    gpus.push(common::gl_gpu());
    for gpu in gpus {
        for format in formats_for(&gpu) {
            for rows in [1, 5, 8, 9, 67] {
                // The epilogue is shared with the by-output kernels; f16 runs every case.
                let cases: &[Case] = if format == MatrixFormat::F16 {
                    &[Case::SparseAccumulate, Case::Gated, Case::BiasTanh]
                } else {
                    &[Case::SparseAccumulate]
                };
                check(&gpu, rows, format, cases);
            }
        }
    }
}

/// Every split of a `by_input` workgroup (`GpuOptions::by_input_lanes`, tuned per GPU), from one
/// lane of outputs to the whole workgroup, on both workgroup sizes: one row (`by_input`), and on
/// the subgroup mapping a batch (`by_input_rows`; thread-per-row multiplies batches in blocks);
/// a lane count that does not split it is refused by name.
#[test]
fn every_split_of_the_by_input_workgroup_matches_reference() {
    for (row_mapping, row_counts) in
        [(RowMapping::ThreadPerRow, &[1][..]), (RowMapping::SubgroupPerRow, &[1, 5])]
    {
        let threads = kernels::by_input_threads(row_mapping);
        let options = |lanes| GpuOptions {
            backend: Some(Backend::Vulkan),
            row_mapping: Some(row_mapping),
            allow_subgroups: Some(true),
            value_by_input: Some(true),
            by_input_lanes: Some(lanes),
            ..GpuOptions::default()
        };
        for lanes in (0..).map(|p| 1 << p).take_while(|&lanes| lanes <= threads) {
            let gpu = common::open(&options(lanes));
            assert_eq!((gpu.row_mapping, gpu.by_input_lanes), (row_mapping, lanes));
            for &rows in row_counts {
                check_shapes(
                    &gpu,
                    rows,
                    MatrixFormat::F16,
                    &[Case::SparseAccumulate],
                    &[(67, 256), (300, 129)],
                );
            }
        }
        for lanes in [0, 3, 2 * threads] {
            let error =
                Gpu::new(&options(lanes)).err().expect("a bad lane count must be refused").to_string();
            assert!(error.contains("by-input lanes") && error.contains(&lanes.to_string()), "{error}");
        }
    }
}

/// W_v of the released 7B has 16384 inputs: every kernel walks them all (llvmpipe ends a
/// kernel's loops after 65535 iterations in all, which a loop over one row per input would pass).
#[test]
fn the_longest_inputs_stored_by_input_match_reference() {
    let mut gpus = variants();
    gpus.push(common::gl_gpu());
    for gpu in gpus {
        for rows in [1, 5, 40] {
            check_shapes(&gpu, rows, MatrixFormat::F16, &[Case::SparseAccumulate], &[(24, 16384)]);
        }
    }
}

/// The tensor-core kernel stages weights stored by input transposed into its tiles.
#[test]
fn cooperative_products_with_weights_stored_by_input_match_reference() {
    for gpu in common::coop_gpus(false) {
        for rows in [17, 67] {
            check(&gpu, rows, MatrixFormat::F16, &[Case::SparseAccumulate, Case::Gated]);
        }
    }
}

/// A matrix stored by input is read whole: two segments are refused with a message, not
/// computed wrongly.
#[test]
fn products_stored_by_input_refuse_segments() {
    let gpu = common::default_gpu();
    let mut rng = Rng::new(3);
    let (matrix, _) = random_by_input(&gpu, &mut rng, MatrixFormat::F16, 8, 8);
    let x = upload(&gpu, 8, &[0.5; 8]);
    let (ys, _) = GpuTensor::stack(&gpu, "y", 2, 1, 4).unwrap();
    let segments = [
        Segment { x: &x, y: &ys[0], activation: Activation::None },
        Segment { x: &x, y: &ys[1], activation: Activation::None },
    ];
    let mut rec = Recorder::new(&gpu);
    let error =
        kernels::linear_grouped(&mut rec, "grouped", &matrix, &segments, Epilogue::PLAIN).unwrap_err();
    assert!(error.to_string().contains("stored by input"), "{error}");
}

/// Quantized matrices are not stored by input: their blocks run along inputs.
#[test]
fn quantized_matrices_are_not_stored_by_input() {
    let gpu = common::default_gpu();
    for format in [MatrixFormat::Int8, MatrixFormat::Nf4] {
        let packed = PackedMatrix::pack_by_input(format, 64, 64, &[0.25; 64 * 64]).unwrap();
        let error = GpuMatrix::upload_by_input(&gpu, "w", &packed, 64).unwrap_err();
        assert!(error.to_string().contains("stored by output"), "{format:?}: {error}");
    }
}

/// The loader stores W_v by input where asked and where it fits one binding; else by output, with
/// the same values; int8 and nf4 by output.
#[test]
fn the_value_matrix_is_stored_by_input_where_it_fits_one_binding() {
    let path = common::fixture_dir("v7", "tiny").join("model-f16.safetensors");
    let file = source::open(&path).unwrap();
    let name = "blocks.0.ffn.value.weight";
    let (embd, ffn) = (64, 256);
    let x: Vec<f32> = (0..ffn).map(|i| if i % 3 == 0 { (i as f32 * 0.37).sin() } else { 0.0 }).collect();
    let mut results = Vec::new();
    for (by_input, binding_limit) in [(true, None), (true, Some(16 * 1024)), (false, None)] {
        let gpu = common::open(&GpuOptions {
            backend: Some(Backend::Vulkan),
            value_by_input: Some(by_input),
            binding_limit,
            ..GpuOptions::default()
        });
        let matrix = Loader::new(file.as_ref(), &gpu).linear_sparse_input(name, embd, ffn).unwrap();
        // 64 × 256 f16 is 32 KiB: over the 16 KiB limit it is split by output rows instead.
        assert_eq!(matrix.by_input, by_input && binding_limit.is_none(), "{by_input} {binding_limit:?}");
        let (x_gpu, y) = (upload(&gpu, ffn, &x), GpuTensor::zeros(&gpu, "y", 1, embd).unwrap());
        run(&gpu, |rec| kernels::linear(rec, "value", &matrix, &x_gpu, &y, Epilogue::PLAIN.sparse_input()));
        results.push(y.read(&gpu).unwrap());
    }
    let gpu = common::default_gpu();
    let int8 = Loader::with_plan(file.as_ref(), &gpu, QuantPlan::all(MatrixFormat::Int8));
    assert!(!int8.linear_sparse_input(name, embd, ffn).unwrap().by_input, "int8 stays by output");
    let weights =
        Loader::new(file.as_ref(), &rwkv_wgpu::model::loader::Host).linear(name, embd, ffn).unwrap();
    let expected = kernels::linear_ref(&weights.values, ffn, &x, OperandRef::None, Activation::None, None);
    for (result, what) in results.iter().zip(["by input", "split by output", "by output"]) {
        assert_close(what, result, &expected, F32_TOLERANCE);
    }
}

/// Prompts' products load the tiles of either layout into the same places and multiply them in
/// the same order, so by input and by output give the same bits: on the blocked kernel, the
/// tiled one with f32 and with f16 tiles (whose by-input loads are transposed in registers, each
/// tile vec4 stored by one thread), and on tensor cores, exact and with f16 arithmetic.
#[test]
fn prompt_products_give_the_same_bits_from_either_layout() {
    let mapping = |row_mapping, f16_arithmetic| GpuOptions {
        backend: Some(Backend::Vulkan),
        allow_f16: Some(true),
        row_mapping: Some(row_mapping),
        f16_arithmetic,
        coop: Some(false),
        ..GpuOptions::default()
    };
    let mut gpus = vec![
        common::open(&mapping(RowMapping::ThreadPerRow, false)),
        common::open(&mapping(RowMapping::WorkgroupPerRow, false)),
        common::open(&mapping(RowMapping::WorkgroupPerRow, true)),
    ];
    assert!(gpus[2].f16_arithmetic, "the test adapter needs SHADER_F16");
    gpus.extend(common::coop_gpus(false));
    gpus.extend(common::coop_gpus(true));
    for gpu in gpus {
        for (rows, outputs, cols) in [(67, 130, 33), (40, 300, 129), (9, 64, 256)] {
            let mut rng = Rng::new((rows * outputs + cols) as u64);
            let values = rng.vec(outputs * cols, -1.0, 1.0);
            let x = rng.vec(rows * cols, -1.0, 1.0);
            let by_output = PackedMatrix::pack(MatrixFormat::F16, outputs, cols, &values).unwrap();
            let by_input = PackedMatrix::pack_by_input(MatrixFormat::F16, outputs, cols, &values).unwrap();
            let matrices = [
                GpuMatrix::upload(&gpu, "w", &by_output).unwrap(),
                GpuMatrix::upload_by_input(&gpu, "w", &by_input, cols).unwrap(),
            ];
            let results: Vec<Vec<f32>> = matrices
                .iter()
                .map(|matrix| {
                    let (x_gpu, y) =
                        (upload(&gpu, cols, &x), GpuTensor::zeros(&gpu, "y", rows, outputs).unwrap());
                    run(&gpu, |rec| kernels::linear(rec, "either", matrix, &x_gpu, &y, Epilogue::PLAIN));
                    y.read(&gpu).unwrap()
                })
                .collect();
            let what =
                format!("{} f16 arithmetic {} {rows}×{cols} → {outputs}", describe(&gpu), gpu.f16_arithmetic);
            assert_close(&what, &results[1], &results[0], 0.0);
        }
    }
}
