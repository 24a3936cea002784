//! Convolution (valid, stride 1) through im2col and GEMM, one sample at a time inside parallel
//! batch chunks, and the fused forward + ReLU + max-pool (+ dropout) with the pool as the GEMM's
//! epilogue.
//!
//! `forward` and `forward_relu_pool` run the same per-sample code ([`sample_forward`]), so the
//! fused forward equals the unfused chain bit for bit (`tests/cpu_reference.rs`) while skipping
//! its passes over the full-resolution activations. The backward scaffolding
//! ([`backward_chunks`]) serves both the dense unfused backward here and `cpu::conv_grad`'s
//! winners-only one, which agrees with it to rounding.

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
    pub(crate) fn ckk(&self) -> usize {
        self.c_in * self.k * self.k
    }
    pub(crate) fn opix(&self) -> usize {
        self.oh * self.ow
    }
    pub(crate) fn x_per(&self) -> usize {
        self.c_in * self.h * self.w
    }
    pub(crate) fn y_per(&self) -> usize {
        self.c_out * self.opix()
    }
}

/// `dst.copy_from_slice(src)` for a run of `N` values (0: any length): with `N` a constant the
/// copy is a few plain moves, not a loop or a `memmove` call per run.
#[inline(always)]
fn copy_run<T: Copy, const N: usize>(dst: &mut [T], src: &[T]) {
    if N == 0 {
        dst.copy_from_slice(src);
    } else {
        let dst: &mut [T; N] = dst.try_into().expect("run length");
        *dst = src.try_into().expect("run length");
    }
}

/// `col[(c,ky,kx), (oy,ox)] = x[c, oy+ky, ox+kx]` for one sample.
fn im2col<T: Real>(d: &Dims, x: &[T], col: &mut [T]) {
    // The output width as a constant turns each output row into a few plain moves (see
    // `im2col_rows`); the model's convs have widths 24 and 8.
    match d.ow {
        8 => im2col_w::<T, 8>(d, x, col),
        24 => im2col_w::<T, 24>(d, x, col),
        _ => im2col_w::<T, 0>(d, x, col),
    }
}

