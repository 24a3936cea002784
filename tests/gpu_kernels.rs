//! GPU vs CPU: every WGSL entry point except conv (the fused head and dense backward included) against its CPU twin, through the cases of the
//! kernel table (`fmnist_gpu::parity`, the same cases `fmnist-gpu parity` runs): several shapes
//! including odd ones, every output buffer, the tolerances of SPEC 10 (element-wise ops atol 1e-6
//! rtol 1e-5, reductions atol 1e-5 rtol 1e-4, masks, argmax, labels, counts and step counters
//! exactly equal, reductions bit-identical when run twice).
//!
//! Skips with a visible message when there is no adapter (fails instead with FMNIST_REQUIRE_GPU=1).

mod common;

use common::{assert_reruns, assert_variants, check_kernel, ctx, run_checked};
use fmnist_gpu::cpu;
use fmnist_gpu::gpu::buffers;
use fmnist_gpu::gpu::tile::Tile;
use fmnist_gpu::ops::act::{ActKernels, dropout_params};
use fmnist_gpu::ops::dense::DenseKernels;
use fmnist_gpu::ops::head::{HeadGrads, HeadInputs, HeadKernels};
use fmnist_gpu::ops::loss::LossKernels;
use fmnist_gpu::params::{ActParams, DenseParams, GatherParams, HeadParams, StepState};
use fmnist_gpu::parity::{self, Case, GATHER_N};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------------
// pool

#[test]
fn pool_maxpool_forward() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "pool.maxpool_forward");
    assert!(rows.iter().any(|r| r.output == "argmax"));
}

#[test]
fn pool_maxpool_backward() {
    let Some(ctx) = ctx() else { return };
    check_kernel(&ctx, "pool.maxpool_backward");
}

// ---------------------------------------------------------------------------------------------
// dense

#[test]
fn dense_forward() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "dense.forward");
    assert_reruns(&rows);
    assert_variants(&ctx, &rows);
}

#[test]
fn dense_backward_input() {
    let Some(ctx) = ctx() else { return };
    assert_reruns(&check_kernel(&ctx, "dense.backward_input"));
}

#[test]
fn dense_backward_weight() {
    let Some(ctx) = ctx() else { return };
    assert_reruns(&check_kernel(&ctx, "dense.backward_weight"));
}

#[test]
fn dense_backward_bias() {
    let Some(ctx) = ctx() else { return };
    assert_reruns(&check_kernel(&ctx, "dense.backward_bias"));
}

