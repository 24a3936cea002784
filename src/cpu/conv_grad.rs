//! CPU twin of `shaders/conv_grad.wgsl`: the conv backward with the pool, ReLU and dropout
//! backward folded in, composed of the unfused CPU ops it replaces.
//!
//! [`conv_output_grad`] rebuilds the conv-output gradient from the pooled map, its argmax and the
//! incoming gradient by the same index formula as the shader's loaders; it equals
//! `act::dropout_backward` followed by `pool::maxpool_backward` on the full-resolution activation
//! bit for bit (ReLU' at the winner is `q > 0`), which `tests/cpu_reference.rs` checks. The
//! fused ops never build it: per sample they list its window winners (at most one entry in four
//! can be non-zero) and do the backward's sums over those alone, which agrees with the unfused
//! chain to rounding (`tests/cpu_reference.rs` checks both, f32 and f64).

use super::Real;
use super::act::dropout_keep;
use super::conv;
use crate::params::{ActParams, ConvGradParams};

/// `dy [B, C_out, OH, OW]`: `g[i]` at the window winner when `q[i] > 0`, else 0 (see
/// [`ConvGradParams`]); `step` is the dropout mask's `StepState.t`. The fused ops below never
/// build it: they work from each sample's [`Winners`], which this writes out.
pub fn conv_output_grad<T: Real>(
    p: &ConvGradParams,
    step: u32,
    argmax: &[u32],
    q: &[T],
    dd: &[T],
) -> Vec<T> {
    let (opix, c_out) = ((p.oh * p.ow) as usize, p.c_out as usize);
    let drop = p.drop();
    let mut win = Winners::default();
    let mut dy = vec![T::ZERO; p.batch as usize * c_out * opix];
    for (s, dyb) in dy.chunks_mut(c_out * opix).enumerate() {
        sample_winners(p, drop.as_ref(), step, s, argmax, q, dd, &mut win);
        for (o, plane) in dyb.chunks_mut(opix).enumerate() {
            for t in win.start[o]..win.start[o + 1] {
                plane[win.pix[t] as usize] = win.g[t];
            }
        }
    }
    dy
}

/// The conv-output gradient entries of one sample that can be non-zero, by output channel:
/// channel `o` owns `pix[start[o]..start[o + 1]]` (its window winners with a positive value that
/// dropout kept, in pooled order) and the same range of `g`. That is at most one entry in four
/// (one winner per 2x2 window), fewer after the ReLU and dropout, so the backward
/// works on these lists instead of the dense gradient.
#[derive(Default)]
struct Winners<T> {
    start: Vec<usize>,
    pix: Vec<u32>,
    g: Vec<T>,
}

impl<T: Real> Winners<T> {
    /// The same lists by output pixel instead (`pix` then holds channels), channels in order.
    fn by_pixel(&self, opix: usize, out: &mut Winners<T>) {
        let n = self.pix.len();
        // Counting sort. `start[a + 1]` first counts pixel `a`, then becomes the cursor where its
        // entries go (their first slot); after placing them it is where they end, `start`'s
        // meaning.
        out.start.clear();
        out.start.resize(opix + 1, 0);
        for &a in &self.pix {
            out.start[a as usize + 1] += 1;
        }
        let mut first = 0;
        for c in &mut out.start[1..] {
            (*c, first) = (first, first + *c);
        }
        out.pix.clear();
        out.pix.resize(n, 0);
        out.g.clear();
        out.g.resize(n, T::ZERO);
        for o in 0..self.start.len() - 1 {
            for t in self.start[o]..self.start[o + 1] {
                let slot = &mut out.start[self.pix[t] as usize + 1];
                out.pix[*slot] = o as u32;
                out.g[*slot] = self.g[t];
                *slot += 1;
            }
        }
    }
}

