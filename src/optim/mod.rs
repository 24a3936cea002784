//! Optimizer choice and hyper-parameters (SPEC 5), and the per-tensor params each update takes.

pub mod stats;

use crate::params::{OptParams, WameParams};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Wame,
    Adam,
    Rmsprop,
    Sgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WameVariant {
    /// m = zeta / Z: the seed report's line 11 with its footnote (default).
    Seed,
    /// m = Z: Algorithm 1 of the paper as printed (wants a larger lr, e.g. 3e-2).
    Paper,
    /// m = 1 / Z: the seed's line 11 read literally.
    Inverse,
}

impl WameVariant {
    pub fn code(self) -> u32 {
        match self {
            WameVariant::Seed => 0,
            WameVariant::Paper => 1,
            WameVariant::Inverse => 2,
        }
    }
}

/// Everything that defines an optimizer run. `lr` already has the optimizer's default applied.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub kind: OptimizerKind,
    pub lr: f32,
    pub variant: WameVariant,
    pub alpha: f32,
    pub eta_plus: f32,
    pub eta_minus: f32,
    pub zeta_min: f32,
    pub zeta_max: f32,
    /// WAME's eps (1e-12) or the baselines' (1e-8).
    pub eps: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub momentum: f32,
    /// Linear warm-up of the rate over the first steps (`--warmup-steps`, 0: none). Runs
    /// recorded before it existed had none.
    #[serde(default)]
    pub warmup_steps: u32,
    /// Decoupled weight decay (`--weight-decay`, AdamW's form, 0: none). Runs recorded before it
    /// existed had none.
    #[serde(default)]
    pub weight_decay: f32,
}

impl OptimConfig {
    /// SPEC 5 defaults for `kind`.
    pub fn defaults(kind: OptimizerKind) -> Self {
        Self {
            kind,
            lr: if kind == OptimizerKind::Sgd {
                1e-2
            } else {
                1e-3
            },
            variant: WameVariant::Seed,
            alpha: 0.9,
            eta_plus: 1.2,
            eta_minus: 0.1,
            zeta_min: 0.01,
            zeta_max: 100.0,
            eps: if kind == OptimizerKind::Wame {
                1e-12
            } else {
                1e-8
            },
            beta1: 0.9,
            beta2: 0.999,
            momentum: 0.9,
            warmup_steps: 0,
            weight_decay: 0.0,
        }
    }

    /// Floats of state per weight: WAME (zeta, Z, theta, g_prev), Adam (m, v), RMSprop v, SGD b.
    pub fn state_width(&self) -> usize {
        match self.kind {
            OptimizerKind::Wame => 4,
            OptimizerKind::Adam => 2,
            OptimizerKind::Rmsprop | OptimizerKind::Sgd => 1,
        }
    }

    /// Fresh state for `n` weights (WAME starts with zeta = 1).
    pub fn initial_state(&self, n: usize) -> Vec<f32> {
        let mut s = vec![0.0; n * self.state_width()];
        if self.kind == OptimizerKind::Wame {
            for c in s.chunks_mut(4) {
                c[0] = 1.0;
            }
        }
        s
    }

    pub fn wame_params(&self, n: usize, lr: f32) -> WameParams {
        WameParams {
            n: n as u32,
            variant: self.variant.code(),
            lr,
            alpha: self.alpha,
            eta_plus: self.eta_plus,
            eta_minus: self.eta_minus,
            zeta_min: self.zeta_min,
            zeta_max: self.zeta_max,
            eps: self.eps,
            warmup: self.warmup_steps,
            weight_decay: self.weight_decay,
            _pad: 0,
        }
    }

    /// Adam uses b1/b2, RMSprop its `alpha` as b2, SGD its momentum as b1.
    pub fn opt_params(&self, n: usize, lr: f32) -> OptParams {
        let (b1, b2) = match self.kind {
            OptimizerKind::Rmsprop => (0.0, self.alpha),
            OptimizerKind::Sgd => (self.momentum, 0.0),
            _ => (self.beta1, self.beta2),
        };
        OptParams::new(
            n as u32,
            lr,
            b1,
            b2,
            self.eps,
            self.warmup_steps,
            self.weight_decay,
        )
    }
}
