//! The run directory through the binary on the CPU device (SPEC 9): resume gives the same bits
//! as an uninterrupted run, a kill -9 leaves loadable checkpoints, `eval` reproduces the
//! summary, contradicting flags and divergence are clear errors. Needs the real data set.

mod common;

use fmnist_gpu::checkpoint::{load_model, load_state};
use fmnist_gpu::optim::OptimizerKind;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `train` on the CPU with a small slice of the data; `extra` adds or overrides flags.
fn train_cmd(out: &Path, limit: usize, extra: &[&str]) -> Command {
    let mut c = common::bin();
    c.args(["train", "--device", "cpu", "--batch-size", "64", "--limit"])
        .arg(limit.to_string())
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

fn run_ok(mut c: Command) -> Output {
    let o = c.output().expect("spawn the binary");
    assert!(
        o.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json(p: &Path) -> Value {
    serde_json::from_slice(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The per-epoch numbers of metrics.jsonl, without the timings.
fn epoch_numbers(dir: &Path) -> Vec<Vec<Value>> {
    String::from_utf8(read(&dir.join("metrics.jsonl")))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            [
                "epoch",
                "train_loss",
                "train_accuracy",
                "val_loss",
                "val_accuracy",
                "lr",
                "optim",
            ]
            .iter()
            .map(|k| v[k].clone())
            .collect()
        })
        .collect()
}

/// Both runs ended with the same parameters, optimizer state, best model and numbers.
fn assert_same_run(a: &Path, b: &Path) {
    for f in [
        "last.safetensors",
        "model.safetensors",
        "optimizer.safetensors",
    ] {
        assert!(
            read(&a.join(f)) == read(&b.join(f)),
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
    assert_eq!(epoch_numbers(a), epoch_numbers(b));
    let (sa, sb) = (json(&a.join("summary.json")), json(&b.join("summary.json")));
    for k in ["test_accuracy", "test_loss", "val_accuracy", "best_epoch"] {
        assert_eq!(sa[k], sb[k], "summary {k}");
    }
}

#[test]
fn resume_continues_bit_for_bit() {
    if common::real_data().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    // A constant rate, so that --epochs may grow on resume (cosine's rates depend on the total).
    let seed = ["--preset", "seed", "--augment"];
    run_ok(train_cmd(
        &a,
        600,
        &[&["--epochs", "2"][..], &seed].concat(),
    ));
    run_ok(train_cmd(
        &b,
        600,
        &[&["--epochs", "1"][..], &seed].concat(),
    ));
    let mut c = common::bin();
    c.args(["train", "--device", "cpu", "--epochs", "2", "--resume"])
        .arg(&b);
    run_ok(c);
    assert_same_run(&a, &b);
    let s = json(&b.join("summary.json"));
    assert_eq!(s["resumed_from_epoch"], 1);
    assert_eq!(s["epochs"].as_array().unwrap().len(), 2);

    // The state file carries every optimizer component per parameter and the counters.
    let (st, meta) = load_state(&b.join("optimizer.safetensors"), OptimizerKind::Wame).unwrap();
    assert_eq!(st.epoch, 2);
    assert_eq!(st.t, 2 * 540u32.div_ceil(64));
    assert_eq!(meta["seed"], "0");

    // Resuming a finished run changes nothing but redoes the final evaluation.
    let before = read(&b.join("last.safetensors"));
    let mut c = common::bin();
    c.args(["train", "--device", "cpu", "--resume"]).arg(&b);
    run_ok(c);
    assert!(before == read(&b.join("last.safetensors")));
    assert_same_run(&a, &b);
}

#[test]
fn presets_default_and_seed() {
    if common::real_data().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| tmp.path().join(n);
    let config = |n: &str| json(&dir(n).join("config.json"));
    // The default: cosine decay and one epoch of warm-up (540 training images, batch 64).
    run_ok(train_cmd(&dir("default"), 600, &["--epochs", "1"]));
    assert_eq!(config("default")["lr_schedule"], "cosine");
    assert_eq!(
        config("default")["optimizer"]["warmup_steps"],
        540u32.div_ceil(64)
    );
    // A flag given beats the preset.
    run_ok(train_cmd(
        &dir("w3"),
        600,
        &["--epochs", "1", "--warmup-steps", "3"],
    ));
    assert_eq!(config("w3")["optimizer"]["warmup_steps"], 3);
    assert_eq!(config("w3")["lr_schedule"], "cosine");
    // `--preset seed` is the old defaults, bit for bit.
    run_ok(train_cmd(
        &dir("seed"),
        600,
        &["--epochs", "2", "--preset", "seed"],
    ));
    let old = [
        "--epochs",
        "2",
        "--lr-schedule",
        "constant",
        "--warmup-steps",
        "0",
    ];
    run_ok(train_cmd(&dir("old"), 600, &old));
    assert_eq!(config("seed"), config("old"));
    assert_eq!(config("seed")["lr_schedule"], "constant");
    assert_eq!(config("seed")["optimizer"]["warmup_steps"], 0);
    assert_same_run(&dir("seed"), &dir("old"));
}

/// Splits a command line as a POSIX shell would for words that are plain or single-quoted.
fn shell_split(line: &str) -> Vec<String> {
    let (mut words, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for ch in line.chars() {
        match ch {
            '\'' => (quoted, any) = (!quoted, true),
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => (cur, any) = (cur + &c.to_string(), true),
        }
    }
    if any {
        words.push(cur);
    }
    words
}

#[test]
fn the_printed_command_reproduces_the_run() {
    if common::real_data().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let o = run_ok(train_cmd(
        &a,
        600,
        &[
            "--epochs",
            "2",
            "--augment",
            "--optimizer",
            "adam",
            "--dropout",
            "0.3",
        ],
    ));
    let summary = json(&a.join("summary.json"));
    let line = summary["command"].as_str().unwrap().to_string();
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(
        stdout.contains(&format!("reproduce with: {line}\n")),
        "{stdout}"
    );
    let words = shell_split(&line);
    assert_eq!(words[..2], ["fmnist-gpu", "train"], "{line}");
    for needle in [
        "--device cpu",
        "--optimizer adam",
        "--augment",
        "--limit 600",
    ] {
        assert!(line.contains(needle), "{needle} missing from {line}");
    }
    let mut c = common::bin();
    c.args(&words[1..]).arg("--out").arg(&b);
    run_ok(c);
    assert_same_run(&a, &b);
    assert_eq!(json(&a.join("config.json")), json(&b.join("config.json")));
}

#[test]
fn eval_reproduces_the_summary_and_the_report() {
    if common::real_data().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    run_ok(train_cmd(
        &run,
        600,
        &["--epochs", "2", "--lr-schedule", "step"],
    ));
    let summary = json(&run.join("summary.json"));
    let lrs: Vec<f64> = summary["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lrs, [1e-3f32 as f64, (1e-3f32 as f64 * 0.1) as f32 as f64]);
    let mut c = common::bin();
    c.args(["eval", "--device", "cpu", "--json", "--model"])
        .arg(run.join("model.safetensors"));
    let o = run_ok(c);
    let e: Value = serde_json::from_slice(&o.stdout).expect("eval --json prints one JSON document");
    assert_eq!(e["accuracy"], summary["test_accuracy"]);
    assert_eq!(e["loss"], summary["test_loss"]);
    assert_eq!(e["images"], 10000);
    let cm = e["confusion_matrix"].as_array().unwrap();
    assert_eq!(cm.len(), 10);
    let diag: u64 = (0..10).map(|i| cm[i][i].as_u64().unwrap()).sum();
    // The nets' own correct count and the confusion matrix's diagonal agree.
    assert_eq!(diag as f64 / 10000.0, e["accuracy"].as_f64().unwrap());
    for row in e["classes"].as_array().unwrap() {
        assert_eq!(row["support"], 1000);
        for k in ["precision", "recall", "f1"] {
            let v = row[k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{k} {v}");
        }
    }
    assert_eq!(e["macro_avg"]["support"], 10000);

    // The text form is what the run saved in report.txt, below its header.
    let mut c = common::bin();
    c.args(["eval", "--device", "cpu", "--model"])
        .arg(run.join("model.safetensors"));
    let text = String::from_utf8(run_ok(c).stdout).unwrap();
    let report = String::from_utf8(read(&run.join("report.txt"))).unwrap();
    let table = |s: &str| s[s.find("precision").unwrap()..].to_string();
    assert_eq!(table(&text), table(&report));
    assert!(text.contains("weighted avg") && text.contains("confusion matrix"));

    // The validation split comes from the model's metadata.
    let best = summary["best_epoch"].as_u64().unwrap() as usize;
    let mut c = common::bin();
    c.args([
        "eval", "--device", "cpu", "--json", "--split", "val", "--model",
    ])
    .arg(run.join("model.safetensors"));
    let v: Value = serde_json::from_slice(&run_ok(c).stdout).unwrap();
    assert_eq!(v["images"], 60);
    assert_eq!(v["accuracy"], summary["epochs"][best - 1]["val_accuracy"]);

    for (f, w, h) in [("curves.png", 1100, 440), ("confusion.png", 1040, 900)] {
        let img = image::open(run.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!((img.width(), img.height()), (w, h), "{f}");
        // Not a blank canvas: text, lines and cells were drawn.
        let px = img.to_luma8();
        let dark = px.pixels().filter(|p| p.0[0] < 128).count();
        assert!(dark > 1000, "{f} looks empty ({dark} dark pixels)");
    }
}

#[test]
fn resume_rejects_contradicting_flags() {
    if common::real_data().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    run_ok(train_cmd(
        &run,
        200,
        &["--epochs", "2", "--lr-schedule", "cosine"],
    ));
    let before = read(&run.join("optimizer.safetensors"));
    for (flags, needle) in [
        (&["--hidden", "64"][..], "--hidden 64"),
        (&["--seed", "3"], "--seed 3"),
        (&["--optimizer", "adam"], "--optimizer adam"),
        (&["--lr", "0.01"], "--lr 0.01"),
        (&["--epochs", "3"], "--epochs 3"),
        (&["--augment"], "--augment"),
        (&["--warmup-steps", "10"], "--warmup-steps 10"),
        (&["--weight-decay", "0.1"], "--weight-decay 0.1"),
        (&["--label-smoothing", "0.1"], "--label-smoothing 0.1"),
        (&["--preset", "seed"], "--preset"),
    ] {
        let mut c = common::bin();
        c.args(["train", "--device", "cpu", "--resume"])
            .arg(&run)
            .args(flags);
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
    // Flags that agree with the run are fine (and the finished run is only re-evaluated).
    let mut c = common::bin();
    c.args(["train", "--device", "cpu", "--hidden", "128", "--seed", "0"])
        .args(["--lr-schedule", "cosine", "--resume"])
        .arg(&run);
    run_ok(c);
    assert!(before == read(&run.join("optimizer.safetensors")));

    let mut c = common::bin();
    c.args(["train", "--device", "cpu", "--resume"])
        .arg(tmp.path().join("nothing"));
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("config.json"), "{err}");
    let mut c = common::bin();
    c.args(["train", "--device", "cpu", "--out", "x", "--resume"])
        .arg(&run);
    assert_eq!(c.output().unwrap().status.code(), Some(2));
}

#[test]
fn divergence_stops_with_the_epoch_and_step() {
    if common::real_data().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("huge-lr");
    let o = train_cmd(&run, 300, &["--epochs", "2", "--lr", "1e30"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // The first update makes the weights ~1e31; the second step's forward overflows.
    assert!(
        err.contains("diverged") && err.contains("in epoch 1 at step 2 of 5"),
        "{err}"
    );
    assert!(err.contains("no checkpoint was written"), "{err}");
    assert!(!run.join("model.safetensors").exists());
    assert!(!run.join("summary.json").exists());
}

#[test]
fn divergence_in_a_later_epoch_keeps_the_last_good_checkpoint() {
    if common::real_data().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    run_ok(train_cmd(
        &run,
        300,
        &["--epochs", "1", "--optimizer", "sgd", "--preset", "seed"],
    ));
    // Make epoch 2 blow up: a momentum buffer of -1e36 turns its first update into a jump of
    // +9e33 for every weight, so all activations are positive and conv2 overflows to inf, and
    // the second step's loss is inf - inf. The parameters stay the good epoch-1 ones.
    let state = run.join("optimizer.safetensors");
    let (tensors, meta) = fmnist_gpu::checkpoint::load_all(&state).unwrap();
    let data: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .map(|(name, t)| {
            let mut v = t.f32(&state, name).unwrap();
            if name.ends_with(".momentum") {
                v.iter_mut().for_each(|x| *x = -1e36);
            }
            (name.clone(), t.shape.clone(), v)
        })
        .collect();
    let named: Vec<fmnist_gpu::checkpoint::Named> = data
        .iter()
        .map(|(n, s, v)| fmnist_gpu::checkpoint::Named {
            name: n.clone(),
            shape: s.clone(),
            data: v,
        })
        .collect();
    fmnist_gpu::checkpoint::save_f32(&state, &named, meta).unwrap();
    let good = load_model(&run.join("model.safetensors")).unwrap().0;
    let mut c = common::bin();
    c.args(["train", "--device", "cpu", "--epochs", "3", "--resume"])
        .arg(&run);
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("diverged") && err.contains("in epoch 2 at step 2 of 5"),
        "{err}"
    );
    assert!(err.contains("last good checkpoint (epoch 1)"), "{err}");
    for f in ["model.safetensors", "last.safetensors"] {
        let (p, meta) = load_model(&run.join(f)).unwrap();
        assert!(p == good, "{f} is no longer the epoch-1 model");
        assert_eq!(meta["epoch"], "1", "{f}");
    }
    assert_eq!(epoch_numbers(&run).len(), 1);
}

/// Waits until `ready` holds, then kills the child with SIGKILL; fails if it ended first.
fn kill_when(child: &mut std::process::Child, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the moment to kill it"
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "run never got there"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed run reported success");
}

/// Every checkpoint in `dir` loads (whatever moment the kill hit).
fn checkpoints_load(dir: &Path) {
    load_model(&dir.join("model.safetensors")).expect("model.safetensors loads after a kill");
    if dir.join("last.safetensors").exists() {
        load_model(&dir.join("last.safetensors")).expect("last.safetensors loads");
    }
    if dir.join("optimizer.safetensors").exists() {
        load_state(&dir.join("optimizer.safetensors"), OptimizerKind::Wame)
            .expect("optimizer.safetensors loads");
    }
}

#[test]
fn kill_9_leaves_loadable_checkpoints_and_resume_finishes_the_same_run() {
    if common::real_data().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    let flags = ["--epochs", "4", "--lr-schedule", "cosine"];
    run_ok(train_cmd(&whole, 1500, &flags));

    let mut child = train_cmd(&killed, 1500, &flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let model = killed.join("model.safetensors");
    kill_when(&mut child, || model.exists());
    checkpoints_load(&killed);

    // Resume, and kill again once a later epoch is on its way.
    let lines = |d: &Path| {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let mut resume = common::bin();
    resume
        .args(["train", "--device", "cpu", "--resume"])
        .arg(&killed);
    let mut child = resume
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kill_when(&mut child, || lines(&killed) >= 2);
    checkpoints_load(&killed);

    let mut resume = common::bin();
    resume
        .args(["train", "--device", "cpu", "--resume"])
        .arg(&killed);
    run_ok(resume);
    assert_same_run(&whole, &killed);
}
