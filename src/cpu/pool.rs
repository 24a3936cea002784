//! 2x2 stride-2 max pool with argmax, and its backward with the fused ReLU mask.

use super::Real;
use crate::params::PoolParams;
use rayon::prelude::*;

/// One plane `xp [h, w]` pooled into `y [oh, ow]` and `argmax` (the index into the plane); with
/// `relu` the window values are `max(v, 0)` first (the fused conv epilogue's ReLU, the same
/// operation as a ReLU pass before the pool, so the same bits).
fn pool_plane<T: Real>(
    w: usize,
    oh: usize,
    ow: usize,
    relu: bool,
    xp: &[T],
    y: &mut [T],
    argmax: &mut [u32],
) {
    let act = |v: T| if relu { v.max(T::ZERO) } else { v };
    for oy in 0..oh {
        let (r0, r1) = (
            &xp[2 * oy * w..][..2 * ow],
            &xp[(2 * oy + 1) * w..][..2 * ow],
        );
        let (y, argmax) = (&mut y[oy * ow..][..ow], &mut argmax[oy * ow..][..ow]);
        for ox in 0..ow {
            let base = 2 * oy * w + 2 * ox;
            // Row-major window order; strict `>` keeps the first of equal maxima.
            let window = [
                (act(r0[2 * ox]), base),
                (act(r0[2 * ox + 1]), base + 1),
                (act(r1[2 * ox]), base + w),
                (act(r1[2 * ox + 1]), base + w + 1),
            ];
            let (mut best, mut best_i) = window[0];
            for &(v, i) in &window[1..] {
                if v > best {
                    best = v;
                    best_i = i;
                }
            }
            y[ox] = best;
            argmax[ox] = best_i as u32;
        }
    }
}

pub fn maxpool_forward<T: Real>(p: &PoolParams, x: &[T], y: &mut [T], argmax: &mut [u32]) {
    let (h, w, oh, ow) = (p.h as usize, p.w as usize, p.oh as usize, p.ow as usize);
    let planes = (p.batch * p.c) as usize;
    let (y, argmax) = (&mut y[..planes * oh * ow], &mut argmax[..planes * oh * ow]);
    let planes_out = y
        .par_chunks_mut(oh * ow)
        .zip(argmax.par_chunks_mut(oh * ow));
    planes_out.enumerate().for_each(|(pl, (y, argmax))| {
        pool_plane(w, oh, ow, false, &x[pl * h * w..][..h * w], y, argmax);
    });
}

/// [`maxpool_forward`] of the `c` planes of one sample, of `max(x, 0)` with `relu`, serially (the
/// fused conv epilogue calls it from inside its own parallel chunks).
pub(crate) fn maxpool_planes<T: Real>(
    p: &PoolParams,
    x: &[T],
    relu: bool,
    y: &mut [T],
    argmax: &mut [u32],
) {
    let (h, w, oh, ow) = (p.h as usize, p.w as usize, p.oh as usize, p.ow as usize);
    let planes = y.chunks_mut(oh * ow).zip(argmax.chunks_mut(oh * ow));
    for (pl, (y, argmax)) in planes.take(p.c as usize).enumerate() {
        pool_plane(w, oh, ow, relu, &x[pl * h * w..][..h * w], y, argmax);
    }
}

pub fn maxpool_backward<T: Real>(p: &PoolParams, dy: &[T], argmax: &[u32], x: &[T], dx: &mut [T]) {
    let (hw, ohw) = ((p.h * p.w) as usize, (p.oh * p.ow) as usize);
    let planes = (p.batch * p.c) as usize;
    dx[..planes * hw]
        .par_chunks_mut(hw)
        .enumerate()
        .for_each(|(pl, dx)| {
            dx.fill(T::ZERO);
            for j in 0..ohw {
                let i = argmax[pl * ohw + j] as usize;
                if x[pl * hw + i] > T::ZERO {
                    dx[i] = dy[pl * ohw + j];
                }
            }
        });
}
