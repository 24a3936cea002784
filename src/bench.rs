//! Benchmarks (SPEC 12): whole-step throughput of the real training step, per-kernel time with
//! achieved GFLOP/s or GB/s, and the FLOP model of one training step.
//!
//! Data is synthetic (random u8 images and labels, resident like the real set), so a benchmark
//! needs no data files. Throughput is `Net::train_step` in windows of N steps after a warm-up,
//! timed by wall clock up to a final wait, and reported as the median window. Per-kernel times
//! come from a separate timing run: on the GPU each dispatch of the step list in its own compute
//! pass (timestamp queries, else wall clock), on the CPU `CpuNet`'s own step with a wall
//! clock around each op.

use crate::cpu::loss::Metrics;
use crate::data::DataSet;
use crate::gpu::timers::{Clock, GpuTimer};
use crate::gpu::{AdapterSummary, GpuContext};
use crate::model::{CLASSES, Layers, PARAM_NAMES, Params, param_shapes};
use crate::net::cpu::CpuNet;
use crate::net::gpu::GpuNet;
use crate::net::{Net, NetConfig, NetData};
use crate::ops::conv::{conv_flops, weight_parts};
use crate::optim::{OptimConfig, OptimizerKind};
use crate::params::DenseParams;
use crate::rng::{Stream, hash_key};
use crate::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

pub const DEFAULT_BATCH_SIZES: [u32; 3] = [64, 128, 512];
/// The synthetic training set never holds more images than the real one.
pub const SYNTHETIC_MAX_IMAGES: usize = 60_000;
/// What every report says about its data.
pub const DATA_NOTE: &str = "synthetic: random u8 images and labels, resident on the device like the real set; no data files are read";

const F32: f64 = 4.0;
const PIXELS: f64 = 784.0;

// ------------------------------------------------------------------ work model

/// What limits a kernel: its FLOPs (GEMMs) or its memory traffic (everything else).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    Compute,
    Memory,
}

/// Useful work of one kernel in one step. `bytes` is the minimum traffic: each buffer the kernel
/// reads counted once and each it writes counted once (caches and re-reads are not counted).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Work {
    pub flops: f64,
    pub bytes: f64,
    pub bound: Bound,
}

fn mem(bytes: f64) -> Work {
    Work {
        flops: 0.0,
        bytes,
        bound: Bound::Memory,
    }
}

fn dense_flops(d: &DenseParams) -> f64 {
    2.0 * d.batch as f64 * d.n_in as f64 * d.n_out as f64
}

/// The GEMMs of one training step and their FLOPs (`2*M*N*K`), in step order. conv1 has no
/// backward_input (the images need no gradient). Everything else in a step is a few FLOPs per
/// element and is counted in bytes instead.
pub fn gemm_flops(l: &Layers) -> Vec<(&'static str, f64)> {
    let (c1, c2) = (conv_flops(&l.conv1), conv_flops(&l.conv2));
    let (f1, f2) = (dense_flops(&l.fc1), dense_flops(&l.fc2));
    vec![
        ("conv1.forward", c1),
        ("conv2.forward", c2),
        ("fc1.forward", f1),
        ("fc2.forward", f2),
        ("fc2.backward_weight", f2),
        ("fc2.backward_input", f2),
        ("fc1.backward_weight", f1),
        ("fc1.backward_input", f1),
        ("conv2.backward_weight", c2),
        ("conv2.backward_input", c2),
        ("conv1.backward_weight", c1),
    ]
}

/// FLOPs of one training step (forward, backward and nothing else), for `l.batch` images.
pub fn train_flops(l: &Layers) -> f64 {
    gemm_flops(l).iter().map(|(_, f)| f).sum()
}

/// FLOPs of the forward GEMMs for `l.batch` images.
pub fn forward_flops(l: &Layers) -> f64 {
    gemm_flops(l)
        .iter()
        .filter(|(n, _)| n.ends_with(".forward"))
        .map(|(_, f)| f)
        .sum()
}

pub fn optimizer_name(kind: OptimizerKind) -> &'static str {
    match kind {
        OptimizerKind::Wame => "wame",
        OptimizerKind::Adam => "adam",
        OptimizerKind::Rmsprop => "rmsprop",
        OptimizerKind::Sgd => "sgd",
    }
}

