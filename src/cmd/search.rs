//! `fmnist-gpu search`: the seed report's random search over hidden units, dropout and learning
//! rate, each configuration scored by k-fold cross-validation on the training set (SPEC 8).
//!
//! Every trial sees the same folds, the same per-epoch data order and, for a given hidden width,
//! the same initial weights, so configurations differ only in what the grid varies. The test set
//! is never loaded into a net.

use super::experiment::{
    Place, Stats, default_dir, json_bytes, kept_indices, make_dir, parse_list, places,
    prepare_fresh_out, run_jobs, show_lr, train_only,
};
use super::train::OptimArgs;
use crate::checkpoint::write_atomic;
use crate::data;
use crate::gpu::AdapterSummary;
use crate::limits::{self, Origin};
use crate::model::Params;
use crate::net::NetConfig;
use crate::optim::OptimConfig;
use crate::rng::{Stream, stream};
use crate::train::{FitPlan, fit};
use crate::{Error, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

pub const SEARCH_FILE: &str = "search.json";

#[derive(clap::Args, Clone, Debug)]
pub struct SearchArgs {
    /// Directory with the Fashion-MNIST IDX files (raw or .gz).
    #[arg(value_parser = super::utf8_path, long)]
    pub data: Option<PathBuf>,
    /// Device flags; `--adapter all` runs trials concurrently, one thread per GPU adapter.
    #[command(flatten)]
    pub device: super::DeviceArgs,
    /// Hidden units to draw from (comma-separated).
    #[arg(long, default_value = "128,256,512,1024")]
    pub hidden_units: String,
    /// Dropout probabilities to draw from (comma-separated, each in [0, 1)).
    #[arg(long, default_value = "0.2,0.4,0.6,0.8")]
    pub dropouts: String,
    /// Learning rates to draw from (comma-separated). The seed report searched one rate per
    /// round: --lrs 1e-4, then 1e-3, then 1e-2.
    #[arg(long, default_value = "1e-2,1e-3,1e-4")]
    pub lrs: String,
    /// Configurations to try (drawn without repetition while the grid has unused ones).
    #[arg(long, default_value_t = 11)]
    pub iters: usize,
    /// Folds of the cross-validation on the training set (at least 2).
    #[arg(long, default_value_t = 2)]
    pub folds: usize,
    /// Epochs per fold.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: u32,
    /// Optimizer and its hyper-parameters; the learning rate comes from --lrs, not --lr.
    #[command(flatten)]
    pub optim: OptimArgs,
    /// Use only the first N training images of the seeded shuffle (quick runs, CI).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the configuration draws, the folds, the initial weights, the data order and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run directory for search.json (default runs/search-<UTC timestamp>).
    #[arg(value_parser = super::utf8_path, long)]
    pub out: Option<PathBuf>,
    /// Print the result document on stdout (logs stay on stderr).
    #[arg(long)]
    pub json: bool,
}

/// The validated settings of a search.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub hidden_units: Vec<u32>,
    pub dropouts: Vec<f32>,
    pub lrs: Vec<f32>,
    pub iters: usize,
    pub folds: usize,
    pub epochs: usize,
    pub batch_size: u32,
    /// The optimizer every trial uses; its `lr` is replaced by each trial's.
    pub optimizer: OptimConfig,
    pub limit: Option<usize>,
    pub seed: u64,
    pub data: PathBuf,
}