/// The fused backward's rows, plus: it computes every value in the unfused kernels' order, so
/// it must equal dense.backward_weight, backward_bias and backward_input bit for bit.
#[test]
fn dense_backward_fused() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "dense.backward_fused");
    assert_reruns(&rows);
    assert_variants(&ctx, &rows);
    for out in ["dw", "db", "dx"] {
        assert!(rows.iter().any(|r| r.output == out), "no {out} row");
    }
    let k = DenseKernels::new(&ctx).expect("pipelines");
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &(b, ni, no) in &[(3u32, 17u32, 10u32), (33, 31, 65), (128, 1024, 128)] {
        let p = DenseParams::new(b, ni, no, false);
        let (bu, niu, nou) = (b as usize, ni as usize, no as usize);
        let mut r =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (x, w, dy) = (r(bu * niu), r(nou * niu), r(bu * nou));
        let buf = |l: &str, v: &[f32]| buffers::storage_init(&ctx, l, v);
        let (xb, wb, dyb) = (buf("x", &x), buf("w", &w), buf("dy", &dy));
        let outs = |l: &str| [nou * niu, nou, bu * niu].map(|n| buf(l, &vec![f32::NAN; n]));
        let [dw, db, dx] = outs("unfused");
        let [fw, fb, fx] = outs("fused");
        let unfused = [
            k.backward_weight(&ctx, &p, &xb, &dyb, &dw).expect("dw"),
            k.backward_bias(&ctx, &p, &dyb, &db).expect("db"),
            k.backward_input(&ctx, &p, &dyb, &wb, &dx).expect("dx"),
        ]
        .concat();
        buffers::run_once(&ctx, &unfused).expect("unfused");
        // Every tile variant the device runs: the same bits as the unfused kernels.
        for tile in Tile::candidates(&ctx.limits) {
            let fused = k
                .backward_fused(&ctx, &p, tile, &xb, &dyb, &wb, &fw, &fb, &fx)
                .expect("fused");
            assert_eq!(fused.len(), 1, "one dispatch");
            buffers::run_once(&ctx, &fused).expect("fused");
            for (name, a, f, n) in [
                ("dw", &dw, &fw, nou * niu),
                ("db", &db, &fb, nou),
                ("dx", &dx, &fx, bu * niu),
            ] {
                let want: Vec<u32> = buffers::read(&ctx, a, n).expect("read");
                let got: Vec<u32> = buffers::read(&ctx, f, n).expect("read");
                assert_eq!(
                    got,
                    want,
                    "B{b} In{ni} Out{no} tile {}: fused {name} differs from unfused",
                    tile.name()
                );
            }
        }
    }
    // A tile the kernel does not support is refused, not run.
    let p = DenseParams::new(3, 17, 10, false);
    let b = buffers::storage_init(&ctx, "any", &[0f32; 256]);
    assert!(
        k.forward(&ctx, &p, Tile { tm: 4, tn: 4 }, &b, &b, &b, &b)
            .is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// head

/// Every case compares logits and the metrics, the backward cases dw, db and dh too, each
/// (but the accumulating metrics) run twice for the same bits.
#[test]
fn head_head() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "head.head");
    for out in [
        "logits",
        "dw",
        "db",
        "dh",
        "dh x valid",
        "metrics loss_sum",
        "metrics correct,seen",
    ] {
        assert!(rows.iter().any(|r| r.output == out), "no {out} row");
    }
    let outputs: Vec<&str> = rows
        .iter()
        .map(|r| r.output.as_str())
        .filter(|o| !o.starts_with("metrics") && !o.ends_with(" rerun") && !o.ends_with(" x valid"))
        .collect();
    let reruns = rows.iter().filter(|r| r.output.ends_with(" rerun")).count();
    assert_eq!(outputs.len(), reruns, "every output of every case reruns");
    assert!(
        rows.iter()
            .any(|r| r.shape.contains("fwd+bwd") && r.shape.contains(" ls "))
    );
}

/// A batch of 4096 at hidden 1024 (16 row chunks, 4 columns per invocation): about half of
/// lavapipe's 65,535 loop iterations per invocation, which would silently cut the loops short.
#[test]
fn head_large_batch() {
    let Some(ctx) = ctx() else { return };
    let cases = [Case::Head {
        backward: true,
        batch: 4096,
        hidden: 1024,
        valid: 4001,
        label_smoothing: 0.0,
        seed: 2400,
    }];
    run_checked(&ctx, &cases);
}

