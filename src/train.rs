//! The training loop shared by both backends: epochs, learning-rate schedule, validation, the run
//! directory of SPEC 9 (written atomically, resumable), divergence checks and the summary.

use crate::checkpoint::{TrainState, load_state, save_model, save_state, write_atomic};
use crate::cpu::loss::Metrics;
use crate::data::Split;
use crate::gpu::AdapterSummary;
use crate::metrics::Report;
use crate::model::Params;
use crate::net::{Net, NetConfig, Which};
use crate::optim::OptimConfig;
use crate::optim::stats::TensorStats;
use crate::params::STATS_BINS;
use crate::rng::{Stream, epoch_stream, hash_key};
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// File names inside a run directory.
pub const CONFIG_FILE: &str = "config.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const SUMMARY_FILE: &str = "summary.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const LAST_FILE: &str = "last.safetensors";
pub const STATE_FILE: &str = "optimizer.safetensors";
pub const CURVES_FILE: &str = "curves.png";
pub const OPTIMIZER_PLOT_FILE: &str = "optimizer.png";
pub const CONFUSION_FILE: &str = "confusion.png";
pub const REPORT_FILE: &str = "report.txt";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub seconds: f64,
    pub images_per_second: f64,
    /// The learning rate this epoch ran at (after the schedule).
    #[serde(default)]
    pub lr: f64,
    /// The optimizer statistics of the epoch's last step, per parameter tensor. Runs recorded
    /// before they existed have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optim: Vec<TensorStats>,
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
    /// The epoch this process started from (0 unless `--resume`).
    pub resumed_from_epoch: usize,
    /// A `train` command line that reproduces this run bit for bit in a new run directory.
    pub command: String,
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

/// Steps between reads of the GPU's loss sums: each read drains the queue, so the GPU path checks
/// for divergence (and updates the progress bar) every this many steps; the CPU path every step.
pub const GPU_CHECK_EVERY: u32 = 20;

/// Learning rate per epoch (`--lr-schedule`), set at the start of each epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The same rate every epoch.
    #[default]
    Constant,
    /// x0.1 once half the epochs are done and again at three quarters (PyTorch's MultiStepLR
    /// with milestones ceil(E/2) and ceil(3E/4)).
    Step,
    /// Cosine annealing per epoch, `lr * (1 + cos(pi * e / E)) / 2`: the full rate in the first
    /// epoch, falling towards 0 after the last.
    Cosine,
}

impl LrSchedule {
    /// The rate of epoch `epoch` (0-based) of `epochs`.
    pub fn lr(self, base: f32, epoch: usize, epochs: usize) -> f32 {
        let epochs = epochs.max(1);
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Step => {
                let mut f = 1.0f64;
                if 2 * epoch >= epochs {
                    f *= 0.1;
                }
                if 4 * epoch >= 3 * epochs {
                    f *= 0.1;
                }
                (base as f64 * f) as f32
            }
            LrSchedule::Cosine => {
                let c = (std::f64::consts::PI * epoch as f64 / epochs as f64).cos();
                (base as f64 * 0.5 * (1.0 + c)) as f32
            }
        }
    }
}

/// What defines a run: `config.json` (with `device` and `adapter` beside it) and the `config`
/// metadata of every checkpoint. `--resume` reads it back.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunConfig {
    pub data: PathBuf,
    pub epochs: usize,
    pub batch_size: u32,
    pub optimizer: OptimConfig,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    pub hidden: u32,
    pub dropout: f32,
    pub val_fraction: f64,
    pub limit: Option<usize>,
    pub augment: bool,
    /// Runs before the flag existed read 0.
    #[serde(default)]
    pub label_smoothing: f32,
    pub seed: u64,
}

