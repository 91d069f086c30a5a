// subgroups only: the kernel assembly leaves this part out on adapters without them.
//
// matvec.wgsl's entry point for GPUs with subgroup operations (the pipeline sets
// WORKGROUP_SIZE; the assembly has reduce_subgroup.wgsl), for steps of up to FEW_ROWS rows.
// Several rows of W per workgroup, a subgroup per row of W: each lane reads two neighbouring vec4s of weights per step (wide loads,
// several in flight) and the subgroup sums in registers, with no barrier; the rows of a
// workgroup share the input through the cache. Each subgroup takes a number by an atomic, so
// nothing assumes how invocations map to subgroups; rows are walked in a grid-stride loop, so
// any subgroup size covers them all.
// Up to FEW_ROWS rows of input (a batch of decoded sequences) share each weight they read.
const FEW_ROWS: u32 = 8u;
// The most rows this pipeline takes: 1 for one-token steps (the pipeline sets it), so that their
// loops over rows are a single pass.
override ROWS_AT_MOST: u32 = FEW_ROWS;

// How many subgroups of the workgroup have taken their number.
var<workgroup> subgroups_numbered: atomic<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn subgroup_per_row(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                    @builtin(local_invocation_index) thread: u32,
                    @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) lanes: u32) {
    let first_group = group.x == 0u && group.y == 0u;
    prepare_input(first_group, thread);
    remember_input(first_group, thread);
    let rows_per_group = WORKGROUP_SIZE / lanes;
    let stride = groups.x * groups.y * rows_per_group;
    let first_row = (group.x + group.y * groups.x) * rows_per_group;
    let inputs = min(params.rows, FEW_ROWS);
    var number = 0u;
    if lane == 0u {
        number = atomicAdd(&subgroups_numbered, 1u);
    }
    let own_row = subgroupBroadcast(number, 0u);
    // Were some subgroups smaller than `lanes`, the extra ones would find every row taken.
    let rows_end = select(0u, params.part_cols, own_row < rows_per_group);
    for (var row = first_row + own_row; row < rows_end; row += stride) {
        let base = (params.weight_row0 + row) * params.stride4;
        let input = x_base(params.col_offset + row);
        var acc: array<vec4<f32>, FEW_ROWS>;
        for (var i = 2u * lane; i < params.cols4; i += 2u * lanes) {
            let second = i + 1u < params.cols4;
            let i1 = min(i + 1u, params.cols4 - 1u);
            // A sparse input reads only the weights of its nonzero groups (again per row:
            // a batch's rows share them through the cache).
            var w0 = vec4<f32>(0.0);
            var w1 = vec4<f32>(0.0);
            if !SPARSE_INPUT {
                w0 = load_weight4(base + i);
                w1 = select(vec4<f32>(0.0), load_weight4(base + i1), second);
            }
            // Loops to a constant with the row test inside unroll to constant indices, which
            // keeps acc in registers (a loop to `inputs` indexes it dynamically, which puts it
            // in memory).
            for (var r = 0u; r < ROWS_AT_MOST; r++) {
                if r < inputs {
                    let x0 = input4(input + r * params.cols4, i);
                    let x1 = select(vec4<f32>(0.0), input4(input + r * params.cols4, i1), second);
                    if SPARSE_INPUT {
                        if any(x0 != vec4<f32>(0.0)) {
                            acc[r] += load_weight4(base + i) * x0;
                        }
                        if any(x1 != vec4<f32>(0.0)) {
                            acc[r] += load_weight4(base + i1) * x1;
                        }
                    } else {
                        acc[r] += w0 * x0 + w1 * x1;
                    }
                }
            }
        }
        for (var r = 0u; r < ROWS_AT_MOST; r++) {
            if r < inputs {
                let total = subgroupAdd(acc[r].x + acc[r].y + acc[r].z + acc[r].w);
                if lane == 0u {
                    finish(r, params.col_offset + row, total);
                }
            }
        }
    }
}