/// The winners of sample `s` ([`conv_output_grad`] writes them out into dense planes).
#[allow(clippy::too_many_arguments)]
fn sample_winners<T: Real>(
    p: &ConvGradParams,
    drop: Option<&ActParams>,
    step: u32,
    s: usize,
    argmax: &[u32],
    q: &[T],
    dd: &[T],
    out: &mut Winners<T>,
) {
    let (ow, ph, pw) = (p.ow as usize, p.ph as usize, p.pw as usize);
    let c_out = p.c_out as usize;
    let scale = T::from_f32(p.scale);
    // Branch-free compaction: every pooled entry is written at the cursor, which only moves on
    // for a winner. About half the entries pass the ReLU, in no pattern a branch predictor
    // could learn, so a branch per entry cost more than the writes.
    let planes = ph * pw;
    // Resized, not cleared: only the slots past the last call's winners are filled anew.
    out.start.clear();
    out.pix.resize(c_out * planes, 0);
    out.g.resize(c_out * planes, T::ZERO);
    let mut len = 0;
    for o in 0..c_out {
        out.start.push(len);
        let pl = s * c_out + o;
        for py in 0..ph {
            for px in 0..pw {
                let i = pl * planes + py * pw + px;
                // ReLU' at the winner; NaN passes nothing, as in the shader.
                let positive = q[i] > T::ZERO;
                let (keep, g) = match drop {
                    Some(d) => (dropout_keep(d, step, i as u32), dd[i] * scale),
                    None => (true, dd[i]),
                };
                // The forward's argmax always lies inside its window; a corrupt one is ignored
                // rather than written elsewhere, as the shader (which compares, never scatters)
                // does. Inside the window means an offset of 0, 1, OW or OW + 1 from its top-left
                // pixel, which needs no division.
                let a = argmax[i] as usize;
                let off = a.wrapping_sub(2 * py * ow + 2 * px);
                let inside = (off == 0) | (off == 1) | (off == ow) | (off == ow + 1);
                out.pix[len] = a as u32;
                out.g[len] = g;
                len += (positive & keep & inside) as usize;
            }
        }
    }
    out.pix.truncate(len);
    out.g.truncate(len);
    out.start.push(len);
}

/// The conv backward of `p`'s conv from each sample's [`Winners`], the outputs asked for:
/// `db` sums the winners' gradients; `dw[o, :] += g colt[pixel, :]` and
/// `dcolt[pixel, :] += g w[o, :]` over the winners ([`gather_add`] on `conv::im2col_rows`'s
/// layout), then `conv::col2im_rows` takes `dcolt` back onto the input. It does the dense
/// backward's sums over the entries that can be non-zero only, in another order, so it agrees
/// with the unfused chain to rounding (`tests/cpu_reference.rs`), not bit for bit.
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
    let c = p.conv();
    let d = conv::Dims::of(&c);
    let (ckk, opix, x_per) = (d.ckk(), d.opix(), d.x_per());
    let drop = p.drop();
    let (want_w, want_x) = (dw.is_some(), dx.is_some());
    let scratch = || {
        let (cols, dcols) = (
            if want_w { opix * ckk } else { 0 },
            if want_x { opix * ckk } else { 0 },
        );
        let (win, by_pixel) = (Winners::<T>::default(), Winners::<T>::default());
        (win, by_pixel, vec![T::ZERO; cols], vec![T::ZERO; dcols])
    };
    type Scratch<T> = (Winners<T>, Winners<T>, Vec<T>, Vec<T>);
    let body = |scr: &mut Scratch<T>,
                s: usize,
                dxs: Option<&mut [T]>,
                acc_w: &mut [T],
                acc_b: &mut [T]| {
        let (win, by_pixel, colt, dcolt) = scr;
        sample_winners(p, drop.as_ref(), step, s, argmax, q, dd, win);
        for (o, a) in acc_b.iter_mut().enumerate() {
            for &g in &win.g[win.start[o]..win.start[o + 1]] {
                *a += g;
            }
        }
        if want_w {
            let x = x.expect("conv_grad: dw needs x");
            conv::im2col_rows(&d, &x[s * x_per..][..x_per], colt);
            gather_add(acc_w, colt, ckk, &win.start, &win.pix, &win.g);
        }
        if let Some(dxs) = dxs {
            let w = w.expect("conv_grad: dx needs w");
            win.by_pixel(opix, by_pixel);
            dcolt.fill(T::ZERO);
            gather_add(dcolt, w, ckk, &by_pixel.start, &by_pixel.pix, &by_pixel.g);
            conv::col2im_rows(&d, dcolt, &by_pixel.start, dxs);
        }
    };
    conv::backward_chunks(p.batch as usize, x_per, dw, db, dx, scratch, body);
}

