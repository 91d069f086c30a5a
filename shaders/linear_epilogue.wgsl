// Prelude of the linear kernels (matvec.wgsl, matmul.wgsl): their parameters, and how they finish
// and store an output value.
//
// A product may be *grouped*: the rows of W are several matrices stacked, each a segment of the
// output columns with its own input, output and activation (RWKV-7's r, k and v projections read
// x_r, x_k and x_v; its LoRA inputs each read their own token-shift mix). Segment s covers output
// columns segment_start[s] .. segment_end[s]; its input starts at vec4 x_at[s] of binding 2 and its
// output, a [rows, columns] tensor, at element y_at[s] of binding 3. A plain product is one segment.
//
// Output value for row r, output column o in segment s:
//   y (+)= activate(dot)                                   no operand
//   y (+)= activate(dot + bias[o])                         OPERAND_BIAS
//   y (+)= activate(dot) · gate[r, o]                      OPERAND_GATE
//   y  = y + (y[lerp_offset later] − y) · activate(dot + bias[o])   OPERAND_LERP: pull y towards
//        the tensor lerp_offset elements further on in binding 3 (RWKV-7's value residual)
//
// binding 3  y        the outputs
// binding 4  operand  [out_cols] (bias, lerp) or [rows, out_cols] (gate); see OPERAND

struct Params {
    rows: u32,
    out_cols: u32,
    part_cols: u32,      // output columns this dispatch computes …
    col_offset: u32,     // … starting at this one
    weight_row0: u32,    // the row of the bound weights that holds output column col_offset
    cols4: u32,          // vec4s per row of x and of W that hold data
    stride4: u32,        // vec4s from one row of W to the next
    scales_offset: u32,  // where quantized formats keep their block parameters
    lerp_offset: u32,
    norm_len: u32,       // channels of the vector input_shifted.wgsl normalizes or remember_input.wgsl keeps
    eps: f32,            // input_shifted.wgsl's layer norm
    _padding: u32,
    segment_start: array<vec4<u32>, 2>,
    segment_end: array<vec4<u32>, 2>,   // past the last segment: 0xffffffff
    x_at: array<vec4<u32>, 2>,
    y_at: array<vec4<u32>, 2>,
    activation: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> operand: array<f32>;

// Add to y instead of overwriting it (residual connections).
override ACCUMULATE: bool = false;
const OPERAND_NONE: u32 = 0u;
const OPERAND_BIAS: u32 = 1u;
const OPERAND_GATE: u32 = 2u;
const OPERAND_LERP: u32 = 3u;
// How binding 4 takes part (kernels::linear's OperandKind). Without an operand, binding 4 is
// the input's buffer again, never read.
override OPERAND: u32 = OPERAND_NONE;

fn padded(cols: u32) -> u32 {
    return (cols + 3u) & ~3u;
}

fn segment_of(o: u32) -> u32 {
    let one = vec4<u32>(1u);
    let zero = vec4<u32>(0u);
    let past = select(zero, one, vec4<u32>(o) >= params.segment_end[0])
        + select(zero, one, vec4<u32>(o) >= params.segment_end[1]);
    return past.x + past.y + past.z + past.w;
}

// Where the input of output column o starts, in vec4s of binding 2.
fn x_base(o: u32) -> u32 {
    let s = segment_of(o);
    return params.x_at[s / 4u][s % 4u];
}

// Where output column o of row r is stored in binding 3, and its segment's activation.
fn output_at(r: u32, o: u32) -> u32 {
    let s = segment_of(o);
    let start = params.segment_start[s / 4u][s % 4u];
    return params.y_at[s / 4u][s % 4u] + r * padded(params.segment_end[s / 4u][s % 4u] - start) + o - start;
}

fn activation_of(o: u32) -> u32 {
    let s = segment_of(o);
    return params.activation[s / 4u][s % 4u];
}

fn put(at: u32, value: f32) {
    if ACCUMULATE {
        y[at] += value;
    } else {
        y[at] = value;
    }
}

// Stores output column o of row r: the epilogue applied to its dot product.
fn finish(r: u32, o: u32, dot: f32) {
    let at = output_at(r, o);
    let kind = activation_of(o);
    switch OPERAND {
        case OPERAND_LERP: {
            y[at] += (y[at + params.lerp_offset] - y[at]) * activate(kind, dot + operand[o]);
        }
        case OPERAND_GATE: {
            put(at, activate(kind, dot) * operand[r * padded(params.out_cols) + o]);
        }
        case OPERAND_BIAS: {
            put(at, activate(kind, dot + operand[o]));
        }
        default: {
            put(at, activate(kind, dot));
        }
    }
}
