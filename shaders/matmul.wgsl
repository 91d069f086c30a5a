// Matrix-matrix product for the rows (tokens) of a step: y[r] (+)= epilogue(W · x[r]). Each
// dispatch computes output columns col_offset .. col_offset + part_cols of one segment (see
// linear_epilogue.wgsl), from weight row weight_row0 of the bound part on, reading that segment's
// input [rows, cols4] from x_at[segment] of binding 2.
// Needs a weights prelude (binding 1, load_weight4), a tile prelude (tile_f32.wgsl or
// tile_f16.wgsl), activation.wgsl and linear_epilogue.wgsl (params, bindings 3 and 4, x_base and
// finish).
//
// Two tilings, chosen per adapter like matvec's row mappings:
//   blocked  each thread computes 4 rows × 4 columns straight from memory, no barriers (CPU drivers)
//   tiled    a 16×16 workgroup computes 64 × 64 outputs through double-buffered workgroup
//            memory, 4 × 4 per thread in registers (GPUs)
// Both read weights stored by output (each row an output) or, with WEIGHTS_BY_INPUT, by input.
//
// binding 0  params
// binding 1  weights  (from the prelude)
// binding 2  x        [rows, cols4] vec4<f32> per segment
// binding 3  y        (from linear_epilogue.wgsl)
// binding 4  operand  (from linear_epilogue.wgsl)

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;

// The weights are stored by input (src/quant/by_input.rs): the vec4 load_weight4 returns holds
// four outputs of one input, which each kernel transposes as it reads.
override WEIGHTS_BY_INPUT: bool = false;

// Inputs 4·k … 4·k + 3 of the four outputs from o (a multiple of 4), stored by input: column j
// of the result is output o + j.
fn weights_by_input(k: u32, o: u32) -> mat4x4<f32> {
    let at = 4u * k * params.stride4 + (params.weight_row0 + o) / 4u;
    let rows = mat4x4<f32>(load_weight4(at), load_weight4(at + params.stride4),
                           load_weight4(at + 2u * params.stride4), load_weight4(at + 3u * params.stride4));
    return transpose(rows);
}
// A 4 × 4 block of dot products: acc[i][j] for rows row0 + i and columns col0 + j. Written out
// without loops or dynamic indices so that the accumulators stay in registers; rows and columns
// past the end read the last valid one (their results are never stored).
fn block_dots(row0: u32, col0: u32) -> array<vec4<f32>, 4> {
    let last_row = params.rows - 1u;
    let last_col = params.part_cols - 1u;
    let input = x_base(params.col_offset);
    let x0 = input + min(row0, last_row) * params.cols4;
    let x1 = input + min(row0 + 1u, last_row) * params.cols4;
    let x2 = input + min(row0 + 2u, last_row) * params.cols4;
    let x3 = input + min(row0 + 3u, last_row) * params.cols4;
    let w = params.weight_row0;
    let w0 = (w + min(col0, last_col)) * params.stride4;
    let w1 = (w + min(col0 + 1u, last_col)) * params.stride4;
    let w2 = (w + min(col0 + 2u, last_col)) * params.stride4;
    let w3 = (w + min(col0 + 3u, last_col)) * params.stride4;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k = 0u; k < params.cols4; k++) {
        var a: vec4<f32>;
        var b: vec4<f32>;
        var c: vec4<f32>;
        var d: vec4<f32>;
        if WEIGHTS_BY_INPUT {
            let w = weights_by_input(k, col0);
            a = w[0];
            b = w[1];
            c = w[2];
            d = w[3];
        } else {
            a = load_weight4(w0 + k);
            b = load_weight4(w1 + k);
            c = load_weight4(w2 + k);
            d = load_weight4(w3 + k);
        }
        let r0 = x[x0 + k];
        let r1 = x[x1 + k];
        let r2 = x[x2 + k];
        let r3 = x[x3 + k];
        acc0 += vec4<f32>(dot(r0, a), dot(r0, b), dot(r0, c), dot(r0, d));
        acc1 += vec4<f32>(dot(r1, a), dot(r1, b), dot(r1, c), dot(r1, d));
        acc2 += vec4<f32>(dot(r2, a), dot(r2, b), dot(r2, c), dot(r2, d));
        acc3 += vec4<f32>(dot(r3, a), dot(r3, b), dot(r3, c), dot(r3, d));
    }
    return array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
}

@compute @workgroup_size(64)
fn blocked(@builtin(global_invocation_id) id: vec3<u32>) {
    let row0 = id.y * 4u;
    let col0 = id.x * 4u;
    if col0 >= params.part_cols {
        return;
    }
    let acc = block_dots(row0, col0);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            if row0 + i < params.rows && col0 + j < params.part_cols {
                finish(row0 + i, params.col_offset + col0 + j, acc[i][j]);
            }
        }
    }
}

const TILE: u32 = 64u;
// 16 values of the inner dimension per round, as 4 vec4s.
const ROUND4: u32 = 4u;
// Vec4s of one buffer of a tile: TILE lines (rows of x, or columns of W) × ROUND4.
const TILE_VEC4S: u32 = 256u;

// TileValue (from tile_f32.wgsl or tile_f16.wgsl) is what the tiles hold and the products are
// computed in; the sums over k are f32 either way. Two buffers of each tile: a round reads one
// while the next round's values are stored into the other, so one barrier per round suffices.
// 16 KiB with f32 tiles, WebGPU's guaranteed workgroup memory.
var<workgroup> x_tile: array<TileValue, 512>;  // [2][TILE rows][ROUND4], swizzled
var<workgroup> w_tile: array<TileValue, 512>;  // [2][TILE columns][ROUND4], swizzled

