// Prelude: sums across the threads of a workgroup through workgroup memory.
// Must be called from uniform control flow by every thread of the workgroup.

// The kernels' workgroup size: 64, or set by the pipeline (the sampler's is 256). A power of two.
override WORKGROUP_SIZE: u32 = 64u;

var<workgroup> reduce_scratch: array<f32, WORKGROUP_SIZE>;

fn workgroup_sum(value: f32, thread: u32) -> f32 {
    reduce_scratch[thread] = value;
    workgroupBarrier();
    for (var half_size = WORKGROUP_SIZE / 2u; half_size > 0u; half_size = half_size / 2u) {
        if thread < half_size {
            reduce_scratch[thread] += reduce_scratch[thread + half_size];
        }
        workgroupBarrier();
    }
    let total = reduce_scratch[0];
    // Nobody may overwrite the scratch for the next sum before everyone has read this one.
    workgroupBarrier();
    return total;
}
