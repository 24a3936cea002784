//! `fmnist-gpu parity` without `--fixture` (the kernel table, SPEC 8 and 10) through the built
//! binary: exit codes, and a JSON document that lists every entry point of every family.
//!
//! The GPU run skips with a visible message when there is no Vulkan adapter (fails instead with
//! FMNIST_REQUIRE_GPU=1).

mod common;

use fmnist_gpu::gpu::select::{AdapterKind, BackendArg, list_adapters};
use std::process::Output;

/// Every `@compute` entry point of `shaders/*.wgsl` as `family.entry`, read from the sources, so
/// a new kernel without a table case fails here.
fn entry_points() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("shaders dir") {
        let path = e.expect("dir entry").path();
        if path.extension().and_then(|x| x.to_str()) != Some("wgsl") {
            continue;
        }
        let family = path.file_stem().unwrap().to_str().unwrap().to_string();
        let src = std::fs::read_to_string(&path).expect("read shader");
        let mut compute = false;
        for line in src.lines().map(str::trim) {
            if line.starts_with("@compute") {
                compute = true;
            }
            match line.strip_prefix("fn ") {
                Some(rest) if compute => {
                    let name = rest.split('(').next().unwrap().trim();
                    out.push(format!("{family}.{name}"));
                    compute = false;
                }
                _ => {}
            }
        }
    }
    out.sort();
    assert!(out.len() >= 20, "{out:?}");
    out
}

fn fmnist(args: &[&str]) -> Output {
    common::bin()
        .args(args)
        .env_remove("WGPU_ADAPTER_NAME")
        .output()
        .expect("run fmnist-gpu")
}

/// `--adapter` value for the run: the software adapter (lavapipe in CI) when there is one, else
/// any; `None` after a visible SKIPPED message when Vulkan has no adapter at all.
fn adapter_arg(test: &str) -> Option<&'static str> {
    let list = list_adapters(Some(BackendArg::Vulkan));
    if list.entries.iter().any(|e| e.kind == AdapterKind::Software) {
        return Some("software");
    }
    if !list.entries.is_empty() {
        return Some("any");
    }
    if std::env::var("FMNIST_REQUIRE_GPU").as_deref() == Ok("1") {
        panic!("FMNIST_REQUIRE_GPU=1 but no Vulkan adapter was found");
    }
    eprintln!(
        "SKIPPED {test}: no Vulkan adapter found; set FMNIST_REQUIRE_GPU=1 to make this a failure"
    );
    None
}

#[test]
fn kernel_table_json_lists_every_kernel_and_passes() {
    let Some(adapter) = adapter_arg("kernel_table_json_lists_every_kernel_and_passes") else {
        return;
    };
    let out = fmnist(&["parity", "--adapter", adapter, "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "exit status {:?}\nstderr:\n{stderr}",
        out.status
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stdout}"));
    assert_eq!(doc["passed"], true);
    assert_eq!(doc["failed_outputs"], 0);
    assert!(doc["adapter"]["name"].is_string());
    let kernels = doc["kernels"].as_array().expect("kernels array");
    let rows = doc["rows"].as_array().expect("rows array");
    let entry_points = entry_points();
    for k in &entry_points {
        let s = kernels
            .iter()
            .find(|s| s["kernel"] == k.as_str())
            .unwrap_or_else(|| panic!("{k} missing from kernels"));
        assert_eq!(s["ok"], true, "{k}");
        assert!(s["cases"].as_u64().unwrap_or(0) >= 2, "{k}: {s}");
        let shapes: std::collections::BTreeSet<&str> = rows
            .iter()
            .filter(|r| r["kernel"] == k.as_str())
            .filter_map(|r| r["shape"].as_str())
            .collect();
        assert!(shapes.len() >= 2, "{k}: shapes {shapes:?}");
    }
    assert_eq!(kernels.len(), entry_points.len());
    for r in rows {
        assert_eq!(r["ok"], true, "{r}");
        assert!(r["values"].as_u64().unwrap_or(0) > 0, "{r}");
        assert!(r["worst_abs"].is_number(), "{r}");
        assert!(r["worst_rel"].is_number(), "{r}");
        assert!(r["tol"]["kind"].is_string(), "{r}");
    }
}

#[test]
fn kernel_table_text_ends_with_a_summary() {
    let Some(adapter) = adapter_arg("kernel_table_text_ends_with_a_summary") else {
        return;
    };
    let out = fmnist(&["parity", "--adapter", adapter]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for k in entry_points() {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&k) && l.ends_with(" ok")),
            "{k} has no ok line"
        );
    }
    assert!(!stdout.contains("FAIL"));
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.contains("outputs within tolerance"), "{last}");
}

/// The table compares the GPU against the CPU: on the CPU there is nothing to compare, which is
/// a bad request (exit 2) that says how to get a GPU run, not a silent pass.
#[test]
fn kernel_table_on_the_cpu_is_a_bad_request() {
    let out = fmnist(&["parity", "--device", "cpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("needs a GPU adapter"), "{stderr}");
    assert!(stderr.contains("--adapter software"), "{stderr}");
    assert!(out.stdout.is_empty());
}
