//! The CPU reference checked on its own: f64 central-difference gradients of every backward op,
//! WAME golden values (SPEC 5), optimizer definitions, dropout masks and the batch gather.

use fmnist_gpu::cpu::{act, conv, conv_grad, data, dense, head, loss, optim, pool};
use fmnist_gpu::params::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_vec(rng: &mut ChaCha8Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Checks `analytic` against the central difference of the scalar `f` at `x`, entry by entry.
fn check_grad(name: &str, x: &[f64], analytic: &[f64], f: impl Fn(&[f64]) -> f64) {
    let h = 1e-6;
    let mut xp = x.to_vec();
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        xp[i] = x[i] + h;
        let fp = f(&xp);
        xp[i] = x[i] - h;
        let fm = f(&xp);
        xp[i] = x[i];
        let num = (fp - fm) / (2.0 * h);
        let err = (num - analytic[i]).abs() / (1e-6 + num.abs().max(analytic[i].abs()));
        worst = worst.max(err);
        assert!(
            err < 1e-5,
            "{name}[{i}]: numeric {num:e} vs analytic {:e} (rel err {err:e})",
            analytic[i]
        );
    }
    eprintln!("{name}: {} entries, worst rel err {worst:.2e}", x.len());
}

#[test]
fn conv_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &(b, ci, hw, co, k) in &[
        (2usize, 1usize, 7usize, 3usize, 3usize),
        (3, 2, 6, 2, 5),
        (1, 3, 5, 4, 2),
    ] {
        let p = ConvParams::new(
            b as u32, ci as u32, hw as u32, hw as u32, co as u32, k as u32, false,
        );
        let x = rand_vec(&mut rng, p.x_len(), -1.0, 1.0);
        let w = rand_vec(&mut rng, p.w_len(), -1.0, 1.0);
        let bias = rand_vec(&mut rng, co, -1.0, 1.0);
        let r = rand_vec(&mut rng, p.y_len(), -1.0, 1.0);
        let loss = |x: &[f64], w: &[f64], bias: &[f64]| {
            let mut y = vec![0.0; p.y_len()];
            conv::forward(&p, x, w, bias, &mut y);
            dot(&y, &r)
        };
        let mut dx = vec![0.0; p.x_len()];
        let mut dw = vec![0.0; p.w_len()];
        let mut db = vec![0.0; co];
        conv::backward_input(&p, &r, &w, &mut dx);
        conv::backward_weight(&p, &x, &r, &mut dw);
        conv::backward_bias(&p, &r, &mut db);
        check_grad("conv dx", &x, &dx, |v| loss(v, &w, &bias));
        check_grad("conv dw", &w, &dw, |v| loss(&x, v, &bias));
        check_grad("conv db", &bias, &db, |v| loss(&x, &w, v));
    }
}

#[test]
fn conv_forward_matches_direct_sum_with_relu() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    // Batch 19 spans several parallel chunks, one of them short.
    let p = ConvParams::new(19, 2, 9, 8, 3, 3, true);
    let x = rand_vec(&mut rng, p.x_len(), -1.0, 1.0);
    let w = rand_vec(&mut rng, p.w_len(), -1.0, 1.0);
    let bias = rand_vec(&mut rng, 3, -0.5, 0.5);
    let mut y = vec![0.0; p.y_len()];
    conv::forward(&p, &x, &w, &bias, &mut y);
    let (ci, h, wd, co, k, oh, ow) = (2, 9, 8, 3, 3, 7, 6);
    for b in 0..19 {
        for o in 0..co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias[o];
                    for c in 0..ci {
                        for ky in 0..k {
                            for kx in 0..k {
                                s += x[((b * ci + c) * h + oy + ky) * wd + ox + kx]
                                    * w[((o * ci + c) * k + ky) * k + kx];
                            }
                        }
                    }
                    let got = y[((b * co + o) * oh + oy) * ow + ox];
                    assert!(
                        (got - s.max(0.0)).abs() < 1e-12,
                        "conv forward at {b},{o},{oy},{ox}"
                    );
                }
            }
        }
    }
}

