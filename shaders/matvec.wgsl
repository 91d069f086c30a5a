// Matrix-vector product with an optional operand, activation and residual:
//   y[out(row)] (+)= activate(W[row, :] · x + bias[row])      operand used as a bias, or
//   y[out(row)] (+)= activate(W[row, :] · x) · gate[row]      operand used as a gate
// where out(row) lays the rows out in blocks of block_rows, block_stride apart, so one matrix
// can fill several rows of a stack (identity when block_rows = rows).
// Needs a weights prelude (weights_f16.wgsl or weights_packed.wgsl) for binding 1 and
// load_weight4, plus reduce.wgsl and activation.wgsl.
//
// binding 0  params
// binding 1  weights  [rows, stride] f16       (from the prelude)
// binding 2  x        [cols4] vec4<f32>        zero-padded past cols
// binding 3  y        rows, laid out by out(row)
// binding 4  operand  [rows] f32               only the *_operand entry points

struct Params {
    rows: u32,
    cols4: u32,    // vec4s per row that hold data
    stride4: u32,  // vec4s from one row to the next
    block_rows: u32,
    block_stride: u32,
    _padding0: u32,
    _padding1: u32,
    _padding2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> operand: array<f32>;

override ACTIVATION: u32 = 0u;
// Add to y instead of overwriting it (residual connections).
override ACCUMULATE: bool = false;
const OPERAND_BIAS: u32 = 1u;
const OPERAND_GATE: u32 = 2u;
// How the *_operand entry points use binding 4.
override OPERAND: u32 = OPERAND_BIAS;

fn partial_dot(row: u32, first: u32, step: u32) -> f32 {
    let base = row * params.stride4;
    var acc = vec4<f32>(0.0);
    for (var i = first; i < params.cols4; i += step) {
        acc += load_weight4(base + i) * x[i];
    }
    return acc.x + acc.y + acc.z + acc.w;
}

fn with_operand(row: u32, dot: f32) -> f32 {
    if OPERAND == OPERAND_GATE {
        return activate(ACTIVATION, dot) * operand[row];
    }
    return activate(ACTIVATION, dot + operand[row]);
}

fn store(row: u32, value: f32) {
    let at = (row / params.block_rows) * params.block_stride + row % params.block_rows;
    if ACCUMULATE {
        y[at] += value;
    } else {
        y[at] = value;
    }
}

fn row_index(id: vec3<u32>, groups: vec3<u32>, per_group: u32) -> u32 {
    return (id.x + id.y * groups.x) * per_group;
}

// One thread computes a whole row: best for CPU drivers (see gpu::RowMapping).
@compute @workgroup_size(64)
fn thread_per_row(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                  @builtin(local_invocation_index) thread: u32) {
    let row = row_index(group, groups, WORKGROUP_SIZE) + thread;
    if row < params.rows {
        store(row, activate(ACTIVATION, partial_dot(row, 0u, 1u)));
    }
}

@compute @workgroup_size(64)
fn thread_per_row_operand(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                          @builtin(local_invocation_index) thread: u32) {
    let row = row_index(group, groups, WORKGROUP_SIZE) + thread;
    if row < params.rows {
        store(row, with_operand(row, partial_dot(row, 0u, 1u)));
    }
}

// A workgroup shares a row, neighbouring threads reading neighbouring weights: best for GPUs.
@compute @workgroup_size(64)
fn workgroup_per_row(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                     @builtin(local_invocation_index) thread: u32) {
    let row = row_index(group, groups, 1u);
    if row >= params.rows {
        return;
    }
    let total = workgroup_sum(partial_dot(row, thread, WORKGROUP_SIZE), thread);
    if thread == 0u {
        store(row, activate(ACTIVATION, total));
    }
}

@compute @workgroup_size(64)
fn workgroup_per_row_operand(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                             @builtin(local_invocation_index) thread: u32) {
    let row = row_index(group, groups, 1u);
    if row >= params.rows {
        return;
    }
    let total = workgroup_sum(partial_dot(row, thread, WORKGROUP_SIZE), thread);
    if thread == 0u {
        store(row, with_operand(row, total));
    }
}
