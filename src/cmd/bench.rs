//! `fmnist-gpu bench`: whole-step images per second and per-kernel times for each batch size, on
//! the device `--device/--adapter` choose (SPEC 12). Synthetic data: no data files needed.

use crate::bench::{
    BatchRecord, BenchConfig, BenchReport, DEFAULT_BATCH_SIZES, bench_cpu, bench_gpu,
};
use crate::gpu::Selected;
use crate::optim::{OptimConfig, OptimizerKind};
use crate::{Error, Result};

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Batch sizes to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_BATCH_SIZES.to_vec())]
    pub batch_sizes: Vec<u32>,
    /// Training steps per timed window (throughput is the median window).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Timed windows per batch size; also the repetitions of the per-kernel timing run.
    #[arg(long, default_value_t = 5)]
    pub windows: usize,
    /// Untimed steps before the first window (pipeline warm-up, caches, clocks).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Units of the hidden dense layer.
    #[arg(long, default_value_t = 128)]
    pub hidden: u32,
    /// Optimizer of the step, with its SPEC 5 defaults (pytorch_peer.py uses adam by default).
    #[arg(long, value_enum, default_value_t = OptimizerKind::Wame)]
    pub optimizer: OptimizerKind,
    #[command(flatten)]
    pub device: super::DeviceArgs,
    /// Print one JSON document on stdout (logs stay on stderr).
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    pub fn config(&self) -> Result<BenchConfig> {
        if self.hidden == 0 {
            return Err(Error::BadArg("--hidden must be at least 1".into()));
        }
        let cfg = BenchConfig {
            batch_sizes: self.batch_sizes.clone(),
            steps: self.steps,
            windows: self.windows,
            warmup: self.warmup,
            hidden: self.hidden,
            optim: OptimConfig::defaults(self.optimizer),
            ..BenchConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let cfg = args.config()?;
    let report = match crate::gpu::select::open(&args.device)? {
        Selected::Cpu { reason } => {
            log::info!("bench: CPU reference backend ({reason})");
            bench_cpu(&cfg)?
        }
        Selected::Gpu(ctx) => bench_gpu(&ctx, &cfg)?,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Runtime(format!("encoding the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn time(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.1} us", s * 1e6)
    }
}

fn rate(k: &crate::bench::KernelRecord) -> String {
    use crate::bench::Bound;
    match (k.bound, k.gflops, k.gbps) {
        (Some(Bound::Compute), Some(g), _) => format!("{g:.2} GFLOP/s"),
        (_, _, Some(b)) => format!("{b:.2} GB/s"),
        _ => "-".into(),
    }
}

fn render_batch(r: &BatchRecord) -> String {
    let mut s = format!(
        "\nbatch {}: {:.1} images/s, best {:.1} (median of {} windows of {} steps after {} warm-up steps, wall clock; windows {}), {} per step, {:.2} GFLOP/s\n",
        r.batch_size,
        r.images_per_second,
        r.best_images_per_second,
        r.windows,
        r.steps_per_window,
        r.warmup_steps,
        r.window_images_per_second
            .iter()
            .map(|v| format!("{v:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        time(r.step_seconds),
        r.achieved_gflops,
    );
    if let (Some(t), Some(c)) = (r.step_pass_seconds, r.step_pass_clock) {
        s.push_str(&format!(
            "  whole step as one compute pass: {} ({})\n",
            time(t),
            c.describe()
        ));
    }
    s.push_str(&format!(
        "  per kernel ({}; {}; median of {}): sum {}\n",
        r.kernel_clock.describe(),
        r.kernel_method,
        r.kernel_repetitions,
        time(r.kernel_sum_seconds)
    ));
    s.push_str(&format!(
        "  {:<32} {:>12} {:>16} {:>7}\n",
        "kernel", "time/step", "achieved", "share"
    ));
    for k in &r.kernels {
        s.push_str(&format!(
            "  {:<32} {:>12} {:>16} {:>6.1}%\n",
            k.name,
            time(k.seconds),
            rate(k),
            100.0 * k.share
        ));
    }
    s
}

/// The human-readable report.
pub fn render(r: &BenchReport) -> String {
    let a = &r.adapter;
    let mut s = format!(
        "fmnist-gpu bench {}: device {} — {} ({}, {}, driver {})\ndata: {}\nnetwork: hidden {}, dropout {}, optimizer {}; {:.2} MFLOP per training image (forward {:.2})\n",
        r.version,
        r.device,
        a.name,
        a.device_type,
        a.backend,
        if a.driver.is_empty() {
            "unknown"
        } else {
            &a.driver
        },
        r.data,
        r.network.hidden,
        r.network.dropout,
        r.network.optimizer,
        r.network.train_flops_per_image / 1e6,
        r.network.forward_flops_per_image / 1e6,
    );
    for b in &r.results {
        s.push_str(&render_batch(b));
    }
    s
}
