//! Times the channel mix's one-token value product, y += W_v·k with most of k zero (a squared
//! ReLU's output), with W_v stored by output and by input, on the adapter's default kernels.
//! 64 products per submit, median of 9 submits after a warm-up; the weight bytes each layout
//! reads per product, and the whole matrix's bytes over the time.
//!
//!     cargo run --release --example value_product -- [EMBD] [ZERO_SHARE] [LANES,...]
//!
//! The defaults, 2048 (1.5B: W_v is 2048 × 8192) and 0.88, the share of zero inputs measured on
//! the trained demo model (`examples/sparsity.rs`). LANES times the product by input once per
//! split of its workgroup (`GpuOptions::by_input_lanes`, e.g. `1,2,4,8,16`), to tune it.

use rwkv_wgpu::gpu::{Gpu, GpuMatrix, GpuOptions, GpuTensor};
use rwkv_wgpu::kernels::{self, Epilogue, Recorder};
use rwkv_wgpu::quant::{MatrixFormat, PackedMatrix};
use std::time::Instant;

const PRODUCTS: usize = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let embd: usize = args.first().map_or(Ok(2048), |a| a.parse())?;
    let zero_share: f64 = args.get(1).map_or(Ok(0.88), |a| a.parse())?;
    let lanes: Vec<Option<usize>> = match args.get(2) {
        Some(list) => list.split(',').map(|l| l.parse().map(Some)).collect::<Result<_, _>>()?,
        None => vec![None],
    };
    let inputs = 4 * embd;
    let weights: Vec<f32> = (0..embd * inputs).map(|i| (i % 17) as f32 / 17.0 - 0.5).collect();
    // Zeros spread like a squared ReLU's: each input zero on its own, by a fixed hash.
    let k: Vec<f32> = (0..inputs)
        .map(|i| {
            let hash = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            if (hash as f64) < zero_share * (1u64 << 24) as f64 {
                0.0
            } else {
                0.5
            }
        })
        .collect();
    let nonzero = k.iter().filter(|&&v| v != 0.0).count();
    let nonzero_groups = k.chunks(4).filter(|g| g.iter().any(|&v| v != 0.0)).count();
    println!(
        "W_v {embd} × {inputs} f16, {nonzero} of {inputs} inputs nonzero, {PRODUCTS} products per submit"
    );
    let layouts = std::iter::once((false, None)).chain(lanes.iter().map(|&lanes| (true, lanes)));
    for (by_input, lanes) in layouts {
        let options =
            GpuOptions { value_by_input: Some(by_input), by_input_lanes: lanes, ..GpuOptions::default() };
        let gpu = Gpu::new(&options)?;
        let matrix = if by_input {
            let packed = PackedMatrix::pack_by_input(MatrixFormat::F16, embd, inputs, &weights)?;
            GpuMatrix::upload_by_input(&gpu, "w_v", &packed, inputs)?
        } else {
            GpuMatrix::from_f32(&gpu, "w_v", embd, inputs, &weights)?
        };
        let x = GpuTensor::from_rows(&gpu, "k", inputs, &k)?;
        let y = GpuTensor::zeros(&gpu, "y", 1, embd)?;
        let mut times = Vec::new();
        for _ in 0..10 {
            let start = Instant::now();
            let mut rec = Recorder::new(&gpu);
            for _ in 0..PRODUCTS {
                kernels::linear(&mut rec, "value", &matrix, &x, &y, Epilogue::ACCUMULATE.sparse_input())?;
            }
            rec.finish().run(&gpu);
            gpu.wait()?;
            times.push(start.elapsed().as_secs_f64() / PRODUCTS as f64);
        }
        times.remove(0);
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        // f16 weights of the inputs each layout reads: nonzero rows, or nonzero groups of 4.
        let read = if by_input { 2 * embd * nonzero } else { 8 * embd * nonzero_groups };
        println!(
            "  {:<18} {:>8.1} µs  {:.2} MB of weights read, as if all of W_v at {:.1} GB/s  on {}",
            if by_input { format!("by input, {} lanes", gpu.by_input_lanes) } else { "by output".into() },
            median * 1e6,
            read as f64 / 1e6,
            matrix.bytes() as f64 / median / 1e9,
            gpu.describe()
        );
    }
    Ok(())
}
