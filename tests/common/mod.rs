//! Shared test set-up: the GPU variants every kernel test runs on, and comparisons.
#![allow(dead_code)]

pub mod hostile;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rwkv_wgpu::gpu::{Backend, CoopMatrix, Gpu, GpuMatrix, GpuOptions, GpuTensor, RowMapping};
use rwkv_wgpu::model::Model;
use rwkv_wgpu::npy::{self, Array};
use rwkv_wgpu::quant::PackedMatrix;
use rwkv_wgpu::runtime::{Engine, EngineOptions, Session};

/// Every kernel variant the engine ships, on the Vulkan adapter the tests run on (lavapipe in CI):
/// native f16 or packed weights, thread-per-row with the unfused one-token kernels and the serial
/// recurrence (CPU drivers) or workgroup-per-row and (with f16 and subgroups) subgroup-per-row
/// with the fused ones and RWKV-7's recurrence in chunks (GPUs). The thread-per-row variants keep
/// W_v stored by output (`--value-by-input false`), the others by input (the default).
pub fn variants() -> Vec<Gpu> {
    let mut gpus = Vec::new();
    for allow_f16 in [Some(true), Some(false)] {
        // A subgroup per row needs subgroup operations, which the packed variants go without.
        let mut mappings = vec![RowMapping::ThreadPerRow, RowMapping::WorkgroupPerRow];
        if allow_f16 == Some(true) {
            mappings.push(RowMapping::SubgroupPerRow);
        }
        for row_mapping in mappings {
            // The packed-f16 variants are baseline WebGPU, as in browsers: no subgroups either.
            let options = GpuOptions {
                backend: Some(Backend::Vulkan),
                allow_f16,
                row_mapping: Some(row_mapping),
                allow_subgroups: allow_f16,
                fused_decode: Some(row_mapping != RowMapping::ThreadPerRow),
                wkv_chunks: Some(row_mapping != RowMapping::ThreadPerRow),
                value_by_input: Some(row_mapping != RowMapping::ThreadPerRow),
                coop: coop_everywhere().then_some(true),
                ..GpuOptions::default()
            };
            let gpu = open(&options);
            if allow_f16 == Some(true) {
                expect_feature(&gpu, "SHADER_F16", gpu.f16);
                expect_feature(&gpu, "subgroups", gpu.subgroups);
                if coop_everywhere() {
                    expect_feature(&gpu, "cooperative matrices (RWKV_WGPU_TEST_COOP=1)", gpu.coop.is_some());
                }
            }
            gpus.push(gpu);
        }
    }
    gpus
}

/// With RWKV_WGPU_TEST_COOP=1, the native-f16 variants and the default adapter multiply prompts
/// on cooperative matrices, CPU drivers included, as GPUs with tensor cores do by default: run
/// the suite under `.ci/mesa-coop`'s lavapipe that way to try what a GPU round will run. An
/// adapter without them fails the variants' feature check.
fn coop_everywhere() -> bool {
    std::env::var("RWKV_WGPU_TEST_COOP").is_ok_and(|v| v == "1")
}

/// A variant asked for a feature its adapter lacks runs the fallback kernels under the
/// variant's name, so the feature's kernels go untested. Lavapipe (what CI runs) has SHADER_F16
/// and subgroups: there, or with `CI` set, that is an error; on other adapters, a notice.
pub fn expect_feature(gpu: &Gpu, feature: &str, present: bool) {
    if present {
        return;
    }
    let message = format!("{} lacks {feature}: its kernels are not tested here", gpu.describe());
    let lavapipe = gpu.info.backend == wgpu::Backend::Vulkan && gpu.info.name.contains("llvmpipe");
    if lavapipe || std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("notice: {message}");
}

/// The default Vulkan adapter, and the same with subgroup operations (which CPU drivers do not
/// use by default), for the kernels that sum across a workgroup.
pub fn with_and_without_subgroups() -> Vec<Gpu> {
    let subgroups =
        GpuOptions { backend: Some(Backend::Vulkan), allow_subgroups: Some(true), ..GpuOptions::default() };
    let with = open(&subgroups);
    expect_feature(&with, "subgroups", with.subgroups);
    vec![default_gpu(), with]
}

