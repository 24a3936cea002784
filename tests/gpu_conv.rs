//! GPU conv kernels (shaders/conv.wgsl, reduce.wgsl) against their CPU twins, SPEC 10, through
//! the cases of the kernel table (`fmnist_gpu::parity`, the same cases `fmnist-gpu parity` runs).
//!
//! Every output buffer starts as NaN, so an element a kernel forgets to write fails the check.
//! Inputs are drawn at training scale (activations in [0, 1), Glorot-range weights, gradients of
//! order 1e-2): the SPEC tolerances are absolute plus relative, and at these scales they measure
//! the kernels' rounding, not the size of arbitrary test data. Each case also runs twice and
//! must give the same bits (fixed-order reductions, no atomics).

mod common;

use common::{assert_reruns, assert_variants, check_kernel, ctx, is_variant_row, run_checked};
use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::gpu::buffers::{self, Dispatch};
use fmnist_gpu::gpu::tile::Tile;
use fmnist_gpu::ops::act::{ActKernels, dropout_params};
use fmnist_gpu::ops::conv::{self, ConvKernels, PoolDropout};
use fmnist_gpu::ops::pool::PoolKernels;
use fmnist_gpu::params::{ConvParams, PoolParams, StepState};
use fmnist_gpu::parity::{self, CONV_SHAPES, Case, Pass};
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

/// The fused conv + bias + ReLU + max-pool (+ dropout) against its CPU twin (the grid cases bit
/// for bit, ties included), against the unfused GPU chain bit for bit, and against a rerun of
/// itself bit for bit: every output of every case has its rerun row. Every tile variant runs
/// in the table too, each compared with the default tile bit for bit.
#[test]
fn conv_forward_relu_pool() {
    let Some(ctx) = ctx() else { return };
    let all = check_kernel(&ctx, "conv.forward_relu_pool");
    assert_variants(&ctx, &all);
    let rows: Vec<_> = all.iter().filter(|r| !is_variant_row(r)).collect();
    let reruns = rows.iter().filter(|r| r.output.ends_with(" rerun")).count();
    let vs_cpu = rows
        .iter()
        .filter(|r| !r.output.ends_with(" rerun") && !r.output.ends_with("unfused GPU"))
        .count();
    let vs_unfused = rows
        .iter()
        .filter(|r| r.output.ends_with("unfused GPU"))
        .count();
    assert!(
        reruns > 0 && reruns == vs_cpu && vs_unfused == vs_cpu,
        "{vs_cpu} outputs vs the CPU, {vs_unfused} vs the unfused chain, {reruns} reruns"
    );
    assert!(
        rows.iter().any(|r| r.shape.contains("grid")
            && r.output == "argmax"
            && r.tol == parity::Tol::Exact),
        "the grid cases check exact ties"
    );
    assert!(rows.iter().any(|r| r.output == "d"), "a dropout case ran");
}