/// The work of the step kernel called `name` (the names of [`name_dispatches`] and of the CPU
/// ops), or `None` for a name this model does not know.
pub fn kernel_work(name: &str, l: &Layers, optim: &OptimConfig) -> Option<Work> {
    let b = l.batch as f64;
    let gemm = |n: &str| gemm_flops(l).iter().find(|(g, _)| *g == n).map(|(_, f)| *f);
    match name {
        // fc2 forward and both backward GEMMs: h, w2 and b2 in; logits, dw2, db2 and dh out
        "head" => {
            let (hid, cls) = (l.fc2.n_in as f64, CLASSES as f64);
            return Some(Work {
                flops: gemm("fc2.forward")?
                    + gemm("fc2.backward_weight")?
                    + gemm("fc2.backward_input")?,
                bytes: F32 * (2.0 * b * hid + 2.0 * cls * hid + b * cls + 2.0 * cls + b),
                bound: Bound::Compute,
            });
        }
        // conv2's weight (with the bias) and input gradients in one dispatch: the pooled
        // gradient, map and argmax, conv2's input and weights in; partials and dx out
        "conv2.backward" => {
            let p = &l.conv2;
            let parts = weight_parts(p) as f64;
            let pooled = l.pool2.y_len() as f64;
            return Some(Work {
                flops: gemm("conv2.backward_weight")? + gemm("conv2.backward_input")?,
                bytes: F32
                    * (3.0 * pooled
                        + 2.0 * p.x_len() as f64
                        + p.w_len() as f64
                        + parts * (p.w_len() + p.c_out as usize) as f64),
                bound: Bound::Compute,
            });
        }
        // fc1's weight and input gradients (and the bias) in one dispatch
        "fc1.backward" => {
            let d = &l.fc1;
            let (x, w, y) = (
                b * d.n_in as f64,
                d.n_in as f64 * d.n_out as f64,
                b * d.n_out as f64,
            );
            return Some(Work {
                flops: gemm("fc1.backward_weight")? + gemm("fc1.backward_input")?,
                bytes: F32 * (2.0 * x + 2.0 * w + y + d.n_out as f64),
                bound: Bound::Compute,
            });
        }
        _ => {}
    }
    if let Some((_, f)) = gemm_flops(l).iter().find(|(n, _)| *n == name) {
        let (x, w, y) = match name.split_once('.')?.0 {
            "conv1" | "conv2" => {
                let p = if name.starts_with("conv1") {
                    &l.conv1
                } else {
                    &l.conv2
                };
                (p.x_len() as f64, p.w_len() as f64, p.y_len() as f64)
            }
            layer => {
                let d = if layer == "fc1" { &l.fc1 } else { &l.fc2 };
                (
                    b * d.n_in as f64,
                    d.n_in as f64 * d.n_out as f64,
                    b * d.n_out as f64,
                )
            }
        };
        return Some(Work {
            flops: *f,
            bytes: F32 * (x + w + y),
            bound: Bound::Compute,
        });
    }
    let conv = |layer: &str| match layer {
        "conv1" => Some(l.conv1),
        "conv2" => Some(l.conv2),
        _ => None,
    };
    let (layer, op) = name.split_once('.').unwrap_or((name, ""));
    let opt = optimizer_name(optim.kind);
    Some(match (layer, op) {
        ("gather", "") => {
            // packed u8 pixels, index and label in; f32 pixels and u32 label out
            mem(b * PIXELS + 8.0 * b + F32 * b * PIXELS + 4.0 * b)
        }
        ("advance", "") => mem(32.0),
        ("pool1" | "pool2", op) => {
            let p = if layer == "pool1" { l.pool1 } else { l.pool2 };
            let (x, y) = (p.x_len() as f64, p.y_len() as f64);
            match op {
                // x in; y and argmax out
                "forward" => mem(F32 * (x + 2.0 * y)),
                // dy, argmax and x (the ReLU mask) in; dx out
                "backward" => mem(F32 * (2.0 * y + 2.0 * x)),
                _ => return None,
            }
        }
        ("dropout", "forward" | "backward") => mem(F32 * 2.0 * l.drop.n as f64),
        ("loss", "forward") => mem(F32 * (2.0 * b * CLASSES as f64 + b) + 16.0),
        ("loss", "backward") => mem(F32 * (2.0 * b * CLASSES as f64 + b)),
        ("fc1", "relu_backward") => mem(F32 * 3.0 * b * l.fc1.n_out as f64),
        ("fc1" | "fc2", "backward_bias") => {
            let d = if layer == "fc1" { l.fc1 } else { l.fc2 };
            mem(F32 * (b + 1.0) * d.n_out as f64)
        }
        ("conv1" | "conv2", "backward_bias") => {
            let p = conv(layer)?;
            mem(F32 * (p.y_len() as f64 + p.c_out as f64))
        }
        ("conv1" | "conv2", "backward_weight_reduce") => {
            let p = conv(layer)?;
            mem(F32 * (weight_parts(&p) as f64 + 1.0) * p.w_len() as f64)
        }
        (o, "update") if o == opt => {
            // every tensor: w, its partial gradients and the state in; w and the state out
            let width = optim.state_width() as f64;
            let parts = |i: usize| match i {
                0 => weight_parts(&l.conv1) as f64,
                2 => weight_parts(&l.conv2) as f64,
                _ => 1.0,
            };
            let total: f64 = param_shapes(l.hidden as usize)
                .iter()
                .enumerate()
                .map(|(i, s)| s.iter().product::<usize>() as f64 * (2.0 + parts(i) + 2.0 * width))
                .sum();
            mem(F32 * total)
        }
        (o, param) if o == opt => {
            let i = PARAM_NAMES.iter().position(|n| *n == param)?;
            let n: usize = param_shapes(l.hidden as usize)[i].iter().product();
            // w, g and the state in; w and the state out
            let width = optim.state_width() as f64;
            mem(F32 * n as f64 * (3.0 + 2.0 * width))
        }
        _ => return None,
    })
}

