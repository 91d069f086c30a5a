//! The hostile-file suite for the other layouts: GGUF files, Hugging Face folders and LoRA
//! adapters, each corrupted the ways downloads and hand edits corrupt them. Every case must end
//! in a one-line error of the kind it names, never a panic, an absurd allocation or a hang.

mod common;

use std::path::{Path, PathBuf};

use common::hostile::{expect, load_error, scratch, write_bytes};
use rwkv_wgpu::model::lora::{self, Lora};
use rwkv_wgpu::model::source;
use rwkv_wgpu::Error;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn formats(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats").join(path)
}

/// GGUF bytes as written by hand: metadata (key, type id, value bytes) and tensors (name, ggml
/// type id, dimensions innermost first, offset), then `data` at 32-byte alignment.
fn gguf(
    version: u32,
    metadata: &[(&str, u32, Vec<u8>)],
    tensors: &[(&str, u32, Vec<u64>, u64)],
    data: &[u8],
) -> Vec<u8> {
    let text = |s: &str| [(s.len() as u64).to_le_bytes().to_vec(), s.as_bytes().to_vec()].concat();
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(version.to_le_bytes());
    bytes.extend((tensors.len() as u64).to_le_bytes());
    bytes.extend((metadata.len() as u64).to_le_bytes());
    for (key, kind, value) in metadata {
        bytes.extend(text(key));
        bytes.extend(kind.to_le_bytes());
        bytes.extend(value);
    }
    for (name, kind, dims, offset) in tensors {
        bytes.extend(text(name));
        bytes.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| bytes.extend(d.to_le_bytes()));
        bytes.extend(kind.to_le_bytes());
        bytes.extend(offset.to_le_bytes());
    }
    bytes.resize(bytes.len().div_ceil(32) * 32, 0);
    bytes.extend(data);
    bytes
}

fn string(s: &str) -> Vec<u8> {
    [(s.len() as u64).to_le_bytes().to_vec(), s.as_bytes().to_vec()].concat()
}

fn architecture(name: &str) -> (&'static str, u32, Vec<u8>) {
    ("general.architecture", 8, string(name))
}

/// Each hand-made file gets its own name: tests run in parallel.
fn malformed(bytes: &[u8], fragments: &[&str]) {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = write_bytes(&format!("hand-{count}.gguf"), bytes);
    let error = load_error(&path);
    assert!(matches!(error, Error::Malformed { .. }), "{error:?}");
    expect(&error, fragments);
}

#[test]
fn gguf_truncated_at_many_offsets() {
    let bytes = std::fs::read(formats("gguf/v7-tiny-f16.gguf")).unwrap();
    for cut in (0..256).chain((256..bytes.len()).step_by(4099)).chain([bytes.len() - 1]) {
        let error = load_error(&write_bytes("truncated.gguf", &bytes[..cut]));
        assert!(matches!(error, Error::Malformed { .. }), "cut at {cut}: {error}");
        expect(&error, &["truncated.gguf"]);
    }
}

