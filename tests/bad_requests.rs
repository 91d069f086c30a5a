//! Bad requests get a typed error from the library and, from the CLI, one line on stderr and a
//! non-zero exit — never a panic, and the engine stays usable. Bad files are in
//! `hostile_files.rs`, device trouble in `device_trouble.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::quant::MatrixFormat;
use rwkv_wgpu::runtime::{
    Batch, Engine, EngineOptions, GenerateOptions, Logits, RequestOptions, SamplerOptions, Session, Work,
};
use rwkv_wgpu::tokenizer::Tokenizer;
use rwkv_wgpu::Error;

fn fixture(version: &str, case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(version)
        .join(case)
        .join("model-f16.safetensors")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad_requests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn engine(version: &str, case: &str) -> Engine {
    let gpu = Arc::new(common::default_gpu());
    let model = Model::load(gpu, &fixture(version, case), &LoadOptions::default()).unwrap();
    Engine::new(Arc::new(model), EngineOptions { slots: 2, chunk: 8 }).unwrap()
}

fn byte_tokenizer() -> Tokenizer {
    Tokenizer::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/tokenizer.json")).unwrap()
}

/// Runs the CLI and returns its error line, checking that it failed with exit code 1, said one
/// line starting `error: ` last, and did not panic.
fn cli_error(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rwkv-wgpu"))
        .args(["--backend", "vulkan"])
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(1), "{args:?}: expected exit code 1, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: the CLI panicked: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{args:?}: last line should be the error: {stderr}");
    last.to_string()
}

fn expect(message: &str, fragment: &str) {
    assert!(message.contains(fragment), "{message:?} should mention {fragment:?}");
}

fn invalid_argument(result: Result<impl std::fmt::Debug, Error>, fragment: &str) {
    match result {
        Err(error @ Error::InvalidArgument(_)) => expect(&error.to_string(), fragment),
        other => panic!("expected an invalid-argument error mentioning {fragment:?}, got {other:?}"),
    }
}

#[test]
fn token_ids_beyond_the_vocabulary() {
    let tiny = fixture("v7", "tiny");
    let out = scratch("out.npy");
    let args =
        ["logits", "--model", tiny.to_str().unwrap(), "--tokens", "1,256", "--out", out.to_str().unwrap()];
    expect(&cli_error(&args, ""), "token id 256 is out of range: the vocabulary has 256 tokens");

    let engine = engine("v7", "tiny");
    let mut session = Session::new(&engine).unwrap();
    assert!(matches!(session.feed(&[3, 1000]), Err(Error::TokenOutOfRange { id: 1000, vocab: 256 })));
    let mut batch = Batch::new(&engine);
    assert!(matches!(
        batch.add(vec![1, 4096], RequestOptions::default()),
        Err(Error::TokenOutOfRange { .. })
    ));
    // Nothing was fed, and the session is still usable.
    assert_eq!(session.feed(&[5]).unwrap().len(), 256);
}

#[test]
fn an_empty_prompt() {
    expect(&cli_error(&["generate", "--prompt", ""], ""), "the prompt is empty");

    let engine = engine("v7", "tiny");
    let mut session = Session::new(&engine).unwrap();
    invalid_argument(session.feed(&[]), "no tokens");
    let tokenizer = byte_tokenizer();
    invalid_argument(session.generate(&tokenizer, "", &GenerateOptions::default()).map(drop), "no tokens");
    invalid_argument(Batch::new(&engine).add(Vec::new(), RequestOptions::default()), "at least one token");
}

/// Sampling options the CLI and the library refuse, and what they say.
const BAD_SAMPLING: [(&str, f32, f32, &str); 6] = [
    ("0", 0.0, 0.85, "temperature must be a positive number, got 0"),
    ("-1", -1.0, 0.85, "temperature must be a positive number, got -1"),
    ("nan", f32::NAN, 0.85, "temperature must be a positive number, got NaN"),
    ("1", 1.0, 0.0, "top-p must be in (0, 1], got 0"),
    ("1", 1.0, 1.5, "top-p must be in (0, 1], got 1.5"),
    ("1", 1.0, -0.1, "top-p must be in (0, 1], got -0.1"),
];

