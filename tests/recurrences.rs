//! Kernels that walk sequences (token shift, the WKV recurrences, gathering last rows) against
//! their CPU references: several sequences of different lengths in one step, each in its own
//! state slot, while slots outside the step stay untouched.

mod common;

use common::{assert_close, upload, Rng};
use rwkv_wgpu::gpu::{Backend, Gpu, GpuOptions, GpuTensor};
use rwkv_wgpu::kernels::{
    self, Activation, Mixes, Prev, Recorder, SequenceEntry, Sequences, Wkv4Inputs, Wkv5Inputs, Wkv7Inputs,
};

const SLOTS: usize = 4;

/// Steps of one or several sequences: (slot, rows). Slot order differs from step order on purpose.
/// The last walks sequences longer than one dispatch covers (`kernels::windows`): llvmpipe stops
/// a kernel's loops after 65535 iterations in all, which a 64-wide head reached at ~490 tokens.
const LAYOUTS: [&[(usize, usize)]; 5] =
    [&[(0, 1)], &[(2, 5)], &[(1, 3), (0, 1), (3, 7)], &[(3, 1), (1, 1)], &[(1, 1100), (0, 3), (2, 700)]];

/// Both of the CI's drivers: lavapipe (Vulkan) and llvmpipe through wgpu's GL backend.
fn backends() -> [Gpu; 2] {
    [common::default_gpu(), common::gl_gpu()]
}

fn entries(layout: &[(usize, usize)]) -> Vec<SequenceEntry> {
    let mut first_row = 0;
    layout
        .iter()
        .map(|&(slot, rows)| {
            let entry = SequenceEntry { slot, first_row, rows };
            first_row += rows;
            entry
        })
        .collect()
}

fn run(gpu: &Gpu, entries: &[SequenceEntry], record: impl FnOnce(&mut Recorder) -> rwkv_wgpu::Result<()>) {
    let sequences = Sequences::new(gpu, entries.len()).unwrap();
    sequences.write(gpu, entries).unwrap();
    let mut rec = Recorder::with_sequences(gpu, &sequences);
    record(&mut rec).expect("recording failed");
    rec.finish().run(gpu);
    gpu.wait().expect("GPU error");
}

/// Rows `entry` owns in a row-major [rows, width] array.
fn rows_of<'a>(values: &'a [f32], entry: &SequenceEntry, width: usize) -> &'a [f32] {
    &values[entry.first_row * width..(entry.first_row + entry.rows) * width]
}

