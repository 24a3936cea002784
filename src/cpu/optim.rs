//! Optimizer updates (SPEC 5): WAME with its three variants, Adam, RMSprop, SGD with momentum;
//! per tensor (`wame`, `adam`, `rmsprop`, `sgd`) and fused over a table of tensors in arenas
//! (`update_wame`, `update_adam`, `update_rmsprop`, `update_sgd`); the optimizer statistics of
//! one tensor's next update (`stats_wame`, `stats_adam`, `stats_rmsprop`, `stats_sgd`).

use super::Real;
use crate::params::{OptParams, STATS_BINS, StatsPartial, UpdateRecord, WameParams};

#[inline]
fn sign<T: Real>(v: T) -> T {
    if v > T::ZERO {
        T::ONE
    } else if v < T::ZERO {
        -T::ONE
    } else {
        T::ZERO
    }
}

/// WAME hyper-parameters in the working precision. [`wame`] converts [`WameParams`] to this; the
/// golden-value test builds it in f64 directly, so it is not blurred by f32 rounding of `lr`.
#[derive(Clone, Copy, Debug)]
pub struct WameHyper<T> {
    pub variant: u32,
    pub lr: T,
    pub alpha: T,
    pub eta_plus: T,
    pub eta_minus: T,
    pub zeta_min: T,
    pub zeta_max: T,
    pub eps: T,
    /// Decoupled weight decay (0: none).
    pub wd: T,
}

impl<T: Real> WameHyper<T> {
    pub fn from_params(p: &WameParams) -> Self {
        let f = T::from_f32;
        Self {
            variant: p.variant,
            lr: f(p.lr),
            alpha: f(p.alpha),
            eta_plus: f(p.eta_plus),
            eta_minus: f(p.eta_minus),
            zeta_min: f(p.zeta_min),
            zeta_max: f(p.zeta_max),
            eps: f(p.eps),
            wd: f(p.weight_decay),
        }
    }
}

/// The rate of step `t` (from 1) under a linear warm-up of `warmup` steps (0: none): `lr * t /
/// warmup` until step `warmup`, then `lr`. In f32 whatever `T` is, so it is the shader's value.
pub fn warm_lr(lr: f32, warmup: u32, t: u32) -> f32 {
    if t < warmup {
        lr * (t as f32 / warmup as f32)
    } else {
        lr
    }
}

/// The factor decoupled weight decay (AdamW's form) scales the weights by before a step of rate
/// `lr`; exactly 1 when `wd` is 0, so runs without it are unchanged. f32 like the shader.
pub fn decay(lr: f32, wd: f32) -> f32 {
    1.0 - lr * wd
}

/// `state[i] = (zeta, Z, theta, g_prev)`; fresh state is `(1, 0, 0, 0)`; `t` (from 1) only
/// matters during the warm-up.
pub fn wame<T: Real>(p: &WameParams, t: u32, w: &mut [T], g: &[T], state: &mut [[T; 4]]) {
    let n = p.n as usize;
    let mut h = WameHyper::from_params(p);
    h.lr = T::from_f32(warm_lr(p.lr, p.warmup, t));
    wame_update(&h, &mut w[..n], &g[..n], &mut state[..n]);
}

/// WAME's step multiplier for `variant`: seed `zeta / Z`, paper `Z`, inverse `1 / Z` (the
/// shader's `wame_multiplier`).
pub fn multiplier<T: Real>(variant: u32, zeta: T, z: T) -> T {
    match variant {
        1 => z,
        2 => T::ONE / z,
        _ => zeta / z,
    }
}

