//! Helpers shared by the integration tests: synthetic data, the GPU-or-skip context, and the
//! kernel-table cases (`fmnist_gpu::parity`) run with the worst entries on failure.
#![allow(dead_code)]

use fmnist_gpu::data::DataSet;
use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::net::NetData;
use fmnist_gpu::parity::{self, Case, KernelRow};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// `n` random 28x28 images with random labels; blobs of brightness so convs see structure.
pub fn synthetic(n: usize, seed: u64) -> DataSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let labels: Vec<u8> = (0..n).map(|_| rng.random_range(0..10u8)).collect();
    let mut images = vec![0u8; n * 784];
    for (i, img) in images.chunks_mut(784).enumerate() {
        let (cy, cx) = (4 + labels[i] as usize * 2, 6 + labels[i] as usize);
        for (p, v) in img.iter_mut().enumerate() {
            let (y, x) = (p / 28, p % 28);
            let d = y.abs_diff(cy) + x.abs_diff(cx);
            let base = if d < 6 { 200 } else { 20 };
            *v = (base + rng.random_range(0..50u32)) as u8;
        }
    }
    DataSet {
        images,
        labels,
        n,
        rows: 28,
        cols: 28,
    }
}

pub fn net_data(train: DataSet, test: DataSet) -> NetData {
    NetData {
        train: Arc::new(train),
        test: Arc::new(test),
    }
}

/// Where the real data is, if installed.
pub fn real_data() -> Option<std::path::PathBuf> {
    let d = std::path::PathBuf::from(fmnist_gpu::data::SYSTEM_DIR);
    if fmnist_gpu::data::has_data(&d) {
        Some(d)
    } else {
        eprintln!(
            "SKIPPED: Fashion-MNIST is not installed at {} (apt-get install dataset-fashion-mnist)",
            d.display()
        );
        None
    }
}

/// The binary, with the Vulkan backend chosen as CI does.
pub fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fmnist-gpu"));
    c.env("WGPU_BACKEND", "vulkan");
    c
}

/// True when a GPU adapter exists; else prints a skip line, or panics under FMNIST_REQUIRE_GPU=1.
pub fn have_gpu() -> bool {
    fmnist_gpu::gpu::GpuContext::for_tests().is_some()
}

/// The test adapter (lavapipe in CI), or `None` after a visible SKIPPED message.
pub fn ctx() -> Option<GpuContext> {
    let c = GpuContext::for_tests();
    if let Some(c) = &c {
        eprintln!("adapter: {} ({})", c.adapter.name, c.adapter.backend);
    }
    c
}

/// Runs `cases`, prints their rows, and panics with the worst entries of every failing output.
#[track_caller]
pub fn run_checked(ctx: &GpuContext, cases: &[Case]) -> Vec<KernelRow> {
    assert!(!cases.is_empty(), "no cases to run");
    let rows = parity::run_cases(ctx, cases).expect("GPU run");
    print!("{}", parity::format_rows(&rows));
    if let Some(report) = parity::failure_report(&rows) {
        panic!("{report}");
    }
    assert!(rows.len() >= cases.len(), "a case produced no rows");
    rows
}

/// The table's cases of one entry point, run and checked; at least two shapes each.
#[track_caller]
pub fn check_kernel(ctx: &GpuContext, kernel: &str) -> Vec<KernelRow> {
    let cases = parity::cases_for(kernel);
    assert!(cases.len() >= 2, "{kernel}: only {} case(s)", cases.len());
    let rows = run_checked(ctx, &cases);
    assert!(rows.iter().all(|r| r.kernel == kernel));
    rows
}

/// Every case of a reduction kernel also ran twice and got the same bits (SPEC 4).
#[track_caller]
pub fn assert_reruns(rows: &[KernelRow]) {
    let firsts = rows
        .iter()
        .filter(|r| !r.output.ends_with(" rerun") && !r.output.starts_with(parity::SKIPPED))
        .count();
    let reruns = rows.iter().filter(|r| r.output.ends_with(" rerun")).count();
    assert!(
        firsts > 0 && reruns == firsts,
        "{firsts} outputs, {reruns} reruns"
    );
}
