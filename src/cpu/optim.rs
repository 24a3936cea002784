//! Optimizer updates (SPEC 5): WAME with its three variants, Adam, RMSprop, SGD with momentum.

use super::Real;
use crate::params::{OptParams, WameParams};

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
        let m = match h.variant {
            1 => z,
            2 => T::ONE / z,
            _ => zeta / z,
        };
        *wi = *wi * keep - h.lr * m * gi / (theta + h.eps).sqrt();
        *st = [zeta, z, theta, gi];
    }
}

/// `state[i] = (m, v)`; `t` starts at 1.
pub fn adam<T: Real>(p: &OptParams, t: u32, w: &mut [T], g: &[T], state: &mut [[T; 2]]) {
    let f = T::from_f32;
    let (b1, b2) = (f(p.b1), f(p.b2));
    // Bias corrections in f32 like the shader (pow of f32), so CPU and GPU agree closely.
    let bc1 = T::from_f32(1.0 - p.b1.powf(t as f32));
    let bc2 = T::from_f32(1.0 - p.b2.powf(t as f32));
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