pub fn wame_update<T: Real>(h: &WameHyper<T>, w: &mut [T], g: &[T], state: &mut [[T; 4]]) {
    let one_minus = T::ONE - h.alpha;
    let keep = T::ONE - h.lr * h.wd;
    for ((wi, &gi), st) in w.iter_mut().zip(g).zip(state.iter_mut()) {
        let [mut zeta, mut z, mut theta, g_prev] = *st;
        // The sign product, not g * g_prev: the latter underflows to 0 in f32 for small gradients.
        let s = sign(gi) * sign(g_prev);
        if s > T::ZERO {
            zeta = (zeta * h.eta_plus).min(h.zeta_max);
        } else if s < T::ZERO {
            zeta = (zeta * h.eta_minus).max(h.zeta_min);
        }
        z = h.alpha * z + one_minus * zeta;
        theta = h.alpha * theta + one_minus * gi * gi;
        let m = multiplier(h.variant, zeta, z);
        *wi = *wi * keep - h.lr * m * gi / (theta + h.eps).sqrt();
        *st = [zeta, z, theta, gi];
    }
}

/// Adam's bias correction `1 - b^t` for an f32 beta, in f64: the exact reference (PyTorch
/// computes it in double). `t` saturates at `i32::MAX`, where `b^t` is 0 for every `b < 1`.
pub fn one_minus_pow(b: f32, t: u32) -> f64 {
    1.0 - (b as f64).powi(t.min(i32::MAX as u32) as i32)
}

/// The shader's `one_minus_pow` operation for operation in f32 (see its comment in
/// `shaders/optim.wgsl`), so its error against [`one_minus_pow`] can be measured for every `t`
/// on the CPU. Not used by the CPU backend, which takes the exact value.
pub fn one_minus_pow_f32(ln_b: f32, t: u32) -> f32 {
    let x = t as f32 * ln_b;
    if x < -20.0 {
        return 1.0;
    }
    let (mut y, mut k) = (x, 0);
    for _ in 0..6 {
        if y >= -0.5 {
            break;
        }
        y *= 0.5;
        k += 1;
    }
    let mut p = 1.0 + y / 9.0;
    for d in [8.0f32, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0] {
        p = 1.0 + y / d * p;
    }
    let mut e = y * p;
    for _ in 0..k {
        e *= e + 2.0;
    }
    -e
}

/// `state[i] = (m, v)`; `t` starts at 1. The bias corrections are [`one_minus_pow`], exact in
/// f64 and rounded once to `T`: this is the reference the shader's f32 scheme is held to.
pub fn adam<T: Real>(p: &OptParams, t: u32, w: &mut [T], g: &[T], state: &mut [[T; 2]]) {
    let f = T::from_f32;
    let (b1, b2) = (f(p.b1), f(p.b2));
    let bc1 = T::from_f64(one_minus_pow(p.b1, t));
    let bc2 = T::from_f64(one_minus_pow(p.b2, t));
    let lr32 = warm_lr(p.lr, p.warmup, t);
    let (lr, keep) = (f(lr32), f(decay(lr32, p.weight_decay)));
    for ((wi, &gi), st) in w.iter_mut().zip(g).zip(state.iter_mut()).take(p.n as usize) {
        let m = b1 * st[0] + (T::ONE - b1) * gi;
        let v = b2 * st[1] + (T::ONE - b2) * gi * gi;
        *wi = *wi * keep - lr * (m / bc1) / ((v / bc2).sqrt() + f(p.eps));
        *st = [m, v];
    }
}

/// RMSprop with `alpha = p.b2`, eps outside the square root (PyTorch).
pub fn rmsprop<T: Real>(p: &OptParams, t: u32, w: &mut [T], g: &[T], v: &mut [T]) {
    let f = T::from_f32;
    let a = f(p.b2);
    let lr32 = warm_lr(p.lr, p.warmup, t);
    let (lr, keep) = (f(lr32), f(decay(lr32, p.weight_decay)));
    for ((wi, &gi), vi) in w.iter_mut().zip(g).zip(v.iter_mut()).take(p.n as usize) {
        *vi = a * *vi + (T::ONE - a) * gi * gi;
        *wi = *wi * keep - lr * gi / (vi.sqrt() + f(p.eps));
    }
}

