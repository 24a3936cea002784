//! GPU conv kernels (shaders/conv.wgsl, reduce.wgsl) against their CPU twins, SPEC 10.
//!
//! Every output buffer starts as NaN, so an element a kernel forgets to write fails the check.
//! Inputs are drawn at training scale (activations in [0, 1), Glorot-range weights, gradients of
//! order 1e-2): the SPEC tolerances are absolute plus relative, and at these scales they measure
//! the kernels' rounding, not the size of arbitrary test data.

use fmnist_gpu::cpu;
use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::gpu::buffers::{self, Dispatch};
use fmnist_gpu::ops::conv::{self, ConvKernels};
use fmnist_gpu::params::{ConvParams, ReduceParams};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// SPEC 10 tolerance for reductions: `|gpu - cpu| <= ATOL + RTOL * |cpu|`.
const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-4;

/// (batch, c_in, h, w, c_out, k, relu): odd sizes, tile edges in every GEMM dimension, the
/// model's two layers, shapes whose backward_weight needs one, several and a ragged last chunk,
/// a kernel as tall as the input (one output row), and batches of 64 and 70, where
/// backward_input's batch-innermost tiles are exactly one pixel or straddle two.
const SHAPES: &[(u32, u32, u32, u32, u32, u32, bool)] = &[
    (1, 1, 7, 7, 1, 3, false),
    (2, 1, 28, 28, 64, 5, true),
    (3, 3, 13, 13, 5, 3, true),
    (5, 64, 12, 12, 64, 5, true),
    (2, 3, 7, 7, 5, 5, false),
    (4, 64, 13, 13, 5, 3, false),
    (1, 5, 12, 12, 64, 5, true),
    (2, 3, 9, 13, 7, 3, true),
    (5, 3, 28, 28, 5, 5, false),
    (3, 65, 7, 7, 66, 3, true),
    (64, 3, 7, 7, 5, 3, true),
    (70, 2, 6, 6, 3, 3, false),
    (3, 2, 5, 6, 4, 5, true),
];

fn params(s: &(u32, u32, u32, u32, u32, u32, bool)) -> ConvParams {
    ConvParams::new(s.0, s.1, s.2, s.3, s.4, s.5, s.6)
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

struct Data {
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
    dy: Vec<f32>,
}

fn data(p: &ConvParams, seed: u64) -> Data {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let kk = (p.k * p.k) as f32;
    let l = (6.0 / ((p.c_in as f32 + p.c_out as f32) * kk)).sqrt();
    Data {
        x: uniform(&mut rng, p.x_len(), 0.0, 1.0),
        w: uniform(&mut rng, p.w_len(), -l, l),
        bias: uniform(&mut rng, p.c_out as usize, -0.1, 0.1),
        dy: uniform(&mut rng, p.y_len(), -0.01, 0.01),
    }
}

fn nan_buffer(ctx: &GpuContext, label: &str, n: usize) -> wgpu::Buffer {
    buffers::storage_init(ctx, label, &vec![f32::NAN; n])
}

/// Compares element-wise and panics with the worst offenders when any is out of tolerance.
fn check(what: &str, gpu: &[f32], cpu: &[f32]) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: length");
    let mut rows: Vec<(f32, usize)> = gpu
        .iter()
        .zip(cpu)
        .enumerate()
        .map(|(i, (g, c))| {
            let excess = (g - c).abs() / (ATOL + RTOL * c.abs());
            (
                if excess.is_nan() {
                    f32::INFINITY
                } else {
                    excess
                },
                i,
            )
        })
        .collect();
    let bad = rows.iter().filter(|r| r.0 > 1.0).count();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let worst = rows[0];
    if bad > 0 {
        let lines: Vec<String> = rows
            .iter()
            .take(8)
            .map(|&(e, i)| format!("  [{i}] gpu {:e} cpu {:e} (err/tol {e:.3})", gpu[i], cpu[i]))
            .collect();
        panic!(
            "{what}: {bad} of {} out of tolerance; worst:\n{}",
            gpu.len(),
            lines.join("\n")
        );
    }
    println!(
        "{what}: ok, {} values, worst err/tol {:.3}",
        gpu.len(),
        worst.0
    );
}

fn run(ctx: &GpuContext, d: &[Dispatch]) {
    buffers::run_once(ctx, d).expect("GPU run");
}

fn read(ctx: &GpuContext, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
    buffers::read(ctx, b, n).expect("readback")
}