/// The fused twin `conv::forward_relu_pool` is the unfused chain conv forward -> max-pool
/// (-> dropout) bit for bit, in f32, with odd conv outputs (floor mode), no ReLU and dropout.
#[test]
fn conv_forward_relu_pool_is_the_unfused_chain() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let cases = [
        (ConvParams::new(2, 1, 28, 28, 8, 5, true), None),
        (
            ConvParams::new(3, 5, 12, 12, 7, 5, true),
            Some((0.4f32, 17u32)),
        ),
        (ConvParams::new(1, 3, 13, 10, 5, 3, true), Some((0.8, 0))),
        (ConvParams::new(3, 2, 9, 9, 3, 3, false), None),
    ];
    for (p, dropout) in cases {
        let f = |v: Vec<f64>| v.into_iter().map(|a| a as f32).collect::<Vec<f32>>();
        let x = f(rand_vec(&mut rng, p.x_len(), -1.0, 1.0));
        let w = f(rand_vec(&mut rng, p.w_len(), -0.5, 0.5));
        let bias = f(rand_vec(&mut rng, p.c_out as usize, -0.5, 0.5));
        let pp = PoolParams::new(p.batch, p.c_out, p.oh, p.ow);
        assert_eq!(conv::relu_pool_params(&p), pp);
        let n = pp.y_len();
        let dp = dropout.map(|(prob, _)| ActParams {
            n: n as u32,
            threshold: dropout_threshold(prob),
            scale: 1.0 / (1.0 - prob),
            seed: 31,
        });
        let t = dropout.map_or(0, |(_, t)| t);

        let mut a = vec![0.0f32; p.y_len()];
        conv::forward(&p, &x, &w, &bias, &mut a);
        let (mut pu, mut amu, mut du) = (vec![0.0f32; n], vec![0u32; n], vec![0.0f32; n]);
        pool::maxpool_forward(&pp, &a, &mut pu, &mut amu);
        if let Some(dp) = &dp {
            act::dropout_forward(dp, t, &pu, &mut du);
        }

        let (mut pf, mut amf, mut df) = (vec![f32::NAN; n], vec![u32::MAX; n], vec![f32::NAN; n]);
        conv::forward_relu_pool(
            &p,
            &x,
            &w,
            &bias,
            &mut pf,
            &mut amf,
            dp.as_ref().map(|q| (q, t, &mut df[..])),
        );
        let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(&pf), bits(&pu), "{p:?}: pooled");
        assert_eq!(amf, amu, "{p:?}: argmax");
        if dp.is_some() {
            assert_eq!(bits(&df), bits(&du), "{p:?}: dropout");
            assert!(df.contains(&0.0) && df.iter().any(|&v| v > 0.0));
        }
        // Floor mode: the argmax never points into a dropped last row or column.
        let (ph, pw) = (pp.oh as usize, pp.ow as usize);
        for (i, &am) in amf.iter().enumerate() {
            let (iy, ix) = (am as usize / p.ow as usize, am as usize % p.ow as usize);
            assert!(
                iy / 2 == (i % (ph * pw)) / pw && ix / 2 == i % pw,
                "{p:?}: [{i}] {am}"
            );
        }
    }
}

#[test]
fn dense_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let p = DenseParams::new(3, 7, 5, false);
    let x = rand_vec(&mut rng, 21, -1.0, 1.0);
    let w = rand_vec(&mut rng, 35, -1.0, 1.0);
    let bias = rand_vec(&mut rng, 5, -1.0, 1.0);
    let r = rand_vec(&mut rng, 15, -1.0, 1.0);
    let loss = |x: &[f64], w: &[f64], bias: &[f64]| {
        let mut y = vec![0.0; 15];
        dense::forward(&p, x, w, bias, &mut y);
        dot(&y, &r)
    };
    let (mut dx, mut dw, mut db) = (vec![0.0; 21], vec![0.0; 35], vec![0.0; 5]);
    dense::backward_input(&p, &r, &w, &mut dx);
    dense::backward_weight(&p, &x, &r, &mut dw);
    dense::backward_bias(&p, &r, &mut db);
    check_grad("dense dx", &x, &dx, |v| loss(v, &w, &bias));
    check_grad("dense dw", &w, &dw, |v| loss(&x, v, &bias));
    check_grad("dense db", &bias, &db, |v| loss(&x, &w, v));
}

