//! The float trait the CPU ops are written against, with GEMM through the `gemm` crate (runtime-
//! dispatched AVX-512 / AVX2+FMA / NEON / scalar kernels for f32 and f64).

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

pub trait Real:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(v: f64) -> Self;
    fn from_f32(v: f32) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn powi(self, n: i32) -> Self;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
    /// `self * a + b` with one rounding (IEEE fused multiply-add: the same bits whether the CPU
    /// has an FMA instruction or the library computes it).
    fn mul_add(self, a: Self, b: Self) -> Self;

    /// `C = alpha * op(A) * op(B) + beta * C`, row-major with explicit strides:
    /// `a` is `m x k` with row stride `rsa` and column stride `csa`, and so on.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: &[Self],
        rsa: isize,
        csa: isize,
        b: &[Self],
        rsb: isize,
        csb: isize,
        beta: Self,
        c: &mut [Self],
        rsc: isize,
        csc: isize,
    );
}

macro_rules! impl_real {
    ($t:ty) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn powi(self, n: i32) -> Self {
                <$t>::powi(self, n)
            }
            fn max(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            fn min(self, o: Self) -> Self {
                <$t>::min(self, o)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: &[Self],
                rsa: isize,
                csa: isize,
                b: &[Self],
                rsb: isize,
                csb: isize,
                beta: Self,
                c: &mut [Self],
                rsc: isize,
                csc: isize,
            ) {
                if m == 0 || n == 0 {
                    return;
                }
                // Bounds are checked here once so the unsafe call below cannot read or write
                // outside the slices.
                let last = |rows: usize, cols: usize, rs: isize, cs: isize| {
                    (rows.saturating_sub(1) as isize * rs + cols.saturating_sub(1) as isize * cs)
                        as usize
                };
                assert!(
                    rsa >= 0 && csa >= 0 && rsb >= 0 && csb >= 0 && rsc >= 0 && csc >= 0,
                    "gemm: negative stride"
                );
                if k > 0 {
                    assert!(last(m, k, rsa, csa) < a.len(), "gemm: A too short");
                    assert!(last(k, n, rsb, csb) < b.len(), "gemm: B too short");
                }
                assert!(last(m, n, rsc, csc) < c.len(), "gemm: C too short");
                // `gemm` computes `dst := alpha * dst + beta * lhs * rhs` (its alpha and beta
                // are the other way round from BLAS) and takes column strides first. With
                // `read_dst == false` C is not read, so a NaN already there does not leak in,
                // as with BLAS's beta = 0. `Parallelism::None`: the callers parallelise over
                // fixed batch chunks themselves, so results never depend on the thread count.
                // SAFETY: all strides are non-negative and every index was bounds-checked above.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        csc,
                        rsc,
                        beta != 0.0,
                        a.as_ptr(),
                        csa,
                        rsa,
                        b.as_ptr(),
                        csb,
                        rsb,
                        beta,
                        alpha,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            }
        }
    };
}

impl_real!(f32);
impl_real!(f64);
