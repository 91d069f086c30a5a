//! The command line end to end on the committed fixture models.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{fixture_dir, relative_error};
use rwkv_wgpu::npy::{self, Array};
use rwkv_wgpu::runtime::State;

fn model() -> PathBuf {
    fixture_dir("v7", "tiny").join("model.pth")
}

fn tokenizer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/tokenizer.json")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rwkv-wgpu"))
        .args(["--backend", "vulkan"])
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "rwkv-wgpu {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    match npy::read(path).unwrap() {
        Array::F32 { shape, data } => (shape, data),
        other => panic!("{other:?}"),
    }
}

/// With no --model, `generate` runs the demo model built into the binary with its byte-level
/// tokenizer: greedy decoding writes the official package's continuation (tests/fixtures/demo).
#[test]
fn generate_without_a_model_runs_the_built_in_demo() {
    #[derive(serde::Deserialize)]
    struct Greedy {
        prompt: String,
        continuation: String,
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/demo/greedy.json");
    let greedy: Greedy = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let count = greedy.continuation.len().to_string();
    let output = run(&["generate", "--prompt", &greedy.prompt, "-n", &count, "--greedy"], None);
    assert_eq!(String::from_utf8(output.stdout).unwrap().trim_end_matches('\n'), greedy.continuation);
    assert!(String::from_utf8_lossy(&output.stderr).contains("built-in demo model"));
}

/// `logits --mode seq` reads through prefill and matches `--mode rnn`; several `--tokens` lists
/// run as one batch into an .npz whose arrays match running each list alone.
#[test]
fn logits_modes_and_batches_agree() {
    let model = model();
    let model = model.to_str().unwrap();
    let (rnn, seq) = (scratch("rnn.npy"), scratch("seq.npy"));
    let tokens = "5,9,200,3,3,77,1,0,255,42";
    run(&["logits", "--model", model, "--tokens", tokens, "--out", rnn.to_str().unwrap()], None);
    run(
        &[
            "logits",
            "--model",
            model,
            "--tokens",
            tokens,
            "--mode",
            "seq",
            "--chunk",
            "3",
            "--out",
            seq.to_str().unwrap(),
        ],
        None,
    );
    let ((shape, rnn), (_, seq)) = (read_f32(&rnn), read_f32(&seq));
    assert_eq!(shape, vec![10, 256]);
    assert!(relative_error(&seq, &rnn) <= 1e-4);

    let npz = scratch("batch.npz");
    let args =
        ["logits", "--model", model, "--tokens", tokens, "--tokens", "7,8,9", "--mode", "seq", "--out"];
    run(&[&args[..], &[npz.to_str().unwrap()]].concat(), None);
    let file = std::fs::File::open(&npz).unwrap();
    let mut archive = zip::ZipArchive::new(file).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut archive.by_name("seq0.npy").unwrap(), &mut bytes).unwrap();
    let Array::F32 { shape, data } = npy::parse(&bytes).unwrap() else { panic!("seq0 is not float32") };
    assert_eq!(shape, vec![10, 256]);
    assert!(relative_error(&data, &rnn) <= 1e-4);
    assert!(archive.by_name("seq1.npy").is_ok());
}