/// The head against the unfused GPU chain it replaces (dense.forward, softmax cross-entropy
/// forward and backward, fc2's three backward GEMMs, relu_backward), on the same inputs: the
/// fused kernel sums in the unfused kernels' order, so the outputs are expected bit for bit;
/// the metrics are compared as the table compares them.
#[test]
fn head_matches_the_unfused_gpu_chain() {
    let Some(ctx) = ctx() else { return };
    let dense = DenseKernels::new(&ctx).expect("dense pipelines");
    let lossk = LossKernels::new(&ctx).expect("loss pipelines");
    let act = ActKernels::new(&ctx).expect("act pipelines");
    let head = HeadKernels::new(&ctx).expect("head pipelines");
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for &(b, hid, valid, ls) in &[
        (3u32, 37u32, 2u32, 0.1f32),
        (128, 128, 100, 0.0),
        (300, 129, 300, 0.0),
    ] {
        let p = HeadParams::new(b, hid, ls);
        let (bu, hu) = (b as usize, hid as usize);
        let h: Vec<f32> = (0..bu * hu)
            .map(|_| rng.random_range(-0.5f32..1.0).max(0.0))
            .collect();
        let w: Vec<f32> = (0..10 * hu)
            .map(|_| rng.random_range(-0.2f32..0.2))
            .collect();
        let bias: Vec<f32> = (0..10).map(|_| rng.random_range(-0.5f32..0.5)).collect();
        let labels: Vec<u32> = (0..b).map(|_| rng.random_range(0..10u32)).collect();
        let buf = |l: &str, v: &[f32]| buffers::storage_init(&ctx, l, v);
        let nan = |l: &str, n: usize| buf(l, &vec![f32::NAN; n]);
        let (hb, wb, biasb) = (buf("h", &h), buf("w", &w), buf("bias", &bias));
        let lab = buffers::storage_init(&ctx, "labels", &labels);
        let st = buffers::storage_init(
            &ctx,
            "state",
            &[StepState {
                epoch_step: 0,
                t: 1,
                n: valid,
                batch: b,
            }],
        );
        let m0 = [0.25f32.to_bits(), 1, 2, 0];
        let (um, fm) = (
            buffers::storage_init(&ctx, "metrics", &m0),
            buffers::storage_init(&ctx, "metrics", &m0),
        );
        let (fc2, lp) = (p.fc2(), p.loss());
        let relu = fmnist_gpu::ops::act::relu_params(b * hid);
        let (ulog, probs, dl, udw, udb, dh_pre, udh) = (
            nan("logits", bu * 10),
            nan("probs", bu * 10),
            nan("dlogits", bu * 10),
            nan("dw", 10 * hu),
            nan("db", 10),
            nan("dh_pre", bu * hu),
            nan("dh", bu * hu),
        );
        let unfused = [
            dense
                .forward(&ctx, &fc2, Tile::DEFAULT, &hb, &wb, &biasb, &ulog)
                .expect("dense.forward"),
            lossk.softmax_xent_forward(&ctx, &lp, &st, &ulog, &lab, &probs, &um),
            lossk.softmax_xent_backward(&ctx, &lp, &st, &probs, &lab, &dl),
            dense
                .backward_weight(&ctx, &fc2, &hb, &dl, &udw)
                .expect("dw"),
            dense.backward_bias(&ctx, &fc2, &dl, &udb).expect("db"),
            dense
                .backward_input(&ctx, &fc2, &dl, &wb, &dh_pre)
                .expect("dx"),
            act.relu_backward(&ctx, &relu, &hb, &dh_pre, &udh),
        ]
        .concat();
        buffers::run_once(&ctx, &unfused).expect("unfused");
        let (flog, fdw, fdb, fdh) = (
            nan("logits", bu * 10),
            nan("dw", 10 * hu),
            nan("db", 10),
            nan("dh", bu * hu),
        );
        let fused = head
            .head(
                &ctx,
                &p,
                &st,
                HeadInputs {
                    h: (&hb).into(),
                    w: (&wb).into(),
                    bias: (&biasb).into(),
                    labels: (&lab).into(),
                },
                &flog,
                &fm,
                Some(HeadGrads {
                    dw: (&fdw).into(),
                    db: (&fdb).into(),
                    dh: (&fdh).into(),
                }),
            )
            .expect("head");
        assert_eq!(fused.len(), 1, "one dispatch");
        buffers::run_once(&ctx, &fused).expect("fused");
        let what = format!("B{b} H{hid} valid {valid} ls {ls}");
        for (name, a, f, n) in [
            ("logits", &ulog, &flog, bu * 10),
            ("dw", &udw, &fdw, 10 * hu),
            ("db", &udb, &fdb, 10),
            ("dh", &udh, &fdh, bu * hu),
        ] {
            let want: Vec<f32> = buffers::read(&ctx, a, n).expect("read");
            let got: Vec<f32> = buffers::read(&ctx, f, n).expect("read");
            let differ = want
                .iter()
                .zip(&got)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count();
            assert_eq!(
                differ, 0,
                "{what}: {differ} of {n} {name} values differ from the unfused chain"
            );
        }
        let (um, fm): (Vec<u32>, Vec<u32>) = (
            buffers::read(&ctx, &um, 4).expect("read"),
            buffers::read(&ctx, &fm, 4).expect("read"),
        );
        assert_eq!(fm[1..3], um[1..3], "{what}: correct, seen");
        assert_eq!(fm[0], um[0], "{what}: loss sum bits");
    }
}

// ---------------------------------------------------------------------------------------------
// act

#[test]
fn relu_forward() {
    let Some(ctx) = ctx() else { return };
    check_kernel(&ctx, "act.relu_forward");
}

