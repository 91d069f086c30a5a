//! Choosing tokens on the GPU: the kernel against its CPU reference on random logits (ties,
//! penalties, every mode), and generation through the engine against sampling the read-back
//! logits on the CPU.

mod common;

use std::sync::Arc;

use common::{fixture_dir, Rng};
use rwkv_wgpu::gpu::{Gpu, GpuTensor};
use rwkv_wgpu::kernels::{self, Choice, Recorder, RowMasks, SampleOutputs, SampleRow, SlotSampling};
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Sampler, SamplerOptions, Session};

/// Kinds of rows: see `choices`.
const KINDS: usize = 11;

/// Random choices covering every mode: greedy, plain temperature, top-k, top-p, both, penalties
/// (decaying in kinds 5, 7 and 8), min-p (7, 8, with top-p in 8), typical-p (1, 4, 8; at a low
/// temperature in 1, where it may drop the most likely token), and masks (kinds 0, 2, 5, 8 and 10
/// allow a random third of the tokens, 9 none, 10 at most a few).
fn choices(rng: &mut Rng, rows: usize, slots: usize, vocab: usize) -> Vec<Choice> {
    (0..rows)
        .map(|r| {
            let kind = r % KINDS;
            Choice {
                slot: (r % slots) as u32,
                mode: match kind {
                    0 => Choice::GREEDY,
                    6 => Choice::SKIP,
                    _ => Choice::DRAW,
                },
                min_p: if matches!(kind, 7 | 8) { rng.uniform(0.01, 0.5) } else { 0.0 },
                decay: if matches!(kind, 0 | 5 | 7 | 8) { rng.uniform(0.5, 1.0) } else { 1.0 },
                typical_p: if matches!(kind, 1 | 4 | 8) { rng.uniform(0.2, 0.99) } else { 1.0 },
                logprobs: match kind {
                    0 | 3 => 1 + (rng.next_u64() % 6) as u32,
                    8 => 1 + kernels::MAX_TOP_LOGPROBS as u32,
                    _ => 0,
                },
                top_k: if matches!(kind, 2 | 4) { 1 + (rng.next_u64() % 40) as u32 } else { 0 },
                temperature: if kind == 1 { 0.05 } else { rng.uniform(0.3, 2.0) },
                top_p: if matches!(kind, 3 | 4 | 8) { rng.uniform(0.2, 0.95) } else { 1.0 },
                presence: if matches!(kind, 0 | 5 | 7) { rng.uniform(0.0, 2.0) } else { 0.0 },
                frequency: if matches!(kind, 0 | 5 | 7) { rng.uniform(0.0, 1.0) } else { 0.0 },
                draw: rng.uniform(0.0, 1.0).min(0.999_999),
                masked: u32::from(matches!(kind, 0 | 2 | 5 | 8 | 9 | 10)),
                reserved: [0; 3],
            }
        })
        .map(|c| if c.top_k as usize > vocab { Choice { top_k: 0, ..c } } else { c })
        .collect()
}

/// Each row's mask, as `choices` describes them.
fn masks(rng: &mut Rng, rows: usize, vocab: usize) -> Vec<u32> {
    let words = kernels::mask_words(vocab);
    let mut masks = vec![0u32; rows * words];
    for r in 0..rows {
        let share = match r % KINDS {
            9 => continue,
            10 => 3.0 / vocab as f32,
            _ => 1.0 / 3.0,
        };
        for t in 0..vocab {
            if rng.uniform(0.0, 1.0) < share {
                masks[r * words + t / 32] |= 1 << (t % 32);
            }
        }
    }
    masks
}

