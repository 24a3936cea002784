//! The training backends behind one interface: the CPU reference net and the wgpu net.

pub mod cpu;
pub mod gpu;

use crate::Result;
use crate::cpu::loss::Metrics;
use crate::data::DataSet;
use crate::gpu::AdapterSummary;
use crate::model::{Layers, Params};
use crate::optim::OptimConfig;
use crate::optim::stats::TensorStats;
use crate::rng::{Stream, hash_key};
use std::sync::Arc;

/// What the backend was built for. The batch size is fixed for its lifetime.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    pub batch: u32,
    pub hidden: u32,
    pub dropout: f32,
    pub augment: bool,
    /// Applies to the training loss only: evaluation reports plain cross-entropy.
    pub label_smoothing: f32,
    pub optim: OptimConfig,
    pub seed: u64,
}

impl NetConfig {
    /// A net that only runs forward passes (`predict`): no dropout, augmentation or smoothing;
    /// the optimizer is never stepped.
    pub fn inference(batch: u32, hidden: u32) -> Self {
        Self {
            batch,
            hidden,
            dropout: 0.0,
            augment: false,
            label_smoothing: 0.0,
            optim: crate::optim::OptimConfig::defaults(crate::optim::OptimizerKind::Wame),
            seed: 0,
        }
    }

    /// Every op's params for this config, as both backends run them.
    pub fn layers(&self) -> Layers {
        let mut l = Layers::new(
            self.batch,
            self.hidden,
            self.dropout,
            hash_key(self.seed, Stream::Dropout),
        );
        l.loss.label_smoothing = self.label_smoothing;
        l
    }
}

/// Which resident data set an index list refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Train,
    Test,
}

/// Activations, loss and gradients of one forward/backward pass on a given batch (for parity).
#[derive(Clone, Debug, Default)]
pub struct Probe {
    /// `act.conv1`, `act.pool1`, `act.conv2`, `act.pool2`, `act.fc1` (pre-ReLU conv/fc outputs,
    /// pooled outputs), `logits`, each with its values.
    pub tensors: Vec<(String, Vec<f32>)>,
    pub loss: f32,
    /// Gradients in `PARAM_NAMES` order.
    pub grads: Vec<Vec<f32>>,
}

pub trait Net {
    /// `"cpu"` or `"gpu"`.
    fn device(&self) -> &'static str;
    fn adapter(&self) -> Option<AdapterSummary>;

    /// Starts an epoch over `order` (indices into the training set); `t` steps continue the run.
    fn begin_epoch(&mut self, order: &[u32], lr: f32) -> Result<()>;
    /// One optimizer step on the next batch of the epoch (the last one may be short).
    fn train_step(&mut self) -> Result<()>;
    /// Makes the next [`Net::train_step`] also compute the optimizer statistics of its update
    /// (from the state and gradient just before it; once per epoch, on its last step), for
    /// [`Net::take_optim_stats`]. Training is unchanged, bit for bit.
    fn request_optim_stats(&mut self) -> Result<()>;
    /// The statistics the requested step computed, per tensor in `PARAM_NAMES` order; empty if
    /// none was requested since the last call.
    fn take_optim_stats(&mut self) -> Result<Vec<TensorStats>>;
    /// Training loss sum, correct count and rows seen since the last call (then reset).
    fn take_metrics(&mut self) -> Result<Metrics>;
    /// Loss and accuracy over `indices` of a data set, no dropout; `predictions` gets the argmax
    /// class per index when given.
    fn evaluate(
        &mut self,
        which: Which,
        indices: &[u32],
        predictions: Option<&mut Vec<u32>>,
    ) -> Result<Metrics>;

    fn params(&mut self) -> Result<Params>;
    fn set_params(&mut self, p: &Params) -> Result<()>;
    /// Whether every parameter is finite. The default downloads them; the CPU net checks in
    /// place, so the per-step divergence check of the CPU path copies nothing.
    fn params_finite(&mut self) -> Result<bool> {
        Ok(self.params()?.all_finite())
    }
    /// Optimizer state per parameter tensor (width `state_width`), and the step count `t`.
    fn optim_state(&mut self) -> Result<(Vec<Vec<f32>>, u32)>;
    fn set_optim_state(&mut self, state: &[Vec<f32>], t: u32) -> Result<()>;

    /// Forward and backward on `x` `[B,1,28,28]` with `labels`, no dropout, nothing updated.
    fn probe(&mut self, x: &[f32], labels: &[u32]) -> Result<Probe>;
    /// One optimizer step on `x`/`labels` (no dropout); returns the loss before the step.
    fn probe_step(&mut self, x: &[f32], labels: &[u32]) -> Result<f32>;
}

/// The training and test images a net keeps resident (shared, never copied per step).
#[derive(Clone, Debug)]
pub struct NetData {
    pub train: Arc<DataSet>,
    pub test: Arc<DataSet>,
}

impl NetData {
    pub fn get(&self, which: Which) -> &DataSet {
        match which {
            Which::Train => &self.train,
            Which::Test => &self.test,
        }
    }

    /// No images: for nets that only run [`Net::probe`] (parity with a fixture).
    pub fn empty() -> Self {
        let none = Arc::new(DataSet {
            images: Vec::new(),
            labels: Vec::new(),
            n: 0,
            rows: 28,
            cols: 28,
        });
        Self {
            train: none.clone(),
            test: none,
        }
    }
}
