//! Whole training steps on the GPU against the CPU reference, and determinism of GPU runs.

mod common;

use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::model::Params;
use fmnist_gpu::net::{Net, NetConfig, Which, cpu::CpuNet, gpu::GpuNet};
use fmnist_gpu::optim::stats::TensorStats;
use fmnist_gpu::optim::{OptimConfig, OptimizerKind};

fn config(kind: OptimizerKind, batch: u32) -> NetConfig {
    NetConfig {
        batch,
        hidden: 32,
        dropout: 0.4,
        augment: false,
        label_smoothing: 0.0,
        optim: OptimConfig::defaults(kind),
        seed: 7,
    }
}

/// Ten steps on the same batch, as ten one-step epochs (dropout on, so the masks, which depend
/// on the global step, must agree too); per-step mean losses.
fn ten_steps(net: &mut dyn Net, batch: u32) -> Vec<f64> {
    let order: Vec<u32> = (0..batch).collect();
    (0..10)
        .map(|_| {
            net.begin_epoch(&order, 1e-3).unwrap();
            net.train_step().unwrap();
            let m = net.take_metrics().unwrap();
            assert_eq!(m.seen, batch);
            m.loss_sum as f64 / m.seen as f64
        })
        .collect()
}

#[test]
fn ten_steps_gpu_match_cpu() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let batch = 16;
    // The warm-up cases read the step number from the GPU's own counter, over several epochs.
    // Weight decay rides along in some cases: its rate follows the warm-up. Not with Adam: its
    // early steps are about lr * sign(g), so a near-zero gradient whose sign differs between CPU
    // and GPU moves a weight by a full step; with wd 0.1 that happened at step 10 here (loss
    // gap 4.9e-4 after 2.2e-5 at step 9). The kernel table checks Adam's decay element by element.
    // Label smoothing (the last column) changes the loss and its gradient on both devices.
    for (kind, warmup, wd, ls) in [
        (OptimizerKind::Wame, 0, 0.0, 0.0),
        (OptimizerKind::Adam, 0, 0.0, 0.0),
        (OptimizerKind::Sgd, 0, 0.1, 0.1),
        (OptimizerKind::Wame, 6, 0.1, 0.0),
        (OptimizerKind::Rmsprop, 6, 0.0, 0.1),
    ] {
        let cfg = || {
            let mut c = config(kind, batch);
            c.optim.warmup_steps = warmup;
            c.optim.weight_decay = wd;
            c.label_smoothing = ls;
            c
        };
        let data = common::net_data(
            common::synthetic(batch as usize, 1),
            common::synthetic(8, 2),
        );
        let params = Params::glorot(32, 7);
        let mut cpu = CpuNet::new(cfg(), data.clone(), params.clone());
        let mut gpu = GpuNet::new(ctx.clone(), cfg(), data, params).unwrap();
        let (lc, lg) = (ten_steps(&mut cpu, batch), ten_steps(&mut gpu, batch));
        eprintln!("{kind:?} warm-up {warmup} wd {wd} ls {ls}: cpu {lc:?}\n{kind:?}: gpu {lg:?}");
        // With the warm-up the net fits this batch much faster, and WAME's sign test is a
        // discontinuity: f32 rounding that differs between the devices (relative loss gaps of
        // 1e-7 to 3e-6 over steps 1-9) flips zeta x0.1 against x1.2 for some near-zero gradient
        // and the gap jumps to 6e-4 at step 10 (measured on lavapipe). So the warm-up cases are
        // compared over the 6 warm-up steps and 2 at the full rate, where a warm-up read from
        // the wrong step would already show; the kernel itself is checked exactly in the table.
        let compared = if warmup > 0 { 8 } else { 10 };
        for (i, (c, g)) in lc.iter().zip(&lg).take(compared).enumerate() {
            let rel = (c - g).abs() / c.abs();
            assert!(
                rel <= 1e-4,
                "{kind:?} warm-up {warmup} wd {wd} step {}: cpu loss {c} gpu {g} (rel {rel:e})",
                i + 1
            );
        }
        // Training did something. WAME's first steps are large (zeta/Z = 10 while Z warms up
        // from 0), so on one batch its loss rises before it falls; the baselines just fall.
        if kind == OptimizerKind::Wame {
            assert!(lc[9] < lc[2], "{kind:?}: loss did not recover: {lc:?}");
        } else {
            assert!(lc[9] < lc[0], "{kind:?}: loss did not fall: {lc:?}");
        }
    }
}