#[test]
fn pool_gradient_and_relu_mask() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for &(h, w) in &[(6usize, 6usize), (7, 5)] {
        let p = PoolParams::new(2, 3, h as u32, w as u32);
        // Positive inputs: the fused ReLU mask is 1, so this checks the pool gradient alone.
        let x = rand_vec(&mut rng, p.x_len(), 0.1, 1.0);
        let r = rand_vec(&mut rng, p.y_len(), -1.0, 1.0);
        let fwd = |x: &[f64]| {
            let mut y = vec![0.0; p.y_len()];
            let mut am = vec![0u32; p.y_len()];
            pool::maxpool_forward(&p, x, &mut y, &mut am);
            (y, am)
        };
        let (_, am) = fwd(&x);
        let mut dx = vec![0.0; p.x_len()];
        pool::maxpool_backward(&p, &r, &am, &x, &mut dx);
        check_grad("pool dx", &x, &dx, |v| dot(&fwd(v).0, &r));
    }
    // Ties go to the first maximum; a winner that is not positive passes no gradient (ReLU mask).
    let p = PoolParams::new(1, 1, 2, 4);
    let x = [0.5f32, 0.5, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0];
    let (mut y, mut am) = (vec![0.0f32; 2], vec![0u32; 2]);
    pool::maxpool_forward(&p, &x, &mut y, &mut am);
    assert_eq!(am, vec![0, 2]);
    let mut dx = vec![9.0f32; 8];
    pool::maxpool_backward(&p, &[1.0, 1.0], &am, &x, &mut dx);
    assert_eq!(dx, vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

/// The fused conv backward's CPU twin (`cpu::conv_grad`) against the unfused chain it replaces:
/// `act::dropout_backward` (when on), `pool::maxpool_backward` on the full-resolution post-ReLU
/// activation, then the conv backward ops, in f32 on the outputs of a real forward. The rebuilt
/// conv-output gradient is the chain's bit for bit; the gradients, which the fused ops sum over
/// the window winners only, agree to f32 rounding, and in f64 to 1e-12.
/// Odd conv outputs (the floor-mode pool drops a row and a column), batches 1 and 3, channel
/// counts that are not multiples of 4, the model's conv1 and conv2, with and without dropout.
#[test]
fn conv_grad_twin_equals_the_unfused_chain() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut r32 = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    let shapes: [(u32, u32, u32, u32, u32, u32, bool); 6] = [
        (2, 64, 12, 12, 64, 5, true),
        (2, 1, 28, 28, 64, 5, false),
        (1, 3, 11, 11, 5, 3, true),
        (3, 5, 10, 13, 7, 3, false),
        (3, 6, 9, 9, 66, 3, true),
        (2, 2, 9, 10, 3, 5, true),
    ];
    for (si, s) in shapes.into_iter().enumerate() {
        let c = ConvParams::new(s.0, s.1, s.2, s.3, s.4, s.5, true);
        let drop = ActParams {
            n: 0,
            threshold: dropout_threshold(0.4),
            scale: 1.0 / 0.6,
            seed: 99 + si as u32,
        };
        let p = ConvGradParams::new(&c, s.6.then_some(&drop));
        let pool_p = p.pool();
        let step = 5 + si as u32;
        let x = r32(c.x_len(), 0.0, 1.0);
        let w = r32(c.w_len(), -0.2, 0.2);
        let bias = r32(c.c_out as usize, -0.1, 0.1);
        let dd = r32(pool_p.y_len(), -1.0, 1.0);
        let mut a = vec![0.0f32; c.y_len()];
        conv::forward(&c, &x, &w, &bias, &mut a);
        let (mut q, mut am) = (vec![0.0f32; pool_p.y_len()], vec![0u32; pool_p.y_len()]);
        pool::maxpool_forward(&pool_p, &a, &mut q, &mut am);
        assert!(q.contains(&0.0) && q.iter().any(|&v| v > 0.0));

        // The unfused chain.
        let dp = match p.drop() {
            Some(d) => {
                let mut dp = vec![0.0f32; dd.len()];
                act::dropout_backward(&d, step, &dd, &mut dp);
                dp
            }
            None => dd.clone(),
        };
        let mut da = vec![0.0f32; c.y_len()];
        pool::maxpool_backward(&pool_p, &dp, &am, &a, &mut da);
        let (mut dw, mut db, mut dx) = (
            vec![0.0f32; c.w_len()],
            vec![0.0f32; c.c_out as usize],
            vec![0.0f32; c.x_len()],
        );
        conv::backward_weight(&c, &x, &da, &mut dw);
        conv::backward_bias(&c, &da, &mut db);
        conv::backward_input(&c, &da, &w, &mut dx);

        // The fused twin.
        let dy = conv_grad::conv_output_grad(&p, step, &am, &q, &dd);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(&dy), bits(&da), "{s:?}: conv-output gradient");
        let (mut fw, mut fb, mut fx) = (
            vec![9.0f32; c.w_len()],
            vec![9.0f32; c.c_out as usize],
            vec![9.0f32; c.x_len()],
        );
        conv_grad::backward_weight(&p, step, &x, &am, &q, &dd, &mut fw, &mut fb);
        conv_grad::backward_input(&p, step, &am, &q, &dd, &w, &mut fx);
        // The fused ops sum over the window winners only, in their own order: equal to rounding.
        close_f32(&format!("{s:?}: dw"), &fw, &dw);
        close_f32(&format!("{s:?}: db"), &fb, &db);
        close_f32(&format!("{s:?}: dx"), &fx, &dx);
        // In f64 the two orders agree to 1e-12: the same sums, not merely similar ones.
        let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        let (x64, w64, q64, dd64) = (f64s(&x), f64s(&w), f64s(&q), f64s(&dd));
        // The dense gradient in f64 too (the dropout scale multiplies in f64 here).
        let da64 = conv_grad::conv_output_grad(&p, step, &am, &q64, &dd64);
        let (mut uw, mut ub, mut ux) = (
            vec![0.0f64; c.w_len()],
            vec![0.0f64; c.c_out as usize],
            vec![0.0f64; c.x_len()],
        );
        conv::backward_weight(&c, &x64, &da64, &mut uw);
        conv::backward_bias(&c, &da64, &mut ub);
        conv::backward_input(&c, &da64, &w64, &mut ux);
        let (mut gw, mut gb, mut gx) = (
            vec![9.0f64; c.w_len()],
            vec![9.0f64; c.c_out as usize],
            vec![9.0f64; c.x_len()],
        );
        conv_grad::backward(
            &p, step, &x64, &am, &q64, &dd64, &w64, &mut gw, &mut gb, &mut gx,
        );
        for (name, got, want) in [("dw", &gw, &uw), ("db", &gb, &ub), ("dx", &gx, &ux)] {
            assert_close(&format!("{s:?}: f64 {name}"), got, want, 1e-12);
        }
        // The one-call twin of conv_grad.backward: the two calls above, bit for bit.
        let (mut bw, mut bb, mut bx) = (
            vec![7.0f32; c.w_len()],
            vec![7.0f32; c.c_out as usize],
            vec![7.0f32; c.x_len()],
        );
        conv_grad::backward(&p, step, &x, &am, &q, &dd, &w, &mut bw, &mut bb, &mut bx);
        assert_eq!(bits(&bw), bits(&fw), "{s:?}: backward dw");
        assert_eq!(bits(&bb), bits(&fb), "{s:?}: backward db");
        assert_eq!(bits(&bx), bits(&fx), "{s:?}: backward dx");
        assert!(db.iter().any(|&v| v != 0.0), "{s:?}: some gradient flows");
        if s.6 {
            // Dropout must have dropped some of the winners (else the mask is not exercised).
            let winners = dy.iter().filter(|&&v| v != 0.0).count();
            let passing = q.iter().filter(|&&v| v > 0.0).count();
            assert!(winners < passing, "{s:?}: {winners} of {passing}");
        }
    }
}

