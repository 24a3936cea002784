//! Per-tensor optimizer statistics, once per epoch (issue 15): what the epoch's last update did,
//! from the optimizer's own state and gradient, summed from the workgroup partials of
//! `optim.stats_*` (GPU) or `cpu::optim::stats_*` (CPU) in f64 and ascending workgroup order.

use crate::cpu::optim as cpu;
use crate::model::PARAM_NAMES;
use crate::optim::{OptimConfig, OptimizerKind};
use crate::params::{STATS_BINS, StatsPartial};
use serde::{Deserialize, Serialize};

/// WAME's zeta: the share of a tensor's weights per log-spaced bin and at each bound, the mean
/// multiplier `zeta / Z`, and the share whose gradient changed sign in the step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZetaStats {
    /// Shares of the [`STATS_BINS`] bins between [`zeta_edges`] (the first from below, the last
    /// upwards); they sum to 1.
    pub hist: Vec<f64>,
    /// Shares at `zeta_min` and at `zeta_max` (also counted in the first and last bin).
    pub at_min: f64,
    pub at_max: f64,
    /// Mean of `zeta / Z`, the multiplier the `seed` variant applies to the RMS-normalised step.
    pub mean_multiplier: f64,
    /// Share of weights whose gradient sign flipped in the step (each cuts its zeta by `eta_minus`).
    pub sign_flips: f64,
}

/// One parameter tensor's statistics for the last step of an epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorStats {
    /// The PyTorch name (`conv1.weight`, ...).
    pub tensor: String,
    pub n: u64,
    /// Mean effective step `|dw| / lr` before the rate and weight decay (WAME `|m g| /
    /// sqrt(theta + eps)`, Adam `|m^ / (sqrt(v^) + eps)|`, RMSprop `|g| / (sqrt(v) + eps)`, SGD
    /// the momentum buffer `|b|`).
    pub mean_step: f64,
    /// `||dw|| / ||w||` over the tensor (the update/weight ratio), `None` while `w` is all zero.
    pub update_ratio: Option<f64>,
    /// WAME only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zeta: Option<ZetaStats>,
}

/// The bin edges of zeta: `edges[0] = zeta_min`, `edges[k] = zeta_min * (zeta_max /
/// zeta_min)^(k / 16)` in f64 rounded once to f32, so both devices compare against the same
/// values (no logarithm on the device).
pub fn zeta_edges(zeta_min: f32, zeta_max: f32) -> [f32; STATS_BINS] {
    let (lo, hi) = ((zeta_min as f64).ln(), (zeta_max as f64).ln());
    std::array::from_fn(|k| {
        if k == 0 {
            zeta_min
        } else {
            (lo + (hi - lo) * k as f64 / STATS_BINS as f64).exp() as f32
        }
    })
}

/// One tensor's statistics from its workgroups' partials (added in order, in f64).
pub fn summarize(tensor: &str, parts: &[StatsPartial], wame: bool) -> TensorStats {
    let (mut bins, mut at_min, mut at_max, mut flips, mut n) = ([0u64; STATS_BINS], 0, 0, 0, 0);
    let (mut mult, mut step, mut dw2, mut w2) = (0f64, 0f64, 0f64, 0f64);
    for p in parts {
        for (b, &c) in bins.iter_mut().zip(&p.bins) {
            *b += c as u64;
        }
        at_min += p.at_min as u64;
        at_max += p.at_max as u64;
        flips += p.flips as u64;
        n += p.count as u64;
        mult += p.mult as f64;
        step += p.step as f64;
        dw2 += p.dw2 as f64;
        w2 += p.w2 as f64;
    }
    let share = |c: u64| if n == 0 { 0.0 } else { c as f64 / n as f64 };
    let mean = |s: f64| if n == 0 { 0.0 } else { s / n as f64 };
    TensorStats {
        tensor: tensor.to_string(),
        n,
        mean_step: mean(step),
        update_ratio: (w2 > 0.0).then(|| (dw2 / w2).sqrt()),
        zeta: wame.then(|| ZetaStats {
            hist: bins.iter().map(|&c| share(c)).collect(),
            at_min: share(at_min),
            at_max: share(at_max),
            mean_multiplier: mean(mult),
            sign_flips: share(flips),
        }),
    }
}

