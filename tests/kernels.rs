//! Every kernel against its CPU reference, on random inputs with odd sizes, on every variant.

mod common;

use common::{assert_close, describe, variants, Rng};
use half::f16;
use rwkv_wgpu::gpu::{Gpu, GpuMatrix, GpuVector};
use rwkv_wgpu::kernels::{
    self, Activation, BonusGate, Epilogue, KeyInputs, Mixes, Operand, OperandRef, Prev, Recorder, Wkv4Inputs,
    Wkv5Inputs, Wkv7Inputs,
};

/// f32 arithmetic in a different order than the f64 reference: a few ulps per term.
const F32_TOLERANCE: f64 = 2e-5;

fn run(gpu: &Gpu, record: impl FnOnce(&mut Recorder) -> rwkv_wgpu::Result<()>) {
    let mut rec = Recorder::new(gpu);
    record(&mut rec).expect("recording failed");
    rec.finish().run(gpu);
    gpu.wait().expect("GPU error");
}

fn upload(gpu: &Gpu, data: &[f32]) -> GpuVector {
    GpuVector::from_slice(gpu, "input", data).unwrap()
}

/// How a matvec test case uses its operand vector.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OperandKind {
    None,
    Bias,
    Gate,
}

#[test]
fn matvec_matches_reference() {
    for gpu in variants() {
        // Odd column counts exercise the row padding; 2 rows and 130 rows the workgroup tails.
        for (case, &(rows, cols)) in [(1, 4), (2, 7), (130, 33), (67, 256), (300, 129)].iter().enumerate() {
            for (a, &activation) in Activation::ALL.iter().enumerate() {
                for (o, kind) in
                    [OperandKind::None, OperandKind::Bias, OperandKind::Gate].into_iter().enumerate()
                {
                    for accumulate in [false, true] {
                        let seed = (case * 1000 + a * 100 + o * 10 + usize::from(accumulate)) as u64;
                        let mut rng = Rng::new(seed);
                        let weights: Vec<f16> =
                            rng.vec(rows * cols, -1.0, 1.0).into_iter().map(f16::from_f32).collect();
                        let x = rng.vec(cols, -1.0, 1.0);
                        let operand = rng.vec(rows, -1.0, 1.0);
                        let y0 = rng.vec(rows, -1.0, 1.0);
                        let matrix = GpuMatrix::from_f16(&gpu, "w", rows, cols, &weights).unwrap();
                        let (x_gpu, operand_gpu, y_gpu) =
                            (upload(&gpu, &x), upload(&gpu, &operand), upload(&gpu, &y0));
                        let (gpu_operand, ref_operand) = match kind {
                            OperandKind::None => (Operand::None, OperandRef::None),
                            OperandKind::Bias => (Operand::Bias(&operand_gpu), OperandRef::Bias(&operand)),
                            OperandKind::Gate => (Operand::Gate(&operand_gpu), OperandRef::Gate(&operand)),
                        };
                        let epilogue = Epilogue { operand: gpu_operand, activation, accumulate };
                        run(&gpu, |rec| kernels::matvec(rec, "matvec", &matrix, &x_gpu, &y_gpu, epilogue));
                        let expected = kernels::matvec_ref(
                            &weights,
                            &x,
                            ref_operand,
                            activation,
                            accumulate.then_some(&y0[..]),
                        );
                        let what = format!(
                            "{} matvec {rows}x{cols} {activation:?} {kind:?} acc={accumulate} seed={seed}",
                            describe(&gpu)
                        );
                        assert_close(&what, &y_gpu.read(&gpu).unwrap(), &expected, F32_TOLERANCE);
                    }
                }
            }
        }
    }
}