#[test]
fn loss_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let logits = rand_vec(&mut rng, 40, -3.0, 3.0);
    let labels = [3u32, 0, 9, 3];
    for (valid, ls) in [(4u32, 0.0), (3, 0.0), (4, 0.1), (3, 0.3)] {
        let p = LossParams::new(4, 10, ls);
        let mut probs = vec![0.0; 40];
        let mean = |z: &[f64]| {
            let mut pr = vec![0.0; 40];
            let mut m = loss::Metrics::default();
            loss::softmax_xent_forward(&p, valid, z, &labels, &mut pr, &mut m) / valid as f64
        };
        let mut m = loss::Metrics::default();
        let sum = loss::softmax_xent_forward(&p, valid, &logits, &labels, &mut probs, &mut m);
        assert_eq!(m.seen, valid);
        // The definition (PyTorch's label_smoothing): -sum_j target_j ln p_j per valid row.
        let l = ls as f64;
        let direct: f64 = (0..valid as usize)
            .flat_map(|r| (0..10).map(move |j| (r, j)))
            .map(|(r, j)| {
                let onehot = if j == labels[r] as usize { 1.0 } else { 0.0 };
                -((1.0 - l) * onehot + l / 10.0) * probs[r * 10 + j].ln()
            })
            .sum();
        assert!((sum - direct).abs() < 1e-12, "ls {ls}: {sum} vs {direct}");
        let mut d = vec![0.0; 40];
        loss::softmax_xent_backward(&p, valid, &probs, &labels, &mut d);
        check_grad("loss dlogits", &logits, &d, mean);
    }
}

/// The head's backward in f64: dw, db and dh (the gradient at fc1's pre-activation, through
/// the ReLU) against central differences of the mean loss over the valid rows.
#[test]
fn head_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let (b, hid) = (4usize, 7usize);
    // Pre-activations away from the ReLU kink, so the differences never cross it.
    let pre: Vec<f64> = rand_vec(&mut rng, b * hid, -1.0, 1.0)
        .into_iter()
        .map(|v| if v < 0.0 { v - 0.1 } else { v + 0.1 })
        .collect();
    let w = rand_vec(&mut rng, 10 * hid, -1.0, 1.0);
    let bias = rand_vec(&mut rng, 10, -1.0, 1.0);
    let labels = [3u32, 0, 9, 3];
    for (valid, ls) in [(4u32, 0.0f32), (3, 0.2)] {
        let p = HeadParams::new(b as u32, hid as u32, ls);
        let mean = |pre: &[f64], w: &[f64], bias: &[f64]| {
            let h: Vec<f64> = pre.iter().map(|v| v.max(0.0)).collect();
            let x = head::HeadInputs {
                h: &h,
                w,
                bias,
                labels: &labels,
            };
            let mut logits = vec![0.0; b * 10];
            let mut m = loss::Metrics::default();
            head::head(&p, valid, &x, &mut logits, &mut m, None) / valid as f64
        };
        let h: Vec<f64> = pre.iter().map(|v| v.max(0.0)).collect();
        let (mut dl, mut dw, mut db, mut dh) = (
            vec![0.0; b * 10],
            vec![0.0; 10 * hid],
            vec![0.0; 10],
            vec![0.0; b * hid],
        );
        let x = head::HeadInputs {
            h: &h,
            w: &w,
            bias: &bias,
            labels: &labels,
        };
        let mut logits = vec![0.0; b * 10];
        let mut m = loss::Metrics::default();
        let grads = head::HeadGrads {
            dlogits: &mut dl,
            dw: &mut dw,
            db: &mut db,
            dh: &mut dh,
        };
        head::head(&p, valid, &x, &mut logits, &mut m, Some(grads));
        assert_eq!(m.seen, valid);
        check_grad("head dw", &w, &dw, |v| mean(&pre, v, &bias));
        check_grad("head db", &bias, &db, |v| mean(&pre, &w, v));
        check_grad("head dh", &pre, &dh, |v| mean(v, &w, &bias));
    }
}