#[test]
fn token_shift_walks_each_sequence() {
    for gpu in backends() {
        for (index, layout) in LAYOUTS.iter().enumerate() {
            for (len, mixes) in [(5usize, 1usize), (64, 6), (129, 2)] {
                for update in [Prev::Update, Prev::Keep] {
                    let entries = entries(layout);
                    let rows: usize = layout.iter().map(|&(_, r)| r).sum();
                    let mut rng = Rng::new((index * 100 + len) as u64);
                    let (x, prev, mix) = (
                        rng.vec(rows * len, -1.0, 1.0),
                        rng.vec(SLOTS * len, -1.0, 1.0),
                        rng.vec(mixes * len, 0.0, 1.0),
                    );
                    let (x_gpu, prev_gpu, mix_gpu) =
                        (upload(&gpu, len, &x), upload(&gpu, len, &prev), upload(&gpu, len, &mix));
                    let (out, stride) = GpuTensor::stack(&gpu, "mixed", mixes, rows, len).unwrap();
                    run(&gpu, &entries, |rec| {
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
                    let mut expected_prev = prev.clone();
                    let found: Vec<Vec<f32>> = out.iter().map(|o| o.read(&gpu).unwrap()).collect();
                    for entry in &entries {
                        let slot_prev = &mut expected_prev[entry.slot * len..(entry.slot + 1) * len];
                        let expected =
                            kernels::token_shift_ref(rows_of(&x, entry, len), slot_prev, &mix, update);
                        for (m, rows) in expected.iter().enumerate() {
                            let what =
                                format!("layout {index} len {len} {update:?} slot {} mix {m}", entry.slot);
                            assert_close(&what, rows_of(&found[m], entry, len), rows, 1e-6);
                        }
                    }
                    assert_close("token_shift prev", &prev_gpu.read(&gpu).unwrap(), &expected_prev, 0.0);
                }
            }
        }
    }
}

/// Layer norm and token shift in one kernel equal the two references one after the other, for
/// every layout of sequences, on both backends: the mixes, the normalized rows and the state.
#[test]
fn layer_norm_shift_is_layer_norm_then_token_shift() {
    // Few rows spread each row over column blocks; this many rows use one workgroup per row.
    let many_rows: &[(usize, usize)] = &[(2, 200), (0, 90)];
    for gpu in [common::default_gpu(), common::gl_gpu()] {
        for (index, layout) in LAYOUTS.iter().copied().chain([many_rows]).enumerate() {
            for (len, mixes) in [(5usize, 1usize), (64, 6), (129, 2)] {
                for update in [Prev::Update, Prev::Keep] {
                    let entries = entries(layout);
                    let rows: usize = layout.iter().map(|&(_, r)| r).sum();
                    let mut rng = Rng::new((index * 100 + len) as u64 + 7);
                    // An offset mean checks the two-pass variance.
                    let x: Vec<f32> = rng.vec(rows * len, -1.0, 1.0).iter().map(|v| v * 3.0 + 5.0).collect();
                    let (prev, mix) = (rng.vec(SLOTS * len, -1.0, 1.0), rng.vec(mixes * len, 0.0, 1.0));
                    let (weight, bias) = (rng.vec(len, 0.5, 1.5), rng.vec(len, -0.5, 0.5));
                    let (x_gpu, prev_gpu, mix_gpu) =
                        (upload(&gpu, len, &x), upload(&gpu, len, &prev), upload(&gpu, len, &mix));
                    let norm = upload(&gpu, len, &[weight.clone(), bias.clone()].concat());
                    let normed = GpuTensor::zeros(&gpu, "normed", rows, len).unwrap();
                    let (out, stride) = GpuTensor::stack(&gpu, "mixed", mixes, rows, len).unwrap();
                    run(&gpu, &entries, |rec| {
                        let input = kernels::NormInput { x: &x_gpu, norm: &norm, normed: &normed };
                        kernels::layer_norm_shift(
                            rec,
                            "ln_shift",
                            input,
                            (&prev_gpu, update),
                            &mix_gpu,
                            (&out, stride),
                        )
                    });
                    let expected_normed = kernels::layer_norm_ref(&x, &weight, &bias);
                    let what = format!("{} layout {index} len {len} {update:?}", gpu.describe());
                    assert_close(
                        &format!("{what} normed"),
                        &normed.read(&gpu).unwrap(),
                        &expected_normed,
                        1e-5,
                    );
                    let mut expected_prev = prev.clone();
                    let found: Vec<Vec<f32>> = out.iter().map(|o| o.read(&gpu).unwrap()).collect();
                    for entry in &entries {
                        let slot_prev = &mut expected_prev[entry.slot * len..(entry.slot + 1) * len];
                        let rows = rows_of(&expected_normed, entry, len);
                        let expected = kernels::token_shift_ref(rows, slot_prev, &mix, update);
                        for (m, rows) in expected.iter().enumerate() {
                            let what = format!("{what} slot {} mix {m}", entry.slot);
                            assert_close(&what, rows_of(&found[m], entry, len), rows, 1e-5);
                        }
                    }
                    assert_close(
                        &format!("{what} prev"),
                        &prev_gpu.read(&gpu).unwrap(),
                        &expected_prev,
                        1e-5,
                    );
                }
            }
        }
    }
}

/// RWKV-6's second shift reads mixes computed for every row.
#[test]
fn token_shift_reads_mixes_per_row() {
    let gpu = common::default_gpu();
    let (len, mixes) = (70, 5);
    let entries = entries(LAYOUTS[2]);
    let rows = 11;
    let mut rng = Rng::new(9);
    let (x, prev) = (rng.vec(rows * len, -1.0, 1.0), rng.vec(SLOTS * len, -1.0, 1.0));
    let mix: Vec<Vec<f32>> = (0..mixes).map(|_| rng.vec(rows * len, -0.5, 1.5)).collect();
    let (x_gpu, prev_gpu) = (upload(&gpu, len, &x), upload(&gpu, len, &prev));
    let (mix_rows, mix_stride) = GpuTensor::stack(&gpu, "mix rows", mixes, rows, len).unwrap();
    for (entry, values) in mix_rows.iter().zip(&mix) {
        entry.write(&gpu, values).unwrap();
    }
    let (out, stride) = GpuTensor::stack(&gpu, "mixed", mixes, rows, len).unwrap();
    let per_row = Mixes::Rows(&mix_rows, mix_stride);
    run(&gpu, &entries, |rec| {
        kernels::token_shift(rec, "shift", (&x_gpu, &prev_gpu), per_row, &out, stride, Prev::Update)
    });
    for entry in &entries {
        let previous = &prev[entry.slot * len..(entry.slot + 1) * len];
        let own = rows_of(&x, entry, len);
        for (m, out) in out.iter().enumerate() {
            let found = out.read(&gpu).unwrap();
            let mut expected = Vec::new();
            let mut before = previous.to_vec();
            for (t, row) in own.chunks_exact(len).enumerate() {
                let weights = &mix[m][(entry.first_row + t) * len..(entry.first_row + t + 1) * len];
                expected.extend((0..len).map(|c| row[c] + (before[c] - row[c]) * weights[c]));
                before = row.to_vec();
            }
            assert_close(
                &format!("per-row mix {m}, slot {}", entry.slot),
                rows_of(&found, entry, len),
                &expected,
                1e-6,
            );
        }
    }
}

/// Checks a recurrence: runs it on the GPU for `layout`, then the reference per sequence, and
/// compares outputs and every slot's state (untouched slots must not change).
fn check_recurrence(
    gpu: &Gpu,
    what: &str,
    layout: &[(usize, usize)],
    (width, state_width): (usize, usize),
    state: Vec<f32>,
    record: impl FnOnce(&mut Recorder, &GpuTensor, &GpuTensor) -> rwkv_wgpu::Result<()>,
    reference: impl Fn(&mut [f32], &SequenceEntry) -> Vec<f32>,
) {
    let entries = entries(layout);
    let rows: usize = layout.iter().map(|&(_, r)| r).sum();
    let state_gpu = upload(gpu, state_width, &state);
    let y = GpuTensor::zeros(gpu, "y", rows, width).unwrap();
    run(gpu, &entries, |rec| record(rec, &state_gpu, &y));
    let found_y = y.read(gpu).unwrap();
    let mut expected_state = state;
    for entry in &entries {
        let slot = &mut expected_state[entry.slot * state_width..(entry.slot + 1) * state_width];
        let expected_y = reference(slot, entry);
        assert_close(
            &format!("{what} y, slot {}", entry.slot),
            rows_of(&found_y, entry, width),
            &expected_y,
            1e-5,
        );
    }
    assert_state_close(&format!("{what} state"), &state_gpu.read(gpu).unwrap(), &expected_state, 1e-5);
}

/// RWKV-4's initial pp (−1e30) stands for "no token yet": an untouched slot must keep it exactly,
/// and it must not set the scale the other entries are compared at (it would allow ~1e25).
fn assert_state_close(what: &str, found: &[f32], expected: &[f32], tolerance: f64) {
    let sentinel = |e: f32| f64::from(e).abs() >= 1e29;
    for (i, (&f, &e)) in found.iter().zip(expected).enumerate() {
        if sentinel(e) {
            assert_eq!(f, e, "{what}: element {i} should be untouched");
        }
    }
    let keep = |values: &[f32]| -> Vec<f32> {
        values.iter().zip(expected).filter(|(_, &e)| !sentinel(e)).map(|(&v, _)| v).collect()
    };
    assert_close(what, &keep(found), &keep(expected), tolerance);
}

/// Head shapes: a single head, sizes that are not powers of two, the released 64, and a head
/// larger than the register path takes (96), which works on the state in memory.
const HEAD_SHAPES: [(usize, usize); 5] = [(1, 8), (3, 5), (4, 16), (2, 64), (3, 96)];

#[test]
fn wkv7_matches_reference_for_every_layout() {
    for gpu in backends() {
        for (seed, &(heads, n)) in HEAD_SHAPES.iter().enumerate() {
            for (index, layout) in LAYOUTS.iter().enumerate() {
                check_wkv7(
                    &gpu,
                    (seed * 10 + index) as u64,
                    (heads, n),
                    layout,
                    &format!("layout {index}"),
                    None,
                );
            }
        }
    }
}

/// Prompts long enough for the chunked form: whole chunks, a sequence shorter than one chunk,
/// partial last chunks, and sequences of more chunks than one dispatch of its second kernel
/// carries the state through (`kernels::windows`).
const CHUNKED_LAYOUTS: [&[(usize, usize)]; 4] =
    [&[(2, 64)], &[(1, 70), (3, 33), (0, 40)], &[(0, 3), (2, 101)], &[(1, 1100), (0, 3), (2, 700)]];

/// Head shapes the chunked form takes (sizes in quarters, up to the registers' 64).
const CHUNKED_HEAD_SHAPES: [(usize, usize); 4] = [(1, 8), (3, 12), (4, 16), (2, 64)];

#[test]
fn wkv7_in_chunks_matches_reference() {
    let chunked = |backend| {
        let options = GpuOptions { backend: Some(backend), wkv_chunks: Some(true), ..GpuOptions::default() };
        common::open(&options)
    };
    for gpu in [chunked(Backend::Vulkan), chunked(Backend::Gl)] {
        for (seed, &(heads, n)) in CHUNKED_HEAD_SHAPES.iter().enumerate() {
            for (index, layout) in CHUNKED_LAYOUTS.iter().enumerate() {
                let rows: usize = layout.iter().map(|&(_, r)| r).sum();
                let chunks =
                    GpuTensor::zeros(&gpu, "chunks", rows, kernels::wkv7_chunk_width(heads * n, n)).unwrap();
                let what = format!("chunked layout {index}");
                check_wkv7(&gpu, (500 + seed * 10 + index) as u64, (heads, n), layout, &what, Some(&chunks));
            }
        }
    }
}

/// One case of the RWKV-7 recurrence against its reference: the serial walk, or the chunked
/// form with scratch `chunks`.
fn check_wkv7(
    gpu: &Gpu,
    seed: u64,
    (heads, n): (usize, usize),
    layout: &[(usize, usize)],
    what: &str,
    chunks: Option<&GpuTensor>,
) {
    let c = heads * n;
    let rows: usize = layout.iter().map(|&(_, r)| r).sum();
    let mut rng = Rng::new(seed);
    let r = rng.vec(rows * c, -1.0, 1.0);
    // The real domain: w = exp(−e^−0.5·σ(x)) ∈ (0.545, 1), a ∈ (0, 1), kk unit-norm per head.
    let w: Vec<f32> =
        rng.vec(rows * c, -6.0, 6.0).iter().map(|&x| Activation::Decay7.apply(f64::from(x)) as f32).collect();
    let (k, v, a) = (rng.vec(rows * c, -1.0, 1.0), rng.vec(rows * c, -1.0, 1.0), rng.vec(rows * c, 0.0, 1.0));
    let (kk, _) =
        kernels::wkv7_keys_ref(heads, &rng.vec(rows * c, -1.0, 1.0), &a, &vec![1.0; c], &vec![0.0; c]);
    let state = rng.vec(SLOTS * c * n, -1.0, 1.0);
    let inputs = [&r, &w, &k, &v, &kk, &a].map(|x| upload(gpu, c, x));
    check_recurrence(
        gpu,
        &format!("wkv7 {heads}×{n} {what}"),
        layout,
        (c, c * n),
        state,
        |rec, state, y| {
            let [r, w, k, v, kk, a] = &inputs;
            let inputs = Wkv7Inputs { r, w, k, v, kk, a };
            match chunks {
                Some(chunks) => kernels::wkv7_chunked(rec, "wkv7", heads, state, inputs, y, chunks),
                None => kernels::wkv7(rec, "wkv7", heads, state, inputs, y),
            }
        },
        |slot, entry| {
            let own = |x: &[f32]| rows_of(x, entry, c).to_vec();
            kernels::wkv7_ref(heads, slot, &own(&r), &own(&w), &own(&k), &own(&v), &own(&kk), &own(&a))
        },
    );
}

#[test]
fn wkv5_matches_reference_for_every_layout() {
    for gpu in backends() {
        for (seed, &(heads, n)) in HEAD_SHAPES.iter().enumerate() {
            for (index, layout) in LAYOUTS.iter().enumerate() {
                // RWKV-5's decay is a weight; RWKV-6's is computed per row.
                for per_row in [false, true] {
                    let c = heads * n;
                    let rows: usize = layout.iter().map(|&(_, r)| r).sum();
                    let mut rng = Rng::new((400 + seed * 10 + index) as u64);
                    let decay_rows = if per_row { rows } else { 1 };
                    let w: Vec<f32> = rng
                        .vec(decay_rows * c, -3.0, 1.0)
                        .iter()
                        .map(|&x| Activation::Decay6.apply(f64::from(x)) as f32)
                        .collect();
                    let u = rng.vec(c, -1.0, 1.0);
                    let [r, k, v] = [(); 3].map(|_| rng.vec(rows * c, -1.0, 1.0));
                    let state = rng.vec(SLOTS * c * n, -1.0, 1.0);
                    let inputs = [&r, &k, &v, &w, &u].map(|x| upload(&gpu, c, x));
                    check_recurrence(
                        &gpu,
                        &format!("wkv5 {heads}×{n} layout {index} per_row={per_row}"),
                        layout,
                        (c, c * n),
                        state,
                        |rec, state, y| {
                            let [r, k, v, w, u] = &inputs;
                            kernels::wkv5(rec, "wkv5", heads, state, Wkv5Inputs { r, k, v, w, u }, y)
                        },
                        |slot, entry| {
                            let own = |x: &[f32]| rows_of(x, entry, c).to_vec();
                            let w = if per_row { own(&w) } else { w.clone() };
                            kernels::wkv5_ref(heads, slot, &own(&r), &own(&k), &own(&v), &w, &u)
                        },
                    );
                }
            }
        }
    }
}

/// RWKV-4 from its real starting point (pp = −1e30), with keys large enough that a naive exp
/// would overflow f32.
#[test]
fn wkv4_matches_reference_for_every_layout() {
    for gpu in backends() {
        for (seed, len) in [(1u64, 1usize), (2, 63), (3, 130)] {
            for (index, layout) in LAYOUTS.iter().enumerate() {
                let rows: usize = layout.iter().map(|&(_, r)| r).sum();
                let mut rng = Rng::new(300 + seed * 10 + index as u64);
                let w: Vec<f32> = rng.vec(len, -5.0, 1.0).iter().map(|d| -d.exp()).collect();
                let u = rng.vec(len, -1.0, 1.0);
                let initial = [vec![0.0; 2 * len], vec![kernels::WKV4_INITIAL_PP; len]].concat();
                let mut state = initial.repeat(SLOTS);
                // Slots 1 and 3 start from states that have seen a few tokens (finite pp).
                for slot in [1, 3] {
                    let seen = &mut state[slot * 3 * len..(slot + 1) * 3 * len];
                    let tokens = 3 + slot;
                    let (r, k, v) = (
                        rng.vec(tokens * len, 0.0, 1.0),
                        rng.vec(tokens * len, -60.0, 100.0),
                        rng.vec(tokens * len, -2.0, 2.0),
                    );
                    kernels::wkv4_ref(seen, &r, &k, &v, &w, &u);
                    assert!(seen[2 * len..].iter().all(|pp| pp.abs() < 1e29), "the warm-up leaves pp finite");
                }
                let r: Vec<f32> = rng
                    .vec(rows * len, -4.0, 4.0)
                    .iter()
                    .map(|&x| Activation::Sigmoid.apply(f64::from(x)) as f32)
                    .collect();
                let (k, v) = (rng.vec(rows * len, -60.0, 100.0), rng.vec(rows * len, -2.0, 2.0));
                let inputs = [&r, &k, &v, &w, &u].map(|x| upload(&gpu, len, x));
                check_recurrence(
                    &gpu,
                    &format!("wkv4 {len} layout {index}"),
                    layout,
                    (len, 3 * len),
                    state,
                    |rec, state, y| {
                        let [r, k, v, w, u] = &inputs;
                        kernels::wkv4(rec, "wkv4", state, Wkv4Inputs { r, k, v, w, u }, y)
                    },
                    |slot, entry| {
                        let own = |x: &[f32]| rows_of(x, entry, len).to_vec();
                        kernels::wkv4_ref(slot, &own(&r), &own(&k), &own(&v), &w, &u)
                    },
                );
            }
        }
    }
}

#[test]
fn gather_takes_each_sequences_last_row() {
    let gpu = common::default_gpu();
    let entries = entries(LAYOUTS[2]);
    let (rows, len) = (11, 37);
    let x: Vec<f32> = (0..rows * len).map(|i| i as f32).collect();
    let x_gpu = upload(&gpu, len, &x);
    let out = GpuTensor::zeros(&gpu, "last", entries.len(), len).unwrap();
    run(&gpu, &entries, |rec| kernels::gather_last_rows(rec, "gather", &x_gpu, &out));
    let expected: Vec<f32> = entries
        .iter()
        .flat_map(|e| x[(e.first_row + e.rows - 1) * len..(e.first_row + e.rows) * len].to_vec())
        .collect();
    assert_close("gather", &out.read(&gpu).unwrap(), &expected, 0.0);
}

#[test]
fn embed_gathers_the_rows_of_each_id_on_every_backend() {
    for gpu in backends() {
        let (vocab, cols) = (13, 37);
        let table: Vec<f32> = Rng::new(7).vec(vocab * cols, -1.0, 1.0);
        // The last id is past the table: a sampler's sentinel, clamped to the last row.
        let ids = [3u32, 0, 12, 3, 7, 5, u32::MAX];
        let ids_gpu = GpuTensor::zeros(&gpu, "ids", 1, ids.len() + 2).unwrap();
        let bits: Vec<f32> = ids.iter().map(|&id| f32::from_bits(id)).collect();
        ids_gpu.write_rows(&gpu, 0, &[bits, vec![0.0; 2]].concat()).unwrap();
        // Whole, and in parts of 4 rows (the last shorter), as a table larger than one binding is.
        for part_rows in [vocab, 4] {
            let parts: Vec<GpuTensor> =
                table.chunks(part_rows * cols).map(|part| upload(&gpu, cols, part)).collect();
            let x = GpuTensor::zeros(&gpu, "x", ids.len(), cols).unwrap();
            let mut rec = Recorder::new(&gpu);
            kernels::embed(&mut rec, "embed", &parts, &ids_gpu, &x).unwrap();
            rec.finish().run(&gpu);
            gpu.wait().unwrap();
            let expected = kernels::embed_ref(&table, cols, &ids);
            assert_close(&format!("embed, {} parts", parts.len()), &x.read(&gpu).unwrap(), &expected, 0.0);
        }
    }
}
