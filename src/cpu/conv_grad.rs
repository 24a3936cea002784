//! CPU twin of `shaders/conv_grad.wgsl`: the conv backward with the pool, ReLU and dropout
//! backward folded in, composed of the unfused CPU ops it replaces.
//!
//! [`conv_output_grad`] rebuilds the conv-output gradient from the pooled map, its argmax and the
//! incoming gradient by the same index formula as the shader's loaders; it equals
//! `act::dropout_backward` followed by `pool::maxpool_backward` on the full-resolution activation
//! bit for bit (ReLU' at the winner is `q > 0`), which `tests/cpu_reference.rs` checks. The GEMMs
//! are then `conv::backward_weight`, `conv::backward_bias` and `conv::backward_input` unchanged.

use super::Real;
use super::act::dropout_keep;
use super::conv;
use crate::params::ConvGradParams;

/// `dy [B, C_out, OH, OW]`: `g[i]` at the window winner when `q[i] > 0`, else 0 (see
/// [`ConvGradParams`]); `step` is the dropout mask's `StepState.t`.
pub fn conv_output_grad<T: Real>(
    p: &ConvGradParams,
    step: u32,
    argmax: &[u32],
    q: &[T],
    dd: &[T],
) -> Vec<T> {
    let (oh, ow, ph, pw) = (p.oh as usize, p.ow as usize, p.ph as usize, p.pw as usize);
    let planes = (p.batch * p.c_out) as usize;
    let drop = p.drop();
    let scale = T::from_f32(p.scale);
    let mut dy = vec![T::ZERO; planes * oh * ow];
    for (pl, plane) in dy.chunks_mut(oh * ow).enumerate() {
        for j in 0..ph * pw {
            let i = pl * ph * pw + j;
            // ReLU' at the winner; NaN passes nothing, as in the shader.
            let positive = q[i] > T::ZERO;
            if !positive {
                continue;
            }
            let g = match &drop {
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
    dy
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
    let dy = conv_output_grad(p, step, argmax, q, dd);
    let c = p.conv();
    conv::backward_weight(&c, x, &dy, dw);
    conv::backward_bias(&c, &dy, db);
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
    let dy = conv_output_grad(p, step, argmax, q, dd);
    conv::backward_input(&p.conv(), &dy, w, dx);
}

/// `backward`: [`backward_weight`] and [`backward_input`] in one call (the shader's one dispatch
/// for a layer whose input gradient is needed too). The conv-output gradient is rebuilt once;
/// it is a pure function of the inputs, so the results are those of the two calls bit for bit.
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
    let dy = conv_output_grad(p, step, argmax, q, dd);
    let c = p.conv();
    conv::backward_weight(&c, x, &dy, dw);
    conv::backward_bias(&c, &dy, db);
    conv::backward_input(&c, &dy, w, dx);
}
