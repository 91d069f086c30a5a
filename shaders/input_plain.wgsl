// Prelude of matvec.wgsl: the input is a tensor in binding 2, each segment's starting at vec4
// x_at[s] and zero-padded past cols.

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;

fn prepare_input(first_group: bool, thread: u32) {}

fn input4(base: u32, i: u32) -> vec4<f32> {
    return x[base + i];
}