/// One row per slot (as in an engine step: a slot appears once), one row of each kind.
fn check_kernel(gpu: &Gpu, vocab: usize, seed: u64) {
    let (rows, slots) = (KINDS, KINDS);
    let mut rng = Rng::new(seed);
    // Logits on a coarse grid, so that ties are common.
    let logits: Vec<f32> = (0..rows * vocab).map(|_| (rng.uniform(-8.0, 8.0) * 4.0).round() / 4.0).collect();
    // Occurrences as decay leaves them (fractions), and a bias on some tokens, banning a few.
    let counts: Vec<f32> = (0..slots * vocab)
        .map(|_| if rng.next_u64() % 10 == 0 { (rng.next_u64() % 4) as f32 * 0.75 } else { 0.0 })
        .collect();
    let bias: Vec<f32> = (0..slots * vocab)
        .map(|_| match rng.next_u64() % 20 {
            0 => kernels::BANNED,
            1 | 2 => (rng.uniform(-4.0, 4.0) * 4.0).round() / 4.0,
            _ => 0.0,
        })
        .collect();
    let choices = choices(&mut rng, rows, slots, vocab);
    let masks = masks(&mut rng, rows, vocab);
    let words = kernels::mask_words(vocab);
    let masks_gpu = GpuTensor::from_rows(gpu, "masks", words, bytemuck::cast_slice(&masks)).unwrap();
    let logits_gpu = GpuTensor::from_rows(gpu, "logits", vocab, &logits).unwrap();
    let counts_gpu = GpuTensor::from_rows(gpu, "counts", vocab, &counts).unwrap();
    let bias_gpu = GpuTensor::from_rows(gpu, "bias", vocab, &bias).unwrap();
    let choices_gpu =
        GpuTensor::from_rows(gpu, "choices", Choice::COLS, bytemuck::cast_slice(&choices)).unwrap();
    let tokens_gpu = GpuTensor::zeros(gpu, "tokens", 1, rows).unwrap();
    let logprobs_gpu = GpuTensor::zeros(gpu, "logprobs", rows, kernels::LOGPROB_COLS).unwrap();
    let mut rec = Recorder::new(gpu);
    let slot_sampling = SlotSampling { counts: &counts_gpu, bias: &bias_gpu };
    let outputs = SampleOutputs { tokens: &tokens_gpu, logprobs: &logprobs_gpu };
    let inputs = (&logits_gpu, &choices_gpu, RowMasks(&masks_gpu));
    kernels::sample(&mut rec, "sample", inputs, slot_sampling, outputs).unwrap();
    rec.finish().run(gpu);
    let tokens: Vec<u32> = tokens_gpu.read(gpu).unwrap().into_iter().map(f32::to_bits).collect();
    let counts_after = counts_gpu.read(gpu).unwrap();
    let reports = logprobs_gpu.read(gpu).unwrap();

    let mut expected_counts = counts.clone();
    for (r, choice) in choices.iter().enumerate() {
        let slot = choice.slot as usize;
        let own = slot * vocab..(slot + 1) * vocab;
        let row = SampleRow {
            logits: &logits[r * vocab..(r + 1) * vocab],
            counts: &counts[own.clone()],
            bias: &bias[own.clone()],
            mask: &masks[r * words..(r + 1) * words],
        };
        let expected = kernels::sample_ref(row, choice);
        match expected {
            None => assert_eq!(tokens[r], 0, "row {r} (skipped) was written"),
            Some(Choice::NOTHING_ALLOWED) => {
                assert_eq!(tokens[r], Choice::NOTHING_ALLOWED, "row {r}: a mask that allows nothing");
            }
            Some(token) => {
                assert_eq!(
                    tokens[r],
                    token,
                    "{}: row {r} of {choice:?}\nlogits {:?}\nbias {:?}\ncounts {:?}",
                    common::describe(gpu),
                    &logits[r * vocab..(r + 1) * vocab].iter().take(12).collect::<Vec<_>>(),
                    &bias[own.clone()].iter().take(12).collect::<Vec<_>>(),
                    &counts[own.clone()].iter().take(12).collect::<Vec<_>>()
                );
                let t = token as usize;
                let allowed = choice.masked == 0 || masks[r * words + t / 32] >> (t % 32) & 1 != 0;
                assert!(allowed, "row {r} chose token {token}, which its mask leaves out");
                // With a mask, every allowed token may be banned too.
                if choice.masked == 0 {
                    assert!(bias[slot * vocab + t] != kernels::BANNED, "row {r} chose a banned token");
                }
                if choice.logprobs > 0 {
                    let report = &reports[r * kernels::LOGPROB_COLS..(r + 1) * kernels::LOGPROB_COLS];
                    let found = kernels::TokenLogprobs::from_row(report, choice.logprobs, vocab);
                    let expected = kernels::logprobs_ref(row, choice, token);
                    let ids =
                        |l: &kernels::TokenLogprobs| l.top.iter().map(|&(id, _)| id).collect::<Vec<_>>();
                    let values = |l: &kernels::TokenLogprobs| {
                        [l.logprob].into_iter().chain(l.top.iter().map(|&(_, v)| v)).collect::<Vec<_>>()
                    };
                    assert_eq!(ids(&found), ids(&expected), "row {r}: the most likely tokens");
                    common::assert_close(
                        &format!("row {r}: log-probabilities"),
                        &values(&found),
                        &values(&expected),
                        1e-5,
                    );
                }
                kernels::count_ref(&mut expected_counts[own], token, choice.decay);
            }
        }
    }
    common::assert_close(
        &format!("{}: the decayed counts", common::describe(gpu)),
        &counts_after,
        &expected_counts,
        1e-6,
    );
}