impl RunConfig {
    /// The `fmnist-gpu train` command line that reproduces this run exactly: every flag that
    /// defines it spelled out (so no default or preset can shift it), and the device it ran on
    /// (results are bit-identical per adapter, not across adapters). Without `--out`, so it
    /// starts a new run directory.
    pub fn command(&self, adapter: Option<&AdapterSummary>) -> String {
        let o = &self.optimizer;
        let mut a: Vec<String> = vec!["fmnist-gpu".into(), "train".into()];
        let mut flag = |name: &str, value: String| {
            a.push(format!("--{name}"));
            if !value.is_empty() {
                a.push(shell_word(&value));
            }
        };
        flag("data", self.data.display().to_string());
        match adapter {
            None => flag("device", "cpu".into()),
            Some(ad) => {
                flag("backend", ad.backend.to_lowercase());
                flag("adapter", ad.name.clone());
            }
        }
        flag("epochs", self.epochs.to_string());
        flag("batch-size", self.batch_size.to_string());
        flag("optimizer", value_name(&o.kind));
        flag("lr", format!("{:?}", o.lr));
        flag("lr-schedule", value_name(&self.lr_schedule));
        flag("warmup-steps", o.warmup_steps.to_string());
        flag("wame-variant", value_name(&o.variant));
        flag("alpha", format!("{:?}", o.alpha));
        flag("eta-plus", format!("{:?}", o.eta_plus));
        flag("eta-minus", format!("{:?}", o.eta_minus));
        flag("zeta-min", format!("{:?}", o.zeta_min));
        flag("zeta-max", format!("{:?}", o.zeta_max));
        flag("eps", format!("{:?}", o.eps));
        flag("weight-decay", format!("{:?}", o.weight_decay));
        flag("hidden", self.hidden.to_string());
        flag("dropout", format!("{:?}", self.dropout));
        flag("val-fraction", format!("{:?}", self.val_fraction));
        if let Some(l) = self.limit {
            flag("limit", l.to_string());
        }
        if self.augment {
            flag("augment", String::new());
        }
        flag("label-smoothing", format!("{:?}", self.label_smoothing));
        flag("seed", self.seed.to_string());
        a.join(" ")
    }

    pub fn net_config(&self) -> NetConfig {
        NetConfig {
            batch: self.batch_size,
            hidden: self.hidden,
            dropout: self.dropout,
            augment: self.augment,
            label_smoothing: self.label_smoothing,
            optim: self.optimizer,
            seed: self.seed,
        }
    }

    /// `config.json`: the run config plus the device it ran on.
    pub fn to_json(&self, device: &str, adapter: Option<AdapterSummary>) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("plain data");
        if let Some(o) = v.as_object_mut() {
            o.insert("device".into(), device.into());
            o.insert(
                "adapter".into(),
                serde_json::to_value(adapter).expect("plain data"),
            );
        }
        v
    }

    /// Parses the `config` JSON of `file` (a run's config.json or a checkpoint's metadata).
    pub fn from_json_str(file: &Path, text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| Error::bad_file(file, format!("not a fmnist-gpu run config: {e}")))
    }

    /// The first field, other than `epochs` and `data`, where `other` is a different run.
    pub fn differs_from(&self, other: &RunConfig) -> Option<&'static str> {
        let o = &self.optimizer;
        let p = &other.optimizer;
        [
            ("batch_size", self.batch_size == other.batch_size),
            ("optimizer", o.kind == p.kind),
            ("lr", o.lr == p.lr),
            ("wame_variant", o.variant == p.variant),
            ("alpha", o.alpha == p.alpha),
            ("eta_plus", o.eta_plus == p.eta_plus),
            ("eta_minus", o.eta_minus == p.eta_minus),
            ("zeta_min", o.zeta_min == p.zeta_min),
            ("zeta_max", o.zeta_max == p.zeta_max),
            ("eps", o.eps == p.eps),
            ("beta1", o.beta1 == p.beta1),
            ("beta2", o.beta2 == p.beta2),
            ("momentum", o.momentum == p.momentum),
            ("lr_schedule", self.lr_schedule == other.lr_schedule),
            ("hidden", self.hidden == other.hidden),
            ("dropout", self.dropout == other.dropout),
            ("val_fraction", self.val_fraction == other.val_fraction),
            ("limit", self.limit == other.limit),
            ("augment", self.augment == other.augment),
            (
                "label_smoothing",
                self.label_smoothing == other.label_smoothing,
            ),
            ("seed", self.seed == other.seed),
        ]
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(name, _)| name)
    }
}

