//! NumPy `.npy` files (format version 1.0–3.0), for the `logits` command's input and output.
//! Only what we exchange: little-endian f32, i32 and i64 arrays in C order.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// A parsed array: its shape and values.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    I64 { shape: Vec<usize>, data: Vec<i64> },
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Writes a little-endian f32 array of `shape`.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let mut file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(&f32_bytes(shape, data)).map_err(|e| Error::io(path, e))
}

/// Writes several f32 arrays as a NumPy `.npz` (a zip of `.npy` files, stored uncompressed).
pub fn write_npz(path: &Path, arrays: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let failed = |e: zip::result::ZipError| Error::io(path, std::io::Error::other(e));
    for (name, shape, data) in arrays {
        zip.start_file(format!("{name}.npy"), options).map_err(failed)?;
        zip.write_all(&f32_bytes(shape, data)).map_err(|e| Error::io(path, e))?;
    }
    zip.finish().map_err(failed)?;
    Ok(())
}

/// The `.npy` encoding of a little-endian f32 array of `shape`.
pub fn f32_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text =
        if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // The data must start at a multiple of 64 bytes; the header ends with a newline.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut bytes = Vec::with_capacity(unpadded + 64 + data.len() * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for value in data {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

/// Reads an `.npy` file of f32, i32 or i64 values.
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|reason| Error::malformed(path.display().to_string(), reason))
}

/// Parses `.npy` bytes; the error says what is wrong.
pub fn parse(bytes: &[u8]) -> std::result::Result<Array, String> {
    if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
        return Err("not a NumPy .npy file".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => {
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        version => return Err(format!("unsupported .npy version {version}")),
    };
    let header = bytes.get(start..start + header_len).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let field = |key: &str| -> std::result::Result<&str, String> {
        let at = header.find(&format!("'{key}'")).ok_or(format!("header has no '{key}'"))?;
        Ok(header[at + key.len() + 2..].trim_start().trim_start_matches(':').trim_start())
    };
    if field("fortran_order")?.starts_with("True") {
        return Err("Fortran-order arrays are not supported; save with np.ascontiguousarray".into());
    }
    let descr = field("descr")?;
    let descr = descr.get(1..4).ok_or("bad 'descr'")?;
    let shape_text = field("shape")?;
    let shape_text = shape_text.find(')').and_then(|end| shape_text.get(1..end)).ok_or("bad 'shape'")?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().map_err(|_| format!("bad dimension {d:?}")))
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or("shape too large")?;
    let data = &bytes[start + header_len..];
    let size = match descr {
        "<f4" | "<i4" => 4,
        "<i8" => 8,
        other => {
            return Err(format!(
                "unsupported dtype {other:?}: expected little-endian float32, int32 or int64"
            ))
        }
    };
    if data.len() != count.checked_mul(size).ok_or("shape too large")? {
        return Err(format!("holds {} bytes of data, shape {shape:?} needs {}", data.len(), count * size));
    }
    Ok(match descr {
        "<f4" => Array::F32 {
            shape,
            data: data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        },
        "<i4" => Array::I64 {
            shape,
            data: data
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        },
        _ => Array::I64 {
            shape,
            data: data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_f32() {
        let dir = std::env::temp_dir().join(format!("npy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.npy");
        write_f32(&path, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((bytes.len() - 6 * 4) % 64, 0, "data must start 64-byte aligned");
        assert_eq!(
            read(&path).unwrap(),
            Array::F32 { shape: vec![2, 3], data: vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5] }
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rejects_bad_files() {
        assert!(parse(b"hello").is_err());
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n";
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0; 16]);
        assert!(parse(&bytes).unwrap_err().contains("unsupported dtype"));
        // A shape that closes before it opens, or opens on a character of several bytes.
        for shape in [")", "é)"] {
            let header = format!("{{'descr': '<i4', 'fortran_order': False, 'shape': {shape}, }}\n");
            let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
            bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
            bytes.extend_from_slice(header.as_bytes());
            assert!(parse(&bytes).is_err(), "{header}");
        }
    }
}
