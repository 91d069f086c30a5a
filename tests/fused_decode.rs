//! The fused kernels of a one-token step against their CPU references on both of the CI's
//! drivers, and whole models decoded with and without them.

mod common;

use std::sync::Arc;

use common::{assert_close, upload, Rng};
use rwkv_wgpu::gpu::{Gpu, GpuMatrix, GpuOptions, GpuTensor};
use rwkv_wgpu::kernels::{
    self, Activation, Epilogue, NormInput, OperandRef, Prev, Recorder, SequenceEntry, Sequences,
    ShiftedInput, ShiftedSegment, Wkv7OneInputs,
};
use rwkv_wgpu::model::source::{DType, TensorData, TensorSource};
use rwkv_wgpu::model::synthetic::{Shape, SyntheticV7};
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::quant::{MatrixFormat, PackedMatrix};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Logits, Session};

const SLOTS: usize = 3;
const SLOT: usize = 2;

/// Every Vulkan variant (f16 or packed weights, both row mappings) and the GL backend.
fn gpus() -> Vec<Gpu> {
    let mut gpus = common::variants();
    gpus.push(common::gl_gpu());
    gpus
}

/// Runs a step of one token in slot `SLOT`.
fn run(gpu: &Gpu, record: impl FnOnce(&mut Recorder) -> rwkv_wgpu::Result<()>) {
    let sequences = Sequences::new(gpu, 1).unwrap();
    sequences.write(gpu, &[SequenceEntry { slot: SLOT, first_row: 0, rows: 1 }]).unwrap();
    let mut rec = Recorder::with_sequences(gpu, &sequences);
    record(&mut rec).expect("recording failed");
    rec.finish().run(gpu);
    gpu.wait().expect("GPU error");
}

/// A random f16 matrix on the GPU and the values it holds.
fn matrix(gpu: &Gpu, rng: &mut Rng, rows: usize, cols: usize) -> (GpuMatrix, Vec<f32>) {
    let packed = PackedMatrix::pack(MatrixFormat::F16, rows, cols, &rng.vec(rows * cols, -0.5, 0.5)).unwrap();
    (GpuMatrix::upload(gpu, "w", &packed).unwrap(), packed.unpack())
}

fn slot_row(values: &[f32], cols: usize, slot: usize) -> &[f32] {
    &values[slot * cols..(slot + 1) * cols]
}