#[test]
fn relu_backward() {
    let Some(ctx) = ctx() else { return };
    check_kernel(&ctx, "act.relu_backward");
}

fn keep_mask(p: &ActParams, t: u32, n: u32) -> Vec<bool> {
    (0..n).map(|i| cpu::act::dropout_keep(p, t, i)).collect()
}

/// The GPU masks equal the CPU masks (the table's `mask` rows); here the CPU side is held to what
/// the comparison alone cannot show: forward and backward drop the same units, and a large mask
/// drops the asked fraction (a mask that dropped nothing would pass if both sides were wrong).
#[track_caller]
fn check_dropout_cpu_masks(cases: &[Case]) {
    for c in cases {
        let Case::Dropout {
            n, prob, t, seed, ..
        } = *c
        else {
            panic!("not a dropout case: {c:?}")
        };
        let p = dropout_params(n, prob, seed as u32);
        let ones = vec![1.0f32; n as usize];
        let (mut y, mut dx) = (vec![0.0f32; n as usize], vec![0.0f32; n as usize]);
        cpu::act::dropout_forward(&p, t, &ones, &mut y);
        cpu::act::dropout_backward(&p, t, &ones, &mut dx);
        let kept = keep_mask(&p, t, n);
        assert!(
            y.iter()
                .zip(&dx)
                .zip(&kept)
                .all(|((&a, &b), &k)| (a != 0.0) == k && (b != 0.0) == k),
            "{c:?}: forward and backward masks differ"
        );
        if n >= 10_000 {
            let dropped = kept.iter().filter(|&&k| !k).count() as f64 / n as f64;
            assert!(
                (dropped - prob as f64).abs() < 0.02,
                "{c:?}: dropped fraction {dropped}"
            );
        }
    }
}

#[test]
fn dropout_forward() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "act.dropout_forward");
    assert!(rows.iter().any(|r| r.output == "mask"));
    check_dropout_cpu_masks(&parity::cases_for("act.dropout_forward"));
}

#[test]
fn dropout_backward() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "act.dropout_backward");
    assert!(rows.iter().any(|r| r.output == "mask"));
    check_dropout_cpu_masks(&parity::cases_for("act.dropout_backward"));
}

#[test]
fn dropout_masks_differ_by_step_and_seed() {
    let p = dropout_params(4096, 0.5, 9);
    let q = dropout_params(4096, 0.5, 10);
    assert_ne!(keep_mask(&p, 0, 4096), keep_mask(&p, 1, 4096));
    assert_ne!(keep_mask(&p, 0, 4096), keep_mask(&q, 0, 4096));
}

/// More than 65535 workgroups of 256: the grid is split over y and the shader must rebuild the
/// flat id; a wrong id shows up as a different dropout mask.
#[test]
fn dropout_split_dispatch() {
    let Some(ctx) = ctx() else { return };
    let n = 65535 * 256 + 4099;
    let groups = fmnist_gpu::ops::groups_1d(n, 256);
    assert!(
        groups.1 > 1,
        "n={n} should need a split grid, got {groups:?}"
    );
    let cases: Vec<Case> = [false, true]
        .map(|backward| Case::Dropout {
            backward,
            n,
            prob: 0.4,
            t: 5,
            seed: 77,
        })
        .into();
    run_checked(&ctx, &cases);
    check_dropout_cpu_masks(&cases);
}

// ---------------------------------------------------------------------------------------------
// loss

#[test]
fn softmax_xent_forward() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "loss.softmax_xent_forward");
    for out in ["probs", "metrics loss_sum", "metrics correct,seen"] {
        assert!(rows.iter().any(|r| r.output == out), "no {out} row");
    }
}

#[test]
fn softmax_xent_backward() {
    let Some(ctx) = ctx() else { return };
    check_kernel(&ctx, "loss.softmax_xent_backward");
}

// ---------------------------------------------------------------------------------------------
// optim: consecutive steps each, weights and state compared after every step with the f32 CPU
// twin and with its f64 evaluation, from t = 1 and from late steps (10, 1,000, 100,000)

#[test]
fn optim_wame() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "optim.wame");
    for variant in ["seed", "paper", "inverse"] {
        assert!(rows.iter().any(|r| r.shape.contains(variant)), "{variant}");
    }
}