/// SGD with momentum `mu = p.b1`; the buffer starts at `g` on the first step (PyTorch).
pub fn sgd<T: Real>(p: &OptParams, t: u32, w: &mut [T], g: &[T], b: &mut [T]) {
    let f = T::from_f32;
    let lr32 = warm_lr(p.lr, p.warmup, t);
    let (lr, keep) = (f(lr32), f(decay(lr32, p.weight_decay)));
    for ((wi, &gi), bi) in w.iter_mut().zip(g).zip(b.iter_mut()).take(p.n as usize) {
        *bi = if t <= 1 { gi } else { f(p.b1) * *bi + gi };
        *wi = *wi * keep - lr * *bi;
    }
}

/// The gradient of one table record: `partial[0] + partial[1] + ... + partial[parts - 1]`, added
/// in ascending part order from partial 0, like the shader's `grad_sum`.
pub fn grad_sum<T: Real>(r: &UpdateRecord, grads: &[T]) -> Vec<T> {
    let (n, off) = (r.n as usize, r.grad_off as usize);
    let mut g = grads[off..off + n].to_vec();
    for s in 1..r.parts as usize {
        for (gj, &pj) in g.iter_mut().zip(&grads[off + s * n..off + (s + 1) * n]) {
            *gj += pj;
        }
    }
    g
}

/// Runs `rule` on every record of `table`: its parameters, summed gradient and state (`width`
/// values per element, copied out as arrays and back).
fn fused<T: Real, const W: usize>(
    table: &[UpdateRecord],
    params: &mut [T],
    grads: &[T],
    state: &mut [T],
    mut rule: impl FnMut(u32, &mut [T], &[T], &mut [[T; W]]),
) {
    for r in table {
        let n = r.n as usize;
        let g = grad_sum(r, grads);
        let (po, so) = (r.param_off as usize, r.state_off as usize);
        let s = &mut state[so..so + n * W];
        let mut st: Vec<[T; W]> = s
            .chunks_exact(W)
            .map(|c| std::array::from_fn(|k| c[k]))
            .collect();
        rule(r.n, &mut params[po..po + n], &g, &mut st);
        for (c, v) in s.chunks_exact_mut(W).zip(&st) {
            c.copy_from_slice(v);
        }
    }
}

/// Every tensor of `table` (see [`UpdateRecord`]) updated by [`wame`] from its summed partial
/// gradients; `p.n` is ignored (each record has its own). Twin of the shader's `update_wame`.
pub fn update_wame<T: Real>(
    p: &WameParams,
    t: u32,
    table: &[UpdateRecord],
    params: &mut [T],
    grads: &[T],
    state: &mut [T],
) {
    fused::<T, 4>(table, params, grads, state, |n, w, g, s| {
        wame(&WameParams { n, ..*p }, t, w, g, s)
    });
}

/// [`update_wame`] with [`adam`]: state `(m, v)` per element.
pub fn update_adam<T: Real>(
    p: &OptParams,
    t: u32,
    table: &[UpdateRecord],
    params: &mut [T],
    grads: &[T],
    state: &mut [T],
) {
    fused::<T, 2>(table, params, grads, state, |n, w, g, s| {
        adam(&OptParams { n, ..*p }, t, w, g, s)
    });
}

/// [`update_wame`] with [`rmsprop`]: state `v` per element.
pub fn update_rmsprop<T: Real>(
    p: &OptParams,
    t: u32,
    table: &[UpdateRecord],
    params: &mut [T],
    grads: &[T],
    state: &mut [T],
) {
    fused::<T, 1>(table, params, grads, state, |n, w, g, s| {
        rmsprop(&OptParams { n, ..*p }, t, w, g, bytemuck_flat(s))
    });
}

/// [`update_wame`] with [`sgd`]: the momentum buffer per element.
pub fn update_sgd<T: Real>(
    p: &OptParams,
    t: u32,
    table: &[UpdateRecord],
    params: &mut [T],
    grads: &[T],
    state: &mut [T],
) {
    fused::<T, 1>(table, params, grads, state, |n, w, g, s| {
        sgd(&OptParams { n, ..*p }, t, w, g, bytemuck_flat(s))
    });
}

/// `[[T; 1]]` as `[T]`.
fn bytemuck_flat<T>(s: &mut [[T; 1]]) -> &mut [T] {
    s.as_flattened_mut()
}

/// Lanes of a statistics workgroup: the shader's `WG`.
const STATS_WG: usize = 256;