/// The product whose prologue normalizes and shifts its input gives what layer norm, token
/// shift and the product give one after another; it stores the normalized input and leaves
/// the state alone, and a later product that remembers it stores it in the sequence's slot only.
#[test]
fn shifted_product_then_remembering_product_match_their_references() {
    for gpu in gpus() {
        for c in [96usize, 70] {
            let mut rng = Rng::new(c as u64);
            let x = rng.vec(c, -2.0, 3.0);
            let norm = [rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5)].concat();
            let prev = rng.vec(SLOTS * c, -1.0, 1.0);
            let mixes = rng.vec(3 * c, 0.0, 1.0);
            let (x_gpu, norm_gpu, prev_gpu, mixes_gpu) = (
                upload(&gpu, c, &x),
                upload(&gpu, c, &norm),
                upload(&gpu, c, &prev),
                upload(&gpu, c, &mixes),
            );
            let normed_gpu = GpuTensor::zeros(&gpu, "normed", 1, c).unwrap();
            let (w, w_values) = matrix(&gpu, &mut rng, 40 + 24, c);
            let (out, _) = GpuTensor::stack(&gpu, "out", 2, 1, 40).unwrap();
            let outputs = [out[0].clone(), GpuTensor { cols: 24, ..out[1].clone() }];
            let (w_remember, w_remember_values) = matrix(&gpu, &mut rng, 8, 40);
            let remembered_out = GpuTensor::zeros(&gpu, "y", 1, 8).unwrap();

            let input = NormInput { x: &x_gpu, norm: &norm_gpu, normed: &normed_gpu };
            let shifted = ShiftedInput { input, prev: &prev_gpu, mixes: &mixes_gpu };
            let segments = [
                ShiftedSegment { mix: 2, y: &outputs[0], activation: Activation::Tanh },
                ShiftedSegment { mix: 0, y: &outputs[1], activation: Activation::None },
            ];
            run(&gpu, |rec| kernels::linear_shifted(rec, "shifted", &w, shifted, &segments).map(|_| ()));
            let name = gpu.describe();
            let n = kernels::layer_norm_ref(&x, &norm[..c], &norm[c..]);
            assert_close(&format!("{name}: normed, C={c}"), &normed_gpu.read(&gpu).unwrap(), &n, 1e-5);
            assert_eq!(prev_gpu.read(&gpu).unwrap(), prev, "{name}: the shifted product changed the state");
            let mut old = slot_row(&prev, c, SLOT).to_vec();
            let shifted_ref = kernels::token_shift_ref(&n, &mut old, &mixes, Prev::Keep);
            let (rows0, rows1) = w_values.split_at(40 * c);
            let y0 = kernels::linear_ref(rows0, c, &shifted_ref[2], OperandRef::None, Activation::Tanh, None);
            let y1 = kernels::linear_ref(rows1, c, &shifted_ref[0], OperandRef::None, Activation::None, None);
            assert_close(&format!("{name}: segment 0, C={c}"), &outputs[0].read(&gpu).unwrap(), &y0, 1e-4);
            assert_close(&format!("{name}: segment 1, C={c}"), &outputs[1].read(&gpu).unwrap(), &y1, 1e-4);

            let remember = kernels::Remember { normed: &normed_gpu, prev: &prev_gpu };
            let epilogue = Epilogue::PLAIN.remembering(remember);
            run(&gpu, |rec| {
                kernels::linear(rec, "remembering", &w_remember, &outputs[0], &remembered_out, epilogue)
            });
            let y =
                kernels::linear_ref(&w_remember_values, 40, &y0, OperandRef::None, Activation::None, None);
            assert_close(
                &format!("{name}: remembering product"),
                &remembered_out.read(&gpu).unwrap(),
                &y,
                1e-4,
            );
            let state = prev_gpu.read(&gpu).unwrap();
            for slot in 0..SLOTS {
                let expected =
                    if slot == SLOT { &normed_gpu.read(&gpu).unwrap()[..] } else { slot_row(&prev, c, slot) };
                assert_eq!(slot_row(&state, c, slot), expected, "{name}: slot {slot} after remembering");
            }
        }
    }
}

