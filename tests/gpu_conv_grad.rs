//! The fused conv backward (shaders/conv_grad.wgsl) against its CPU twin, SPEC 10, through the
//! cases of the kernel table (`fmnist_gpu::parity`, the same cases `fmnist-gpu parity` runs):
//! weight, bias and input gradients of the model's conv1 and conv2 and of odd shapes, with and
//! without dropout, from the pooled map and argmax of a real forward; `backward` (all three in
//! one dispatch) also against the two separate entry points, bit for bit.
//!
//! Every output starts as NaN, so an element a kernel forgets to write fails the check; each
//! case runs twice and must give the same bits. The tile variants (rows of the table) must agree
//! with the default tile bit for bit too.

mod common;

use common::{assert_reruns, assert_variants, check_kernel, ctx};
use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::gpu::buffers::{self, View, read, run_once, storage_init};
use fmnist_gpu::gpu::tile::Tile;
use fmnist_gpu::ops::conv_grad::{self, ConvGradKernels};
use fmnist_gpu::params::StepState;
use fmnist_gpu::parity::{self, CONV_GRAD_SHAPES, Case};

#[test]
fn conv_grad_backward_weight() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "conv_grad.backward_weight");
    assert_reruns(&rows);
    assert_variants(&ctx, &rows);
    let cases = parity::cases_for("conv_grad.backward_weight");
    // Both outputs of every case are compared.
    for out in ["dw", "db"] {
        assert_eq!(
            rows.iter().filter(|r| r.output == out).count(),
            ran(&cases, &rows)
        );
    }
    let parts = |c: &Case| match c {
        Case::ConvGrad { p, .. } => (p.parts, p.dropout),
        _ => unreachable!(),
    };
    assert!(cases.iter().any(|c| parts(c).0 == 1));
    assert!(cases.iter().filter(|c| parts(c).0 > 2).count() >= 2);
    assert!(cases.iter().any(|c| parts(c).1 != 0));
}

#[test]
fn conv_grad_backward_input() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "conv_grad.backward_input");
    assert_reruns(&rows);
    assert_variants(&ctx, &rows);
}

/// Cases that ran: all but the variants this device cannot hold.
fn ran(cases: &[Case], rows: &[parity::KernelRow]) -> usize {
    cases.len()
        - rows
            .iter()
            .filter(|r| r.output.starts_with("not run"))
            .count()
}

#[test]
fn conv_grad_backward() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "conv_grad.backward");
    assert_reruns(&rows);
    assert_variants(&ctx, &rows);
    let cases = parity::cases_for("conv_grad.backward");
    for out in ["dw", "db", "dx"] {
        assert_eq!(
            rows.iter().filter(|r| r.output == out).count(),
            ran(&cases, &rows),
            "{out}"
        );
    }
    // Every table shape, at the default tile.
    assert!(
        cases
            .iter()
            .filter(|c| c.tile() == Some(Tile::DEFAULT))
            .count()
            == CONV_GRAD_SHAPES.len()
    );
}

/// `backward` (one dispatch, workgroups taking roles) writes the same bits as
/// `backward_weight` and `backward_input` dispatched separately, on every table shape (one and
/// several split-K parts, with and without dropout); `run_tile` asserts it.
#[test]
fn backward_equals_the_separate_entry_points() {
    let Some(ctx) = ctx() else { return };
    let k = ConvGradKernels::new(&ctx).expect("pipelines");
    for &s in CONV_GRAD_SHAPES {
        run_tile(&ctx, &k, s, Tile::DEFAULT);
    }
}