/// Names the dispatches of `GpuNet`'s step list by layer (`conv2.forward`, `fc1.backward_weight`,
/// `wame.update`, ...), from their kernel labels and the order the step records them in: forward
/// layers in order, backward layers in reverse, then the fused update (per-tensor optimizer
/// kernels, where a list has them, are named by parameter in [`PARAM_NAMES`] order, e.g.
/// `wame.conv1.bias`). A name that would repeat gets `#k`.
pub fn name_dispatches(labels: &[&str]) -> Vec<String> {
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    let mut last_conv_weight = 0;
    let mut param = 0;
    // Backward visits layer 2, then layer 1.
    let back = |k: usize| if k == 1 { 2 } else { 1 };
    let mut names: Vec<String> = labels
        .iter()
        .map(|&label| {
            let k = {
                let c = seen.entry(label).or_insert(0);
                *c += 1;
                *c
            };
            match label {
                "gather" | "advance" => label.to_string(),
                "conv.forward" | "conv.forward_relu_pool" => format!("conv{k}.forward"),
                "head_backward" | "head_forward" => "head".into(),
                "dense_backward_fused" => "fc1.backward".into(),
                // After conv2's one-dispatch backward, the only weight-only pass left is conv1's.
                "conv_grad.backward_weight" if seen.contains_key("conv_grad.backward") => {
                    "conv1.backward_weight".into()
                }
                "conv_grad.backward_weight" => format!("conv{}.backward_weight", back(k)),
                "conv_grad.backward_input" => "conv2.backward_input".into(),
                "conv_grad.backward" => "conv2.backward".into(),
                "maxpool_forward" => format!("pool{k}.forward"),
                "dense_forward" => format!("fc{k}.forward"),
                "dropout_forward" => "dropout.forward".into(),
                "dropout_backward" => "dropout.backward".into(),
                "softmax_xent_forward" => "loss.forward".into(),
                "softmax_xent_backward" => "loss.backward".into(),
                "relu_backward" => "fc1.relu_backward".into(),
                "dense_backward_weight" => format!("fc{}.backward_weight", back(k)),
                "dense_backward_bias" => format!("fc{}.backward_bias", back(k)),
                "dense_backward_input" => format!("fc{}.backward_input", back(k)),
                "maxpool_backward" => format!("pool{}.backward", back(k)),
                "conv.backward_weight" => {
                    last_conv_weight = back(k);
                    format!("conv{last_conv_weight}.backward_weight")
                }
                "reduce.sum_partials" => format!("conv{last_conv_weight}.backward_weight_reduce"),
                "conv.backward_bias" => format!("conv{}.backward_bias", back(k)),
                "conv.backward_input" => format!("conv{}.backward_input", back(k)),
                "update_wame" | "update_adam" | "update_rmsprop" | "update_sgd" => {
                    format!("{}.update", &label["update_".len()..])
                }
                "wame" | "adam" | "rmsprop" | "sgd" => {
                    let p = PARAM_NAMES.get(param).copied().unwrap_or("param");
                    param += 1;
                    format!("{label}.{p}")
                }
                other => other.to_string(),
            }
        })
        .collect();
    let mut count: std::collections::HashMap<String, usize> = Default::default();
    for n in names.iter_mut() {
        let c = count.entry(n.clone()).or_insert(0);
        *c += 1;
        if *c > 1 {
            *n = format!("{n}#{c}");
        }
    }
    names
}