/// RWKV-7's one-token kernel gives what the LoRA output products, key shaping, the recurrence
/// and group norm with bonus and gate give, in layer 0 (no value residual) and later layers,
/// for heads of 64 and 16 channels, LoRA matrices in f16, f32 and bf16; the state of other slots
/// is untouched.
#[test]
fn one_token_time_mix_matches_its_kernels_references() {
    for gpu in [common::default_gpu(), common::gl_gpu()] {
        let cases = [
            (2usize, 64usize, true, MatrixFormat::F16),
            (4, 16, false, MatrixFormat::F32),
            (3, 16, true, MatrixFormat::Bf16),
        ];
        for (heads, n, value_residual, format) in cases {
            let c = heads * n;
            let ranks = [8usize, 12, 4, 16];
            let mut rng = Rng::new((c + heads) as u64);
            let values =
                [rng.vec(c, -1.0, 1.0), rng.vec(c, -1.0, 1.0), rng.vec(c, -1.0, 1.0), rng.vec(c, -1.0, 1.0)];
            let hidden: Vec<Vec<f32>> = ranks.iter().map(|&r| rng.vec(r, -1.0, 1.0)).collect();
            let lora: Vec<PackedMatrix> = ranks
                .iter()
                .map(|&r| PackedMatrix::pack(format, c, r, &rng.vec(c * r, -0.5, 0.5)).unwrap())
                .collect();
            let channel = [
                rng.vec(c, 0.5, 1.5),
                rng.vec(c, 0.0, 1.0),
                rng.vec(c, -1.0, 1.0),
                rng.vec(c, 0.5, 1.5),
                rng.vec(c, -0.5, 0.5),
                rng.vec(c, -1.0, 1.0),
                rng.vec(c, -1.0, 1.0),
                rng.vec(c, -1.0, 1.0),
            ];
            let state = rng.vec(SLOTS * c * n, -1.0, 1.0);
            let normed = rng.vec(c, -1.0, 1.0);
            let prev = rng.vec(SLOTS * c, -1.0, 1.0);

            let (values_gpu, _) = GpuTensor::stack(&gpu, "values", 4, 1, c).unwrap();
            for (entry, data) in values_gpu.iter().zip(&values) {
                entry.write(&gpu, data).unwrap();
            }
            let (hidden_gpu, _) = GpuTensor::stack(&gpu, "hidden", 4, 1, 16).unwrap();
            let hidden_gpu: Vec<GpuTensor> = hidden_gpu
                .iter()
                .zip(ranks)
                .map(|(entry, r)| GpuTensor { cols: r, ..entry.clone() })
                .collect();
            for (entry, data) in hidden_gpu.iter().zip(&hidden) {
                entry.write(&gpu, data).unwrap();
            }
            let stored: Vec<PackedMatrix> = lora
                .iter()
                .enumerate()
                .filter(|&(m, _)| value_residual || m != 2)
                .map(|(_, p)| p.clone())
                .collect();
            let mut together = GpuMatrix::upload_together(&gpu, "lora", &stored).unwrap().into_iter();
            let mut lora_gpu: [Option<GpuMatrix>; 4] = Default::default();
            for (m, slot) in lora_gpu.iter_mut().enumerate() {
                if value_residual || m != 2 {
                    *slot = together.next();
                }
            }
            let channel_gpu = upload(&gpu, c, &channel.concat());
            let state_gpu = upload(&gpu, c * n, &state);
            let (normed_gpu, prev_gpu) = (upload(&gpu, c, &normed), upload(&gpu, c, &prev));
            let out_gpu = GpuTensor::zeros(&gpu, "out", 1, c).unwrap();
            let inputs = Wkv7OneInputs {
                values: [&values_gpu[0], &values_gpu[1], &values_gpu[2], &values_gpu[3]],
                hidden: [&hidden_gpu[0], &hidden_gpu[1], &hidden_gpu[2], &hidden_gpu[3]],
                lora: [
                    lora_gpu[0].as_ref(),
                    lora_gpu[1].as_ref(),
                    lora_gpu[2].as_ref(),
                    lora_gpu[3].as_ref(),
                ],
                channel: &channel_gpu,
            };
            let remember = kernels::Remember { normed: &normed_gpu, prev: &prev_gpu };
            run(&gpu, |rec| {
                kernels::wkv7_one(rec, "wkv7_one", heads, (inputs, &state_gpu), &out_gpu, remember)
            });

            let lora_out = |m: usize, bias: Option<&[f32]>, activation| {
                let operand = bias.map_or(OperandRef::None, OperandRef::Bias);
                kernels::linear_ref(&lora[m].unpack(), ranks[m], &hidden[m], operand, activation, None)
            };
            let w = lora_out(0, Some(&channel[5]), Activation::Decay7);
            let a = lora_out(1, Some(&channel[6]), Activation::Sigmoid);
            let g = lora_out(3, None, Activation::None);
            let [r, k, v_own, v_first] = &values;
            let v: Vec<f32> = if value_residual {
                let pull = lora_out(2, Some(&channel[7]), Activation::Sigmoid);
                (0..c).map(|i| v_own[i] + (v_first[i] - v_own[i]) * pull[i]).collect()
            } else {
                v_first.clone()
            };
            let (kk, k_written) = kernels::wkv7_keys_ref(heads, k, &a, &channel[0], &channel[1]);
            let mut expected_state = state.clone();
            let slot_state = &mut expected_state[SLOT * c * n..(SLOT + 1) * c * n];
            let y = kernels::wkv7_ref(heads, slot_state, r, &w, &k_written, &v, &kk, &a);
            let ln_x = (&channel[3][..], &channel[4][..]);
            let out = kernels::group_norm_bonus_gate_ref(heads, &y, ln_x, r, &k_written, &v, &channel[2], &g);

            let name =
                format!("{}: {heads}×{n}, value residual {value_residual}, {format:?}", gpu.describe());
            assert_close(&format!("{name}: out"), &out_gpu.read(&gpu).unwrap(), &out, 1e-4);
            assert_close(&format!("{name}: state"), &state_gpu.read(&gpu).unwrap(), &expected_state, 1e-5);
            let mut expected_prev = prev.clone();
            expected_prev[SLOT * c..(SLOT + 1) * c].copy_from_slice(&normed);
            assert_eq!(prev_gpu.read(&gpu).unwrap(), expected_prev, "{name}: remembered input");
        }
    }
}

