// Matrix-vector product for a step of one row: y (+)= epilogue(W · x), each output row of W
// (output column o) dotted with x. W may be one part of a matrix split by rows: its rows are the
// output columns col_offset .. col_offset + part_cols. Needs a weights prelude (weights_*.wgsl)
// for binding 1 and load_weight4, plus reduce.wgsl, activation.wgsl and linear_epilogue.wgsl
// (bindings 3 and 4, store and with_operand).
//
// binding 0  params
// binding 1  weights  [part_cols rows]         (from the prelude)
// binding 2  x        [cols4] vec4<f32>        zero-padded past cols
// binding 3  y        (from linear_epilogue.wgsl)
// binding 4  operand  (from linear_epilogue.wgsl)

struct Params {
    out_cols: u32,
    part_cols: u32,
    col_offset: u32,
    cols4: u32,          // vec4s per row that hold data
    stride4: u32,        // vec4s from one row of W to the next
    scales_offset: u32,  // where quantized formats keep their block parameters
    block_cols: u32,
    block_stride: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;

// The input is mostly zeros (the channel mix's squared ReLU): skip the weights they multiply.
override SPARSE_INPUT: bool = false;

fn partial_dot(row: u32, first: u32, step: u32) -> f32 {
    let base = row * params.stride4;
    var acc = vec4<f32>(0.0);
    for (var i = first; i < params.cols4; i += step) {
        let xi = x[i];
        if !SPARSE_INPUT || any(xi != vec4<f32>(0.0)) {
            acc += load_weight4(base + i) * xi;
        }
    }
    return acc.x + acc.y + acc.z + acc.w;
}

fn row_index(id: vec3<u32>, groups: vec3<u32>, per_group: u32) -> u32 {
    return (id.x + id.y * groups.x) * per_group;
}

// One thread computes a whole row: best for CPU drivers (see gpu::RowMapping).
@compute @workgroup_size(64)
fn thread_per_row(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                  @builtin(local_invocation_index) thread: u32) {
    let row = row_index(group, groups, WORKGROUP_SIZE) + thread;
    if row < params.part_cols {
        store(0u, params.col_offset + row, activate(ACTIVATION, partial_dot(row, 0u, 1u)));
    }
}

@compute @workgroup_size(64)
fn thread_per_row_operand(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                          @builtin(local_invocation_index) thread: u32) {
    let row = row_index(group, groups, WORKGROUP_SIZE) + thread;
    if row < params.part_cols {
        let o = params.col_offset + row;
        store(0u, o, with_operand(0u, o, partial_dot(row, 0u, 1u)));
    }
}

// A workgroup shares a row, neighbouring threads reading neighbouring weights: best for GPUs.
@compute @workgroup_size(64)
fn workgroup_per_row(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                     @builtin(local_invocation_index) thread: u32) {
    let row = row_index(group, groups, 1u);
    if row >= params.part_cols {
        return;
    }
    let total = workgroup_sum(partial_dot(row, thread, WORKGROUP_SIZE), thread);
    if thread == 0u {
        store(0u, params.col_offset + row, activate(ACTIVATION, total));
    }
}

@compute @workgroup_size(64)
fn workgroup_per_row_operand(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                             @builtin(local_invocation_index) thread: u32) {
    let row = row_index(group, groups, 1u);
    if row >= params.part_cols {
        return;
    }
    let total = workgroup_sum(partial_dot(row, thread, WORKGROUP_SIZE), thread);
    if thread == 0u {
        store(0u, params.col_offset + row, with_operand(0u, params.col_offset + row, total));
    }
}
