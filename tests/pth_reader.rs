//! The `.pth` reader against tiny checkpoints written by `tools/make_pth_fixtures.py` (committed,
//! so these tests need neither Python nor torch), and against corrupted copies of them.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rwkv_wgpu::model::source::{open, DType, TensorData, TensorSource};

/// Fixtures that torch (or the script, for `deflated.pth`) wrote as valid checkpoints.
const VALID: &[&str] = &["dtypes.pth", "views.pth", "ordered.pth", "proto4.pth", "deflated.pth"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pth").join(name)
}

fn load(name: &str) -> Box<dyn TensorSource> {
    open(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn read<'a>(source: &'a dyn TensorSource, name: &str) -> TensorData<'a> {
    let tensor = source.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(source.meta(name), Some((tensor.dtype, tensor.shape.clone())), "{name}: meta disagrees");
    tensor
}

fn values(source: &dyn TensorSource, name: &str) -> (DType, Vec<usize>, Vec<f32>) {
    let tensor = read(source, name);
    let values = tensor.to_f32(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    (tensor.dtype, tensor.shape, values)
}

fn error_of(name: &str) -> String {
    match open(&fixture(name)) {
        Ok(_) => panic!("{name} opened, but it is malformed"),
        Err(e) => e.to_string(),
    }
}

fn ramp(len: usize) -> Vec<f32> {
    (0..len).map(|i| i as f32).collect()
}

fn check_dtypes(source: &dyn TensorSource) {
    assert_eq!(source.format(), "pth");
    assert_eq!(source.names(), ["bf16", "f16", "f32", "scalar", "i64", "empty", "param"]);
    assert_eq!(values(source, "bf16"), (DType::BF16, vec![2, 3], vec![-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]));
    let quarters = (0..8).map(|i| i as f32 * 0.25).collect();
    assert_eq!(values(source, "f16"), (DType::F16, vec![2, 2, 2], quarters));
    assert_eq!(values(source, "f32"), (DType::F32, vec![5], vec![-1.0, -0.75, -0.5, -0.25, 0.0]));
    assert_eq!(values(source, "scalar"), (DType::F32, vec![], vec![3.5]));
    assert_eq!(values(source, "empty"), (DType::F32, vec![0, 3], vec![]));
    assert_eq!(values(source, "param"), (DType::F32, vec![2], vec![1.0, 2.0]));

    let longs = read(source, "i64");
    assert_eq!((longs.dtype, longs.shape.clone()), (DType::Other("i64"), vec![3]));
    let expected: Vec<u8> = [0i64, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(&longs.bytes[..], expected);
    assert!(longs.to_f32("i64").is_err(), "integers are not weights");
}

#[test]
fn reads_bf16_f16_f32_scalars_and_parameters_from_the_default_archive_folder() {
    let source = load("dtypes.pth");
    check_dtypes(source.as_ref());
    assert!(matches!(read(source.as_ref(), "bf16").bytes, Cow::Borrowed(_)), "stored tensors are borrowed");
}

#[test]
fn reads_compressed_entries_into_owned_bytes() {
    let source = load("deflated.pth");
    check_dtypes(source.as_ref());
    assert!(matches!(read(source.as_ref(), "f32").bytes, Cow::Owned(_)));
}

#[test]
fn reads_views_that_share_one_storage() {
    let source = load("views.pth");
    let source = source.as_ref();
    assert_eq!(values(source, "base"), (DType::F32, vec![4, 6], ramp(24)));
    assert!(matches!(read(source, "base").bytes, Cow::Borrowed(_)));

    let row2 = read(source, "row2");
    assert!(matches!(row2.bytes, Cow::Borrowed(_)), "a contiguous view at an offset is borrowed");
    assert_eq!(row2.to_f32("row2").ok(), Some((12..18).map(|i| i as f32).collect()));

    let transposed: Vec<f32> = (0..6).flat_map(|col| (0..4).map(move |row| (row * 6 + col) as f32)).collect();
    assert_eq!(values(source, "transposed"), (DType::F32, vec![6, 4], transposed));
    let cols = vec![1.0, 2.0, 7.0, 8.0, 13.0, 14.0, 19.0, 20.0];
    assert_eq!(values(source, "cols"), (DType::F32, vec![4, 2], cols));
    assert_eq!(values(source, "t_bf16"), (DType::BF16, vec![3, 2], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
    assert_eq!(values(source, "broadcast"), (DType::F32, vec![3], vec![7.0; 3]));
}

#[test]
fn keeps_ordered_dict_order_and_ignores_its_metadata() {
    let source = load("ordered.pth");
    let source = source.as_ref();
    assert_eq!(source.names(), ["z.weight", "a.bias", "m.scale"]);
    assert_eq!(values(source, "z.weight"), (DType::F16, vec![2, 2], ramp(4)));
    assert_eq!(values(source, "a.bias"), (DType::F32, vec![2], ramp(2)));
    assert_eq!(values(source, "m.scale"), (DType::BF16, vec![], vec![-2.0]));
}

#[test]
fn reads_protocol_4_and_a_state_dict_nested_in_a_checkpoint() {
    let source = load("proto4.pth");
    assert_eq!(source.names(), ["w"]);
    assert_eq!(values(source.as_ref(), "w"), (DType::BF16, vec![2, 2], ramp(4)));
}

#[test]
fn reports_a_missing_tensor_by_name() {
    let source = load("dtypes.pth");
    assert_eq!(source.meta("nope"), None);
    let error = source.tensor("nope").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.starts_with("missing tensor `nope`"), "{error}");
}

#[test]
fn rejects_malformed_checkpoints_saying_precisely_why() {
    let cases = [
        ("os_system.pth", "unknown class `os.system`"),
        ("bad_opcode.pth", "unsupported pickle opcode 0xff"),
        ("big_endian.pth", "big-endian"),
        ("overrun.pth", "tensor `x` needs bytes 0..32 of storage `0` but it has 16"),
        ("ragged.pth", "storage `0` holds 15 bytes, not a whole number of f32 elements"),
        ("duplicate.pth", "two tensors named `x`"),
    ];
    for (name, expected) in cases {
        let error = error_of(name);
        assert!(error.contains(expected), "{name}: `{error}` does not say `{expected}`");
        assert!(error.contains(name), "{name}: `{error}` does not name the file");
    }
}

/// Opens a possibly corrupt file and reads everything it claims to hold. Any outcome but a
/// panic is fine, as long as what it returns is self-consistent.
fn exercise(path: &Path) {
    let Ok(source) = open(path) else { return };
    for name in source.names() {
        let meta = source.meta(&name);
        let Ok(tensor) = source.tensor(&name) else {
            continue;
        };
        assert_eq!(meta, Some((tensor.dtype, tensor.shape.clone())));
        if let Some(size) = tensor.dtype.size() {
            assert_eq!(tensor.bytes.len(), tensor.len() * size, "{name}: byte count disagrees with shape");
            assert!(tensor.to_f32(&name).is_ok());
        }
    }
}

/// Writes `bytes` to a per-test scratch file, since `open` maps files by path.
fn scratch_file(test: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pth_reader");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join(format!("{test}.pth"));
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// A scratch copy of a fixture that is corrupted and restored in place, because recreating a
/// file costs far more than the reads under test and the tests below do thousands.
struct Patchable {
    path: PathBuf,
    file: File,
    original: Vec<u8>,
}

impl Patchable {
    fn new(test: &str, fixture_name: &str) -> Self {
        let original = fixture_bytes(fixture_name);
        let path = scratch_file(test, &original);
        let file = OpenOptions::new().write(true).open(&path).unwrap_or_else(|e| panic!("{test}: {e}"));
        Self { path, file, original }
    }

    fn exercise_with(&mut self, patches: &[(usize, u8)]) {
        for &(at, byte) in patches {
            self.write_at(at, byte);
        }
        exercise(&self.path);
        for &(at, _) in patches {
            self.write_at(at, self.original[at]);
        }
    }

    fn write_at(&mut self, at: usize, byte: u8) {
        self.file.seek(SeekFrom::Start(at as u64)).and_then(|_| self.file.write_all(&[byte])).expect("patch");
    }
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn survives_every_truncation() {
    for name in VALID {
        let bytes = fixture_bytes(name);
        let cuts = (0..64).chain((64..bytes.len()).step_by(97)).chain([bytes.len() - 1]);
        for cut in cuts {
            exercise(&scratch_file("truncated", &bytes[..cut]));
        }
    }
}

#[test]
fn survives_flipped_bytes_anywhere() {
    for name in VALID {
        let mut scratch = Patchable::new("flipped", name);
        for position in 0..scratch.original.len() {
            for mask in [0xff, 0x01, 0x80] {
                scratch.exercise_with(&[(position, scratch.original[position] ^ mask)]);
            }
        }
    }
}

/// torch stores `data.pkl` uncompressed and nothing checks its CRC, so rewriting its bytes in
/// place feeds the pickle interpreter arbitrary programs that still sit inside a valid zip.
#[test]
fn survives_random_pickle_mutations() {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move |below: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below as u64) as usize
    };
    // Opcodes that change the interpreter's shape the most when dropped in at random.
    let interesting =
        [b'(', b't', b'R', b'b', b'h', b'q', b's', b'u', b'a', b'e', b'0', b'2', b'.', 0x85, 0x93];
    for name in ["dtypes.pth", "views.pth", "ordered.pth", "proto4.pth"] {
        let mut scratch = Patchable::new("mutated", name);
        let pickle = pickle_range(&scratch.original);
        for _ in 0..mutation_rounds() {
            let patches: Vec<(usize, u8)> = (0..1 + random(4))
                .map(|_| {
                    let byte = match random(3) {
                        0 => interesting[random(interesting.len())],
                        1 => random(256) as u8,
                        _ => [0x00, 0x7f, 0x80, 0xff][random(4)],
                    };
                    (pickle.start + random(pickle.len()), byte)
                })
                .collect();
            scratch.exercise_with(&patches);
        }
    }
}

/// Set `PTH_FUZZ_ROUNDS` for a longer run than the default quick one.
fn mutation_rounds() -> usize {
    std::env::var("PTH_FUZZ_ROUNDS").ok().and_then(|rounds| rounds.parse().ok()).unwrap_or(2000)
}

/// Where `data.pkl` lies in a fixture torch wrote: it is the first entry, and torch records its
/// sizes after the data, so it runs from after the local header to the next entry's signature.
fn pickle_range(bytes: &[u8]) -> std::ops::Range<usize> {
    let name_len = u16::from_le_bytes([bytes[26], bytes[27]]) as usize;
    let extra_len = u16::from_le_bytes([bytes[28], bytes[29]]) as usize;
    let start = 30 + name_len + extra_len;
    let len = bytes[start..].windows(4).position(|w| w == b"PK\x03\x04" || w == b"PK\x07\x08");
    start..start + len.expect("fixture has a second zip entry")
}