/// Columns per block of [`gather_add`]: a block of every row it reads (64 rows of 64 floats,
/// 16 KiB in f32) and of every row it writes stay in L1 while all rows are visited.
const BLOCK: usize = 64;

/// `acc[r, :] += sum_t g[t] * rows[idx[t], :]` for every row `r`, `t` over
/// `start[r]..start[r + 1]` in order; rows are `width` long. Each term is one fused multiply-add
/// (one rounding, as in the GEMM kernels), so the AVX-512, AVX2 and plain builds of it give the
/// same bits; the plain one computes it in software where the CPU has no FMA.
pub(crate) fn gather_add<T: Real>(
    acc: &mut [T],
    rows: &[T],
    width: usize,
    start: &[usize],
    idx: &[u32],
    g: &[T],
) {
    #[cfg(target_arch = "x86_64")]
    {
        let fma = std::arch::is_x86_feature_detected!("fma");
        if fma && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F and FMA (checked just above).
            return unsafe { gather_add_avx512(acc, rows, width, start, idx, g) };
        }
        if fma && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { gather_add_avx2(acc, rows, width, start, idx, g) };
        }
    }
    gather_add_body(acc, rows, width, start, idx, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn gather_add_avx512<T: Real>(
    acc: &mut [T],
    rows: &[T],
    width: usize,
    start: &[usize],
    idx: &[u32],
    g: &[T],
) {
    gather_add_body(acc, rows, width, start, idx, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gather_add_avx2<T: Real>(
    acc: &mut [T],
    rows: &[T],
    width: usize,
    start: &[usize],
    idx: &[u32],
    g: &[T],
) {
    gather_add_body(acc, rows, width, start, idx, g)
}

/// The loops of [`gather_add`], inlined into each ISA's copy so the compiler vectorises them
/// for it: the block's accumulators are a fixed-size array it keeps in registers.
#[inline(always)]
fn gather_add_body<T: Real>(
    acc: &mut [T],
    rows: &[T],
    width: usize,
    start: &[usize],
    idx: &[u32],
    g: &[T],
) {
    let nrows = start.len() - 1;
    let mut c0 = 0;
    while c0 < width {
        let bw = BLOCK.min(width - c0);
        for r in 0..nrows {
            let dst = &mut acc[r * width + c0..][..bw];
            let (terms, gains) = (&idx[start[r]..start[r + 1]], &g[start[r]..start[r + 1]]);
            // The block's accumulators as a fixed-size array the compiler keeps in registers:
            // full blocks, and the whole row of a 5x5 or 3x3 kernel over one channel (conv1).
            match bw {
                BLOCK => add_block::<T, BLOCK>(dst, rows, width, c0, terms, gains),
                25 => add_block::<T, 25>(dst, rows, width, c0, terms, gains),
                9 => add_block::<T, 9>(dst, rows, width, c0, terms, gains),
                _ => {
                    for (&i, &gv) in terms.iter().zip(gains) {
                        let src = &rows[i as usize * width + c0..][..bw];
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = gv.mul_add(*s, *d);
                        }
                    }
                }
            }
        }
        c0 += BLOCK;
    }
}

/// One block of `N` columns of one row of [`gather_add`]: `dst += sum_t gains[t] *
/// rows[terms[t], c0..c0 + N]`.
#[inline(always)]
fn add_block<T: Real, const N: usize>(
    dst: &mut [T],
    rows: &[T],
    width: usize,
    c0: usize,
    terms: &[u32],
    gains: &[T],
) {
    let dst: &mut [T; N] = dst.try_into().expect("block");
    let mut a = *dst;
    for (&i, &gv) in terms.iter().zip(gains) {
        let src: &[T; N] = rows[i as usize * width + c0..][..N]
            .try_into()
            .expect("block");
        for e in 0..N {
            a[e] = gv.mul_add(src[e], a[e]);
        }
    }
    *dst = a;
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