#[test]
fn gguf_headers_that_lie() {
    let arch = architecture("rwkv7");
    malformed(&gguf(1, &[], &[], &[]), &["GGUF version 1"]);
    // Counts far beyond what the file can hold are refused before anything is allocated.
    let mut huge = gguf(3, &[], &[], &[]);
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    malformed(&huge, &["tensor count"]);
    malformed(&gguf(3, &[("k", 8, u64::MAX.to_le_bytes().to_vec())], &[], &[]), &["string length"]);
    malformed(&gguf(3, &[("k", 99, vec![])], &[], &[]), &["metadata `k`", "unknown metadata value type 99"]);
    let nested = [9u32.to_le_bytes().to_vec(), 1u64.to_le_bytes().to_vec()].concat();
    let deep = [
        nested.clone(),
        nested.clone(),
        nested.clone(),
        nested,
        0u32.to_le_bytes().to_vec(),
        0u64.to_le_bytes().to_vec(),
    ];
    let deep = [&9u32.to_le_bytes()[..], &1u64.to_le_bytes(), &deep.concat()].concat();
    malformed(&gguf(3, &[("k", 9, deep)], &[], &[]), &["nested"]);
    malformed(
        &gguf(3, std::slice::from_ref(&arch), &[("t", 0, vec![1, 1, 1, 1, 1], 0)], &[]),
        &["`t` has 5 dimensions"],
    );
    malformed(
        &gguf(3, std::slice::from_ref(&arch), &[("t", 0, vec![u64::MAX, 4], 0)], &[]),
        &["`t`", "overflows"],
    );
    malformed(
        &gguf(3, std::slice::from_ref(&arch), &[("t", 0, vec![8], 1 << 40)], &[0; 32]),
        &["`t`", "past the end", "truncated"],
    );
    malformed(
        &gguf(3, std::slice::from_ref(&arch), &[("t", 12, vec![100, 2], 0)], &[0; 4096]),
        &["`t`", "whole Q4_K blocks of 256"],
    );
    malformed(
        &gguf(3, std::slice::from_ref(&arch), &[("t", 0, vec![1], 0), ("t", 0, vec![1], 0)], &[0; 32]),
        &["`t` appears twice"],
    );
    malformed(&gguf(3, &[arch], &[], &[]), &["embedding_length"]);
    malformed(&gguf(3, &[], &[], &[]), &["without `general.architecture`"]);
}

#[test]
fn gguf_of_other_architectures_and_types() {
    let path = write_bytes("llama.gguf", &gguf(3, &[architecture("llama")], &[], &[]));
    let error = load_error(&path);
    assert!(matches!(error, Error::UnsupportedModel(_)), "{error:?}");
    expect(&error, &["llama.gguf", "`llama`", "rwkv7"]);
    let tensors = [("blk.0.time_mix_key.weight", 16, vec![256, 2], 0)];
    malformed(
        &gguf(3, &[architecture("rwkv7")], &tensors, &[0; 1024]),
        &["IQ2_XXS", "does not read", "Q4_K"],
    );
}

/// The tiny model's f16 GGUF with one tensor's data changed at byte `at` of its data section.
fn gguf_with_data(edit: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(formats("gguf/v7-tiny-f16.gguf")).unwrap();
    edit(&mut bytes);
    write_bytes("edited.gguf", &bytes)
}

