//! TensorBoard event files (SPEC 9) read back with a decoder of this file's own: TFRecord framing
//! with both masked CRC-32C checksums (own table), hand-parsed protobuf fields of the upstream
//! Event and Summary messages, the version record first, then the scalars, which must equal
//! metrics.jsonl's (or compare.json's) numbers as f32. Runs the binary on the CPU device, which
//! needs the real data set (skips with a visible message without it), and the library's training
//! loop on a GPU adapter (lavapipe in CI) with synthetic data for the GPU's read-back cadence.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------------------------------------
// An independent reader: none of the crate's code or its prost types.

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bytewise from a table built here.
fn crc32c(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's mask: `((crc >> 15) | (crc << 17)) + 0xa282ead8`, wrapping.
fn masked(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

#[test]
fn masked_crc_matches_the_check_value_and_the_crate() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b""), 0);
    assert_eq!(masked(b""), 0xa282_ead8);
    assert_eq!(masked(b"123456789"), 0xC78A_B0E5);
    for data in [
        &b"123456789"[..],
        b"",
        b"brain.Event:2",
        &[0u8; 33],
        &[0xffu8; 7],
    ] {
        assert_eq!(
            fmnist_gpu::tensorboard::masked_crc(data),
            masked(data),
            "{data:?}"
        );
    }
}

/// The records of a TFRecord file, each checked: length, its CRC, data, the data's CRC.
fn records(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let what = format!("{} record {} at byte {at}", path.display(), out.len());
        assert!(bytes.len() - at >= 12, "{what}: truncated header");
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        assert_eq!(len_crc, masked(len_bytes), "{what}: length CRC");
        assert!(bytes.len() - at - 12 >= len + 4, "{what}: truncated data");
        let data = &bytes[at + 12..at + 12 + len];
        let data_crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
        assert_eq!(data_crc, masked(data), "{what}: data CRC");
        out.push(data.to_vec());
        at += 16 + len;
    }
    out
}

fn varint(b: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[*at];
        *at += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
    }
    panic!("varint longer than 10 bytes");
}

/// The fields of one protobuf message: (field number, wire type, payload bytes or the varint).
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
}

fn fields(b: &[u8]) -> Vec<(u64, Field<'_>)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < b.len() {
        let key = varint(b, &mut at);
        let (num, wire) = (key >> 3, key & 7);
        let f = match wire {
            0 => Field::Varint(varint(b, &mut at)),
            1 => {
                at += 8;
                Field::Fixed64(b[at - 8..at].try_into().unwrap())
            }
            2 => {
                let n = varint(b, &mut at) as usize;
                at += n;
                Field::Bytes(&b[at - n..at])
            }
            5 => {
                at += 4;
                Field::Fixed32(b[at - 4..at].try_into().unwrap())
            }
            w => panic!("field {num}: unexpected wire type {w}"),
        };
        out.push((num, f));
    }
    assert_eq!(at, b.len(), "message overruns its record");
    out
}

/// An `Event` (tensorflow/core/util/event.proto): wall_time = 1 (double), step = 2 (int64),
/// file_version = 3 (string) or summary = 5 (Summary: repeated Value value = 1; Value: tag = 1
/// string, simple_value = 2 float).
#[derive(Debug)]
struct Ev {
    wall_time: f64,
    step: i64,
    file_version: Option<String>,
    values: Vec<(String, f32)>,
}

fn event(data: &[u8]) -> Ev {
    let mut e = Ev {
        wall_time: 0.0,
        step: 0,
        file_version: None,
        values: Vec::new(),
    };
    let mut whats = 0;
    for (num, f) in fields(data) {
        match (num, f) {
            (1, Field::Fixed64(b)) => e.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => e.step = v as i64,
            (3, Field::Bytes(s)) => {
                whats += 1;
                e.file_version = Some(String::from_utf8(s.to_vec()).unwrap());
            }
            (5, Field::Bytes(summary)) => {
                whats += 1;
                for (n, f) in fields(summary) {
                    let (1, Field::Bytes(value)) = (n, f) else {
                        panic!("Summary field {n} is not a Value");
                    };
                    let (mut tag, mut v) = (None, None);
                    for (n, f) in fields(value) {
                        match (n, f) {
                            (1, Field::Bytes(t)) => {
                                tag = Some(String::from_utf8(t.to_vec()).unwrap())
                            }
                            (2, Field::Fixed32(b)) => v = Some(f32::from_le_bytes(b)),
                            (n, _) => panic!("Summary.Value: unexpected field {n}"),
                        }
                    }
                    e.values
                        .push((tag.expect("a tag"), v.expect("a simple_value")));
                }
            }
            (n, _) => panic!("Event: unexpected field {n} or wire type"),
        }
    }
    assert_eq!(
        whats, 1,
        "an Event holds exactly one of file_version and summary"
    );
    e
}