#[test]
fn sampling_kernel_matches_reference() {
    // Its sums are reduce.wgsl's, or reduce_subgroup.wgsl's on adapters with subgroups.
    let mut gpus = common::with_and_without_subgroups();
    gpus.push(common::gl_gpu());
    for gpu in gpus {
        for (vocab, seed) in [(7, 1), (300, 2), (1000, 3), (65536, 4)] {
            for batch in 0..4 {
                check_kernel(&gpu, vocab, seed * 10 + batch);
            }
        }
    }
}

#[test]
fn non_finite_logits_are_an_error_not_a_token() {
    let gpu = Arc::new(common::default_gpu());
    let vocab = 300;
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut logits = vec![0.5; vocab];
        logits[3] = bad;
        let logits = GpuTensor::from_rows(&gpu, "logits", vocab, &logits).unwrap();
        let counts = GpuTensor::zeros(&gpu, "counts", 1, vocab).unwrap();
        let bias = GpuTensor::zeros(&gpu, "bias", 1, vocab).unwrap();
        let reports = GpuTensor::zeros(&gpu, "logprobs", 1, kernels::LOGPROB_COLS).unwrap();
        let choice = Choice { mode: Choice::DRAW, top_p: 0.9, ..Choice::skip() };
        let choices =
            GpuTensor::from_rows(&gpu, "choices", Choice::COLS, bytemuck::cast_slice(&[choice])).unwrap();
        let tokens = GpuTensor::zeros(&gpu, "tokens", 1, 1).unwrap();
        let masks = GpuTensor::zeros(&gpu, "masks", 1, kernels::mask_words(vocab)).unwrap();
        let mut rec = Recorder::new(&gpu);
        kernels::sample(
            &mut rec,
            "sample",
            (&logits, &choices, RowMasks(&masks)),
            SlotSampling { counts: &counts, bias: &bias },
            SampleOutputs { tokens: &tokens, logprobs: &reports },
        )
        .unwrap();
        rec.finish().run(&gpu);
        assert_eq!(tokens.read(&gpu).unwrap()[0].to_bits(), Choice::NON_FINITE_LOGITS, "a logit of {bad}");
    }
}