/// The fused twins are the unfused CPU chain they replace, bit for bit (same ops, same order):
/// `head.head` against fc2 forward, softmax cross-entropy forward and backward, fc2's three
/// backward GEMMs and the ReLU backward, as `net::cpu` runs them; `dense.backward_fused`
/// against the layer's three backward ops.
#[test]
fn fused_twins_equal_the_unfused_chain() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut rf = |n: usize, lo: f64, hi: f64| -> Vec<f32> {
        rand_vec(&mut rng, n, lo, hi)
            .into_iter()
            .map(|v| v as f32)
            .collect()
    };
    for &(b, hid, valid, ls) in &[
        (1usize, 128usize, 1u32, 0.0f32),
        (3, 37, 2, 0.1),
        (130, 128, 100, 0.0),
        (7, 129, 0, 0.0),
    ] {
        let h: Vec<f32> = rf(b * hid, -0.5, 1.0)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        let w = rf(10 * hid, -0.2, 0.2);
        let bias = rf(10, -0.5, 0.5);
        let labels: Vec<u32> = (0..b as u32).map(|i| (i * 7 + 3) % 10).collect();
        let p = HeadParams::new(b as u32, hid as u32, ls);
        // The unfused chain.
        let (fc2, lp) = (p.fc2(), p.loss());
        let mut logits = vec![0.0f32; b * 10];
        dense::forward(&fc2, &h, &w, &bias, &mut logits);
        let mut probs = vec![0.0f32; b * 10];
        let mut m = loss::Metrics {
            loss_sum: 0.5,
            correct: 1,
            seen: 2,
        };
        let want_loss =
            loss::softmax_xent_forward(&lp, valid, &logits, &labels, &mut probs, &mut m);
        let mut dl = vec![0.0f32; b * 10];
        loss::softmax_xent_backward(&lp, valid, &probs, &labels, &mut dl);
        let (mut dw, mut db) = (vec![0.0f32; 10 * hid], vec![0.0f32; 10]);
        dense::backward_weight(&fc2, &h, &dl, &mut dw);
        dense::backward_bias(&fc2, &dl, &mut db);
        let mut dh_pre = vec![0.0f32; b * hid];
        dense::backward_input(&fc2, &dl, &w, &mut dh_pre);
        let mut dh = vec![0.0f32; b * hid];
        act::relu_backward(
            &ActParams {
                n: (b * hid) as u32,
                threshold: 0,
                scale: 1.0,
                seed: 0,
            },
            &h,
            &dh_pre,
            &mut dh,
        );
        // The fused twin, with and without the backward.
        let x = head::HeadInputs {
            h: &h,
            w: &w,
            bias: &bias,
            labels: &labels,
        };
        for backward in [false, true] {
            let mut g_logits = vec![f32::NAN; b * 10];
            let mut gm = loss::Metrics {
                loss_sum: 0.5,
                correct: 1,
                seen: 2,
            };
            let (mut g_dl, mut g_dw, mut g_db, mut g_dh) = (
                vec![f32::NAN; b * 10],
                vec![f32::NAN; 10 * hid],
                vec![f32::NAN; 10],
                vec![f32::NAN; b * hid],
            );
            let grads = backward.then(|| head::HeadGrads {
                dlogits: &mut g_dl,
                dw: &mut g_dw,
                db: &mut g_db,
                dh: &mut g_dh,
            });
            let got_loss = head::head(&p, valid, &x, &mut g_logits, &mut gm, grads);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
            let what = format!("B{b} H{hid} valid {valid} ls {ls} backward {backward}");
            assert_eq!(got_loss.to_bits(), want_loss.to_bits(), "{what}: loss");
            assert_eq!(gm, m, "{what}: metrics");
            assert_eq!(bits(&g_logits), bits(&logits), "{what}: logits");
            if backward {
                assert_eq!(bits(&g_dl), bits(&dl), "{what}: dlogits");
                assert_eq!(bits(&g_dw), bits(&dw), "{what}: dw");
                assert_eq!(bits(&g_db), bits(&db), "{what}: db");
                assert_eq!(bits(&g_dh), bits(&dh), "{what}: dh");
                assert!(dh.iter().zip(&h).all(|(d, v)| *v > 0.0 || *d == 0.0));
            }
        }
    }
    for &(b, ni, no) in &[(1usize, 5usize, 3usize), (37, 70, 19), (33, 31, 65)] {
        let p = DenseParams::new(b as u32, ni as u32, no as u32, false);
        let x = rf(b * ni, -1.0, 1.0);
        let w = rf(no * ni, -0.5, 0.5);
        let dy = rf(b * no, -1.0, 1.0);
        let (mut dw, mut db, mut dx) = (
            vec![0.0f32; no * ni],
            vec![0.0f32; no],
            vec![0.0f32; b * ni],
        );
        dense::backward_weight(&p, &x, &dy, &mut dw);
        dense::backward_bias(&p, &dy, &mut db);
        dense::backward_input(&p, &dy, &w, &mut dx);
        let (mut fw, mut fb, mut fx) = (
            vec![f32::NAN; no * ni],
            vec![f32::NAN; no],
            vec![f32::NAN; b * ni],
        );
        dense::backward_fused(&p, &x, &dy, &w, &mut fw, &mut fb, &mut fx);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(&fw), bits(&dw), "B{b} In{ni} Out{no}: dw");
        assert_eq!(bits(&fb), bits(&db), "B{b} In{ni} Out{no}: db");
        assert_eq!(bits(&fx), bits(&dx), "B{b} In{ni} Out{no}: dx");
    }
}