fn gpu_run(ctx: &GpuContext) -> (Params, Vec<Vec<f32>>, f32) {
    gpu_run_with(ctx, false).0
}

/// [`gpu_run`], asking for the optimizer statistics on each epoch's last step when `stats`.
#[allow(clippy::type_complexity)]
fn gpu_run_with(
    ctx: &GpuContext,
    stats: bool,
) -> ((Params, Vec<Vec<f32>>, f32), Vec<Vec<TensorStats>>) {
    let data = common::net_data(common::synthetic(40, 3), common::synthetic(24, 4));
    let mut net = GpuNet::new(
        ctx.clone(),
        config(OptimizerKind::Wame, 16),
        data,
        Params::glorot(32, 9),
    )
    .unwrap();
    // 40 images in batches of 16: the last batch of each epoch is short.
    let mut taken = Vec::new();
    for epoch in 0..2 {
        let order = fmnist_gpu::train::epoch_order(&(0..40).collect::<Vec<u32>>(), 9, epoch);
        net.begin_epoch(&order, 1e-3).unwrap();
        for step in 0..3 {
            if stats && step == 2 {
                net.request_optim_stats().unwrap();
            }
            net.train_step().unwrap();
        }
        taken.push(net.take_optim_stats().unwrap());
    }
    let m = net.take_metrics().unwrap();
    let e = net
        .evaluate(Which::Test, &(0..24).collect::<Vec<u32>>(), None)
        .unwrap();
    assert_eq!(e.seen, 24);
    let (state, t) = net.optim_state().unwrap();
    assert_eq!(t, 6);
    (
        (net.params().unwrap(), state, m.loss_sum + e.loss_sum),
        taken,
    )
}

#[test]
fn seeded_gpu_runs_are_bit_identical() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let (p1, s1, l1) = gpu_run(&ctx);
    let (p2, s2, l2) = gpu_run(&ctx);
    let bits = |v: &Vec<Vec<f32>>| {
        v.iter()
            .flatten()
            .map(|f| f.to_bits())
            .collect::<Vec<u32>>()
    };
    assert_eq!(
        bits(&p1.tensors),
        bits(&p2.tensors),
        "parameters differ between identical runs"
    );
    assert_eq!(
        bits(&s1),
        bits(&s2),
        "optimizer state differs between identical runs"
    );
    assert_eq!(l1.to_bits(), l2.to_bits());
    assert_ne!(p1, Params::glorot(32, 9), "training changed nothing");
}

#[test]
fn short_last_batch_and_eval_match_cpu() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    // Trained with label smoothing, which evaluation must leave out.
    let cfg = NetConfig {
        dropout: 0.0,
        label_smoothing: 0.2,
        ..config(OptimizerKind::Adam, 16)
    };
    let data = common::net_data(common::synthetic(21, 5), common::synthetic(37, 6));
    let params = Params::glorot(32, 11);
    let plain = NetConfig {
        label_smoothing: 0.0,
        ..cfg
    };
    let mut cpu_plain = CpuNet::new(plain, data.clone(), params.clone());
    let mut cpu = CpuNet::new(cfg, data.clone(), params.clone());
    let mut gpu = GpuNet::new(ctx, cfg, data, params).unwrap();
    let idx: Vec<u32> = (0..37).rev().collect();
    let (mut pc, mut pg) = (Vec::new(), Vec::new());
    let mc = cpu.evaluate(Which::Test, &idx, Some(&mut pc)).unwrap();
    let mg = gpu.evaluate(Which::Test, &idx, Some(&mut pg)).unwrap();
    let m_plain = cpu_plain.evaluate(Which::Test, &idx, None).unwrap();
    assert_eq!(mc, m_plain, "evaluation used the smoothed loss");
    assert_eq!((mc.seen, mg.seen), (37, 37));
    assert_eq!(pc.len(), 37);
    assert_eq!(mc.correct, mg.correct);
    assert!(((mc.loss_sum - mg.loss_sum) / mc.loss_sum).abs() < 1e-4);
    // One epoch over 21 images in batches of 16: a full and a short batch.
    let order: Vec<u32> = (0..21).collect();
    for net in [&mut cpu as &mut dyn Net, &mut gpu] {
        net.begin_epoch(&order, 1e-3).unwrap();
        net.train_step().unwrap();
        net.train_step().unwrap();
    }
    let (a, b) = (cpu.take_metrics().unwrap(), gpu.take_metrics().unwrap());
    assert_eq!((a.seen, b.seen), (21, 21));
    assert!(
        ((a.loss_sum - b.loss_sum) / a.loss_sum).abs() < 1e-4,
        "{a:?} vs {b:?}"
    );
    let (pa, pb) = (cpu.params().unwrap(), gpu.params().unwrap());
    for (x, y) in pa.tensors.iter().flatten().zip(pb.tensors.iter().flatten()) {
        assert!(
            (x - y).abs() <= 1e-5 + 1e-3 * x.abs(),
            "params diverged: {x} vs {y}"
        );
    }
}

