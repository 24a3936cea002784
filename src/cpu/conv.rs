//! Convolution (valid, stride 1) through im2col and GEMM, one sample at a time inside parallel
//! batch chunks, and the fused forward + ReLU + max-pool (+ dropout) with the pool as the GEMM's
//! epilogue.
//!
//! The unfused ops and the fused twins (`forward_relu_pool` here, `cpu::conv_grad`) run the same
//! per-sample code ([`sample_forward`], [`backward_with`]), so the fused results equal the unfused
//! chain bit for bit (`tests/cpu_reference.rs`) while skipping its passes over the full-resolution
//! activations.

use super::Real;
use crate::params::{ActParams, ConvParams, PoolParams};
use rayon::prelude::*;

/// Samples per parallel work item. Fixed (not derived from the thread count) so that the
/// weight-gradient partial sums, and hence the result, do not depend on the machine.
const CHUNK: usize = 8;

pub(crate) struct Dims {
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    oh: usize,
    ow: usize,
}

impl Dims {
    pub(crate) fn of(p: &ConvParams) -> Self {
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

/// `dst.copy_from_slice(src)` for the short runs of im2col: a call to `memmove` per run of 8 or
/// 24 values cost more than the copy (12 % of a step); fixed lengths compile to plain moves.
#[inline(always)]
fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    fn fixed<T: Copy, const N: usize>(dst: &mut [T], src: &[T]) {
        let d: &mut [T; N] = dst.try_into().expect("run length");
        *d = src.try_into().expect("run length");
    }
    match dst.len() {
        8 => fixed::<T, 8>(dst, src),
        12 => fixed::<T, 12>(dst, src),
        24 => fixed::<T, 24>(dst, src),
        _ => dst.copy_from_slice(src),
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
                    copy_run(&mut row[oy * d.ow..(oy + 1) * d.ow], src);
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

/// One sample's conv output before the activation, `yb[o, pix] = bias[o] + W[o, :] col[:, pix]`,
/// with `col` as scratch for the sample's im2col.
fn sample_forward<T: Real>(d: &Dims, xb: &[T], w: &[T], bias: &[T], col: &mut [T], yb: &mut [T]) {
    let (ckk, opix) = (d.ckk(), d.opix());
    im2col(d, xb, col);
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
        col,
        opix as isize,
        1,
        T::ONE,
        yb,
        opix as isize,
        1,
    );
}

fn relu_in_place<T: Real>(v: &mut [T]) {
    for a in v.iter_mut() {
        *a = a.max(T::ZERO);
    }
}

pub fn forward<T: Real>(p: &ConvParams, x: &[T], w: &[T], bias: &[T], y: &mut [T]) {
    let d = Dims::of(p);
    y.par_chunks_mut(d.y_per() * CHUNK)
        .zip(x.par_chunks(d.x_per() * CHUNK))
        .for_each_init(
            || vec![T::ZERO; d.ckk() * d.opix()],
            |col, (yc, xc)| {
                for (yb, xb) in yc.chunks_mut(d.y_per()).zip(xc.chunks(d.x_per())) {
                    sample_forward(&d, xb, w, bias, col, yb);
                    if p.relu != 0 {
                        relu_in_place(yb);
                    }
                }
            },
        );
}

/// Pooling of the conv output of `p` (2x2, stride 2, floor mode).
pub fn relu_pool_params(p: &ConvParams) -> PoolParams {
    PoolParams::new(p.batch, p.c_out, p.oh, p.ow)
}

/// Twin of `forward_relu_pool` in conv.wgsl: [`forward`], then `pool::maxpool_forward` into
/// `pooled` and `argmax`, then, with `dropout = Some((params, step, d))`,
/// `act::dropout_forward(params, step, pooled, d)` over the whole pooled map (`params.n` is not
/// read). The full-resolution output lives only in one sample's scratch, as in the shader, which
/// never materialises it: the ReLU, the pool and the dropout are the GEMM's epilogue.
pub fn forward_relu_pool<T: Real>(
    p: &ConvParams,
    x: &[T],
    w: &[T],
    bias: &[T],
    pooled: &mut [T],
    argmax: &mut [u32],
    dropout: Option<(&ActParams, u32, &mut [T])>,
) {
    let d = Dims::of(p);
    let pp = relu_pool_params(p);
    let q_per = (pp.c * pp.oh * pp.ow) as usize;
    let n = pp.y_len();
    let (pooled, argmax) = (&mut pooled[..n], &mut argmax[..n]);
    // One `d` chunk per sample chunk, or none at all.
    let drop = dropout.as_ref().map(|(dp, step, _)| (**dp, *step));
    let d_chunks: Vec<Option<&mut [T]>> = match dropout {
        Some((_, _, out)) => out[..n].chunks_mut(q_per * CHUNK).map(Some).collect(),
        None => (0..n.div_ceil(q_per * CHUNK)).map(|_| None).collect(),
    };
    pooled
        .par_chunks_mut(q_per * CHUNK)
        .zip(argmax.par_chunks_mut(q_per * CHUNK))
        .zip(x.par_chunks(d.x_per() * CHUNK))
        .zip(d_chunks)
        .enumerate()
        .for_each_init(
            // Scratch per rayon job, not per chunk: fresh buffers cost page faults each step.
            || (vec![T::ZERO; d.ckk() * d.opix()], vec![T::ZERO; d.y_per()]),
            |(col, yb), (ci, (((qc, ac), xc), dc))| {
                let samples = qc.chunks_mut(q_per).zip(ac.chunks_mut(q_per));
                for ((qb, ab), xb) in samples.zip(xc.chunks(d.x_per())) {
                    sample_forward(&d, xb, w, bias, col, yb);
                    super::pool::maxpool_planes(&pp, yb, p.relu != 0, qb, ab);
                }
                if let (Some((dp, step)), Some(dc)) = (&drop, dc) {
                    super::act::dropout_range(dp, *step, ci * q_per * CHUNK, qc, dc);
                }
            },
        );
}

/// Where [`backward_with`] takes the conv-output gradient from.
pub(crate) enum OutputGrad<'a, T> {
    /// The whole batch's `dy [B, C_out, OH, OW]`.
    Dense(&'a [T]),
    /// Written into scratch one sample at a time by `f(sample, dyb)` (the fused backward's
    /// loaders, `cpu::conv_grad`).
    PerSample(&'a (dyn Fn(usize, &mut [T]) + Sync)),
}

/// The conv backward from the output gradient `dy`: `dw` (needs the input `x`), `db`, and `dx`
/// (needs the weights `w`), each only when asked for. Parallel over fixed chunks of [`CHUNK`]
/// samples; within a chunk the samples run in order, and the chunks' weight and bias partial sums
/// are added in chunk order, so the result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_with<T: Real>(
    p: &ConvParams,
    dy: OutputGrad<T>,
    x: Option<&[T]>,
    w: Option<&[T]>,
    dw: Option<&mut [T]>,
    db: Option<&mut [T]>,
    dx: Option<&mut [T]>,
) {
    let d = Dims::of(p);
    let (ckk, opix, y_per, x_per) = (d.ckk(), d.opix(), d.y_per(), d.x_per());
    let batch = p.batch as usize;
    let chunks = batch.div_ceil(CHUNK);
    let (want_w, want_b, want_x) = (dw.is_some(), db.is_some(), dx.is_some());
    let dx_chunks: Vec<Option<&mut [T]>> = match dx {
        Some(dx) => dx[..batch * x_per]
            .chunks_mut(x_per * CHUNK)
            .map(Some)
            .collect(),
        None => (0..chunks).map(|_| None).collect(),
    };
    let partials: Vec<(Vec<T>, Vec<T>)> = dx_chunks
        .into_par_iter()
        .enumerate()
        .map_init(
            // Scratch per rayon job, not per chunk: fresh buffers cost page faults each step.
            || {
                let col = if want_w || want_x { ckk * opix } else { 0 };
                let dy = match dy {
                    OutputGrad::Dense(_) => 0,
                    OutputGrad::PerSample(_) => y_per,
                };
                (vec![T::ZERO; col], vec![T::ZERO; dy])
            },
            |(col, scratch), (ci, mut dxc)| {
                let mut acc_w = vec![T::ZERO; if want_w { d.c_out * ckk } else { 0 }];
                let mut acc_b = vec![T::ZERO; if want_b { d.c_out } else { 0 }];
                for s in ci * CHUNK..batch.min((ci + 1) * CHUNK) {
                    let dyb: &[T] = match dy {
                        OutputGrad::Dense(all) => &all[s * y_per..][..y_per],
                        OutputGrad::PerSample(f) => {
                            f(s, scratch);
                            scratch
                        }
                    };
                    if want_b {
                        for (a, row) in acc_b.iter_mut().zip(dyb.chunks(opix)) {
                            let mut sum = T::ZERO;
                            for v in row {
                                sum += *v;
                            }
                            *a += sum;
                        }
                    }
                    if want_w {
                        let x = x.expect("backward_with: dw needs x");
                        im2col(&d, &x[s * x_per..][..x_per], col);
                        // dW += dY col^T
                        T::gemm(
                            d.c_out,
                            opix,
                            ckk,
                            T::ONE,
                            dyb,
                            opix as isize,
                            1,
                            col,
                            1,
                            opix as isize,
                            T::ONE,
                            &mut acc_w,
                            ckk as isize,
                            1,
                        );
                    }
                    if let Some(dxc) = dxc.as_deref_mut() {
                        let w = w.expect("backward_with: dx needs w");
                        // dcol = W^T dY, then back onto the input pixels.
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
                            col,
                            opix as isize,
                            1,
                        );
                        col2im(&d, col, &mut dxc[(s - ci * CHUNK) * x_per..][..x_per]);
                    }
                }
                (acc_w, acc_b)
            },
        )
        .collect();
    if let Some(dw) = dw {
        let parts: Vec<&[T]> = partials.iter().map(|(a, _)| &a[..]).collect();
        sum_in_order(&parts, dw);
    }
    if let Some(db) = db {
        let parts: Vec<&[T]> = partials.iter().map(|(_, b)| &b[..]).collect();
        sum_in_order(&parts, db);
    }
}

pub fn backward_input<T: Real>(p: &ConvParams, dy: &[T], w: &[T], dx: &mut [T]) {
    backward_with(
        p,
        OutputGrad::Dense(dy),
        None,
        Some(w),
        None,
        None,
        Some(dx),
    );
}

pub fn backward_weight<T: Real>(p: &ConvParams, x: &[T], dy: &[T], dw: &mut [T]) {
    backward_with(
        p,
        OutputGrad::Dense(dy),
        Some(x),
        None,
        Some(dw),
        None,
        None,
    );
}

pub fn backward_bias<T: Real>(p: &ConvParams, dy: &[T], db: &mut [T]) {
    backward_with(p, OutputGrad::Dense(dy), None, None, None, Some(db), None);
}

/// `out = sum_i partials[i]`, added in index order so the result is reproducible.
pub(crate) fn sum_in_order<T: Real>(partials: &[&[T]], out: &mut [T]) {
    out.fill(T::ZERO);
    for part in partials {
        for (o, v) in out.iter_mut().zip(part.iter()) {
            *o += *v;
        }
    }
}
