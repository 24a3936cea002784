//! GPU conv kernels (shaders/conv.wgsl, reduce.wgsl) against their CPU twins, SPEC 10, through
//! the cases of the kernel table (`fmnist_gpu::parity`, the same cases `fmnist-gpu parity` runs).
//!
//! Every output buffer starts as NaN, so an element a kernel forgets to write fails the check.
//! Inputs are drawn at training scale (activations in [0, 1), Glorot-range weights, gradients of
//! order 1e-2): the SPEC tolerances are absolute plus relative, and at these scales they measure
//! the kernels' rounding, not the size of arbitrary test data. Each case also runs twice and
//! must give the same bits (fixed-order reductions, no atomics).

mod common;

use common::{assert_reruns, check_kernel, ctx};
use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::gpu::buffers::{self, Dispatch};
use fmnist_gpu::ops::conv::{self, ConvKernels};
use fmnist_gpu::params::ConvParams;
use fmnist_gpu::parity::{self, CONV_SHAPES};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

#[test]
fn conv_forward() {
    let Some(ctx) = ctx() else { return };
    assert_reruns(&check_kernel(&ctx, "conv.forward"));
}

#[test]
fn conv_backward_input() {
    let Some(ctx) = ctx() else { return };
    assert_reruns(&check_kernel(&ctx, "conv.backward_input"));
}

/// Also holds the shape table to exercising split-K (one, several and a ragged last chunk), and
/// the host side to using the two-pass path exactly when there is more than one part.
#[test]
fn conv_backward_weight() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "conv.backward_weight");
    assert_reruns(&rows);
    let k = ConvKernels::new(&ctx).expect("pipelines");
    let mut multi_chunk = 0;
    for s in CONV_SHAPES {
        let p = ConvParams::new(s.0, s.1, s.2, s.3, s.4, s.5, s.6);
        let x = buffers::storage(&ctx, "x", p.x_len() as u64 * 4);
        let dy = buffers::storage(&ctx, "dy", p.y_len() as u64 * 4);
        let dw = buffers::storage(&ctx, "dw", p.w_len() as u64 * 4);
        let parts = conv::weight_parts(&p);
        let dispatches = k.backward_weight(&ctx, &p, &x, &dy, &dw);
        assert_eq!(
            dispatches.len(),
            if parts > 1 { 2 } else { 1 },
            "{s:?}: {parts} parts"
        );
        if parts > 1 {
            multi_chunk += 1;
        }
    }
    assert!(multi_chunk >= 2, "the shape table must exercise split-K");
}

#[test]
fn conv_backward_bias() {
    let Some(ctx) = ctx() else { return };
    assert_reruns(&check_kernel(&ctx, "conv.backward_bias"));
}

/// The reduction pass on its own: GPU and CPU add the parts in the same order (IEEE adds, no
/// reassociation), so the table compares them bit for bit.
#[test]
fn sum_partials() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "reduce.sum_partials");
    assert!(
        rows.iter()
            .all(|r| r.tol == parity::Tol::Exact && r.worst_abs == 0.0)
    );
}

// ---------------------------------------------------------------------------------------------
// Throughput (not a comparison)

fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn run(ctx: &GpuContext, d: &[Dispatch]) {
    buffers::run_once(ctx, d).expect("GPU run");
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
    let mut rng = ChaCha8Rng::seed_from_u64(700);
    let x = buffers::storage_init(&ctx, "x", &uniform(&mut rng, p.x_len(), 0.0, 1.0));
    let w = buffers::storage_init(&ctx, "w", &uniform(&mut rng, p.w_len(), -0.05, 0.05));
    let bias = buffers::storage_init(&ctx, "bias", &uniform(&mut rng, 64, -0.1, 0.1));
    let dy = buffers::storage_init(&ctx, "dy", &uniform(&mut rng, p.y_len(), -0.01, 0.01));
    let y = buffers::storage(&ctx, "y", p.y_len() as u64 * 4);
    let dx = buffers::storage(&ctx, "dx", p.x_len() as u64 * 4);
    let dw = buffers::storage(&ctx, "dw", p.w_len() as u64 * 4);
    let parts: [(&str, Vec<Dispatch>); 3] = [
        ("forward", k.forward(&ctx, &p, &x, &w, &bias, &y)),
        ("backward_input", k.backward_input(&ctx, &p, &dy, &w, &dx)),
        ("backward_weight", k.backward_weight(&ctx, &p, &x, &dy, &dw)),
    ];
    let flops = conv::conv_flops(&p);
    let mut total = 0.0;
    println!(
        "adapter: {} ({}, {})",
        ctx.adapter.name, ctx.adapter.backend, ctx.adapter.driver
    );
    for (name, ds) in &parts {
        run(&ctx, ds);
        let t = Instant::now();
        for _ in 0..runs {
            run(&ctx, ds);
        }
        let s = t.elapsed().as_secs_f64() / runs as f64;
        total += s;
        println!(
            "conv2 B=128 {name}: {:.2} ms, {:.2} GFLOP/s",
            s * 1e3,
            flops / s / 1e9
        );
    }
    println!(
        "conv2 B=128 fwd+bwd_in+bwd_w: {:.2} ms, {:.2} GFLOP/s",
        total * 1e3,
        3.0 * flops / total / 1e9
    );
}