/// A matrix of 3 blocks of 5 rows fills rows of a stack; the padding between rows stays zero.
#[test]
fn matvec_into_rows_lays_out_blocks() {
    for gpu in variants() {
        let mut rng = Rng::new(31);
        let (blocks, block_rows, cols) = (3, 5, 9);
        let weights: Vec<f16> =
            rng.vec(blocks * block_rows * cols, -1.0, 1.0).into_iter().map(f16::from_f32).collect();
        let x = rng.vec(cols, -1.0, 1.0);
        let matrix = GpuMatrix::from_f16(&gpu, "w", blocks * block_rows, cols, &weights).unwrap();
        let x_gpu = upload(&gpu, &x);
        let (rows, stride) = GpuVector::stack(&gpu, "rows", blocks, block_rows).unwrap();
        let epilogue = Epilogue::then(Activation::Tanh);
        run(&gpu, |rec| kernels::matvec_into_rows(rec, "blocked", &matrix, &x_gpu, &rows, stride, epilogue));
        let expected = kernels::matvec_ref(&weights, &x, OperandRef::None, Activation::Tanh, None);
        for (b, row) in rows.iter().enumerate() {
            let what = format!("{} block {b}", describe(&gpu));
            assert_close(
                &what,
                &row.read(&gpu).unwrap(),
                &expected[b * block_rows..(b + 1) * block_rows],
                F32_TOLERANCE,
            );
        }
        let whole =
            GpuVector { buffer: rows[0].buffer.clone(), offset: 0, len: blocks * stride }.read(&gpu).unwrap();
        for b in 0..blocks {
            assert!(
                whole[b * stride + block_rows..(b + 1) * stride].iter().all(|&v| v == 0.0),
                "padding written"
            );
        }
    }
}

/// Hand-worked: W = [[1, 2], [3, 4]], x = [1, -1] → W·x = [-1, -1]; bias [0.5, 2] → [-0.5, 1];
/// ReLU² → [0, 1].
#[test]
fn matvec_small_worked_example() {
    let gpu = common::default_gpu();
    let weights: Vec<f16> = [1.0, 2.0, 3.0, 4.0].map(f16::from_f32).to_vec();
    let matrix = GpuMatrix::from_f16(&gpu, "w", 2, 2, &weights).unwrap();
    let (x, bias, y) = (upload(&gpu, &[1.0, -1.0]), upload(&gpu, &[0.5, 2.0]), upload(&gpu, &[9.0, 9.0]));
    run(&gpu, |rec| {
        kernels::matvec(rec, "matvec", &matrix, &x, &y, Epilogue::bias(&bias, Activation::ReluSquared))
    });
    assert_eq!(y.read(&gpu).unwrap(), vec![0.0, 1.0]);
}

#[test]
fn matvec_rejects_wrong_shapes() {
    let gpu = common::default_gpu();
    let matrix = GpuMatrix::from_f32(&gpu, "w", 3, 5, &[0.0; 15]).unwrap();
    let x = upload(&gpu, &[0.0; 4]);
    let y = upload(&gpu, &[0.0; 3]);
    let mut rec = Recorder::new(&gpu);
    let error = kernels::matvec(&mut rec, "L0.att.key", &matrix, &x, &y, Epilogue::PLAIN).unwrap_err();
    assert!(error.to_string().contains("L0.att.key: `x` has 4 elements, expected 5"), "{error}");
}

#[test]
fn layer_norm_matches_reference() {
    let gpu = common::default_gpu();
    for (seed, len) in [(1u64, 1usize), (2, 33), (3, 64), (4, 260), (5, 1025)] {
        let mut rng = Rng::new(seed);
        // An offset mean checks the two-pass variance.
        let x: Vec<f32> = rng.vec(len, -2.0, 2.0).into_iter().map(|v| v + 30.0).collect();
        let (weight, bias) = (rng.vec(len, 0.5, 1.5), rng.vec(len, -0.5, 0.5));
        let norm = upload(&gpu, &[weight.clone(), bias.clone()].concat());
        let (x_gpu, out) = (upload(&gpu, &x), GpuVector::zeros(&gpu, "out", len).unwrap());
        run(&gpu, |rec| kernels::layer_norm(rec, "ln", &x_gpu, &norm, &out));
        let expected = kernels::layer_norm_ref(&x, &weight, &bias);
        assert_close(&format!("layer_norm len={len} seed={seed}"), &out.read(&gpu).unwrap(), &expected, 1e-4);
    }
}

