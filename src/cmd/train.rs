//! `fmnist-gpu train`: flags of SPEC 8, validated, then the shared training loop.

use crate::data::{self, FashionMnist, Split};
use crate::limits::{self, Origin};
use crate::model::Params;
use crate::net::NetData;
use crate::optim::{OptimConfig, OptimizerKind, WameVariant};
use crate::train::{
    CONFIG_FILE, LAST_FILE, LrSchedule, METRICS_FILE, MODEL_FILE, RunConfig, STATE_FILE,
    SUMMARY_FILE, TrainPlan, default_run_dir, train,
};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Clone, Debug)]
pub struct TrainArgs {
    /// Directory with the Fashion-MNIST IDX files (raw or .gz).
    #[arg(value_parser = super::utf8_path, long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub device: super::DeviceArgs,
    /// Epochs of the run (1 to 1,000) [default: 10; 15 with --preset seed].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per step (1 to 4,096; more than the training images is clamped to them).
    #[arg(long, default_value_t = 128)]
    pub batch_size: u32,
    #[command(flatten)]
    pub optim: OptimArgs,
    /// Units of the hidden dense layer (1 to 4,096).
    #[arg(long, default_value_t = 128)]
    pub hidden: u32,
    /// Dropout probability after pool2 (inverted dropout; 0 disables it).
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.4)]
    pub dropout: f32,
    /// Share of the training images held out for validation, in [0, 1).
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Keep only the first N training images after the seeded shuffle (quick runs, CI).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Random horizontal flips and shifts of up to 2 pixels.
    #[arg(long)]
    pub augment: bool,
    /// Label smoothing of the training loss, in [0, 1) (PyTorch's CrossEntropyLoss
    /// label_smoothing: the target is (1 - LS) * onehot + LS / 10). Validation and test losses
    /// stay plain cross-entropy.
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "LS",
        default_value_t = 0.0
    )]
    pub label_smoothing: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Learning rate per epoch: constant, step (x0.1 once 50% and again once 75% of the epochs
    /// are done), or cosine (from --lr towards 0 over the epochs) [default: cosine; constant with
    /// --preset seed].
    #[arg(long, value_enum)]
    pub lr_schedule: Option<LrSchedule>,
    /// Starting point for the flags not given: `default` (10 epochs, cosine schedule, a warm-up
    /// of one epoch's steps: the best test accuracy per minute measured) or `seed` (the seed
    /// report's 15 epochs at a constant rate without warm-up, SPEC 5's optimizer as it was tested).
    #[arg(long, value_enum, default_value_t = Preset::Default, conflicts_with = "resume")]
    pub preset: Preset,
    /// Run directory (default runs/<UTC timestamp>).
    #[arg(value_parser = super::utf8_path, long)]
    pub out: Option<PathBuf>,
    /// Continue the run in DIR exactly where its last finished epoch left it. Its config.json
    /// defines the run: flags that contradict it are an error; --epochs may raise the total of a
    /// constant-rate run.
    #[arg(value_parser = super::utf8_path, long, value_name = "DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Print one JSON summary on stdout (logs stay on stderr).
    #[arg(long)]
    pub json: bool,
    /// Ids of the flags given on the command line (filled in by `main`), so --resume can tell a
    /// contradicting flag from a default.
    #[arg(skip)]
    pub explicit: Vec<String>,
}

/// `train --preset`: what the flags not given on the command line default to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// 10 epochs, cosine decay and a one-epoch linear warm-up (README, "Results at a glance").
    Default,
    /// The seed report's setting: 15 epochs, constant rate, no warm-up.
    Seed,
}