/// A generation chooses on the GPU; choosing from the read-back logits with the same seed on the
/// CPU gives the same tokens.
#[test]
fn gpu_sampling_generates_what_cpu_sampling_would() {
    let gpu = Arc::new(common::default_gpu());
    let model =
        Model::load(gpu, &fixture_dir("v7", "tiny").join("model.pth"), &LoadOptions::default()).unwrap();
    let engine = Engine::new(Arc::new(model), EngineOptions { slots: 2, chunk: 8 }).unwrap();
    let prompt: Vec<u32> = (0..11).map(|i| (i * 37 % 200) as u32).collect();
    for options in [
        SamplerOptions { seed: Some(5), ..SamplerOptions::default() },
        SamplerOptions {
            greedy: false,
            temperature: 0.8,
            top_p: 0.7,
            seed: Some(6),
            ..SamplerOptions::default()
        },
        SamplerOptions {
            greedy: false,
            top_k: 5,
            presence_penalty: 0.5,
            frequency_penalty: 0.3,
            seed: Some(7),
            ..SamplerOptions::default()
        },
        SamplerOptions {
            greedy: false,
            temperature: 1.3,
            min_p: 0.05,
            presence_penalty: 0.4,
            frequency_penalty: 0.4,
            penalty_decay: 0.9,
            logit_bias: vec![(3, 2.5), (17, -1.0)],
            banned: vec![prompt[0], 42],
            seed: Some(8),
            ..SamplerOptions::default()
        },
    ] {
        let mut on_gpu = Vec::new();
        let mut session = Session::new(&engine).unwrap();
        let mut sampler = Sampler::new(options.clone()).unwrap();
        session.start_sampling(&options).unwrap();
        let mut token = session.feed_and_sample(&prompt, &mut sampler).unwrap();
        for _ in 0..24 {
            on_gpu.push(token);
            token = session.feed_and_sample(&[token], &mut sampler).unwrap();
        }

        let mut on_cpu = Vec::new();
        let mut session = Session::new(&engine).unwrap();
        let mut sampler = Sampler::new(options.clone()).unwrap();
        let mut logits = session.feed(&prompt).unwrap();
        for _ in 0..24 {
            let token = sampler.sample(&logits).unwrap();
            on_cpu.push(token);
            logits = session.feed(&[token]).unwrap();
        }
        assert_eq!(on_gpu, on_cpu, "{options:?}");
    }
}

/// Decoding with GPU sampling: one submit per token, and only the token ids come back (padded to
/// 16 bytes), never the logits.
#[test]
fn a_generated_token_costs_one_submit_and_reads_back_only_its_id() {
    let gpu = Arc::new(common::default_gpu());
    let model =
        Model::load(gpu, &fixture_dir("v7", "tiny").join("model.pth"), &LoadOptions::default()).unwrap();
    let engine = Engine::new(Arc::new(model), EngineOptions { slots: 1, chunk: 8 }).unwrap();
    let mut session = Session::new(&engine).unwrap();
    let mut sampler = Sampler::new(SamplerOptions { seed: Some(1), ..SamplerOptions::default() }).unwrap();
    let mut token = session.feed_and_sample(&[1, 2, 3], &mut sampler).unwrap();
    engine.reset_counters();
    for _ in 0..10 {
        token = session.feed_and_sample(&[token], &mut sampler).unwrap();
    }
    let counters = engine.counters();
    assert_eq!((counters.steps, counters.tokens, counters.submits), (10, 10, 10));
    assert_eq!(counters.bytes_read_back, 10 * 16, "{counters:?}");
    let per_token = engine.prepare(1, rwkv_wgpu::runtime::Logits::Last).unwrap() + 1;
    assert_eq!(counters.dispatches, 10 * per_token as u64, "{counters:?}");
}

/// The budget for a decoded RWKV-7 layer is 6 dispatches: r/k/v and the LoRA inputs,
/// each normalizing and shifting its input itself; the LoRA outputs, keys, recurrence, group
/// norm, bonus and gate in one kernel; the output; the channel mix's key (normalizing and
/// shifting) and value. Counted as the difference between models of 3 and 2 layers.
#[test]
fn a_decoded_rwkv7_layer_costs_at_most_6_dispatches() {
    use rwkv_wgpu::model::synthetic::{Shape, SyntheticV7};
    // The fused kernels are what GPUs run; CPU drivers keep the unfused ones by default.
    let options = rwkv_wgpu::gpu::GpuOptions { fused_decode: Some(true), ..common::default_options() };
    let gpu = Arc::new(rwkv_wgpu::gpu::Gpu::new(&options).unwrap());
    let dispatches = |layers: usize| {
        let source = SyntheticV7::new(Shape::rwkv7(layers, 128, 256, 64), 3);
        let model = Model::from_source(gpu.clone(), &source, &LoadOptions::default()).unwrap();
        let engine = Engine::new(Arc::new(model), EngineOptions { slots: 1, chunk: 8 }).unwrap();
        engine.prepare(1, rwkv_wgpu::runtime::Logits::Last).unwrap()
    };
    let per_layer = dispatches(3) - dispatches(2);
    assert!(per_layer <= 6, "a v7 layer takes {per_layer} dispatches");
    assert_eq!(per_layer, 6, "update this test and README when the count changes");
}