fn abs<T: Real>(v: T) -> T {
    if v < T::ZERO { -v } else { v }
}

/// The partials of `n` elements in workgroups of [`STATS_WG`]: `elem(i, partial)` counts element
/// `i` into its workgroup's partial and returns its four sums, which are added in the shader's
/// tree order (lane `l += l + s` for `s = 128, 64, ..., 1`; lanes past `n` hold 0).
fn stats_partials<T: Real>(
    n: usize,
    mut elem: impl FnMut(usize, &mut StatsPartial) -> [T; 4],
) -> Vec<StatsPartial> {
    (0..n.div_ceil(STATS_WG))
        .map(|c| {
            let mut part = StatsPartial::default();
            let mut lanes = [[T::ZERO; 4]; STATS_WG];
            for (l, lane) in lanes.iter_mut().enumerate() {
                let i = c * STATS_WG + l;
                if i < n {
                    *lane = elem(i, &mut part);
                }
            }
            let mut s = STATS_WG / 2;
            while s > 0 {
                let (low, high) = lanes.split_at_mut(s);
                for (a, b) in low.iter_mut().zip(&high[..s]) {
                    for (x, &y) in a.iter_mut().zip(b) {
                        *x += y;
                    }
                }
                s /= 2;
            }
            let f = |v: T| v.to_f64() as f32;
            let t = lanes[0];
            (part.mult, part.step, part.dw2, part.w2) = (f(t[0]), f(t[1]), f(t[2]), f(t[3]));
            part
        })
        .collect()
}

/// The statistics of the update [`wame`] is about to make to `p.n` elements (nothing is
/// changed): per 256 elements, the new zeta's bin among `edges` (the number of `edges[1..]` at or
/// below it), the counts at `zeta_min`/`zeta_max` and of sign flips, and the sums of `zeta / Z`,
/// `|m g| / sqrt(theta + eps)`, `dw^2`, `w^2`. Twin of the shader's `stats_wame`.
pub fn stats_wame<T: Real>(
    p: &WameParams,
    t: u32,
    edges: &[f32; STATS_BINS],
    w: &[T],
    g: &[T],
    state: &[[T; 4]],
) -> Vec<StatsPartial> {
    let mut h = WameHyper::from_params(p);
    h.lr = T::from_f32(warm_lr(p.lr, p.warmup, t));
    stats_partials(p.n as usize, |i, part| {
        let (mut nw, mut st) = ([w[i]], [state[i]]);
        wame_update(&h, &mut nw, &g[i..i + 1], &mut st);
        let [zeta, z, theta, _] = st[0];
        let bin = edges[1..]
            .iter()
            .filter(|&&e| zeta >= T::from_f32(e))
            .count();
        part.bins[bin] += 1;
        part.at_min += (zeta <= h.zeta_min) as u32;
        part.at_max += (zeta >= h.zeta_max) as u32;
        part.flips += (sign(g[i]) * sign(state[i][3]) < T::ZERO) as u32;
        part.count += 1;
        let m = multiplier(h.variant, zeta, z);
        let dw = nw[0] - w[i];
        [
            zeta / z,
            abs(m * g[i] / (theta + h.eps).sqrt()),
            dw * dw,
            w[i] * w[i],
        ]
    })
}

/// [`stats_wame`] for [`adam`]: only `count` and the sums of `|m^ / (sqrt(v^) + eps)|`, `dw^2`,
/// `w^2`. Twin of `stats_adam`.
pub fn stats_adam<T: Real>(
    p: &OptParams,
    t: u32,
    w: &[T],
    g: &[T],
    state: &[[T; 2]],
) -> Vec<StatsPartial> {
    let one = OptParams { n: 1, ..*p };
    let bc1 = T::from_f64(one_minus_pow(p.b1, t));
    let bc2 = T::from_f64(one_minus_pow(p.b2, t));
    stats_partials(p.n as usize, |i, part| {
        let (mut nw, mut st) = ([w[i]], [state[i]]);
        adam(&one, t, &mut nw, &g[i..i + 1], &mut st);
        let [m, v] = st[0];
        part.count += 1;
        let dw = nw[0] - w[i];
        [
            T::ZERO,
            abs((m / bc1) / ((v / bc2).sqrt() + T::from_f32(p.eps))),
            dw * dw,
            w[i] * w[i],
        ]
    })
}

