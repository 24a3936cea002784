//! GPU vs CPU: every WGSL entry point except conv against its CPU twin, through the cases of the
//! kernel table (`fmnist_gpu::parity`, the same cases `fmnist-gpu parity` runs): several shapes
//! including odd ones, every output buffer, the tolerances of SPEC 10 (element-wise ops atol 1e-6
//! rtol 1e-5, reductions atol 1e-5 rtol 1e-4, masks, argmax, labels, counts and step counters
//! exactly equal, reductions bit-identical when run twice).
//!
//! Skips with a visible message when there is no adapter (fails instead with FMNIST_REQUIRE_GPU=1).

mod common;

use common::{assert_reruns, check_kernel, ctx, run_checked};
use fmnist_gpu::cpu;
use fmnist_gpu::ops::act::dropout_params;
use fmnist_gpu::params::{ActParams, GatherParams, StepState};
use fmnist_gpu::parity::{self, Case, GATHER_N};

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
    assert_reruns(&check_kernel(&ctx, "dense.forward"));
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