impl SearchArgs {
    /// Every flag checked before any data is looked for (the fold count against the image count
    /// once the images are known); `data` is filled in by [`run`].
    pub fn settings(&self) -> Result<Settings> {
        let hidden_units: Vec<u32> = parse_list("--hidden-units", &self.hidden_units)?;
        let dropouts: Vec<f32> = parse_list("--dropouts", &self.dropouts)?;
        let lrs: Vec<f32> = parse_list("--lrs", &self.lrs)?;
        if let Some(h) = hidden_units
            .iter()
            .find(|&&h| h == 0 || h as u64 > limits::MAX_HIDDEN)
        {
            return Err(Error::BadArg(format!(
                "--hidden-units: {h} is not a layer width; each must be at least 1 and at most {}",
                limits::MAX_HIDDEN
            )));
        }
        if let Some(p) = dropouts.iter().find(|p| !(0.0..1.0).contains(*p)) {
            return Err(Error::BadArg(format!(
                "--dropouts: {p} is not a dropout probability; each must be in [0, 1)"
            )));
        }
        if let Some(lr) = lrs.iter().find(|lr| !(lr.is_finite() && **lr > 0.0)) {
            return Err(Error::BadArg(format!(
                "--lrs: {lr} is not a learning rate; each must be a positive number"
            )));
        }
        if self.iters == 0 {
            return Err(Error::BadArg(
                "--iters must be at least 1 (the number of configurations to try)".into(),
            ));
        }
        if self.folds < 2 {
            return Err(Error::BadArg(format!(
                "--folds {} is too few: cross-validation needs at least 2 folds",
                self.folds
            )));
        }
        let o = Origin::Flags;
        limits::count(&o, "--iters", "iters", self.iters as u64, limits::MAX_ITERS)?;
        limits::count(&o, "--folds", "folds", self.folds as u64, limits::MAX_FOLDS)?;
        limits::count(
            &o,
            "--epochs",
            "epochs",
            self.epochs as u64,
            limits::MAX_EPOCHS,
        )?;
        limits::count(
            &o,
            "--batch-size",
            "batch_size",
            self.batch_size as u64,
            limits::MAX_BATCH,
        )?;
        limits::limit(&o, self.limit)?;
        if self.optim.lr.is_some() {
            return Err(Error::BadArg(
                "--lr does not apply to search: the learning rates come from --lrs".into(),
            ));
        }
        if let Some(l) = self.limit
            && l < self.folds
        {
            return Err(Error::BadArg(format!(
                "--folds {} is more than the {l} images of --limit {l}: each fold needs at least \
                 one image",
                self.folds
            )));
        }
        let optimizer = self.optim.config()?;
        // config() checked lr * wd < 1 for the default rate only; every --lrs rate must pass.
        if let Some(lr) = lrs.iter().find(|&&lr| lr * optimizer.weight_decay >= 1.0) {
            return Err(Error::BadArg(format!(
                "--weight-decay {} with the rate {lr} of --lrs: lr * weight decay must be below 1",
                optimizer.weight_decay
            )));
        }
        Ok(Settings {
            hidden_units,
            dropouts,
            lrs,
            iters: self.iters,
            folds: self.folds,
            epochs: self.epochs,
            batch_size: self.batch_size,
            optimizer,
            limit: self.limit,
            seed: self.seed,
            data: PathBuf::new(),
        })
    }
}

/// One point of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Config {
    pub hidden: u32,
    pub dropout: f32,
    pub lr: f32,
}

/// `iters` configurations drawn uniformly from the grid with the search stream of `seed`, without
/// repetition; once the grid is used up (more iterations than points) another pass begins.
pub fn draw_configs(s: &Settings) -> Vec<Config> {
    let (nh, nd, nl) = (s.hidden_units.len(), s.dropouts.len(), s.lrs.len());
    let grid = nh * nd * nl;
    let mut rng = stream(s.seed, Stream::Search);
    let mut out = Vec::with_capacity(s.iters);
    while out.len() < s.iters {
        let take = (s.iters - out.len()).min(grid);
        for k in rand::seq::index::sample(&mut rng, grid, take).into_iter() {
            out.push(Config {
                hidden: s.hidden_units[k / (nd * nl)],
                dropout: s.dropouts[k / nl % nd],
                lr: s.lrs[k % nl],
            });
        }
    }
    out
}

/// A seeded partition of `kept` into `k` folds of sizes differing by at most one. `kept` is
/// already in the seeded split order, so consecutive runs of it are random subsets.
pub fn make_folds(kept: &[u32], k: usize) -> Vec<Vec<u32>> {
    let (base, extra) = (kept.len() / k, kept.len() % k);
    let mut folds = Vec::with_capacity(k);
    let mut at = 0;
    for i in 0..k {
        let len = base + usize::from(i < extra);
        folds.push(kept[at..at + len].to_vec());
        at += len;
    }
    folds
}