/// [`stats_adam`] for [`rmsprop`]: the step is `|g| / (sqrt(v) + eps)`. Twin of
/// `stats_rmsprop`.
pub fn stats_rmsprop<T: Real>(
    p: &OptParams,
    t: u32,
    w: &[T],
    g: &[T],
    v: &[T],
) -> Vec<StatsPartial> {
    let one = OptParams { n: 1, ..*p };
    stats_partials(p.n as usize, |i, part| {
        let (mut nw, mut nv) = ([w[i]], [v[i]]);
        rmsprop(&one, t, &mut nw, &g[i..i + 1], &mut nv);
        part.count += 1;
        let dw = nw[0] - w[i];
        [
            T::ZERO,
            abs(g[i] / (nv[0].sqrt() + T::from_f32(p.eps))),
            dw * dw,
            w[i] * w[i],
        ]
    })
}

/// [`stats_adam`] for [`sgd`]: the step is the new momentum buffer `|b|`. Twin of `stats_sgd`.
pub fn stats_sgd<T: Real>(p: &OptParams, t: u32, w: &[T], g: &[T], b: &[T]) -> Vec<StatsPartial> {
    let one = OptParams { n: 1, ..*p };
    stats_partials(p.n as usize, |i, part| {
        let (mut nw, mut nb) = ([w[i]], [b[i]]);
        sgd(&one, t, &mut nw, &g[i..i + 1], &mut nb);
        part.count += 1;
        let dw = nw[0] - w[i];
        [T::ZERO, abs(nb[0]), dw * dw, w[i] * w[i]]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ln_beta;

    /// `|got - want|` in units of the f32 spacing at `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let spacing = (f32::from_bits(w.to_bits() + 1) - w) as f64;
        (got as f64 - want).abs() / spacing
    }

    /// The worst error in ulps of the shader's scheme for beta `b` over `ts`.
    fn worst(b: f32, ts: impl Iterator<Item = u32>) -> (f64, u32) {
        let lb = ln_beta(b);
        ts.map(|t| (ulps(one_minus_pow_f32(lb, t), one_minus_pow(b, t)), t))
            .fold((0.0, 0), |a, x| if x.0 > a.0 { x } else { a })
    }

    #[test]
    fn bias_correction_is_exact_to_a_few_ulps() {
        // Every t up to 2^24 for the defaults (Adam's b1 and b2), a stride of t for other betas
        // near 1 (the cancelling case), small ones and 0.
        for b in [0.9f32, 0.999] {
            let (e, t) = worst(b, 1..=1 << 24);
            assert!(e <= 3.0, "b = {b}: {e:.2} ulps at t = {t}");
        }
        let near_one = 1.0 - f32::EPSILON / 2.0;
        for b in [0.0f32, 0.1, 0.5, 0.75, 0.99, 0.9999, 0.99999, near_one] {
            let ts = (1..=4096).chain((4096..=1 << 24).step_by(997));
            let (e, t) = worst(b, ts);
            assert!(e <= 3.0, "b = {b}: {e:.2} ulps at t = {t}");
        }
        assert_eq!(one_minus_pow_f32(ln_beta(0.0), 1), 1.0);
        assert_eq!(one_minus_pow(0.999, u32::MAX), 1.0);
    }

    #[test]
    fn f32_pow_is_not_exact_enough() {
        // What the shader used to do, `1 - pow(b, t)` in f32 (here with a correctly rounded
        // powf, better than a GPU's): dozens of ulps off, so the bound above can tell them apart.
        let b = 0.999f32;
        let naive = (1..=100u32)
            .map(|t| ulps(1.0 - b.powf(t as f32), one_minus_pow(b, t)))
            .fold(0.0, f64::max);
        assert!(naive > 10.0, "{naive}");
    }
}
