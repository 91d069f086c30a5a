//! Times one f16 matrix-matrix product on each kernel the adapter offers: the blocked products
//! (CPU drivers' choice), the tiled ones (GPUs without tensor cores, `--no-coop`) and the
//! cooperative-matrix ones on each size of matrices the adapter runs. Wall time of a submit and
//! its wait, median of 9 after a warm-up, so small products measure the submit too. Decode
//! shapes (up to 8 rows) run 64 products per submit and report the weights' bytes over the
//! time: one row on every matrix-vector kernel, 2 to 8 rows on the subgroup one (GPUs' choice)
//! and on the blocked and tiled ones (which the other mappings take for more than one row).
//!
//!     cargo run --release --example product_kernels -- [ROWS] [COLS] [OUTPUTS]
//!
//! Forcing cooperative matrices reaches CPU drivers too (lavapipe from Mesa 25.1).

use half::f16;
use rwkv_wgpu::gpu::{CoopMatrix, Gpu, GpuMatrix, GpuOptions, GpuTensor, RowMapping};
use rwkv_wgpu::kernels::{self, Epilogue, Recorder};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let [rows, cols, outputs] = match args[..] {
        [] => [128, 2048, 2048],
        [rows, cols, outputs] => [rows, cols, outputs],
        _ => return Err("usage: product_kernels [ROWS COLS OUTPUTS]".into()),
    };
    let plain = GpuOptions { allow_f16: Some(true), coop: Some(false), ..GpuOptions::default() };
    let mapping = |mapping| GpuOptions { row_mapping: Some(mapping), ..plain.clone() };
    let decode = rows <= 8;
    let subgroup_row =
        ("subgroup/row", GpuOptions { allow_subgroups: Some(true), ..mapping(RowMapping::SubgroupPerRow) });
    let mut kernels = if rows == 1 {
        let workgroup_row =
            GpuOptions { allow_subgroups: Some(false), ..mapping(RowMapping::WorkgroupPerRow) };
        vec![
            ("thread/row", mapping(RowMapping::ThreadPerRow)),
            ("workgroup/row", workgroup_row),
            subgroup_row.clone(),
        ]
    } else {
        vec![("blocked", mapping(RowMapping::ThreadPerRow)), ("tiled", mapping(RowMapping::WorkgroupPerRow))]
    };
    if decode && rows > 1 {
        kernels.insert(0, subgroup_row);
    }
    // Past 8 rows the products are matrix-matrix ones, tensor cores included.
    for (name, matrix) in [("coop 16×16", CoopMatrix::Side16), ("coop 8×8", CoopMatrix::Side8)] {
        if !decode {
            kernels.push((name, GpuOptions { coop: Some(true), coop_matrix: Some(matrix), ..plain.clone() }));
        }
    }
    let products = if decode { 64 } else { 1 };
    let flops = 2.0 * (rows * cols * outputs) as f64;
    println!("{rows} rows × {cols} → {outputs}, f16 weights, {products} products per submit");
    for (name, options) in kernels {
        let gpu = Gpu::new(&options)?;
        if name.starts_with("coop") && gpu.coop.is_none() {
            println!("  {name:<11} not offered by {}", gpu.describe());
            continue;
        }
        let weights: Vec<f16> =
            (0..outputs * cols).map(|i| f16::from_f32((i % 17) as f32 / 17.0 - 0.5)).collect();
        let matrix = GpuMatrix::from_f16(&gpu, "w", outputs, cols, &weights)?;
        let x = GpuTensor::zeros(&gpu, "x", rows, cols)?;
        x.write(&gpu, &(0..rows * cols).map(|i| (i % 13) as f32 / 13.0).collect::<Vec<_>>())?;
        let y = GpuTensor::zeros(&gpu, "y", rows, outputs)?;
        let mut times = Vec::new();
        for _ in 0..10 {
            let start = Instant::now();
            let mut rec = Recorder::new(&gpu);
            for _ in 0..products {
                kernels::linear(&mut rec, name, &matrix, &x, &y, Epilogue::PLAIN)?;
            }
            rec.finish().run(&gpu);
            gpu.wait()?;
            times.push(start.elapsed().as_secs_f64() / products as f64);
        }
        times.remove(0);
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let rate = if decode {
            format!("{:>8.1} GB/s of weights", matrix.bytes() as f64 / median / 1e9)
        } else {
            format!("{:>8.3} TFLOPS", flops / median / 1e12)
        };
        println!("  {name:<13} {:>9.3} ms  {rate}", median * 1e3);
    }
    Ok(())
}