/// Optimizer flags shared by `train`, `search` and `compare`.
#[derive(clap::Args, Clone, Debug)]
pub struct OptimArgs {
    #[arg(long, value_enum, default_value_t = OptimizerKind::Wame)]
    pub optimizer: OptimizerKind,
    /// Learning rate (default 1e-3; 1e-2 for sgd). The `paper` WAME variant wants a larger one,
    /// about 3e-2.
    #[arg(allow_negative_numbers = true, long)]
    pub lr: Option<f32>,
    /// WAME multiplier: seed (zeta/Z, default), paper (Z, as printed in the paper), inverse (1/Z).
    #[arg(long, value_enum, default_value_t = WameVariant::Seed)]
    pub wame_variant: WameVariant,
    /// EMA factor of WAME's Z and theta (and RMSprop's alpha).
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.9)]
    pub alpha: f32,
    #[arg(allow_negative_numbers = true, long, default_value_t = 1.2)]
    pub eta_plus: f32,
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.1)]
    pub eta_minus: f32,
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.01)]
    pub zeta_min: f32,
    #[arg(allow_negative_numbers = true, long, default_value_t = 100.0)]
    pub zeta_max: f32,
    /// Epsilon (default 1e-12 for WAME, 1e-8 for Adam and RMSprop).
    #[arg(allow_negative_numbers = true, long)]
    pub eps: Option<f32>,
    /// Linear warm-up: step k of the first N runs at lr * k / N (0: none). WAME's first steps
    /// are up to 30 times lr (Z starts at 0); a warm-up of about an epoch keeps them small
    /// [default: train, one epoch's steps (0 with --preset seed); search and compare, 0].
    #[arg(long, value_name = "N")]
    pub warmup_steps: Option<u32>,
    /// Decoupled weight decay (AdamW's form, every parameter): each step first scales the
    /// weights by 1 - lr * WD, with the step's scheduled and warmed-up rate (0: none).
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "WD",
        default_value_t = 0.0
    )]
    pub weight_decay: f32,
}

impl OptimArgs {
    pub fn config(&self) -> Result<OptimConfig> {
        let mut c = OptimConfig::defaults(self.optimizer);
        c.lr = self.lr.unwrap_or(c.lr);
        c.eps = self.eps.unwrap_or(c.eps);
        c.variant = self.wame_variant;
        c.alpha = self.alpha;
        c.eta_plus = self.eta_plus;
        c.eta_minus = self.eta_minus;
        c.zeta_min = self.zeta_min;
        c.zeta_max = self.zeta_max;
        c.warmup_steps = self.warmup_steps.unwrap_or(0);
        c.weight_decay = self.weight_decay;
        check_optim(&c, &Origin::Flags)?;
        Ok(c)
    }
}

/// Every rule of the optimizer flags, for a config from the flags or read back from a file (a
/// run's config.json, a checkpoint's metadata): the same rules, errors naming the flag or the
/// file and key. beta1, beta2 and momentum have no flags (SPEC 5 fixes them); a file must still
/// hold values the update rules can use.
pub fn check_optim(c: &OptimConfig, o: &Origin) -> Result<()> {
    limits::positive(o, "--lr", "optimizer.lr", c.lr)?;
    limits::positive(o, "--eps", "optimizer.eps", c.eps)?;
    limits::positive(o, "--eta-plus", "optimizer.eta_plus", c.eta_plus)?;
    limits::positive(o, "--eta-minus", "optimizer.eta_minus", c.eta_minus)?;
    limits::positive(o, "--zeta-min", "optimizer.zeta_min", c.zeta_min)?;
    limits::positive(o, "--zeta-max", "optimizer.zeta_max", c.zeta_max)?;
    // lr * wd >= 1 would zero or flip every weight each step.
    if !(c.weight_decay.is_finite() && c.weight_decay >= 0.0 && c.lr * c.weight_decay < 1.0) {
        return Err(o.err(
            "--weight-decay",
            "optimizer.weight_decay",
            format!(
                "must be >= 0 with lr * weight decay below 1, got {} (lr {})",
                c.weight_decay, c.lr
            ),
        ));
    }
    limits::fraction(o, "--alpha", "optimizer.alpha", c.alpha)?;
    if c.zeta_min > c.zeta_max {
        return Err(o.err(
            "--zeta-min",
            "optimizer.zeta_min",
            format!(
                "must not exceed --zeta-max ({} > {})",
                c.zeta_min, c.zeta_max
            ),
        ));
    }
    limits::fraction(o, "--beta1", "optimizer.beta1", c.beta1)?;
    limits::fraction(o, "--beta2", "optimizer.beta2", c.beta2)?;
    limits::fraction(o, "--momentum", "optimizer.momentum", c.momentum)?;
    Ok(())
}