/// The outputs of one shape's weight partials and input gradient for `tile`, as bits; the
/// same from `backward` must be identical (asserted here).
fn run_tile(
    ctx: &GpuContext,
    k: &ConvGradKernels,
    s: (u32, u32, u32, u32, u32, u32, bool),
    tile: Tile,
) -> Vec<Vec<u32>> {
    let p = parity::conv_grad_params(s, 31);
    let d = parity::conv_grad_inputs(&p, 77);
    let c = p.conv();
    let state = storage_init(
        ctx,
        "state",
        &[StepState {
            epoch_step: 0,
            t: 3,
            n: 0,
            batch: p.batch,
        }],
    );
    let am = storage_init(ctx, "argmax", &d.argmax);
    let q = storage_init(ctx, "q", &d.q);
    let dd = storage_init(ctx, "dd", &d.dd);
    let x = storage_init(ctx, "x", &d.x);
    let w = storage_init(ctx, "w", &d.w);
    let (wl, bl) = conv_grad::partial_lens(&p);
    let nan = |n: usize| storage_init(ctx, "out", &vec![f32::NAN; n]);
    let (wp, bp, dx) = (nan(wl), nan(bl), nan(c.x_len()));
    let v = View::whole;
    let mut ds = k
        .backward_weight_partials(
            ctx,
            &p,
            tile,
            Some(&state),
            v(&am),
            v(&q),
            v(&dd),
            v(&x),
            v(&wp),
            v(&bp),
        )
        .expect("weight dispatches");
    assert_eq!(ds.len(), 1, "weight and bias partials are one dispatch");
    let input = k
        .backward_input(
            ctx,
            &p,
            tile,
            Some(&state),
            v(&am),
            v(&q),
            v(&dd),
            v(&w),
            v(&dx),
        )
        .expect("input dispatches");
    assert_eq!(input.len(), 1, "the input gradient is one dispatch");
    ds.extend(input);
    run_once(ctx, &ds).expect("GPU run");
    let (fwp, fbp, fdx) = (nan(wl), nan(bl), nan(c.x_len()));
    let both = k
        .backward(
            ctx,
            &p,
            tile,
            Some(&state),
            v(&am),
            v(&q),
            v(&dd),
            v(&x),
            v(&w),
            v(&fwp),
            v(&fbp),
            v(&fdx),
        )
        .expect("backward dispatches");
    assert_eq!(both.len(), 1, "backward is one dispatch");
    run_once(ctx, &both).expect("GPU run");
    let bits = |outs: [(&wgpu::Buffer, usize); 3]| -> Vec<Vec<u32>> {
        outs.iter()
            .map(|(b, n)| read::<u32>(ctx, b, *n).expect("readback"))
            .collect()
    };
    let separate = bits([(&wp, wl), (&bp, bl), (&dx, c.x_len())]);
    let fused = bits([(&fwp, wl), (&fbp, bl), (&fdx, c.x_len())]);
    for (name, (f, g)) in ["dw partials", "db partials", "dx"]
        .iter()
        .zip(fused.iter().zip(&separate))
    {
        assert!(
            f == g,
            "{s:?} tile {}: backward's {name} differs from the separate entry point's",
            tile.name()
        );
    }
    separate
}

/// The host side: one dispatch for the weight and bias gradients when there is one split-K
/// part, plus one fixed-order reduction per tensor otherwise; bad tiles and a dropout without
/// its step state are refused with an error, not a panic.
#[test]
fn dispatch_counts_and_refusals() {
    let Some(ctx) = ctx() else { return };
    let k = ConvGradKernels::new(&ctx).expect("pipelines");
    let b = |n: usize| buffers::storage(&ctx, "probe", n as u64 * 4);
    let mut seen = (false, false);
    for &s in CONV_GRAD_SHAPES {
        let p = parity::conv_grad_params(s, 1);
        let c = p.conv();
        let (am, q, dd) = (b(p.pooled_len()), b(p.pooled_len()), b(p.pooled_len()));
        let (x, dw, db) = (b(c.x_len()), b(c.w_len()), b(c.c_out as usize));
        let state = b(4);
        let ds = k
            .backward_weight(
                &ctx,
                &p,
                Tile::DEFAULT,
                Some(&state),
                &am,
                &q,
                &dd,
                &x,
                &dw,
                &db,
            )
            .expect("dispatches");
        assert_eq!(ds.len(), if p.parts == 1 { 1 } else { 3 }, "{s:?}");
        if p.parts == 1 {
            seen.0 = true;
        } else {
            seen.1 = true;
        }
        if p.dropout != 0 {
            let v = View::whole;
            let e = k.backward_input(
                &ctx,
                &p,
                Tile::DEFAULT,
                None,
                v(&am),
                v(&q),
                v(&dd),
                v(&x),
                v(&x),
            );
            assert!(e.is_err(), "dropout without a step state must be refused");
            let e = k.backward(
                &ctx,
                &p,
                Tile::DEFAULT,
                None,
                v(&am),
                v(&q),
                v(&dd),
                v(&x),
                v(&x),
                v(&dw),
                v(&db),
                v(&x),
            );
            assert!(
                e.is_err(),
                "backward: dropout without a step state must be refused"
            );
        }
    }
    assert!(
        seen.0 && seen.1,
        "the shapes must cover one and several parts"
    );
    let p = parity::conv_grad_params(CONV_GRAD_SHAPES[1], 1);
    let e = k.backward_weight(
        &ctx,
        &p,
        Tile { tm: 4, tn: 16 },
        None,
        &b(4),
        &b(4),
        &b(4),
        &b(4),
        &b(4),
        &b(4),
    );
    assert!(
        e.is_err(),
        "a 16x64 tile is not one of the shader's variants"
    );
}