/// The events of the file, after checking the version record that must come first.
fn read_events(path: &Path) -> Vec<Ev> {
    let evs: Vec<Ev> = records(path).iter().map(|r| event(r)).collect();
    assert!(!evs.is_empty(), "{}: no records", path.display());
    assert_eq!(
        evs[0].file_version.as_deref(),
        Some("brain.Event:2"),
        "{}: first record",
        path.display()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for e in &evs {
        assert!(
            e.wall_time > 1.6e9 && e.wall_time <= now + 1.0,
            "{}: wall_time {}",
            path.display(),
            e.wall_time
        );
    }
    for e in &evs[1..] {
        assert!(
            e.file_version.is_none(),
            "{}: a second version",
            path.display()
        );
        assert!(!e.values.is_empty(), "{}: an empty summary", path.display());
    }
    evs
}

/// The event files directly in `dir`, sorted by name; each name is
/// `events.out.tfevents.<unix secs>.<host>.<pid>` (maybe with a `.<n>` suffix).
fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect();
    v.sort();
    for p in &v {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = name["events.out.tfevents.".len()..].split('.').collect();
        assert!(
            (3..=4).contains(&parts.len())
                && parts[0].parse::<u64>().is_ok()
                && !parts[1].is_empty()
                && parts[2].parse::<u32>().is_ok(),
            "{name}: not <secs>.<host>.<pid>"
        );
    }
    v
}

/// (tag, step, value) of every scalar in `evs`, in file order.
fn scalars(evs: &[Ev]) -> Vec<(String, i64, f32)> {
    evs.iter()
        .flat_map(|e| e.values.iter().map(|(t, v)| (t.clone(), e.step, *v)))
        .collect()
}

const EPOCH_TAGS: [(&str, &str); 6] = [
    ("epoch/train_loss", "train_loss"),
    ("epoch/train_accuracy", "train_accuracy"),
    ("epoch/val_loss", "val_loss"),
    ("epoch/val_accuracy", "val_accuracy"),
    ("epoch/lr", "lr"),
    ("epoch/images_per_second", "images_per_second"),
];

/// Every epoch tag of every record in `recs` (JSON epoch records) is in `s` once, at step
/// `epoch`, with the record's value as f32, bit for bit; `only` limits it to some tags.
fn assert_epoch_scalars(s: &[(String, i64, f32)], recs: &[Value], what: &str) {
    for r in recs {
        let epoch = r["epoch"].as_i64().unwrap();
        for (tag, key) in EPOCH_TAGS {
            let Some(want) = r[key].as_f64() else {
                // NaN is written as null: not validated, so not in the file either.
                assert!(
                    !s.iter().any(|(t, st, _)| t == tag && *st == epoch),
                    "{what}: {tag} at epoch {epoch} should be absent"
                );
                continue;
            };
            let got: Vec<f32> = s
                .iter()
                .filter(|(t, st, _)| t == tag && *st == epoch)
                .map(|x| x.2)
                .collect();
            assert_eq!(
                got.len(),
                1,
                "{what}: {tag} at epoch {epoch}: {got:?} in {s:?}"
            );
            assert_eq!(
                got[0].to_bits(),
                (want as f32).to_bits(),
                "{what}: {tag} at epoch {epoch}: {} vs {want}",
                got[0]
            );
        }
        for (tag, want) in optim_tags(r) {
            let got: Vec<f32> = s
                .iter()
                .filter(|(t, st, _)| *t == tag && *st == epoch)
                .map(|x| x.2)
                .collect();
            assert_eq!(got.len(), 1, "{what}: {tag} at epoch {epoch}: {got:?}");
            assert_eq!(
                got[0].to_bits(),
                (want as f32).to_bits(),
                "{what}: {tag} at epoch {epoch}"
            );
        }
    }
}