pub struct TrainPlan<'a> {
    pub run: &'a RunConfig,
    pub split: &'a Split,
    /// Labels of the test images evaluated at the end: indices `0..test_labels.len()` of the
    /// net's test set.
    pub test_labels: &'a [u8],
    pub run_dir: &'a Path,
    /// Continue from `run_dir/optimizer.safetensors` instead of starting afresh.
    pub resume: bool,
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

/// The first `n` records of `metrics.jsonl` (a killed run may have appended one more, possibly
/// torn, line for an epoch that was never committed).
pub fn read_records(path: &Path, n: usize) -> Result<Vec<EpochRecord>> {
    let text = crate::input::read_text(path, crate::limits::MAX_TEXT_BYTES, "a metrics file")?;
    parse_records(path, &text, n)
}

/// [`read_records`] of the file's text (`path` names it in errors).
pub fn parse_records(path: &Path, text: &str, n: usize) -> Result<Vec<EpochRecord>> {
    let records = text
        .lines()
        .take(n)
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::bad_file(path, format!("line {}: not an epoch record: {e}", i + 1))
            })
        })
        .collect::<Result<Vec<EpochRecord>>>()?;
    // The plots index the histograms by bin: a record must have all of them.
    for (i, r) in records.iter().enumerate() {
        if let Some(bad) = r
            .optim
            .iter()
            .find(|t| t.zeta.as_ref().is_some_and(|z| z.hist.len() != STATS_BINS))
        {
            return Err(Error::bad_file(
                path,
                format!(
                    "line {}: optimizer statistics of {} have {} zeta bins, not {STATS_BINS}",
                    i + 1,
                    bad.tensor,
                    bad.zeta.as_ref().map_or(0, |z| z.hist.len())
                ),
            ));
        }
    }
    if records.len() < n {
        return Err(Error::bad_file(
            path,
            format!(
                "has {} epoch records but {STATE_FILE} was saved after epoch {n}",
                records.len()
            ),
        ));
    }
    Ok(records)
}

/// Checkpoint metadata: PyTorch's `format` tag, the run config, the epoch.
pub fn model_meta(config: &str, epoch: usize, val_accuracy: f64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        ("config".to_string(), config.to_string()),
        ("epoch".to_string(), epoch.to_string()),
        ("val_accuracy".to_string(), format!("{val_accuracy:?}")),
    ])
}

/// Evaluates `indices` of `which` with predictions: the metrics (loss, accuracy as the nets count
/// them) and the per-class report against `labels` (one per index).
pub fn evaluate_report(
    net: &mut dyn Net,
    which: Which,
    indices: &[u32],
    labels: &[u8],
) -> Result<(Metrics, Report)> {
    let mut preds = Vec::with_capacity(indices.len());
    let m = net.evaluate(which, indices, Some(&mut preds))?;
    Ok((m, Report::new(labels, &preds)))
}

/// `curves.png`, and `optimizer.png` when the records hold optimizer statistics.
fn write_plots(dir: &Path, records: &[EpochRecord], run: &RunConfig) -> Result<()> {
    write_atomic(&dir.join(CURVES_FILE), &crate::plot::curves_png(records)?)?;
    let o = &run.optimizer;
    let title = format!(
        "{} (lr {}): optimizer statistics at the end of each epoch",
        crate::bench::optimizer_name(o.kind),
        o.lr
    );
    if let Some(png) = crate::plot::optimizer_png(records, (o.zeta_min, o.zeta_max), &title)? {
        write_atomic(&dir.join(OPTIMIZER_PLOT_FILE), &png)?;
    }
    Ok(())
}

/// Removes temporary files that a killed run left mid-write (`.<name>.tmp<pid>`, see
/// [`write_atomic`]); the files they were to replace are intact.
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix('.')
            && let Some((base, pid)) = rest.rsplit_once(".tmp")
            && !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && [
                CONFIG_FILE,
                METRICS_FILE,
                SUMMARY_FILE,
                MODEL_FILE,
                LAST_FILE,
                STATE_FILE,
                CURVES_FILE,
                CONFUSION_FILE,
                REPORT_FILE,
            ]
            .contains(&base)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Where divergence leaves the run, for the error message.
fn kept_note(dir: &Path, done: usize) -> String {
    if done == 0 {
        "no epoch finished, so no checkpoint was written".to_string()
    } else {
        format!(
            "the last good checkpoint (epoch {done}) is kept in {}",
            dir.display()
        )
    }
}