#[test]
fn token_shift_matches_reference() {
    let gpu = common::default_gpu();
    for (seed, len, mixes) in [(1u64, 5usize, 1usize), (2, 64, 6), (3, 129, 6), (4, 200, 2)] {
        for update in [Prev::Update, Prev::Keep] {
            let mut rng = Rng::new(seed);
            let (x, mut prev, mix) =
                (rng.vec(len, -1.0, 1.0), rng.vec(len, -1.0, 1.0), rng.vec(len * mixes, 0.0, 1.0));
            let (x_gpu, prev_gpu, mix_gpu) = (upload(&gpu, &x), upload(&gpu, &prev), upload(&gpu, &mix));
            let (out, stride) = GpuVector::stack(&gpu, "mixed", mixes, len).unwrap();
            run(&gpu, |rec| {
                kernels::token_shift(
                    rec,
                    "shift",
                    (&x_gpu, &prev_gpu),
                    Mixes::Packed(&mix_gpu),
                    &out,
                    stride,
                    update,
                )
            });
            let expected = kernels::token_shift_ref(&x, &mut prev, &mix, update);
            for (m, row) in out.iter().enumerate() {
                let what = format!("token_shift mix {m} len={len} {update:?}");
                assert_close(&what, &row.read(&gpu).unwrap(), &expected[m], 1e-6);
            }
            assert_close("token_shift prev", &prev_gpu.read(&gpu).unwrap(), &prev, 0.0);
        }
    }
}

/// Mixes computed on the GPU arrive as rows of a stack rather than packed weights.
#[test]
fn token_shift_reads_mixes_from_rows() {
    let gpu = common::default_gpu();
    let (len, mixes) = (70, 5);
    let mut rng = Rng::new(9);
    let (x, mut prev, mix) =
        (rng.vec(len, -1.0, 1.0), rng.vec(len, -1.0, 1.0), rng.vec(len * mixes, -0.5, 1.5));
    let (x_gpu, prev_gpu) = (upload(&gpu, &x), upload(&gpu, &prev));
    let (mix_rows, mix_stride) = GpuVector::stack(&gpu, "mix rows", mixes, len).unwrap();
    for (row, values) in mix_rows.iter().zip(mix.chunks_exact(len)) {
        row.write(&gpu, values).unwrap();
    }
    let (out, stride) = GpuVector::stack(&gpu, "mixed", mixes, len).unwrap();
    let rows = Mixes::Rows(&mix_rows, mix_stride);
    run(&gpu, |rec| {
        kernels::token_shift(rec, "shift", (&x_gpu, &prev_gpu), rows, &out, stride, Prev::Update)
    });
    let expected = kernels::token_shift_ref(&x, &mut prev, &mix, Prev::Update);
    for (m, row) in out.iter().enumerate() {
        assert_close(&format!("token_shift rows, mix {m}"), &row.read(&gpu).unwrap(), &expected[m], 1e-6);
    }
}

#[test]
fn lerp_matches_reference() {
    let gpu = common::default_gpu();
    let mut rng = Rng::new(7);
    let len = 131;
    let (a, b, t) = (rng.vec(len, -1.0, 1.0), rng.vec(len, -1.0, 1.0), rng.vec(len, 0.0, 1.0));
    let out = GpuVector::zeros(&gpu, "out", len).unwrap();
    let (a_gpu, b_gpu, t_gpu) = (upload(&gpu, &a), upload(&gpu, &b), upload(&gpu, &t));
    run(&gpu, |rec| kernels::lerp(rec, "lerp", &a_gpu, &b_gpu, &t_gpu, &out));
    assert_close("lerp", &out.read(&gpu).unwrap(), &kernels::lerp_ref(&a, &b, &t), 1e-6);
}

/// Head shapes: a single head, sizes that are not powers of two, and more channels than a workgroup.
const HEAD_SHAPES: [(usize, usize); 5] = [(1, 8), (3, 5), (4, 16), (2, 64), (3, 96)];

#[test]
fn wkv7_keys_matches_reference() {
    let gpu = common::default_gpu();
    for (seed, &(heads, n)) in HEAD_SHAPES.iter().enumerate() {
        let mut rng = Rng::new(seed as u64);
        let c = heads * n;
        let (k, a, k_k, k_a) =
            (rng.vec(c, -2.0, 2.0), rng.vec(c, 0.0, 1.0), rng.vec(c, 0.5, 1.5), rng.vec(c, 0.0, 1.0));
        let (kk, k_out) =
            (GpuVector::zeros(&gpu, "kk", c).unwrap(), GpuVector::zeros(&gpu, "k_out", c).unwrap());
        let inputs = [&k, &a, &k_k, &k_a].map(|v| upload(&gpu, v));
        run(&gpu, |rec| {
            let keys = KeyInputs { k: &inputs[0], a: &inputs[1], k_k: &inputs[2], k_a: &inputs[3] };
            kernels::wkv7_keys(rec, "keys", heads, keys, &kk, &k_out)
        });
        let (kk_ref, k_out_ref) = kernels::wkv7_keys_ref(heads, &k, &a, &k_k, &k_a);
        let what = format!("wkv7_keys {heads}x{n}");
        assert_close(&format!("{what} kk"), &kk.read(&gpu).unwrap(), &kk_ref, 1e-5);
        assert_close(&format!("{what} k_out"), &k_out.read(&gpu).unwrap(), &k_out_ref, 1e-6);
    }
}