#[test]
fn gguf_weights_that_are_not_numbers() {
    // The last tensor's last element becomes an f32 NaN or an f16 NaN: either way, named.
    let path = gguf_with_data(|bytes| {
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let error = load_error(&path);
    assert!(matches!(error, Error::BadWeights { .. }), "{error:?}");
    expect(&error, &["NaN", "damaged"]);
}

#[test]
fn gguf_tokenizers_of_other_kinds() {
    let tokens = [("tokenizer.ggml.model", 8, string("gpt2"))];
    let file = gguf(3, &[architecture("rwkv7"), tokens[0].clone()], &[], &[]);
    let path = write_bytes("gpt2.gguf", &file);
    // The architecture check fails first when loading; the tokenizer is read on its own too.
    let raw = source::gguf::GgufFile::from_bytes(
        "gpt2.gguf".into(),
        source::FileBytes::Owned(std::fs::read(path).unwrap()),
    )
    .unwrap();
    use rwkv_wgpu::model::source::TensorSource;
    let Some(Err(error)) = raw.tokenizer() else { panic!("a gpt2 tokenizer was accepted") };
    expect(&error, &["gpt2", "--tokenizer"]);
}

/// A copy of the fla fixture folder to break.
fn fla_copy(name: &str) -> PathBuf {
    let dir = scratch(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(formats("fla")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

#[test]
fn hugging_face_folders_with_missing_or_misplaced_shards() {
    let empty = fla_copy("empty-folder");
    for entry in std::fs::read_dir(&empty).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let error = load_error(&empty);
    assert!(matches!(error, Error::Malformed { .. }), "{error:?}");
    expect(&error, &["without model weights"]);

    let missing = fla_copy("missing-shard");
    std::fs::remove_file(missing.join("model-00002-of-00003.safetensors")).unwrap();
    let error = load_error(&missing);
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    expect(&error, &["model-00002-of-00003.safetensors"]);

    let index_path = |dir: &Path| dir.join("model.safetensors.index.json");
    let edit_index = |dir: &Path, from: &str, to: &str| {
        let text = std::fs::read_to_string(index_path(dir)).unwrap();
        let edited = text.replacen(from, to, 1);
        assert_ne!(text, edited);
        std::fs::write(index_path(dir), edited).unwrap();
    };
    let misplaced = fla_copy("misplaced");
    edit_index(
        &misplaced,
        "\"model.embeddings.weight\": \"model-00001",
        "\"model.embeddings.weight\": \"model-00003",
    );
    expect(&load_error(&misplaced), &["index.json puts `model.embeddings.weight`", "does not hold it"]);
    let outside = fla_copy("outside");
    edit_index(&outside, "\"model-00001-of-00003.safetensors\"", "\"../model-00001-of-00003.safetensors\"");
    expect(&load_error(&outside), &["outside the folder"]);

    let unsharded = fla_copy("two-files");
    std::fs::remove_file(index_path(&unsharded)).unwrap();
    expect(&load_error(&unsharded), &["3 weight files", "no model.safetensors.index.json"]);
}

fn merge_error(base: &Path, adapter: Lora) -> Error {
    match lora::merge(source::open(base).unwrap(), &[adapter]) {
        Ok(_) => panic!("the adapter merged but should not have"),
        Err(error) => error,
    }
}

#[test]
fn lora_adapters_that_do_not_fit() {
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v7/tiny/model.pth");
    let adapter = |path: PathBuf| Lora { path, scale: 1.0 };
    let error = merge_error(&tiny, adapter(scratch("no-such-adapter.pth")));
    assert!(matches!(error, Error::Io { .. }), "{error:?}");

    // The RWKV-LM adapter of the tiny model on a model of other shapes (the quantized GGUF is 256 wide).
    let wide = formats("gguf/quantized/model-q8_0.gguf");
    let error = merge_error(&wide, adapter(formats("lora/rwkv-lm.pth")));
    expect(&error, &["rwkv-lm.pth", "lora_A", "must be [r, 256]"]);

    // A PEFT adapter without its config, and with DoRA.
    let peft = scratch("peft-alone");
    std::fs::create_dir_all(&peft).unwrap();
    std::fs::copy(formats("lora/peft/adapter_model.safetensors"), peft.join("adapter_model.safetensors"))
        .unwrap();
    let _ = std::fs::remove_file(peft.join("adapter_config.json"));
    expect(&merge_error(&formats("fla"), adapter(peft.clone())), &["adapter_config.json", "lora_alpha"]);
    let config = std::fs::read_to_string(formats("lora/peft/adapter_config.json")).unwrap();
    std::fs::write(
        peft.join("adapter_config.json"),
        config.replace("\"use_dora\": false", "\"use_dora\": true"),
    )
    .unwrap();
    let error = merge_error(&formats("fla"), adapter(peft));
    assert!(matches!(error, Error::UnsupportedModel(_)), "{error:?}");
    expect(&error, &["DoRA"]);

    // A PEFT factor A that is a scalar.
    let scalar = scratch("peft-scalar");
    std::fs::create_dir_all(&scalar).unwrap();
    std::fs::write(scalar.join("adapter_config.json"), &config).unwrap();
    let module = "base_model.model.model.layers.0.attn.k_proj";
    let (a, b) = ([0u8; 4], vec![0u8; 64 * 4 * 4]);
    let views = [
        (format!("{module}.lora_A.weight"), TensorView::new(Dtype::F32, vec![], &a).unwrap()),
        (format!("{module}.lora_B.weight"), TensorView::new(Dtype::F32, vec![64, 4], &b).unwrap()),
    ];
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(scalar.join("adapter_model.safetensors"), bytes).unwrap();
    expect(&merge_error(&formats("fla"), adapter(scalar)), &["lora_A", "must be [r, "]);

    // A model file is not an adapter.
    expect(&merge_error(&tiny, adapter(tiny.clone())), &["no LoRA factors"]);
}
