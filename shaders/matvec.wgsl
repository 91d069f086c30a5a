// Matrix-vector product for a step of one row: y (+)= epilogue(W · x), each output row of W
// (output column o) dotted with its segment's input. W may be one part of a matrix split by rows:
// it then holds output columns col_offset .. col_offset + part_cols. Needs a weights prelude
// (weights_*.wgsl) for binding 1 and load_weight4, reduce.wgsl, activation.wgsl,
// linear_epilogue.wgsl (params, bindings 3 and 4, x_base and finish), an input prelude for
// binding 2 (input_plain.wgsl, or input_shifted.wgsl, which computes the input from the residual
// stream in a prologue) and a prelude saying what the first workgroup leaves in a sequence's state
// (remember_nothing.wgsl, or remember_input.wgsl).
//
// binding 0  params
// binding 1  weights  [part_cols rows]         (from the weights prelude)
// binding 2  x                                 (from the input prelude)
// binding 3  y        (from linear_epilogue.wgsl)
// binding 4  operand  (from linear_epilogue.wgsl)
// binding 5…          (from the input and remember preludes)

// The input is mostly zeros (the channel mix's squared ReLU): skip the weights they multiply.
override SPARSE_INPUT: bool = false;

// Part of the dot product of output column col_offset + row with its input: vec4s first,
// first + step, …
fn partial_dot(row: u32, first: u32, step: u32) -> f32 {
    let base = (params.weight_row0 + row) * params.stride4;
    let input = x_base(params.col_offset + row);
    var acc = vec4<f32>(0.0);
    for (var i = first; i < params.cols4; i += step) {
        let xi = input4(input, i);
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
    let first_group = group.x == 0u && group.y == 0u;
    prepare_input(first_group, thread);
    let row = row_index(group, groups, WORKGROUP_SIZE) + thread;
    if row < params.part_cols {
        finish(0u, params.col_offset + row, partial_dot(row, 0u, 1u));
    }
    remember_input(first_group, thread);
}

// A workgroup shares a row, neighbouring threads reading neighbouring weights: best for GPUs.
@compute @workgroup_size(64)
fn workgroup_per_row(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                     @builtin(local_invocation_index) thread: u32) {
    let first_group = group.x == 0u && group.y == 0u;
    prepare_input(first_group, thread);
    remember_input(first_group, thread);
    let row = row_index(group, groups, 1u);
    if row >= params.part_cols {
        return;
    }
    let total = workgroup_sum(partial_dot(row, thread, WORKGROUP_SIZE), thread);
    if thread == 0u {
        finish(0u, params.col_offset + row, total);
    }
}