/// Every rule a run config must meet, whether it comes from the flags or is read back from
/// config.json or a checkpoint's metadata (`o` says which, and so how errors read). The data set
/// itself (`--limit` against its size) is checked once it is loaded.
pub fn check_run(r: &RunConfig, o: &Origin) -> Result<()> {
    limits::count(o, "--epochs", "epochs", r.epochs as u64, limits::MAX_EPOCHS)?;
    limits::count(
        o,
        "--batch-size",
        "batch_size",
        r.batch_size as u64,
        limits::MAX_BATCH,
    )?;
    limits::count(o, "--hidden", "hidden", r.hidden as u64, limits::MAX_HIDDEN)?;
    limits::fraction(o, "--dropout", "dropout", r.dropout)?;
    limits::fraction(o, "--val-fraction", "val_fraction", r.val_fraction)?;
    limits::fraction(o, "--label-smoothing", "label_smoothing", r.label_smoothing)?;
    limits::limit(o, r.limit)?;
    check_optim(&r.optimizer, o)
}

impl TrainArgs {
    pub fn validate(&self) -> Result<()> {
        check_run(&fresh_config(self, Path::new(""))?, &Origin::Flags)
    }
}

/// Where a flag's value lives in [`RunConfig`]'s JSON, for the flags that define a run.
fn config_pointer(id: &str) -> Option<&'static str> {
    Some(match id {
        "batch_size" => "/batch_size",
        "optimizer" => "/optimizer/kind",
        "lr" => "/optimizer/lr",
        "wame_variant" => "/optimizer/variant",
        "alpha" => "/optimizer/alpha",
        "eta_plus" => "/optimizer/eta_plus",
        "eta_minus" => "/optimizer/eta_minus",
        "zeta_min" => "/optimizer/zeta_min",
        "zeta_max" => "/optimizer/zeta_max",
        "eps" => "/optimizer/eps",
        "warmup_steps" => "/optimizer/warmup_steps",
        "weight_decay" => "/optimizer/weight_decay",
        "lr_schedule" => "/lr_schedule",
        "hidden" => "/hidden",
        "dropout" => "/dropout",
        "val_fraction" => "/val_fraction",
        "limit" => "/limit",
        "augment" => "/augment",
        "label_smoothing" => "/label_smoothing",
        "seed" => "/seed",
        _ => return None,
    })
}

/// Flags that never change what a run computes (where it runs, where the data is, output form).
const FREE_ON_RESUME: [&str; 6] = ["device", "adapter", "backend", "data", "json", "resume"];

/// A config value as the user would type it (floats are f32 in the config, shown as such).
fn show(v: Option<&serde_json::Value>) -> String {
    match v {
        None => "?".into(),
        Some(serde_json::Value::Null) => "(none)".into(),
        Some(v) if v.is_f64() => format!("{}", v.as_f64().unwrap_or(0.0) as f32),
        Some(v) => v.to_string().trim_matches('"').to_string(),
    }
}

fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// The run config recorded in `dir`, with the command line's `--epochs` applied; any other flag
/// that contradicts the record is a `BadArg`.
fn resume_config(args: &TrainArgs, dir: &Path, data_dir: &Path) -> Result<RunConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = read_config(&path).map_err(|e| match e {
        Error::BadFile { path, msg } => Error::bad_file(
            path,
            format!("{msg}: --resume needs a run directory written by `train`"),
        ),
        e => e,
    })?;
    let mut recorded = RunConfig::from_json_str(&path, &text)?;
    check_run(&recorded, &Origin::File(&path))?;
    let given = fresh_config(args, data_dir)?;
    let (rv, gv) = (
        serde_json::to_value(&recorded).expect("plain data"),
        serde_json::to_value(&given).expect("plain data"),
    );
    for id in &args.explicit {
        if FREE_ON_RESUME.contains(&id.as_str()) || id == "epochs" {
            continue;
        }
        let Some(ptr) = config_pointer(id) else {
            return Err(Error::BadArg(format!(
                "{} cannot be combined with --resume (the run's {} defines it)",
                flag(id),
                path.display()
            )));
        };
        let (r, g) = (rv.pointer(ptr), gv.pointer(ptr));
        if r != g {
            return Err(Error::BadArg(format!(
                "{} {} contradicts the run being resumed, which has {} (from {}); drop the flag \
                 or start a new run with --out",
                flag(id),
                show(g),
                show(r),
                path.display()
            )));
        }
    }
    if let Some(epochs) = args.epochs
        && epochs != recorded.epochs
    {
        if recorded.lr_schedule != LrSchedule::Constant {
            return Err(Error::BadArg(format!(
                "--epochs {} contradicts the run being resumed, which has {} epochs with the \
                 {:?} learning-rate schedule (the rate of every epoch depends on the total)",
                epochs, recorded.epochs, recorded.lr_schedule
            )));
        }
        recorded.epochs = epochs;
    }
    recorded.data = data_dir.to_path_buf();
    Ok(recorded)
}

