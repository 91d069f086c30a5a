// Prelude: the storage bindings of the RWKV-4 and RWKV-5/6 recurrences (wkv4.wgsl, wkv5.wgsl),
// after their params (binding 0) and the sequence table (binding 1, sequences.wgsl); what each
// holds is listed in the kernel's file. The Rust side is kernels::sequences::WKV_BINDINGS.

@group(0) @binding(2) var<storage, read_write> state: array<f32>;
@group(0) @binding(3) var<storage, read> r: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> w: array<f32>;
@group(0) @binding(7) var<storage, read> u: array<f32>;
@group(0) @binding(8) var<storage, read_write> y: array<f32>;
