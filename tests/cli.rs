//! The binary end to end: training on both devices, the fixture through `parity`, and every bad
//! flag, data or fixture input of SPEC 11 ending with exit code 2 and a message naming the problem.

mod common;

use common::bin;
use std::path::Path;
use std::process::Output;

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run fmnist-gpu")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2, no panic, and the message mentions every `needle`.
fn assert_bad_input(args: &[&str], needles: &[&str]) {
    let o = run(args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{args:?}: expected exit 2, got {:?}; stderr:\n{err}",
        o.status.code()
    );
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: message lacks {n:?}:\n{err}");
    }
}

/// Every PyTorch fixture of the shared folder (`torch_step_b*_h*.safetensors`, SPEC 10), sorted:
/// a new one is checked without a code change. Fails when there is none.
fn fixtures() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("torch_step_b")
                && name.contains("_h")
                && name.ends_with(".safetensors")
        })
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert!(
        !v.is_empty(),
        "no torch_step_b*_h*.safetensors in {}",
        dir.display()
    );
    v
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("stdout is one JSON document")
}

#[test]
fn parity_fixture_on_cpu_passes() {
    for f in fixtures() {
        let v = json(&run(&[
            "parity",
            "--fixture",
            &f,
            "--device",
            "cpu",
            "--json",
        ]));
        assert_eq!(v["passed"], true, "{f}");
        let rows = v["rows"].as_array().unwrap();
        // 6 activations + loss + 8 gradients + 3 optimizers x (losses + 8 parameters).
        assert_eq!(rows.len(), 6 + 1 + 8 + 3 * 9, "{f}");
        assert!(
            rows.iter()
                .all(|r| r["rel_l2"].as_f64().unwrap() <= r["tol"].as_f64().unwrap()),
            "{f}"
        );
    }
}

#[test]
fn parity_fixture_on_lavapipe_passes() {
    if !common::have_gpu() {
        return;
    }
    for f in fixtures() {
        let v = json(&run(&[
            "parity",
            "--fixture",
            &f,
            "--adapter",
            "software",
            "--json",
        ]));
        assert_eq!(v["passed"], true, "{f}: {v}");
        assert_eq!(v["device"], "gpu");
        assert_eq!(
            v["rows"].as_array().unwrap().len(),
            6 + 1 + 8 + 3 * 9,
            "{f}"
        );
    }
}

