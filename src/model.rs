//! The network of SPEC 1: layer shapes, PyTorch parameter names, and seeded Glorot initialisation.

use crate::params::{
    ActParams, ConvParams, DenseParams, LossParams, PoolParams, dropout_threshold,
};
use crate::rng::{Stream, stream};
use rand::RngExt;

pub const CLASSES: usize = 10;
pub const SIDE: u32 = 28;
pub const CHANNELS: u32 = 64;
pub const KERNEL: u32 = 5;
/// pool2 output, flattened in C,H,W order: 64 * 4 * 4.
pub const FLAT: u32 = 1024;

/// Parameter names exactly as PyTorch's equivalent `nn.Module` has them (SPEC 2).
pub const PARAM_NAMES: [&str; 8] = [
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
];

/// Shapes of the eight parameters, in [`PARAM_NAMES`] order.
pub fn param_shapes(hidden: usize) -> [Vec<usize>; 8] {
    let (c, k) = (CHANNELS as usize, KERNEL as usize);
    [
        vec![c, 1, k, k],
        vec![c],
        vec![c, c, k, k],
        vec![c],
        vec![hidden, FLAT as usize],
        vec![hidden],
        vec![CLASSES, hidden],
        vec![CLASSES],
    ]
}

/// The eight parameter tensors, row-major f32, in [`PARAM_NAMES`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub hidden: usize,
    pub tensors: Vec<Vec<f32>>,
}

impl Params {
    pub fn zeros(hidden: usize) -> Self {
        let tensors = param_shapes(hidden)
            .iter()
            .map(|s| vec![0.0; s.iter().product()])
            .collect();
        Self { hidden, tensors }
    }

    /// Whether every value is finite (no NaN or infinity from a diverged run).
    pub fn all_finite(&self) -> bool {
        self.tensors.iter().flatten().all(|v| v.is_finite())
    }

    /// Glorot-uniform weights (Keras's default, which the seed used), zero biases.
    /// For a conv `fan_in = C_in*k*k` and `fan_out = C_out*k*k`.
    pub fn glorot(hidden: usize, seed: u64) -> Self {
        let mut rng = stream(seed, Stream::Init);
        let mut p = Self::zeros(hidden);
        for (t, shape) in p.tensors.iter_mut().zip(param_shapes(hidden)) {
            if shape.len() == 1 {
                continue;
            }
            let receptive: usize = shape[2..].iter().product();
            let (fan_in, fan_out) = (shape[1] * receptive, shape[0] * receptive);
            let l = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            for v in t.iter_mut() {
                *v = rng.random_range(-l..l);
            }
        }
        p
    }
}

/// Every op's params for one batch size: what both backends run, in order.
#[derive(Clone, Copy, Debug)]
pub struct Layers {
    pub batch: u32,
    pub hidden: u32,
    pub conv1: ConvParams,
    pub pool1: PoolParams,
    pub conv2: ConvParams,
    pub pool2: PoolParams,
    pub drop: ActParams,
    pub fc1: DenseParams,
    pub fc2: DenseParams,
    pub loss: LossParams,
}

impl Layers {
    /// `dropout_seed` keys the dropout hash (SPEC 4); `p == 0` disables dropout.
    pub fn new(batch: u32, hidden: u32, dropout: f32, dropout_seed: u32) -> Self {
        let conv1 = ConvParams::new(batch, 1, SIDE, SIDE, CHANNELS, KERNEL, true);
        let pool1 = PoolParams::new(batch, CHANNELS, conv1.oh, conv1.ow);
        let conv2 = ConvParams::new(batch, CHANNELS, pool1.oh, pool1.ow, CHANNELS, KERNEL, true);
        let pool2 = PoolParams::new(batch, CHANNELS, conv2.oh, conv2.ow);
        debug_assert_eq!(pool2.oh * pool2.ow * CHANNELS, FLAT);
        Self {
            batch,
            hidden,
            conv1,
            pool1,
            conv2,
            pool2,
            drop: ActParams {
                n: batch * FLAT,
                threshold: dropout_threshold(dropout),
                scale: 1.0 / (1.0 - dropout),
                seed: dropout_seed,
            },
            fc1: DenseParams::new(batch, FLAT, hidden, true),
            fc2: DenseParams::new(batch, hidden, CLASSES as u32, false),
            loss: LossParams::new(batch, CLASSES as u32, 0.0),
        }
    }

    /// Evaluation's loss: plain cross-entropy whatever the training loss's label smoothing, so
    /// validation and test losses compare across smoothing settings.
    pub fn eval_loss(&self) -> LossParams {
        LossParams {
            label_smoothing: 0.0,
            ..self.loss
        }
    }

    pub fn dropout_on(&self) -> bool {
        self.drop.threshold > 0
    }

    /// Forward FLOPs per image (multiply-adds count 2), for throughput reports.
    pub fn flops_per_image(&self) -> f64 {
        let conv = |c: &ConvParams| 2.0 * (c.c_out * c.oh * c.ow * c.c_in * c.k * c.k) as f64;
        let dense = |d: &DenseParams| 2.0 * (d.n_in * d.n_out) as f64;
        conv(&self.conv1) + conv(&self.conv2) + dense(&self.fc1) + dense(&self.fc2)
    }
}