// ------------------------------------------------------------------ records

/// One kernel of the step: its median time per step and what that achieves.
#[derive(Clone, Debug, Serialize)]
pub struct KernelRecord {
    pub name: String,
    /// The WGSL entry point (GPU) or CPU twin that ran.
    pub kernel: String,
    pub seconds: f64,
    pub flops: f64,
    pub bytes: f64,
    pub bound: Option<Bound>,
    pub gflops: Option<f64>,
    pub gbps: Option<f64>,
    /// `seconds` over the sum of all kernels' `seconds` (the shares sum to 1).
    pub share: f64,
}

/// One batch size on one device.
#[derive(Clone, Debug, Serialize)]
pub struct BatchRecord {
    pub batch_size: u32,
    pub device: &'static str,
    pub adapter: AdapterSummary,
    pub data: &'static str,
    /// Median over the windows of images trained per second.
    pub images_per_second: f64,
    pub window_images_per_second: Vec<f64>,
    /// The fastest window: on a machine shared with other work, the closest to an idle one.
    pub best_images_per_second: f64,
    /// Always the wall clock: N real training steps submitted back to back, then one wait.
    pub throughput_clock: Clock,
    pub steps_per_window: usize,
    pub windows: usize,
    pub warmup_steps: usize,
    /// `batch_size / images_per_second`.
    pub step_seconds: f64,
    pub flops_per_step: f64,
    /// `images_per_second` times the FLOPs per image.
    pub achieved_gflops: f64,
    /// GPU only: the whole step list recorded as one compute pass (as `train_step` records it),
    /// median of the timing run.
    pub step_pass_seconds: Option<f64>,
    pub step_pass_clock: Option<Clock>,
    /// GPU only: compute dispatches one training step records (SPEC 6: at most 10).
    pub dispatches_per_step: Option<u32>,
    /// GPU only: training steps recorded into one encoder and submitted together.
    pub steps_per_submit: Option<u32>,
    /// How the per-kernel times were taken.
    pub kernel_clock: Clock,
    pub kernel_method: &'static str,
    pub kernel_repetitions: usize,
    pub kernel_sum_seconds: f64,
    pub kernels: Vec<KernelRecord>,
}

#[derive(Clone, Debug, Serialize)]
pub struct NetworkRecord {
    pub hidden: u32,
    pub dropout: f32,
    pub optimizer: &'static str,
    pub train_flops_per_image: f64,
    pub forward_flops_per_image: f64,
}

/// What `fmnist-gpu bench --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub tool: &'static str,
    pub version: &'static str,
    pub device: &'static str,
    pub adapter: AdapterSummary,
    pub data: &'static str,
    pub network: NetworkRecord,
    pub results: Vec<BatchRecord>,
}

// ------------------------------------------------------------------ running

