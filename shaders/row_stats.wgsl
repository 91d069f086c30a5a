// Prelude: the mean and 1 / std of a row of `x` ([rows, params.len], rows padded to whole vec4s),
// for the layer norms. Needs reduce.wgsl; the kernel declares `x` and `params` with `len` and
// `eps`. Must be called from uniform control flow by every thread of the workgroup.

// Two passes rather than E[x²] − E[x]², which loses precision when |mean| >> std.
fn row_stats(row: u32, thread: u32) -> vec2<f32> {
    let base = row * ((params.len + 3u) & ~3u);
    let len = f32(params.len);
    var sum = 0.0;
    for (var i = thread; i < params.len; i += WORKGROUP_SIZE) {
        sum += x[base + i];
    }
    let mean = workgroup_sum(sum, thread) / len;
    var squares = 0.0;
    for (var i = thread; i < params.len; i += WORKGROUP_SIZE) {
        let d = x[base + i] - mean;
        squares += d * d;
    }
    return vec2<f32>(mean, inverseSqrt(workgroup_sum(squares, thread) / len + params.eps));
}
