// Prelude of matvec.wgsl: the first workgroup copies the normalized input an earlier
// input_shifted.wgsl product stored (`normed`) into the sequence's state slot (`prev`), which no
// other kernel of the dispatch reads. Needs sequences.wgsl.
//
// binding 5  normed  [1, norm_len]
// binding 6  prev    [slots, norm_len]
// binding 7  sequences                  (uniform; the step's one sequence gives the slot)

@group(0) @binding(5) var<storage, read> normed: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> prev: array<vec4<f32>>;
@group(0) @binding(7) var<uniform> sequences: Sequences;

fn remember_input(first_group: bool, thread: u32) {
    if first_group {
        let len4 = (params.norm_len + 3u) / 4u;
        let row = sequences.items[0].slot * len4;
        for (var i = thread; i < len4; i += WORKGROUP_SIZE) {
            prev[row + i] = normed[i];
        }
    }
}