/// The perplexity command's loss equals the mean −log p(next token) computed from `logits`.
#[test]
fn perplexity_matches_the_logits() {
    let text = "To be, or not to be, that is the question.";
    let path = scratch("text.txt");
    std::fs::write(&path, text).unwrap();
    let model = model();
    let (model, tokenizer) = (model.to_str().unwrap(), tokenizer());
    let output = run(
        &[
            "perplexity",
            "--model",
            model,
            "--tokenizer",
            tokenizer.to_str().unwrap(),
            "--text",
            path.to_str().unwrap(),
            "--chunk",
            "8",
        ],
        None,
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let reported: f64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("loss:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    // The demo tokenizer maps each byte to its own id.
    let ids: Vec<String> = text.bytes().map(|b| b.to_string()).collect();
    let out = scratch("perplexity.npy");
    run(&["logits", "--model", model, "--tokens", &ids.join(","), "--out", out.to_str().unwrap()], None);
    let (_, logits) = read_f32(&out);
    let bytes = text.as_bytes();
    let mut total = 0.0;
    for t in 0..bytes.len() - 1 {
        let row = &logits[t * 256..(t + 1) * 256];
        let max = row.iter().fold(f32::MIN, |m, &x| m.max(x));
        let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
        total += sum.ln() - f64::from(row[bytes[t + 1] as usize] - max);
    }
    let expected = total / (bytes.len() - 1) as f64;
    assert!((reported - expected).abs() < 1e-4, "reported {reported}, expected {expected}");
}

#[test]
fn chat_keeps_state_between_turns_and_saves_it() {
    let state = scratch("chat.state");
    let (model, tokenizer) = (model(), tokenizer());
    let args = [
        "chat",
        "--model",
        model.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "-n",
        "12",
        "--seed",
        "3",
        "--save-state",
        state.to_str().unwrap(),
    ];
    let output = run(&args, Some("Hello there\nHow are you?\n"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("Assistant:").count(), 2, "{stdout}");
    let saved = State::load(&state).unwrap();
    assert_eq!(saved.layers.len(), 2);
    // A later chat can start from it.
    let resumed = [&args[..9], &["--load-state", state.to_str().unwrap()]].concat();
    run(&resumed, Some("And now?\n"));
}

#[test]
fn bench_reports_memory_speed_and_per_token_costs_for_each_format() {
    let mut args = vec!["bench", "--layers", "1", "--embd", "32", "--head-size", "16", "--vocab", "64"];
    args.extend(["--prefill", "8", "--gen", "2", "--batch", "1,3", "--repeats", "1", "--quant", "f16,nf4"]);
    args.extend(["--profile", "--json"]);
    let output = run(&args, None);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let measurements = report["measurements"].as_array().unwrap();
    assert_eq!(measurements.len(), 2);
    for (m, quant) in measurements.iter().zip(["f16", "nf4"]) {
        assert_eq!(m["quant"], quant);
        assert!(m["memory"]["weights"].as_u64().unwrap() > 0);
        assert!(m["prefill_tokens_per_s"].as_f64().unwrap() > 0.0);
        let decode = m["decode_tokens_per_s_by_batch"].as_array().unwrap();
        assert_eq!(decode[1][0], 3);
        assert!(decode[1][1].as_f64().unwrap() > 0.0);
        // Greedy decoding on the GPU: one submit and a 16-byte token readback per token.
        assert_eq!(m["per_token"]["submits"], 1.0);
        assert_eq!(m["per_token"]["bytes_read_back"], 16.0);
        assert!(m["per_token"]["dispatches"].as_f64().unwrap() > 0.0);
        let kernels = m["profile_decode"].as_array().unwrap();
        assert!(kernels.iter().any(|k| k["kernel"].as_str().unwrap().starts_with("sample")), "{kernels:?}");
    }
}

fn formats(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats").join(path).display().to_string()
}

/// `info` names the layout and the stored block types of a GGUF file; a Hugging Face folder and
/// `--lora` are accepted wherever a model is.
#[test]
fn other_layouts_and_adapters_on_the_command_line() {
    let info = run(&["info", "--json", "--model", &formats("gguf/quantized/model-q4_k_m.gguf")], None);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["layout"], "llama.cpp GGUF");
    let types: Vec<&str> =
        info["stored_types"].as_array().unwrap().iter().map(|t| t[0].as_str().unwrap()).collect();
    assert_eq!(types, ["Q4_K", "Q6_K", "F32"]);
    let info = run(&["info", "--model", &formats("fla")], None);
    assert!(String::from_utf8_lossy(&info.stdout).contains("layout:      fla-hub (Hugging Face) names"));

    // An RWKV-LM adapter at scale 0.5 changes the official checkpoint's logits (tests/formats.rs
    // checks them against the official run of the merged weights).
    let out = scratch("lora.npy");
    let tokens = "1,2,3";
    let adapter = format!("{}:0.5", formats("lora/rwkv-lm.pth"));
    let model = model().display().to_string();
    let args = ["logits", "--model", &model, "--lora", &adapter, "--tokens", tokens];
    run(&[&args[..], &["--out", out.to_str().unwrap()]].concat(), None);
    let (_, ours) = read_f32(&out);
    let plain = scratch("plain.npy");
    run(&["logits", "--model", &model, "--tokens", tokens, "--out", plain.to_str().unwrap()], None);
    let (_, plain) = read_f32(&plain);
    assert!(relative_error(&ours, &plain) > 0.1, "--lora changed nothing");
}

/// A GGUF file with the World vocabulary in its metadata needs no --tokenizer: its text equals
/// the run with the World vocabulary file given explicitly.
#[test]
fn gguf_files_bring_their_tokenizer() {
    let model = formats("gguf/world-q8_0.gguf");
    let args = ["generate", "--model", &model, "--prompt", "Hello, world", "-n", "6", "--greedy"];
    let own = run(&args, None);
    let world = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/world/rwkv_vocab_v20230424.txt");
    let explicit = run(&[&args[..], &["--tokenizer", world.to_str().unwrap()]].concat(), None);
    assert!(!own.stdout.is_empty());
    assert_eq!(own.stdout, explicit.stdout);
}

/// `adapters` names each adapter and the cooperative-matrix products it lists: lavapipe from
/// Mesa 25.1 lists 8×8×8 f16 → f32 (under RWKV_WGPU_COOP_RUNNER where the system's is older, as
/// in CI; see common::coop_gpus).
#[test]
fn adapters_list_their_cooperative_matrices() {
    let runner = std::env::var_os("RWKV_WGPU_COOP_RUNNER");
    let exe = env!("CARGO_BIN_EXE_rwkv-wgpu");
    let mut command = match &runner {
        Some(runner) => Command::new(runner),
        None => Command::new(exe),
    };
    if runner.is_some() {
        command.arg(exe);
    }
    let output = command.arg("adapters").env("XDG_RUNTIME_DIR", std::env::temp_dir()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "adapters failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("(Vulkan, "), "no Vulkan adapter listed:\n{stdout}");
    if runner.is_some() || std::env::var_os("RWKV_WGPU_REQUIRE_COOP").is_some() {
        let line = stdout.lines().find(|l| l.starts_with("  cooperative matrices: "));
        let line = line.unwrap_or_else(|| panic!("no cooperative matrices listed:\n{stdout}"));
        assert!(line.contains("×8 f16 → f32") || line.contains("×16 f16 → f32"), "{line}");
    }
}