/// Wall-clock time of the model's conv2 backward at batch 128 with dropout: the fused kernels
/// (weight+bias partials, their two reductions, input gradient) against the unfused chain they
/// replace (dropout_backward, maxpool_backward, conv backward_weight, backward_bias,
/// backward_input), after warm-up. Run with `--ignored --nocapture` (on lavapipe it shows the
/// dispatch count; timings mean something only on a GPU).
#[test]
#[ignore]
fn conv2_b128_fused_vs_unfused() {
    use fmnist_gpu::gpu::buffers::Dispatch;
    use fmnist_gpu::ops::act::ActKernels;
    use fmnist_gpu::ops::conv::ConvKernels;
    use fmnist_gpu::ops::pool::PoolKernels;
    use std::time::Instant;
    let Some(ctx) = ctx() else { return };
    let s = (128, 64, 12, 12, 64, 5, true);
    let p = parity::conv_grad_params(s, 5);
    let (c, pool) = (p.conv(), p.pool());
    let drop = p.drop().expect("dropout on");
    let d = parity::conv_grad_inputs(&p, 9);
    let b = |v: &[f32]| storage_init(&ctx, "in", v);
    let z = |n: usize| buffers::storage(&ctx, "out", n as u64 * 4);
    let state = storage_init(&ctx, "state", &[StepState::default()]);
    let (am, q, dd, x, w) = (
        storage_init(&ctx, "argmax", &d.argmax),
        b(&d.q),
        b(&d.dd),
        b(&d.x),
        b(&d.w),
    );
    let a = b(&vec![0.5f32; c.y_len()]);
    let (dw, db, dx) = (z(c.w_len()), z(c.c_out as usize), z(c.x_len()));
    let (dp, da) = (z(pool.y_len()), z(c.y_len()));
    let k = ConvGradKernels::new(&ctx).expect("pipelines");
    let v = View::whole;
    let mut fused = k
        .backward_weight(
            &ctx,
            &p,
            Tile::DEFAULT,
            Some(&state),
            &am,
            &q,
            &dd,
            &x,
            &dw,
            &db,
        )
        .expect("dispatches");
    fused.extend(
        k.backward_input(
            &ctx,
            &p,
            Tile::DEFAULT,
            Some(&state),
            v(&am),
            v(&q),
            v(&dd),
            v(&w),
            v(&dx),
        )
        .expect("dispatches"),
    );
    // conv2's backward as the training step runs it: one dispatch (weight and bias partials and
    // dx as workgroup roles), the partials summed by the fused update, so not timed here.
    let (wl, bl) = conv_grad::partial_lens(&p);
    let (wp, bp) = (z(wl), z(bl));
    let one = k
        .backward(
            &ctx,
            &p,
            Tile::DEFAULT,
            Some(&state),
            v(&am),
            v(&q),
            v(&dd),
            v(&x),
            v(&w),
            v(&wp),
            v(&bp),
            v(&dx),
        )
        .expect("dispatches");
    // The same without dropout (its mask is recomputed by every loader visit).
    let p_nd = parity::conv_grad_params((s.0, s.1, s.2, s.3, s.4, s.5, false), 5);
    let mut no_drop = k
        .backward_weight(&ctx, &p_nd, Tile::DEFAULT, None, &am, &q, &dd, &x, &dw, &db)
        .expect("dispatches");
    let weight_only = no_drop.clone();
    no_drop.extend(
        k.backward_input(
            &ctx,
            &p_nd,
            Tile::DEFAULT,
            None,
            v(&am),
            v(&q),
            v(&dd),
            v(&w),
            v(&dx),
        )
        .expect("dispatches"),
    );
    let (ak, pk, ck) = (
        ActKernels::new(&ctx).expect("act"),
        PoolKernels::new(&ctx).expect("pool"),
        ConvKernels::new(&ctx).expect("conv"),
    );
    let unfused: Vec<Dispatch> = [
        ak.dropout_backward(&ctx, &drop, &state, &dd, &dp),
        pk.maxpool_backward(&ctx, &pool, &dp, &am, &a, &da),
        ck.backward_weight(&ctx, &c, &x, &da, &dw),
        ck.backward_bias(&ctx, &c, &da, &db),
        ck.backward_input(&ctx, &c, &da, &w, &dx),
    ]
    .concat();
    println!(
        "adapter: {} ({}, {})",
        ctx.adapter.name, ctx.adapter.backend, ctx.adapter.driver
    );
    let unfused_weight: Vec<Dispatch> = [
        ck.backward_weight(&ctx, &c, &x, &da, &dw),
        ck.backward_bias(&ctx, &c, &da, &db),
    ]
    .concat();
    for (name, ds) in [
        ("fused", &fused),
        ("fused one-dispatch backward (partials + dx)", &one),
        ("fused without dropout", &no_drop),
        ("fused weight+bias only, without dropout", &weight_only),
        ("unfused", &unfused),
        ("unfused conv weight+bias only", &unfused_weight),
    ] {
        run_once(&ctx, ds).expect("warm-up");
        let runs = 5;
        let mut best = f64::INFINITY;
        for _ in 0..runs {
            let t = Instant::now();
            run_once(&ctx, ds).expect("run");
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "conv2 B=128 backward {name}: {} dispatches, best of {runs} {:.2} ms",
            ds.len(),
            best * 1e3
        );
    }
}
