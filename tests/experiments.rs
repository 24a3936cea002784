//! `search` and `compare` through the binary: on the CPU device and on lavapipe with tiny
//! settings, well-formed JSON, sorted trials, the result files, the same numbers for the same
//! seed, and every bad setting ending with exit code 2. Training needs the real data set.

mod common;

use common::bin;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run fmnist-gpu")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("stdout is one JSON document")
}

fn file_json(p: &Path) -> Value {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Exit code 2, no panic, and the message mentions every `needle`.
fn assert_bad(args: &[&str], needles: &[&str]) {
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

/// A trial without its timing: what must repeat exactly for the same seed.
fn trial_numbers(t: &Value) -> Value {
    let mut t = t.clone();
    let o = t.as_object_mut().unwrap();
    o.remove("seconds");
    t
}

/// Checks a search document: trials sorted best first with ranks 1.., fold statistics that
/// match the folds, no repeated configuration, the best trial, and `search.json` beside it.
fn check_search(doc: &Value, iters: usize, folds: usize) {
    assert_eq!(doc["command"], "search");
    assert_eq!(doc["complete"], true);
    let trials = doc["trials"].as_array().expect("a trials list");
    assert_eq!(trials.len(), iters);
    let sizes: Vec<u64> = doc["fold_sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(sizes.len(), folds);
    assert_eq!(
        sizes.iter().sum::<u64>(),
        doc["images"].as_u64().unwrap(),
        "folds partition the images"
    );
    let mut configs = Vec::new();
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(t["rank"].as_u64(), Some(i as u64 + 1));
        let accs: Vec<f64> = t["fold_accuracies"]
            .as_array()
            .unwrap()
            .iter()
            .map(f)
            .collect();
        assert_eq!(accs.len(), folds);
        assert!(accs.iter().all(|a| (0.0..=1.0).contains(a)), "{accs:?}");
        let mean = accs.iter().sum::<f64>() / folds as f64;
        assert!((f(&t["accuracy"]["mean"]) - mean).abs() < 1e-12);
        let lo = accs.iter().copied().fold(f64::INFINITY, f64::min);
        assert_eq!(f(&t["accuracy"]["min"]), lo);
        assert!(f(&t["seconds"]) > 0.0);
        if i > 0 {
            assert!(
                f(&trials[i - 1]["accuracy"]["mean"]) >= f(&t["accuracy"]["mean"]),
                "trials not sorted by mean accuracy"
            );
        }
        let c = (t["hidden"].clone(), t["dropout"].clone(), t["lr"].clone());
        assert!(!configs.contains(&c), "configuration {c:?} repeated");
        configs.push(c);
    }
    assert_eq!(doc["best"], trials[0]);
    let dir = Path::new(doc["run_dir"].as_str().unwrap());
    assert_eq!(&file_json(&dir.join("search.json")), doc);
}

#[test]
fn search_on_cpu_is_sorted_complete_and_repeatable() {
    let Some(data) = common::real_data() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let go = |name: &str, json_out: bool| {
        let out = tmp.path().join(name);
        let mut args = vec![
            "search",
            "--device",
            "cpu",
            "--data",
            data.to_str().unwrap(),
            "--limit",
            "600",
            "--epochs",
            "1",
            "--iters",
            "2",
            "--folds",
            "2",
            "--seed",
            "5",
            "--out",
            out.to_str().unwrap(),
        ];
        if json_out {
            args.push("--json");
        }
        run(&args)
    };
    let a = json(&go("a", true));
    check_search(&a, 2, 2);
    assert_eq!(a["device"], "cpu");
    assert_eq!(a["fold_sizes"], serde_json::json!([300, 300]));
    let b = json(&go("b", true));
    let numbers = |d: &Value| {
        d["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(trial_numbers)
            .collect::<Vec<_>>()
    };
    assert_eq!(numbers(&a), numbers(&b), "same seed, different trials");
    // The human-readable table ranks the same trials the same way.
    let c = go("c", false);
    assert!(c.status.success(), "{}", stderr(&c));
    let text = String::from_utf8_lossy(&c.stdout);
    let best = &a["best"];
    let line = format!(
        "best: hidden {}, dropout {}, lr ",
        best["hidden"], best["dropout"]
    );
    assert!(text.contains(&line), "table lacks {line:?}:\n{text}");
    assert!(text.contains(&format!("{:.4} ±", f(&best["accuracy"]["mean"]))));
    let ranks: Vec<&str> = text
        .lines()
        .skip(1)
        .take(2)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    let trials: Vec<String> = a["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trial"].to_string())
        .collect();
    assert_eq!(ranks, trials, "table order differs from the JSON:\n{text}");
}

/// Checks a compare document: one entry per optimizer with `epochs` curve points, a best
/// accuracy that is the maximum of its curve, and the plot and results file present.
fn check_compare(doc: &Value, names: &[&str], epochs: usize, seeds: usize) {
    assert_eq!(doc["command"], "compare");
    let opts = doc["optimizers"].as_array().expect("an optimizers list");
    let got: Vec<&str> = opts.iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(got, names);
    for o in opts {
        let runs = o["runs"].as_array().unwrap();
        assert_eq!(runs.len(), seeds);
        for r in runs {
            let eps = r["epochs"].as_array().unwrap();
            assert_eq!(eps.len(), epochs, "{}", o["name"]);
            let best = eps
                .iter()
                .map(|e| f(&e["val_accuracy"]))
                .fold(0.0, f64::max);
            assert_eq!(f(&r["best_val_accuracy"]), best);
            assert!(eps.iter().all(|e| f(&e["train_loss"]) > 0.0));
        }
        assert_eq!(o["curve"].as_array().unwrap().len(), epochs);
    }
    let dir = Path::new(doc["run_dir"].as_str().unwrap());
    assert_eq!(&file_json(&dir.join("compare.json")), doc);
    let png = image::open(dir.join("compare.png")).expect("compare.png decodes");
    assert!(png.width() >= 1000 && png.height() >= 500);
}

fn compare_numbers(d: &Value) -> Vec<Value> {
    d["optimizers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o["runs"].as_array().unwrap().clone())
        .map(|r| {
            let eps: Vec<Value> = r["epochs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| serde_json::json!([e["train_loss"], e["val_loss"], e["val_accuracy"]]))
                .collect();
            serde_json::json!([r["seed"], eps])
        })
        .collect()
}

#[test]
fn compare_on_cpu_covers_every_optimizer_and_repeats() {
    let Some(data) = common::real_data() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let go = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let mut args = vec![
            "compare",
            "--device",
            "cpu",
            "--data",
            data.to_str().unwrap(),
            "--limit",
            "600",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        json(&run(&args))
    };
    let all = [
        "wame-seed",
        "wame-paper",
        "wame-inverse",
        "adam",
        "rmsprop",
        "sgd",
    ];
    let a = go("a", &["--epochs", "1"]);
    check_compare(&a, &all, 1, 1);
    let lrs: Vec<f64> = a["optimizers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| f(&o["optimizer"]["lr"]))
        .collect();
    // f32 rates written as their shortest decimal form.
    assert_eq!(
        lrs,
        [1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-2],
        "SPEC 5 default rates"
    );
    // Each optimizer's run is exactly what `train` does with the same flags (same split, initial
    // weights, order and dropout), here SGD at its default rate.
    let t = json(&run(&[
        "train",
        "--device",
        "cpu",
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "600",
        "--epochs",
        "1",
        "--optimizer",
        "sgd",
        // compare runs SPEC 5's optimizers as written: constant rate, no warm-up.
        "--preset",
        "seed",
        "--json",
        "--out",
        tmp.path().join("t").to_str().unwrap(),
    ]));
    let sgd = &a["optimizers"][5]["runs"][0]["epochs"][0];
    for k in ["train_loss", "train_accuracy", "val_loss", "val_accuracy"] {
        assert_eq!(
            sgd[k], t["epochs"][0][k],
            "{k}: compare's sgd differs from train"
        );
    }
    let b = go("b", &["--epochs", "1"]);
    assert_eq!(
        compare_numbers(&a),
        compare_numbers(&b),
        "same seed, different curves"
    );
    // Several seeds: the curve is their mean, and the first seed repeats the single-seed run.
    let m = go(
        "m",
        &[
            "--epochs",
            "2",
            "--seeds",
            "2",
            "--optimizers",
            "wame-seed,adam@2e-3",
        ],
    );
    check_compare(&m, &["wame-seed", "adam@2e-3"], 2, 2);
    let o = &m["optimizers"][0];
    let seeds: Vec<u64> = o["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, [0, 1]);
    for e in 0..2 {
        let mean = (f(&o["runs"][0]["epochs"][e]["val_accuracy"])
            + f(&o["runs"][1]["epochs"][e]["val_accuracy"]))
            / 2.0;
        assert!((f(&o["curve"][e]["val_accuracy"]) - mean).abs() < 1e-12);
    }
    assert_eq!(
        o["runs"][0]["epochs"][0]["val_accuracy"],
        a["optimizers"][0]["runs"][0]["epochs"][0]["val_accuracy"],
        "seed 0's first epoch does not depend on --epochs or --seeds"
    );
    assert_eq!(f(&m["optimizers"][1]["optimizer"]["lr"]), 2e-3);

    // 95 % intervals over the two seeds (Student's t, 1 degree of freedom: 12.706), and WAME
    // paired with Adam seed by seed.
    let best = |o: &Value| -> Vec<f64> {
        o["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| f(&r["best_val_accuracy"]))
            .collect()
    };
    let (bw, ba) = (best(&m["optimizers"][0]), best(&m["optimizers"][1]));
    let ci = &m["optimizers"][0]["best_val_accuracy_ci"];
    let (mean, sd) = ((bw[0] + bw[1]) / 2.0, (bw[0] - bw[1]).abs() / 2f64.sqrt());
    assert!((f(&ci["mean"]) - mean).abs() < 1e-12);
    let half = 12.706 * sd / 2f64.sqrt();
    assert!((f(&ci["ci95"][0]) - (mean - half)).abs() < 1e-9, "{ci}");
    assert!((f(&ci["ci95"][1]) - (mean + half)).abs() < 1e-9, "{ci}");
    let p = m["paired"].as_array().expect("paired comparisons");
    assert_eq!(p.len(), 1);
    assert_eq!(
        (&p[0]["wame"], &p[0]["baseline"]),
        (&"wame-seed".into(), &"adam@2e-3".into())
    );
    let d = ((bw[0] - ba[0]) + (bw[1] - ba[1])) / 2.0;
    assert!((f(&p[0]["best_val_accuracy"]["mean"]) - d).abs() < 1e-12);
    assert!(
        p[0]["verdict"].as_str().unwrap().contains("2 seeds"),
        "{}",
        p[0]["verdict"]
    );

    // --report recomputes the same table and verdicts from compare.json alone.
    let dir = tmp.path().join("m");
    let r = json(&run(&[
        "compare",
        "--report",
        dir.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(r["optimizers"], m["optimizers"]);
    assert_eq!(r["paired"], m["paired"]);
    let text = run(&["compare", "--report", dir.to_str().unwrap()]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("[95 % CI]") && text.contains("paired by seed"),
        "{text}"
    );
    assert!(text.contains(p[0]["verdict"].as_str().unwrap()), "{text}");
    // A compare.json whose records contradict its settings is refused, naming the file.
    let doc = file_json(&dir.join("compare.json"));
    let mut broken = doc.clone();
    broken["settings"]["epochs"] = 1.into();
    let bad = tmp.path().join("broken.json");
    std::fs::write(&bad, serde_json::to_vec(&broken).unwrap()).unwrap();
    assert_bad(
        &["compare", "--report", bad.to_str().unwrap()],
        &["broken.json", "more than settings.epochs 1"],
    );
    assert_bad(
        &[
            "compare",
            "--report",
            dir.to_str().unwrap(),
            "--epochs",
            "3",
        ],
        &["--report"],
    );
}

#[test]
fn search_and_compare_on_lavapipe() {
    let Some(data) = common::real_data() else {
        return;
    };
    if !common::have_gpu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    let s = json(&run(&[
        "search",
        "--adapter",
        "software",
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "256",
        "--epochs",
        "1",
        "--iters",
        "2",
        "--folds",
        "2",
        "--hidden-units",
        "128",
        "--dropouts",
        "0.2,0.4",
        "--lrs",
        "1e-3",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]));
    check_search(&s, 2, 2);
    assert_eq!(s["device"], "gpu");
    assert_eq!(s["adapters"][0]["device_type"], "Cpu");
    let out = tmp.path().join("c");
    let c = json(&run(&[
        "compare",
        "--adapter",
        "software",
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "256",
        "--epochs",
        "1",
        "--optimizers",
        "wame-seed",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]));
    check_compare(&c, &["wame-seed"], 1, 1);
    assert_eq!(c["device"], "gpu");
}

#[test]
fn bad_settings_exit_2() {
    // Checked before any data is looked for, so these need no data set.
    let s = |extra: &[&'static str]| [&["search", "--device", "cpu"][..], extra].concat();
    assert_bad(&s(&["--hidden-units", ""]), &["--hidden-units", "empty"]);
    assert_bad(
        &s(&["--dropouts", "0.2,,0.4"]),
        &["--dropouts", "empty item"],
    );
    assert_bad(&s(&["--lrs", " "]), &["--lrs", "empty"]);
    assert_bad(&s(&["--lrs", "1e-3,fast"]), &["--lrs", "fast"]);
    assert_bad(&s(&["--lrs", "0"]), &["--lrs", "positive"]);
    assert_bad(
        &s(&["--lrs", "1e-3,1e-2", "--weight-decay", "200"]),
        &["--weight-decay 200", "0.01"],
    );
    assert_bad(
        &s(&["--hidden-units", "128,0"]),
        &["--hidden-units", "at least 1"],
    );
    assert_bad(
        &s(&["--hidden-units", "128,128"]),
        &["--hidden-units", "twice"],
    );
    assert_bad(&s(&["--dropouts", "0.5,1"]), &["--dropouts", "[0, 1)"]);
    assert_bad(&s(&["--folds", "1"]), &["--folds 1", "at least 2"]);
    assert_bad(&s(&["--folds", "0"]), &["--folds 0", "at least 2"]);
    assert_bad(
        &s(&["--limit", "3", "--folds", "4"]),
        &["--folds 4", "3 images"],
    );
    assert_bad(&s(&["--iters", "0"]), &["--iters", "at least 1"]);
    assert_bad(&s(&["--epochs", "0"]), &["--epochs"]);
    assert_bad(&s(&["--lr", "1e-3"]), &["--lr", "--lrs"]);
    assert_bad(&s(&["--alpha", "1.5"]), &["--alpha"]);
    assert_bad(&s(&["--iters=-1"]), &["--iters"]);
    let c = |extra: &[&'static str]| [&["compare", "--device", "cpu"][..], extra].concat();
    assert_bad(&c(&["--optimizers", ""]), &["--optimizers", "empty"]);
    assert_bad(
        &c(&["--optimizers", "wame,adamw"]),
        &["unknown optimizer \"adamw\"", "wame-paper"],
    );
    assert_bad(
        &c(&["--optimizers", "adam,,sgd"]),
        &["--optimizers", "empty item"],
    );
    assert_bad(
        &c(&["--optimizers", "wame,wame-seed"]),
        &["wame-seed twice"],
    );
    assert_bad(
        &c(&["--optimizers", "sgd@-1"]),
        &["--optimizers", "positive"],
    );
    assert_bad(&c(&["--seeds", "0"]), &["--seeds"]);
    assert_bad(&c(&["--epochs", "0"]), &["--epochs"]);
    assert_bad(&c(&["--val-fraction", "0"]), &["--val-fraction"]);
    assert_bad(&c(&["--dropout", "1"]), &["--dropout"]);
    // --adapter all with --device cpu contradicts itself, for both commands.
    assert_bad(
        &["search", "--device", "cpu", "--adapter", "all"],
        &["--adapter all", "--device cpu"],
    );
    assert_bad(
        &["compare", "--device", "cpu", "--adapter", "all"],
        &["--adapter all", "--device cpu"],
    );
}

#[test]
fn more_folds_than_images_after_loading_exits_2() {
    // Without --limit the fold count is checked against the training set once it is read; a
    // data directory with a tiny training set shows it without waiting on 60,000 images.
    let tmp = tempfile::tempdir().unwrap();
    let train = common::synthetic(3, 1);
    let test = common::synthetic(2, 2);
    write_idx(tmp.path(), "train", &train);
    write_idx(tmp.path(), "t10k", &test);
    assert_bad(
        &[
            "search",
            "--device",
            "cpu",
            "--data",
            tmp.path().to_str().unwrap(),
            "--folds",
            "4",
        ],
        &["--folds 4", "3 training images"],
    );
}

/// Writes `set` as raw IDX files `<prefix>-images-idx3-ubyte` and `<prefix>-labels-idx1-ubyte`.
fn write_idx(dir: &Path, prefix: &str, set: &fmnist_gpu::data::DataSet) {
    let mut img = vec![0, 0, 8, 3];
    for d in [set.n, set.rows, set.cols] {
        img.extend_from_slice(&(d as u32).to_be_bytes());
    }
    img.extend_from_slice(&set.images);
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), img).unwrap();
    let mut lab = vec![0, 0, 8, 1];
    lab.extend_from_slice(&(set.n as u32).to_be_bytes());
    lab.extend_from_slice(&set.labels);
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
}
