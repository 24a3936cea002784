//! `fmnist-gpu train`: flags of SPEC 8, validated, then the shared training loop.

use crate::data::{self, FashionMnist};
use crate::model::Params;
use crate::net::{NetConfig, NetData};
use crate::optim::{OptimConfig, OptimizerKind, WameVariant};
use crate::train::{TrainPlan, default_run_dir, train};
use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Clone, Debug)]
pub struct TrainArgs {
    /// Directory with the Fashion-MNIST IDX files (raw or .gz).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub device: super::DeviceArgs,
    #[arg(long, default_value_t = 15)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: u32,
    #[command(flatten)]
    pub optim: OptimArgs,
    /// Units of the hidden dense layer.
    #[arg(long, default_value_t = 128)]
    pub hidden: u32,
    /// Dropout probability after pool2 (inverted dropout; 0 disables it).
    #[arg(long, default_value_t = 0.4)]
    pub dropout: f32,
    /// Share of the training images held out for validation, in [0, 1).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Keep only the first N training images after the seeded shuffle (quick runs, CI).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Random horizontal flips and shifts of up to 2 pixels.
    #[arg(long)]
    pub augment: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run directory (default runs/<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON summary on stdout (logs stay on stderr).
    #[arg(long)]
    pub json: bool,
}

/// Optimizer flags shared by `train`, `search` and `compare`.
#[derive(clap::Args, Clone, Debug)]
pub struct OptimArgs {
    #[arg(long, value_enum, default_value_t = OptimizerKind::Wame)]
    pub optimizer: OptimizerKind,
    /// Learning rate (default 1e-3; 1e-2 for sgd). The `paper` WAME variant wants a larger one,
    /// about 3e-2.
    #[arg(long)]
    pub lr: Option<f32>,
    /// WAME multiplier: seed (zeta/Z, default), paper (Z, as printed in the paper), inverse (1/Z).
    #[arg(long, value_enum, default_value_t = WameVariant::Seed)]
    pub wame_variant: WameVariant,
    /// EMA factor of WAME's Z and theta (and RMSprop's alpha).
    #[arg(long, default_value_t = 0.9)]
    pub alpha: f32,
    #[arg(long, default_value_t = 1.2)]
    pub eta_plus: f32,
    #[arg(long, default_value_t = 0.1)]
    pub eta_minus: f32,
    #[arg(long, default_value_t = 0.01)]
    pub zeta_min: f32,
    #[arg(long, default_value_t = 100.0)]
    pub zeta_max: f32,
    /// Epsilon (default 1e-12 for WAME, 1e-8 for Adam and RMSprop).
    #[arg(long)]
    pub eps: Option<f32>,
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
        let pos = |name: &str, v: f32| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::BadArg(format!(
                    "--{name} must be a positive number, got {v}"
                )))
            }
        };
        pos("lr", c.lr)?;
        pos("eps", c.eps)?;
        pos("eta-plus", c.eta_plus)?;
        pos("eta-minus", c.eta_minus)?;
        pos("zeta-min", c.zeta_min)?;
        pos("zeta-max", c.zeta_max)?;
        if !(0.0..1.0).contains(&c.alpha) {
            return Err(Error::BadArg(format!(
                "--alpha must be in [0, 1), got {}",
                c.alpha
            )));
        }
        if c.zeta_min > c.zeta_max {
            return Err(Error::BadArg(
                "--zeta-min must not exceed --zeta-max".into(),
            ));
        }
        Ok(c)
    }
}

impl TrainArgs {
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::BadArg("--batch-size must be at least 1".into()));
        }
        if self.epochs == 0 {
            return Err(Error::BadArg("--epochs must be at least 1".into()));
        }
        if self.hidden == 0 {
            return Err(Error::BadArg("--hidden must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::BadArg(format!(
                "--dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(Error::BadArg(format!(
                "--val-fraction must be in [0, 1), got {}",
                self.val_fraction
            )));
        }
        self.optim.config().map(|_| ())
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    args.validate()?;
    let optim = args.optim.config()?;
    let dir = data::locate(args.data.as_deref())?;
    let FashionMnist {
        train: tr, test, ..
    } = data::load(&dir)?;
    let split = data::split(tr.n, args.val_fraction, args.limit, args.seed)?;
    let cfg = NetConfig {
        batch: args.batch_size,
        hidden: args.hidden,
        dropout: args.dropout,
        augment: args.augment,
        optim,
        seed: args.seed,
    };
    let test_n = test.n;
    let data = NetData {
        train: Arc::new(tr),
        test: Arc::new(test),
    };
    let mut net = super::open_net(
        &args.device,
        cfg,
        data,
        Params::glorot(args.hidden as usize, args.seed),
    )?;
    let run_dir = args.out.clone().unwrap_or_else(default_run_dir);
    let config = serde_json::json!({
        "data": dir,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": optim,
        "hidden": args.hidden,
        "dropout": args.dropout,
        "val_fraction": args.val_fraction,
        "limit": args.limit,
        "augment": args.augment,
        "seed": args.seed,
        "device": net.device(),
        "adapter": net.adapter(),
    });
    log::info!(
        "training on {} ({}): {} train / {} val images, batch {}, {} epochs, run dir {}",
        net.device(),
        net.adapter()
            .map(|a| a.name)
            .unwrap_or_else(|| "CPU reference".into()),
        split.train.len(),
        split.val.len(),
        args.batch_size,
        args.epochs,
        run_dir.display()
    );
    let plan = TrainPlan {
        epochs: args.epochs,
        batch: args.batch_size,
        lr: optim.lr,
        seed: args.seed,
        split: &split,
        test_n,
        run_dir: &run_dir,
        config,
    };
    let summary = train(net.as_mut(), &plan)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("plain data")
        );
    } else {
        println!(
            "test accuracy {:.4} (best validation {:.4} at epoch {}), {:.1} s; run directory {}",
            summary.test_accuracy,
            summary.val_accuracy,
            summary.best_epoch,
            summary.seconds,
            summary.run_dir.display()
        );
    }
    Ok(())
}
