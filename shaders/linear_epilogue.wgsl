// Prelude: how the linear kernels (matvec.wgsl, matmul.wgsl) finish and store an output value
// of row r, output column o:
//   y[r, out(o)] (+)= activate(dot + bias[o])          OPERAND_BIAS, or
//   y[r, out(o)] (+)= activate(dot) · gate[r, o]       OPERAND_GATE
// where out(o) lays the output columns out in blocks of block_cols, each block a [rows,
// block_cols] tensor block_stride apart (identity when block_cols = out_cols). The kernel's
// Params must have out_cols, block_cols and block_stride.
//
// binding 3  y        the output
// binding 4  operand  [out_cols] (bias) or [rows, out_cols] (gate)   *_operand entry points only

@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> operand: array<f32>;

override ACTIVATION: u32 = 0u;
// Add to y instead of overwriting it (residual connections).
override ACCUMULATE: bool = false;
const OPERAND_BIAS: u32 = 1u;
const OPERAND_GATE: u32 = 2u;
// How the *_operand entry points use binding 4.
override OPERAND: u32 = OPERAND_BIAS;

fn padded(cols: u32) -> u32 {
    return (cols + 3u) & ~3u;
}

fn store(r: u32, o: u32, value: f32) {
    let at = (o / params.block_cols) * params.block_stride + r * padded(params.block_cols) + o % params.block_cols;
    if ACCUMULATE {
        y[at] += value;
    } else {
        y[at] = value;
    }
}

fn with_operand(r: u32, o: u32, dot: f32) -> f32 {
    if OPERAND == OPERAND_GATE {
        return activate(ACTIVATION, dot) * operand[r * padded(params.out_cols) + o];
    }
    return activate(ACTIVATION, dot + operand[o]);
}
