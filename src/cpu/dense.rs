//! Fully connected layer (`nn.Linear` layout) as GEMMs.

use super::Real;
use crate::params::DenseParams;

fn dims(p: &DenseParams) -> (usize, usize, usize) {
    (p.batch as usize, p.n_in as usize, p.n_out as usize)
}

pub fn forward<T: Real>(p: &DenseParams, x: &[T], w: &[T], bias: &[T], y: &mut [T]) {
    let (b, ni, no) = dims(p);
    for row in y.chunks_mut(no).take(b) {
        row.copy_from_slice(&bias[..no]);
    }
    T::gemm(
        b,
        ni,
        no,
        T::ONE,
        x,
        ni as isize,
        1,
        w,
        1,
        ni as isize,
        T::ONE,
        y,
        no as isize,
        1,
    );
    if p.relu != 0 {
        for v in y.iter_mut() {
            *v = v.max(T::ZERO);
        }
    }
}

pub fn backward_input<T: Real>(p: &DenseParams, dy: &[T], w: &[T], dx: &mut [T]) {
    let (b, ni, no) = dims(p);
    T::gemm(
        b,
        no,
        ni,
        T::ONE,
        dy,
        no as isize,
        1,
        w,
        ni as isize,
        1,
        T::ZERO,
        dx,
        ni as isize,
        1,
    );
}

pub fn backward_weight<T: Real>(p: &DenseParams, x: &[T], dy: &[T], dw: &mut [T]) {
    let (b, ni, no) = dims(p);
    T::gemm(
        no,
        b,
        ni,
        T::ONE,
        dy,
        1,
        no as isize,
        x,
        ni as isize,
        1,
        T::ZERO,
        dw,
        ni as isize,
        1,
    );
}

pub fn backward_bias<T: Real>(p: &DenseParams, dy: &[T], db: &mut [T]) {
    let (_, _, no) = dims(p);
    db.fill(T::ZERO);
    for row in dy.chunks(no).take(p.batch as usize) {
        for (d, v) in db.iter_mut().zip(row) {
            *d += *v;
        }
    }
}

/// CPU twin of `backward_fused`: [`backward_weight`], [`backward_bias`] and [`backward_input`]
/// of one layer (the GPU runs them as workgroup roles of one dispatch).
pub fn backward_fused<T: Real>(
    p: &DenseParams,
    x: &[T],
    dy: &[T],
    w: &[T],
    dw: &mut [T],
    db: &mut [T],
    dx: &mut [T],
) {
    backward_weight(p, x, dy, dw);
    backward_bias(p, dy, db);
    backward_input(p, dy, w, dx);
}