#[test]
fn relu_and_dropout() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let n = 5000;
    let x = rand_vec(&mut rng, n, -1.0, 1.0);
    let ap = ActParams {
        n: n as u32,
        threshold: 0,
        scale: 1.0,
        seed: 0,
    };
    let mut y = vec![0.0; n];
    act::relu_forward(&ap, &x, &mut y);
    let r = rand_vec(&mut rng, n, -1.0, 1.0);
    let mut dx = vec![0.0; n];
    act::relu_backward(&ap, &y, &r, &mut dx);
    for i in 0..n {
        assert_eq!(y[i], x[i].max(0.0));
        assert_eq!(dx[i], if x[i] > 0.0 { r[i] } else { 0.0 });
    }
    for p in [0.0f32, 0.4, 0.8] {
        let dp = ActParams {
            n: n as u32,
            threshold: dropout_threshold(p),
            scale: 1.0 / (1.0 - p),
            seed: 77,
        };
        let mut y = vec![0.0; n];
        act::dropout_forward(&dp, 12, &x, &mut y);
        let kept = y.iter().filter(|v| **v != 0.0).count() as f64 / n as f64;
        assert!((kept - (1.0 - p as f64)).abs() < 0.03, "p={p}: kept {kept}");
        // The backward is the same linear map, and another step draws another mask.
        let mut dx = vec![0.0; n];
        act::dropout_backward(&dp, 12, &x, &mut dx);
        assert_eq!(dx, y);
        let mut y2 = vec![0.0; n];
        act::dropout_forward(&dp, 13, &x, &mut y2);
        if p > 0.0 {
            assert_ne!(y2, y);
        }
    }
}

const GOLD_G: [f64; 7] = [0.5, 0.4, -0.3, -0.2, 0.1, 0.0, 0.25];

fn wame_run(variant: u32) -> (Vec<f64>, Vec<[f64; 4]>) {
    let h = optim::WameHyper::<f64> {
        variant,
        lr: 1e-3,
        alpha: 0.9,
        eta_plus: 1.2,
        eta_minus: 0.1,
        zeta_min: 0.01,
        zeta_max: 100.0,
        eps: 1e-12,
        wd: 0.0,
    };
    let (mut w, mut st) = ([0.0f64], [[1.0, 0.0, 0.0, 0.0f64]]);
    let (mut deltas, mut states) = (vec![], vec![]);
    for g in GOLD_G {
        let before = w[0];
        optim::wame_update(&h, &mut w, &[g], &mut st);
        deltas.push(w[0] - before);
        states.push(st[0]);
    }
    (deltas, states)
}

/// f32 results of two summation orders: within 1e-5 of the larger magnitude in the tensor (a
/// sum of a few thousand products rounds at about 1e-7 relative per term).
fn close_f32(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * scale,
            "{name}[{i}]: {g} vs {w} (tensor scale {scale})"
        );
    }
}

fn assert_close(name: &str, got: &[f64], want: &[f64], rtol: f64) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-15 + rtol * w.abs(),
            "{name}[{i}]: got {g:e}, want {w:e}"
        );
    }
}

