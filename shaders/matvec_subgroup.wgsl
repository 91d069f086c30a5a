// subgroups only: the kernel assembly leaves this part out on adapters without them.
//
// matvec.wgsl's entry point for GPUs with subgroup operations (the pipeline sets
// WORKGROUP_SIZE; the assembly has reduce_subgroup.wgsl). Several rows per workgroup, a
// subgroup per row: each lane reads two neighbouring vec4s of weights per step (wide loads,
// several in flight) and the subgroup sums in registers, with no barrier; the rows of a
// workgroup share the input through the cache. Subgroups are taken to be consecutive
// invocations of the workgroup, as on every GPU we know of; rows are walked in a grid-stride
// loop, so any subgroup size covers them all.
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
    for (var row = first_row + thread / lanes; row < params.part_cols; row += stride) {
        let base = (params.weight_row0 + row) * params.stride4;
        let input = x_base(params.col_offset + row);
        var acc = vec4<f32>(0.0);
        for (var i = 2u * lane; i < params.cols4; i += 2u * lanes) {
            let x0 = input4(input, i);
            if !SPARSE_INPUT || any(x0 != vec4<f32>(0.0)) {
                acc += load_weight4(base + i) * x0;
            }
            if i + 1u < params.cols4 {
                let x1 = input4(input, i + 1u);
                if !SPARSE_INPUT || any(x1 != vec4<f32>(0.0)) {
                    acc += load_weight4(base + i + 1u) * x1;
                }
            }
        }
        let total = subgroupAdd(acc.x + acc.y + acc.z + acc.w);
        if lane == 0u {
            finish(0u, params.col_offset + row, total);
        }
    }
}