/// [`im2col`] for output width `W` (0: `d.ow`, not known at compile time).
#[inline(always)]
fn im2col_w<T: Real, const W: usize>(d: &Dims, x: &[T], col: &mut [T]) {
    let ow = if W == 0 { d.ow } else { W };
    let (opix, hw, kk) = (d.opix(), d.h * d.w, d.k * d.k);
    for (xc, cc) in x.chunks_exact(hw).zip(col.chunks_exact_mut(kk * opix)) {
        for (r, row) in cc.chunks_exact_mut(opix).enumerate() {
            let (ky, kx) = (r / d.k, r % d.k);
            for (oy, dst) in row.chunks_exact_mut(ow).enumerate() {
                copy_run::<T, W>(dst, &xc[(oy + ky) * d.w + kx..][..ow]);
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

/// im2col's transpose, `colt[(oy,ox), (c,ky,kx)] = x[c, oy+ky, ox+kx]` for one sample: a row
/// per output pixel, so that a pixel's receptive field is contiguous (the sparse backward of
/// `cpu::conv_grad` reads whole rows of it).
pub(crate) fn im2col_rows<T: Real>(d: &Dims, x: &[T], colt: &mut [T]) {
    // The kernel width as a constant turns each kernel row into a few plain moves; a generic
    // length costs a loop (or a memmove) per five values, 20,000 of them per conv2 sample.
    match d.k {
        5 => im2col_rows_k::<T, 5>(d, x, colt),
        3 => im2col_rows_k::<T, 3>(d, x, colt),
        _ => im2col_rows_k::<T, 0>(d, x, colt),
    }
}

/// [`im2col_rows`] for kernel width `K` (0: `d.k`, not known at compile time).
#[inline(always)]
fn im2col_rows_k<T: Real, const K: usize>(d: &Dims, x: &[T], colt: &mut [T]) {
    let k = if K == 0 { d.k } else { K };
    let (ckk, hw) = (d.ckk(), d.h * d.w);
    for (p, row) in colt.chunks_exact_mut(ckk).take(d.opix()).enumerate() {
        let (oy, ox) = (p / d.ow, p % d.ow);
        for (xc, rc) in x.chunks_exact(hw).zip(row.chunks_exact_mut(k * k)) {
            for (ky, dst) in rc.chunks_exact_mut(k).enumerate() {
                copy_run::<T, K>(dst, &xc[(oy + ky) * d.w + ox..][..k]);
            }
        }
    }
}

/// The adjoint of [`im2col_rows`]: `dx` is zeroed, then gets each row entry added back to the
/// input pixel it came from. Only the rows of pixels with terms in `start` (row `p` has
/// `start[p]..start[p + 1]`, as `cpu::conv_grad`'s winners by pixel) are read; the others are
/// zero.
pub(crate) fn col2im_rows<T: Real>(d: &Dims, colt: &[T], start: &[usize], dx: &mut [T]) {
    dx.fill(T::ZERO);
    match d.k {
        5 => col2im_rows_k::<T, 5>(d, colt, start, dx),
        3 => col2im_rows_k::<T, 3>(d, colt, start, dx),
        _ => col2im_rows_k::<T, 0>(d, colt, start, dx),
    }
}

/// [`col2im_rows`] after the zeroing, for kernel width `K` (0: `d.k`).
#[inline(always)]
fn col2im_rows_k<T: Real, const K: usize>(d: &Dims, colt: &[T], start: &[usize], dx: &mut [T]) {
    let k = if K == 0 { d.k } else { K };
    let (ckk, hw) = (d.ckk(), d.h * d.w);
    for (p, row) in colt.chunks_exact(ckk).take(d.opix()).enumerate() {
        if start[p + 1] == start[p] {
            continue;
        }
        let (oy, ox) = (p / d.ow, p % d.ow);
        for (xc, rc) in dx.chunks_exact_mut(hw).zip(row.chunks_exact(k * k)) {
            for (ky, src) in rc.chunks_exact(k).enumerate() {
                let dst = &mut xc[(oy + ky) * d.w + ox..][..k];
                for (o, v) in dst.iter_mut().zip(src) {
                    *o += *v;
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

/// Samples per chunk of a backward: [`CHUNK`], or more for big batches so that there are at most
/// 16 chunks. Each chunk holds a whole weight-gradient partial (400 KB for conv2), written and
/// then summed at the end, so a partial per 8 samples made batch 512's backward slower per image
/// than batch 128's. A function of the batch alone, never of the thread count.
fn grad_chunk(batch: usize) -> usize {
    CHUNK.max(batch.div_ceil(16))
}

/// The scaffolding of every conv backward: `body(scratch, s, dx_s, acc_w, acc_b)` runs for each
/// sample `s` (with `dx_s` its slice of `dx` when given), in order within fixed chunks of
/// [`grad_chunk`] samples that run in parallel. Each chunk's `acc_w` and `acc_b` start at zero
/// (empty when `dw` / `db` are not asked for) and the chunks' sums are added in chunk order, so the
/// result does not depend on the thread count. `scratch` makes one job's buffers (per rayon job,
/// not per chunk: fresh buffers cost page faults every step).
#[allow(clippy::type_complexity)]
pub(crate) fn backward_chunks<T: Real, S>(
    batch: usize,
    x_per: usize,
    dw: Option<&mut [T]>,
    db: Option<&mut [T]>,
    dx: Option<&mut [T]>,
    scratch: impl Fn() -> S + Sync + Send,
    body: impl Fn(&mut S, usize, Option<&mut [T]>, &mut [T], &mut [T]) + Sync + Send,
) {
    let chunk = grad_chunk(batch);
    let chunks = batch.div_ceil(chunk);
    let (w_len, b_len) = (
        dw.as_ref().map_or(0, |v| v.len()),
        db.as_ref().map_or(0, |v| v.len()),
    );
    let dx_chunks: Vec<Option<&mut [T]>> = match dx {
        Some(dx) => dx[..batch * x_per]
            .chunks_mut(x_per * chunk)
            .map(Some)
            .collect(),
        None => (0..chunks).map(|_| None).collect(),
    };
    let partials: Vec<(Vec<T>, Vec<T>)> = dx_chunks
        .into_par_iter()
        .enumerate()
        .map_init(scratch, |scr, (ci, mut dxc)| {
            let (mut acc_w, mut acc_b) = (vec![T::ZERO; w_len], vec![T::ZERO; b_len]);
            for s in ci * chunk..batch.min((ci + 1) * chunk) {
                let dxs = dxc
                    .as_deref_mut()
                    .map(|c| &mut c[(s - ci * chunk) * x_per..][..x_per]);
                body(scr, s, dxs, &mut acc_w, &mut acc_b);
            }
            (acc_w, acc_b)
        })
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

/// The conv backward from the whole batch's output gradient `dy [B, C_out, OH, OW]`: `dw` (needs
/// the input `x`), `db`, and `dx` (needs the weights `w`), each only when asked for, through
/// im2col and GEMMs one sample at a time.
#[allow(clippy::too_many_arguments)]
fn backward_with<T: Real>(
    p: &ConvParams,
    dy: &[T],
    x: Option<&[T]>,
    w: Option<&[T]>,
    dw: Option<&mut [T]>,
    db: Option<&mut [T]>,
    dx: Option<&mut [T]>,
) {
    let d = Dims::of(p);
    let (ckk, opix, y_per, x_per) = (d.ckk(), d.opix(), d.y_per(), d.x_per());
    let (want_w, want_b, want_x) = (dw.is_some(), db.is_some(), dx.is_some());
    let col_len = if want_w || want_x { ckk * opix } else { 0 };
    let body =
        |col: &mut Vec<T>, s: usize, dxs: Option<&mut [T]>, acc_w: &mut [T], acc_b: &mut [T]| {
            let dyb = &dy[s * y_per..][..y_per];
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
                    acc_w,
                    ckk as isize,
                    1,
                );
            }
            if let Some(dxs) = dxs {
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
                col2im(&d, col, dxs);
            }
        };
    let batch = p.batch as usize;
    backward_chunks(batch, x_per, dw, db, dx, || vec![T::ZERO; col_len], body);
}

pub fn backward_input<T: Real>(p: &ConvParams, dy: &[T], w: &[T], dx: &mut [T]) {
    backward_with(p, dy, None, Some(w), None, None, Some(dx));
}

pub fn backward_weight<T: Real>(p: &ConvParams, x: &[T], dy: &[T], dw: &mut [T]) {
    backward_with(p, dy, Some(x), None, Some(dw), None, None);
}

pub fn backward_bias<T: Real>(p: &ConvParams, dy: &[T], db: &mut [T]) {
    backward_with(p, dy, None, None, None, Some(db), None);
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