/// What to measure. Network and optimizer are the SPEC 1/5 defaults unless changed.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub batch_sizes: Vec<u32>,
    pub steps: usize,
    pub windows: usize,
    pub warmup: usize,
    pub hidden: u32,
    pub dropout: f32,
    pub optim: OptimConfig,
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            batch_sizes: DEFAULT_BATCH_SIZES.to_vec(),
            steps: 50,
            windows: 5,
            warmup: 5,
            hidden: 128,
            dropout: 0.4,
            optim: OptimConfig::defaults(OptimizerKind::Wame),
            seed: 0,
        }
    }
}

impl BenchConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch_sizes.is_empty() {
            return Err(Error::BadArg(
                "--batch-sizes needs at least one size".into(),
            ));
        }
        if self.batch_sizes.contains(&0) {
            return Err(Error::BadArg(
                "--batch-sizes: a batch size must be at least 1".into(),
            ));
        }
        if self
            .batch_sizes
            .iter()
            .any(|&b| b as usize > SYNTHETIC_MAX_IMAGES)
        {
            return Err(Error::BadArg(format!(
                "--batch-sizes: at most {SYNTHETIC_MAX_IMAGES} (the training set size)"
            )));
        }
        if self.steps == 0 || self.windows == 0 {
            return Err(Error::BadArg(
                "--steps and --windows must be at least 1".into(),
            ));
        }
        let o = crate::limits::Origin::Flags;
        use crate::limits::{MAX_BATCH, MAX_HIDDEN, MAX_STEPS, MAX_WINDOWS, count};
        for &b in &self.batch_sizes {
            count(&o, "--batch-sizes:", "batch_sizes", b as u64, MAX_BATCH)?;
        }
        count(&o, "--steps", "steps", self.steps as u64, MAX_STEPS)?;
        count(&o, "--windows", "windows", self.windows as u64, MAX_WINDOWS)?;
        if self.warmup as u64 > MAX_STEPS {
            return Err(Error::BadArg(format!(
                "--warmup must be at most {MAX_STEPS}, got {}",
                self.warmup
            )));
        }
        count(&o, "--hidden", "hidden", self.hidden as u64, MAX_HIDDEN)?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::BadArg("--dropout must be in [0, 1)".into()));
        }
        Ok(())
    }

    fn net_config(&self, batch: u32) -> NetConfig {
        NetConfig {
            batch,
            hidden: self.hidden,
            dropout: self.dropout,
            augment: false,
            label_smoothing: 0.0,
            optim: self.optim,
            seed: self.seed,
        }
    }

    pub fn layers(&self, batch: u32) -> Layers {
        Layers::new(
            batch,
            self.hidden,
            self.dropout,
            hash_key(self.seed, Stream::Dropout),
        )
    }

    fn network(&self) -> NetworkRecord {
        let l = self.layers(1);
        NetworkRecord {
            hidden: self.hidden,
            dropout: self.dropout,
            optimizer: optimizer_name(self.optim.kind),
            train_flops_per_image: train_flops(&l),
            forward_flops_per_image: forward_flops(&l),
        }
    }
}

/// A synthetic training set of whole batches, enough for one window of `steps` steps (at most
/// [`SYNTHETIC_MAX_IMAGES`]), and a shuffled epoch order over it.
pub fn synthetic(batch: u32, steps: usize, seed: u64) -> (NetData, Vec<u32>) {
    use rand::Rng;
    use rand::seq::SliceRandom;
    let b = batch as usize;
    let n = (b * steps).min(SYNTHETIC_MAX_IMAGES) / b * b;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut images = vec![0u8; n * 784];
    rng.fill_bytes(&mut images);
    let mut labels = vec![0u8; n];
    rng.fill_bytes(&mut labels);
    labels.iter_mut().for_each(|l| *l %= CLASSES as u8);
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut rng);
    let train = DataSet {
        images,
        labels,
        n,
        rows: 28,
        cols: 28,
    };
    let data = NetData {
        train: Arc::new(train),
        test: NetData::empty().test,
    };
    (data, order)
}

/// Feeds a net epoch after epoch over the same order, as training does (`begin_epoch` at each
/// epoch boundary, inside the timed window when one falls there).
pub struct StepFeeder {
    order: Vec<u32>,
    steps_per_epoch: usize,
    left: usize,
    lr: f32,
}

