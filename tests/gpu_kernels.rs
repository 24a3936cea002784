//! GPU vs CPU: every WGSL entry point except conv against its CPU twin, on several shapes
//! including odd ones, with the tolerances of SPEC 10 (element-wise ops atol 1e-6 rtol 1e-5,
//! reductions atol 1e-5 rtol 1e-4, masks, argmax, labels and counts exactly equal).
//!
//! Skips with a visible message when there is no adapter (fails instead with FMNIST_REQUIRE_GPU=1).

use fmnist_gpu::cpu;
use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::gpu::buffers::{Dispatch, read, run_once, storage, storage_init};
use fmnist_gpu::ops::act::{ActKernels, dropout_params, relu_params};
use fmnist_gpu::ops::data::{DataKernels, pack_u8};
use fmnist_gpu::ops::dense::DenseKernels;
use fmnist_gpu::ops::loss::{LossKernels, METRICS_BYTES};
use fmnist_gpu::ops::optim::{OptimKernels, WAME_INIT};
use fmnist_gpu::ops::pool::PoolKernels;
use fmnist_gpu::params::{
    DenseParams, GatherParams, LossParams, OptParams, PoolParams, StepState, WameParams, pcg,
};

const EW: (f32, f32) = (1e-6, 1e-5);
const RED: (f32, f32) = (1e-5, 1e-4);

// ---------------------------------------------------------------------------------------------
// Helpers

/// Deterministic test inputs from the crate's PCG hash (no dependence on a RNG crate's stream).
struct Gen(u32);

impl Gen {
    fn new(seed: u32) -> Self {
        Gen(pcg(seed ^ 0x9e37_79b9))
    }
    fn u32(&mut self) -> u32 {
        self.0 = pcg(self.0.wrapping_add(0x6d2b_79f5));
        self.0
    }
    /// Uniform in [lo, hi).
    fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.u32() >> 8) as f32 / (1u32 << 24) as f32)
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(lo, hi)).collect()
    }
    fn below(&mut self, n: u32) -> u32 {
        self.u32() % n
    }
}

fn ctx() -> Option<GpuContext> {
    let c = GpuContext::for_tests();
    if let Some(c) = &c {
        eprintln!("adapter: {} ({})", c.adapter.name, c.adapter.backend);
    }
    c
}

fn out_f32(ctx: &GpuContext, label: &str, n: usize) -> wgpu::Buffer {
    storage(ctx, label, (n * 4) as u64)
}

fn read_f32(ctx: &GpuContext, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
    read::<f32>(ctx, b, n).expect("readback")
}

fn read_u32(ctx: &GpuContext, b: &wgpu::Buffer, n: usize) -> Vec<u32> {
    read::<u32>(ctx, b, n).expect("readback")
}

fn run(ctx: &GpuContext, ds: &[Dispatch]) {
    run_once(ctx, ds).expect("gpu run");
}

/// `|gpu - cpu| <= atol + rtol * |cpu|` everywhere (NaN never passes); on failure prints the
/// worst entries by how far they exceed their tolerance, then panics.
#[track_caller]
fn check_close(what: &str, gpu: &[f32], cpu: &[f32], (atol, rtol): (f32, f32)) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: length");
    let mut worst_abs = 0.0f32;
    let mut bad: Vec<(f32, usize)> = Vec::new();
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let d = (g - c).abs();
        let tol = atol + rtol * c.abs();
        if d.is_nan() || d > tol {
            bad.push((if d.is_nan() { f32::INFINITY } else { d - tol }, i));
        }
        if d > worst_abs {
            worst_abs = d;
        }
    }
    if !bad.is_empty() {
        bad.sort_by(|a, b| b.0.total_cmp(&a.0));
        eprintln!(
            "{what}: {} of {} out of tolerance (atol {atol}, rtol {rtol}); worst:",
            bad.len(),
            cpu.len()
        );
        for &(_, i) in bad.iter().take(8) {
            eprintln!(
                "  [{i}] gpu {:e} cpu {:e} |diff| {:e}",
                gpu[i],
                cpu[i],
                (gpu[i] - cpu[i]).abs()
            );
        }
        panic!("{what}: GPU and CPU differ beyond tolerance");
    }
    eprintln!(
        "{what}: ok ({} values, max |diff| {worst_abs:e})",
        cpu.len()
    );
}

