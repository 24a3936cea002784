//! `fmnist-gpu eval`: a model file's accuracy, per-class precision/recall/F1 and confusion matrix
//! on the test set or on its run's validation or training split (SPEC 8, 9).

use crate::checkpoint::load_model;
use crate::data::{self, FashionMnist};
use crate::limits::{self, Origin};
use crate::net::{NetConfig, NetData, Which};
use crate::optim::{OptimConfig, OptimizerKind};
use crate::train::{RunConfig, evaluate_report, rates};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    /// The 10,000 held-out test images.
    Test,
    /// The validation images of the model's run (seed, --val-fraction, --limit from its metadata).
    Val,
    /// The training images of the model's run (all 60,000 when the file has no run metadata).
    Train,
}

#[derive(clap::Args, Clone, Debug)]
pub struct EvalArgs {
    /// A model checkpoint (safetensors with PyTorch names), e.g. a run's model.safetensors.
    #[arg(value_parser = super::utf8_path, long)]
    pub model: PathBuf,
    /// Directory with the Fashion-MNIST IDX files (raw or .gz).
    #[arg(value_parser = super::utf8_path, long)]
    pub data: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    pub split: SplitArg,
    #[command(flatten)]
    pub device: super::DeviceArgs,
    /// Images per batch (default: the model's training batch size, so the numbers reproduce its
    /// run's summary bit for bit; 128 without run metadata).
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The run config in a checkpoint's metadata, if it has one that parses. One that does not is
/// ignored with a warning on the test split (the weights alone evaluate there) and an error on
/// the others, which need it. A config that parses goes through the same checks as `train`'s
/// flags, errors naming the file and key.
fn run_config(
    path: &Path,
    meta: &std::collections::BTreeMap<String, String>,
    split: SplitArg,
) -> Result<Option<RunConfig>> {
    let Some(text) = meta.get("config") else {
        return Ok(None);
    };
    match RunConfig::from_json_str(path, text) {
        Ok(c) => {
            super::train::check_run(&c, &Origin::Meta(path))?;
            Ok(Some(c))
        }
        Err(e) if split != SplitArg::Test => Err(e),
        Err(e) => {
            log::warn!("{e}; using defaults");
            Ok(None)
        }
    }
}

pub fn run(args: &EvalArgs) -> Result<()> {
    if let Some(b) = args.batch_size {
        limits::count(
            &Origin::Flags,
            "--batch-size",
            "batch_size",
            b as u64,
            limits::MAX_BATCH,
        )?;
    }
    let (params, meta) = load_model(&args.model)?;
    let cfg = run_config(&args.model, &meta, args.split)?;
    let origin = Origin::Meta(&args.model);
    let data_dir = match (&args.data, &cfg) {
        (None, Some(c)) if data::has_data(&c.data) => c.data.clone(),
        _ => data::locate(args.data.as_deref())?,
    };
    let FashionMnist { train, test, .. } = data::load(&data_dir)?;
    let (which, indices, split_name): (Which, Vec<u32>, &str) = match args.split {
        SplitArg::Test => (Which::Test, (0..test.n as u32).collect(), "test"),
        SplitArg::Val | SplitArg::Train => {
            let idx = match &cfg {
                Some(c) => {
                    let s = data::split_from(&origin, train.n, c.val_fraction, c.limit, c.seed)?;
                    if args.split == SplitArg::Val {
                        s.val
                    } else {
                        s.train
                    }
                }
                None if args.split == SplitArg::Train => (0..train.n as u32).collect(),
                None => {
                    return Err(Error::bad_file(
                        &args.model,
                        "has no run config in its metadata, so its validation split is unknown \
                         (use --split test or train)",
                    ));
                }
            };
            if idx.is_empty() {
                return Err(Error::BadArg(format!(
                    "the run of {} has no validation images (--val-fraction 0)",
                    args.model.display()
                )));
            }
            let name = if args.split == SplitArg::Val {
                "val"
            } else {
                "train"
            };
            (Which::Train, idx, name)
        }
    };
    let set = if which == Which::Test { &test } else { &train };
    let labels: Vec<u8> = indices.iter().map(|&i| set.labels[i as usize]).collect();
    // No more batch slots than images to evaluate: the rest would be allocated and never used.
    let net_cfg = NetConfig {
        batch: args
            .batch_size
            .or(cfg.as_ref().map(|c| c.batch_size))
            .unwrap_or(128)
            .min(indices.len() as u32)
            .max(1),
        hidden: params.hidden as u32,
        dropout: cfg.as_ref().map_or(0.0, |c| c.dropout),
        augment: false,
        label_smoothing: 0.0,
        optim: cfg
            .as_ref()
            .map_or(OptimConfig::defaults(OptimizerKind::Wame), |c| c.optimizer),
        seed: cfg.as_ref().map_or(0, |c| c.seed),
    };
    let data = NetData {
        train: Arc::new(train),
        test: Arc::new(test),
    };
    let mut net = super::open_net(&args.device, net_cfg, data, params)?;
    let (m, report) = evaluate_report(net.as_mut(), which, &indices, &labels)?;
    let (loss, accuracy) = rates(&m);
    if args.json {
        let mut v = serde_json::json!({
            "model": args.model,
            "split": split_name,
            "images": indices.len(),
            "accuracy": accuracy,
            "loss": loss,
            "device": net.device(),
            "adapter": net.adapter(),
            "batch_size": net_cfg.batch,
        });
        if let (Some(o), serde_json::Value::Object(r)) = (
            v.as_object_mut(),
            serde_json::to_value(&report).expect("plain data"),
        ) {
            for (k, val) in r {
                o.entry(k).or_insert(val);
            }
        }
        println!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
    } else {
        println!(
            "{} on the {split_name} split ({} images), {} device\naccuracy {accuracy:.4}, mean loss {loss:.4}\n",
            args.model.display(),
            indices.len(),
            net.device()
        );
        print!("{}", report.text());
    }
    Ok(())
}
