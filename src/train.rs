//! The training loop shared by both backends: epochs, validation, the run directory, the summary.

use crate::checkpoint::{save_model, write_atomic};
use crate::cpu::loss::Metrics;
use crate::data::Split;
use crate::gpu::AdapterSummary;
use crate::model::Params;
use crate::net::{Net, Which};
use crate::rng::{Stream, epoch_stream};
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub val_accuracy: f64,
    pub best_epoch: usize,
    pub epochs: Vec<EpochRecord>,
    pub device: String,
    pub adapter: Option<AdapterSummary>,
    pub run_dir: PathBuf,
    pub train_images: usize,
    pub val_images: usize,
    pub test_images: usize,
    pub seconds: f64,
}

/// Loss and accuracy from summed metrics (0 when nothing was seen).
pub fn rates(m: &Metrics) -> (f64, f64) {
    if m.seen == 0 {
        return (0.0, 0.0);
    }
    (
        m.loss_sum as f64 / m.seen as f64,
        m.correct as f64 / m.seen as f64,
    )
}

/// Steps between metric reads while a progress bar is shown (a GPU readback drains the queue).
const PROGRESS_EVERY: u32 = 20;

pub struct TrainPlan<'a> {
    pub epochs: usize,
    pub batch: u32,
    pub lr: f32,
    pub seed: u64,
    pub split: &'a Split,
    pub test_n: usize,
    pub run_dir: &'a Path,
    /// `config.json` and checkpoint metadata.
    pub config: serde_json::Value,
}

/// The training order of `epoch` (0-based): a seeded shuffle that depends only on seed and epoch,
/// so a resumed run sees the same order.
pub fn epoch_order(train: &[u32], seed: u64, epoch: usize) -> Vec<u32> {
    let mut order = train.to_vec();
    order.shuffle(&mut epoch_stream(seed, Stream::Shuffle, epoch as u64));
    order
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    let werr = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(werr)?;
    writeln!(f, "{line}").map_err(werr)?;
    f.sync_data().map_err(werr)
}

fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).expect("serialising plain data");
    s.push(b'\n');
    s
}

pub fn train(net: &mut dyn Net, plan: &TrainPlan) -> Result<Summary> {
    let start = Instant::now();
    std::fs::create_dir_all(plan.run_dir).map_err(|source| Error::Write {
        path: plan.run_dir.to_path_buf(),
        source,
    })?;
    write_atomic(&plan.run_dir.join("config.json"), &json_bytes(&plan.config))?;
    let metrics_path = plan.run_dir.join("metrics.jsonl");
    let _ = std::fs::remove_file(&metrics_path);
    let meta: BTreeMap<String, String> =
        BTreeMap::from([("config".to_string(), plan.config.to_string())]);

    let n_train = plan.split.train.len();
    let steps = n_train.div_ceil(plan.batch as usize) as u32;
    let mut records = Vec::new();
    let mut best: Option<(f64, usize, Params)> = None;
    for epoch in 0..plan.epochs {
        let t0 = Instant::now();
        let order = epoch_order(&plan.split.train, plan.seed, epoch);
        net.begin_epoch(&order, plan.lr)?;
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} steps {per_sec} {msg} ({eta})",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, plan.epochs));
        let mut m = Metrics::default();
        for step in 0..steps {
            net.train_step()?;
            bar.inc(1);
            if !bar.is_hidden() && (step + 1) % PROGRESS_EVERY == 0 {
                let part = net.take_metrics()?;
                add(&mut m, &part);
                check_finite(&m, epoch, step)?;
                let (l, a) = rates(&m);
                bar.set_message(format!("loss {l:.4} acc {a:.4}"));
            }
        }
        add(&mut m, &net.take_metrics()?);
        bar.finish_and_clear();
        check_finite(&m, epoch, steps.saturating_sub(1))?;
        let train_seconds = t0.elapsed().as_secs_f64();
        let vm = net.evaluate(Which::Train, &plan.split.val, None)?;
        let (train_loss, train_accuracy) = rates(&m);
        let (val_loss, val_accuracy) = rates(&vm);
        let rec = EpochRecord {
            epoch: epoch + 1,
            train_loss,
            train_accuracy,
            val_loss,
            val_accuracy,
            seconds: t0.elapsed().as_secs_f64(),
            images_per_second: n_train as f64 / train_seconds,
        };
        log::info!(
            "epoch {}/{}: train loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} | {:.1} s, {:.0} img/s",
            rec.epoch,
            plan.epochs,
            rec.train_loss,
            rec.train_accuracy,
            rec.val_loss,
            rec.val_accuracy,
            rec.seconds,
            rec.images_per_second
        );
        append_line(
            &metrics_path,
            &serde_json::to_string(&rec).expect("plain data"),
        )?;
        let params = net.params()?;
        save_model(
            &plan.run_dir.join("last.safetensors"),
            &params,
            meta.clone(),
        )?;
        // With no validation set every epoch counts as best, so the last one is kept.
        if best
            .as_ref()
            .is_none_or(|(a, _, _)| val_accuracy >= *a || plan.split.val.is_empty())
        {
            save_model(
                &plan.run_dir.join("model.safetensors"),
                &params,
                meta.clone(),
            )?;
            best = Some((val_accuracy, epoch + 1, params));
        }
        records.push(rec);
    }
    let (val_accuracy, best_epoch, best_params) =
        best.ok_or_else(|| Error::BadArg("--epochs must be at least 1".into()))?;
    net.set_params(&best_params)?;
    let test_idx: Vec<u32> = (0..plan.test_n as u32).collect();
    let tm = net.evaluate(Which::Test, &test_idx, None)?;
    let (test_loss, test_accuracy) = rates(&tm);
    let summary = Summary {
        test_accuracy,
        test_loss,
        val_accuracy,
        best_epoch,
        epochs: records,
        device: net.device().to_string(),
        adapter: net.adapter(),
        run_dir: plan.run_dir.to_path_buf(),
        train_images: n_train,
        val_images: plan.split.val.len(),
        test_images: plan.test_n,
        seconds: start.elapsed().as_secs_f64(),
    };
    write_atomic(&plan.run_dir.join("summary.json"), &json_bytes(&summary))?;
    Ok(summary)
}

fn add(m: &mut Metrics, part: &Metrics) {
    m.loss_sum += part.loss_sum;
    m.correct += part.correct;
    m.seen += part.seen;
}

fn check_finite(m: &Metrics, epoch: usize, step: u32) -> Result<()> {
    if m.loss_sum.is_finite() {
        return Ok(());
    }
    Err(Error::Runtime(format!(
        "training diverged: the loss became {} in epoch {} by step {} (the last good checkpoint is kept)",
        m.loss_sum,
        epoch + 1,
        step + 1
    )))
}

/// `runs/<UTC timestamp>` for a run without `--out`.
pub fn default_run_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    PathBuf::from("runs").join(format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}