/// Weights, bias and outputs bound as views into arenas (how the net binds its parameters) give
/// the same bits as whole buffers.
#[test]
fn conv_forward_relu_pool_reads_arena_views() {
    let Some(ctx) = ctx() else { return };
    let k = ConvKernels::new(&ctx).expect("pipelines");
    let p = ConvParams::new(2, 3, 11, 12, 5, 3, true);
    let n = (p.batch * p.c_out * (p.oh / 2) * (p.ow / 2)) as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(740);
    let x = buffers::storage_init(&ctx, "x", &uniform(&mut rng, p.x_len(), 0.0, 1.0));
    let (w, bias) = (
        uniform(&mut rng, p.w_len(), -0.3, 0.3),
        uniform(&mut rng, 5, -0.1, 0.1),
    );
    let params = buffers::Arena::init(&ctx, "params", &[vec![7.0; 3], w.clone(), bias.clone()]);
    let outs = buffers::Arena::init(&ctx, "outs", &[vec![7.0; 5], vec![f32::NAN; n]]);
    let am = buffers::Arena::init(&ctx, "argmax", &[vec![7.0; 9], vec![f32::NAN; n]]);
    let ds = k
        .forward_relu_pool(
            &ctx,
            &p,
            Tile::DEFAULT,
            None,
            &x,
            params.view(1),
            params.view(2),
            outs.view(1),
            am.view(1),
        )
        .expect("dispatches");
    run(&ctx, &ds);
    let (wb, bb) = (
        buffers::storage_init(&ctx, "w", &w),
        buffers::storage_init(&ctx, "b", &bias),
    );
    let (pw, aw) = (
        buffers::storage_init(&ctx, "p", &vec![f32::NAN; n]),
        buffers::storage_init(&ctx, "argmax", &vec![u32::MAX; n]),
    );
    let ds = k
        .forward_relu_pool(&ctx, &p, Tile::DEFAULT, None, &x, &wb, &bb, &pw, &aw)
        .expect("dispatches");
    run(&ctx, &ds);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    let want_p: Vec<f32> = buffers::read(&ctx, &pw, n).unwrap();
    let want_am: Vec<u32> = buffers::read(&ctx, &aw, n).unwrap();
    assert!(want_p.iter().all(|v| v.is_finite()));
    assert_eq!(bits(&outs.read(&ctx, 1).unwrap()), bits(&want_p));
    assert_eq!(bits(&am.read(&ctx, 1).unwrap()), want_am);
    assert_eq!(
        outs.read(&ctx, 0).unwrap(),
        vec![7.0; 5],
        "wrote before its view"
    );
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
        // The mean is the figure to report; the best run shows what a quiet machine gives when
        // other work shares the CPUs (lavapipe) or the GPU.
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

/// The model's conv1 and conv2 (with dropout) forward at batch 128: the fused kernel against the
/// unfused chain conv.forward -> pool.maxpool_forward (-> act.dropout_forward), mean wall clock
/// after warm-up. Run with `--ignored --nocapture` (on lavapipe conv2 takes seconds per run).
#[test]
#[ignore]
fn relu_pool_b128_throughput() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let k = ConvKernels::new(&ctx).expect("pipelines");
    let pool = PoolKernels::new(&ctx).expect("pipelines");
    let act = ActKernels::new(&ctx).expect("pipelines");
    let runs: usize = std::env::var("CONV_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut rng = ChaCha8Rng::seed_from_u64(720);
    println!(
        "adapter: {} ({}, {})",
        ctx.adapter.name, ctx.adapter.backend, ctx.adapter.driver
    );
    let state = buffers::storage_init(&ctx, "state", &[StepState::default()]);
    for (name, p, dropout) in [
        ("conv1", ConvParams::new(128, 1, 28, 28, 64, 5, true), false),
        ("conv2", ConvParams::new(128, 64, 12, 12, 64, 5, true), true),
    ] {
        let pp = PoolParams::new(p.batch, p.c_out, p.oh, p.ow);
        let n = pp.y_len();
        let dp = dropout_params(n as u32, 0.4, 7);
        let x = buffers::storage_init(&ctx, "x", &uniform(&mut rng, p.x_len(), 0.0, 1.0));
        let w = buffers::storage_init(&ctx, "w", &uniform(&mut rng, p.w_len(), -0.05, 0.05));
        let bias = buffers::storage_init(&ctx, "b", &uniform(&mut rng, 64, -0.1, 0.1));
        let a = buffers::storage(&ctx, "a", p.y_len() as u64 * 4);
        let out = || buffers::storage(&ctx, "out", n as u64 * 4);
        let (pu, amu, du, pf, amf, df) = (out(), out(), out(), out(), out(), out());
        let mut unfused = k.forward(&ctx, &p, &x, &w, &bias, &a);
        unfused.extend(pool.maxpool_forward(&ctx, &pp, &a, &pu, &amu));
        if dropout {
            unfused.extend(act.dropout_forward(&ctx, &dp, &state, &pu, &du));
        }
        let drop = dropout.then_some(PoolDropout {
            params: &dp,
            state: (&state).into(),
            d: (&df).into(),
        });
        let fused = k
            .forward_relu_pool(&ctx, &p, Tile::DEFAULT, drop, &x, &w, &bias, &pf, &amf)
            .expect("dispatches");
        let flops = conv::conv_flops(&p);
        for (label, ds) in [("unfused", &unfused), ("fused", &fused)] {
            run(&ctx, ds);
            let t = Instant::now();
            for _ in 0..runs {
                run(&ctx, ds);
            }
            let mean = t.elapsed().as_secs_f64() / runs as f64;
            println!(
                "{name} B=128 {label} ({} dispatches): {:.3} ms ({:.1} GFLOP/s)",
                ds.len(),
                mean * 1e3,
                flops / mean / 1e9
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Extreme shapes: long sums and split dispatches, against the CPU twin in f64

/// The four entry points on one extreme shape, against the CPU twin in f64: with tens of
/// thousands to millions of terms in one sum, the f32 twin's own rounding would dominate the
/// comparison. `split`: some dispatch must need a 2-D grid (SPEC 6).
fn extreme_shape(ctx: &GpuContext, p: ConvParams, seed: u64, passes: &[Pass], split: bool) {
    let k = ConvKernels::new(ctx).expect("pipelines");
    let b = |n: usize| buffers::storage(ctx, "probe", n as u64 * 4);
    let (x, w, bias, y, dy) = (
        b(p.x_len()),
        b(p.w_len()),
        b(p.c_out as usize),
        b(p.y_len()),
        b(p.y_len()),
    );
    let mut ds: Vec<Dispatch> = Vec::new();
    for pass in passes {
        ds.extend(match pass {
            Pass::Forward => k.forward(ctx, &p, &x, &w, &bias, &y),
            Pass::BackwardInput => k.backward_input(ctx, &p, &dy, &w, &b(p.x_len())),
            Pass::BackwardWeight => k.backward_weight(ctx, &p, &x, &dy, &b(p.w_len())),
            Pass::BackwardBias => k.backward_bias(ctx, &p, &dy, &bias),
        });
    }
    assert_eq!(ds.iter().any(|d| d.groups.1 > 1), split, "{p:?}: 2-D split");
    drop(ds);
    let cases: Vec<Case> = passes
        .iter()
        .map(|&pass| Case::Conv {
            pass,
            p,
            seed,
            f64_reference: true,
        })
        .collect();
    run_checked(ctx, &cases);
}

/// Cheap extreme 1x1 shapes: sums over more than 65,535 terms (lavapipe stops an invocation's
/// loops after 65,535 iterations in total, which once cut these sums short) and a 2-D dispatch.
/// - 65,600 output channels: backward_bias needs 65,600 workgroups (split), backward_input sums
///   65,600 terms, forward and backward_weight have 1,025 column tiles.
/// - 70,000 input channels: forward sums 70,000 terms, backward_weight has 1,094 row tiles.
#[test]
fn long_sums_and_split_dispatch() {
    let Some(ctx) = ctx() else { return };
    extreme_shape(
        &ctx,
        ConvParams::new(2, 1, 1, 1, 65_600, 1, false),
        800,
        &Pass::ALL,
        true,
    );
    extreme_shape(
        &ctx,
        ConvParams::new(2, 70_000, 1, 1, 3, 1, true),
        801,
        &Pass::ALL,
        false,
    );
}

/// forward_relu_pool with a sum of 70,000 terms (past lavapipe's 65,535 loop iterations per
/// invocation unless the K loop stays unrolled), against the CPU twin in f64 rounded once.
#[test]
fn relu_pool_long_sum() {
    let Some(ctx) = ctx() else { return };
    let k = ConvKernels::new(&ctx).expect("pipelines");
    let p = ConvParams::new(2, 70_000, 3, 2, 3, 1, true);
    let mut rng = ChaCha8Rng::seed_from_u64(730);
    let x = uniform(&mut rng, p.x_len(), 0.0, 1.0);
    let w = uniform(&mut rng, p.w_len(), -0.01, 0.012);
    let bias = uniform(&mut rng, 3, -0.1, 0.1);
    let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    let n = (p.batch * p.c_out * (p.oh / 2) * (p.ow / 2)) as usize;
    let (mut want, mut want_am) = (vec![0.0f64; n], vec![0u32; n]);
    fmnist_gpu::cpu::conv::forward_relu_pool(
        &p,
        &f64s(&x),
        &f64s(&w),
        &f64s(&bias),
        &mut want,
        &mut want_am,
        None,
    );
    let pooled = buffers::storage_init(&ctx, "p", &vec![f32::NAN; n]);
    let am = buffers::storage_init(&ctx, "argmax", &vec![u32::MAX; n]);
    let b = |v: &[f32]| buffers::storage_init(&ctx, "in", v);
    let ds = k
        .forward_relu_pool(
            &ctx,
            &p,
            Tile::DEFAULT,
            None,
            &b(&x),
            &b(&w),
            &b(&bias),
            &pooled,
            &am,
        )
        .expect("dispatches");
    run(&ctx, &ds);
    let got: Vec<f32> = buffers::read(&ctx, &pooled, n).unwrap();
    let got_am: Vec<u32> = buffers::read(&ctx, &am, n).unwrap();
    for i in 0..n {
        let c = want[i] as f32;
        assert!(
            (got[i] - c).abs() <= 1e-5 + 1e-4 * c.abs(),
            "[{i}] gpu {} cpu {c}",
            got[i]
        );
    }
    assert!(want.iter().any(|&v| v > 0.0), "all windows ReLU'd to 0");
    assert_eq!(got_am, want_am);
}

/// The GEMM kernels past 65,535 tiles: a 1x1 conv over a batch of 65,537 * 64 + 1 gives forward
/// and backward_input 65,538 tiles (2-D grids), and backward_bias sums four million positions.
/// Ignored by default: every tile is padded 64 x 64 x 32 work, ~25 s on lavapipe (twice that with
/// the bit-identical rerun). backward_weight is left out (256 such chunks would add minutes).
#[test]
#[ignore]
fn gemm_tiles_past_65535() {
    let Some(ctx) = ctx() else { return };
    let p = ConvParams::new(65_537 * 64 + 1, 1, 1, 1, 1, 1, true);
    extreme_shape(
        &ctx,
        p,
        802,
        &[Pass::Forward, Pass::BackwardInput, Pass::BackwardBias],
        true,
    );
}