#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    /// Position in the sorted table (1 = best).
    pub rank: usize,
    /// Position in the draw order (1-based).
    pub trial: usize,
    pub hidden: u32,
    pub dropout: f32,
    pub lr: f32,
    /// Validation accuracy after the last epoch, over the folds.
    pub accuracy: Stats,
    pub fold_accuracies: Vec<f64>,
    pub fold_val_losses: Vec<f64>,
    pub fold_train_losses: Vec<f64>,
    /// Folds whose training diverged (stopped early; their accuracy is what the diverged net
    /// scores, usually chance).
    pub diverged_folds: usize,
    /// Wall time of all folds of the trial.
    pub seconds: f64,
    /// Where it ran: "CPU" or the adapter name.
    pub ran_on: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct SearchResult {
    pub command: &'static str,
    /// False while the search is still running (search.json is rewritten after every trial).
    pub complete: bool,
    pub settings: Settings,
    pub device: &'static str,
    pub adapters: Vec<AdapterSummary>,
    pub images: usize,
    pub fold_sizes: Vec<usize>,
    /// Sorted by mean cross-validated accuracy, best first (ties: earlier trial first).
    pub trials: Vec<Trial>,
    pub best: Option<Trial>,
    pub seconds: f64,
    pub run_dir: PathBuf,
}

fn sort_trials(trials: &mut [Trial]) {
    // NaN sorts as worst so a broken trial can never head the table.
    let key = |t: &Trial| {
        if t.accuracy.mean.is_nan() {
            f64::NEG_INFINITY
        } else {
            t.accuracy.mean
        }
    };
    trials.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.trial.cmp(&b.trial)));
    for (i, t) in trials.iter_mut().enumerate() {
        t.rank = i + 1;
    }
}

/// The TensorBoard run directory of trial `index` (0-based) under `<out>/tb/`:
/// `trial<N>-h<hidden>-d<dropout>-lr<lr>`, one `fold<K>` sub-directory per fold.
pub fn trial_name(index: usize, cfg: Config) -> String {
    format!(
        "trial{}-h{}-d{}-lr{}",
        index + 1,
        cfg.hidden,
        cfg.dropout,
        show_lr(cfg.lr)
    )
}

/// Trains configuration `cfg` on every fold.
fn run_trial(
    place: &Place,
    net_data: &crate::net::NetData,
    folds: &[Vec<u32>],
    s: &Settings,
    index: usize,
    cfg: Config,
    tb: &std::path::Path,
) -> Result<Trial> {
    let t0 = Instant::now();
    let mut optim = s.optimizer;
    optim.lr = cfg.lr;
    let (mut accs, mut vls, mut tls, mut diverged) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for (k, val) in folds.iter().enumerate() {
        let train: Vec<u32> = folds
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != k)
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        // No more batch slots than training images (one step per epoch either way).
        let batch = s.batch_size.min(train.len() as u32).max(1);
        let net_cfg = NetConfig {
            batch,
            hidden: cfg.hidden,
            dropout: cfg.dropout,
            augment: false,
            label_smoothing: 0.0,
            optim,
            seed: s.seed,
        };
        let params = Params::glorot(cfg.hidden as usize, s.seed);
        let mut net = place.net(net_cfg, net_data, params)?;
        let f0 = Instant::now();
        let run = fit(
            net.as_mut(),
            &FitPlan {
                batch,
                train: &train,
                val,
                epochs: s.epochs,
                lr: cfg.lr,
                seed: s.seed,
                validate_every_epoch: false,
            },
        )?;
        // TensorBoard: one run per trial and fold (only the last epoch is validated).
        crate::tensorboard::write_run(
            &tb.join(trial_name(index, cfg))
                .join(format!("fold{}", k + 1)),
            &run.epochs,
            crate::tensorboard::started_before(f0.elapsed().as_secs_f64()),
        )?;
        let last = run
            .epochs
            .last()
            .ok_or_else(|| Error::Runtime("internal: a fold trained no epoch".into()))?;
        log::info!(
            "trial {}/{} fold {}/{} (hidden {}, dropout {}, lr {}) on {}: val accuracy {:.4}{}, {:.1} s",
            index + 1,
            s.iters,
            k + 1,
            folds.len(),
            cfg.hidden,
            cfg.dropout,
            show_lr(cfg.lr),
            place.name(),
            last.val_accuracy,
            if run.diverged {
                format!(" (diverged in epoch {})", last.epoch)
            } else {
                String::new()
            },
            f0.elapsed().as_secs_f64()
        );
        accs.push(last.val_accuracy);
        vls.push(last.val_loss);
        tls.push(last.train_loss);
        diverged += usize::from(run.diverged);
    }
    Ok(Trial {
        rank: 0,
        trial: index + 1,
        hidden: cfg.hidden,
        dropout: cfg.dropout,
        lr: cfg.lr,
        accuracy: Stats::of(&accs),
        fold_accuracies: accs,
        fold_val_losses: vls,
        fold_train_losses: tls,
        diverged_folds: diverged,
        seconds: t0.elapsed().as_secs_f64(),
        ran_on: place.name(),
    })
}

