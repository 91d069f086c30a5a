// Matrix-vector product for a matrix stored by input (src/quant/by_input.rs): stored row i holds
// every output's weight for input i, so a zero input skips one contiguous row (SPARSE_INPUT, from
// matvec.wgsl, which this follows in the assembly).
//
// A workgroup computes OUTPUT_LANES vec4s of outputs; its threads are OUTPUT_LANES lanes, each
// a vec4 of outputs, times WORKGROUP_SIZE / OUTPUT_LANES slices of the inputs. Neighbouring lanes
// read neighbouring weights of a row. The slices' partial sums are added in a fixed tree in
// workgroup memory, so the result does not depend on timing; no workgroup waits for another.
// by_input_rows takes a batch of up to MOST_ROWS decoded sequences (FEW_ROWS in
// src/kernels/linear): each weight read serves every row, and an input is skipped where it is
// zero in every row.

// A power of two that divides WORKGROUP_SIZE (set by the pipeline).
override OUTPUT_LANES: u32 = 16u;
const MOST_ROWS: u32 = 8u;

var<workgroup> slice_sums: array<vec4<f32>, WORKGROUP_SIZE>;

// Output vec4 o4's sum over inputs 4·i4 … for i4 = first, first + step, … of one row.
fn by_input_dot(input: u32, o4: u32, first: u32, step: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    for (var i4 = first; i4 < params.cols4; i4 += step) {
        let xi = input4(input, i4);
        if SPARSE_INPUT && all(xi == vec4<f32>(0.0)) {
            continue;
        }
        let at = 4u * i4 * params.stride4 + o4;
        for (var m = 0u; m < 4u; m++) {
            if !SPARSE_INPUT || xi[m] != 0.0 {
                acc += load_weight4(at + m * params.stride4) * xi[m];
            }
        }
    }
    return acc;
}

// Adds the slices' sums of row r in a fixed tree and finishes them. Called by every thread.
fn finish_slices(r: u32, acc: vec4<f32>, thread: u32, o4: u32) {
    let slices = WORKGROUP_SIZE / OUTPUT_LANES;
    let slice = thread / OUTPUT_LANES;
    slice_sums[thread] = acc;
    workgroupBarrier();
    for (var half_slices = slices / 2u; half_slices > 0u; half_slices /= 2u) {
        if slice < half_slices {
            slice_sums[thread] += slice_sums[thread + half_slices * OUTPUT_LANES];
        }
        workgroupBarrier();
    }
    if slice == 0u && o4 < (params.part_cols + 3u) / 4u {
        let total = slice_sums[thread];
        for (var m = 0u; m < 4u; m++) {
            let o = 4u * o4 + m;
            if o < params.part_cols {
                finish(r, params.col_offset + o, total[m]);
            }
        }
    }
    // The next row's sums overwrite these.
    workgroupBarrier();
}

fn output_vec4(group: vec3<u32>, groups: vec3<u32>, thread: u32) -> u32 {
    return row_index(group, groups, OUTPUT_LANES) + thread % OUTPUT_LANES;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn by_input(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
            @builtin(local_invocation_index) thread: u32) {
    let first_group = group.x == 0u && group.y == 0u;
    prepare_input(first_group, thread);
    remember_input(first_group, thread);
    let o4 = output_vec4(group, groups, thread);
    var acc = vec4<f32>(0.0);
    if o4 < (params.part_cols + 3u) / 4u {
        acc = by_input_dot(x_base(params.col_offset), o4, thread / OUTPUT_LANES, WORKGROUP_SIZE / OUTPUT_LANES);
    }
    finish_slices(0u, acc, thread, o4);
}

// Up to MOST_ROWS rows of plain input.
@compute @workgroup_size(WORKGROUP_SIZE)
fn by_input_rows(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                 @builtin(local_invocation_index) thread: u32) {
    let rows = min(params.rows, MOST_ROWS);
    let o4 = output_vec4(group, groups, thread);
    let input = x_base(params.col_offset);
    var acc: array<vec4<f32>, MOST_ROWS>;
    if o4 < (params.part_cols + 3u) / 4u {
        for (var i4 = thread / OUTPUT_LANES; i4 < params.cols4; i4 += WORKGROUP_SIZE / OUTPUT_LANES) {
            var xs: array<vec4<f32>, MOST_ROWS>;
            var nonzero = vec4<bool>(false);
            // Loops over MOST_ROWS with a test inside unroll to constant indices, which keeps
            // the arrays in registers.
            for (var r = 0u; r < MOST_ROWS; r++) {
                if r < rows {
                    xs[r] = input4(input + r * params.cols4, i4);
                    nonzero = nonzero | (xs[r] != vec4<f32>(0.0));
                }
            }
            if SPARSE_INPUT && !any(nonzero) {
                continue;
            }
            let at = 4u * i4 * params.stride4 + o4;
            for (var m = 0u; m < 4u; m++) {
                if !SPARSE_INPUT || nonzero[m] {
                    let w = load_weight4(at + m * params.stride4);
                    for (var r = 0u; r < MOST_ROWS; r++) {
                        acc[r] += w * xs[r][m];
                    }
                }
            }
        }
    }
    for (var r = 0u; r < MOST_ROWS; r++) {
        if r < rows {
            finish_slices(r, acc[r], thread, o4);
        }
    }
}