pub fn train(net: &mut dyn Net, plan: &TrainPlan) -> Result<Summary> {
    let start = Instant::now();
    let (run, dir) = (plan.run, plan.run_dir);
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    remove_stale_temps(dir);
    let config_json = run.to_json(net.device(), net.adapter());
    let config_str = config_json.to_string();
    let metrics_path = dir.join(METRICS_FILE);
    let state_path = dir.join(STATE_FILE);
    let mut records = Vec::new();
    let mut best: Option<(f64, usize, Params)> = None;
    let mut start_epoch = 0;
    // Without a state file no epoch was committed (the run stopped in its first): start over.
    let resume = plan.resume && state_path.exists();
    if plan.resume && !resume {
        log::info!(
            "{} has no {STATE_FILE} (no epoch finished): starting the run from the beginning",
            dir.display()
        );
    }
    if resume {
        let (st, meta) = load_state(&state_path, run.optimizer.kind)?;
        if let Some(text) = meta.get("config") {
            let saved = RunConfig::from_json_str(&state_path, text)?;
            if let Some(field) = run.differs_from(&saved) {
                return Err(Error::bad_file(
                    &state_path,
                    format!("belongs to a run with another {field} than {CONFIG_FILE} says"),
                ));
            }
        }
        if st.params.hidden != run.hidden as usize {
            return Err(Error::bad_file(
                &state_path,
                format!(
                    "has hidden width {}, the run config says {}",
                    st.params.hidden, run.hidden
                ),
            ));
        }
        if st.epoch > run.epochs {
            return Err(Error::BadArg(format!(
                "{} already has {} epochs, more than --epochs {}",
                dir.display(),
                st.epoch,
                run.epochs
            )));
        }
        // Every epoch takes the same number of steps, so the step counter is fixed by the
        // epoch count; any other value would silently shift the dropout and augment streams.
        let steps = plan
            .split
            .train
            .len()
            .div_ceil(run.batch_size.max(1) as usize) as u64;
        if st.t as u64 != st.epoch as u64 * steps {
            return Err(Error::bad_file(
                &state_path,
                format!(
                    "metadata t {} does not match epoch {}: {} epochs of {steps} steps make {}",
                    st.t,
                    st.epoch,
                    st.epoch,
                    st.epoch as u64 * steps
                ),
            ));
        }
        records = read_records(&metrics_path, st.epoch)?;
        net.set_params(&st.params)?;
        net.set_optim_state(&st.optim, st.t)?;
        // Put back what the committed state says, whatever a kill left half-updated after it.
        let mut lines = String::new();
        for r in &records {
            lines.push_str(&serde_json::to_string(r).expect("plain data"));
            lines.push('\n');
        }
        write_atomic(&metrics_path, lines.as_bytes())?;
        let last_val = records.last().map_or(0.0, |r| r.val_accuracy);
        save_model(
            &dir.join(LAST_FILE),
            &st.params,
            model_meta(&config_str, st.epoch, last_val),
        )?;
        save_model(
            &dir.join(MODEL_FILE),
            &st.best,
            model_meta(&config_str, st.best_epoch, st.best_val_accuracy),
        )?;
        log::info!(
            "resuming {} after epoch {} of {} (optimizer step {})",
            dir.display(),
            st.epoch,
            run.epochs,
            st.t
        );
        start_epoch = st.epoch;
        best = Some((st.best_val_accuracy, st.best_epoch, st.best));
    } else if plan.resume {
        // Records of an epoch that never committed go (in metrics.jsonl and the event files);
        // its model files stay until overwritten.
        write_atomic(&metrics_path, b"")?;
        crate::tensorboard::remove_event_files(dir);
    } else {
        // A fresh run owns its directory's outputs: a stale state file would resume another run.
        for f in [
            METRICS_FILE,
            STATE_FILE,
            SUMMARY_FILE,
            REPORT_FILE,
            CONFUSION_FILE,
            CURVES_FILE,
            OPTIMIZER_PLOT_FILE,
            MODEL_FILE,
            LAST_FILE,
        ] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        crate::tensorboard::remove_event_files(dir);
    }
    write_atomic(&dir.join(CONFIG_FILE), &json_bytes(&config_json))?;
    // TensorBoard: a new event file per process. A resumed run keeps the earlier files, so the
    // scalars of an epoch that was killed before it committed appear twice (TensorBoard shows
    // both points at that step); a finished run resumed for its final evaluation starts none.
    let mut events = if start_epoch < run.epochs {
        Some(crate::tensorboard::EventWriter::create(dir)?)
    } else {
        None
    };
    let state_meta = BTreeMap::from([
        ("config".to_string(), config_str.clone()),
        ("seed".to_string(), run.seed.to_string()),
        (
            "shuffle".to_string(),
            "ChaCha8 stream (seed, shuffle, epoch): depends on seed and epoch only".to_string(),
        ),
        (
            "dropout_key".to_string(),
            hash_key(run.seed, Stream::Dropout).to_string(),
        ),
        (
            "augment_key".to_string(),
            hash_key(run.seed, Stream::Augment).to_string(),
        ),
    ]);

    let n_train = plan.split.train.len();
    let steps = n_train.div_ceil(run.batch_size as usize) as u32;
    let on_gpu = net.device() == "gpu";
    let check_every = if on_gpu { GPU_CHECK_EVERY } else { 1 };
    let check_params = !on_gpu;
    let (_, t_start) = net.optim_state()?;
    let mut t_epoch = t_start;
    for epoch in start_epoch..run.epochs {
        let t0 = Instant::now();
        let lr = run.lr_schedule.lr(run.optimizer.lr, epoch, run.epochs);
        let order = epoch_order(&plan.split.train, run.seed, epoch);
        net.begin_epoch(&order, lr)?;
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} steps {per_sec} {msg} ({eta})",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, run.epochs));
        let mut m = Metrics::default();
        let mut checked = 0u32;
        for step in 0..steps {
            if step + 1 == steps {
                net.request_optim_stats()?;
            }
            net.train_step()?;
            bar.inc(1);
            let done = step + 1;
            if done % check_every == 0 || done == steps {
                let part = net.take_metrics()?;
                if !part.loss_sum.is_finite() {
                    bar.finish_and_clear();
                    let at = if done - checked == 1 {
                        format!(
                            "at step {done} of {steps} (optimizer step {})",
                            t_epoch + done
                        )
                    } else {
                        format!(
                            "between steps {} and {done} of {steps} (optimizer steps {} to {}; \
                             the GPU reports the loss every {check_every} steps)",
                            checked + 1,
                            t_epoch + checked + 1,
                            t_epoch + done
                        )
                    };
                    return Err(Error::Runtime(format!(
                        "training diverged: the training loss became {} in epoch {} {at}; \
                         stopped, {} (try a smaller --lr)",
                        part.loss_sum,
                        epoch + 1,
                        kept_note(dir, epoch)
                    )));
                }
                add(&mut m, &part);
                checked = done;
                if let Some(ev) = events.as_mut() {
                    let step = (t_epoch + done) as i64;
                    ev.scalar(
                        crate::tensorboard::STEP_TRAIN_LOSS,
                        step,
                        rates(&part).0 as f32,
                    )?;
                }
                // ReLU maps NaN to 0, so a network whose weights went NaN can keep a finite
                // loss; on the CPU the weights themselves are cheap to check every step.
                if check_params && done < steps && !net.params_finite()? {
                    bar.finish_and_clear();
                    return Err(Error::Runtime(format!(
                        "training diverged: the parameters became NaN or infinite in epoch {} at \
                         step {done} of {steps} (optimizer step {}); stopped, {} (try a smaller --lr)",
                        epoch + 1,
                        t_epoch + done,
                        kept_note(dir, epoch)
                    )));
                }
                let (l, a) = rates(&m);
                bar.set_message(format!("loss {l:.4} acc {a:.4}"));
            }
        }
        bar.finish_and_clear();
        let train_seconds = t0.elapsed().as_secs_f64();
        let vm = net.evaluate(Which::Train, &plan.split.val, None)?;
        let params = net.params()?;
        if !params.all_finite() || !vm.loss_sum.is_finite() {
            let when = if check_params {
                format!(
                    "at step {steps} of {steps} (optimizer step {})",
                    t_epoch + steps
                )
            } else {
                format!(
                    "at some step of 1 to {steps} (optimizer steps {} to {}; the GPU's parameters \
                     are read once per epoch, its loss every {check_every} steps)",
                    t_epoch + 1,
                    t_epoch + steps
                )
            };
            return Err(Error::Runtime(format!(
                "training diverged: the parameters became NaN or infinite in epoch {} {when}; \
                 stopped, {} (try a smaller --lr)",
                epoch + 1,
                kept_note(dir, epoch)
            )));
        }
        t_epoch += steps;
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
            lr: lr as f64,
            optim: net.take_optim_stats()?,
        };
        // With --val-fraction 0 the records hold 0 for validation; the log says there is none
        // rather than print a 0 % accuracy.
        let val = if plan.split.val.is_empty() {
            "no validation split".to_string()
        } else {
            format!("val loss {:.4} acc {:.4}", rec.val_loss, rec.val_accuracy)
        };
        log::info!(
            "epoch {}/{}: train loss {:.4} acc {:.4} | {val} | lr {:.3e} | {:.1} s, {:.0} img/s",
            rec.epoch,
            run.epochs,
            rec.train_loss,
            rec.train_accuracy,
            lr,
            rec.seconds,
            rec.images_per_second
        );
        // Order matters for a kill at any moment: the records and models first, then the state
        // file, whose rename commits the epoch; --resume rebuilds the others from it.
        append_line(
            &metrics_path,
            &serde_json::to_string(&rec).expect("plain data"),
        )?;
        if let Some(ev) = events.as_mut() {
            ev.epoch(&rec)?;
        }
        save_model(
            &dir.join(LAST_FILE),
            &params,
            model_meta(&config_str, epoch + 1, val_accuracy),
        )?;
        // With no validation set every epoch counts as best, so the last one is kept.
        if best
            .as_ref()
            .is_none_or(|(a, _, _)| val_accuracy >= *a || plan.split.val.is_empty())
        {
            save_model(
                &dir.join(MODEL_FILE),
                &params,
                model_meta(&config_str, epoch + 1, val_accuracy),
            )?;
            best = Some((val_accuracy, epoch + 1, params.clone()));
        }
        let (optim, t) = net.optim_state()?;
        let (best_val_accuracy, best_epoch, best_params) =
            best.as_ref().expect("set above on the first epoch");
        save_state(
            &state_path,
            run.optimizer.kind,
            &TrainState {
                params,
                best: best_params.clone(),
                optim,
                t,
                epoch: epoch + 1,
                best_epoch: *best_epoch,
                best_val_accuracy: *best_val_accuracy,
            },
            state_meta.clone(),
        )?;
        records.push(rec);
        write_plots(dir, &records, run)?;
    }
    let (val_accuracy, best_epoch, best_params) =
        best.ok_or_else(|| Error::BadArg("--epochs must be at least 1".into()))?;
    if records.len() == start_epoch && start_epoch > 0 {
        // Resumed a finished run: only the final evaluation is redone.
        write_plots(dir, &records, run)?;
    }
    net.set_params(&best_params)?;
    let test_idx: Vec<u32> = (0..plan.test_labels.len() as u32).collect();
    let (tm, report) = evaluate_report(net, Which::Test, &test_idx, plan.test_labels)?;
    let (test_loss, test_accuracy) = rates(&tm);
    let header = format!(
        "{} of {} (epoch {best_epoch}) on the test set ({} images), {} device\n\
         accuracy {test_accuracy:.4}, mean loss {test_loss:.4}\n\n",
        MODEL_FILE,
        dir.display(),
        test_idx.len(),
        net.device(),
    );
    write_atomic(
        &dir.join(REPORT_FILE),
        format!("{header}{}", report.text()).as_bytes(),
    )?;
    write_atomic(
        &dir.join(CONFUSION_FILE),
        &crate::plot::confusion_png(
            &report.confusion_matrix,
            &format!(
                "Test confusion matrix (accuracy {:.2} %)",
                100.0 * test_accuracy
            ),
        )?,
    )?;
    let summary = Summary {
        test_accuracy,
        test_loss,
        val_accuracy,
        best_epoch,
        epochs: records,
        device: net.device().to_string(),
        adapter: net.adapter(),
        run_dir: dir.to_path_buf(),
        train_images: n_train,
        val_images: plan.split.val.len(),
        test_images: test_idx.len(),
        seconds: start.elapsed().as_secs_f64(),
        resumed_from_epoch: start_epoch,
        command: plan.run.command(net.adapter().as_ref()),
    };
    write_atomic(&dir.join(SUMMARY_FILE), &json_bytes(&summary))?;
    Ok(summary)
}

