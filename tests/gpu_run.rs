//! The training loop on the GPU net (lavapipe in CI): a resumed run ends bit-identical to an
//! uninterrupted one, the saved model re-evaluates to the summary's test accuracy, and divergence
//! names its epoch and step range. Synthetic data keeps it to a few hundred images.

mod common;

use fmnist_gpu::checkpoint::load_model;
use fmnist_gpu::data::{DataSet, split};
use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::model::Params;
use fmnist_gpu::net::{NetData, Which, gpu::GpuNet};
use fmnist_gpu::optim::{OptimConfig, OptimizerKind};
use fmnist_gpu::train::{LrSchedule, RunConfig, TrainPlan, evaluate_report, rates, train};
use std::path::Path;

fn config(epochs: usize) -> RunConfig {
    RunConfig {
        data: "synthetic".into(),
        epochs,
        batch_size: 16,
        optimizer: OptimConfig::defaults(OptimizerKind::Wame),
        // The rate changes after epoch 1, so the resumed net must rebuild its update uniforms.
        lr_schedule: LrSchedule::Step,
        hidden: 32,
        dropout: 0.4,
        val_fraction: 0.25,
        limit: None,
        augment: true,
        label_smoothing: 0.1,
        seed: 3,
    }
}

fn data() -> (NetData, Vec<u8>) {
    let test: DataSet = common::synthetic(40, 12);
    let labels = test.labels.clone();
    (common::net_data(common::synthetic(120, 11), test), labels)
}

fn run(ctx: &GpuContext, run: &RunConfig, dir: &Path, resume: bool) -> fmnist_gpu::Result<f64> {
    let (data, labels) = data();
    let s = split(data.train.n, run.val_fraction, run.limit, run.seed).unwrap();
    let mut net = GpuNet::new(
        ctx.clone(),
        run.net_config(),
        data,
        Params::glorot(run.hidden as usize, run.seed),
    )?;
    let plan = TrainPlan {
        run,
        split: &s,
        test_labels: &labels,
        run_dir: dir,
        resume,
    };
    Ok(train(&mut net, &plan)?.test_accuracy)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn gpu_resume_is_bit_identical_and_eval_reproduces_the_summary() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let acc_a = run(&ctx, &config(2), &a, false).unwrap();
    run(&ctx, &config(1), &b, false).unwrap();
    let acc_b = run(&ctx, &config(2), &b, true).unwrap();
    assert_eq!(acc_a, acc_b);
    for f in [
        "last.safetensors",
        "model.safetensors",
        "optimizer.safetensors",
    ] {
        assert!(read(&a.join(f)) == read(&b.join(f)), "{f} differs");
    }
    // Every epoch's record carries the optimizer statistics of its last step, the same after
    // a resume, and the run directory has their plot.
    let records = |d: &Path| -> Vec<serde_json::Value> {
        String::from_utf8(read(&d.join("metrics.jsonl")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["optim"].clone())
            .collect()
    };
    let (ra, rb) = (records(&a), records(&b));
    assert_eq!(ra, rb);
    assert_eq!(ra.len(), 2);
    for r in &ra {
        let tensors = r.as_array().expect("optim statistics");
        assert_eq!(tensors.len(), 8);
        assert_eq!(tensors[0]["tensor"], "conv1.weight");
        assert_eq!(tensors[0]["zeta"]["hist"].as_array().unwrap().len(), 16);
    }
    assert!(read(&a.join("optimizer.png")).starts_with(b"\x89PNG"));

    // The saved model on a fresh net of the same device gives the summary's numbers exactly.
    let (params, meta) = load_model(&a.join("model.safetensors")).unwrap();
    let cfg = RunConfig::from_json_str(Path::new("meta"), &meta["config"]).unwrap();
    assert_eq!(cfg, config(2));
    let (data, labels) = data();
    let mut net = GpuNet::new(ctx.clone(), cfg.net_config(), data, params).unwrap();
    let idx: Vec<u32> = (0..labels.len() as u32).collect();
    let (m, report) = evaluate_report(&mut net, Which::Test, &idx, &labels).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&read(&a.join("summary.json"))).unwrap();
    assert_eq!(rates(&m).0, summary["test_loss"].as_f64().unwrap());
    assert_eq!(rates(&m).1, acc_a);
    assert_eq!(report.accuracy, acc_a);
}

#[test]
fn gpu_divergence_names_the_epoch_and_step_range() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(2);
    cfg.optimizer.lr = 1e30;
    let err = run(&ctx, &cfg, tmp.path(), false).unwrap_err().to_string();
    assert!(err.contains("diverged") && err.contains("epoch 1"), "{err}");
    // 90 training images in batches of 16: 6 steps, read back once at the end of the epoch.
    assert!(
        err.contains("between steps 1 and 6 of 6") || err.contains("at some step of 1 to 6"),
        "{err}"
    );
    assert!(!tmp.path().join("model.safetensors").exists());
}
