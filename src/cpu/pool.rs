//! 2x2 stride-2 max pool with argmax, and its backward with the fused ReLU mask.

use super::Real;
use crate::params::PoolParams;
use rayon::prelude::*;

pub fn maxpool_forward<T: Real>(p: &PoolParams, x: &[T], y: &mut [T], argmax: &mut [u32]) {
    let (h, w, oh, ow) = (p.h as usize, p.w as usize, p.oh as usize, p.ow as usize);
    let planes = (p.batch * p.c) as usize;
    let (y, argmax) = (&mut y[..planes * oh * ow], &mut argmax[..planes * oh * ow]);
    let planes_out = y
        .par_chunks_mut(oh * ow)
        .zip(argmax.par_chunks_mut(oh * ow));
    planes_out.enumerate().for_each(|(pl, (y, argmax))| {
        let xp = &x[pl * h * w..][..h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best_i = 2 * oy * w + 2 * ox;
                let mut best = xp[best_i];
                // Row-major window order; strict `>` keeps the first of equal maxima.
                for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                    let i = (2 * oy + dy) * w + 2 * ox + dx;
                    if xp[i] > best {
                        best = xp[i];
                        best_i = i;
                    }
                }
                y[oy * ow + ox] = best;
                argmax[oy * ow + ox] = best_i as u32;
            }
        }
    });
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