/// A fixture of the same form with another batch size and hidden width, made by the CPU net
/// itself: the parity code must take any B and H (and catch a tampered tensor).
#[test]
fn parity_takes_any_fixture_shape_and_catches_errors() {
    use fmnist_gpu::checkpoint::{Named, save_f32};
    use fmnist_gpu::model::{PARAM_NAMES, Params, param_shapes};
    use fmnist_gpu::net::{Net, NetConfig, NetData, cpu::CpuNet};
    use fmnist_gpu::optim::{OptimConfig, OptimizerKind};
    let (b, h) = (3usize, 20usize);
    let params = Params::glorot(h, 5);
    let data = common::synthetic(b, 8);
    let x: Vec<f32> = data.images.iter().map(|&v| v as f32 / 255.0).collect();
    let y: Vec<u32> = data.labels.iter().map(|&l| l as u32).collect();
    let cfg = |k| NetConfig {
        batch: b as u32,
        hidden: h as u32,
        dropout: 0.0,
        augment: false,
        label_smoothing: 0.0,
        optim: OptimConfig::defaults(k),
        seed: 0,
    };
    let mut net = CpuNet::new(cfg(OptimizerKind::Adam), NetData::empty(), params.clone());
    let probe = net.probe(&x, &y).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<f32>)> =
        vec![("x".into(), vec![b, 1, 28, 28], x.clone())];
    let shapes = param_shapes(h);
    for ((n, s), t) in PARAM_NAMES.iter().zip(&shapes).zip(&params.tensors) {
        owned.push((n.to_string(), s.clone(), t.clone()));
    }
    let act_shapes = [
        vec![b, 64, 24, 24],
        vec![b, 64, 12, 12],
        vec![b, 64, 8, 8],
        vec![b, 64, 4, 4],
        vec![b, h],
        vec![b, 10],
    ];
    for ((n, v), s) in probe.tensors.iter().zip(act_shapes) {
        owned.push((n.clone(), s, v.clone()));
    }
    owned.push(("loss".into(), vec![1], vec![probe.loss]));
    for ((n, s), g) in PARAM_NAMES.iter().zip(&shapes).zip(&probe.grads) {
        owned.push((format!("grad.{n}"), s.clone(), g.clone()));
    }
    for (o, k) in [
        ("adam", OptimizerKind::Adam),
        ("rmsprop", OptimizerKind::Rmsprop),
        ("sgd", OptimizerKind::Sgd),
    ] {
        let mut net = CpuNet::new(cfg(k), NetData::empty(), params.clone());
        let losses: Vec<f32> = (0..3).map(|_| net.probe_step(&x, &y).unwrap()).collect();
        owned.push((format!("{o}.losses"), vec![3], losses));
        for ((n, s), t) in PARAM_NAMES
            .iter()
            .zip(&shapes)
            .zip(net.params().unwrap().tensors)
        {
            owned.push((format!("{o}.step3.{n}"), s.clone(), t));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &Path, owned: &[(String, Vec<usize>, Vec<f32>)], y: &[u32]| {
        let mut named: Vec<Named> = owned
            .iter()
            .map(|(n, s, d)| Named {
                name: n.clone(),
                shape: s.clone(),
                data: d,
            })
            .collect();
        named.sort_by(|a, b| a.name.cmp(&b.name));
        save_f32(path, &named, Default::default()).unwrap();
        // y is i64 in the fixture form: splice it in with the safetensors API directly.
        let bytes = std::fs::read(path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let y64: Vec<u8> = y.iter().flat_map(|&l| (l as i64).to_le_bytes()).collect();
        let mut views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
        views.push((
            "y".into(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![y.len()], &y64)
                .unwrap(),
        ));
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    };
    let good = dir.path().join("b3_h20.safetensors");
    write(&good, &owned, &y);
    let v = json(&run(&[
        "parity",
        "--fixture",
        good.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]));
    assert_eq!(
        (
            v["batch"].as_u64(),
            v["hidden"].as_u64(),
            v["passed"].as_bool()
        ),
        (Some(3), Some(20), Some(true))
    );
    // Tamper with one gradient: parity must fail with exit code 1 and name it.
    let i = owned
        .iter()
        .position(|(n, _, _)| n == "grad.conv2.weight")
        .unwrap();
    owned[i].2[0] += 1.0;
    let bad = dir.path().join("tampered.safetensors");
    write(&bad, &owned, &y);
    let o = run(&[
        "parity",
        "--fixture",
        bad.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("grad.conv2.weight"));
    // A fixture missing a tensor is a bad input.
    owned.retain(|(n, _, _)| n != "sgd.losses");
    let partial = dir.path().join("partial.safetensors");
    write(&partial, &owned, &y);
    assert_bad_input(
        &[
            "parity",
            "--fixture",
            partial.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &["partial.safetensors", "sgd.losses"],
    );
}

#[test]
fn bad_fixtures_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"this is not a safetensors file").unwrap();
    assert_bad_input(
        &[
            "parity",
            "--fixture",
            junk.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &["junk.safetensors", "safetensors"],
    );
    let missing = dir.path().join("nope.safetensors");
    assert_bad_input(
        &[
            "parity",
            "--fixture",
            missing.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &["nope.safetensors"],
    );
    // A valid safetensors file of another form.
    let other = dir.path().join("other.safetensors");
    let named = [fmnist_gpu::checkpoint::Named {
        name: "x".into(),
        shape: vec![2, 3],
        data: &[0.0; 6],
    }];
    fmnist_gpu::checkpoint::save_f32(&other, &named, Default::default()).unwrap();
    assert_bad_input(
        &[
            "parity",
            "--fixture",
            other.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &["other.safetensors", "x"],
    );
}

#[test]
fn bad_flags_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    assert_bad_input(
        &[
            "train",
            "--device",
            "cpu",
            "--batch-size",
            "0",
            "--out",
            out,
        ],
        &["--batch-size"],
    );
    assert_bad_input(
        &[
            "train",
            "--device",
            "cpu",
            "--val-fraction",
            "1",
            "--out",
            out,
        ],
        &["--val-fraction"],
    );
    assert_bad_input(
        &[
            "train",
            "--device",
            "cpu",
            "--val-fraction=-0.1",
            "--out",
            out,
        ],
        &["--val-fraction"],
    );
    assert_bad_input(
        &["train", "--device", "cpu", "--dropout", "1", "--out", out],
        &["--dropout"],
    );
    assert_bad_input(
        &["train", "--device", "cpu", "--lr=-1", "--out", out],
        &["--lr"],
    );
    assert_bad_input(
        &["train", "--device", "cpu", "--epochs", "0", "--out", out],
        &["--epochs"],
    );
    assert_bad_input(
        &[
            "train",
            "--device",
            "cpu",
            "--weight-decay=-0.1",
            "--out",
            out,
        ],
        &["--weight-decay"],
    );
    assert_bad_input(
        &[
            "train",
            "--device",
            "cpu",
            "--weight-decay",
            "1000",
            "--out",
            out,
        ],
        &["--weight-decay"],
    );
    // `=` form: clap reads a bare "-0.1" as a flag.
    for ls in ["1", "-0.1", "nan"] {
        let flag = format!("--label-smoothing={ls}");
        assert_bad_input(
            &["train", "--device", "cpu", &flag, "--out", out],
            &["--label-smoothing"],
        );
    }
    assert_bad_input(&["train", "--device", "banana"], &["banana"]);
    assert_bad_input(&["train", "--optimizer", "lbfgs"], &["lbfgs"]);
    assert_bad_input(
        &[
            "train",
            "--data",
            "/nonexistent/fmnist",
            "--device",
            "cpu",
            "--out",
            out,
        ],
        &["/nonexistent/fmnist"],
    );
    if let Some(d) = common::real_data() {
        assert_bad_input(
            &[
                "train",
                "--data",
                d.to_str().unwrap(),
                "--device",
                "cpu",
                "--limit",
                "60001",
                "--out",
                out,
            ],
            &["limit"],
        );
    }
    assert!(!Path::new(out).join("model.safetensors").exists());
}

#[test]
fn unknown_adapter_lists_what_exists() {
    if !common::have_gpu() {
        return;
    }
    let o = run(&[
        "train",
        "--adapter",
        "discrete",
        "--epochs",
        "1",
        "--limit",
        "10",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("llvmpipe"),
        "the error should list the adapters that exist:\n{err}"
    );
    let o = run(&["train", "--adapter", "no-such-gpu-name", "--epochs", "1"]);
    assert_eq!(o.status.code(), Some(2));
}

fn accuracy(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn cpu_training_on_real_data_beats_chance() {
    let Some(data) = common::real_data() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 3 epochs of 10,800 images in batches of 128: 255 steps.
    let o = run(&[
        "train",
        "--device",
        "cpu",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "3",
        "--limit",
        "12000",
        "--seed",
        "1",
        "--json",
        "--out",
        dir.path().join("run").to_str().unwrap(),
    ]);
    let v = json(&o);
    let val = accuracy(&v, "val_accuracy");
    let test = accuracy(&v, "test_accuracy");
    eprintln!("cpu: val {val}, test {test}");
    assert!(
        val > 0.7 && test > 0.7,
        "expected well above chance (0.1): val {val}, test {test}"
    );
    let epochs = v["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    for e in epochs {
        for k in [
            "train_loss",
            "train_accuracy",
            "val_loss",
            "val_accuracy",
            "seconds",
            "images_per_second",
        ] {
            assert!(e[k].as_f64().unwrap().is_finite(), "{k} in {e}");
        }
    }
    assert_eq!(v["device"], "cpu");
    for f in [
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "model.safetensors",
    ] {
        assert!(
            dir.path().join("run").join(f).exists(),
            "{f} missing from the run directory"
        );
    }
}

#[test]
fn gpu_training_on_lavapipe_beats_chance_and_repeats() {
    let Some(data) = common::real_data() else {
        return;
    };
    if !common::have_gpu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let go = |name: &str| {
        let out = dir.path().join(name);
        let o = bin()
            .env("RUST_LOG", "fmnist_gpu::net::gpu=debug")
            .args([
                "train",
                "--adapter",
                "software",
                "--data",
                data.to_str().unwrap(),
            ])
            .args([
                "--epochs",
                "2",
                "--limit",
                "2000",
                "--json",
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        // 1,800 training images in batches of 128: 15 steps an epoch, several steps per
        // submit (one debug line per submit says how many; each epoch's last step, which also
        // records the optimizer statistics, is a submit of its own).
        let err = stderr(&o);
        let submits: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("steps in 1 compute pass, 1 submit"))
            .collect();
        let steps: u32 = submits
            .iter()
            .map(|l| {
                let before = l.split(" steps in 1 compute pass").next().unwrap();
                before.rsplit(' ').next().unwrap().parse::<u32>().unwrap()
            })
            .sum();
        assert_eq!(steps, 30, "expected 30 steps over the submits:\n{err}");
        assert!(submits.len() < 30, "no submit held more than one step");
        eprintln!("{}", submits[0]);
        json(&o)
    };
    let (a, b) = (go("a"), go("b"));
    assert_eq!(a["device"], "gpu");
    assert_eq!(a["adapter"]["device_type"], "Cpu");
    let (va, ta) = (accuracy(&a, "val_accuracy"), accuracy(&a, "test_accuracy"));
    eprintln!("lavapipe: val {va}, test {ta}");
    assert!(
        va > 0.3 && ta > 0.3,
        "expected clearly above chance (0.1): val {va}, test {ta}"
    );
    // Same seed, same adapter: the same numbers, to the bit.
    for k in ["val_accuracy", "test_accuracy", "test_loss"] {
        assert_eq!(a[k], b[k], "{k} differs between identical runs");
    }
    let ma = std::fs::read(dir.path().join("a/model.safetensors")).unwrap();
    let mb = std::fs::read(dir.path().join("b/model.safetensors")).unwrap();
    assert!(ma == mb, "model.safetensors differs between identical runs");
}
