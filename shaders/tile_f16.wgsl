// Prelude: matmul.wgsl's tiles hold f16 and multiply in f16 (adapters with SHADER_F16; after
// weights_f16.wgsl, which enables f16). The weights are f16 already; the inputs are rounded to
// f16 (a relative error of at most 2^-11), each 4-term product is summed in f16 and the sums over
// the inner dimension in f32. Half the workgroup memory and twice the arithmetic rate of f32 on
// most GPUs, for prefill.
alias TileValue = vec4<f16>;
