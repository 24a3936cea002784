//! CPU twin of `shaders/reduce.wgsl`: the fixed-order second pass of split reductions.

use super::Real;
use crate::params::ReduceParams;

/// `out[i] = partials[0*n + i] + partials[1*n + i] + ...`, added in increasing part order like the
/// shader, so both sides round the same way.
pub fn sum_partials<T: Real>(p: &ReduceParams, partials: &[T], out: &mut [T]) {
    let n = p.n as usize;
    for (i, o) in out[..n].iter_mut().enumerate() {
        let mut s = T::ZERO;
        for part in 0..p.parts as usize {
            s += partials[part * n + i];
        }
        *o = s;
    }
}