/// The statistics of the update `o` is about to make at rate `lr` and step `t` (from 1) to
/// every tensor (in [`PARAM_NAMES`] order), by the CPU twins: the CPU net's path.
pub fn of_tensors(
    o: &OptimConfig,
    lr: f32,
    t: u32,
    params: &[Vec<f32>],
    grads: &[Vec<f32>],
    state: &[Vec<f32>],
) -> Vec<TensorStats> {
    let edges = zeta_edges(o.zeta_min, o.zeta_max);
    let wame = o.kind == OptimizerKind::Wame;
    params
        .iter()
        .zip(grads)
        .zip(state)
        .zip(PARAM_NAMES)
        .map(|(((w, g), s), name)| {
            let n = w.len();
            let parts = match o.kind {
                OptimizerKind::Wame => cpu::stats_wame(
                    &o.wame_params(n, lr),
                    t,
                    &edges,
                    w,
                    g,
                    bytemuck::cast_slice(s),
                ),
                OptimizerKind::Adam => {
                    cpu::stats_adam(&o.opt_params(n, lr), t, w, g, bytemuck::cast_slice(s))
                }
                OptimizerKind::Rmsprop => cpu::stats_rmsprop(&o.opt_params(n, lr), t, w, g, s),
                OptimizerKind::Sgd => cpu::stats_sgd(&o.opt_params(n, lr), t, w, g, s),
            };
            summarize(name, &parts, wame)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_log_spaced_from_min_to_max() {
        let e = zeta_edges(0.01, 100.0);
        assert_eq!(e[0], 0.01);
        assert_eq!(e[8], 1.0);
        assert_eq!(e[4], 0.1);
        assert!(e.windows(2).all(|w| w[0] < w[1]), "{e:?}");
        // One decade per four bins.
        assert!((e[12] / e[8] - 10.0).abs() < 1e-5, "{e:?}");
    }

    #[test]
    fn fresh_state_lands_where_the_rule_puts_it() {
        // From fresh state (zeta 1, Z 0, theta 0, g_prev 0) no sign product is positive or
        // negative, so zeta stays 1 (bin 8), Z becomes 0.1, zeta / Z = 10 for every weight.
        let o = OptimConfig::defaults(OptimizerKind::Wame);
        let n = 300;
        let w = vec![vec![0.5f32; n]];
        let g = vec![
            (0..n)
                .map(|i| if i % 2 == 0 { 1.0 } else { -2.0 })
                .collect(),
        ];
        let s = vec![o.initial_state(n)];
        let st = &of_tensors(&o, 1e-3, 1, &w, &g, &s)[0];
        assert_eq!(st.n, n as u64);
        let z = st.zeta.as_ref().unwrap();
        assert_eq!(z.hist[8], 1.0);
        assert_eq!(z.sign_flips, 0.0);
        assert!((z.mean_multiplier - 10.0).abs() < 1e-4, "{z:?}");
        // |m g| / sqrt(theta) = 10 |g| / sqrt(0.1 g^2) = 10 / sqrt(0.1) for every weight.
        assert!((st.mean_step - 10.0 / 0.1f64.sqrt()).abs() < 1e-3, "{st:?}");
        // dw = lr * 31.6, w = 0.5.
        let ratio = st.update_ratio.unwrap();
        assert!(
            (ratio - 1e-3 * 10.0 / 0.1f64.sqrt() / 0.5).abs() < 1e-5,
            "{ratio}"
        );
    }

    #[test]
    fn flips_and_bounds_are_counted() {
        let o = OptimConfig::defaults(OptimizerKind::Wame);
        // Element 0: zeta at the minimum, gradient flips -> stays pinned at 0.01.
        // Element 1: zeta at 99, same sign -> pinned at 100.
        // Element 2: zeta 1, flip -> 0.1.
        let w = vec![vec![1.0f32; 3]];
        let g = vec![vec![1.0f32, 1.0, -1.0]];
        let s = vec![vec![
            0.01, 0.5, 1.0, -1.0, //
            99.0, 50.0, 1.0, 1.0, //
            1.0, 1.0, 1.0, 1.0,
        ]];
        let st = &of_tensors(&o, 1e-3, 5, &w, &g, &s)[0];
        let z = st.zeta.as_ref().unwrap();
        let third = 1.0 / 3.0;
        assert_eq!(z.sign_flips, 2.0 * third);
        assert_eq!((z.at_min, z.at_max), (third, third));
        assert_eq!(z.hist[0], third);
        assert_eq!(z.hist[15], third);
        // 0.1 sits exactly on edge 4.
        assert_eq!(z.hist[4], third);
    }

    #[test]
    fn baselines_have_no_zeta() {
        for kind in [
            OptimizerKind::Adam,
            OptimizerKind::Rmsprop,
            OptimizerKind::Sgd,
        ] {
            let o = OptimConfig::defaults(kind);
            let n = 1000;
            let w = vec![vec![0.1f32; n]];
            let g = vec![vec![0.2f32; n]];
            let s = vec![o.initial_state(n)];
            let st = &of_tensors(&o, o.lr, 1, &w, &g, &s)[0];
            assert!(st.zeta.is_none());
            assert_eq!(st.n, n as u64);
            // First steps: Adam's m^ / sqrt(v^) = 1, RMSprop (alpha 0.9) g / sqrt(0.1 g^2), SGD b = g.
            let want = match kind {
                OptimizerKind::Adam => 1.0,
                OptimizerKind::Rmsprop => 0.1f64.sqrt().recip(),
                _ => 0.2,
            };
            assert!(
                (st.mean_step - want).abs() < 1e-4 * want,
                "{kind:?}: {st:?}"
            );
        }
    }
}