/// The run config the flags ask for. The default preset's warm-up depends on the training split's
/// size and is filled in by [`one_epoch_warmup`] once the data is loaded; until then it reads 0.
fn fresh_config(args: &TrainArgs, data_dir: &Path) -> Result<RunConfig> {
    // The default's 10 epochs keep a CPU run within about five minutes on two cores at the
    // slowest speed measured there (EXPERIMENTS.md, "The defaults"); the seed setting ran 15.
    let (schedule, epochs) = match args.preset {
        Preset::Default => (LrSchedule::Cosine, 10),
        Preset::Seed => (LrSchedule::Constant, 15),
    };
    Ok(RunConfig {
        data: data_dir.to_path_buf(),
        epochs: args.epochs.unwrap_or(epochs),
        batch_size: args.batch_size,
        optimizer: args.optim.config()?,
        lr_schedule: args.lr_schedule.unwrap_or(schedule),
        hidden: args.hidden,
        dropout: args.dropout,
        val_fraction: args.val_fraction,
        limit: args.limit,
        augment: args.augment,
        label_smoothing: args.label_smoothing,
        seed: args.seed,
    })
}

/// The default preset's warm-up: the steps of one epoch over `train_images`, unless the flag or
/// the seed preset sets it.
/// The run config and split that `fmnist-gpu train FLAGS` would train with on a training set of
/// `n_train` images: the same flag parsing, checks, presets and warm-up rule, so a run built
/// elsewhere (the browser page) writes the same `config` into its checkpoints. `flags` excludes
/// the program and subcommand names; `data` is what the config records as the data source.
pub fn run_from_flags(flags: &[String], data: &Path, n_train: usize) -> Result<(RunConfig, Split)> {
    #[derive(clap::Parser)]
    #[command(name = "train", no_binary_name = true)]
    struct Flags {
        #[command(flatten)]
        train: TrainArgs,
    }
    let args = <Flags as clap::Parser>::try_parse_from(flags)
        .map_err(|e| Error::BadArg(e.to_string().trim_end().to_string()))?
        .train;
    let mut run = fresh_config(&args, data)?;
    check_run(&run, &Origin::Flags)?;
    let split = data::split_from(
        &Origin::Flags,
        n_train,
        run.val_fraction,
        run.limit,
        run.seed,
    )?;
    one_epoch_warmup(&args, &mut run, split.train.len());
    Ok((run, split))
}

fn one_epoch_warmup(args: &TrainArgs, run: &mut RunConfig, train_images: usize) {
    if args.resume.is_none() && args.optim.warmup_steps.is_none() && args.preset == Preset::Default
    {
        let steps = train_images.div_ceil(run.batch_size.max(1) as usize);
        run.optimizer.warmup_steps = u32::try_from(steps).unwrap_or(u32::MAX);
    }
}

/// The data directory: `--data`, else for a resumed run the one it recorded (when it still holds
/// the data), else SPEC 3's search.
fn data_dir(args: &TrainArgs) -> Result<PathBuf> {
    if args.data.is_none()
        && let Some(dir) = &args.resume
        && let Ok(text) = read_config(&dir.join(CONFIG_FILE))
        && let Ok(c) = serde_json::from_str::<RunConfig>(&text)
        && data::has_data(&c.data)
    {
        return Ok(c.data);
    }
    data::locate(args.data.as_deref())
}

/// A run's config.json as text: a regular file of sane size.
fn read_config(path: &Path) -> Result<String> {
    crate::input::read_text(path, limits::MAX_TEXT_BYTES, "a run config")
}

/// The files whose presence makes a directory a run directory.
const RUN_FILES: [&str; 6] = [
    CONFIG_FILE,
    STATE_FILE,
    MODEL_FILE,
    LAST_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
];