// Where vec4 k4 of a round of tile line `line` is kept. The vec4s of a line are permuted by two
// bits of the line (TILE_SWIZZLE_SHIFT, from the tile prelude), so that the lanes reading vec4 k4
// of consecutive lines touch different banks (unpermuted, lines 4 vec4s apart would collide
// 4 to a bank group).
fn tile_slot(line: u32, k4: u32) -> u32 {
    return line * ROUND4 + (k4 ^ ((line >> TILE_SWIZZLE_SHIFT) & 3u));
}

// Vec4 k of input row `line` or of weight row `column`, from memory (zero past the ends).
fn input_vec4(input: u32, line: u32, k: u32) -> vec4<f32> {
    if line < params.rows && k < params.cols4 {
        return x[input + line * params.cols4 + k];
    }
    return vec4<f32>(0.0);
}

fn weight_vec4(column: u32, k: u32) -> vec4<f32> {
    if column < params.part_cols && k < params.cols4 {
        return load_weight4((params.weight_row0 + column) * params.stride4 + k);
    }
    return vec4<f32>(0.0);
}

// What a thread loads of a round's weight tile: vec4 thread % ROUND4 of the round's inputs of
// tile column thread / ROUND4 (column 0 of the result). Stored by input, the first 64 threads
// each load a 4 × 4 block, inputs 4·(thread / 16) … + 3 of the round and outputs
// 4·(thread % 16) … + 3 (neighbouring threads reading neighbouring outputs), transposed so that
// column j holds output j's inputs: whole vec4s of the tile, each stored by one thread.
fn fetch_weights(col0: u32, round: u32, thread: u32) -> mat4x4<f32> {
    if WEIGHTS_BY_INPUT {
        let k = round * ROUND4 + thread / 16u;
        let column = col0 + (thread % 16u) * 4u;
        if thread < 64u && column < params.part_cols && k < params.cols4 {
            return weights_by_input(k, column);
        }
        return mat4x4<f32>();
    }
    let w = weight_vec4(col0 + thread / ROUND4, round * ROUND4 + thread % ROUND4);
    return mat4x4<f32>(w, vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
}

// Stores what fetch_weights loaded into the weight tile buffer starting at `buffer`.
fn stage_weights(buffer: u32, thread: u32, w: mat4x4<f32>) {
    if WEIGHTS_BY_INPUT {
        if thread < 64u {
            let line = (thread % 16u) * 4u;
            for (var j = 0u; j < 4u; j++) {
                w_tile[buffer + tile_slot(line + j, thread / 16u)] = TileValue(w[j]);
            }
        }
    } else {
        w_tile[buffer + tile_slot(thread / ROUND4, thread % ROUND4)] = TileValue(w[0]);
    }
}

// Register tiling: acc[i][j] for row row0 + local.y + 16·i and column col0 + local.x + 16·j.
// Interleaving a thread's rows and columns 16 apart (rather than 4 adjacent ones) makes the
// 16 threads of a row read 16 consecutive tile lines, and write 16 consecutive outputs.
// Each thread loads one vec4 of each tile per round (weights stored by input: a quarter of the
// threads a 4 × 4 block each); the loads of the next round are issued before the current round's
// products, so their latency hides behind the arithmetic.
fn tile_dots(row0: u32, col0: u32, local: vec3<u32>, thread: u32) -> array<vec4<f32>, 4> {
    var acc: array<vec4<f32>, 4>;
    let line = thread / ROUND4;
    let part = thread % ROUND4;
    let store_at = tile_slot(line, part);
    let input = x_base(params.col_offset);
    var xv = input_vec4(input, row0 + line, part);
    var wv = fetch_weights(col0, 0u, thread);
    x_tile[store_at] = to_tile(xv);
    stage_weights(0u, thread, wv);
    workgroupBarrier();
    let rounds = (params.cols4 + ROUND4 - 1u) / ROUND4;
    // The swizzle of lines local.x + 16·j and local.y + 16·i depends on local only.
    let x_swizzle = (local.y >> TILE_SWIZZLE_SHIFT) & 3u;
    let w_swizzle = (local.x >> TILE_SWIZZLE_SHIFT) & 3u;
    for (var round = 0u; round < rounds; round++) {
        let current = (round & 1u) * TILE_VEC4S;
        let more = round + 1u < rounds;
        if more {
            let k = (round + 1u) * ROUND4 + part;
            xv = input_vec4(input, row0 + line, k);
            wv = fetch_weights(col0, round + 1u, thread);
        }
        for (var kk = 0u; kk < ROUND4; kk++) {
            var ws: array<TileValue, 4>;
            for (var j = 0u; j < 4u; j++) {
                ws[j] = w_tile[current + (local.x + 16u * j) * ROUND4 + (kk ^ w_swizzle)];
            }
            for (var i = 0u; i < 4u; i++) {
                let xi = x_tile[current + (local.y + 16u * i) * ROUND4 + (kk ^ x_swizzle)];
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] += f32(dot(xi, ws[j]));
                }
            }
        }
        if more {
            let next = TILE_VEC4S - current;
            x_tile[next + store_at] = to_tile(xv);
            stage_weights(next, thread, wv);
        }
        // The next round reads what was just stored; the round after writes where this one read.
        workgroupBarrier();
    }
    return acc;
}

@compute @workgroup_size(16, 16)
fn tiled(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>,
         @builtin(local_invocation_index) thread: u32) {
    let row0 = group.y * TILE;
    let col0 = group.x * TILE;
    let acc = tile_dots(row0, col0, local, thread);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            let r = row0 + local.y + 16u * i;
            let o = col0 + local.x + 16u * j;
            if r < params.rows && o < params.part_cols {
                finish(r, params.col_offset + o, acc[i][j]);
            }
        }
    }
}