#[test]
fn wame_golden_values() {
    // SPEC 5, float64 throughout; the golden values are given to 10 significant digits.
    let seed = [
        -3.162277660e-02,
        -1.164907866e-02,
        8.572634730e-04,
        7.087964497e-04,
        -4.065187177e-05,
        0.0,
        -1.252427024e-04,
    ];
    let paper = [
        -3.162277660e-04,
        -4.281036408e-04,
        2.886191798e-04,
        1.877429026e-04,
        -8.865321830e-05,
        0.0,
        -1.860958478e-04,
    ];
    let inverse = [
        -3.162277660e-02,
        -9.707565551e-03,
        7.143862275e-03,
        4.922197567e-03,
        -2.823046651e-03,
        0.0,
        -8.697409889e-03,
    ];
    let zeta = [1.0, 1.2, 0.12, 0.144, 0.0144, 0.0144, 0.0144];
    let z = [0.1, 0.21, 0.201, 0.1953, 0.17721, 0.160929, 0.1462761];
    let theta = [
        0.025,
        0.0385,
        0.04365,
        0.043285,
        0.0399565,
        0.03596085,
        0.038614765,
    ];
    for (variant, want) in [(0, seed), (1, paper), (2, inverse)] {
        let (d, st) = wame_run(variant);
        assert_close(&format!("wame variant {variant} deltas"), &d, &want, 1e-9);
        let col = |j: usize| st.iter().map(|s| s[j]).collect::<Vec<_>>();
        assert_close("zeta", &col(0), &zeta, 1e-12);
        assert_close("Z", &col(1), &z, 1e-12);
        assert_close("theta", &col(2), &theta, 1e-12);
        assert_close("g_prev", &col(3), &GOLD_G, 0.0);
    }
}

#[test]
fn wame_f32_matches_f64() {
    // The f32 path (what training and the shader use) follows the f64 golden run closely.
    let p = WameParams {
        n: 1,
        variant: 0,
        lr: 1e-3,
        alpha: 0.9,
        eta_plus: 1.2,
        eta_minus: 0.1,
        zeta_min: 0.01,
        zeta_max: 100.0,
        eps: 1e-12,
        warmup: 0,
        weight_decay: 0.0,
        _pad: 0,
    };
    let (d64, _) = wame_run(0);
    let (mut w, mut st) = ([0.0f32], [[1.0, 0.0, 0.0, 0.0f32]]);
    for (t, (g, want)) in (1..).zip(GOLD_G.iter().zip(d64)) {
        let before = w[0] as f64;
        optim::wame(&p, t, &mut w, &[*g as f32], &mut st);
        let got = w[0] as f64 - before;
        assert!(
            (got - want).abs() <= 1e-8 + 1e-3 * want.abs(),
            "f32 delta {got:e} vs {want:e}"
        );
    }
}

#[test]
fn baselines_follow_their_definitions() {
    let p = adam_params(1, 0.1);
    // Adam's first step is lr * sign(g) (bias corrections cancel).
    let (mut w, mut st) = ([1.0f64], [[0.0, 0.0]]);
    optim::adam(&p, 1, &mut w, &[0.5], &mut st);
    assert!((w[0] - 0.9).abs() < 1e-7);
    // SGD: b = g on step 1, then mu*b + g.
    let (mut w, mut b) = ([1.0f64], [0.0]);
    optim::sgd(&p, 1, &mut w, &[2.0], &mut b);
    optim::sgd(&p, 2, &mut w, &[1.0], &mut b);
    assert!((b[0] - 2.8).abs() < 1e-7 && (w[0] - (1.0 - 0.2 - 0.28)).abs() < 1e-7);
    // RMSprop: v = a v + (1-a) g^2, w -= lr g / (sqrt(v) + eps).
    let pr = OptParams { b2: 0.9, ..p }.with_logs();
    let (mut w, mut v) = ([1.0f64], [0.0]);
    optim::rmsprop(&pr, 1, &mut w, &[2.0], &mut v);
    assert!((v[0] - 0.4).abs() < 1e-7 && (w[0] - (1.0 - 0.2 / 0.4f64.sqrt())).abs() < 1e-6);
}

/// Adam's defaults (b1 0.9, b2 0.999, eps 1e-8) for `n` weights at rate `lr`; RMSprop reads b2 as
/// its alpha and SGD b1 as its momentum.
fn adam_params(n: u32, lr: f32) -> OptParams {
    OptParams::new(n, lr, 0.9, 0.999, 1e-8, 0, 0.0)
}

/// Weight changes of six steps of each optimizer on one weight (same gradients), with a warm-up of
/// `warmup` steps.
fn optimizer_deltas(kind: usize, warmup: u32) -> Vec<f64> {
    let grads = [0.5, 0.4, -0.3, -0.2, 0.1, 0.25];
    let wp = WameParams {
        warmup,
        ..fmnist_gpu::parity::wame_params(1, 0)
    };
    let op = OptParams {
        warmup,
        ..adam_params(1, 1e-3)
    };
    let (mut w, mut s4, mut s2, mut s1) = ([0.0f64], [[1.0, 0.0, 0.0, 0.0]], [[0.0; 2]], [0.0]);
    let mut out = vec![];
    for (t, g) in (1..).zip(grads) {
        let before = w[0];
        match kind {
            0 => optim::wame(&wp, t, &mut w, &[g], &mut s4),
            1 => optim::adam(&op, t, &mut w, &[g], &mut s2),
            2 => optim::rmsprop(&op, t, &mut w, &[g], &mut s1),
            _ => optim::sgd(&op, t, &mut w, &[g], &mut s1),
        }
        out.push(w[0] - before);
    }
    out
}