/// Checks that `dir` can take this run's outputs before any work starts: a directory (created
/// here if missing) that a file can be written to. A fresh run refuses a directory that already
/// holds a run, which it would otherwise overwrite; a resumed one needs its run files to be
/// regular files. Failures are exit-2 errors.
fn prepare_run_dir(dir: &Path, resume: bool) -> Result<()> {
    let flag = if resume { "--resume" } else { "--out" };
    if resume && !dir.is_dir() {
        return Err(Error::bad_file(
            dir.join(CONFIG_FILE),
            format!(
                "cannot be read: --resume {} is not a run directory (it does not exist or is not \
                 a directory)",
                dir.display()
            ),
        ));
    }
    if !resume {
        if let Some(f) = RUN_FILES
            .iter()
            .find(|f| dir.join(f).symlink_metadata().is_ok())
        {
            return Err(Error::BadArg(format!(
                "--out {} already holds a run (it has {f}); continue it with --resume {} or \
                 give --out a new directory",
                dir.display(),
                dir.display()
            )));
        }
    } else if let Some(f) = RUN_FILES.iter().find(|f| {
        dir.join(f)
            .symlink_metadata()
            .is_ok_and(|_| !dir.join(f).is_file())
    }) {
        return Err(Error::bad_file(
            dir.join(f),
            "is not a regular file; the run directory is damaged",
        ));
    }
    super::experiment::prepare_out(flag, dir)
}

pub fn run(args: &TrainArgs) -> Result<()> {
    args.validate()?;
    let run_dir = match &args.resume {
        Some(d) => d.clone(),
        None => args.out.clone().unwrap_or_else(default_run_dir),
    };
    // Before the data is even looked for: an unusable output location is known at once.
    prepare_run_dir(&run_dir, args.resume.is_some())?;
    let dir = data_dir(args)?;
    let mut run = match &args.resume {
        Some(d) => resume_config(args, d, &dir)?,
        None => fresh_config(args, &dir)?,
    };
    let FashionMnist {
        train: tr, test, ..
    } = data::load(&dir)?;
    let config_path = run_dir.join(CONFIG_FILE);
    let origin = match args.resume {
        Some(_) => Origin::File(&config_path),
        None => Origin::Flags,
    };
    let split = data::split_from(&origin, tr.n, run.val_fraction, run.limit, run.seed)?;
    one_epoch_warmup(args, &mut run, split.train.len());
    // A batch larger than the training images would only allocate slots that never fill: the
    // net is built for at most that many (one step per epoch either way).
    let mut net_config = run.net_config();
    net_config.batch = net_config.batch.min(split.train.len() as u32).max(1);
    let test_labels = test.labels.clone();
    let data = NetData {
        train: Arc::new(tr),
        test: Arc::new(test),
    };
    let mut net = super::open_net(
        &args.device,
        net_config,
        data,
        Params::glorot(run.hidden as usize, run.seed),
    )?;
    log::info!(
        "training on {} ({}): {} train / {} val images, batch {}, {} epochs, run dir {}",
        net.device(),
        net.adapter()
            .map(|a| a.name)
            .unwrap_or_else(|| "CPU reference".into()),
        split.train.len(),
        split.val.len(),
        run.batch_size,
        run.epochs,
        run_dir.display()
    );
    let plan = TrainPlan {
        run: &run,
        split: &split,
        test_labels: &test_labels,
        run_dir: &run_dir,
        resume: args.resume.is_some(),
    };
    let summary = train(net.as_mut(), &plan)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("plain data")
        );
    } else {
        let kept = if summary.val_images == 0 {
            format!("no validation split: last epoch {}", summary.best_epoch)
        } else {
            format!(
                "best validation {:.4} at epoch {}",
                summary.val_accuracy, summary.best_epoch
            )
        };
        println!(
            "test accuracy {:.4} ({kept}), {:.1} s; run directory {}",
            summary.test_accuracy,
            summary.seconds,
            summary.run_dir.display()
        );
        println!("reproduce with: {}", summary.command);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    fn config(flags: &[&str]) -> RunConfig {
        let cli = Cli::try_parse_from(std::iter::once("train").chain(flags.iter().copied()))
            .expect("flags parse");
        fresh_config(&cli.train, Path::new("data")).expect("valid config")
    }

    #[test]
    fn presets_choose_epochs_and_schedule_unless_a_flag_does() {
        let d = config(&[]);
        assert_eq!((d.epochs, d.lr_schedule), (10, LrSchedule::Cosine));
        let s = config(&["--preset", "seed"]);
        assert_eq!((s.epochs, s.lr_schedule), (15, LrSchedule::Constant));
        assert_eq!(config(&["--preset", "seed", "--epochs", "3"]).epochs, 3);
        assert_eq!(config(&["--epochs", "15"]).epochs, 15);
    }
}
