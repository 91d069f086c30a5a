//! Model files come from strangers: each corruption below, named as in the robustness issue,
//! must give the error kind it names with a one-line message, never a panic, an absurd
//! allocation or a hang. Random corruption of `.pth` files is in `pth_reader.rs`; the fuzz
//! targets in `fuzz/` go further.

mod common;

use common::hostile::{expect, load_error, load_error_with, scratch, write_bytes};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::f16;
use rwkv_wgpu::model::source::{self, TensorSource};
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::quant::{MatrixFormat, QuantPlan};
use rwkv_wgpu::Error;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v7/tiny/model-f16.safetensors")
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

fn tensor<'a>(tensors: &'a mut Tensors, name: &str) -> &'a mut (String, Dtype, Vec<usize>, Vec<u8>) {
    tensors.iter_mut().find(|t| t.0 == name).unwrap()
}

fn write(name: &str, tensors: &Tensors) -> PathBuf {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, dtype, shape, data)| (n.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap()))
        .collect();
    write_bytes(name, &safetensors::serialize(views, None).unwrap())
}

/// A safetensors file with this JSON header and `data` after it, as written by hand.
fn handmade(name: &str, header: &str, data: &[u8]) -> PathBuf {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    write_bytes(name, &bytes)
}

fn expect_malformed(path: &Path, fragments: &[&str]) {
    let error = load_error(path);
    assert!(matches!(error, Error::Malformed { .. }), "{error:?}");
    expect(&error, fragments);
}

#[test]
fn truncated_at_many_offsets() {
    for original in [tiny(), tiny().with_file_name("model.pth")] {
        let bytes = std::fs::read(&original).unwrap();
        let cuts = (0..64).chain((64..bytes.len()).step_by(997)).chain([bytes.len() - 1]);
        for cut in cuts {
            let path = write_bytes("truncated.bin", &bytes[..cut]);
            // Both formats keep what locates the data at one end (the safetensors header at the
            // start, the zip directory at the end), so every cut breaks a reference.
            let error = load_error(&path);
            assert!(matches!(error, Error::Malformed { .. }), "{} cut at {cut}: {error}", original.display());
        }
    }
}

#[test]
fn header_length_larger_than_the_file() {
    let mut bytes = std::fs::read(tiny()).unwrap();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    bytes[8] = b'{';
    expect_malformed(
        &write_bytes("huge_header.safetensors", &bytes),
        &["huge_header.safetensors", "safetensors"],
    );
}

#[test]
fn overlapping_tensor_offsets() {
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    expect_malformed(&handmade("overlap.safetensors", header, &[0; 12]), &["overlap.safetensors", "invalid"]);
}

#[test]
fn out_of_range_tensor_offsets() {
    let header = r#"{"a":{"dtype":"F32","shape":[250],"data_offsets":[0,1000]}}"#;
    expect_malformed(&handmade("beyond.safetensors", header, &[0; 8]), &["beyond.safetensors", "invalid"]);
}

#[test]
fn shapes_too_large_to_allocate() {
    // The element count overflows: nothing may be allocated for it.
    let header = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#;
    expect_malformed(&handmade("overflow.safetensors", header, &[0; 8]), &["overflow.safetensors"]);
    // A pre-quantized matrix whose rows and columns overflow together.
    let header = r#"{"__metadata__":{"quantized.a":"int8 2 18446744073709551615"},"a":{"dtype":"U32","shape":[2],"data_offsets":[0,8]}}"#;
    expect_malformed(
        &handmade("quantized-overflow.safetensors", header, &[0; 8]),
        &["bad quantization entry"],
    );
}

#[test]
fn wrong_dtype() {
    let mut tensors = tiny_tensors();
    tensor(&mut tensors, "blocks.0.ln1.weight").1 = Dtype::I16;
    let error = load_error(&write("int.safetensors", &tensors));
    assert!(matches!(error, Error::DType { .. }), "{error:?}");
    expect(&error, &["blocks.0.ln1.weight", "dtype i16"]);
}

#[test]
fn shapes_that_disagree_with_each_other() {
    // `att.key` must be C×C; here it is [32, 128], the same number of values.
    let mut tensors = tiny_tensors();
    tensor(&mut tensors, "blocks.0.att.key.weight").2 = vec![32, 128];
    let error = load_error(&write("key.safetensors", &tensors));
    assert!(matches!(error, Error::Shape { .. }), "{error:?}");
    expect(&error, &["blocks.0.att.key.weight", "expected shape [64, 64]", "found [32, 128]"]);

    let mut tensors = tiny_tensors();
    let ffn = tensor(&mut tensors, "blocks.0.ffn.key.weight");
    ffn.2 = vec![ffn.2[1], ffn.2[0]];
    let error = load_error(&write("transposed.safetensors", &tensors));
    assert!(matches!(error, Error::Shape { .. }), "{error:?}");
    expect(&error, &["blocks.0.ffn.key.weight", "expected shape [256, 64]", "found [64, 256]"]);
}