#[test]
fn forward_matches_cpu() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let k = ConvKernels::new(&ctx).expect("pipelines");
    for (si, s) in SHAPES.iter().enumerate() {
        let p = params(s);
        let d = data(&p, 100 + si as u64);
        let x = buffers::storage_init(&ctx, "x", &d.x);
        let w = buffers::storage_init(&ctx, "w", &d.w);
        let bias = buffers::storage_init(&ctx, "bias", &d.bias);
        let y = nan_buffer(&ctx, "y", p.y_len());
        run(&ctx, &k.forward(&ctx, &p, &x, &w, &bias, &y));
        let mut want = vec![0.0f32; p.y_len()];
        cpu::conv::forward(&p, &d.x, &d.w, &d.bias, &mut want);
        check(&format!("forward {s:?}"), &read(&ctx, &y, p.y_len()), &want);
    }
}

#[test]
fn backward_input_matches_cpu() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let k = ConvKernels::new(&ctx).expect("pipelines");
    for (si, s) in SHAPES.iter().enumerate() {
        let p = params(s);
        let d = data(&p, 200 + si as u64);
        let dy = buffers::storage_init(&ctx, "dy", &d.dy);
        let w = buffers::storage_init(&ctx, "w", &d.w);
        let dx = nan_buffer(&ctx, "dx", p.x_len());
        run(&ctx, &k.backward_input(&ctx, &p, &dy, &w, &dx));
        let mut want = vec![0.0f32; p.x_len()];
        cpu::conv::backward_input(&p, &d.dy, &d.w, &mut want);
        check(
            &format!("backward_input {s:?}"),
            &read(&ctx, &dx, p.x_len()),
            &want,
        );
    }
}

#[test]
fn backward_weight_matches_cpu() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let k = ConvKernels::new(&ctx).expect("pipelines");
    let mut multi_chunk = 0;
    for (si, s) in SHAPES.iter().enumerate() {
        let p = params(s);
        let d = data(&p, 300 + si as u64);
        let x = buffers::storage_init(&ctx, "x", &d.x);
        let dy = buffers::storage_init(&ctx, "dy", &d.dy);
        let dw = nan_buffer(&ctx, "dw", p.w_len());
        let dispatches = k.backward_weight(&ctx, &p, &x, &dy, &dw);
        assert_eq!(
            dispatches.len(),
            if conv::weight_parts(&p) > 1 { 2 } else { 1 }
        );
        if conv::weight_parts(&p) > 1 {
            multi_chunk += 1;
        }
        run(&ctx, &dispatches);
        let mut want = vec![0.0f32; p.w_len()];
        cpu::conv::backward_weight(&p, &d.x, &d.dy, &mut want);
        check(
            &format!("backward_weight {s:?} ({} chunks)", conv::weight_parts(&p)),
            &read(&ctx, &dw, p.w_len()),
            &want,
        );
    }
    assert!(multi_chunk >= 2, "the shape table must exercise split-K");
}

#[test]
fn backward_bias_matches_cpu() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let k = ConvKernels::new(&ctx).expect("pipelines");
    for (si, s) in SHAPES.iter().enumerate() {
        let p = params(s);
        let d = data(&p, 400 + si as u64);
        let dy = buffers::storage_init(&ctx, "dy", &d.dy);
        let db = nan_buffer(&ctx, "db", p.c_out as usize);
        run(&ctx, &k.backward_bias(&ctx, &p, &dy, &db));
        let mut want = vec![0.0f32; p.c_out as usize];
        cpu::conv::backward_bias(&p, &d.dy, &mut want);
        check(
            &format!("backward_bias {s:?}"),
            &read(&ctx, &db, p.c_out as usize),
            &want,
        );
    }
}

/// The reduction pass on its own: GPU and CPU add the parts in the same order (IEEE adds, no
/// reassociation), so they agree bit for bit.
#[test]
fn sum_partials_matches_cpu_exactly() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let k = ConvKernels::new(&ctx).expect("pipelines");
    let mut rng = ChaCha8Rng::seed_from_u64(500);
    for (n, parts) in [(1u32, 1u32), (257, 3), (1600, 17), (70_001, 5)] {
        let rp = ReduceParams {
            n,
            parts,
            _pad: [0; 2],
        };
        let partials = uniform(&mut rng, (n * parts) as usize, -1.0, 1.0);
        let pb = buffers::storage_init(&ctx, "partials", &partials);
        let out = nan_buffer(&ctx, "out", n as usize);
        run(&ctx, &k.sum_partials(&ctx, &rp, &pb, &out));
        let mut want = vec![0.0f32; n as usize];
        cpu::reduce::sum_partials(&rp, &partials, &mut want);
        let got = read(&ctx, &out, n as usize);
        check(&format!("sum_partials n {n} parts {parts}"), &got, &want);
        let same = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g.to_bits() == w.to_bits())
            .count();
        assert_eq!(
            same, n as usize,
            "sum_partials n {n} parts {parts}: not bit-identical to the CPU"
        );
    }
}

