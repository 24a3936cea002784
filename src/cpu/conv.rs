//! Convolution (valid, stride 1) through im2col and GEMM, parallel over batch chunks, and the
//! fused forward + max-pool (+ dropout) as the composition of the unfused ops.

use super::Real;
use crate::params::{ActParams, ConvParams, PoolParams};
use rayon::prelude::*;

/// Samples per parallel work item. Fixed (not derived from the thread count) so that the
/// weight-gradient partial sums, and hence the result, do not depend on the machine.
const CHUNK: usize = 8;

struct Dims {
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    oh: usize,
    ow: usize,
}

impl Dims {
    fn of(p: &ConvParams) -> Self {
        Self {
            c_in: p.c_in as usize,
            h: p.h as usize,
            w: p.w as usize,
            c_out: p.c_out as usize,
            k: p.k as usize,
            oh: p.oh as usize,
            ow: p.ow as usize,
        }
    }
    fn ckk(&self) -> usize {
        self.c_in * self.k * self.k
    }
    fn opix(&self) -> usize {
        self.oh * self.ow
    }
    fn x_per(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn y_per(&self) -> usize {
        self.c_out * self.opix()
    }
}

/// `col[(c,ky,kx), (oy,ox)] = x[c, oy+ky, ox+kx]` for one sample.
fn im2col<T: Real>(d: &Dims, x: &[T], col: &mut [T]) {
    let opix = d.opix();
    for c in 0..d.c_in {
        for ky in 0..d.k {
            for kx in 0..d.k {
                let row = &mut col[((c * d.k + ky) * d.k + kx) * opix..][..opix];
                for oy in 0..d.oh {
                    let src = &x[(c * d.h + oy + ky) * d.w + kx..][..d.ow];
                    row[oy * d.ow..(oy + 1) * d.ow].copy_from_slice(src);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry back to the input pixel it came from.
fn col2im<T: Real>(d: &Dims, col: &[T], dx: &mut [T]) {
    let opix = d.opix();
    dx.fill(T::ZERO);
    for c in 0..d.c_in {
        for ky in 0..d.k {
            for kx in 0..d.k {
                let row = &col[((c * d.k + ky) * d.k + kx) * opix..][..opix];
                for oy in 0..d.oh {
                    let dst = &mut dx[(c * d.h + oy + ky) * d.w + kx..][..d.ow];
                    for (o, v) in dst.iter_mut().zip(&row[oy * d.ow..(oy + 1) * d.ow]) {
                        *o += *v;
                    }
                }
            }
        }
    }
}

pub fn forward<T: Real>(p: &ConvParams, x: &[T], w: &[T], bias: &[T], y: &mut [T]) {
    let d = Dims::of(p);
    let (ckk, opix) = (d.ckk(), d.opix());
    y.par_chunks_mut(d.y_per() * CHUNK)
        .zip(x.par_chunks(d.x_per() * CHUNK))
        .for_each(|(yc, xc)| {
            let mut col = vec![T::ZERO; ckk * opix];
            for (yb, xb) in yc.chunks_mut(d.y_per()).zip(xc.chunks(d.x_per())) {
                im2col(&d, xb, &mut col);
                for (o, row) in yb.chunks_mut(opix).enumerate() {
                    row.fill(bias[o]);
                }
                T::gemm(
                    d.c_out,
                    ckk,
                    opix,
                    T::ONE,
                    w,
                    ckk as isize,
                    1,
                    &col,
                    opix as isize,
                    1,
                    T::ONE,
                    yb,
                    opix as isize,
                    1,
                );
                if p.relu != 0 {
                    for v in yb.iter_mut() {
                        *v = v.max(T::ZERO);
                    }
                }
            }
        });
}

/// Pooling of the conv output of `p` (2x2, stride 2, floor mode).
pub fn relu_pool_params(p: &ConvParams) -> PoolParams {
    PoolParams::new(p.batch, p.c_out, p.oh, p.ow)
}

/// Twin of `forward_relu_pool` in conv.wgsl: [`forward`], then `pool::maxpool_forward` into
/// `pooled` and `argmax`, then, with `dropout = Some((params, step, d))`,
/// `act::dropout_forward(params, step, pooled, d)` over the whole pooled map (`params.n` is not
/// read). The full-resolution output is only a
/// temporary here; the shader never materialises it.
pub fn forward_relu_pool<T: Real>(
    p: &ConvParams,
    x: &[T],
    w: &[T],
    bias: &[T],
    pooled: &mut [T],
    argmax: &mut [u32],
    dropout: Option<(&ActParams, u32, &mut [T])>,
) {
    let mut a = vec![T::ZERO; p.y_len()];
    forward(p, x, w, bias, &mut a);
    let pp = relu_pool_params(p);
    super::pool::maxpool_forward(&pp, &a, pooled, argmax);
    if let Some((dp, step, d)) = dropout {
        // The shader covers the whole pooled map whatever `n` says.
        let dp = ActParams {
            n: pp.y_len() as u32,
            ..*dp
        };
        super::act::dropout_forward(&dp, step, pooled, d);
    }
}

pub fn backward_input<T: Real>(p: &ConvParams, dy: &[T], w: &[T], dx: &mut [T]) {
    let d = Dims::of(p);
    let (ckk, opix) = (d.ckk(), d.opix());
    dx.par_chunks_mut(d.x_per() * CHUNK)
        .zip(dy.par_chunks(d.y_per() * CHUNK))
        .for_each(|(dxc, dyc)| {
            let mut col = vec![T::ZERO; ckk * opix];
            for (dxb, dyb) in dxc.chunks_mut(d.x_per()).zip(dyc.chunks(d.y_per())) {
                // dcol = W^T dY
                T::gemm(
                    ckk,
                    d.c_out,
                    opix,
                    T::ONE,
                    w,
                    1,
                    ckk as isize,
                    dyb,
                    opix as isize,
                    1,
                    T::ZERO,
                    &mut col,
                    opix as isize,
                    1,
                );
                col2im(&d, &col, dxb);
            }
        });
}

pub fn backward_weight<T: Real>(p: &ConvParams, x: &[T], dy: &[T], dw: &mut [T]) {
    let d = Dims::of(p);
    let (ckk, opix) = (d.ckk(), d.opix());
    let partials: Vec<Vec<T>> = x
        .par_chunks(d.x_per() * CHUNK)
        .zip(dy.par_chunks(d.y_per() * CHUNK))
        .map(|(xc, dyc)| {
            let mut col = vec![T::ZERO; ckk * opix];
            let mut acc = vec![T::ZERO; d.c_out * ckk];
            for (xb, dyb) in xc.chunks(d.x_per()).zip(dyc.chunks(d.y_per())) {
                im2col(&d, xb, &mut col);
                // dW += dY col^T
                T::gemm(
                    d.c_out,
                    opix,
                    ckk,
                    T::ONE,
                    dyb,
                    opix as isize,
                    1,
                    &col,
                    1,
                    opix as isize,
                    T::ONE,
                    &mut acc,
                    ckk as isize,
                    1,
                );
            }
            acc
        })
        .collect();
    sum_in_order(&partials, dw);
}

pub fn backward_bias<T: Real>(p: &ConvParams, dy: &[T], db: &mut [T]) {
    let d = Dims::of(p);
    let (opix, y_per) = (d.opix(), d.y_per());
    // Per-chunk partial sums over contiguous memory, then added in chunk order: the same order
    // on every run whatever the thread count.
    let partials: Vec<Vec<T>> = dy
        .par_chunks(y_per * CHUNK)
        .map(|chunk| {
            let mut acc = vec![T::ZERO; d.c_out];
            for yb in chunk.chunks(y_per) {
                for (a, row) in acc.iter_mut().zip(yb.chunks(opix)) {
                    let mut s = T::ZERO;
                    for v in row {
                        s += *v;
                    }
                    *a += s;
                }
            }
            acc
        })
        .collect();
    sum_in_order(&partials, db);
}

/// `out = sum_i partials[i]`, added in index order so the result is reproducible.
pub(crate) fn sum_in_order<T: Real>(partials: &[Vec<T>], out: &mut [T]) {
    out.fill(T::ZERO);
    for part in partials {
        for (o, v) in out.iter_mut().zip(part) {
            *o += *v;
        }
    }
}