/// The late-step cases ran, with their f64 rows: where `1 - b^t` cancels (Adam's bias
/// corrections), an f32 `pow` was 2e-3 off.
#[track_caller]
fn has_late_steps(rows: &[fmnist_gpu::parity::KernelRow]) {
    for t in ["t=10", "t=1000", "t=100000"] {
        assert!(rows.iter().any(|r| r.shape.contains(t)), "no case from {t}");
    }
    assert!(rows.iter().any(|r| r.output == "w vs f64"));
}

#[test]
fn optim_adam() {
    let Some(ctx) = ctx() else { return };
    has_late_steps(&check_kernel(&ctx, "optim.adam"));
}

#[test]
fn optim_rmsprop() {
    let Some(ctx) = ctx() else { return };
    check_kernel(&ctx, "optim.rmsprop");
}

#[test]
fn optim_sgd() {
    let Some(ctx) = ctx() else { return };
    has_late_steps(&check_kernel(&ctx, "optim.sgd"));
}

// The fused update: every tensor (split-K partials summed in ascending order) in one dispatch,
// both arenas compared whole, padding included.

#[test]
fn optim_update_wame() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "optim.update_wame");
    for variant in ["seed", "paper", "inverse"] {
        assert!(rows.iter().any(|r| r.shape.contains(variant)), "{variant}");
    }
}

#[test]
fn optim_update_adam() {
    let Some(ctx) = ctx() else { return };
    check_kernel(&ctx, "optim.update_adam");
}

#[test]
fn optim_update_rmsprop() {
    let Some(ctx) = ctx() else { return };
    check_kernel(&ctx, "optim.update_rmsprop");
}

#[test]
fn optim_update_sgd() {
    let Some(ctx) = ctx() else { return };
    check_kernel(&ctx, "optim.update_sgd");
}

#[test]
fn optim_stats_wame() {
    let Some(ctx) = ctx() else { return };
    let rows = check_kernel(&ctx, "optim.stats_wame");
    for variant in ["seed", "paper", "inverse"] {
        assert!(rows.iter().any(|r| r.shape.contains(variant)), "{variant}");
    }
}

#[test]
fn optim_stats_adam() {
    let Some(ctx) = ctx() else { return };
    check_kernel(&ctx, "optim.stats_adam");
}

#[test]
fn optim_stats_rmsprop() {
    let Some(ctx) = ctx() else { return };
    check_kernel(&ctx, "optim.stats_rmsprop");
}

#[test]
fn optim_stats_sgd() {
    let Some(ctx) = ctx() else { return };
    check_kernel(&ctx, "optim.stats_sgd");
}

// ---------------------------------------------------------------------------------------------
// data

#[test]
fn data_gather() {
    let Some(ctx) = ctx() else { return };
    let cases = parity::cases_for("data.gather");
    run_checked(&ctx, &cases);
    // Augmentation must actually move pixels (the comparison alone would pass an augment that
    // does nothing on both sides): on the cases' own data, some row of every full enough batch.
    let mut compared = 0;
    for c in &cases {
        let Case::Gather {
            batch,
            augment: true,
            seed,
        } = *c
        else {
            continue;
        };
        let g = parity::gather_inputs(seed);
        let b = batch as usize;
        for epoch_step in 0..GATHER_N.div_ceil(batch) {
            let st = StepState {
                epoch_step,
                t: 1000 + batch,
                n: GATHER_N,
                batch,
            };
            if st.valid() < 7 {
                continue;
            }
            let outs = [0u32, 1].map(|augment| {
                let p = GatherParams {
                    batch,
                    pixels: 28 * 28,
                    augment,
                    seed: 42,
                };
                let (mut x, mut y) = (vec![0.0f32; b * 784], vec![0u32; b]);
                cpu::data::gather(&p, &st, &g.index, &g.images, &g.labels, &mut x, &mut y);
                (x, y)
            });
            assert_ne!(
                outs[0].0, outs[1].0,
                "{c:?} step {epoch_step}: augment moved nothing"
            );
            assert_eq!(outs[0].1, outs[1].1, "labels must not move");
            compared += 1;
        }
    }
    assert!(compared > 0);
}

#[test]
fn data_advance() {
    let Some(ctx) = ctx() else { return };
    check_kernel(&ctx, "data.advance");
}