#[test]
fn optim_stats_leave_training_bit_identical_and_match_cpu() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    // Asking for the statistics adds a dispatch that writes only its own buffer.
    let (plain, none) = gpu_run_with(&ctx, false);
    let (with, taken) = gpu_run_with(&ctx, true);
    let bits = |p: &Params| {
        p.tensors
            .iter()
            .flatten()
            .map(|f| f.to_bits())
            .collect::<Vec<u32>>()
    };
    assert_eq!(bits(&plain.0), bits(&with.0), "statistics changed training");
    assert_eq!(plain.2.to_bits(), with.2.to_bits());
    assert!(
        none.iter().all(Vec::is_empty),
        "statistics nobody asked for"
    );
    assert!(taken.iter().all(|t| t.len() == 8), "{taken:?}");

    // The same three steps on both devices, statistics on the third.
    for kind in [
        OptimizerKind::Wame,
        OptimizerKind::Adam,
        OptimizerKind::Rmsprop,
        OptimizerKind::Sgd,
    ] {
        let batch = 16;
        let data = common::net_data(
            common::synthetic(batch as usize, 1),
            common::synthetic(8, 2),
        );
        let params = Params::glorot(32, 7);
        let mut cpu = CpuNet::new(config(kind, batch), data.clone(), params.clone());
        let mut gpu = GpuNet::new(ctx.clone(), config(kind, batch), data, params).unwrap();
        let order: Vec<u32> = (0..batch).collect();
        let mut got = Vec::new();
        for net in [&mut cpu as &mut dyn Net, &mut gpu] {
            for step in 0..3 {
                net.begin_epoch(&order, 1e-3).unwrap();
                if step == 2 {
                    net.request_optim_stats().unwrap();
                }
                net.train_step().unwrap();
            }
            got.push(net.take_optim_stats().unwrap());
            assert!(net.take_optim_stats().unwrap().is_empty(), "taken twice");
        }
        let close = |a: f64, b: f64, what: &str, t: &str| {
            assert!(
                (a - b).abs() <= 1e-6 + 1e-3 * a.abs(),
                "{kind:?} {t} {what}: cpu {a} gpu {b}"
            );
        };
        assert_eq!(got[0].len(), 8);
        for (c, g) in got[0].iter().zip(&got[1]) {
            let t = c.tensor.as_str();
            assert_eq!((&c.tensor, c.n), (&g.tensor, g.n));
            close(c.mean_step, g.mean_step, "mean step", t);
            close(
                c.update_ratio.unwrap_or(0.0),
                g.update_ratio.unwrap_or(0.0),
                "update ratio",
                t,
            );
            assert!(c.mean_step > 0.0, "{kind:?} {t}: no step");
            assert_eq!(c.zeta.is_some(), kind == OptimizerKind::Wame);
            if let (Some(zc), Some(zg)) = (&c.zeta, &g.zeta) {
                // One weight whose tiny gradient rounds to the other sign on the other device
                // moves one count: 1 / n of a share.
                let one = 1.0 / c.n as f64 + 1e-12;
                for (a, b) in zc.hist.iter().zip(&zg.hist) {
                    assert!(
                        (a - b).abs() <= one,
                        "{t} hist {:?} vs {:?}",
                        zc.hist,
                        zg.hist
                    );
                }
                assert!((zc.sign_flips - zg.sign_flips).abs() <= one, "{t} flips");
                close(zc.mean_multiplier, zg.mean_multiplier, "multiplier", t);
                assert!((zc.hist.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
    }
}
