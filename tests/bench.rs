//! Benchmarks (SPEC 12): the FLOP model against the figures SPEC gives, and `fmnist-gpu bench
//! --json` on the CPU backend and on a GPU adapter (lavapipe in CI). Nothing here asserts a
//! speed: only that the reports are well formed and internally consistent.

use fmnist_gpu::bench::{forward_flops, gemm_flops, kernel_work, train_flops};
use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::model::Layers;
use fmnist_gpu::optim::{OptimConfig, OptimizerKind};
use serde_json::Value;
use std::process::Command;

fn layers(batch: u32) -> Layers {
    Layers::new(batch, 128, 0.4, 7)
}

/// `x` in `unit`s, rounded to `decimals` places as SPEC prints it.
fn rounded(x: f64, unit: f64, decimals: i32) -> f64 {
    let s = 10f64.powi(decimals);
    (x / unit * s).round() / s
}

#[test]
fn flops_per_image_match_spec_12() {
    for batch in [1, 128, 512] {
        let l = layers(batch);
        let per_image = train_flops(&l) / batch as f64;
        let fwd = forward_flops(&l) / batch as f64;
        // SPEC 12: 43.8 MFLOP per training image, forward 15.2, 2.63 TFLOP per 60,000 images.
        assert_eq!(rounded(per_image, 1e6, 1), 43.8, "{per_image}");
        assert_eq!(rounded(fwd, 1e6, 1), 15.2, "{fwd}");
        assert_eq!(rounded(60_000.0 * per_image, 1e12, 2), 2.63);
        // The forward part agrees with the model's own count.
        assert_eq!(fwd, l.flops_per_image());
    }
    // Exact values, from 2*M*N*K by hand: conv1 2*576*64*25, conv2 2*64*64*1600, fc1 2*1024*128,
    // fc2 2*128*10; training = forward + every backward_weight + the backward_inputs of conv2,
    // fc1 and fc2 (conv1's input is the image: no gradient).
    let (c1, c2, f1, f2) = (1_843_200.0, 13_107_200.0, 262_144.0, 2_560.0);
    let l = layers(1);
    assert_eq!(forward_flops(&l), c1 + c2 + f1 + f2);
    assert_eq!(train_flops(&l), 2.0 * (c1 + c2 + f1 + f2) + c2 + f1 + f2);
    assert_eq!(gemm_flops(&l).len(), 11);
}