/// The Vulkan adapter with cooperative matrices (tensor cores), once for each size of them it
/// runs (16 × 16 and 8 × 8 on lavapipe; a GPU the sizes it lists), for the calling test to run
/// on; none where the test ran elsewhere or cannot run. GPUs with tensor cores and lavapipe from
/// Mesa 25.1 have them; CI's lavapipe (Mesa 22.3) does not, so where RWKV_WGPU_COOP_RUNNER names
/// a wrapper that runs programs against a newer lavapipe (`.ci/mesa-coop` unpacks one and
/// `.ci/run` sets it), the calling test runs again under it, must pass there, and this returns
/// none. Without either, the test checks nothing and says so, which RWKV_WGPU_REQUIRE_COOP
/// (a GPU machine) turns into a failure.
pub fn coop_gpus(f16_arithmetic: bool) -> Vec<Gpu> {
    let options = |coop_matrix| GpuOptions {
        backend: Some(Backend::Vulkan),
        allow_f16: Some(true),
        coop: Some(true),
        coop_matrix: Some(coop_matrix),
        // As on a GPU with tensor cores: RWKV-7's prompts walk their recurrence in chunks too,
        // and W_v is stored by input.
        wkv_chunks: Some(true),
        value_by_input: Some(true),
        f16_arithmetic,
        ..GpuOptions::default()
    };
    let gpus: Vec<Gpu> = CoopMatrix::ALL.iter().map(|&m| open(&options(m))).collect();
    let message = format!("{} has no cooperative matrices", describe(&gpus[0]));
    let gpus: Vec<Gpu> = gpus.into_iter().filter(|gpu| gpu.coop.is_some()).collect();
    if !gpus.is_empty() {
        return gpus;
    }
    let runner = std::env::var_os("RWKV_WGPU_COOP_RUNNER");
    if std::env::var_os("RWKV_WGPU_REQUIRE_COOP").is_some() || runner.is_none() {
        assert!(
            std::env::var_os("RWKV_WGPU_REQUIRE_COOP").is_none(),
            "{message} (RWKV_WGPU_REQUIRE_COOP is set)"
        );
        eprintln!(
            "notice: {message}: the tensor-core kernels are not tested here (run `.ci/mesa-coop` and set \
             RWKV_WGPU_COOP_RUNNER=target/mesa-coop/run, or run on a GPU with RWKV_WGPU_REQUIRE_COOP=1)"
        );
        return Vec::new();
    }
    let test = std::thread::current().name().expect("a test thread has its test's name").to_string();
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = std::process::Command::new(runner.unwrap())
        .arg(exe)
        .args(["--exact", &test, "--test-threads", "1", "--nocapture"])
        .env("RWKV_WGPU_REQUIRE_COOP", "1")
        .output()
        .expect("the cooperative-matrix runner did not start");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} under the cooperative-matrix runner failed:\n{stdout}\n{stderr}"
    );
    println!("{test} passed under the cooperative-matrix runner:\n{stdout}");
    Vec::new()
}

/// The default adapter choice restricted to Vulkan.
pub fn default_gpu() -> Gpu {
    open(&default_options())
}

pub fn default_options() -> GpuOptions {
    let coop = coop_everywhere();
    GpuOptions {
        backend: Some(Backend::Vulkan),
        allow_f16: coop.then_some(true),
        coop: coop.then_some(true),
        ..GpuOptions::default()
    }
}

/// wgpu's GL backend (llvmpipe over EGL in CI): no SHADER_F16 and no subgroups, so it runs the
/// baseline-WebGPU kernels.
pub fn gl_gpu() -> Gpu {
    let options = GpuOptions { backend: Some(Backend::Gl), ..GpuOptions::default() };
    Gpu::new(&options).unwrap_or_else(|e| {
        panic!(
            "the GL-backend tests need an OpenGL adapter over EGL and found none ({e}). On Debian/Ubuntu: \
             `apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri` (or run `bash .ci/run`)."
        )
    })
}

pub fn open(options: &GpuOptions) -> Gpu {
    match Gpu::new(options) {
        Ok(gpu) => gpu,
        Err(e) => panic!(
            "GPU tests need a Vulkan adapter and found none ({e}). On Debian/Ubuntu install the CPU \
             driver with `apt-get install mesa-vulkan-drivers` (or run `bash .ci/run`)."
        ),
    }
}

pub fn describe(gpu: &Gpu) -> String {
    let coop = gpu.coop.map(|m| format!(" coop {0}×{0}", m.side())).unwrap_or_default();
    format!("{} f16={} subgroups={} {:?}{coop}", gpu.info.name, gpu.f16, gpu.subgroups, gpu.row_mapping)
}

/// A small deterministic generator (xorshift), so tests need no RNG crate and print their seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    pub fn vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// Checks `found` against `expected`: no NaN/inf, and max |diff| ≤ `tolerance` × max(1, |expected|∞).
pub fn assert_close(what: &str, found: &[f32], expected: &[f32], tolerance: f64) {
    assert_eq!(found.len(), expected.len(), "{what}: length");
    let scale = expected.iter().fold(1.0f64, |m, &e| m.max(f64::from(e).abs()));
    let mut worst = (0.0f64, 0usize);
    for (i, (&f, &e)) in found.iter().zip(expected).enumerate() {
        assert!(f.is_finite(), "{what}: element {i} is {f} (expected {e})");
        let diff = (f64::from(f) - f64::from(e)).abs();
        if diff > worst.0 {
            worst = (diff, i);
        }
    }
    let (diff, i) = worst;
    assert!(
        diff <= tolerance * scale,
        "{what}: element {i}: found {} expected {} (|diff| {diff:.3e} > {tolerance:.1e} × {scale:.3})",
        found[i],
        expected[i]
    );
}

