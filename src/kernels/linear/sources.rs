//! The kernel assemblies of the linear layers: for each way of storing weights, its prelude
//! (binding 1 and `load_weight4`) before the matrix-vector kernel, in three variants of its
//! input and state, and before the matrix-matrix kernel.

use super::super::sequences::SEQUENCE_SIZES;
use super::super::wgsl;
use crate::gpu::Access::{Read, ReadWrite, Uniform};
use crate::gpu::{Access, CoopMatrix, Gpu, KernelSource};
use crate::quant::MatrixFormat;

/// What a one-row product reads and leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Its input is a tensor.
    Plain,
    /// It computes its input from the residual stream (`input_shifted.wgsl`).
    Shifted,
    /// Its first workgroup also stores a normalized input in a sequence's state
    /// (`remember_input.wgsl`).
    Remembering,
}

impl Variant {
    /// Binding 0 params, then weights, x, y, operand (always bound: the input's buffer again,
    /// never read, when there is none, so that one entry point per row mapping serves every
    /// epilogue), then the variant's own.
    pub fn bindings(self) -> &'static [Access] {
        match self {
            Variant::Plain => &[Uniform, Read, Read, ReadWrite, Read],
            Variant::Shifted => &[Uniform, Read, Read, ReadWrite, Read, Read, Read, Read, ReadWrite, Uniform],
            Variant::Remembering => &[Uniform, Read, Read, ReadWrite, Read, Read, ReadWrite, Uniform],
        }
    }
}

struct Products {
    matvec: KernelSource,
    matvec_shifted: KernelSource,
    matvec_remembering: KernelSource,
    matmul: KernelSource,
}

/// The matrix-vector kernel with its weights, input and remember preludes; `$sequences` for
/// the variants that read the step's sequence table.
macro_rules! matvec {
    ($name:expr, $weights:expr, $input:expr, $remember:expr, [$($sequences:expr)?], $sizes:expr) => {
        KernelSource {
            name: $name,
            parts: &[
                $($sequences,)?
                $weights,
                wgsl::REDUCE,
                wgsl::ACTIVATION,
                wgsl::LINEAR_EPILOGUE,
                $input,
                $remember,
                wgsl::MATVEC,
                wgsl::MATVEC_SUBGROUP,
                wgsl::MATVEC_BY_INPUT,
            ],
            sizes: $sizes,
        }
    };
}

macro_rules! products {
    ($name:literal, $weights:expr, $tile:expr) => {
        Products {
            matvec: matvec!(
                concat!("matvec_", $name),
                $weights,
                wgsl::INPUT_PLAIN,
                wgsl::REMEMBER_NOTHING,
                [],
                &[]
            ),
            matvec_shifted: matvec!(
                concat!("matvec_shifted_", $name),
                $weights,
                wgsl::INPUT_SHIFTED,
                wgsl::REMEMBER_NOTHING,
                [wgsl::SEQUENCES],
                SEQUENCE_SIZES
            ),
            matvec_remembering: matvec!(
                concat!("matvec_remembering_", $name),
                $weights,
                wgsl::INPUT_PLAIN,
                wgsl::REMEMBER_INPUT,
                [wgsl::SEQUENCES],
                SEQUENCE_SIZES
            ),
            matmul: KernelSource {
                name: concat!("matmul_", $name),
                parts: &[$weights, $tile, wgsl::ACTIVATION, wgsl::LINEAR_EPILOGUE, wgsl::MATMUL],
                sizes: &[],
            },
        }
    };
}

