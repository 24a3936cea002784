//! CPU twin of `shaders/conv_grad.wgsl`: the conv backward with the pool, ReLU and dropout
//! backward folded in, composed of the unfused CPU ops it replaces.
//!
//! [`conv_output_grad`] rebuilds the conv-output gradient from the pooled map, its argmax and the
//! incoming gradient by the same index formula as the shader's loaders; it equals
//! `act::dropout_backward` followed by `pool::maxpool_backward` on the full-resolution activation
//! bit for bit (ReLU' at the winner is `q > 0`), which `tests/cpu_reference.rs` checks. The
//! fused ops rebuild it one sample at a time inside `conv::backward_with`, the code the unfused
//! `conv::backward_weight`, `backward_bias` and `backward_input` run, so they equal the unfused
//! chain bit for bit without its whole-batch passes (pool, ReLU and dropout backward).

use super::Real;
use super::act::dropout_keep;
use super::conv::{self, OutputGrad};
use crate::params::{ActParams, ConvGradParams};

/// `dy [B, C_out, OH, OW]`: `g[i]` at the window winner when `q[i] > 0`, else 0 (see
/// [`ConvGradParams`]); `step` is the dropout mask's `StepState.t`.
pub fn conv_output_grad<T: Real>(
    p: &ConvGradParams,
    step: u32,
    argmax: &[u32],
    q: &[T],
    dd: &[T],
) -> Vec<T> {
    let per = (p.c_out * p.oh * p.ow) as usize;
    let drop = p.drop();
    let mut dy = vec![T::ZERO; p.batch as usize * per];
    for (s, dyb) in dy.chunks_mut(per).enumerate() {
        sample_output_grad(p, drop.as_ref(), step, s, argmax, q, dd, dyb);
    }
    dy
}

/// [`conv_output_grad`] of sample `s` alone, into `dyb [C_out, OH, OW]` (the fused backward
/// calls it from its per-sample loop, so the whole-batch gradient is never built).
#[allow(clippy::too_many_arguments)]
fn sample_output_grad<T: Real>(
    p: &ConvGradParams,
    drop: Option<&ActParams>,
    step: u32,
    s: usize,
    argmax: &[u32],
    q: &[T],
    dd: &[T],
    dyb: &mut [T],
) {
    let (oh, ow, ph, pw) = (p.oh as usize, p.ow as usize, p.ph as usize, p.pw as usize);
    let c_out = p.c_out as usize;
    let scale = T::from_f32(p.scale);
    dyb.fill(T::ZERO);
    for (o, plane) in dyb.chunks_mut(oh * ow).enumerate() {
        let pl = s * c_out + o;
        for j in 0..ph * pw {
            let i = pl * ph * pw + j;
            // ReLU' at the winner; NaN passes nothing, as in the shader.
            let positive = q[i] > T::ZERO;
            if !positive {
                continue;
            }
            let g = match drop {
                Some(d) if !dropout_keep(d, step, i as u32) => T::ZERO,
                Some(_) => dd[i] * scale,
                None => dd[i],
            };
            // The forward's argmax always lies inside its window; a corrupt one is ignored
            // rather than written elsewhere, as the shader (which compares, never scatters) does.
            let a = argmax[i] as usize;
            let (y, x) = (a / ow.max(1), a % ow.max(1));
            if y / 2 * pw + x / 2 == j && y < 2 * ph && x < 2 * pw {
                plane[a] = g;
            }
        }
    }
}

/// The conv backward of `p`'s conv with the conv-output gradient rebuilt per sample, as the
/// shader's loaders do: the chosen outputs of `conv::backward_with`.
#[allow(clippy::too_many_arguments)]
fn fused<T: Real>(
    p: &ConvGradParams,
    step: u32,
    argmax: &[u32],
    q: &[T],
    dd: &[T],
    x: Option<&[T]>,
    w: Option<&[T]>,
    dw: Option<&mut [T]>,
    db: Option<&mut [T]>,
    dx: Option<&mut [T]>,
) {
    let drop = p.drop();
    let dy_of = |s: usize, dyb: &mut [T]| {
        sample_output_grad(p, drop.as_ref(), step, s, argmax, q, dd, dyb);
    };
    conv::backward_with(&p.conv(), OutputGrad::PerSample(&dy_of), x, w, dw, db, dx);
}

/// `dw [C_out, C_in, K, K]` and `db [C_out]` from the conv input `x [B, C_in, H, W]` and the
/// fused conv-output gradient.
#[allow(clippy::too_many_arguments)]
pub fn backward_weight<T: Real>(
    p: &ConvGradParams,
    step: u32,
    x: &[T],
    argmax: &[u32],
    q: &[T],
    dd: &[T],
    dw: &mut [T],
    db: &mut [T],
) {
    fused(
        p,
        step,
        argmax,
        q,
        dd,
        Some(x),
        None,
        Some(dw),
        Some(db),
        None,
    );
}

/// `dx [B, C_in, H, W]` from the weights `w` and the fused conv-output gradient.
pub fn backward_input<T: Real>(
    p: &ConvGradParams,
    step: u32,
    argmax: &[u32],
    q: &[T],
    dd: &[T],
    w: &[T],
    dx: &mut [T],
) {
    fused(p, step, argmax, q, dd, None, Some(w), None, None, Some(dx));
}

/// `backward`: [`backward_weight`] and [`backward_input`] in one call (the shader's one dispatch
/// for a layer whose input gradient is needed too), sharing each sample's rebuilt conv-output
/// gradient; the results are those of the two calls bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Real>(
    p: &ConvGradParams,
    step: u32,
    x: &[T],
    argmax: &[u32],
    q: &[T],
    dd: &[T],
    w: &[T],
    dw: &mut [T],
    db: &mut [T],
    dx: &mut [T],
) {
    fused(
        p,
        step,
        argmax,
        q,
        dd,
        Some(x),
        Some(w),
        Some(dw),
        Some(db),
        Some(dx),
    );
}