#[track_caller]
fn check_exact(what: &str, gpu: &[u32], cpu: &[u32]) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: length");
    let bad: Vec<usize> = (0..cpu.len()).filter(|&i| gpu[i] != cpu[i]).collect();
    if !bad.is_empty() {
        eprintln!("{what}: {} of {} differ; first:", bad.len(), cpu.len());
        for &i in bad.iter().take(8) {
            eprintln!("  [{i}] gpu {} cpu {}", gpu[i], cpu[i]);
        }
        panic!("{what}: GPU and CPU differ");
    }
    eprintln!("{what}: ok ({} values, exact)", cpu.len());
}

fn state_buf(ctx: &GpuContext, s: StepState) -> wgpu::Buffer {
    storage_init(ctx, "state", &[s])
}

// ---------------------------------------------------------------------------------------------
// pool

#[test]
fn pool_forward_backward() {
    let Some(ctx) = ctx() else { return };
    let k = PoolKernels::new(&ctx).expect("pool kernels");
    let shapes = [
        (1, 1, 13, 13),
        (3, 5, 24, 24),
        (7, 2, 13, 13),
        (2, 64, 8, 8),
        (1, 3, 5, 7),
    ];
    for (si, &(b, c, h, w)) in shapes.iter().enumerate() {
        let p = PoolParams::new(b, c, h, w);
        let mut g = Gen::new(100 + si as u32);
        // Values on a coarse grid so windows hold ties (first maximum must win) and negatives
        // (the fused ReLU mask must zero them).
        let x: Vec<f32> = (0..p.x_len())
            .map(|_| (g.below(9) as f32 - 3.0) * 0.25)
            .collect();
        let dy = g.vec(p.y_len(), -1.0, 1.0);
        let (mut y, mut am, mut dx) = (
            vec![0.0; p.y_len()],
            vec![0u32; p.y_len()],
            vec![0.0; p.x_len()],
        );
        cpu::pool::maxpool_forward(&p, &x, &mut y, &mut am);
        cpu::pool::maxpool_backward(&p, &dy, &am, &x, &mut dx);

        let xb = storage_init(&ctx, "x", &x);
        let yb = out_f32(&ctx, "y", p.y_len());
        let amb = storage(&ctx, "argmax", (p.y_len() * 4) as u64);
        run(&ctx, &k.maxpool_forward(&ctx, &p, &xb, &yb, &amb));
        let tag = format!("pool {b}x{c}x{h}x{w}");
        check_close(
            &format!("{tag} maxpool_forward y"),
            &read_f32(&ctx, &yb, p.y_len()),
            &y,
            EW,
        );
        check_exact(
            &format!("{tag} maxpool_forward argmax"),
            &read_u32(&ctx, &amb, p.y_len()),
            &am,
        );

        // Backward from the CPU's argmax so that it is checked on its own; dx starts as garbage
        // to show every element is written.
        let dyb = storage_init(&ctx, "dy", &dy);
        let amc = storage_init(&ctx, "argmax_cpu", &am);
        let dxb = storage_init(&ctx, "dx", &vec![7.0f32; p.x_len()]);
        run(&ctx, &k.maxpool_backward(&ctx, &p, &dyb, &amc, &xb, &dxb));
        check_close(
            &format!("{tag} maxpool_backward dx"),
            &read_f32(&ctx, &dxb, p.x_len()),
            &dx,
            EW,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// dense

#[test]
fn dense_all_entries() {
    let Some(ctx) = ctx() else { return };
    let k = DenseKernels::new(&ctx).expect("dense kernels");
    let shapes = [
        (1, 5, 3, false),
        (3, 17, 10, true),
        (7, 33, 13, false),
        (5, 64, 32, true),
        (128, 1024, 128, true),
        (128, 128, 10, false),
    ];
    for (si, &(b, ni, no, relu)) in shapes.iter().enumerate() {
        let p = DenseParams::new(b, ni, no, relu);
        let (b, ni, no) = (b as usize, ni as usize, no as usize);
        let mut g = Gen::new(200 + si as u32);
        let x = g.vec(b * ni, -1.0, 1.0);
        let w = g.vec(no * ni, -0.5, 0.5);
        let bias = g.vec(no, -0.5, 0.5);
        let dy = g.vec(b * no, -1.0, 1.0);
        let mut y = vec![0.0; b * no];
        let mut dx = vec![0.0; b * ni];
        let mut dw = vec![0.0; no * ni];
        let mut db = vec![0.0; no];
        cpu::dense::forward(&p, &x, &w, &bias, &mut y);
        cpu::dense::backward_input(&p, &dy, &w, &mut dx);
        cpu::dense::backward_weight(&p, &x, &dy, &mut dw);
        cpu::dense::backward_bias(&p, &dy, &mut db);

        let (xb, wb, bb, dyb) = (
            storage_init(&ctx, "x", &x),
            storage_init(&ctx, "w", &w),
            storage_init(&ctx, "bias", &bias),
            storage_init(&ctx, "dy", &dy),
        );
        let (yb, dxb, dwb, dbb) = (
            out_f32(&ctx, "y", b * no),
            out_f32(&ctx, "dx", b * ni),
            out_f32(&ctx, "dw", no * ni),
            out_f32(&ctx, "db", no),
        );
        let mut ds = k.forward(&ctx, &p, &xb, &wb, &bb, &yb);
        ds.extend(k.backward_input(&ctx, &p, &dyb, &wb, &dxb));
        ds.extend(k.backward_weight(&ctx, &p, &xb, &dyb, &dwb));
        ds.extend(k.backward_bias(&ctx, &p, &dyb, &dbb));
        run(&ctx, &ds);
        let tag = format!("dense B{b} In{ni} Out{no} relu{}", relu as u8);
        check_close(
            &format!("{tag} forward y"),
            &read_f32(&ctx, &yb, b * no),
            &y,
            RED,
        );
        check_close(
            &format!("{tag} backward_input dx"),
            &read_f32(&ctx, &dxb, b * ni),
            &dx,
            RED,
        );
        check_close(
            &format!("{tag} backward_weight dw"),
            &read_f32(&ctx, &dwb, no * ni),
            &dw,
            RED,
        );
        check_close(
            &format!("{tag} backward_bias db"),
            &read_f32(&ctx, &dbb, no),
            &db,
            RED,
        );
    }
}

#[test]
fn dense_is_deterministic() {
    let Some(ctx) = ctx() else { return };
    let k = DenseKernels::new(&ctx).expect("dense kernels");
    let p = DenseParams::new(37, 70, 19, false);
    let mut g = Gen::new(250);
    let x = storage_init(&ctx, "x", &g.vec(37 * 70, -1.0, 1.0));
    let dy = storage_init(&ctx, "dy", &g.vec(37 * 19, -1.0, 1.0));
    let mut prev: Option<(Vec<u32>, Vec<u32>)> = None;
    for _ in 0..3 {
        let (dw, db) = (out_f32(&ctx, "dw", 19 * 70), out_f32(&ctx, "db", 19));
        let mut ds = k.backward_weight(&ctx, &p, &x, &dy, &dw);
        ds.extend(k.backward_bias(&ctx, &p, &dy, &db));
        run(&ctx, &ds);
        let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
        let now = (
            bits(read_f32(&ctx, &dw, 19 * 70)),
            bits(read_f32(&ctx, &db, 19)),
        );
        if let Some(p) = &prev {
            check_exact("dense backward_weight bits run to run", &now.0, &p.0);
            check_exact("dense backward_bias bits run to run", &now.1, &p.1);
        }
        prev = Some(now);
    }
}

// ---------------------------------------------------------------------------------------------
// act

#[test]
fn relu_forward_backward() {
    let Some(ctx) = ctx() else { return };
    let k = ActKernels::new(&ctx).expect("act kernels");
    for (si, &n) in [1usize, 3, 1000, 70001].iter().enumerate() {
        let p = relu_params(n as u32);
        let mut g = Gen::new(300 + si as u32);
        let x = g.vec(n, -1.0, 1.0);
        let dy = g.vec(n, -1.0, 1.0);
        let (mut y, mut dx) = (vec![0.0; n], vec![0.0; n]);
        cpu::act::relu_forward(&p, &x, &mut y);
        cpu::act::relu_backward(&p, &y, &dy, &mut dx);
        let (xb, dyb) = (storage_init(&ctx, "x", &x), storage_init(&ctx, "dy", &dy));
        let (yb, dxb) = (out_f32(&ctx, "y", n), out_f32(&ctx, "dx", n));
        let mut ds = k.relu_forward(&ctx, &p, &xb, &yb);
        ds.extend(k.relu_backward(&ctx, &p, &yb, &dyb, &dxb));
        run(&ctx, &ds);
        check_close(
            &format!("relu_forward n={n}"),
            &read_f32(&ctx, &yb, n),
            &y,
            EW,
        );
        check_close(
            &format!("relu_backward n={n}"),
            &read_f32(&ctx, &dxb, n),
            &dx,
            EW,
        );
    }
}

/// Runs dropout forward and backward on the GPU at step `t` and checks values and the kept mask
/// (exactly) against the CPU. Inputs are bounded away from 0 so "kept" is `value != 0`.
fn dropout_case(ctx: &GpuContext, k: &ActKernels, n: usize, prob: f32, seed: u32, t: u32) {
    let p = dropout_params(n as u32, prob, seed);
    let mut g = Gen::new(seed ^ t ^ n as u32);
    let away = |v: f32| if v < 0.0 { v - 0.25 } else { v + 0.25 };
    let x: Vec<f32> = g.vec(n, -1.0, 1.0).into_iter().map(away).collect();
    let dy: Vec<f32> = g.vec(n, -1.0, 1.0).into_iter().map(away).collect();
    let (mut y, mut dx) = (vec![0.0; n], vec![0.0; n]);
    cpu::act::dropout_forward(&p, t, &x, &mut y);
    cpu::act::dropout_backward(&p, t, &dy, &mut dx);
    let st = state_buf(
        ctx,
        StepState {
            epoch_step: 3,
            t,
            n: 0,
            batch: 0,
        },
    );
    let (xb, dyb) = (storage_init(ctx, "x", &x), storage_init(ctx, "dy", &dy));
    let (yb, dxb) = (out_f32(ctx, "y", n), out_f32(ctx, "dx", n));
    let mut ds = k.dropout_forward(ctx, &p, &st, &xb, &yb);
    ds.extend(k.dropout_backward(ctx, &p, &st, &dyb, &dxb));
    run(ctx, &ds);
    let (gy, gdx) = (read_f32(ctx, &yb, n), read_f32(ctx, &dxb, n));
    let tag = format!("dropout n={n} p={prob} t={t}");
    let mask = |v: &[f32]| v.iter().map(|&f| (f != 0.0) as u32).collect::<Vec<u32>>();
    check_exact(&format!("{tag} forward mask"), &mask(&gy), &mask(&y));
    check_exact(&format!("{tag} backward mask"), &mask(&gdx), &mask(&dx));
    check_exact(
        &format!("{tag} forward/backward same mask"),
        &mask(&gdx),
        &mask(&gy),
    );
    check_close(&format!("{tag} forward"), &gy, &y, EW);
    check_close(&format!("{tag} backward"), &gdx, &dx, EW);
    // The CPU twin is the reference, but a mask that drops nothing (or everything) for p = 0.4
    // would pass the comparison if both sides were wrong the same way.
    if n >= 10_000 {
        let dropped = mask(&gy).iter().filter(|&&m| m == 0).count() as f64 / n as f64;
        assert!(
            (dropped - prob as f64).abs() < 0.02,
            "{tag}: dropped fraction {dropped}"
        );
    }
}

#[test]
fn dropout_masks_match() {
    let Some(ctx) = ctx() else { return };
    let k = ActKernels::new(&ctx).expect("act kernels");
    for &n in &[1usize, 7, 1000, 70001] {
        for &prob in &[0.0f32, 0.4, 0.8] {
            for &t in &[0u32, 17] {
                dropout_case(&ctx, &k, n, prob, 1234, t);
            }
        }
    }
    // Different steps and seeds draw different masks.
    let p = dropout_params(4096, 0.5, 9);
    let q = dropout_params(4096, 0.5, 10);
    let m = |p: &fmnist_gpu::params::ActParams, t| {
        (0..4096)
            .map(|i| cpu::act::dropout_keep(p, t, i))
            .collect::<Vec<bool>>()
    };
    assert_ne!(m(&p, 0), m(&p, 1));
    assert_ne!(m(&p, 0), m(&q, 0));
}

/// More than 65535 workgroups of 256: the grid is split over y and the shader must rebuild the
/// flat id; a wrong id shows up as a different dropout mask.
#[test]
fn dropout_split_dispatch() {
    let Some(ctx) = ctx() else { return };
    let k = ActKernels::new(&ctx).expect("act kernels");
    let n = 65535 * 256 + 4099;
    let groups = fmnist_gpu::ops::groups_1d(n as u32, 256);
    assert!(
        groups.1 > 1,
        "n={n} should need a split grid, got {groups:?}"
    );
    dropout_case(&ctx, &k, n, 0.4, 77, 5);
}

// ---------------------------------------------------------------------------------------------
// loss

#[test]
fn softmax_xent_forward_backward() {
    let Some(ctx) = ctx() else { return };
    let k = LossKernels::new(&ctx).expect("loss kernels");
    // (batch, classes, valid)
    let cases = [
        (1, 10, 1),
        (3, 10, 2),
        (7, 10, 7),
        (7, 3, 0),
        (128, 10, 100),
        (300, 10, 300),
        (4096, 10, 4001),
    ];
    for (si, &(b, c, valid)) in cases.iter().enumerate() {
        let p = LossParams {
            batch: b,
            classes: c,
            _pad: [0; 2],
        };
        let (bu, cu) = (b as usize, c as usize);
        let mut g = Gen::new(400 + si as u32);
        let mut logits = g.vec(bu * cu, -6.0, 6.0);
        // Some rows with a tied maximum: the first one must count as the prediction.
        for r in (0..bu).step_by(5) {
            let m = logits[r * cu..][..cu]
                .iter()
                .fold(f32::MIN, |a, &v| a.max(v));
            logits[r * cu + cu - 1] = m;
        }
        let labels: Vec<u32> = (0..bu).map(|_| g.below(c)).collect();
        // epoch_step 2 of an epoch of n samples whose third batch has `valid` rows.
        let state = StepState {
            epoch_step: 2,
            t: 9,
            n: 2 * b + valid,
            batch: b,
        };
        assert_eq!(state.valid(), valid);

        let mut probs = vec![0.0; bu * cu];
        let mut dl = vec![0.0; bu * cu];
        let mut m = cpu::loss::Metrics {
            loss_sum: 1.5,
            correct: 3,
            seen: 11,
        };
        // Twice: the GPU metrics must accumulate, not overwrite.
        for _ in 0..2 {
            cpu::loss::softmax_xent_forward(&p, valid, &logits, &labels, &mut probs, &mut m);
        }
        cpu::loss::softmax_xent_backward(&p, valid, &probs, &labels, &mut dl);

        let st = state_buf(&ctx, state);
        let lb = storage_init(&ctx, "logits", &logits);
        let yb = storage_init(&ctx, "labels", &labels);
        let pb = out_f32(&ctx, "probs", bu * cu);
        let metrics = storage_init(&ctx, "metrics", &[1.5f32.to_bits(), 3, 11, 0]);
        assert_eq!(metrics.size(), METRICS_BYTES);
        let fwd = k.softmax_xent_forward(&ctx, &p, &st, &lb, &yb, &pb, &metrics);
        run(&ctx, &fwd);
        run(&ctx, &fwd);
        // Backward from the CPU probabilities so it is checked on its own.
        let pc = storage_init(&ctx, "probs_cpu", &probs);
        let db = storage_init(&ctx, "dlogits", &vec![5.0f32; bu * cu]);
        run(&ctx, &k.softmax_xent_backward(&ctx, &p, &st, &pc, &yb, &db));

        let tag = format!("loss B{b} C{c} valid{valid}");
        check_close(
            &format!("{tag} probs"),
            &read_f32(&ctx, &pb, bu * cu),
            &probs,
            EW,
        );
        let gm = read_u32(&ctx, &metrics, 4);
        check_close(
            &format!("{tag} loss_sum"),
            &[f32::from_bits(gm[0])],
            &[m.loss_sum],
            RED,
        );
        check_exact(
            &format!("{tag} correct, seen"),
            &gm[1..3],
            &[m.correct, m.seen],
        );
        check_close(
            &format!("{tag} dlogits"),
            &read_f32(&ctx, &db, bu * cu),
            &dl,
            EW,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// optim

/// Runs `steps` optimizer steps on the GPU (each followed by `advance`, so StepState.t counts
/// them) with fresh gradients per step, comparing the weights and the state after every step.
/// `cpu_step(t, w, g, state)` is the twin with t starting at 1; state is flat f32.
#[allow(clippy::type_complexity)]
fn optim_case(
    ctx: &GpuContext,
    name: &str,
    n: usize,
    per: usize,
    init: &[f32],
    prepare: &dyn Fn(&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer) -> Vec<Dispatch>,
    cpu_step: &mut dyn FnMut(u32, &mut [f32], &[f32], &mut [f32]),
) {
    let data = DataKernels::new(ctx).expect("data kernels");
    let mut g = Gen::new(500 ^ n as u32);
    let mut w = g.vec(n, -1.0, 1.0);
    let mut st: Vec<f32> = init.iter().copied().cycle().take(n * per).collect();
    let wb = storage_init(ctx, "w", &w);
    let gb = out_f32(ctx, "g", n);
    let sb = storage_init(ctx, "state", &st);
    let step = state_buf(ctx, StepState::default());
    let mut ds = prepare(&step, &wb, &gb, &sb);
    ds.extend(data.advance(ctx, &step));
    let mut prev_g: Vec<f32> = vec![0.0; n];
    for t in 1..=4u32 {
        // Gradients that keep, flip or zero their sign from the previous step, so every branch
        // of WAME's zeta update and of the momentum start is taken.
        let grad: Vec<f32> = (0..n)
            .map(|i| match g.below(4) {
                0 => 0.0,
                1 => -prev_g[i] * 0.7 + 1e-3,
                _ => g.f32(-1.0, 1.0),
            })
            .collect();
        ctx.queue.write_buffer(&gb, 0, bytemuck::cast_slice(&grad));
        run(ctx, &ds);
        cpu_step(t, &mut w, &grad, &mut st);
        let tag = format!("{name} n={n} step {t}");
        check_close(&format!("{tag} w"), &read_f32(ctx, &wb, n), &w, EW);
        check_close(
            &format!("{tag} state"),
            &read_f32(ctx, &sb, n * per),
            &st,
            EW,
        );
        prev_g = grad;
    }
    let s: Vec<StepState> = read(ctx, &step, 1).expect("readback");
    assert_eq!(s[0].t, 4, "{name}: advance must count the steps");
}

fn wame_params(n: usize, variant: u32) -> WameParams {
    WameParams {
        n: n as u32,
        variant,
        lr: 1e-3,
        alpha: 0.9,
        eta_plus: 1.2,
        eta_minus: 0.1,
        zeta_min: 0.01,
        zeta_max: 100.0,
        eps: 1e-12,
        _pad: [0; 3],
    }
}

fn opt_params(n: usize, lr: f32, b1: f32, b2: f32, eps: f32) -> OptParams {
    OptParams {
        n: n as u32,
        lr,
        b1,
        b2,
        eps,
        _pad: [0; 3],
    }
}

#[test]
fn wame_steps() {
    let Some(ctx) = ctx() else { return };
    let k = OptimKernels::new(&ctx).expect("optim kernels");
    for &n in &[1usize, 1000, 70001] {
        for variant in 0..3u32 {
            let p = wame_params(n, variant);
            optim_case(
                &ctx,
                &format!("wame variant {variant}"),
                n,
                4,
                &WAME_INIT,
                &|_step, w, g, s| k.wame(&ctx, &p, w, g, s),
                &mut |_t, w, g, s| {
                    cpu::optim::wame(&p, w, g, bytemuck::cast_slice_mut::<f32, [f32; 4]>(s))
                },
            );
        }
    }
}

#[test]
fn adam_rmsprop_sgd_steps() {
    let Some(ctx) = ctx() else { return };
    let k = OptimKernels::new(&ctx).expect("optim kernels");
    for &n in &[1usize, 1000, 70001] {
        let p = opt_params(n, 1e-3, 0.9, 0.999, 1e-8);
        optim_case(
            &ctx,
            "adam",
            n,
            2,
            &[0.0, 0.0],
            &|step, w, g, s| k.adam(&ctx, &p, step, w, g, s),
            &mut |t, w, g, s| {
                cpu::optim::adam(&p, t, w, g, bytemuck::cast_slice_mut::<f32, [f32; 2]>(s))
            },
        );
        let p = opt_params(n, 1e-3, 0.0, 0.9, 1e-8);
        optim_case(
            &ctx,
            "rmsprop",
            n,
            1,
            &[0.0],
            &|_step, w, g, s| k.rmsprop(&ctx, &p, w, g, s),
            &mut |_t, w, g, s| cpu::optim::rmsprop(&p, w, g, s),
        );
        let p = opt_params(n, 1e-2, 0.9, 0.0, 0.0);
        // The momentum buffer starts as garbage: step 1 must overwrite it with g.
        optim_case(
            &ctx,
            "sgd",
            n,
            1,
            &[3.0],
            &|step, w, g, s| k.sgd(&ctx, &p, step, w, g, s),
            &mut |t, w, g, s| cpu::optim::sgd(&p, t, w, g, s),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// data

#[test]
fn gather_and_advance() {
    let Some(ctx) = ctx() else { return };
    let k = DataKernels::new(&ctx).expect("data kernels");
    let pixels = 28 * 28;
    let samples = 54usize;
    let mut g = Gen::new(600);
    // Mostly smooth images (so a shift or flip changes them) with a few saturated pixels.
    let images: Vec<u8> = (0..samples * pixels)
        .map(|i| {
            let (r, c) = ((i % pixels) / 28, i % 28);
            if g.below(16) == 0 {
                255
            } else {
                ((r * 9 + c * 5 + i / pixels) % 256) as u8
            }
        })
        .collect();
    let labels: Vec<u8> = (0..samples).map(|_| g.below(10) as u8).collect();
    let labels_u32: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
    let img_b = storage_init(&ctx, "images", &pack_u8(&images));
    let lab_b = storage_init(&ctx, "labels", &labels_u32);
    for &batch in &[1u32, 3, 7, 16, 128] {
        // A permutation of 0..samples, of which the epoch uses the first n (short last batch).
        let mut index: Vec<u32> = (0..samples as u32).collect();
        for i in (1..index.len()).rev() {
            index.swap(i, g.below(i as u32 + 1) as usize);
        }
        let n = samples as u32 - 4;
        let steps = n.div_ceil(batch).min(6) + 1;
        let idx_b = storage_init(&ctx, "index", &index);
        for augment in [0u32, 1] {
            let p = GatherParams {
                batch,
                pixels: pixels as u32,
                augment,
                seed: 42,
            };
            let b = batch as usize;
            let mut st = StepState {
                epoch_step: 0,
                t: 1000 + batch,
                n,
                batch,
            };
            let st_b = state_buf(&ctx, st);
            let (xb, yb) = (
                out_f32(&ctx, "x", b * pixels),
                storage(&ctx, "y", 4 * b as u64),
            );
            let gather = k.gather(&ctx, &p, &st_b, &idx_b, &img_b, &lab_b, &xb, &yb);
            let advance = k.advance(&ctx, &st_b);
            // Jump to the last few batches for big epochs: the short batch is the interesting one.
            let first = n.div_ceil(batch).saturating_sub(steps - 1);
            for _ in 0..first {
                run(&ctx, &advance);
                cpu::data::advance(&mut st);
            }
            for _ in 0..steps {
                let (mut x, mut y) = (vec![0.0f32; b * pixels], vec![0u32; b]);
                cpu::data::gather(&p, &st, &index, &images, &labels, &mut x, &mut y);
                // x and y start as garbage so rows past n must be written as zeros.
                ctx.queue
                    .write_buffer(&xb, 0, bytemuck::cast_slice(&vec![9.0f32; b * pixels]));
                ctx.queue
                    .write_buffer(&yb, 0, bytemuck::cast_slice(&vec![99u32; b]));
                run(&ctx, &gather);
                let tag = format!(
                    "gather B{batch} augment{augment} epoch_step {} valid {}",
                    st.epoch_step,
                    st.valid()
                );
                check_close(
                    &format!("{tag} x"),
                    &read_f32(&ctx, &xb, b * pixels),
                    &x,
                    EW,
                );
                check_exact(&format!("{tag} y"), &read_u32(&ctx, &yb, b), &y);
                if augment == 1 && st.valid() > 0 {
                    // Augmentation must actually move pixels for some row of a big enough batch.
                    let mut plain = vec![0.0f32; b * pixels];
                    let q = GatherParams { augment: 0, ..p };
                    cpu::data::gather(
                        &q,
                        &st,
                        &index,
                        &images,
                        &labels,
                        &mut plain,
                        &mut y.clone(),
                    );
                    if st.valid() >= 7 {
                        assert_ne!(plain, x, "{tag}: augmentation changed nothing");
                    }
                }
                run(&ctx, &advance);
                cpu::data::advance(&mut st);
                let gs: Vec<StepState> = read(&ctx, &st_b, 1).expect("readback");
                assert_eq!(gs[0], st, "advance");
            }
        }
    }
}