/// The `optim/<tensor>/<name>` tags a record's optimizer statistics must give, with their
/// values (README: TensorBoard).
fn optim_tags(r: &Value) -> Vec<(String, f64)> {
    let mut v = Vec::new();
    for t in r["optim"].as_array().into_iter().flatten() {
        let name = t["tensor"].as_str().unwrap();
        let mut push = |n: &str, x: &Value| {
            if let Some(x) = x.as_f64() {
                v.push((format!("optim/{name}/{n}"), x));
            }
        };
        push("mean_step", &t["mean_step"]);
        push("update_ratio", &t["update_ratio"]);
        let z = &t["zeta"];
        push("mean_multiplier", &z["mean_multiplier"]);
        push("sign_flips", &z["sign_flips"]);
        push("zeta_at_min", &z["at_min"]);
        push("zeta_at_max", &z["at_max"]);
    }
    v
}

fn run_ok(mut c: Command) -> std::process::Output {
    let o = c.output().expect("spawn the binary");
    assert!(
        o.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn train_cmd(data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = common::bin();
    c.args(["train", "--device", "cpu", "--batch-size", "64"])
        .args(["--limit", "600", "--lr-schedule", "constant"])
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

// 600 images, 10 % held out: 540 training images, 8 steps of 64 and one of 28 per epoch.
const STEPS: i64 = 9;
const BATCHES: [f64; 9] = [64.0, 64.0, 64.0, 64.0, 64.0, 64.0, 64.0, 64.0, 28.0];

#[test]
fn train_writes_epoch_and_step_scalars_that_match_the_metrics() {
    let Some(data) = common::real_data() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    // A stale event file in a directory without a run: a fresh run removes it.
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("events.out.tfevents.1.stale.1"), b"stale").unwrap();
    run_ok(train_cmd(&data, &dir, &["--epochs", "2"]));
    let files = event_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let evs = read_events(&files[0]);
    let s = scalars(&evs);
    let recs = metrics(&dir);
    assert_eq!(recs.len(), 2);
    assert_epoch_scalars(&s, &recs, "train");

    // The CPU reads the loss every step: one step/train_loss per optimizer step 1..=18, in order,
    // each the mean of its batch, so the batch-weighted mean of an epoch's is its train_loss.
    let steps: Vec<(i64, f32)> = s
        .iter()
        .filter(|(t, _, _)| t == "step/train_loss")
        .map(|(_, st, v)| (*st, *v))
        .collect();
    assert_eq!(
        steps.iter().map(|x| x.0).collect::<Vec<_>>(),
        (1..=2 * STEPS).collect::<Vec<_>>()
    );
    for (e, r) in recs.iter().enumerate() {
        let chunk = &steps[e * STEPS as usize..(e + 1) * STEPS as usize];
        let mean = chunk
            .iter()
            .zip(BATCHES)
            .map(|((_, v), n)| *v as f64 * n)
            .sum::<f64>()
            / BATCHES.iter().sum::<f64>();
        let want = r["train_loss"].as_f64().unwrap();
        assert!(
            (mean - want).abs() <= 1e-5 * want.abs().max(1.0),
            "epoch {}: step losses average {mean}, the record says {want}",
            e + 1
        );
        assert!(chunk.iter().all(|(_, v)| v.is_finite() && *v > 0.0));
    }
    // Every tag is one of the documented ones, and each epoch's scalars are one event.
    let tags: std::collections::BTreeSet<&str> = s.iter().map(|x| x.0.as_str()).collect();
    let optim: Vec<String> = recs.iter().flat_map(optim_tags).map(|x| x.0).collect();
    // WAME: six tags for each of the eight tensors (update_ratio from epoch 1: no tensor is
    // all zero after a step).
    assert_eq!(
        optim
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        48
    );
    let mut want: std::collections::BTreeSet<&str> = EPOCH_TAGS.iter().map(|x| x.0).collect();
    want.insert("step/train_loss");
    want.extend(optim.iter().map(String::as_str));
    assert_eq!(tags, want);
    let epoch_events: Vec<i64> = evs
        .iter()
        .filter(|e| e.values.iter().any(|v| v.0.starts_with("epoch/")))
        .map(|e| e.step)
        .collect();
    assert_eq!(epoch_events, [1, 2]);

    // --resume starts a new file with what it trains; the first one stays as it was.
    let dir = tmp.path().join("resumed");
    run_ok(train_cmd(&data, &dir, &["--epochs", "1"]));
    let first = event_files(&dir);
    assert_eq!(first.len(), 1);
    let before = std::fs::read(&first[0]).unwrap();
    let mut c = common::bin();
    c.args(["train", "--device", "cpu", "--epochs", "2", "--resume"])
        .arg(&dir);
    run_ok(c);
    let files = event_files(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.contains(&first[0]));
    assert_eq!(std::fs::read(&first[0]).unwrap(), before);
    let newer = files.iter().find(|f| **f != first[0]).unwrap();
    let recs = metrics(&dir);
    let s1 = scalars(&read_events(&first[0]));
    let s2 = scalars(&read_events(newer));
    assert_epoch_scalars(&s1, &recs[..1], "first file");
    assert_epoch_scalars(&s2, &recs[1..], "resumed file");
    assert!(!s2.iter().any(|x| x.1 == 1 && x.0.starts_with("epoch/")));
    let st: Vec<i64> = s2
        .iter()
        .filter(|x| x.0 == "step/train_loss")
        .map(|x| x.1)
        .collect();
    assert_eq!(st, (STEPS + 1..=2 * STEPS).collect::<Vec<_>>());
    // Resuming the finished run only redoes the final evaluation: no new file.
    let mut c = common::bin();
    c.args(["train", "--device", "cpu", "--resume"]).arg(&dir);
    run_ok(c);
    assert_eq!(event_files(&dir).len(), 2);
}

#[test]
fn compare_writes_one_run_per_optimizer_and_seed() {
    let Some(data) = common::real_data() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cmp");
    let mut c = common::bin();
    c.args([
        "compare",
        "--device",
        "cpu",
        "--optimizers",
        "adam,sgd@5e-2",
    ])
    .args(["--limit", "300", "--epochs", "1", "--seeds", "2", "--out"])
    .arg(&out)
    .arg("--data")
    .arg(&data);
    run_ok(c);
    let doc: Value = serde_json::from_slice(&std::fs::read(out.join("compare.json")).unwrap())
        .expect("compare.json");
    let mut seen = Vec::new();
    for o in doc["optimizers"].as_array().unwrap() {
        for r in o["runs"].as_array().unwrap() {
            let name = format!("{}-seed{}", o["name"].as_str().unwrap(), r["seed"]);
            let dir = out.join("tb").join(&name);
            let files = event_files(&dir);
            assert_eq!(files.len(), 1, "{name}: {files:?}");
            let s = scalars(&read_events(&files[0]));
            assert_epoch_scalars(&s, r["epochs"].as_array().unwrap(), &name);
            // Adam and SGD: mean_step and update_ratio for each of the eight tensors.
            assert_eq!(s.len(), EPOCH_TAGS.len() + 16, "{name}: {s:?}");
            seen.push(name);
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "adam-seed0",
            "adam-seed1",
            "sgd@5e-2-seed0",
            "sgd@5e-2-seed1"
        ]
    );
    let mut dirs: Vec<String> = std::fs::read_dir(out.join("tb"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, seen);
}

#[test]
fn search_writes_one_run_per_trial_and_fold() {
    let Some(data) = common::real_data() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let mut c = common::bin();
    c.args(["search", "--device", "cpu", "--iters", "2", "--folds", "2"])
        .args(["--epochs", "2", "--limit", "200", "--hidden-units", "16"])
        .args(["--dropouts", "0.2", "--lrs", "1e-3,1e-2", "--out"])
        .arg(&out)
        .arg("--data")
        .arg(&data);
    run_ok(c);
    let doc: Value = serde_json::from_slice(&std::fs::read(out.join("search.json")).unwrap())
        .expect("search.json");
    let trials = doc["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2);
    let mut names = Vec::new();
    for t in trials {
        let name = format!(
            "trial{}-h16-d0.2-lr{}",
            t["trial"],
            if t["lr"].as_f64().unwrap() < 5e-3 {
                "1e-3"
            } else {
                "1e-2"
            }
        );
        for k in 0..2 {
            let dir = out.join("tb").join(&name).join(format!("fold{}", k + 1));
            let files = event_files(&dir);
            assert_eq!(files.len(), 1, "{}: {files:?}", dir.display());
            let s = scalars(&read_events(&files[0]));
            // Only the last epoch is validated; its numbers are the trial's fold numbers.
            let has = |tag: &str, step: i64| s.iter().any(|x| x.0 == tag && x.1 == step);
            assert!(has("epoch/train_loss", 1) && has("epoch/train_loss", 2));
            assert!(!has("epoch/val_accuracy", 1) && !has("epoch/val_loss", 1));
            let at2 = |tag: &str| {
                s.iter()
                    .find(|x| x.0 == tag && x.1 == 2)
                    .unwrap_or_else(|| panic!("{name} fold {}: no {tag}", k + 1))
                    .2
            };
            for (tag, key) in [
                ("epoch/val_accuracy", "fold_accuracies"),
                ("epoch/val_loss", "fold_val_losses"),
                ("epoch/train_loss", "fold_train_losses"),
            ] {
                let want = t[key][k].as_f64().unwrap() as f32;
                assert_eq!(at2(tag).to_bits(), want.to_bits(), "{name} {tag}");
            }
        }
        names.push(name);
    }
    names.sort();
    let mut dirs: Vec<String> = std::fs::read_dir(out.join("tb"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, names);
}

/// On a GPU (lavapipe in CI) the loss is read every `GPU_CHECK_EVERY` (20) steps and at the end
/// of the epoch: `step/train_loss` comes at those steps, each the mean over its chunk.
/// Synthetic data keeps it to a few hundred images.
#[test]
fn gpu_train_writes_step_loss_at_the_read_back_cadence() {
    use fmnist_gpu::data::split;
    use fmnist_gpu::model::Params;
    use fmnist_gpu::net::gpu::GpuNet;
    use fmnist_gpu::optim::{OptimConfig, OptimizerKind};
    use fmnist_gpu::train::{GPU_CHECK_EVERY, LrSchedule, RunConfig, TrainPlan, train};
    let Some(ctx) = common::ctx() else {
        return;
    };
    assert_eq!(GPU_CHECK_EVERY, 20, "the chunks below assume 20");
    let run = RunConfig {
        data: "synthetic".into(),
        epochs: 2,
        batch_size: 16,
        optimizer: OptimConfig::defaults(OptimizerKind::Wame),
        lr_schedule: LrSchedule::Constant,
        hidden: 16,
        dropout: 0.4,
        val_fraction: 0.2,
        limit: None,
        augment: false,
        label_smoothing: 0.0,
        seed: 1,
    };
    // 500 images, 100 held out: 400 training images, 25 steps of 16 per epoch.
    let test = common::synthetic(16, 2);
    let labels = test.labels.clone();
    let data = common::net_data(common::synthetic(500, 1), test);
    let s = split(data.train.n, run.val_fraction, run.limit, run.seed).unwrap();
    assert_eq!(s.train.len(), 400);
    let mut net = GpuNet::new(ctx, run.net_config(), data, Params::glorot(16, 1)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let summary = train(
        &mut net,
        &TrainPlan {
            run: &run,
            split: &s,
            test_labels: &labels,
            run_dir: tmp.path(),
            resume: false,
        },
    )
    .unwrap();
    let files = event_files(tmp.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let sc = scalars(&read_events(&files[0]));
    let recs: Vec<Value> = summary
        .epochs
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    assert_epoch_scalars(&sc, &recs, "gpu");
    // Reads at steps 20 and 25 of each epoch (optimizer steps 20, 25, 45, 50): chunks of 320
    // and 80 images, whose weighted mean is the epoch's train_loss.
    let steps: Vec<(i64, f32)> = sc
        .iter()
        .filter(|x| x.0 == "step/train_loss")
        .map(|x| (x.1, x.2))
        .collect();
    assert_eq!(
        steps.iter().map(|x| x.0).collect::<Vec<_>>(),
        [20, 25, 45, 50]
    );
    for (e, r) in summary.epochs.iter().enumerate() {
        let (a, b) = (steps[2 * e].1 as f64, steps[2 * e + 1].1 as f64);
        let (got, want) = ((320.0 * a + 80.0 * b) / 400.0, r.train_loss);
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "epoch {}: chunks {a}, {b} average {got}, the record says {want}",
            e + 1
        );
    }
}
