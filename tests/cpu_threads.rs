//! The CPU backend gives the same bits whatever the thread count: whole training steps and the
//! parallel ops on their own, under rayon pools of 1, 2, 3 and 8 threads.

mod common;

use fmnist_gpu::cpu::{conv, conv_grad};
use fmnist_gpu::model::{Layers, Params};
use fmnist_gpu::net::{Net, NetConfig, cpu::CpuNet};
use fmnist_gpu::optim::{OptimConfig, OptimizerKind};
use fmnist_gpu::params::ConvGradParams;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const THREADS: [usize; 4] = [1, 2, 3, 8];

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|a| a.to_bits()).collect()
}

/// Two epochs of 45 images at batch 20 (the last batch of each is short: 5 images), dropout on,
/// then the weights, optimizer state and loss sums.
fn train(kind: OptimizerKind) -> (Vec<Vec<u32>>, Vec<Vec<u32>>, Vec<u32>) {
    let cfg = NetConfig {
        batch: 20,
        hidden: 128,
        dropout: 0.4,
        augment: true,
        label_smoothing: 0.0,
        optim: OptimConfig::defaults(kind),
        seed: 3,
    };
    let data = common::net_data(common::synthetic(45, 1), common::synthetic(8, 2));
    let mut net = CpuNet::new(cfg, data, Params::glorot(128, 3));
    let order: Vec<u32> = (0..45).rev().collect();
    let mut losses = Vec::new();
    for _ in 0..2 {
        net.begin_epoch(&order, 1e-3).unwrap();
        for _ in 0..3 {
            net.train_step().unwrap();
        }
        losses.push(net.take_metrics().unwrap().loss_sum.to_bits());
    }
    let params = net
        .params()
        .unwrap()
        .tensors
        .iter()
        .map(|t| bits(t))
        .collect();
    let state = net
        .optim_state()
        .unwrap()
        .0
        .iter()
        .map(|t| bits(t))
        .collect();
    (params, state, losses)
}

#[test]
fn training_steps_are_bit_identical_for_any_thread_count() {
    for kind in [OptimizerKind::Wame, OptimizerKind::Adam] {
        let want = in_pool(THREADS[0], || train(kind));
        for &t in &THREADS[1..] {
            let got = in_pool(t, || train(kind));
            assert!(got.0 == want.0, "{kind:?}: weights differ with {t} threads");
            assert!(
                got.1 == want.1,
                "{kind:?}: optimizer state differs with {t} threads"
            );
            assert_eq!(got.2, want.2, "{kind:?}: losses differ with {t} threads");
        }
    }
}

/// The model's conv layers at batches that are not a multiple of the backend's chunks, each
/// parallel op alone (fused and unfused), in f32 and f64.
#[test]
fn conv_ops_are_bit_identical_for_any_thread_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut r = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    // 37: chunks of 8 and a short one; 200: the bigger chunks of big batches (13 samples).
    let (a, b) = (
        Layers::new(37, 128, 0.4, 99),
        Layers::new(200, 128, 0.4, 99),
    );
    for (c, drop) in [
        (a.conv1, None),
        (a.conv2, Some(&a.drop)),
        (b.conv2, Some(&b.drop)),
    ] {
        let x = r(c.x_len(), 0.0, 1.0);
        let w = r(c.w_len(), -0.1, 0.1);
        let bias = r(c.c_out as usize, -0.1, 0.1);
        let pp = conv::relu_pool_params(&c);
        let dd = r(pp.y_len(), -1.0, 1.0);
        let gp = ConvGradParams::new(&c, drop);
        let run = || {
            let n = pp.y_len();
            let (mut q, mut am, mut d) = (vec![0.0f32; n], vec![0u32; n], vec![0.0f32; n]);
            let dropout = drop.map(|p| (p, 4u32, &mut d[..]));
            conv::forward_relu_pool(&c, &x, &w, &bias, &mut q, &mut am, dropout);
            let (mut dw, mut db, mut dx) = (
                vec![0.0f32; c.w_len()],
                vec![0.0f32; c.c_out as usize],
                vec![0.0f32; c.x_len()],
            );
            conv_grad::backward(&gp, 4, &x, &am, &q, &dd, &w, &mut dw, &mut db, &mut dx);
            let mut y = vec![0.0f32; c.y_len()];
            conv::forward(&c, &x, &w, &bias, &mut y);
            let mut uw = vec![0.0f32; c.w_len()];
            conv::backward_weight(&c, &x, &y, &mut uw);
            // f64, as the gradient checks run it.
            let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
            let mut w64 = vec![0.0f64; c.w_len()];
            conv::backward_weight(&c, &x64, &y64, &mut w64);
            let w64: Vec<u32> = w64
                .iter()
                .flat_map(|v| [v.to_bits() as u32, (v.to_bits() >> 32) as u32])
                .collect();
            [
                bits(&q),
                am,
                bits(&d),
                bits(&dw),
                bits(&db),
                bits(&dx),
                bits(&uw),
                w64,
            ]
        };
        let want = in_pool(1, run);
        assert!(
            want[3].iter().any(|&v| v != 0),
            "some weight gradient flows"
        );
        for &t in &THREADS[1..] {
            let got = in_pool(t, run);
            for (i, name) in [
                "pooled",
                "argmax",
                "dropout",
                "dw",
                "db",
                "dx",
                "unfused dw",
                "f64 dw",
            ]
            .iter()
            .enumerate()
            {
                assert!(
                    got[i] == want[i],
                    "conv (c_in {}): {name} differs with {t} threads",
                    c.c_in
                );
            }
        }
    }
}