/// RWKV-5/6's one-token kernel gives what the recurrence and the group norm (with and without
/// the gate) give one after another, for heads of 64, 32 and 16 channels, two sequences in slots
/// 2 and 0 with their decay as one weight (RWKV-5) or a row each (RWKV-6); slot 1 is untouched.
#[test]
fn one_token_recurrence_with_group_norm_matches_its_references() {
    const SLOTS_RUN: [usize; 2] = [SLOT, 0];
    for gpu in gpus() {
        for (heads, n, gated, decay_per_row) in
            [(2usize, 64usize, true, false), (3, 32, false, true), (5, 16, true, true)]
        {
            let c = heads * n;
            let mut rng = Rng::new((c + n) as u64);
            let [r, k, v, g] = [(); 4].map(|_| rng.vec(2 * c, -1.0, 1.0));
            let w = rng.vec(if decay_per_row { 2 * c } else { c }, 0.2, 0.99);
            let u = rng.vec(c, -0.5, 0.5);
            let norm = [rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5)].concat();
            let state = rng.vec(SLOTS * c * n, -1.0, 1.0);
            let [r_gpu, k_gpu, v_gpu, g_gpu, w_gpu, u_gpu, norm_gpu] =
                [&r, &k, &v, &g, &w, &u, &norm].map(|values| upload(&gpu, c, values));
            let state_gpu = upload(&gpu, c * n, &state);
            let out = GpuTensor::zeros(&gpu, "out", 2, c).unwrap();
            let sequences = Sequences::new(&gpu, 2).unwrap();
            let entries =
                SLOTS_RUN.map(|slot| SequenceEntry { slot, first_row: usize::from(slot == 0), rows: 1 });
            sequences.write(&gpu, &entries).unwrap();
            let mut rec = Recorder::with_sequences(&gpu, &sequences);
            let inputs = kernels::Wkv5Inputs { r: &r_gpu, k: &k_gpu, v: &v_gpu, w: &w_gpu, u: &u_gpu };
            let norm_gate = kernels::GroupNormGate { norm: &norm_gpu, gate: gated.then_some(&g_gpu) };
            kernels::wkv5_one(&mut rec, "wkv5_one", heads, (&state_gpu, inputs), norm_gate, &out).unwrap();
            rec.finish().run(&gpu);
            gpu.wait().unwrap();

            let name = format!("{}, {heads} heads of {n}, gated {gated}", gpu.describe());
            let (got, got_state) = (out.read(&gpu).unwrap(), state_gpu.read(&gpu).unwrap());
            let mut expected_state = state.clone();
            let (weight, bias) = norm.split_at(c);
            for (row, slot) in SLOTS_RUN.into_iter().enumerate() {
                let one = |values: &[f32]| values[row * c..(row + 1) * c].to_vec();
                let decay = if decay_per_row { one(&w) } else { w.clone() };
                let slot_state = &mut expected_state[slot * c * n..(slot + 1) * c * n];
                let y = kernels::wkv5_ref(heads, slot_state, &one(&r), &one(&k), &one(&v), &decay, &u);
                let gate = one(&g);
                let expected = kernels::group_norm_ref(heads, &y, (weight, bias), gated.then_some(&gate[..]));
                assert_close(&format!("{name}: row {row}"), &got[row * c..(row + 1) * c], &expected, 1e-4);
            }
            assert_close(&format!("{name}: state"), &got_state, &expected_state, 1e-5);
            let untouched = c * n..2 * c * n;
            assert_eq!(got_state[untouched.clone()], state[untouched], "{name}: slot 1 changed");
        }
    }
}

