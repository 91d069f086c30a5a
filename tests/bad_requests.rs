//! Bad input gets a clear error naming the problem — from the library as a typed error, from
//! the CLI as one line and a non-zero exit — and never a panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rwkv_wgpu::model::config::ModelConfig;
use rwkv_wgpu::model::source::{self, TensorSource};
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Session};
use rwkv_wgpu::Error;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v7/tiny/model-f16.safetensors")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad_input");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The tiny model's tensors as (name, dtype, shape, bytes), for editing.
type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn tiny_tensors() -> Tensors {
    let bytes = std::fs::read(tiny()).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Tensors = file
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

fn write(name: &str, tensors: &Tensors) -> PathBuf {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, dtype, shape, data)| (n.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap()))
        .collect();
    let path = scratch(name);
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

/// Opening and checking the file (everything before the GPU) must fail with this message.
fn load_error(path: &Path) -> Error {
    let source = match source::open(path) {
        Ok(source) => source,
        Err(e) => return e,
    };
    match ModelConfig::from_source(source.as_ref()) {
        Err(e) => e,
        Ok(_) => {
            let gpu = Arc::new(common::default_gpu());
            match Model::from_source(gpu, source.as_ref(), &LoadOptions::default()) {
                Err(e) => e,
                Ok(_) => panic!("{} loaded but should not have", path.display()),
            }
        }
    }
}

/// Runs the CLI's `logits` command and returns its stderr, checking it failed cleanly.
fn cli_error(path: &Path, tokens: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_rwkv-wgpu"))
        .args(["--backend", "vulkan", "logits", "--model"])
        .arg(path)
        .args(["--tokens", tokens, "--out"])
        .arg(scratch("out.npy"))
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(1), "expected exit code 1, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "the CLI panicked: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "last line should be the error: {stderr}");
    last.to_string()
}

fn expect(error: &Error, fragments: &[&str]) {
    let message = error.to_string();
    assert!(!message.contains('\n'), "multi-line error: {message}");
    for fragment in fragments {
        assert!(message.contains(fragment), "error {message:?} should mention {fragment:?}");
    }
}

#[test]
fn truncated_files_are_errors_at_every_offset() {
    for original in [tiny(), tiny().with_file_name("model.pth")] {
        let bytes = std::fs::read(&original).unwrap();
        let cuts = (0..64).chain((64..bytes.len()).step_by(997)).chain([bytes.len() - 1]);
        for cut in cuts {
            let path = scratch("truncated.bin");
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let error = match source::open(&path) {
                Err(e) => e,
                // A cut inside the data of a .pth can leave a readable directory only if the
                // zip's central directory survived, which it never does: it is at the end.
                Ok(_) => panic!("{} cut at {cut} opened", original.display()),
            };
            assert!(matches!(error, Error::Malformed { .. } | Error::Io { .. }), "cut {cut}: {error}");
        }
    }
}

#[test]
fn header_longer_than_the_file() {
    let mut bytes = std::fs::read(tiny()).unwrap();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    bytes[8] = b'{';
    let path = scratch("huge_header.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    expect(&load_error(&path), &["huge_header.safetensors", "safetensors"]);
}

#[test]
fn not_a_model_and_lfs_pointers() {
    let path = scratch("notes.txt");
    std::fs::write(&path, "just some text that is not a model\n").unwrap();
    expect(&load_error(&path), &["notes.txt", "not a model file"]);

    let path = scratch("pointer.pth");
    std::fs::write(&path, "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1234\n").unwrap();
    expect(&load_error(&path), &["git-lfs pointer"]);

    let path = scratch("empty.safetensors");
    std::fs::write(&path, "").unwrap();
    expect(&load_error(&path), &["empty"]);

    let missing = scratch("does-not-exist.pth");
    expect(&load_error(&missing), &["does-not-exist.pth"]);
}

#[test]
fn missing_tensor_is_named() {
    let mut tensors = tiny_tensors();
    tensors.retain(|t| t.0 != "blocks.1.att.k_a");
    let path = write("missing.safetensors", &tensors);
    expect(&load_error(&path), &["missing tensor `blocks.1.att.k_a`"]);
    assert!(cli_error(&path, "1").contains("blocks.1.att.k_a"));
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    let mut tensors = tiny_tensors();
    let key = tensors.iter_mut().find(|t| t.0 == "blocks.0.ffn.key.weight").unwrap();
    key.2 = vec![key.2[1], key.2[0]];
    let path = write("transposed.safetensors", &tensors);
    expect(&load_error(&path), &["blocks.0.ffn.key.weight", "expected shape [256, 64]", "found [64, 256]"]);
}

#[test]
fn wrong_dtype_is_named() {
    let mut tensors = tiny_tensors();
    let ln = tensors.iter_mut().find(|t| t.0 == "blocks.0.ln1.weight").unwrap();
    ln.1 = Dtype::I16;
    let path = write("int.safetensors", &tensors);
    expect(&load_error(&path), &["blocks.0.ln1.weight", "dtype i16"]);
}

#[test]
fn a_broken_file_of_another_version_names_the_version() {
    let mut tensors = tiny_tensors();
    for tensor in &mut tensors {
        tensor.0 = tensor.0.replace("att.x_r", "att.time_maa_x").replace("att.k_k", "att.time_decay");
    }
    tensors.retain(|t| !t.0.ends_with("att.r_k"));
    let path = write("v6.safetensors", &tensors);
    expect(&load_error(&path), &["missing tensor `blocks.0.att.time_faaaa`", "looks like RWKV-6"]);

    let path = write("unrelated.safetensors", &vec![("weight".into(), Dtype::F32, vec![2], vec![0; 8])]);
    expect(&load_error(&path), &["not an RWKV checkpoint"]);
}

#[test]
fn token_out_of_range() {
    let error = cli_error(&tiny(), "1,256");
    assert!(error.contains("token id 256 is out of range: the vocabulary has 256 tokens"), "{error}");

    let gpu = Arc::new(common::default_gpu());
    let model = Model::load(gpu, &tiny(), &LoadOptions::default()).unwrap();
    let engine = Engine::new(Arc::new(model), EngineOptions::default()).unwrap();
    let mut session = Session::new(&engine).unwrap();
    assert!(matches!(session.feed(&[3, 1000]), Err(Error::TokenOutOfRange { id: 1000, vocab: 256 })));
    // Nothing was fed, and the session is still usable.
    assert_eq!(session.feed(&[5]).unwrap().len(), 256);
}

#[test]
fn no_adapter_is_a_clear_error() {
    let options =
        rwkv_wgpu::gpu::GpuOptions { adapter: Some("no such adapter 1234".into()), ..Default::default() };
    let error = rwkv_wgpu::gpu::Gpu::new(&options).err().expect("found an adapter that cannot exist");
    expect(&error, &["no GPU adapter found", "no such adapter 1234", "available"]);
}

#[test]
fn every_tensor_name_is_listed_by_every_format() {
    let dir = tiny().with_file_name("");
    let reference = source::open(&tiny()).unwrap();
    let mut expected = reference.names();
    expected.sort();
    for file in ["model.pth", "model-bf16.safetensors", "model-f32.safetensors"] {
        let other: Box<dyn TensorSource> = source::open(&dir.join(file)).unwrap();
        let mut names = other.names();
        names.sort();
        assert_eq!(names, expected, "{file}");
    }
}
