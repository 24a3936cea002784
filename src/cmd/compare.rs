//! `fmnist-gpu compare`: WAME's variants against Adam, RMSprop and SGD with momentum under equal
//! conditions (same split, data order, initial weights, dropout masks and seed), per-epoch
//! validation accuracy and training loss of each, one plot with every curve (SPEC 8).

use super::experiment::{
    Place, Stats, default_dir, json_bytes, make_dir, places, prepare_fresh_out, run_jobs, show_lr,
    train_only,
};
use crate::checkpoint::write_atomic;
use crate::data;
use crate::gpu::AdapterSummary;
use crate::limits::{self, Origin};
use crate::model::Params;
use crate::net::{NetConfig, NetData};
use crate::optim::{OptimConfig, OptimizerKind, WameVariant};
use crate::paired::{Interval, Paired, Side};
use crate::plot::{CompareCurve, ComparePoint, compare_png};
use crate::train::{EpochRecord, FitPlan, fit};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

pub const COMPARE_FILE: &str = "compare.json";
pub const PLOT_FILE: &str = "compare.png";
/// The validation accuracy whose first epoch the table reports.
pub const TARGET: f64 = 0.90;

const NAMES: &str = "wame (all three variants), wame-seed, wame-paper, wame-inverse, adam, \
                     rmsprop, sgd";

#[derive(clap::Args, Clone, Debug)]
pub struct CompareArgs {
    /// Directory with the Fashion-MNIST IDX files (raw or .gz).
    #[arg(value_parser = super::utf8_path, long)]
    pub data: Option<PathBuf>,
    /// Device flags; `--adapter all` runs the runs concurrently, one thread per GPU adapter.
    #[command(flatten)]
    pub device: super::DeviceArgs,
    /// Optimizers to compare, comma-separated: wame (its three variants), wame-seed, wame-paper,
    /// wame-inverse, adam, rmsprop, sgd. Each runs at its SPEC 5 default rate (1e-3; 1e-2 for
    /// sgd); NAME@LR sets another, e.g. wame-paper@3e-2 (the paper's rule wants about 3e-2).
    #[arg(long, default_value = "wame,adam,rmsprop,sgd")]
    pub optimizers: String,
    #[arg(long, default_value_t = 12)]
    pub epochs: usize,
    /// Repeat everything with seeds SEED, SEED+1, ... and report mean and spread.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// First seed (initial weights, data order, dropout); the train/validation split always uses
    /// this one, so every seed is scored on the same validation images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 128)]
    pub batch_size: u32,
    #[arg(long, default_value_t = 128)]
    pub hidden: u32,
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.4)]
    pub dropout: f32,
    /// Share of the (limited) training images held out for validation, in (0, 1).
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Use only the first N training images of the seeded shuffle (quick runs, CI).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Run directory for compare.json and compare.png (default runs/compare-<UTC timestamp>).
    #[arg(value_parser = super::utf8_path, long)]
    pub out: Option<PathBuf>,
    /// Print the result document on stdout (logs stay on stderr).
    #[arg(long)]
    pub json: bool,
    /// Train nothing: print the table, the 95 % intervals and the paired verdicts of an earlier
    /// comparison from its compare.json (the file or its run directory), recomputed from the
    /// per-epoch records it holds.
    #[arg(value_parser = super::utf8_path, long, conflicts_with_all = [
        "data", "optimizers", "epochs", "seeds", "seed", "batch_size", "hidden", "dropout",
        "val_fraction", "limit", "out",
    ])]
    pub report: Option<PathBuf>,
}

/// One optimizer of the comparison, as named on the command line.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub name: String,
    pub optimizer: OptimConfig,
}

