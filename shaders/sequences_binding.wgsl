// Prelude: the step's sequence table (sequences.wgsl) at binding 1.
@group(0) @binding(1) var<uniform> sequences: Sequences;