/// Same inputs, two runs, bit-identical dw and db (fixed-order reductions, no atomics).
#[test]
fn backward_weight_is_deterministic() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let k = ConvKernels::new(&ctx).expect("pipelines");
    let p = ConvParams::new(9, 16, 12, 12, 64, 5, true);
    assert!(conv::weight_parts(&p) > 1);
    let d = data(&p, 600);
    let x = buffers::storage_init(&ctx, "x", &d.x);
    let dy = buffers::storage_init(&ctx, "dy", &d.dy);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let dw = nan_buffer(&ctx, "dw", p.w_len());
        let db = nan_buffer(&ctx, "db", p.c_out as usize);
        let mut ds = k.backward_weight(&ctx, &p, &x, &dy, &dw);
        ds.extend(k.backward_bias(&ctx, &p, &dy, &db));
        run(&ctx, &ds);
        let dw: Vec<u32> = read(&ctx, &dw, p.w_len())
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let db: Vec<u32> = read(&ctx, &db, p.c_out as usize)
            .iter()
            .map(|v| v.to_bits())
            .collect();
        runs.push((dw, db));
    }
    assert!(runs[0].0.iter().all(|&b| f32::from_bits(b).is_finite()));
    assert_eq!(runs[0].0, runs[1].0, "dw differs between runs");
    assert_eq!(runs[0].1, runs[1].1, "db differs between runs");
}

/// Runs all four entry points on one extreme shape and checks them against the CPU twin in f64:
/// with tens of thousands to millions of terms in one sum, the f32 twin's own rounding would
/// dominate the comparison. `split`: some dispatch must need a 2-D grid (SPEC 6).
fn extreme_shape(
    ctx: &GpuContext,
    k: &ConvKernels,
    p: &ConvParams,
    seed: u64,
    with_dw: bool,
    split: bool,
) {
    let d = data(p, seed);
    let x = buffers::storage_init(ctx, "x", &d.x);
    let w = buffers::storage_init(ctx, "w", &d.w);
    let bias = buffers::storage_init(ctx, "bias", &d.bias);
    let dy = buffers::storage_init(ctx, "dy", &d.dy);
    let y = nan_buffer(ctx, "y", p.y_len());
    let dx = nan_buffer(ctx, "dx", p.x_len());
    let dw = nan_buffer(ctx, "dw", p.w_len());
    let db = nan_buffer(ctx, "db", p.c_out as usize);
    let mut ds = k.forward(ctx, p, &x, &w, &bias, &y);
    ds.extend(k.backward_input(ctx, p, &dy, &w, &dx));
    if with_dw {
        ds.extend(k.backward_weight(ctx, p, &x, &dy, &dw));
    }
    ds.extend(k.backward_bias(ctx, p, &dy, &db));
    assert_eq!(ds.iter().any(|d| d.groups.1 > 1), split, "{p:?}: 2-D split");
    run(ctx, &ds);
    let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
    let (x64, w64, b64, dy64) = (f64s(&d.x), f64s(&d.w), f64s(&d.bias), f64s(&d.dy));
    let mut want = vec![0.0f64; p.y_len()];
    cpu::conv::forward(p, &x64, &w64, &b64, &mut want);
    check(
        &format!("forward {p:?}"),
        &read(ctx, &y, p.y_len()),
        &f32s(&want),
    );
    let mut want = vec![0.0f64; p.x_len()];
    cpu::conv::backward_input(p, &dy64, &w64, &mut want);
    check(
        &format!("backward_input {p:?}"),
        &read(ctx, &dx, p.x_len()),
        &f32s(&want),
    );
    if with_dw {
        let mut want = vec![0.0f64; p.w_len()];
        cpu::conv::backward_weight(p, &x64, &dy64, &mut want);
        check(
            &format!("backward_weight {p:?}"),
            &read(ctx, &dw, p.w_len()),
            &f32s(&want),
        );
    }
    let mut want = vec![0.0f64; p.c_out as usize];
    cpu::conv::backward_bias(p, &dy64, &mut want);
    check(
        &format!("backward_bias {p:?}"),
        &read(ctx, &db, p.c_out as usize),
        &f32s(&want),
    );
}