impl StepFeeder {
    pub fn new(order: Vec<u32>, batch: u32, lr: f32) -> Self {
        let steps_per_epoch = (order.len() / batch as usize).max(1);
        Self {
            order,
            steps_per_epoch,
            left: 0,
            lr,
        }
    }

    pub fn restart<N: Net + ?Sized>(&mut self, net: &mut N) -> Result<()> {
        net.begin_epoch(&self.order, self.lr)?;
        self.left = self.steps_per_epoch;
        Ok(())
    }

    pub fn step<N: Net + ?Sized>(&mut self, net: &mut N) -> Result<()> {
        if self.left == 0 {
            self.restart(net)?;
        }
        net.train_step()?;
        self.left -= 1;
        Ok(())
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Every window must have trained on every one of its images, with a finite loss: otherwise the
/// time measured something other than training.
fn check_metrics(m: &Metrics, expect: usize, what: &str) -> Result<()> {
    if m.seen as usize != expect || !m.loss_sum.is_finite() {
        return Err(Error::Runtime(format!(
            "{what}: the timed steps saw {} of {expect} images, loss sum {}; the timing is void",
            m.seen, m.loss_sum
        )));
    }
    Ok(())
}

/// Images per second of each window: warm-up, then `windows` windows of `steps` steps each,
/// each started from an idle device and ended by `sync`.
pub fn throughput<N: Net>(
    net: &mut N,
    feeder: &mut StepFeeder,
    cfg: &BenchConfig,
    batch: u32,
    sync: fn(&mut N) -> Result<()>,
) -> Result<Vec<f64>> {
    feeder.restart(net)?;
    for _ in 0..cfg.warmup {
        feeder.step(net)?;
    }
    sync(net)?;
    net.take_metrics()?;
    let mut out = Vec::with_capacity(cfg.windows);
    for w in 0..cfg.windows {
        feeder.restart(net)?;
        net.take_metrics()?;
        sync(net)?;
        let start = Instant::now();
        for _ in 0..cfg.steps {
            feeder.step(net)?;
        }
        sync(net)?;
        let secs = start.elapsed().as_secs_f64();
        let images = cfg.steps * batch as usize;
        check_metrics(
            &net.take_metrics()?,
            images,
            &format!("batch {batch}, window {}", w + 1),
        )?;
        out.push(images as f64 / secs.max(1e-12));
    }
    Ok(out)
}

fn kernel_records(
    names: &[String],
    kernels: &[String],
    seconds: &[f64],
    l: &Layers,
    optim: &OptimConfig,
) -> Vec<KernelRecord> {
    let total: f64 = seconds.iter().sum();
    names
        .iter()
        .zip(kernels)
        .zip(seconds)
        .map(|((name, kernel), &s)| {
            let w = kernel_work(name, l, optim);
            let rate = |x: f64| (s > 0.0).then(|| x / s * 1e-9);
            KernelRecord {
                name: name.clone(),
                kernel: kernel.clone(),
                seconds: s,
                flops: w.map_or(0.0, |w| w.flops),
                bytes: w.map_or(0.0, |w| w.bytes),
                bound: w.map(|w| w.bound),
                gflops: w.filter(|w| w.flops > 0.0).and_then(|w| rate(w.flops)),
                gbps: w.and_then(|w| rate(w.bytes)),
                share: if total > 0.0 { s / total } else { 0.0 },
            }
        })
        .collect()
}

/// Per-column medians of `reps` rows.
fn column_medians(reps: &[Vec<f64>]) -> Vec<f64> {
    let n = reps.first().map_or(0, Vec::len);
    (0..n)
        .map(|i| median(&reps.iter().map(|r| r[i]).collect::<Vec<_>>()))
        .collect()
}

/// Benchmarks `cfg.batch_sizes` on the GPU `ctx`.
pub fn bench_gpu(ctx: &GpuContext, cfg: &BenchConfig) -> Result<BenchReport> {
    cfg.validate()?;
    let mut results = Vec::new();
    for &batch in &cfg.batch_sizes {
        results.push(bench_gpu_batch(ctx, cfg, batch)?);
    }
    Ok(BenchReport {
        tool: "fmnist-gpu bench",
        version: env!("CARGO_PKG_VERSION"),
        device: "gpu",
        adapter: ctx.adapter.clone(),
        data: DATA_NOTE,
        network: cfg.network(),
        results,
    })
}

fn bench_gpu_batch(ctx: &GpuContext, cfg: &BenchConfig, batch: u32) -> Result<BatchRecord> {
    log::info!("bench: batch {batch} on {}", ctx.adapter.name);
    let (data, order) = synthetic(batch, cfg.steps, cfg.seed);
    let params = Params::glorot(cfg.hidden as usize, cfg.seed);
    let mut net = GpuNet::new(ctx.clone(), cfg.net_config(batch), data, params)?;
    let mut feeder = StepFeeder::new(order, batch, cfg.optim.lr);
    let windows = throughput(&mut net, &mut feeder, cfg, batch, GpuNet::wait_idle)?;

    // Timing run: the same dispatches, one pass each, then the whole list as one pass.
    let list = net.step_dispatches().to_vec();
    let labels: Vec<&str> = list.iter().map(|d| d.label).collect();
    let names = name_dispatches(&labels);
    let timer = GpuTimer::new(ctx, list.len() as u32);
    let singles: Vec<&[crate::gpu::buffers::Dispatch]> =
        list.iter().map(std::slice::from_ref).collect();
    let (mut per_kernel, mut whole) = (Vec::new(), Vec::new());
    let (mut kernel_clock, mut step_clock) = (timer.clock(), timer.clock());
    for _ in 0..cfg.windows {
        feeder.restart(&mut net)?;
        let t = timer.time_passes(&singles)?;
        kernel_clock = weaker(kernel_clock, t.clock);
        per_kernel.push(t.seconds);
        feeder.restart(&mut net)?;
        let t = timer.time_passes(&[&list])?;
        step_clock = weaker(step_clock, t.clock);
        whole.push(t.seconds[0]);
    }
    net.wait_idle()?;
    let l = cfg.layers(batch);
    let seconds = column_medians(&per_kernel);
    let kernels = kernel_records(
        &names,
        &labels.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        &seconds,
        &l,
        &cfg.optim,
    );
    Ok(batch_record(
        cfg,
        batch,
        "gpu",
        ctx.adapter.clone(),
        windows,
        Some((median(&whole), step_clock)),
        Some((list.len() as u32, net.steps_per_submit())),
        kernel_clock,
        match kernel_clock {
            Clock::TimestampQuery => {
                "each dispatch of the step list in its own compute pass, one submit per repetition"
            }
            Clock::WallClock => {
                "each dispatch of the step list in its own pass, submit and wait, no timestamp queries"
            }
        },
        kernels,
    ))
}

fn weaker(a: Clock, b: Clock) -> Clock {
    if a == Clock::WallClock || b == Clock::WallClock {
        Clock::WallClock
    } else {
        Clock::TimestampQuery
    }
}

#[allow(clippy::too_many_arguments)]
fn batch_record(
    cfg: &BenchConfig,
    batch: u32,
    device: &'static str,
    adapter: AdapterSummary,
    windows: Vec<f64>,
    step_pass: Option<(f64, Clock)>,
    submits: Option<(u32, u32)>,
    kernel_clock: Clock,
    kernel_method: &'static str,
    kernels: Vec<KernelRecord>,
) -> BatchRecord {
    let l = cfg.layers(batch);
    let ips = median(&windows);
    let flops_per_step = train_flops(&l);
    BatchRecord {
        batch_size: batch,
        device,
        adapter,
        data: DATA_NOTE,
        images_per_second: ips,
        best_images_per_second: windows.iter().copied().fold(0.0, f64::max),
        window_images_per_second: windows,
        throughput_clock: Clock::WallClock,
        steps_per_window: cfg.steps,
        windows: cfg.windows,
        warmup_steps: cfg.warmup,
        step_seconds: batch as f64 / ips,
        flops_per_step,
        achieved_gflops: ips * flops_per_step / batch as f64 * 1e-9,
        step_pass_seconds: step_pass.map(|s| s.0),
        step_pass_clock: step_pass.map(|s| s.1),
        dispatches_per_step: submits.map(|s| s.0),
        steps_per_submit: submits.map(|s| s.1),
        kernel_clock,
        kernel_method,
        kernel_repetitions: cfg.windows,
        kernel_sum_seconds: kernels.iter().map(|k| k.seconds).sum(),
        kernels,
    }
}

/// The CPU as a report names it: model name from `/proc/cpuinfo` where there is one.
pub fn cpu_summary() -> AdapterSummary {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| format!("{} CPU", std::env::consts::ARCH));
    let threads = rayon::current_num_threads();
    AdapterSummary {
        name: format!("{name} ({threads} threads)"),
        backend: "cpu".into(),
        device_type: "host".into(),
        driver: format!(
            "fmnist-gpu CPU reference {}: rayon {threads} threads, gemm-crate GEMMs",
            env!("CARGO_PKG_VERSION")
        ),
    }
}

/// Benchmarks `cfg.batch_sizes` on the CPU backend.
pub fn bench_cpu(cfg: &BenchConfig) -> Result<BenchReport> {
    cfg.validate()?;
    let adapter = cpu_summary();
    let mut results = Vec::new();
    for &batch in &cfg.batch_sizes {
        log::info!("bench: batch {batch} on the CPU backend");
        let (data, order) = synthetic(batch, cfg.steps, cfg.seed);
        let params = Params::glorot(cfg.hidden as usize, cfg.seed);
        let mut net = CpuNet::new(cfg.net_config(batch), data, params);
        let mut feeder = StepFeeder::new(order, batch, cfg.optim.lr);
        let windows = throughput(&mut net, &mut feeder, cfg, batch, |_| Ok(()))?;
        // Per-op times come from the net's own step, timed op by op.
        net.time_ops(true);
        let mut reps = Vec::new();
        let mut names = Vec::new();
        for _ in 0..cfg.windows {
            feeder.step(&mut net)?;
            let laps = net.take_laps();
            names = laps.names;
            reps.push(laps.seconds);
        }
        let l = cfg.layers(batch);
        let kernels = kernel_records(&names, &names, &column_medians(&reps), &l, &cfg.optim);
        results.push(batch_record(
            cfg,
            batch,
            "cpu",
            adapter.clone(),
            windows,
            None,
            None,
            Clock::WallClock,
            "each op of CpuNet's own step, timed one by one",
            kernels,
        ));
    }
    Ok(BenchReport {
        tool: "fmnist-gpu bench",
        version: env!("CARGO_PKG_VERSION"),
        device: "cpu",
        adapter,
        data: DATA_NOTE,
        network: cfg.network(),
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_step_order() {
        let labels = [
            "gather",
            "conv.forward",
            "maxpool_forward",
            "conv.forward",
            "maxpool_forward",
            "dense_forward",
            "dense_forward",
            "dense_backward_weight",
            "dense_backward_weight",
            "conv.backward_weight",
            "reduce.sum_partials",
            "conv.backward_input",
            "conv.backward_weight",
            "wame",
            "wame",
            "advance",
            "mystery",
            "mystery",
        ];
        let names = name_dispatches(&labels);
        assert_eq!(
            names,
            [
                "gather",
                "conv1.forward",
                "pool1.forward",
                "conv2.forward",
                "pool2.forward",
                "fc1.forward",
                "fc2.forward",
                "fc2.backward_weight",
                "fc1.backward_weight",
                "conv2.backward_weight",
                "conv2.backward_weight_reduce",
                "conv2.backward_input",
                "conv1.backward_weight",
                "wame.conv1.weight",
                "wame.conv1.bias",
                "advance",
                "mystery",
                "mystery#2",
            ]
        );
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn synthetic_set_is_whole_batches() {
        let (data, order) = synthetic(48, 7, 1);
        assert_eq!(data.train.n, 48 * 7);
        assert_eq!(order.len(), 48 * 7);
        assert!(data.train.labels.iter().all(|&l| (l as usize) < CLASSES));
        let (data, _) = synthetic(512, 1000, 1);
        assert_eq!(data.train.n, SYNTHETIC_MAX_IMAGES / 512 * 512);
    }
}