#[test]
fn temperature_and_top_p_outside_their_range() {
    for (temperature, _, top_p, says) in BAD_SAMPLING {
        let args = [
            "generate",
            "--prompt",
            "ROMEO:",
            &format!("--temperature={temperature}"),
            &format!("--top-p={top_p}"),
        ];
        expect(&cli_error(&args, ""), says);
    }

    let engine = engine("v7", "tiny");
    let tokenizer = byte_tokenizer();
    let mut session = Session::new(&engine).unwrap();
    for (_, temperature, top_p, says) in BAD_SAMPLING {
        let sampler = SamplerOptions { temperature, top_p, ..SamplerOptions::default() };
        let options = GenerateOptions { sampler: sampler.clone(), ..GenerateOptions::default() };
        invalid_argument(session.generate(&tokenizer, "ROMEO:", &options).map(drop), says);
        let request = RequestOptions { sampler, ..RequestOptions::default() };
        invalid_argument(Batch::new(&engine).add(vec![1], request), says);
    }
}

#[test]
fn a_state_from_another_model() {
    let v7 = engine("v7", "tiny");
    let state = scratch("v7.state");
    Session::new(&v7).unwrap().state().unwrap().save(&state).unwrap();
    let v6 = fixture("v6", "A");
    let args = [
        "chat",
        "--model",
        v6.to_str().unwrap(),
        "--tokenizer",
        "assets/demo/tokenizer.json",
        "--load-state",
        state.to_str().unwrap(),
    ];
    let error = cli_error(&args, "Hello\n");
    expect(&error, "this state belongs to another model: RWKV-7 (x070) with 2 layers of 64 channels");
    expect(&error, "but the model is RWKV-6 with 2 layers of 32 channels");
}

#[test]
fn a_batch_slot_out_of_range() {
    let engine = engine("v7", "tiny");
    let session = Session::new(&engine).unwrap();
    invalid_argument(
        engine.step(&[Work::new(7, &[1], Logits::Last)]),
        "state slot 7 is out of range: the engine has 2 slots",
    );
    invalid_argument(engine.step(&[Work::new(1, &[1], Logits::Last)]), "state slot 1 is not allocated");
    invalid_argument(engine.reset(99), "out of range");
    invalid_argument(engine.copy_slot(session.slot(), 99), "out of range");
    invalid_argument(engine.clear_counts(usize::MAX), "out of range");
    engine.release(usize::MAX);
    // The slot that exists still works.
    assert_eq!(engine.step(&[Work::new(session.slot(), &[1], Logits::Last)]).unwrap()[0].logits.len(), 256);
}

#[test]
fn a_model_that_does_not_fit_the_adapter() {
    let tiny = fixture("v7", "tiny");
    let out = scratch("out.npy");
    let args = [
        "--binding-limit",
        "64",
        "logits",
        "--model",
        tiny.to_str().unwrap(),
        "--tokens",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    let error = cli_error(&args, "");
    expect(&error, "model does not fit the device");
    expect(&error, "more than the adapter's 64-byte storage bindings");

    // `info` says, for each format, whether it fits, without failing.
    for (limit, fits) in [("134", false), ("1048576", true)] {
        let output = Command::new(env!("CARGO_BIN_EXE_rwkv-wgpu"))
            .args([
                "--backend",
                "vulkan",
                "--binding-limit",
                limit,
                "info",
                "--model",
                tiny.to_str().unwrap(),
            ])
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .output()
            .unwrap();
        assert!(output.status.success());
        let stdout = String::from_utf8_lossy(&output.stdout);
        let formats: Vec<&str> = stdout.lines().filter(|l| l.contains("MiB per sequence")).collect();
        assert_eq!(formats.len(), MatrixFormat::ALL.len(), "{stdout}");
        for line in formats {
            assert_eq!(!line.contains("does not fit the device"), fits, "{line}");
        }
    }
}

#[test]
fn no_adapter() {
    let options =
        rwkv_wgpu::gpu::GpuOptions { adapter: Some("no such adapter 1234".into()), ..Default::default() };
    let error = rwkv_wgpu::gpu::Gpu::new(&options).err().expect("found an adapter that cannot exist");
    assert!(matches!(error, Error::NoAdapter(_)), "{error:?}");
    for fragment in ["no GPU adapter found", "no such adapter 1234", "available"] {
        expect(&error.to_string(), fragment);
    }
    expect(
        &cli_error(&["--adapter", "no such adapter 1234", "generate", "--prompt", "x"], ""),
        "no such adapter 1234",
    );
}