#[test]
fn missing_tensor() {
    let mut tensors = tiny_tensors();
    tensors.retain(|t| t.0 != "blocks.1.att.k_a");
    let error = load_error(&write("missing.safetensors", &tensors));
    assert!(matches!(error, Error::MissingTensor { .. }), "{error:?}");
    expect(&error, &["missing tensor `blocks.1.att.k_a`"]);

    // A file of another version with a tensor missing says which version it looks like.
    let mut tensors = tiny_tensors();
    for tensor in &mut tensors {
        tensor.0 = tensor.0.replace("att.x_r", "att.time_maa_x").replace("att.k_k", "att.time_decay");
    }
    tensors.retain(|t| !t.0.ends_with("att.r_k"));
    let error = load_error(&write("v6.safetensors", &tensors));
    expect(&error, &["missing tensor `blocks.0.att.time_faaaa`", "looks like RWKV-6"]);

    // A block index past any count of layers.
    let mut tensors = tiny_tensors();
    tensors.push(("blocks.18446744073709551615.ln1.weight".into(), Dtype::F32, vec![1], vec![0; 4]));
    expect(&load_error(&write("huge-block.safetensors", &tensors)), &["block index"]);

    let error = load_error(&write(
        "unrelated.safetensors",
        &vec![("weight".into(), Dtype::F32, vec![2], vec![0; 8])],
    ));
    assert!(matches!(error, Error::UnsupportedModel(_)), "{error:?}");
    expect(&error, &["not an RWKV checkpoint"]);
}

#[test]
fn duplicate_names() {
    // Both entries are valid on their own; JSON parsers would silently keep the second.
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    expect_malformed(
        &handmade("twice.safetensors", header, &[0; 8]),
        &["twice.safetensors", "two tensors named `a`"],
    );
    expect_malformed(&pth("duplicate.pth"), &["duplicate.pth", "two tensors named `x`"]);
}

/// Writes `value` (as f16) at element `index` of a tensor of the tiny f16 model.
fn with_value(file: &str, name: &str, index: usize, value: f32) -> PathBuf {
    let mut tensors = tiny_tensors();
    tensor(&mut tensors, name).3[index * 2..index * 2 + 2]
        .copy_from_slice(&f16::from_f32(value).to_le_bytes());
    write(file, &tensors)
}

/// NaN or infinite weights are an error (documented in README, "Bad input"): they would only show
/// up later as NaN logits, far from their cause.
#[test]
fn nan_and_infinite_weights() {
    let cases = [
        ("blocks.0.att.key.weight", 17, f32::NAN, "element 17 is NaN"),
        // Row 2, column 3: W_v is transposed as it loads, and the error still names its place.
        ("blocks.1.ffn.value.weight", 2 * 256 + 3, f32::INFINITY, "element 515 is inf"),
        ("blocks.0.att.w0", 5, f32::NEG_INFINITY, "element 5 is -inf"),
        ("head.weight", 0, f32::NAN, "element 0 is NaN"),
        ("emb.weight", 64 * 7 + 2, f32::NAN, "token 7's row holds NaN or infinity at column 2"),
    ];
    for (name, index, value, says) in cases {
        let error = load_error(&with_value("nan.safetensors", name, index, value));
        assert!(matches!(error, Error::BadWeights { .. }), "{name}: {error:?}");
        expect(&error, &[name, says]);
    }
}

#[test]
fn matrix_weights_beyond_f16() {
    // An f32 file may hold values f16 cannot: stored as f32 (its own precision, the default) they
    // load; asked to be stored in f16 or with f16 scales, such a value is named rather than
    // turned into infinity.
    let mut tensors = tiny_tensors();
    for (_, dtype, _, data) in &mut tensors {
        let values: Vec<f32> =
            data.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
        *data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        *dtype = Dtype::F32;
    }
    tensor(&mut tensors, "blocks.1.att.output.weight").3[40..44].copy_from_slice(&1e6f32.to_le_bytes());
    let path = write("huge.safetensors", &tensors);
    let model = Model::load(Arc::new(common::default_gpu()), &path, &LoadOptions::default()).unwrap();
    assert_eq!(model.storage, "f32");
    for format in [MatrixFormat::F16, MatrixFormat::Int8] {
        let error =
            load_error_with(&path, &LoadOptions { quant: QuantPlan::all(format), ..LoadOptions::default() });
        assert!(matches!(error, Error::BadWeights { .. }), "{error:?}");
        expect(&error, &["blocks.1.att.output.weight", "element 10 is 1000000", "beyond the range of f16"]);
    }
}

fn pth(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pth").join(name)
}

#[test]
fn pickle_referencing_unknown_classes() {
    // The pickle would call os.system: it is never run, and named.
    expect_malformed(&pth("os_system.pth"), &["os_system.pth", "unknown class `os.system`"]);
}

#[test]
fn pickle_with_unsupported_opcodes() {
    expect_malformed(&pth("bad_opcode.pth"), &["bad_opcode.pth", "unsupported pickle opcode 0xff"]);
}

#[test]
fn git_lfs_pointer() {
    let pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1234\n";
    expect_malformed(
        &write_bytes("pointer.pth", pointer.as_bytes()),
        &["pointer.pth", "git-lfs pointer", "git lfs pull"],
    );
}

#[test]
fn not_a_model_empty_or_absent() {
    expect_malformed(
        &write_bytes("notes.txt", b"just some text that is not a model\n"),
        &["notes.txt", "not a model file"],
    );
    expect_malformed(&write_bytes("empty.safetensors", b""), &["empty"]);
    let error = load_error(&scratch("does-not-exist.pth"));
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    expect(&error, &["does-not-exist.pth"]);
}

#[test]
fn every_format_lists_every_tensor() {
    let reference = source::open(&tiny()).unwrap();
    let mut expected = reference.names();
    expected.sort();
    for file in ["model.pth", "model-bf16.safetensors", "model-f32.safetensors"] {
        let other: Box<dyn TensorSource> = source::open(&tiny().with_file_name(file)).unwrap();
        let mut names = other.names();
        names.sort();
        assert_eq!(names, expected, "{file}");
    }
}