fn add(m: &mut Metrics, part: &Metrics) {
    m.loss_sum += part.loss_sum;
    m.correct += part.correct;
    m.seen += part.seen;
}

/// A clap value name as typed on the command line (`rmsprop`, `cosine`).
fn value_name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// `w` as one POSIX shell word: unchanged when it holds only characters no shell treats
/// specially, else single-quoted.
fn shell_word(w: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@+,%".contains(c);
    if !w.is_empty() && w.chars().all(plain) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
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

/// One [`fit`]: `train` and `val` index the net's training set.
#[derive(Clone, Copy, Debug)]
pub struct FitPlan<'a> {
    /// The batch size the net was built for.
    pub batch: u32,
    pub train: &'a [u32],
    pub val: &'a [u32],
    pub epochs: usize,
    pub lr: f32,
    /// Seed of the per-epoch order, [`epoch_order`]`(train, seed, epoch)`.
    pub seed: u64,
    /// Evaluate `val` after every epoch (curves), or only after the last one (a score: saves the
    /// forward passes over `val` that nobody reads).
    pub validate_every_epoch: bool,
}

/// What [`fit`] did: one record per epoch it finished, and whether it stopped early because the
/// training loss, the validation loss or the weights became non-finite. Epochs that were not
/// validated have NaN `val_loss` and `val_accuracy`; the last record is always validated.
#[derive(Clone, Debug, Serialize)]
pub struct Fit {
    pub epochs: Vec<EpochRecord>,
    pub diverged: bool,
}

