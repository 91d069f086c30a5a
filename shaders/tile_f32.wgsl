// Prelude: matmul.wgsl's tiles hold f32 and multiply in f32.
alias TileValue = vec4<f32>;