#[test]
fn every_step_kernel_has_work() {
    let l = layers(64);
    let wame = OptimConfig::defaults(OptimizerKind::Wame);
    for (name, flops) in gemm_flops(&l) {
        let w = kernel_work(name, &l, &wame).expect(name);
        assert_eq!(w.flops, flops);
        assert!(w.bytes > 0.0, "{name}");
    }
    for name in ["head", "fc1.backward", "conv2.backward"] {
        let w = kernel_work(name, &l, &wame).expect(name);
        assert!(w.bytes > 0.0 && w.flops > 0.0, "{name}: {w:?}");
    }
    for name in [
        "gather",
        "pool1.forward",
        "pool2.backward",
        "dropout.forward",
        "loss.backward",
        "fc1.relu_backward",
        "conv1.backward_bias",
        "conv1.backward_weight_reduce",
        "wame.fc1.weight",
        "advance",
    ] {
        let w = kernel_work(name, &l, &wame).expect(name);
        assert!(w.bytes > 0.0 && w.flops == 0.0, "{name}: {w:?}");
    }
    // WAME reads w, g and 4 state floats and writes w and the state: 11 floats per weight.
    let fc1 = kernel_work("wame.fc1.weight", &l, &wame).unwrap();
    assert_eq!(fc1.bytes, 4.0 * 11.0 * 128.0 * 1024.0);
    assert!(kernel_work("adam.fc1.weight", &l, &wame).is_none());
    assert!(kernel_work("conv3.forward", &l, &wame).is_none());
}

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fmnist-gpu"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run fmnist-gpu")
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// Checks one `bench --json` report of batch sizes `batches` and returns it.
fn check_report(out: std::process::Output, device: &str, batches: &[u32]) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}); stderr: {stderr}"));
    assert_eq!(r["device"], device);
    assert!(r["data"].as_str().unwrap().starts_with("synthetic"));
    let per_image = num(&r["network"], "train_flops_per_image");
    assert_eq!((per_image / 1e5).round() / 10.0, 43.8);
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), batches.len());
    for (rec, &b) in results.iter().zip(batches) {
        assert_eq!(rec["batch_size"], b);
        // Every record names its adapter.
        for key in ["name", "backend", "driver"] {
            let s = rec["adapter"][key].as_str().unwrap_or("");
            assert!(!s.is_empty(), "adapter.{key} missing in {rec}");
        }
        assert_eq!(rec["throughput_clock"], "wall_clock");
        for key in [
            "images_per_second",
            "step_seconds",
            "achieved_gflops",
            "kernel_sum_seconds",
        ] {
            let v = num(rec, key);
            assert!(v.is_finite() && v > 0.0, "{key} = {v}");
        }
        let windows = rec["window_images_per_second"].as_array().unwrap();
        assert_eq!(windows.len() as u64, rec["windows"].as_u64().unwrap());
        assert!(windows.iter().all(|w| w.as_f64().unwrap() > 0.0));
        let best = windows
            .iter()
            .map(|w| w.as_f64().unwrap())
            .fold(0.0, f64::max);
        assert_eq!(num(rec, "best_images_per_second"), best);
        assert!(best >= num(rec, "images_per_second"));
        let kernels = rec["kernels"].as_array().unwrap();
        // On the GPU, one row per dispatch of the fused step (issue 12: at most 10).
        if let Some(dispatches) = rec["dispatches_per_step"].as_u64() {
            assert_eq!(kernels.len() as u64, dispatches);
            assert!(dispatches <= 10, "{dispatches} dispatches a step");
        } else {
            // The CPU step: the fused twins of the GPU step, then one row per optimizer tensor.
            let ops: Vec<&str> = kernels
                .iter()
                .map(|k| k["name"].as_str().unwrap())
                .collect();
            let fused = [
                "gather",
                "conv1.forward",
                "conv2.forward",
                "fc1.forward",
                "head",
                "fc1.backward",
                "conv2.backward",
                "conv1.backward_weight",
            ];
            assert_eq!(ops[..fused.len()], fused, "CPU step ops");
            assert_eq!(ops.len(), fused.len() + 8, "{ops:?}");
        }
        let mut names = std::collections::HashSet::new();
        let (mut share, mut seconds, mut flops) = (0.0, 0.0, 0.0);
        for k in kernels {
            let name = k["name"].as_str().unwrap();
            assert!(names.insert(name.to_string()), "{name} twice");
            assert!(!k["bound"].is_null(), "{name}: no work model");
            let s = num(k, "seconds");
            assert!(s.is_finite() && s >= 0.0, "{name}: {s}");
            share += num(k, "share");
            seconds += s;
            flops += num(k, "flops");
        }
        assert!((share - 1.0).abs() < 1e-6, "shares sum to {share}");
        assert!((seconds - num(rec, "kernel_sum_seconds")).abs() <= 1e-9 * seconds.max(1.0));
        // Every GEMM of the step was found and named: the kernels' FLOPs add up to the model's.
        assert_eq!(flops, num(rec, "flops_per_step"));
        assert_eq!(flops / b as f64, per_image);
    }
    r
}

#[test]
fn cpu_bench_json() {
    let out = bench(&[
        "--device",
        "cpu",
        "--batch-sizes",
        "8",
        "--steps",
        "2",
        "--windows",
        "2",
        "--warmup",
        "1",
        "--json",
    ]);
    let r = check_report(out, "cpu", &[8]);
    let rec = &r["results"][0];
    assert_eq!(rec["adapter"]["backend"], "cpu");
    assert_eq!(rec["kernel_clock"], "wall_clock");
    assert!(rec["step_pass_seconds"].is_null());
}

#[test]
fn gpu_bench_json() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    // The adapter the other GPU tests use: lavapipe by kind, any other by its name.
    let adapter = if ctx.adapter.device_type == "Cpu" {
        "software".to_string()
    } else {
        ctx.adapter.name.clone()
    };
    drop(ctx);
    let out = bench(&[
        "--adapter",
        &adapter,
        "--batch-sizes",
        "4,8",
        "--steps",
        "2",
        "--windows",
        "2",
        "--warmup",
        "1",
        "--json",
    ]);
    let r = check_report(out, "gpu", &[4, 8]);
    for rec in r["results"].as_array().unwrap() {
        let clock = rec["kernel_clock"].as_str().unwrap();
        assert!(
            clock == "timestamp_query" || clock == "wall_clock",
            "{clock}"
        );
        assert_eq!(rec["step_pass_clock"], rec["kernel_clock"]);
        assert!(rec["dispatches_per_step"].as_u64().is_some(), "{rec}");
        assert!(rec["steps_per_submit"].as_u64().unwrap_or(0) >= 1, "{rec}");
        let pass = num(rec, "step_pass_seconds");
        assert!(pass.is_finite() && pass > 0.0, "{pass}");
        // The step list names a kernel for each dispatch, optimizer included.
        let kernels = rec["kernels"].as_array().unwrap();
        let has = |n: &str| kernels.iter().any(|k| k["name"] == n);
        for n in [
            "gather",
            "conv2.forward",
            "conv2.backward",
            "conv1.backward_weight",
            "wame.update",
            "advance",
        ] {
            assert!(has(n), "{n} missing");
        }
    }
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["--device", "cpu", "--batch-sizes", "0"][..],
        &["--device", "cpu", "--steps", "0"],
        &["--device", "cpu", "--batch-sizes", "8,x"],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
    }
}
