// The uniform of the kernels that end in a group norm per head (group_norm.wgsl, wkv5_one.wgsl):
// kernels::norm::GroupNormParams.

struct Params {
    heads: u32,
    head_size: u32,
    eps: f32,
    _padding: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