/// `--optimizers`: names (with `wame` standing for its three variants), each optionally `@LR`.
pub fn parse_optimizers(text: &str) -> Result<Vec<Entry>> {
    if text.trim().is_empty() {
        return Err(Error::BadArg(format!(
            "--optimizers is an empty list; name one or more of {NAMES}"
        )));
    }
    let mut out: Vec<Entry> = Vec::new();
    for item in text.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(Error::BadArg(format!(
                "--optimizers {text:?} has an empty item; name one or more of {NAMES}"
            )));
        }
        let (name, lr) = match item.split_once('@') {
            None => (item, None),
            Some((n, l)) => {
                let lr: f32 = l
                    .trim()
                    .parse()
                    .ok()
                    .filter(|v: &f32| v.is_finite() && *v > 0.0)
                    .ok_or_else(|| {
                        Error::BadArg(format!(
                            "--optimizers: {item:?} has {l:?} after @, which is not a positive \
                             learning rate"
                        ))
                    })?;
                (n.trim(), Some(lr))
            }
        };
        let wame = |v| {
            let mut c = OptimConfig::defaults(OptimizerKind::Wame);
            c.variant = v;
            c
        };
        let base: Vec<(&str, OptimConfig)> = match name.to_ascii_lowercase().as_str() {
            "wame" => vec![
                ("wame-seed", wame(WameVariant::Seed)),
                ("wame-paper", wame(WameVariant::Paper)),
                ("wame-inverse", wame(WameVariant::Inverse)),
            ],
            "wame-seed" => vec![("wame-seed", wame(WameVariant::Seed))],
            "wame-paper" => vec![("wame-paper", wame(WameVariant::Paper))],
            "wame-inverse" => vec![("wame-inverse", wame(WameVariant::Inverse))],
            "adam" => vec![("adam", OptimConfig::defaults(OptimizerKind::Adam))],
            "rmsprop" => vec![("rmsprop", OptimConfig::defaults(OptimizerKind::Rmsprop))],
            "sgd" => vec![("sgd", OptimConfig::defaults(OptimizerKind::Sgd))],
            _ => {
                return Err(Error::BadArg(format!(
                    "--optimizers: unknown optimizer {name:?}; the names are {NAMES}, each \
                     optionally followed by @LR"
                )));
            }
        };
        for (n, mut c) in base {
            let label = match lr {
                Some(lr) => {
                    c.lr = lr;
                    format!("{n}@{}", show_lr(lr))
                }
                None => n.to_string(),
            };
            if out.iter().any(|e| e.name == label) {
                return Err(Error::BadArg(format!(
                    "--optimizers names {label} twice (wame already includes its three variants)"
                )));
            }
            out.push(Entry {
                name: label,
                optimizer: c,
            });
        }
    }
    Ok(out)
}

/// The validated settings of a comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub optimizers: Vec<Entry>,
    pub epochs: usize,
    pub seeds: Vec<u64>,
    pub batch_size: u32,
    pub hidden: u32,
    pub dropout: f32,
    pub val_fraction: f64,
    pub limit: Option<usize>,
    pub data: PathBuf,
}

impl CompareArgs {
    /// Every flag checked before any data is looked for; `data` is filled in by [`run`].
    pub fn settings(&self) -> Result<Settings> {
        let optimizers = parse_optimizers(&self.optimizers)?;
        let o = Origin::Flags;
        limits::count(
            &o,
            "--epochs",
            "epochs",
            self.epochs as u64,
            limits::MAX_EPOCHS,
        )?;
        // Bounded before the seed list is built from it.
        limits::count(&o, "--seeds", "seeds", self.seeds, limits::MAX_SEEDS)?;
        limits::count(
            &o,
            "--batch-size",
            "batch_size",
            self.batch_size as u64,
            limits::MAX_BATCH,
        )?;
        limits::count(
            &o,
            "--hidden",
            "hidden",
            self.hidden as u64,
            limits::MAX_HIDDEN,
        )?;
        limits::limit(&o, self.limit)?;
        super::fraction("--dropout", self.dropout)?;
        // Without validation images there is nothing to compare.
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return Err(Error::BadArg(format!(
                "--val-fraction must be in (0, 1) for compare, got {}",
                self.val_fraction
            )));
        }
        let seeds = (0..self.seeds)
            .map(|i| self.seed.checked_add(i))
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| Error::BadArg("--seed plus --seeds overflows a u64".into()))?;
        Ok(Settings {
            optimizers,
            epochs: self.epochs,
            seeds,
            batch_size: self.batch_size,
            hidden: self.hidden,
            dropout: self.dropout,
            val_fraction: self.val_fraction,
            limit: self.limit,
            data: PathBuf::new(),
        })
    }
}