/// Trains `net` for `plan.epochs` epochs at a constant rate and validates as the plan says.
/// No files and no progress bar: the building block of `search` and `compare`, which train many
/// short runs and must survive one that diverges, so divergence ends the fit (after validating
/// the diverged net) instead of failing it. Loss sums are read once per epoch, so the GPU drains
/// its queue once per epoch.
pub fn fit(net: &mut dyn Net, plan: &FitPlan) -> Result<Fit> {
    let steps = plan.train.len().div_ceil(plan.batch.max(1) as usize);
    let mut records = Vec::with_capacity(plan.epochs);
    for epoch in 0..plan.epochs {
        let t0 = Instant::now();
        net.begin_epoch(&epoch_order(plan.train, plan.seed, epoch), plan.lr)?;
        for step in 0..steps {
            if step + 1 == steps {
                net.request_optim_stats()?;
            }
            net.train_step()?;
        }
        let m = net.take_metrics()?;
        let train_seconds = t0.elapsed().as_secs_f64();
        let (train_loss, train_accuracy) = rates(&m);
        // ReLU maps NaN to 0, so a finite loss does not prove finite weights: check both.
        let broken = !train_loss.is_finite() || !net.params_finite()?;
        let last = epoch + 1 == plan.epochs || broken;
        let (val_loss, val_accuracy) = if plan.validate_every_epoch || last {
            rates(&net.evaluate(Which::Train, plan.val, None)?)
        } else {
            (f64::NAN, f64::NAN)
        };
        records.push(EpochRecord {
            epoch: epoch + 1,
            train_loss,
            train_accuracy,
            val_loss,
            val_accuracy,
            seconds: t0.elapsed().as_secs_f64(),
            images_per_second: plan.train.len() as f64 / train_seconds,
            lr: plan.lr as f64,
            optim: net.take_optim_stats()?,
        });
        let val_broken = (plan.validate_every_epoch || last) && !val_loss.is_finite();
        if broken || val_broken {
            return Ok(Fit {
                epochs: records,
                diverged: true,
            });
        }
    }
    Ok(Fit {
        epochs: records,
        diverged: false,
    })
}
