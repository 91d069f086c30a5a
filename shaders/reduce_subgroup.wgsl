// Prelude: sums across the threads of a workgroup, for adapters with subgroup operations
// (replaces reduce.wgsl there). Each subgroup adds its values in registers; its first active
// thread posts the subgroup's total, and every thread adds the posted totals: two barriers
// instead of reduce.wgsl's seven, whatever the subgroup size and however threads map to
// subgroups. Must be called from uniform control flow by every thread of the workgroup.

// The kernels' workgroup size: 64, or set by the pipeline (the sampler's is 256).
override WORKGROUP_SIZE: u32 = 64u;

var<workgroup> reduce_scratch: array<f32, WORKGROUP_SIZE>;

fn workgroup_sum(value: f32, thread: u32) -> f32 {
    let subgroup_total = subgroupAdd(value);
    let first_in_subgroup = subgroupExclusiveAdd(1u) == 0u;
    reduce_scratch[thread] = select(0.0, subgroup_total, first_in_subgroup);
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < WORKGROUP_SIZE; i++) {
        total += reduce_scratch[i];
    }
    // Nobody may overwrite the scratch for the next sum before everyone has read this one.
    workgroupBarrier();
    return total;
}