/// A model decoded token by token gives the same logits with the fused kernels as without, in
/// a slot other than the first, on every variant; a layer costs 6 dispatches instead of 14.
#[test]
fn fused_decode_matches_the_unfused_kernels_in_6_dispatches_per_layer() {
    let source = SyntheticV7::new(Shape::rwkv7(3, 128, 256, 64), 5);
    let tokens = [5u32, 17, 3, 250, 9, 9, 41];
    for options in [
        common::default_options(),
        GpuOptions { backend: Some(rwkv_wgpu::gpu::Backend::Gl), ..GpuOptions::default() },
    ] {
        let run = |fused: bool| {
            let gpu =
                Arc::new(Gpu::new(&GpuOptions { fused_decode: Some(fused), ..options.clone() }).unwrap());
            let model = Model::from_source(gpu, &source, &LoadOptions::default()).unwrap();
            let engine = Engine::new(Arc::new(model), EngineOptions { slots: 2, chunk: 8 }).unwrap();
            let per_token = engine.prepare(1, Logits::Last).unwrap();
            let _first = Session::new(&engine).unwrap();
            let mut session = Session::new(&engine).unwrap();
            assert_eq!(session.slot(), 1);
            let logits: Vec<Vec<f32>> = tokens.iter().map(|&t| session.feed(&[t]).unwrap()).collect();
            (logits, per_token)
        };
        let ((fused, fused_dispatches), (unfused, unfused_dispatches)) = (run(true), run(false));
        for (step, (f, u)) in fused.iter().zip(&unfused).enumerate() {
            assert_close(&format!("{options:?}: logits after token {step}"), f, u, 1e-4);
        }
        // 3 layers of 6 instead of 13 (layer 0, without a value residual), 14 and 14.
        assert_eq!(unfused_dispatches - fused_dispatches, (13 + 14 + 14) - 3 * 6, "{options:?}");
    }
}

/// A fixture's model with only its first `layers` blocks: the difference in dispatches between
/// it and the whole model is what the rest of the layers cost.
struct FirstLayers {
    source: Box<dyn TensorSource>,
    layers: usize,
}

impl FirstLayers {
    fn kept(&self, name: &str) -> bool {
        let block = name.strip_prefix("blocks.").and_then(|rest| rest.split('.').next());
        block.and_then(|n| n.parse::<usize>().ok()).is_none_or(|n| n < self.layers)
    }
}

impl TensorSource for FirstLayers {
    fn format(&self) -> &'static str {
        self.source.format()
    }
    fn names(&self) -> Vec<String> {
        self.source.names().into_iter().filter(|name| self.kept(name)).collect()
    }
    fn meta(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        self.kept(name).then(|| self.source.meta(name)).flatten()
    }
    fn tensor(&self, name: &str) -> rwkv_wgpu::Result<TensorData<'_>> {
        self.source.tensor(name)
    }
}

/// The decode budget of issue 17 for RWKV-4 to 6: a layer's products that read the same input
/// are stacked and run as one (receptance, key, value and gate; the channel mix's key and
/// receptance; RWKV-6's five token-shift LoRA outputs), and RWKV-5/6's recurrence runs with its
/// group norm. Counted on the 2-layer fixtures as the difference from their first layer alone,
/// with the fused one-token kernels GPUs run.
#[test]
fn decoded_rwkv4_to_6_layers_run_their_products_stacked() {
    let gpu =
        Arc::new(Gpu::new(&GpuOptions { fused_decode: Some(true), ..common::default_options() }).unwrap());
    // RWKV-4 and 5: r/k/v(/g), recurrence (with the group norm), output; the channel mix's key
    // and receptance, value. RWKV-6 adds the token-shift LoRA (its input and its outputs) and
    // the decay LoRA (two products); its projections shift their input themselves.
    for (version, budget) in [("v4", 5), ("v5.0", 5), ("v5.1", 5), ("v5.2", 5), ("v6", 9)] {
        let path = common::fixture_dir(version, "A").join("model.pth");
        let dispatches = |layers: usize| {
            let source = FirstLayers { source: rwkv_wgpu::model::source::open(&path).unwrap(), layers };
            let model = Model::from_source(gpu.clone(), &source, &LoadOptions::default()).unwrap();
            assert_eq!(model.config.layers, layers, "{version}");
            let engine = Engine::new(Arc::new(model), EngineOptions { slots: 1, chunk: 8 }).unwrap();
            engine.prepare(1, Logits::Last).unwrap()
        };
        let per_layer = dispatches(2) - dispatches(1);
        assert_eq!(per_layer, budget, "{version}: a decoded layer takes {per_layer} dispatches");
    }
}