/// Several steps in a row, so the state the kernel wrote is what it reads next.
#[test]
fn wkv7_matches_reference_over_steps() {
    let gpu = common::default_gpu();
    for (seed, &(heads, n)) in HEAD_SHAPES.iter().enumerate() {
        let mut rng = Rng::new(100 + seed as u64);
        let c = heads * n;
        let mut state = rng.vec(c * n, -1.0, 1.0);
        let state_gpu = upload(&gpu, &state);
        for step in 0..4 {
            let r = rng.vec(c, -1.0, 1.0);
            // The real domain: w = exp(−e^−0.5·σ(x)) ∈ (0.545, 1), a ∈ (0, 1), kk unit-norm per head.
            let w: Vec<f32> = rng
                .vec(c, -6.0, 6.0)
                .iter()
                .map(|&x| Activation::Decay7.apply(f64::from(x)) as f32)
                .collect();
            let (k, v, a) = (rng.vec(c, -1.0, 1.0), rng.vec(c, -1.0, 1.0), rng.vec(c, 0.0, 1.0));
            let (kk, _) =
                kernels::wkv7_keys_ref(heads, &rng.vec(c, -1.0, 1.0), &a, &vec![1.0; c], &vec![0.0; c]);
            let inputs = [&r, &w, &k, &v, &kk, &a].map(|x| upload(&gpu, x));
            let y = GpuVector::zeros(&gpu, "y", c).unwrap();
            run(&gpu, |rec| {
                let [r, w, k, v, kk, a] = &inputs;
                kernels::wkv7(rec, "wkv7", heads, &state_gpu, Wkv7Inputs { r, w, k, v, kk, a }, &y)
            });
            let y_ref = kernels::wkv7_ref(heads, &mut state, &r, &w, &k, &v, &kk, &a);
            let what = format!("wkv7 {heads}x{n} step {step}");
            assert_close(&format!("{what} y"), &y.read(&gpu).unwrap(), &y_ref, 1e-5);
            assert_close(&format!("{what} state"), &state_gpu.read(&gpu).unwrap(), &state, 1e-5);
        }
    }
}

#[test]
fn group_norm_bonus_gate_matches_reference() {
    let gpu = common::default_gpu();
    for (seed, &(heads, n)) in HEAD_SHAPES.iter().enumerate() {
        let mut rng = Rng::new(200 + seed as u64);
        let c = heads * n;
        let y = rng.vec(c, -3.0, 3.0);
        let (weight, bias) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5));
        let [r, k, v, r_k, g] = [(); 5].map(|_| rng.vec(c, -1.0, 1.0));
        let norm = upload(&gpu, &[weight.clone(), bias.clone()].concat());
        let y_gpu = upload(&gpu, &y);
        let operands = [&r, &k, &v, &r_k, &g].map(|x| upload(&gpu, x));
        let out = GpuVector::zeros(&gpu, "out", c).unwrap();
        run(&gpu, |rec| {
            let [r, k, v, r_k, g] = &operands;
            kernels::group_norm_bonus_gate(
                rec,
                "gn",
                heads,
                &y_gpu,
                &norm,
                BonusGate { r, k, v, r_k, g },
                &out,
            )
        });
        let expected = kernels::group_norm_bonus_gate_ref(heads, &y, (&weight, &bias), &r, &k, &v, &r_k, &g);
        assert_close(&format!("group_norm {heads}x{n}"), &out.read(&gpu).unwrap(), &expected, 1e-4);
    }
}