static F32: Products = products!("f32", wgsl::WEIGHTS_F32, wgsl::TILE_F32);
static BF16: Products = products!("bf16", wgsl::WEIGHTS_BF16, wgsl::TILE_F32);
static F16: Products = products!("f16", wgsl::WEIGHTS_F16, wgsl::TILE_F32);
static PACKED: Products = products!("packed", wgsl::WEIGHTS_PACKED, wgsl::TILE_F32);
static INT8: Products = products!("int8", wgsl::WEIGHTS_INT8, wgsl::TILE_F32);
static NF4: Products = products!("nf4", wgsl::WEIGHTS_NF4, wgsl::TILE_F32);
/// The cooperative-matrix products (`matmul_coop.wgsl`), for the formats whose weights are f16
/// or dequantize into f16, on each size of matrices.
macro_rules! coop {
    ($name:literal, $weights:expr, $size:expr) => {
        KernelSource {
            name: concat!("matmul_coop_", $name),
            parts: &[
                $weights,
                wgsl::NEAREST_F16,
                $size,
                wgsl::ACTIVATION,
                wgsl::LINEAR_EPILOGUE,
                wgsl::MATMUL_COOP,
            ],
            sizes: &[],
        }
    };
}

/// For 16×16 matrices, then 8×8; each f16, int8, nf4.
static COOP_16: [KernelSource; 3] = [
    coop!("f16_16", wgsl::WEIGHTS_F16, wgsl::COOP_16),
    coop!("int8_16", wgsl::WEIGHTS_INT8, wgsl::COOP_16),
    coop!("nf4_16", wgsl::WEIGHTS_NF4, wgsl::COOP_16),
];
static COOP_8: [KernelSource; 3] = [
    coop!("f16_8", wgsl::WEIGHTS_F16, wgsl::COOP_8),
    coop!("int8_8", wgsl::WEIGHTS_INT8, wgsl::COOP_8),
    coop!("nf4_8", wgsl::WEIGHTS_NF4, wgsl::COOP_8),
];

/// The cooperative-matrix product for `format` on `gpu`, and the size of its matrices, if the
/// adapter multiplies on them and the product takes that format.
pub fn coop_source(format: MatrixFormat, gpu: &Gpu) -> Option<(&'static KernelSource, CoopMatrix)> {
    let matrix = gpu.coop?;
    let sources = match matrix {
        CoopMatrix::Side16 => &COOP_16,
        CoopMatrix::Side8 => &COOP_8,
    };
    let source = match format {
        MatrixFormat::F16 => &sources[0],
        MatrixFormat::Int8 => &sources[1],
        MatrixFormat::Nf4 => &sources[2],
        MatrixFormat::F32 | MatrixFormat::Bf16 => return None,
    };
    Some((source, matrix))
}

const MATMUL_F16_ARITHMETIC: KernelSource = KernelSource {
    name: "matmul_f16_arithmetic",
    parts: &[
        wgsl::WEIGHTS_F16,
        wgsl::NEAREST_F16,
        wgsl::TILE_F16,
        wgsl::ACTIVATION,
        wgsl::LINEAR_EPILOGUE,
        wgsl::MATMUL,
    ],
    sizes: &[],
};

/// Whether the matrix-matrix kernel for `format` holds its tiles in f16.
pub fn f16_tiles(format: MatrixFormat, gpu: &Gpu) -> bool {
    format == MatrixFormat::F16 && gpu.f16_arithmetic
}

/// The assembly for a matrix format, one row (in `variant`) or more, and the adapter's
/// features. Only f16 weights may multiply in f16: f32 and bf16 storage exist to run a
/// checkpoint exactly, so their tiles stay f32.
pub fn source(format: MatrixFormat, one_row: Option<Variant>, gpu: &Gpu) -> &'static KernelSource {
    if one_row.is_none() && f16_tiles(format, gpu) {
        return &MATMUL_F16_ARITHMETIC;
    }
    let products = match (format, gpu.f16) {
        (MatrixFormat::F32, _) => &F32,
        (MatrixFormat::Bf16, _) => &BF16,
        (MatrixFormat::F16, true) => &F16,
        (MatrixFormat::F16, false) => &PACKED,
        (MatrixFormat::Int8, _) => &INT8,
        (MatrixFormat::Nf4, _) => &NF4,
    };
    match one_row {
        None => &products.matmul,
        Some(Variant::Plain) => &products.matvec,
        Some(Variant::Shifted) => &products.matvec_shifted,
        Some(Variant::Remembering) => &products.matvec_remembering,
    }
}