/// One optimizer trained with one seed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub seed: u64,
    pub epochs: Vec<EpochRecord>,
    /// Training stopped early because the loss or the weights became non-finite.
    pub diverged: bool,
    pub best_val_accuracy: f64,
    /// The first epoch with the best validation accuracy.
    pub best_epoch: usize,
    /// The first epoch with validation accuracy at or above [`TARGET`].
    pub epochs_to_90: Option<usize>,
    pub seconds: f64,
    pub ran_on: String,
}

impl Run {
    fn new(seed: u64, epochs: Vec<EpochRecord>, diverged: bool, seconds: f64, on: String) -> Self {
        let mut best = (f64::NEG_INFINITY, 0);
        for r in &epochs {
            if r.val_accuracy > best.0 {
                best = (r.val_accuracy, r.epoch);
            }
        }
        let epochs_to_90 = epochs
            .iter()
            .find(|r| r.val_accuracy >= TARGET)
            .map(|r| r.epoch);
        Self {
            seed,
            best_val_accuracy: best.0.max(0.0),
            best_epoch: best.1,
            epochs_to_90,
            diverged,
            epochs,
            seconds,
            ran_on: on,
        }
    }
}

/// How many seeds reached the target, and the mean epoch among those that did.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ToTarget {
    pub reached: usize,
    pub of: usize,
    pub mean_epoch: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OptimizerResult {
    pub name: String,
    pub optimizer: OptimConfig,
    pub best_val_accuracy: Stats,
    pub best_epoch: Stats,
    pub epochs_to_90: ToTarget,
    /// Means with 95 % intervals over the seeds (Student's t; none for one seed): the best
    /// validation accuracy, and the epochs to 90 % over the seeds that reached it.
    pub best_val_accuracy_ci: Interval,
    pub epochs_to_90_ci: Interval,
    pub diverged_runs: usize,
    /// Per epoch: mean, min and max over the seeds that reached that epoch.
    pub curve: Vec<ComparePoint>,
    pub runs: Vec<Run>,
}