/// RWKV-4's log-space recurrence from its real starting point (pp = −1e30), over several tokens,
/// with keys large enough that a naive exp would overflow f32.
#[test]
fn wkv4_matches_reference_over_steps() {
    let gpu = common::default_gpu();
    for (seed, len) in [(1u64, 1usize), (2, 63), (3, 130)] {
        let mut rng = Rng::new(300 + seed);
        let mut state = [vec![0.0; 2 * len], vec![kernels::WKV4_INITIAL_PP; len]].concat();
        let state_gpu = upload(&gpu, &state);
        let w: Vec<f32> = rng.vec(len, -5.0, 1.0).iter().map(|d| -d.exp()).collect();
        let u = rng.vec(len, -1.0, 1.0);
        for step in 0..5 {
            let r: Vec<f32> = rng
                .vec(len, -4.0, 4.0)
                .iter()
                .map(|&x| Activation::Sigmoid.apply(f64::from(x)) as f32)
                .collect();
            let (k, v) = (rng.vec(len, -60.0, 100.0), rng.vec(len, -2.0, 2.0));
            let inputs = [&r, &k, &v, &w, &u].map(|x| upload(&gpu, x));
            let y = GpuVector::zeros(&gpu, "y", len).unwrap();
            run(&gpu, |rec| {
                let [r, k, v, w, u] = &inputs;
                kernels::wkv4(rec, "wkv4", &state_gpu, Wkv4Inputs { r, k, v, w, u }, &y)
            });
            let y_ref = kernels::wkv4_ref(&mut state, &r, &k, &v, &w, &u);
            let what = format!("wkv4 len={len} step {step}");
            assert_close(&format!("{what} y"), &y.read(&gpu).unwrap(), &y_ref, 1e-5);
            let found = state_gpu.read(&gpu).unwrap();
            // aa and bb relative to their scale; pp (a max of logs) exactly enough.
            assert_close(&format!("{what} aa, bb"), &found[..2 * len], &state[..2 * len], 1e-5);
            assert_close(&format!("{what} pp"), &found[2 * len..], &state[2 * len..], 1e-6);
        }
    }
}

#[test]
fn wkv5_matches_reference_over_steps() {
    let gpu = common::default_gpu();
    for (seed, &(heads, n)) in HEAD_SHAPES.iter().enumerate() {
        let mut rng = Rng::new(400 + seed as u64);
        let c = heads * n;
        let mut state = rng.vec(c * n, -1.0, 1.0);
        let state_gpu = upload(&gpu, &state);
        let w: Vec<f32> =
            rng.vec(c, -3.0, 1.0).iter().map(|&x| Activation::Decay6.apply(f64::from(x)) as f32).collect();
        let u = rng.vec(c, -1.0, 1.0);
        for step in 0..4 {
            let [r, k, v] = [(); 3].map(|_| rng.vec(c, -1.0, 1.0));
            let inputs = [&r, &k, &v, &w, &u].map(|x| upload(&gpu, x));
            let y = GpuVector::zeros(&gpu, "y", c).unwrap();
            run(&gpu, |rec| {
                let [r, k, v, w, u] = &inputs;
                kernels::wkv5(rec, "wkv5", heads, &state_gpu, Wkv5Inputs { r, k, v, w, u }, &y)
            });
            let y_ref = kernels::wkv5_ref(heads, &mut state, &r, &k, &v, &w, &u);
            let what = format!("wkv5 {heads}x{n} step {step}");
            assert_close(&format!("{what} y"), &y.read(&gpu).unwrap(), &y_ref, 1e-5);
            assert_close(&format!("{what} state"), &state_gpu.read(&gpu).unwrap(), &state, 1e-5);
        }
    }
}

#[test]
fn group_norm_with_and_without_gate_matches_reference() {
    let gpu = common::default_gpu();
    for (seed, &(heads, n)) in HEAD_SHAPES.iter().enumerate() {
        for gated in [false, true] {
            let mut rng = Rng::new(500 + seed as u64);
            let c = heads * n;
            let y = rng.vec(c, -3.0, 3.0);
            let (weight, bias, gate) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5), rng.vec(c, -1.0, 1.0));
            let norm = upload(&gpu, &[weight.clone(), bias.clone()].concat());
            let (y_gpu, gate_gpu) = (upload(&gpu, &y), upload(&gpu, &gate));
            let out = GpuVector::zeros(&gpu, "out", c).unwrap();
            let gate_arg = gated.then_some(&gate_gpu);
            run(&gpu, |rec| kernels::group_norm(rec, "gn", heads, &y_gpu, &norm, gate_arg, &out));
            let expected = kernels::group_norm_ref(heads, &y, (&weight, &bias), gated.then_some(&gate[..]));
            assert_close(
                &format!("group_norm {heads}x{n} gated={gated}"),
                &out.read(&gpu).unwrap(),
                &expected,
                1e-4,
            );
        }
    }
}