/// Cheap extreme 1x1 shapes: sums over more than 65,535 terms (lavapipe stops an invocation's
/// loops after 65,535 iterations in total, which once cut these sums short) and a 2-D dispatch.
/// - 65,600 output channels: backward_bias needs 65,600 workgroups (split), backward_input sums
///   65,600 terms, forward and backward_weight have 1,025 column tiles.
/// - 70,000 input channels: forward sums 70,000 terms, backward_weight has 1,094 row tiles.
#[test]
fn long_sums_and_split_dispatch() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let k = ConvKernels::new(&ctx).expect("pipelines");
    extreme_shape(
        &ctx,
        &k,
        &ConvParams::new(2, 1, 1, 1, 65_600, 1, false),
        800,
        true,
        true,
    );
    extreme_shape(
        &ctx,
        &k,
        &ConvParams::new(2, 70_000, 1, 1, 3, 1, true),
        801,
        true,
        false,
    );
}

/// The GEMM kernels past 65,535 tiles: a 1x1 conv over a batch of 65,537 * 64 + 1 gives forward
/// and backward_input 65,538 tiles (2-D grids), and backward_bias sums four million positions.
/// Ignored by default: every tile is padded 64 x 64 x 32 work, ~25 s on lavapipe. backward_weight
/// is left out (256 such chunks would add minutes).
#[test]
#[ignore]
fn gemm_tiles_past_65535() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let k = ConvKernels::new(&ctx).expect("pipelines");
    let p = ConvParams::new(65_537 * 64 + 1, 1, 1, 1, 1, 1, true);
    extreme_shape(&ctx, &k, &p, 802, false, true);
}

/// Throughput of the real conv2 shape at batch 128 (forward + backward_input + backward_weight),
/// wall clock after warm-up. Run with `--ignored --nocapture`.
#[test]
#[ignore]
fn conv2_b128_throughput() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let k = ConvKernels::new(&ctx).expect("pipelines");
    let runs: usize = std::env::var("CONV_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let p = ConvParams::new(128, 64, 12, 12, 64, 5, true);
    let d = data(&p, 700);
    let x = buffers::storage_init(&ctx, "x", &d.x);
    let w = buffers::storage_init(&ctx, "w", &d.w);
    let bias = buffers::storage_init(&ctx, "bias", &d.bias);
    let dy = buffers::storage_init(&ctx, "dy", &d.dy);
    let y = buffers::storage(&ctx, "y", p.y_len() as u64 * 4);
    let dx = buffers::storage(&ctx, "dx", p.x_len() as u64 * 4);
    let dw = buffers::storage(&ctx, "dw", p.w_len() as u64 * 4);
    let parts: [(&str, Vec<Dispatch>); 3] = [
        ("forward", k.forward(&ctx, &p, &x, &w, &bias, &y)),
        ("backward_input", k.backward_input(&ctx, &p, &dy, &w, &dx)),
        ("backward_weight", k.backward_weight(&ctx, &p, &x, &dy, &dw)),
    ];
    let flops = conv::conv_flops(&p);
    let (mut total, mut best_total) = (0.0, 0.0);
    println!(
        "adapter: {} ({}, {})",
        ctx.adapter.name, ctx.adapter.backend, ctx.adapter.driver
    );
    for (name, ds) in &parts {
        run(&ctx, ds);
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            run(&ctx, ds);
            times.push(t.elapsed().as_secs_f64());
        }
        let mean = times.iter().sum::<f64>() / runs as f64;
        let best = times.iter().cloned().fold(f64::INFINITY, f64::min);
        total += mean;
        best_total += best;
        println!(
            "conv2 B=128 {name}: mean {:.1} ms ({:.2} GFLOP/s), best {:.1} ms ({:.2} GFLOP/s)",
            mean * 1e3,
            flops / mean / 1e9,
            best * 1e3,
            flops / best / 1e9
        );
    }
    println!(
        "conv2 B=128 fwd+bwd_in+bwd_w: mean {:.1} ms ({:.2} GFLOP/s), best {:.1} ms ({:.2} GFLOP/s)",
        total * 1e3,
        3.0 * flops / total / 1e9,
        best_total * 1e3,
        3.0 * flops / best_total / 1e9
    );
}
