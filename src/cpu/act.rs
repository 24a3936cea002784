//! ReLU (where not fused) and inverted dropout with the counter-based mask of SPEC 4.

use super::Real;
use crate::params::{ActParams, dropout_hash};
use rayon::prelude::*;

pub fn relu_forward<T: Real>(p: &ActParams, x: &[T], y: &mut [T]) {
    for (o, v) in y.iter_mut().zip(x).take(p.n as usize) {
        *o = v.max(T::ZERO);
    }
}

pub fn relu_backward<T: Real>(p: &ActParams, y: &[T], dy: &[T], dx: &mut [T]) {
    for ((d, g), v) in dx.iter_mut().zip(dy).zip(y).take(p.n as usize) {
        *d = if *v > T::ZERO { *g } else { T::ZERO };
    }
}

/// Whether unit `i` survives dropout at global step `step`.
#[inline]
pub fn dropout_keep(p: &ActParams, step: u32, i: u32) -> bool {
    dropout_hash(p.seed, step, i) >= p.threshold
}

pub fn dropout_forward<T: Real>(p: &ActParams, step: u32, x: &[T], y: &mut [T]) {
    /// Elements per parallel piece (each element's mask is its own, so any split gives the same
    /// bits).
    const PIECE: usize = 4096;
    let n = p.n as usize;
    // The hash per element costs more than the multiply: spread it over the cores.
    y[..n]
        .par_chunks_mut(PIECE)
        .zip(x[..n].par_chunks(PIECE))
        .enumerate()
        .for_each(|(i, (yc, xc))| dropout_range(p, step, i * PIECE, xc, yc));
}

/// [`dropout_forward`] of `x` and `y`, the elements `offset..offset + x.len()` of the map,
/// serially (for callers that already run in parallel chunks).
pub(crate) fn dropout_range<T: Real>(
    p: &ActParams,
    step: u32,
    offset: usize,
    x: &[T],
    y: &mut [T],
) {
    let scale = T::from_f32(p.scale);
    for (i, (o, v)) in y.iter_mut().zip(x).enumerate() {
        *o = if dropout_keep(p, step, (offset + i) as u32) {
            *v * scale
        } else {
            T::ZERO
        };
    }
}

pub fn dropout_backward<T: Real>(p: &ActParams, step: u32, dy: &[T], dx: &mut [T]) {
    dropout_forward(p, step, dy, dx);
}