impl OptimizerResult {
    fn new(e: &Entry, runs: Vec<Run>, epochs: usize) -> Self {
        let best: Vec<f64> = runs.iter().map(|r| r.best_val_accuracy).collect();
        let best_ep: Vec<f64> = runs.iter().map(|r| r.best_epoch as f64).collect();
        let reached: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.epochs_to_90.map(|e| e as f64))
            .collect();
        let mut curve = Vec::new();
        for ep in 1..=epochs {
            let at: Vec<&EpochRecord> = runs
                .iter()
                .filter_map(|r| r.epochs.iter().find(|x| x.epoch == ep))
                .collect();
            if at.is_empty() {
                break;
            }
            let pick = |f: fn(&EpochRecord) -> f64| {
                let v: Vec<f64> = at.iter().map(|r| f(r)).filter(|v| v.is_finite()).collect();
                if v.is_empty() {
                    Stats {
                        mean: f64::NAN,
                        std: f64::NAN,
                        min: f64::NAN,
                        max: f64::NAN,
                    }
                } else {
                    Stats::of(&v)
                }
            };
            let (va, tl) = (pick(|r| r.val_accuracy), pick(|r| r.train_loss));
            curve.push(ComparePoint {
                epoch: ep,
                runs: at.len(),
                val_accuracy: va.mean,
                val_accuracy_min: va.min,
                val_accuracy_max: va.max,
                train_loss: tl.mean,
                train_loss_min: tl.min,
                train_loss_max: tl.max,
            });
        }
        Self {
            name: e.name.clone(),
            optimizer: e.optimizer,
            best_val_accuracy: Stats::of(&best),
            best_epoch: Stats::of(&best_ep),
            epochs_to_90: ToTarget {
                reached: reached.len(),
                of: runs.len(),
                mean_epoch: (!reached.is_empty()).then(|| Stats::of(&reached).mean),
            },
            best_val_accuracy_ci: Interval::of(&best),
            epochs_to_90_ci: Interval::of(&reached),
            diverged_runs: runs.iter().filter(|r| r.diverged).count(),
            curve,
            runs,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CompareResult {
    pub command: &'static str,
    pub settings: Settings,
    pub device: &'static str,
    pub adapters: Vec<AdapterSummary>,
    pub train_images: usize,
    pub val_images: usize,
    pub optimizers: Vec<OptimizerResult>,
    /// Each WAME variant against each baseline (Adam, RMSprop) over the same seeds.
    pub paired: Vec<Paired>,
    pub seconds: f64,
    pub run_dir: PathBuf,
    pub plot: PathBuf,
}

/// Each WAME variant against each Adam and RMSprop entry, paired by seed.
pub fn paired(optimizers: &[OptimizerResult]) -> Vec<Paired> {
    let cols = |o: &OptimizerResult| {
        (
            o.runs.iter().map(|r| r.seed).collect::<Vec<u64>>(),
            o.runs
                .iter()
                .map(|r| r.best_val_accuracy)
                .collect::<Vec<f64>>(),
            o.runs.iter().map(|r| r.epochs_to_90).collect::<Vec<_>>(),
        )
    };
    let is_base = |o: &&OptimizerResult| {
        matches!(
            o.optimizer.kind,
            OptimizerKind::Adam | OptimizerKind::Rmsprop
        )
    };
    let mut out = Vec::new();
    for w in optimizers
        .iter()
        .filter(|o| o.optimizer.kind == OptimizerKind::Wame)
    {
        let wc = cols(w);
        for b in optimizers.iter().filter(is_base) {
            let bc = cols(b);
            out.push(crate::paired::compare(
                &Side {
                    name: &w.name,
                    seeds: &wc.0,
                    best: &wc.1,
                    to_target: &wc.2,
                },
                &Side {
                    name: &b.name,
                    seeds: &bc.0,
                    best: &bc.1,
                    to_target: &bc.2,
                },
                TARGET,
            ));
        }
    }
    out
}

/// The table the command prints.
pub fn table(r: &CompareResult) -> String {
    optimizer_table(&r.optimizers, r.settings.seeds.len() > 1, &r.paired)
}

/// The per-optimizer table (with 95 % intervals when `many` seeds) and the paired verdicts.
pub fn optimizer_table(optimizers: &[OptimizerResult], many: bool, paired: &[Paired]) -> String {
    let mut s = format!(
        "{:<14} {:>6}  {:<24} {:>10} {:>22} {:>11} {:>9}\n",
        "optimizer",
        "lr",
        if many {
            "best val acc [95 % CI]"
        } else {
            "best val acc"
        },
        "best epoch",
        if many {
            "epochs to 90% [CI]"
        } else {
            "epochs to 90%"
        },
        "last loss",
        "time/run"
    );
    for o in optimizers {
        let acc = if let (true, Some([lo, hi])) = (many, o.best_val_accuracy_ci.ci95) {
            format!("{:.4} [{lo:.4}, {hi:.4}]", o.best_val_accuracy.mean)
        } else {
            format!("{:.4}", o.best_val_accuracy.mean)
        };
        let best_epoch = if many {
            format!("{:.1}", o.best_epoch.mean)
        } else {
            format!("{}", o.best_epoch.mean)
        };
        let t = o.epochs_to_90;
        let to90 = match t.mean_epoch {
            None => "-".to_string(),
            Some(m) if !many => format!("{m}"),
            Some(m) => match o.epochs_to_90_ci.ci95 {
                Some([lo, hi]) => format!("{m:.1} [{lo:.1}, {hi:.1}] ({}/{})", t.reached, t.of),
                None => format!("{m:.1} ({}/{})", t.reached, t.of),
            },
        };
        let last_loss = match o.curve.last().map(|p| p.train_loss) {
            Some(v) if v.is_finite() => format!("{v:.4}"),
            Some(_) => "not finite".to_string(),
            None => "-".to_string(),
        };
        let secs = o.runs.iter().map(|r| r.seconds).sum::<f64>() / o.runs.len().max(1) as f64;
        s.push_str(&format!(
            "{:<14} {:>6}  {:<24} {:>10} {:>22} {:>11} {:>7.1} s{}\n",
            o.name,
            show_lr(o.optimizer.lr),
            acc,
            best_epoch,
            to90,
            last_loss,
            secs,
            if o.diverged_runs > 0 {
                format!("  ({} of {} runs diverged)", o.diverged_runs, o.runs.len())
            } else {
                String::new()
            }
        ));
    }
    if many && !paired.is_empty() {
        s.push_str("\npaired by seed (wame - baseline; 95 % intervals, Student's t):\n");
        for p in paired {
            s.push_str(&format!("  {}\n", p.verdict));
        }
    }
    s
}

fn run_one(
    place: &Place,
    net_data: &NetData,
    split: &data::Split,
    s: &Settings,
    entry: &Entry,
    seed: u64,
) -> Result<Run> {
    let t0 = Instant::now();
    // No more batch slots than training images (one step per epoch either way).
    let batch = s.batch_size.min(split.train.len() as u32).max(1);
    let cfg = NetConfig {
        batch,
        hidden: s.hidden,
        dropout: s.dropout,
        augment: false,
        label_smoothing: 0.0,
        optim: entry.optimizer,
        seed,
    };
    let mut net = place.net(cfg, net_data, Params::glorot(s.hidden as usize, seed))?;
    let f = fit(
        net.as_mut(),
        &FitPlan {
            batch,
            train: &split.train,
            val: &split.val,
            epochs: s.epochs,
            lr: entry.optimizer.lr,
            seed,
            validate_every_epoch: true,
        },
    )?;
    let run = Run::new(
        seed,
        f.epochs,
        f.diverged,
        t0.elapsed().as_secs_f64(),
        place.name(),
    );
    log::info!(
        "{} (lr {}) seed {} on {}: best validation accuracy {:.4} at epoch {}{}, {:.1} s",
        entry.name,
        show_lr(entry.optimizer.lr),
        seed,
        place.name(),
        run.best_val_accuracy,
        run.best_epoch,
        if run.diverged {
            format!(" (diverged in epoch {})", run.epochs.len())
        } else {
            String::new()
        },
        run.seconds
    );
    Ok(run)
}

/// What `--report` reads back from a compare.json: the settings it needs and each run's records.
#[derive(Deserialize)]
struct Saved {
    settings: SavedSettings,
    optimizers: Vec<SavedOptimizer>,
}

#[derive(Deserialize)]
struct SavedSettings {
    epochs: usize,
    seeds: Vec<u64>,
}

#[derive(Deserialize)]
struct SavedOptimizer {
    name: String,
    optimizer: OptimConfig,
    runs: Vec<SavedRun>,
}

#[derive(Deserialize)]
struct SavedRun {
    seed: u64,
    epochs: Vec<EpochRecord>,
    diverged: bool,
    seconds: f64,
    ran_on: String,
}

/// The optimizers of a saved comparison, their runs rebuilt from the records (so the summary
/// follows from the per-epoch numbers, whatever else the file says), every value checked.
pub fn load_saved(file: &std::path::Path) -> Result<(Vec<OptimizerResult>, usize, usize)> {
    let text = crate::input::read_text(file, limits::MAX_TEXT_BYTES, "a comparison file")?;
    let bad = |m: String| Error::bad_file(file, m);
    let saved: Saved =
        serde_json::from_str(&text).map_err(|e| bad(format!("is not a compare.json: {e}")))?;
    let epochs = saved.settings.epochs;
    let seeds = saved.settings.seeds.len();
    if epochs == 0 || epochs as u64 > limits::MAX_EPOCHS {
        return Err(bad(format!(
            "settings.epochs {epochs} is outside 1..={}",
            limits::MAX_EPOCHS
        )));
    }
    if saved.optimizers.is_empty() {
        return Err(bad("has no optimizers".into()));
    }
    let mut out = Vec::with_capacity(saved.optimizers.len());
    for o in saved.optimizers {
        let mut runs = Vec::with_capacity(o.runs.len());
        for r in o.runs {
            if !saved.settings.seeds.contains(&r.seed) {
                return Err(bad(format!(
                    "{}: a run with seed {}, not one of settings.seeds",
                    o.name, r.seed
                )));
            }
            if runs.iter().any(|x: &Run| x.seed == r.seed) {
                return Err(bad(format!("{}: seed {} appears twice", o.name, r.seed)));
            }
            if r.epochs.len() > epochs {
                return Err(bad(format!(
                    "{} seed {}: {} epoch records, more than settings.epochs {epochs}",
                    o.name,
                    r.seed,
                    r.epochs.len()
                )));
            }
            for (i, e) in r.epochs.iter().enumerate() {
                if e.epoch != i + 1 || !(0.0..=1.0).contains(&e.val_accuracy) {
                    return Err(bad(format!(
                        "{} seed {}: record {} has epoch {} and validation accuracy {}",
                        o.name,
                        r.seed,
                        i + 1,
                        e.epoch,
                        e.val_accuracy
                    )));
                }
            }
            runs.push(Run::new(r.seed, r.epochs, r.diverged, r.seconds, r.ran_on));
        }
        let entry = Entry {
            name: o.name,
            optimizer: o.optimizer,
        };
        out.push(OptimizerResult::new(&entry, runs, epochs));
    }
    Ok((out, epochs, seeds))
}

/// `compare --report`: the saved comparison's table and verdicts.
fn report(path: &std::path::Path, json: bool) -> Result<()> {
    let file = if path.is_dir() {
        path.join(COMPARE_FILE)
    } else {
        path.to_path_buf()
    };
    let (optimizers, epochs, seeds) = load_saved(&file)?;
    let paired = paired(&optimizers);
    if json {
        // A struct, not `json!`: that would widen the configs' f32 values to f64 digits.
        #[derive(Serialize)]
        struct Doc<'a> {
            command: &'static str,
            file: &'a std::path::Path,
            epochs: usize,
            optimizers: &'a [OptimizerResult],
            paired: &'a [Paired],
        }
        let doc = Doc {
            command: "compare --report",
            file: &file,
            epochs,
            optimizers: &optimizers,
            paired: &paired,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("plain data")
        );
    } else {
        println!("{} ({seeds} seeds, {epochs} epochs)", file.display());
        print!("{}", optimizer_table(&optimizers, seeds > 1, &paired));
    }
    Ok(())
}

pub fn run(args: &CompareArgs) -> Result<()> {
    if let Some(path) = &args.report {
        return report(path, args.json);
    }
    let start = Instant::now();
    let mut s = args.settings()?;
    let run_dir = args.out.clone().unwrap_or_else(|| default_dir("compare"));
    prepare_fresh_out("--out", &run_dir)?;
    let dir = data::locate(args.data.as_deref())?;
    s.data = dir.clone();
    let data::FashionMnist { train, .. } = data::load(&dir)?;
    let split = data::split(train.n, s.val_fraction, s.limit, s.seeds[0])?;
    if split.val.is_empty() {
        return Err(Error::BadArg(format!(
            "--val-fraction {} of {} images leaves no validation images",
            s.val_fraction,
            split.train.len()
        )));
    }
    let net_data = train_only(train);
    let places = places(&args.device)?;
    make_dir(&run_dir)?;
    let (ne, ns) = (s.optimizers.len(), s.seeds.len());
    log::info!(
        "compare: {} optimizers x {} seeds x {} epochs, {} training / {} validation images, on {}; \
         results in {}",
        ne,
        ns,
        s.epochs,
        split.train.len(),
        split.val.len(),
        places
            .iter()
            .map(Place::name)
            .collect::<Vec<_>>()
            .join(", "),
        run_dir.display()
    );
    let mut runs: Vec<Vec<Option<Run>>> = vec![vec![None; ns]; ne];
    let tb = run_dir.join(crate::tensorboard::TB_DIR);
    run_jobs(
        &places,
        ne * ns,
        |place, i| {
            run_one(
                place,
                &net_data,
                &split,
                &s,
                &s.optimizers[i % ne],
                s.seeds[i / ne],
            )
        },
        |i, r| {
            // TensorBoard: one run per optimizer and seed, from its records once it is done.
            let name = format!("{}-seed{}", s.optimizers[i % ne].name, r.seed);
            let started = crate::tensorboard::started_before(r.seconds);
            crate::tensorboard::write_run(&tb.join(name), &r.epochs, started)?;
            runs[i % ne][i / ne] = Some(r);
            Ok(())
        },
    )?;
    let optimizers: Vec<OptimizerResult> = s
        .optimizers
        .iter()
        .zip(runs)
        .map(|(e, rs)| OptimizerResult::new(e, rs.into_iter().flatten().collect(), s.epochs))
        .collect();
    let curves: Vec<CompareCurve> = optimizers
        .iter()
        .map(|o| CompareCurve {
            label: format!("{} (lr {})", o.name, show_lr(o.optimizer.lr)),
            points: o.curve.clone(),
        })
        .collect();
    let plot = run_dir.join(PLOT_FILE);
    let title = format!(
        "{} training / {} validation images, batch {}, hidden {}, dropout {}{}",
        split.train.len(),
        split.val.len(),
        s.batch_size,
        s.hidden,
        s.dropout,
        if ns > 1 {
            format!(", mean and range of {ns} seeds")
        } else {
            format!(", seed {}", s.seeds[0])
        }
    );
    write_atomic(&plot, &compare_png(&curves, &title)?)?;
    let paired = paired(&optimizers);
    let result = CompareResult {
        command: "compare",
        paired,
        device: places[0].device(),
        adapters: places.iter().filter_map(Place::adapter).collect(),
        train_images: split.train.len(),
        val_images: split.val.len(),
        optimizers,
        seconds: start.elapsed().as_secs_f64(),
        run_dir: run_dir.clone(),
        plot: plot.clone(),
        settings: s,
    };
    let path = run_dir.join(COMPARE_FILE);
    write_atomic(&path, &json_bytes(&result))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).expect("plain data")
        );
    } else {
        print!("{}", table(&result));
        println!(
            "{:.1} s; results in {}, curves in {}",
            result.seconds,
            path.display(),
            plot.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_names_expand_and_take_rates() {
        let e = parse_optimizers("wame,adam,rmsprop,sgd").unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "wame-seed",
                "wame-paper",
                "wame-inverse",
                "adam",
                "rmsprop",
                "sgd"
            ]
        );
        assert_eq!(e[1].optimizer.variant, WameVariant::Paper);
        assert_eq!(e[5].optimizer.lr, 1e-2);
        assert_eq!(e[3].optimizer.eps, 1e-8);
        let e = parse_optimizers("wame-paper@3e-2, wame-paper").unwrap();
        assert_eq!(e[0].name, "wame-paper@3e-2");
        assert_eq!(e[0].optimizer.lr, 3e-2);
        assert_eq!(e[1].optimizer.lr, 1e-3);
        for bad in [
            "",
            "adam,,sgd",
            "adamw",
            "wame,wame-seed",
            "adam@0",
            "adam@x",
            "sgd,sgd",
        ] {
            let err = parse_optimizers(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            assert!(err.to_string().contains("--optimizers"), "{err}");
        }
    }

    fn rec(epoch: usize, val_accuracy: f64, train_loss: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss,
            train_accuracy: 0.0,
            val_loss: 0.0,
            val_accuracy,
            seconds: 0.0,
            images_per_second: 0.0,
            lr: 0.0,
            optim: Vec::new(),
        }
    }

    #[test]
    fn runs_summarise_best_and_target() {
        let r = Run::new(
            0,
            vec![rec(1, 0.85, 1.0), rec(2, 0.91, 0.5), rec(3, 0.91, 0.4)],
            false,
            1.0,
            "CPU".into(),
        );
        assert_eq!((r.best_val_accuracy, r.best_epoch), (0.91, 2));
        assert_eq!(r.epochs_to_90, Some(2));
        let never = Run::new(1, vec![rec(1, 0.5, 2.0)], true, 1.0, "CPU".into());
        assert_eq!(never.epochs_to_90, None);
        let e = parse_optimizers("adam").unwrap().remove(0);
        let o = OptimizerResult::new(&e, vec![r, never], 3);
        assert_eq!((o.epochs_to_90.reached, o.epochs_to_90.of), (1, 2));
        assert_eq!(o.diverged_runs, 1);
        // Epoch 1 has both runs, epochs 2 and 3 only the one that did not stop.
        assert_eq!(o.curve.len(), 3);
        assert_eq!(o.curve[0].runs, 2);
        assert!((o.curve[0].val_accuracy - 0.675).abs() < 1e-12);
        assert_eq!(o.curve[1].runs, 1);
    }
}
