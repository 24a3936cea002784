//! The machine's f32 FMA peak, for BENCHMARKS.md's "achieved against peak" figures:
//! `cargo run --release --example fma_peak`. Twelve independent accumulators per thread (more
//! than the FMA latency times the FMA ports), AVX-512 and AVX2, on one thread and on every core.

use std::time::Instant;

const ITERS: usize = 200_000_000;
const ACC: usize = 12;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn run512(n: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); ACC];
    let (a, b) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(0.999_999_9));
    for _ in 0..n {
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(*r, a, b);
        }
    }
    acc.iter().map(|&r| _mm512_reduce_add_ps(r)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run256(n: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); ACC];
    let (a, b) = (_mm256_set1_ps(1.000_000_1), _mm256_set1_ps(0.999_999_9));
    for _ in 0..n {
        for r in acc.iter_mut() {
            *r = _mm256_fmadd_ps(*r, a, b);
        }
    }
    let mut lanes = [0.0f32; 8];
    let mut s = 0.0;
    for r in acc {
        // SAFETY: `lanes` holds the 8 floats the store writes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), r) };
        s += lanes.iter().sum::<f32>();
    }
    s
}

#[cfg(target_arch = "x86_64")]
fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let gflops = |lanes: usize, threads: usize, secs: f64| {
        (threads * ITERS * ACC * lanes * 2) as f64 / secs / 1e9
    };
    let time = |f: fn(usize) -> f32, threads: usize| {
        let t = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|_| std::thread::spawn(move || f(ITERS)))
            .collect();
        let sum: f32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        std::hint::black_box(sum);
        t.elapsed().as_secs_f64()
    };
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    let avx2 =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    for t in [1, threads] {
        if avx512 {
            // SAFETY: AVX-512F was detected above.
            let secs = time(|n| unsafe { run512(n) }, t);
            println!(
                "AVX-512 FMA, {t} thread(s): {:.1} GFLOP/s",
                gflops(16, t, secs)
            );
        }
        if avx2 {
            // SAFETY: AVX2 and FMA were detected above.
            let secs = time(|n| unsafe { run256(n) }, t);
            println!("AVX2 FMA, {t} thread(s): {:.1} GFLOP/s", gflops(8, t, secs));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("fma_peak measures x86_64 only");
}