/// The table the command prints.
pub fn table(r: &SearchResult) -> String {
    let mut s = format!(
        "{:>4} {:>5} {:>6} {:>7} {:>6}  {:<17} {:<15} {:>9}\n",
        "rank", "trial", "hidden", "dropout", "lr", "cv accuracy", "fold min-max", "time"
    );
    for t in &r.trials {
        s.push_str(&format!(
            "{:>4} {:>5} {:>6} {:>7} {:>6}  {:<17} {:<15} {:>7.1} s{}\n",
            t.rank,
            t.trial,
            t.hidden,
            t.dropout,
            show_lr(t.lr),
            format!("{:.4} ± {:.4}", t.accuracy.mean, t.accuracy.std),
            format!("{:.4}-{:.4}", t.accuracy.min, t.accuracy.max),
            t.seconds,
            if t.diverged_folds > 0 {
                format!(
                    "  ({} of {} folds diverged)",
                    t.diverged_folds, r.settings.folds
                )
            } else {
                String::new()
            }
        ));
    }
    s
}

pub fn run(args: &SearchArgs) -> Result<()> {
    let start = Instant::now();
    let mut s = args.settings()?;
    let run_dir = args.out.clone().unwrap_or_else(|| default_dir("search"));
    prepare_fresh_out("--out", &run_dir)?;
    let dir = data::locate(args.data.as_deref())?;
    s.data = dir.clone();
    let grid = s.hidden_units.len() * s.dropouts.len() * s.lrs.len();
    if s.iters > grid {
        log::warn!(
            "--iters {} is more than the {grid} configurations of the grid: every configuration \
             runs, and {} of them again (same folds and seed, so the same result)",
            s.iters,
            s.iters - grid
        );
    }
    let data::FashionMnist { train, .. } = data::load(&dir)?;
    let kept = kept_indices(train.n, s.limit, s.seed)?;
    if kept.len() < s.folds {
        return Err(Error::BadArg(format!(
            "--folds {} is more than the {} training images: each fold needs at least one",
            s.folds,
            kept.len()
        )));
    }
    let folds = make_folds(&kept, s.folds);
    let net_data = train_only(train);
    let places = places(&args.device)?;
    make_dir(&run_dir)?;
    let configs = draw_configs(&s);
    log::info!(
        "search: {} trials x {} folds x {} epochs on {} training images ({} per fold) on {}; \
         results in {}",
        s.iters,
        s.folds,
        s.epochs,
        kept.len(),
        folds[0].len(),
        places
            .iter()
            .map(Place::name)
            .collect::<Vec<_>>()
            .join(", "),
        run_dir.display()
    );
    let mut result = SearchResult {
        command: "search",
        complete: false,
        settings: s.clone(),
        device: places[0].device(),
        adapters: places.iter().filter_map(Place::adapter).collect(),
        images: kept.len(),
        fold_sizes: folds.iter().map(Vec::len).collect(),
        trials: Vec::new(),
        best: None,
        seconds: 0.0,
        run_dir: run_dir.clone(),
    };
    let path = run_dir.join(SEARCH_FILE);
    let tb = run_dir.join(crate::tensorboard::TB_DIR);
    run_jobs(
        &places,
        configs.len(),
        |place, i| run_trial(place, &net_data, &folds, &s, i, configs[i], &tb),
        |_, trial| {
            log::info!(
                "trial {} (hidden {}, dropout {}, lr {}): cross-validated accuracy {:.4} ± {:.4}, {:.1} s",
                trial.trial,
                trial.hidden,
                trial.dropout,
                show_lr(trial.lr),
                trial.accuracy.mean,
                trial.accuracy.std,
                trial.seconds
            );
            result.trials.push(trial);
            sort_trials(&mut result.trials);
            result.best = result.trials.first().cloned();
            result.seconds = start.elapsed().as_secs_f64();
            write_atomic(&path, &json_bytes(&result))
        },
    )?;
    result.complete = true;
    result.seconds = start.elapsed().as_secs_f64();
    write_atomic(&path, &json_bytes(&result))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).expect("plain data")
        );
    } else {
        print!("{}", table(&result));
        if let Some(b) = &result.best {
            println!(
                "best: hidden {}, dropout {}, lr {}: {:.4} ± {:.4} mean {}-fold cross-validated \
                 accuracy",
                b.hidden,
                b.dropout,
                show_lr(b.lr),
                b.accuracy.mean,
                b.accuracy.std,
                s.folds
            );
        }
        println!(
            "{} trials in {:.1} s; results in {}",
            result.trials.len(),
            result.seconds,
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(h: &[u32], d: &[f32], l: &[f32], iters: usize) -> Settings {
        Settings {
            hidden_units: h.to_vec(),
            dropouts: d.to_vec(),
            lrs: l.to_vec(),
            iters,
            folds: 2,
            epochs: 1,
            batch_size: 128,
            optimizer: OptimConfig::defaults(crate::optim::OptimizerKind::Wame),
            limit: None,
            seed: 3,
            data: PathBuf::new(),
        }
    }

    #[test]
    fn draws_cover_the_grid_without_repeats_then_cycle() {
        let s = settings(&[128, 256], &[0.2, 0.4, 0.6], &[1e-3, 1e-4], 12);
        let c = draw_configs(&s);
        assert_eq!(c.len(), 12);
        for (i, a) in c.iter().enumerate() {
            assert!(!c[..i].contains(a), "repeat {a:?} within the grid's 12");
        }
        let s = settings(&[128], &[0.2, 0.4], &[1e-3], 5);
        let c = draw_configs(&s);
        assert_eq!(c.len(), 5);
        assert_ne!(c[0], c[1]);
        assert!(c[2..4].contains(&c[0]) && c[2..4].contains(&c[1]));
        // Seeded: the same seed draws the same list, another seed (almost surely) another.
        let s = settings(&[128, 256, 512, 1024], &[0.2, 0.4, 0.6, 0.8], &[1e-3], 8);
        assert_eq!(draw_configs(&s), draw_configs(&s));
        let mut t = s.clone();
        t.seed = 4;
        assert_ne!(draw_configs(&s), draw_configs(&t));
    }

    #[test]
    fn folds_partition_the_indices() {
        let kept: Vec<u32> = (0..11).rev().collect();
        let f = make_folds(&kept, 3);
        assert_eq!(f.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 3]);
        let mut all: Vec<u32> = f.concat();
        all.sort();
        assert_eq!(all, (0..11).collect::<Vec<_>>());
    }

    #[test]
    fn nan_trials_sort_last() {
        let t = |trial, mean| Trial {
            rank: 0,
            trial,
            hidden: 128,
            dropout: 0.4,
            lr: 1e-3,
            accuracy: Stats {
                mean,
                ..Stats::default()
            },
            fold_accuracies: vec![],
            fold_val_losses: vec![],
            fold_train_losses: vec![],
            diverged_folds: 0,
            seconds: 0.0,
            ran_on: String::new(),
        };
        let mut v = vec![t(1, f64::NAN), t(2, 0.5), t(3, 0.9), t(4, 0.5)];
        sort_trials(&mut v);
        let order: Vec<usize> = v.iter().map(|t| t.trial).collect();
        assert_eq!(order, vec![3, 2, 4, 1]);
        assert_eq!(v[3].rank, 4);
    }
}