/// Records kernels, runs them and waits: a GPU error fails the test.
pub fn run(gpu: &Gpu, record: impl FnOnce(&mut rwkv_wgpu::kernels::Recorder) -> rwkv_wgpu::Result<()>) {
    let mut rec = rwkv_wgpu::kernels::Recorder::new(gpu);
    record(&mut rec).expect("recording failed");
    rec.finish().run(gpu);
    gpu.wait().expect("GPU error");
}

/// `matrix` uploaded from `packed`, and the values a product of `rows` rows multiplies: on
/// cooperative matrices, int8 and nf4 weights as the f16 values their tiles hold.
pub fn upload_matrix(gpu: &Gpu, packed: &PackedMatrix, rows: usize) -> (GpuMatrix, Vec<f32>) {
    let matrix = GpuMatrix::upload(gpu, "w", packed).unwrap();
    let mut values = packed.unpack();
    if rwkv_wgpu::kernels::on_tensor_cores(gpu, &matrix, rows) {
        values.iter_mut().for_each(|w| *w = half::f16::from_f32(*w).to_f32());
    }
    (matrix, values)
}

/// Uploads row-major values as rows of `cols`.
pub fn upload(gpu: &Gpu, cols: usize, data: &[f32]) -> GpuTensor {
    GpuTensor::from_rows(gpu, "input", cols, data).unwrap()
}

/// A fixture folder: tests/fixtures/<version>/<case>.
pub fn fixture_dir(version: &str, case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(version).join(case)
}

/// The golden outputs of a fixture's model file are `logits.npy` and `state_*.npy`, or, where the
/// official package's run on a file of that dtype differs (RWKV-4..6 normalize the embedding in
/// the file's dtype), `logits.DTYPE.npy` and `state_*.DTYPE.npy`: the name of `what`
/// ("logits", "state_wkv", …) for `file` in `dir`.
pub fn golden(dir: &Path, file: &str, what: &str) -> PathBuf {
    let dtype = file.strip_prefix("model-").and_then(|rest| rest.split('.').next());
    dtype
        .map(|dtype| dir.join(format!("{what}.{dtype}.npy")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| dir.join(format!("{what}.npy")))
}

/// The small trained models of every version (tools/train_small.py).
pub const TRAINED: [&str; 6] = ["v4", "v5.0", "v5.1", "v5.2", "v6", "v7"];

/// A trained model's folder: tests/fixtures/trained/<version>, with model-f32.pth and
/// model-bf16.pth, tokens.npy and the official logits of each file.
pub fn trained_dir(version: &str) -> PathBuf {
    fixture_dir("trained", version)
}

/// Our logits at every position of a trained model's fixture tokens, read in steps of `chunk`.
pub fn feed_trained(model: &Arc<Model>, version: &str, chunk: usize) -> Vec<f32> {
    let engine = Engine::new(model.clone(), EngineOptions { slots: 1, chunk }).unwrap();
    let tokens = load_tokens(&trained_dir(version).join("tokens.npy"));
    Session::new(&engine).unwrap().feed_positions(&tokens).unwrap()
}

pub fn load_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    match npy::read(path).unwrap() {
        Array::F32 { shape, data } => (shape, data),
        other => panic!("{}: expected float32, got {other:?}", path.display()),
    }
}

pub fn load_tokens(path: &Path) -> Vec<u32> {
    match npy::read(path).unwrap() {
        Array::I64 { data, .. } => data.into_iter().map(|t| u32::try_from(t).unwrap()).collect(),
        other => panic!("{}: expected integers, got {other:?}", path.display()),
    }
}

pub fn std_dev(values: &[f32]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    (values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// Largest |found − expected| relative to std(expected).
pub fn relative_error(found: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(found.len(), expected.len());
    let worst =
        found.iter().zip(expected).map(|(&f, &e)| (f64::from(f) - f64::from(e)).abs()).fold(0.0, f64::max);
    if found.iter().any(|f| !f.is_finite()) {
        return f64::INFINITY;
    }
    worst / std_dev(expected).max(1e-12)
}

fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::MIN, |m, &x| m.max(x));
    let exp: Vec<f64> = logits.iter().map(|&x| f64::from(x - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// KL(official ‖ ours) in nats between the distributions two logit rows define.
pub fn kl(official: &[f32], ours: &[f32]) -> f64 {
    let (p, q) = (softmax(official), softmax(ours));
    p.iter().zip(&q).filter(|(&p, _)| p > 0.0).map(|(&p, &q)| p * (p / q.max(1e-300)).ln()).sum()
}

pub fn argmax(values: &[f32]) -> usize {
    (0..values.len()).fold(0, |best, i| if values[i] > values[best] { i } else { best })
}

/// Mean KL(official ‖ ours) and the share of positions whose most likely token agrees, over
/// rows of `vocab` logits.
pub fn divergence(official: &[f32], ours: &[f32], vocab: usize) -> (f64, f64) {
    assert_eq!(official.len(), ours.len());
    let rows = official.len() / vocab;
    let (mut total, mut agree) = (0.0, 0);
    for (o, q) in official.chunks(vocab).zip(ours.chunks(vocab)) {
        total += kl(o, q);
        agree += usize::from(argmax(o) == argmax(q));
    }
    (total / rows as f64, agree as f64 / rows as f64)
}
