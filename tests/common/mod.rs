//! Shared by the GPU test files: run kernel-table cases (`fmnist_gpu::parity`) and fail with the
//! worst entries when any output is out of tolerance.

#![allow(dead_code)]

use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::parity::{self, Case, KernelRow};

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
        .filter(|r| !r.output.ends_with(" rerun"))
        .count();
    let reruns = rows.iter().filter(|r| r.output.ends_with(" rerun")).count();
    assert!(
        firsts > 0 && reruns == firsts,
        "{firsts} outputs, {reruns} reruns"
    );
}