#[test]
fn warmup_scales_the_first_steps_only() {
    // No optimizer's state depends on the rate, so step t < W of a warm-up of W moves the weight
    // by exactly t/W of the unwarmed step, and from step W on the two runs move alike.
    assert_eq!(optim::warm_lr(1e-3, 0, 1), 1e-3);
    assert_eq!(optim::warm_lr(1e-3, 4, 4), 1e-3);
    assert_eq!(optim::warm_lr(0.5, 4, 1), 0.125);
    for kind in 0..4 {
        let full = optimizer_deltas(kind, 0);
        let warm = optimizer_deltas(kind, 4);
        for (t, (w, f)) in (1..).zip(warm.iter().zip(&full)) {
            let want = f * (t.min(4) as f64 / 4.0);
            assert!(
                (w - want).abs() <= 1e-6 * want.abs(),
                "optimizer {kind} step {t}: {w:e} vs {want:e}"
            );
        }
        assert!(full[0].abs() > 0.0 && warm[0] != full[0]);
    }
}

#[test]
fn weight_decay_scales_weights_before_the_step() {
    // A zero gradient moves no optimizer's weights, so with decoupled decay a step is exactly
    // w * (1 - lr * wd) (WAME, Adam and RMSprop divide 0 by eps; SGD's buffer stays 0). With a
    // gradient, the step is the undecayed step plus -lr * wd * w.
    let wd = 0.5f32;
    let wp = WameParams {
        weight_decay: wd,
        ..fmnist_gpu::parity::wame_params(2, 0)
    };
    let op = OptParams {
        weight_decay: wd,
        ..adam_params(2, 1e-2)
    };
    assert_eq!(optim::decay(1e-2, 0.0), 1.0);
    for kind in 0..4 {
        let step = |p_wd: f32, g: [f32; 2]| {
            let (mut w, mut s4, mut s2, mut s1) = (
                [2.0f32, -3.0],
                [[1.0, 0.0, 0.0, 0.0]; 2],
                [[0.0; 2]; 2],
                [0.0; 2],
            );
            let wp = WameParams {
                weight_decay: p_wd,
                ..wp
            };
            let op = OptParams {
                weight_decay: p_wd,
                ..op
            };
            match kind {
                0 => optim::wame(&wp, 1, &mut w, &g, &mut s4),
                1 => optim::adam(&op, 1, &mut w, &g, &mut s2),
                2 => optim::rmsprop(&op, 1, &mut w, &g, &mut s1),
                _ => optim::sgd(&op, 1, &mut w, &g, &mut s1),
            }
            w
        };
        let lr = if kind == 0 { wp.lr } else { op.lr };
        let keep = 1.0 - lr * wd;
        assert_eq!(
            step(wd, [0.0; 2]),
            [2.0 * keep, -3.0 * keep],
            "optimizer {kind}"
        );
        let (plain, decayed) = (step(0.0, [0.3, -0.2]), step(wd, [0.3, -0.2]));
        for (i, w0) in [2.0f32, -3.0].into_iter().enumerate() {
            let want = plain[i] - lr * wd * w0;
            assert!(
                (decayed[i] - want).abs() <= 1e-6,
                "optimizer {kind} weight {i}: {} vs {want}",
                decayed[i]
            );
        }
    }
}

#[test]
fn gather_plain_short_batch_and_augment() {
    let pix = 784;
    let images: Vec<u8> = (0..5 * pix).map(|i| (i * 7 % 251) as u8).collect();
    let labels = [1u8, 2, 3, 4, 5];
    let index = [4u32, 0, 2, 1, 3];
    let p = GatherParams {
        batch: 3,
        pixels: pix as u32,
        augment: 0,
        seed: 9,
    };
    let st = StepState {
        epoch_step: 1,
        t: 5,
        n: 5,
        batch: 3,
    };
    let (mut x, mut y) = (vec![1.0f32; 3 * pix], vec![7u32; 3]);
    data::gather(&p, &st, &index, &images, &labels, &mut x, &mut y);
    assert_eq!(st.valid(), 2);
    assert_eq!(y, vec![2, 4, 0]);
    assert_eq!(x[0], images[pix] as f32 / 255.0);
    assert!(x[2 * pix..].iter().all(|v| *v == 0.0));
    // Augmented rows are the plain image flipped and shifted by the draw; pixel mass is kept
    // except what is shifted out.
    let pa = GatherParams { augment: 1, ..p };
    let (mut xa, mut ya) = (vec![0.0f32; 3 * pix], vec![0u32; 3]);
    data::gather(&pa, &st, &index, &images, &labels, &mut xa, &mut ya);
    assert_eq!(ya, y);
    let (flip, dx, dy) = data::augment_draw(9, 5, 0);
    let (yy, xx) = (14i32, 13i32);
    let (sy, mut sx) = (yy - dy, xx - dx);
    if flip {
        sx = 27 - sx;
    }
    assert_eq!(
        xa[(yy * 28 + xx) as usize],
        images[pix + (sy * 28 + sx) as usize] as f32 / 255.0
    );
    let mut s = st;
    data::advance(&mut s);
    assert_eq!((s.epoch_step, s.t), (2, 6));
}
