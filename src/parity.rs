//! The kernel table (SPEC 8, 10): every GPU entry point against its CPU twin on seeded random
//! inputs, several shapes each (odd ones included), every output buffer compared with
//! `|gpu - cpu| <= atol + rtol * |cpu|`, and the worst entries kept for the report.
//!
//! `fmnist-gpu parity` (no `--fixture`) runs [`cases`] through [`run_table`]; the GPU tests run
//! the same cases, a kernel at a time, through [`Runner`], so the table and the tests cannot drift.

use crate::cpu;
use crate::cpu::Real;
use crate::gpu::buffers::{Arena, Dispatch, View, read_async, run_once, storage_init};
use crate::gpu::tile::Tile;
use crate::gpu::{DeviceArgs, GpuContext, Selected};
use crate::ops::act::{ActKernels, dropout_params, relu_params};
use crate::ops::conv::{ConvKernels, PoolDropout};
use crate::ops::conv_grad::ConvGradKernels;
use crate::ops::data::{DataKernels, pack_u8};
use crate::ops::dense::DenseKernels;
use crate::ops::head::{HeadGrads, HeadInputs, HeadKernels};
use crate::ops::loss::LossKernels;
use crate::ops::optim::{OptimKernels, UpdateRule, WAME_INIT, update_table};
use crate::ops::pool::PoolKernels;
use crate::optim::stats::zeta_edges;
use crate::params::{
    ConvGradParams, ConvParams, DenseParams, GatherParams, HEAD_CLASSES, HeadParams, LossParams,
    OptParams, PoolParams, ReduceParams, StatsPartial, StepState, WameParams,
};
use crate::{Error, Result};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::OnceCell;
use std::time::Instant;

/// What one output must satisfy.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Tol {
    /// `|gpu - cpu| <= atol + rtol * |cpu|` element-wise; NaN never passes.
    Close { atol: f32, rtol: f32 },
    /// Equal: integers by value, floats bit for bit.
    Exact,
}

/// SPEC 10, element-wise ops (pool, activations, softmax, optimizers, gather).
pub const ELEMENTWISE: Tol = Tol::Close {
    atol: 1e-6,
    rtol: 1e-5,
};
/// SPEC 10, reductions (conv, dense, the loss sum).
pub const REDUCTION: Tol = Tol::Close {
    atol: 1e-5,
    rtol: 1e-4,
};

impl std::fmt::Display for Tol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tol::Close { atol, rtol } => write!(f, "{atol:.0e}+{rtol:.0e}|c|"),
            Tol::Exact => write!(f, "exact"),
        }
    }
}

/// Every entry point the table covers, as `family.entry` (the WGSL entry point's name).
pub const KERNELS: [&str; 37] = [
    "conv.forward",
    "conv.backward_input",
    "conv.backward_weight",
    "conv.backward_bias",
    "conv.forward_relu_pool",
    "conv_grad.backward_weight",
    "conv_grad.backward_input",
    "conv_grad.backward",
    "reduce.sum_partials",
    "pool.maxpool_forward",
    "pool.maxpool_backward",
    "dense.forward",
    "dense.backward_input",
    "dense.backward_weight",
    "dense.backward_bias",
    "dense.backward_fused",
    "head.head",
    "act.relu_forward",
    "act.relu_backward",
    "act.dropout_forward",
    "act.dropout_backward",
    "loss.softmax_xent_forward",
    "loss.softmax_xent_backward",
    "optim.wame",
    "optim.adam",
    "optim.rmsprop",
    "optim.sgd",
    "optim.update_wame",
    "optim.update_adam",
    "optim.update_rmsprop",
    "optim.update_sgd",
    "optim.stats_wame",
    "optim.stats_adam",
    "optim.stats_rmsprop",
    "optim.stats_sgd",
    "data.gather",
    "data.advance",
];

/// Which entry point of `conv_grad.wgsl` a [`Case::ConvGrad`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvGradMode {
    /// backward_weight: weight and bias gradients.
    Weight,
    /// backward_input: the input gradient.
    Input,
    /// backward: all three in one dispatch.
    Both,
}

impl ConvGradMode {
    pub const ALL: [ConvGradMode; 3] = [
        ConvGradMode::Weight,
        ConvGradMode::Input,
        ConvGradMode::Both,
    ];
}

/// The four entry points of the GEMM-shaped families (conv and dense).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Forward,
    BackwardInput,
    BackwardWeight,
    BackwardBias,
}

impl Pass {
    pub const ALL: [Pass; 4] = [
        Pass::Forward,
        Pass::BackwardInput,
        Pass::BackwardWeight,
        Pass::BackwardBias,
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opt {
    /// `variant` as in [`WameParams`]: 0 seed, 1 paper, 2 inverse.
    Wame {
        variant: u32,
    },
    Adam,
    Rmsprop,
    Sgd,
}

/// One GPU-vs-CPU comparison: an entry point, a shape and the seed of its random inputs.
#[derive(Clone, Debug, PartialEq)]
pub enum Case {
    /// `f64_reference` runs the CPU twin in f64 and rounds once: for sums so long that the f32
    /// twin's own rounding would dominate the comparison.
    Conv {
        pass: Pass,
        p: ConvParams,
        seed: u64,
        f64_reference: bool,
    },
    /// `conv.forward_relu_pool`: `dropout` is `(p, t)` (the drop probability and the step the
    /// mask is drawn for); `grid` draws inputs on a coarse binary grid, so every conv sum is
    /// exact in any order, windows hold exact ties, and GPU and CPU must agree bit for bit.
    /// `tile`: the variant run; a non-default one is also checked bit for bit against the
    /// default's outputs (tuning never changes numbers).
    ConvPool {
        p: ConvParams,
        tile: Tile,
        dropout: Option<(f32, u32)>,
        grid: bool,
        seed: u64,
    },
    /// The fused conv backward of `conv_grad.wgsl` (the entry point `mode` picks), dropout's
    /// mask drawn for step `t` when `p.dropout != 0`; `tile` as in [`Case::ConvPool`].
    ConvGrad {
        mode: ConvGradMode,
        p: ConvGradParams,
        tile: Tile,
        t: u32,
        seed: u64,
    },
    SumPartials {
        n: u32,
        parts: u32,
        seed: u64,
    },
    Pool {
        backward: bool,
        p: PoolParams,
        seed: u64,
    },
    /// `tile` is the forward's variant; the unfused backward passes always run (and carry)
    /// [`crate::ops::dense::UNFUSED_TILE`].
    Dense {
        pass: Pass,
        p: DenseParams,
        tile: Tile,
        seed: u64,
    },
    /// `dense.backward_fused`: dw, db and dx of one layer in one dispatch, with `tile`.
    DenseFused {
        p: DenseParams,
        tile: Tile,
        seed: u64,
    },
    /// `head.head` (fc2 + softmax cross-entropy, with or without the backward) on the third
    /// batch of an epoch whose last batch holds `valid` rows, like [`Case::Loss`].
    Head {
        backward: bool,
        batch: u32,
        hidden: u32,
        valid: u32,
        label_smoothing: f32,
        seed: u64,
    },
    Relu {
        backward: bool,
        n: u32,
        seed: u64,
    },
    /// `seed` also seeds the dropout hash; `t` is the step the mask is drawn for.
    Dropout {
        backward: bool,
        n: u32,
        prob: f32,
        t: u32,
        seed: u64,
    },
    /// The batch is the third of an epoch whose last batch holds `valid` rows.
    Loss {
        backward: bool,
        batch: u32,
        classes: u32,
        valid: u32,
        label_smoothing: f32,
        seed: u64,
    },
    /// `steps` consecutive updates (each followed by `advance`) with fresh gradients.
    /// `warmup`: the linear warm-up length in steps (0: none); `weight_decay`: decoupled decay.
    /// `start_t`: the step number of the first update (`StepState.t` starts at `start_t - 1`);
    /// every step is also checked against the CPU twin in f64 from the same f32 inputs.
    Optim {
        opt: Opt,
        n: u32,
        steps: u32,
        start_t: u32,
        warmup: u32,
        weight_decay: f32,
        seed: u64,
    },
    /// The fused update of several tensors `(n, parts)` in one dispatch through arenas, `steps`
    /// steps from step number `start_t`, with fresh partial gradients each step.
    Update {
        opt: Opt,
        tensors: Vec<(u32, u32)>,
        steps: u32,
        start_t: u32,
        seed: u64,
    },
    /// The statistics of one fused update (`optim.stats_*`) of several tensors `(n, parts)` at
    /// step number `t`, from random mid-run state (WAME's zeta at its bounds, on bin edges and
    /// between them; gradients that keep, flip or zero their sign): counts exactly, sums within
    /// the reduction tolerance, the arenas untouched.
    Stats {
        opt: Opt,
        tensors: Vec<(u32, u32)>,
        t: u32,
        seed: u64,
    },
    /// The last batches of an epoch of [`GATHER_N`] of [`GATHER_SAMPLES`] images, the short
    /// batch and one batch past the end included, each followed by `advance`.
    Gather {
        batch: u32,
        augment: bool,
        seed: u64,
    },
    Advance {
        start: StepState,
        steps: u32,
    },
}

/// `[variant ]n/parts n1/p1,n2/p2,...`: the tensor list of a fused-update or statistics case.
fn tensors_label(opt: Opt, tensors: &[(u32, u32)]) -> String {
    let ts: Vec<String> = tensors
        .iter()
        .map(|(n, parts)| format!("{n}/{parts}"))
        .collect();
    let v = match opt {
        Opt::Wame { variant } => ["seed ", "paper ", "inverse "][(variant as usize).min(2)],
        _ => "",
    };
    format!("{v}n/parts {}", ts.join(","))
}

/// Samples in the gather cases' data set, and the epoch length that uses all but four of them
/// (so positions past `n` exist in the index list and must not be read).
pub const GATHER_SAMPLES: usize = 54;
pub const GATHER_N: u32 = GATHER_SAMPLES as u32 - 4;
const PIXELS: usize = 28 * 28;

impl Case {
    /// The entry point, one of [`KERNELS`].
    /// The tile variant a GEMM case runs, where the kernel has variants.
    pub fn tile(&self) -> Option<Tile> {
        match self {
            Case::ConvPool { tile, .. }
            | Case::ConvGrad { tile, .. }
            | Case::DenseFused { tile, .. }
            | Case::Dense {
                pass: Pass::Forward,
                tile,
                ..
            } => Some(*tile),
            _ => None,
        }
    }

    pub fn kernel(&self) -> &'static str {
        let gemm = |family: [&'static str; 4], pass: Pass| family[pass as usize];
        let pick = |backward: bool, forward: &'static str, back: &'static str| {
            if backward { back } else { forward }
        };
        match self {
            Case::Conv { pass, .. } => gemm(
                [
                    "conv.forward",
                    "conv.backward_input",
                    "conv.backward_weight",
                    "conv.backward_bias",
                ],
                *pass,
            ),
            Case::ConvGrad { mode, .. } => match mode {
                ConvGradMode::Weight => "conv_grad.backward_weight",
                ConvGradMode::Input => "conv_grad.backward_input",
                ConvGradMode::Both => "conv_grad.backward",
            },
            Case::ConvPool { .. } => "conv.forward_relu_pool",
            Case::SumPartials { .. } => "reduce.sum_partials",
            Case::Pool { backward, .. } => {
                pick(*backward, "pool.maxpool_forward", "pool.maxpool_backward")
            }
            Case::Dense { pass, .. } => gemm(
                [
                    "dense.forward",
                    "dense.backward_input",
                    "dense.backward_weight",
                    "dense.backward_bias",
                ],
                *pass,
            ),
            Case::DenseFused { .. } => "dense.backward_fused",
            Case::Head { .. } => "head.head",
            Case::Relu { backward, .. } => pick(*backward, "act.relu_forward", "act.relu_backward"),
            Case::Dropout { backward, .. } => {
                pick(*backward, "act.dropout_forward", "act.dropout_backward")
            }
            Case::Loss { backward, .. } => pick(
                *backward,
                "loss.softmax_xent_forward",
                "loss.softmax_xent_backward",
            ),
            Case::Optim { opt, .. } => match opt {
                Opt::Wame { .. } => "optim.wame",
                Opt::Adam => "optim.adam",
                Opt::Rmsprop => "optim.rmsprop",
                Opt::Sgd => "optim.sgd",
            },
            Case::Update { opt, .. } => match opt {
                Opt::Wame { .. } => "optim.update_wame",
                Opt::Adam => "optim.update_adam",
                Opt::Rmsprop => "optim.update_rmsprop",
                Opt::Sgd => "optim.update_sgd",
            },
            Case::Stats { opt, .. } => match opt {
                Opt::Wame { .. } => "optim.stats_wame",
                Opt::Adam => "optim.stats_adam",
                Opt::Rmsprop => "optim.stats_rmsprop",
                Opt::Sgd => "optim.stats_sgd",
            },
            Case::Gather { .. } => "data.gather",
            Case::Advance { .. } => "data.advance",
        }
    }

    /// The shape (and whatever else distinguishes the case) in a few words.
    pub fn shape(&self) -> String {
        match self {
            Case::Conv {
                p, f64_reference, ..
            } => format!(
                "B{} Cin{} {}x{} Cout{} k{}{}{}",
                p.batch,
                p.c_in,
                p.h,
                p.w,
                p.c_out,
                p.k,
                if p.relu != 0 { " relu" } else { "" },
                if *f64_reference { " (f64 ref)" } else { "" }
            ),
            Case::ConvPool {
                p,
                tile,
                dropout,
                grid,
                ..
            } => format!(
                "B{} Cin{} {}x{} Cout{} k{}{}{}{} tile {}",
                p.batch,
                p.c_in,
                p.h,
                p.w,
                p.c_out,
                p.k,
                if p.relu != 0 { " relu" } else { "" },
                match dropout {
                    Some((prob, t)) => format!(" drop p={prob} t={t}"),
                    None => String::new(),
                },
                if *grid { " grid" } else { "" },
                tile.name()
            ),
            Case::ConvGrad { p, tile, t, .. } => format!(
                "B{} Cin{} {}x{} Cout{} k{} parts {}{} tile {}",
                p.batch,
                p.c_in,
                p.h,
                p.w,
                p.c_out,
                p.k,
                p.parts,
                if p.dropout != 0 {
                    format!(" dropout t={t}")
                } else {
                    String::new()
                },
                tile.name()
            ),
            Case::SumPartials { n, parts, .. } => format!("n={n} parts={parts}"),
            Case::Pool { p, .. } => format!("{}x{}x{}x{}", p.batch, p.c, p.h, p.w),
            Case::Dense { pass, p, tile, .. } => format!(
                "B{} In{} Out{}{}{}",
                p.batch,
                p.n_in,
                p.n_out,
                if p.relu != 0 { " relu" } else { "" },
                if *pass == Pass::Forward {
                    format!(" tile {}", tile.name())
                } else {
                    String::new()
                }
            ),
            Case::DenseFused { p, tile, .. } => format!(
                "B{} In{} Out{} tile {}",
                p.batch,
                p.n_in,
                p.n_out,
                tile.name()
            ),
            Case::Head {
                backward,
                batch,
                hidden,
                valid,
                label_smoothing,
                ..
            } => {
                let ls = if *label_smoothing > 0.0 {
                    format!(" ls {label_smoothing}")
                } else {
                    String::new()
                };
                let dir = if *backward { "fwd+bwd" } else { "fwd" };
                format!("B{batch} H{hidden} valid {valid}{ls} {dir}")
            }
            Case::Relu { n, .. } => format!("n={n}"),
            Case::Dropout { n, prob, t, .. } => format!("n={n} p={prob} t={t}"),
            Case::Loss {
                batch,
                classes,
                valid,
                label_smoothing,
                ..
            } => {
                let ls = if *label_smoothing > 0.0 {
                    format!(" ls {label_smoothing}")
                } else {
                    String::new()
                };
                format!("B{batch} C{classes} valid {valid}{ls}")
            }
            Case::Optim {
                opt,
                n,
                steps,
                start_t,
                warmup,
                weight_decay,
                ..
            } => {
                let mut wu = if *warmup > 0 {
                    format!(" warmup {warmup}")
                } else {
                    String::new()
                };
                if *start_t != 1 {
                    wu += &format!(" from t={start_t}");
                }
                if *weight_decay > 0.0 {
                    wu += &format!(" wd {weight_decay}");
                }
                match opt {
                    Opt::Wame { variant } => format!(
                        "n={n} {} x{steps}{wu}",
                        ["seed", "paper", "inverse"]
                            .get(*variant as usize)
                            .unwrap_or(&"?")
                    ),
                    _ => format!("n={n} x{steps}{wu}"),
                }
            }
            Case::Update {
                opt,
                tensors,
                steps,
                start_t,
                ..
            } => format!("{} x{steps} from t={start_t}", tensors_label(*opt, tensors)),
            Case::Stats {
                opt, tensors, t, ..
            } => format!("{} at t={t}", tensors_label(*opt, tensors)),
            Case::Gather { batch, augment, .. } => format!(
                "B{batch}{} n={GATHER_N} x{}",
                if *augment { " augment" } else { "" },
                gather_steps(*batch).1
            ),
            Case::Advance { start, steps } => format!(
                "from ({},{},{},{}) x{steps}",
                start.epoch_step, start.t, start.n, start.batch
            ),
        }
    }
}

/// `(first, count)`: the gather cases skip to the last `count - 1` batches of the epoch (the
/// short one is the interesting one) and run one batch past its end.
fn gather_steps(batch: u32) -> (u32, u32) {
    let batches = GATHER_N.div_ceil(batch);
    let count = batches.min(6) + 1;
    (batches - (count - 1), count)
}

/// (batch, c_in, h, w, c_out, k, relu): odd sizes, tile edges in every GEMM dimension, the
/// model's two layers, shapes whose backward_weight needs one, several and a ragged last chunk
/// of split-K parts, a kernel as tall as the input (one output row), and batches of 64 and 70
/// (backward_input's batch-innermost tiles are exactly one pixel or straddle two).
pub const CONV_SHAPES: &[(u32, u32, u32, u32, u32, u32, bool)] = &[
    (1, 1, 7, 7, 1, 3, false),
    (2, 1, 28, 28, 64, 5, true),
    (3, 3, 13, 13, 5, 3, true),
    (5, 64, 12, 12, 64, 5, true),
    (2, 3, 7, 7, 5, 5, false),
    (4, 64, 13, 13, 5, 3, false),
    (1, 5, 12, 12, 64, 5, true),
    (2, 3, 9, 13, 7, 3, true),
    (5, 3, 28, 28, 5, 5, false),
    (3, 65, 7, 7, 66, 3, true),
    (64, 3, 7, 7, 5, 3, true),
    (70, 2, 6, 6, 3, 3, false),
    (3, 2, 5, 6, 4, 5, true),
    (9, 16, 12, 12, 64, 5, true),
];

/// A `conv.forward_relu_pool` case: (batch, c_in, h, w, c_out, k, relu), dropout `(p, t)`, grid.
pub type ConvPoolCase = (
    (u32, u32, u32, u32, u32, u32, bool),
    Option<(f32, u32)>,
    bool,
);

/// The [`ConvPoolCase`]s: the model's conv1 and conv2 (with and without dropout), odd conv
/// outputs (floor mode drops a row and/or a column), batch 1 and 3, channel counts that are not
/// multiples of 4 or straddle a 64-channel tile, many window tiles, k = 1, no ReLU; the grid
/// cases check exact ties.
pub const CONV_POOL_CASES: &[ConvPoolCase] = &[
    ((2, 1, 28, 28, 64, 5, true), None, false),
    ((3, 64, 12, 12, 64, 5, true), None, false),
    ((3, 64, 12, 12, 64, 5, true), Some((0.4, 17)), false),
    ((1, 3, 13, 13, 5, 3, true), None, false),
    ((3, 2, 9, 12, 7, 3, true), Some((0.4, 3)), false),
    ((1, 1, 7, 8, 1, 3, false), None, false),
    ((5, 3, 28, 28, 6, 5, true), None, false),
    ((3, 65, 7, 7, 66, 3, true), Some((0.8, 0)), false),
    ((2, 70, 6, 6, 3, 1, true), None, false),
    ((3, 1, 28, 28, 64, 5, true), None, true),
    ((2, 64, 12, 12, 64, 5, true), Some((0.4, 17)), true),
    ((1, 3, 13, 13, 5, 3, true), None, true),
    ((2, 2, 9, 9, 3, 3, false), None, true),
];

/// (batch, c_in, h, w, c_out, k, dropout) of the fused conv backward: the model's conv2 (with
/// and without dropout) and conv1 at batch 2, odd conv outputs (the floor-mode pool drops a row
/// and a column), batches 1 and 3, channel counts that are not multiples of 4 or that need two
/// column tiles, several and a ragged last split-K part, and a batch of 70 (backward_input's
/// batch-innermost tiles straddle pixels).
pub const CONV_GRAD_SHAPES: &[(u32, u32, u32, u32, u32, u32, bool)] = &[
    (2, 64, 12, 12, 64, 5, true),
    (2, 64, 12, 12, 64, 5, false),
    (2, 1, 28, 28, 64, 5, false),
    (1, 3, 11, 11, 5, 3, true),
    (3, 5, 10, 13, 7, 3, false),
    (3, 6, 9, 9, 66, 3, true),
    (5, 3, 28, 28, 5, 5, true),
    (70, 2, 6, 6, 3, 3, false),
];

/// The [`CONV_POOL_CASES`] also run with every other tile variant: the model's conv2, odd
/// outputs with dropout, channels straddling a tile, exact ties.
pub const CONV_POOL_VARIANT_CASES: &[usize] = &[1, 4, 7, 11];

/// The [`CONV_GRAD_SHAPES`] also run with every other tile variant, per [`ConvGradMode::ALL`]
/// entry: the model's conv1 (weight; the step runs it so), conv2 (both), odd and two-column-tile
/// shapes, ragged split-K parts, batch 70.
pub const CONV_GRAD_VARIANT_CASES: [&[usize]; 3] = [&[2, 4], &[3, 4], &[0, 5, 7]];

/// The default tile, then (when `all`) every other [`Tile::CANDIDATES`] entry.
fn variants(all: bool) -> Vec<Tile> {
    if all {
        Tile::CANDIDATES.to_vec()
    } else {
        vec![Tile::DEFAULT]
    }
}

/// The dropout probability of the conv_grad cases that have dropout.
pub const CONV_GRAD_DROPOUT: f32 = 0.4;

/// The [`ConvGradParams`] of a [`CONV_GRAD_SHAPES`] row; `seed` keys the dropout hash.
pub fn conv_grad_params(s: (u32, u32, u32, u32, u32, u32, bool), seed: u32) -> ConvGradParams {
    let conv = ConvParams::new(s.0, s.1, s.2, s.3, s.4, s.5, true);
    let drop = crate::ops::act::dropout_params(0, CONV_GRAD_DROPOUT, seed);
    ConvGradParams::new(&conv, s.6.then_some(&drop))
}

/// (batch, n_in, n_out, relu): tiny, odd, tile-straddling and the model's fc1/fc2.
pub const DENSE_SHAPES: &[(u32, u32, u32, bool)] = &[
    (1, 5, 3, false),
    (3, 17, 10, true),
    (7, 33, 13, false),
    (5, 64, 32, true),
    (37, 70, 19, false),
    (128, 1024, 128, true),
    (128, 128, 10, false),
];

/// The dense shapes that run every tile variant of [`Tile::CANDIDATES`] (dense.forward and
/// dense.backward_fused): the model's fc1 and an odd shape straddling every tile edge; the
/// other shapes run [`Tile::DEFAULT`] only (lavapipe is slow).
pub const DENSE_TILE_SHAPES: &[(u32, u32, u32)] = &[(128, 1024, 128), (37, 70, 19)];

/// The tiles a dense shape's forward and fused backward cases run with.
fn dense_tiles(s: (u32, u32, u32)) -> Vec<Tile> {
    if DENSE_TILE_SHAPES.contains(&s) {
        Tile::CANDIDATES.to_vec()
    } else {
        vec![Tile::DEFAULT]
    }
}

/// (batch, n_in, n_out) of `dense.backward_fused`: tiny, odd, tile-straddling in every
/// dimension, more bias workgroups than tiles, and the model's fc1.
pub const DENSE_FUSED_SHAPES: &[(u32, u32, u32)] = &[
    (1, 5, 3),
    (3, 17, 10),
    (37, 70, 19),
    (33, 31, 65),
    (70, 129, 7),
    (128, 1024, 128),
];

/// (batch, hidden, valid rows) of `head.head`: one row, a few, a short and a full batch around
/// 128, more rows than the 256 invocations (two chunks), no valid row, hidden 128, odd widths
/// and the largest the model uses (1024; more columns than invocations).
pub const HEAD_SHAPES: &[(u32, u32, u32)] = &[
    (1, 128, 1),
    (3, 37, 2),
    (3, 128, 3),
    (128, 128, 100),
    (131, 37, 131),
    (300, 128, 300),
    (7, 129, 0),
    (64, 1024, 64),
    (257, 301, 200),
];

/// (batch, c, h, w): odd planes (floor mode drops the last row/column) and the model's pools.
pub const POOL_SHAPES: &[(u32, u32, u32, u32)] = &[
    (1, 1, 13, 13),
    (3, 5, 24, 24),
    (7, 2, 13, 13),
    (2, 64, 8, 8),
    (1, 3, 5, 7),
];

/// Element counts of the 1-D kernels: one element, a partial workgroup, several, and many.
pub const VECTOR_LENS: [u32; 4] = [1, 3, 1000, 70001];

/// (batch, classes, valid rows).
pub const LOSS_SHAPES: &[(u32, u32, u32)] = &[
    (1, 10, 1),
    (3, 10, 2),
    (7, 10, 7),
    (7, 3, 0),
    (128, 10, 100),
    (300, 10, 300),
    (4096, 10, 4001),
];

/// The table: every entry point of every family, several shapes each.
pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (pi, &pass) in Pass::ALL.iter().enumerate() {
        for (si, s) in CONV_SHAPES.iter().enumerate() {
            v.push(Case::Conv {
                pass,
                p: ConvParams::new(s.0, s.1, s.2, s.3, s.4, s.5, s.6),
                seed: 100 * (pi as u64 + 1) + si as u64,
                f64_reference: false,
            });
        }
    }
    for (i, &(s, dropout, grid)) in CONV_POOL_CASES.iter().enumerate() {
        for tile in variants(CONV_POOL_VARIANT_CASES.contains(&i)) {
            v.push(Case::ConvPool {
                p: ConvParams::new(s.0, s.1, s.2, s.3, s.4, s.5, s.6),
                tile,
                dropout,
                grid,
                seed: 700 + i as u64,
            });
        }
    }
    for (mi, mode) in ConvGradMode::ALL.into_iter().enumerate() {
        for (si, &s) in CONV_GRAD_SHAPES.iter().enumerate() {
            let seed = 700 + 10 * mi as u64 + si as u64;
            for tile in variants(CONV_GRAD_VARIANT_CASES[mi].contains(&si)) {
                v.push(Case::ConvGrad {
                    mode,
                    p: conv_grad_params(s, seed as u32),
                    tile,
                    t: 17 + si as u32,
                    seed,
                });
            }
        }
    }
    for (i, (n, parts)) in [(1u32, 1u32), (257, 3), (1600, 17), (70_001, 5)]
        .into_iter()
        .enumerate()
    {
        v.push(Case::SumPartials {
            n,
            parts,
            seed: 500 + i as u64,
        });
    }
    for backward in [false, true] {
        for (si, s) in POOL_SHAPES.iter().enumerate() {
            v.push(Case::Pool {
                backward,
                p: PoolParams::new(s.0, s.1, s.2, s.3),
                seed: 1000 + si as u64,
            });
        }
    }
    for &pass in &Pass::ALL {
        for (si, s) in DENSE_SHAPES.iter().enumerate() {
            let tiles = if pass == Pass::Forward {
                dense_tiles((s.0, s.1, s.2))
            } else {
                vec![crate::ops::dense::UNFUSED_TILE]
            };
            for tile in tiles {
                v.push(Case::Dense {
                    pass,
                    p: DenseParams::new(s.0, s.1, s.2, s.3),
                    tile,
                    seed: 2000 + si as u64,
                });
            }
        }
    }
    for (si, &s) in DENSE_FUSED_SHAPES.iter().enumerate() {
        for tile in dense_tiles(s) {
            v.push(Case::DenseFused {
                p: DenseParams::new(s.0, s.1, s.2, false),
                tile,
                seed: 2100 + si as u64,
            });
        }
    }
    for backward in [false, true] {
        for (si, &(batch, hidden, valid)) in HEAD_SHAPES.iter().enumerate() {
            v.push(Case::Head {
                backward,
                batch,
                hidden,
                valid,
                label_smoothing: 0.0,
                seed: 2200 + si as u64,
            });
        }
        // Label smoothing on a short and on a full batch.
        for (batch, hidden, valid) in [(128, 128, 100), (3, 37, 3)] {
            v.push(Case::Head {
                backward,
                batch,
                hidden,
                valid,
                label_smoothing: 0.1,
                seed: 2300 + batch as u64,
            });
        }
    }
    for backward in [false, true] {
        for (si, &n) in VECTOR_LENS.iter().enumerate() {
            v.push(Case::Relu {
                backward,
                n,
                seed: 3000 + si as u64,
            });
        }
    }
    for backward in [false, true] {
        for &n in &[1u32, 7, 1000, 70001] {
            for prob in [0.0f32, 0.4, 0.8] {
                for t in [0u32, 17] {
                    v.push(Case::Dropout {
                        backward,
                        n,
                        prob,
                        t,
                        seed: 1234,
                    });
                }
            }
        }
    }
    for backward in [false, true] {
        for (si, &(batch, classes, valid)) in LOSS_SHAPES.iter().enumerate() {
            v.push(Case::Loss {
                backward,
                batch,
                classes,
                valid,
                label_smoothing: 0.0,
                seed: 4000 + si as u64,
            });
        }
        // Label smoothing on a full and on a short last batch.
        for (batch, valid) in [(128, 100), (7, 7)] {
            v.push(Case::Loss {
                backward,
                batch,
                classes: 10,
                valid,
                label_smoothing: 0.1,
                seed: 4100 + batch as u64,
            });
        }
    }
    let opts = [
        Opt::Wame { variant: 0 },
        Opt::Wame { variant: 1 },
        Opt::Wame { variant: 2 },
        Opt::Adam,
        Opt::Rmsprop,
        Opt::Sgd,
    ];
    for (oi, &opt) in opts.iter().enumerate() {
        for &n in &[1u32, 1000, 70001] {
            v.push(Case::Optim {
                opt,
                n,
                steps: 4,
                start_t: 1,
                // Steps 1 and 2 of 4 inside a warm-up of 3, then the full rate.
                warmup: if n == 1000 { 3 } else { 0 },
                // Large enough that the decay term is far above f32 rounding of the weights.
                weight_decay: if n == 70001 { 0.5 } else { 0.0 },
                seed: 5000 + 10 * oi as u64 + n as u64 % 7,
            });
        }
        // Late steps, where Adam's bias corrections cancel and schedules saturate (t = 1 and 2
        // are the first steps above).
        for (si, &start_t) in [10u32, 1000, 100_000].iter().enumerate() {
            v.push(Case::Optim {
                opt,
                n: 777,
                steps: 2,
                start_t,
                warmup: 0,
                weight_decay: 0.0,
                seed: 5500 + 10 * oi as u64 + si as u64,
            });
        }
        // The model's eight tensors at hidden 128 (conv weights with split-K partials), and
        // odd lengths that end inside a workgroup.
        let model = vec![
            (288, 4),
            (32, 1),
            (18432, 3),
            (64, 1),
            (401_408, 1),
            (128, 1),
            (1280, 1),
            (10, 1),
        ];
        v.push(Case::Update {
            opt,
            tensors: model.clone(),
            steps: 3,
            start_t: 1,
            seed: 5700 + oi as u64,
        });
        v.push(Case::Update {
            opt,
            tensors: vec![(1, 1), (65, 2), (257, 5), (3, 256)],
            steps: 2,
            start_t: 100_000,
            seed: 5800 + oi as u64,
        });
        v.push(Case::Stats {
            opt,
            tensors: model.clone(),
            t: 5,
            seed: 5900 + oi as u64,
        });
        v.push(Case::Stats {
            opt,
            tensors: vec![(1, 1), (65, 2), (257, 5), (3, 256)],
            t: 100_000,
            seed: 5950 + oi as u64,
        });
    }
    for (bi, &batch) in [1u32, 3, 7, 16, 128].iter().enumerate() {
        for augment in [false, true] {
            v.push(Case::Gather {
                batch,
                augment,
                seed: 6000 + bi as u64,
            });
        }
    }
    for (start, steps) in [
        (StepState::default(), 1),
        (
            StepState {
                epoch_step: 3,
                t: 1000,
                n: GATHER_N,
                batch: 16,
            },
            5,
        ),
        (
            StepState {
                epoch_step: 421,
                t: 123_456,
                n: 54_000,
                batch: 128,
            },
            3,
        ),
    ] {
        v.push(Case::Advance { start, steps });
    }
    v
}

/// The cases of one entry point (`family.entry`, see [`KERNELS`]).
pub fn cases_for(kernel: &str) -> Vec<Case> {
    cases()
        .into_iter()
        .filter(|c| c.kernel() == kernel)
        .collect()
}

/// One entry where GPU and CPU differ, with its position (`step` for multi-step cases).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Entry {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    pub gpu: f64,
    pub cpu: f64,
}

/// The comparison of one output buffer of one case (over all its steps).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KernelRow {
    pub kernel: &'static str,
    pub shape: String,
    /// The output buffer; `... rerun` rows compare a second GPU run against the first, bit for
    /// bit (the fixed-order reductions of SPEC 4), with the first run in the `cpu` column.
    pub output: String,
    pub values: usize,
    pub worst_abs: f64,
    /// `|gpu - cpu| / |cpu|` over entries where `cpu != 0` (where it is 0 only `atol` applies).
    pub worst_rel: f64,
    /// The largest `|gpu - cpu| / (atol + rtol |cpu|)`: under 1 passes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst_err_over_tol: Option<f64>,
    pub tol: Tol,
    pub failures: usize,
    pub ok: bool,
    /// Up to [`WORST_SHOWN`] failing entries, the furthest out of tolerance first.
    pub worst: Vec<Entry>,
}

/// How many failing entries a row keeps.
pub const WORST_SHOWN: usize = 8;

/// Accumulates one output's comparison over the steps of a case.
struct Check {
    row: KernelRow,
    bad: Vec<(f64, Entry)>,
}

impl Check {
    fn new(case: &Case, output: &str, tol: Tol) -> Self {
        Check {
            row: KernelRow {
                kernel: case.kernel(),
                shape: case.shape(),
                output: output.to_string(),
                values: 0,
                worst_abs: 0.0,
                worst_rel: 0.0,
                worst_err_over_tol: match tol {
                    Tol::Close { .. } => Some(0.0),
                    Tol::Exact => None,
                },
                tol,
                failures: 0,
                ok: true,
                worst: Vec::new(),
            },
            bad: Vec::new(),
        }
    }

    /// `excess` orders failures: how far out of tolerance (infinite for NaN or exact mismatch).
    fn fail(&mut self, excess: f64, e: Entry) {
        self.row.failures += 1;
        self.bad.push((excess, e));
        // Bounded memory for a kernel that is wrong everywhere.
        if self.bad.len() > 4096 {
            self.keep_worst();
        }
    }

    fn keep_worst(&mut self) {
        self.bad.sort_by(|a, b| b.0.total_cmp(&a.0));
        self.bad.truncate(WORST_SHOWN);
    }

    fn length(&mut self, step: Option<u32>, gpu: usize, cpu: usize) -> bool {
        if gpu == cpu {
            return true;
        }
        self.row.worst_abs = f64::INFINITY;
        self.fail(
            f64::INFINITY,
            Entry {
                index: gpu.min(cpu),
                step,
                gpu: gpu as f64,
                cpu: cpu as f64,
            },
        );
        false
    }

    fn diff(&mut self, g: f64, c: f64) -> f64 {
        let d = (g - c).abs();
        let d = if d.is_nan() { f64::INFINITY } else { d };
        self.row.worst_abs = self.row.worst_abs.max(d);
        if d.is_infinite() {
            self.row.worst_rel = f64::INFINITY;
        } else if c != 0.0 {
            self.row.worst_rel = self.row.worst_rel.max(d / c.abs());
        }
        d
    }

    fn floats(&mut self, step: Option<u32>, gpu: &[f32], cpu: &[f32]) {
        if !self.length(step, gpu.len(), cpu.len()) {
            return;
        }
        self.row.values += cpu.len();
        for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
            let d = self.diff(g as f64, c as f64);
            let entry = || Entry {
                index: i,
                step,
                gpu: g as f64,
                cpu: c as f64,
            };
            match self.row.tol {
                Tol::Close { atol, rtol } => {
                    let tol = atol as f64 + rtol as f64 * (c as f64).abs();
                    let ratio = if c.is_nan() { f64::INFINITY } else { d / tol };
                    let w = self.row.worst_err_over_tol.get_or_insert(0.0);
                    *w = w.max(ratio);
                    if ratio > 1.0 {
                        self.fail(ratio, entry());
                    }
                }
                Tol::Exact => {
                    if g.to_bits() != c.to_bits() || g.is_nan() {
                        self.fail(d, entry());
                    }
                }
            }
        }
    }

    fn ints(&mut self, step: Option<u32>, gpu: &[u32], cpu: &[u32]) {
        debug_assert_eq!(self.row.tol, Tol::Exact);
        if !self.length(step, gpu.len(), cpu.len()) {
            return;
        }
        self.row.values += cpu.len();
        for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
            let d = self.diff(g as f64, c as f64);
            if g != c {
                self.fail(
                    d,
                    Entry {
                        index: i,
                        step,
                        gpu: g as f64,
                        cpu: c as f64,
                    },
                );
            }
        }
    }

    fn finish(mut self) -> KernelRow {
        self.keep_worst();
        self.row.ok = self.row.failures == 0;
        self.row.worst = self.bad.into_iter().map(|(_, e)| e).collect();
        self.row
    }
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Outputs start as NaN so an element a kernel forgets to write fails the comparison.
fn nan_buffer(ctx: &GpuContext, label: &str, n: usize) -> wgpu::Buffer {
    storage_init(ctx, label, &vec![f32::NAN; n])
}

fn refill_nan(ctx: &GpuContext, buf: &wgpu::Buffer, n: usize) {
    if n > 0 {
        ctx.queue
            .write_buffer(buf, 0, bytemuck::cast_slice(&vec![f32::NAN; n]));
    }
}

fn to_t<T: Real>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&a| T::from_f32(a)).collect()
}

fn to_f32<T: Real>(v: &[T]) -> Vec<f32> {
    v.iter().map(|a| a.to_f64() as f32).collect()
}

/// Runs `ds`, compares `out` against `want`, then runs again from a NaN-filled `out` and checks
/// the second result is bit-identical to the first (fixed-order reductions, SPEC 4).
#[allow(clippy::too_many_arguments)]
async fn run_with_rerun(
    ctx: &GpuContext,
    case: &Case,
    ds: &[Dispatch],
    out: &wgpu::Buffer,
    name: &str,
    want: &[f32],
    tol: Tol,
) -> Result<Vec<KernelRow>> {
    run_once(ctx, ds)?;
    let first: Vec<f32> = read_async(ctx, out, want.len()).await?;
    let mut c = Check::new(case, name, tol);
    c.floats(None, &first, want);
    refill_nan(ctx, out, want.len());
    run_once(ctx, ds)?;
    let second: Vec<f32> = read_async(ctx, out, want.len()).await?;
    let mut r = Check::new(case, &format!("{name} rerun"), Tol::Exact);
    r.floats(None, &second, &first);
    Ok(vec![c.finish(), r.finish()])
}

/// [`run_with_rerun`] for a kernel with several outputs: runs `ds`, compares each output
/// against its CPU value, refills them all with NaN, runs again and checks every output is
/// bit-identical to the first run.
async fn run_outputs_with_rerun(
    ctx: &GpuContext,
    case: &Case,
    ds: &[Dispatch],
    outs: &[(&wgpu::Buffer, &str, &[f32], Tol)],
) -> Result<Vec<KernelRow>> {
    run_once(ctx, ds)?;
    let mut firsts = Vec::with_capacity(outs.len());
    let mut rows = Vec::with_capacity(2 * outs.len());
    for &(buf, name, want, tol) in outs {
        let first: Vec<f32> = read_async(ctx, buf, want.len()).await?;
        let mut c = Check::new(case, name, tol);
        c.floats(None, &first, want);
        rows.push(c.finish());
        refill_nan(ctx, buf, want.len());
        firsts.push(first);
    }
    run_once(ctx, ds)?;
    for (&(buf, name, want, _), first) in outs.iter().zip(&firsts) {
        let second: Vec<f32> = read_async(ctx, buf, want.len()).await?;
        let mut r = Check::new(case, &format!("{name} rerun"), Tol::Exact);
        r.floats(None, &second, first);
        rows.push(r.finish());
    }
    Ok(rows)
}

/// For a non-default `tile`: reads `outs` (the variant's results, left by its run), refills them
/// with NaN, runs `default` (the same dispatches with [`Tile::DEFAULT`]) and checks that every
/// output has the same bits (`<output> = tile 64x64` rows). Nothing for the default itself.
async fn same_as_default(
    ctx: &GpuContext,
    case: &Case,
    tile: Tile,
    default: impl FnOnce() -> Result<Vec<Dispatch>>,
    outs: &[(&wgpu::Buffer, &str, usize)],
) -> Result<Vec<KernelRow>> {
    if tile == Tile::DEFAULT {
        return Ok(Vec::new());
    }
    let mut got = Vec::with_capacity(outs.len());
    for &(buf, _, n) in outs {
        got.push(read_async::<f32>(ctx, buf, n).await?);
        refill_nan(ctx, buf, n);
    }
    run_once(ctx, &default()?)?;
    let mut rows = Vec::with_capacity(outs.len());
    for (&(buf, name, n), g) in outs.iter().zip(&got) {
        let want: Vec<f32> = read_async(ctx, buf, n).await?;
        let mut c = Check::new(
            case,
            &format!("{name} = tile {}", Tile::DEFAULT.name()),
            Tol::Exact,
        );
        c.floats(None, g, &want);
        rows.push(c.finish());
    }
    Ok(rows)
}

/// A GEMM case with a tile variant: runs `with(tile)`, checks `outs` against the CPU and a rerun
/// ([`run_outputs_with_rerun`]), then `outs` and `extra` (intermediate buffers such as split-K
/// partials) against [`Tile::DEFAULT`]'s bits ([`same_as_default`]).
async fn run_variant(
    ctx: &GpuContext,
    case: &Case,
    tile: Tile,
    with: impl Fn(Tile) -> Result<Vec<Dispatch>>,
    outs: &[(&wgpu::Buffer, &str, &[f32], Tol)],
    extra: &[(&wgpu::Buffer, &str, usize)],
) -> Result<Vec<KernelRow>> {
    let mut rows = run_outputs_with_rerun(ctx, case, &with(tile)?, outs).await?;
    let mut all: Vec<(&wgpu::Buffer, &str, usize)> = extra.to_vec();
    all.extend(outs.iter().map(|&(b, n, want, _)| (b, n, want.len())));
    rows.extend(same_as_default(ctx, case, tile, || with(Tile::DEFAULT), &all).await?);
    Ok(rows)
}

/// Runs cases on one device, building each kernel family's pipelines once, on first use.
pub struct Runner<'a> {
    ctx: &'a GpuContext,
    conv: OnceCell<ConvKernels>,
    conv_grad: OnceCell<ConvGradKernels>,
    pool: OnceCell<PoolKernels>,
    dense: OnceCell<DenseKernels>,
    head: OnceCell<HeadKernels>,
    act: OnceCell<ActKernels>,
    loss: OnceCell<LossKernels>,
    optim: OnceCell<OptimKernels>,
    data: OnceCell<DataKernels>,
}

/// `cell`'s value, built by `make` on first use (`OnceCell::get_or_try_init` is unstable).
fn lazy<K>(cell: &OnceCell<K>, make: impl FnOnce() -> Result<K>) -> Result<&K> {
    if let Some(k) = cell.get() {
        return Ok(k);
    }
    let k = make()?;
    Ok(cell.get_or_init(|| k))
}

impl<'a> Runner<'a> {
    pub fn new(ctx: &'a GpuContext) -> Self {
        Runner {
            ctx,
            conv: OnceCell::new(),
            conv_grad: OnceCell::new(),
            pool: OnceCell::new(),
            dense: OnceCell::new(),
            head: OnceCell::new(),
            act: OnceCell::new(),
            loss: OnceCell::new(),
            optim: OnceCell::new(),
            data: OnceCell::new(),
        }
    }

    /// One row per output buffer of `case` (plus `rerun` rows for the reductions).
    pub fn run(&self, case: &Case) -> Result<Vec<KernelRow>> {
        crate::gpu::block_on(self.run_async(case))
    }

    /// [`run`](Self::run) for hosts that cannot block (the browser's self-test).
    pub async fn run_async(&self, case: &Case) -> Result<Vec<KernelRow>> {
        if let Some(tile) = case.tile() {
            let l = &self.ctx.limits;
            if !tile.fits(l) {
                // Visible in the table, and counted by the tests (which require that enough
                // variants ran), rather than an error for a variant this device cannot hold.
                let c = Check::new(
                    case,
                    &format!(
                        "not run: tile {} needs {} invocations and {} B of workgroup memory, \
                         the device allows {} and {} B",
                        tile.name(),
                        tile.invocations(),
                        tile.workgroup_bytes(),
                        l.max_compute_invocations_per_workgroup,
                        l.max_compute_workgroup_storage_size
                    ),
                    Tol::Exact,
                );
                return Ok(vec![c.finish()]);
            }
        }
        let rows = match case {
            Case::Conv {
                pass,
                p,
                seed,
                f64_reference,
            } => self.conv_case(case, *pass, p, *seed, *f64_reference).await,
            Case::ConvGrad {
                mode,
                p,
                tile,
                t,
                seed,
            } => self.conv_grad_case(case, *mode, p, *tile, *t, *seed).await,
            Case::ConvPool {
                p,
                tile,
                dropout,
                grid,
                seed,
            } => {
                self.conv_pool_case(case, p, *tile, *dropout, *grid, *seed)
                    .await
            }
            Case::SumPartials { n, parts, seed } => {
                self.sum_partials(case, *n, *parts, *seed).await
            }
            Case::Pool { backward, p, seed } => self.pool_case(case, *backward, p, *seed).await,
            Case::Dense {
                pass,
                p,
                tile,
                seed,
            } => self.dense_case(case, *pass, p, *tile, *seed).await,
            Case::DenseFused { p, tile, seed } => {
                self.dense_fused_case(case, p, *tile, *seed).await
            }
            Case::Head {
                backward,
                batch,
                hidden,
                valid,
                label_smoothing,
                seed,
            } => {
                self.head_case(
                    case,
                    *backward,
                    (*batch, *hidden, *valid),
                    *label_smoothing,
                    *seed,
                )
                .await
            }
            Case::Relu { backward, n, seed } => self.relu_case(case, *backward, *n, *seed).await,
            Case::Dropout {
                backward,
                n,
                prob,
                t,
                seed,
            } => {
                self.dropout_case(case, *backward, *n, *prob, *t, *seed)
                    .await
            }
            Case::Loss {
                backward,
                batch,
                classes,
                valid,
                label_smoothing,
                seed,
            } => {
                self.loss_case(
                    case,
                    *backward,
                    (*batch, *classes, *valid),
                    *label_smoothing,
                    *seed,
                )
                .await
            }
            Case::Optim {
                opt,
                n,
                steps,
                start_t,
                warmup,
                weight_decay,
                seed,
            } => {
                self.optim_case(
                    case,
                    *opt,
                    (*n, *steps, *start_t),
                    (*warmup, *weight_decay),
                    *seed,
                )
                .await
            }
            Case::Update {
                opt,
                tensors,
                steps,
                start_t,
                seed,
            } => {
                self.update_case(case, *opt, tensors, (*steps, *start_t), *seed)
                    .await
            }
            Case::Stats {
                opt,
                tensors,
                t,
                seed,
            } => self.stats_case(case, *opt, tensors, *t, *seed).await,
            Case::Gather {
                batch,
                augment,
                seed,
            } => self.gather_case(case, *batch, *augment, *seed).await,
            Case::Advance { start, steps } => self.advance_case(case, *start, *steps).await,
        }?;
        // A GPU error caught after the last readback must not leave a passing row behind.
        self.ctx.check()?;
        Ok(rows)
    }

    async fn conv_case(
        &self,
        case: &Case,
        pass: Pass,
        p: &ConvParams,
        seed: u64,
        f64_reference: bool,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.conv, || ConvKernels::new(ctx))?;
        let d = conv_data(p, seed);
        let want = if f64_reference {
            conv_reference::<f64>(pass, p, &d)
        } else {
            conv_reference::<f32>(pass, p, &d)
        };
        let buf = |label: &str, v: &[f32]| storage_init(ctx, label, v);
        let out = nan_buffer(ctx, "out", want.len());
        let (ds, name) = match pass {
            Pass::Forward => (
                k.forward(
                    ctx,
                    p,
                    &buf("x", &d.x),
                    &buf("w", &d.w),
                    &buf("bias", &d.bias),
                    &out,
                ),
                "y",
            ),
            Pass::BackwardInput => (
                k.backward_input(ctx, p, &buf("dy", &d.dy), &buf("w", &d.w), &out),
                "dx",
            ),
            Pass::BackwardWeight => (
                k.backward_weight(ctx, p, &buf("x", &d.x), &buf("dy", &d.dy), &out),
                "dw",
            ),
            Pass::BackwardBias => (k.backward_bias(ctx, p, &buf("dy", &d.dy), &out), "db"),
        };
        run_with_rerun(ctx, case, &ds, &out, name, &want, REDUCTION).await
    }

    /// The fused kernel against its CPU twin (`p`, `d` within the conv tolerance, or exactly on
    /// the grid; `argmax` exactly, except that off the grid the GPU may pick another position of
    /// the window whose CPU value is within twice the tolerance of the CPU's maximum: both runs
    /// round the conv differently, so near-ties may break either way), against the unfused GPU
    /// chain conv.forward -> pool.maxpool_forward (-> act.dropout_forward) bit for bit (the same
    /// fma sequence per output), and a rerun against the first run bit for bit.
    #[allow(clippy::too_many_arguments)]
    async fn conv_pool_case(
        &self,
        case: &Case,
        p: &ConvParams,
        tile: Tile,
        dropout: Option<(f32, u32)>,
        grid: bool,
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.conv, || ConvKernels::new(ctx))?;
        let pool = lazy(&self.pool, || PoolKernels::new(ctx))?;
        let act = lazy(&self.act, || ActKernels::new(ctx))?;
        let d = if grid {
            conv_grid_data(p, seed)
        } else {
            conv_data(p, seed)
        };
        let pp = cpu::conv::relu_pool_params(p);
        let n = pp.y_len();
        let t = dropout.map_or(0, |(_, t)| t);
        let dp = dropout.map(|(prob, _)| dropout_params(n as u32, prob, seed as u32));

        let mut a = vec![0.0f32; p.y_len()];
        cpu::conv::forward(p, &d.x, &d.w, &d.bias, &mut a);
        let (mut pc, mut amc, mut dc) = (vec![0.0f32; n], vec![0u32; n], vec![0.0f32; n]);
        cpu::conv::forward_relu_pool(
            p,
            &d.x,
            &d.w,
            &d.bias,
            &mut pc,
            &mut amc,
            dp.as_ref().map(|q| (q, t, &mut dc[..])),
        );

        let buf = |label: &str, v: &[f32]| storage_init(ctx, label, v);
        let (xb, wb, bb) = (buf("x", &d.x), buf("w", &d.w), buf("bias", &d.bias));
        let state = storage_init(
            ctx,
            "state",
            &[StepState {
                epoch_step: 3,
                t,
                n: 0,
                batch: 0,
            }],
        );
        let no_argmax = vec![u32::MAX; n];
        let (pb, amb, db) = (
            nan_buffer(ctx, "p", n),
            storage_init(ctx, "argmax", &no_argmax),
            nan_buffer(ctx, "d", n),
        );
        let fused_with = |tile: Tile| {
            k.forward_relu_pool(
                ctx,
                p,
                tile,
                dp.as_ref().map(|q| PoolDropout {
                    params: q,
                    state: (&state).into(),
                    d: (&db).into(),
                }),
                &xb,
                &wb,
                &bb,
                &pb,
                &amb,
            )
        };
        let fused = fused_with(tile)?;
        let (ab, pub_, amub, dub) = (
            nan_buffer(ctx, "a", p.y_len()),
            nan_buffer(ctx, "unfused p", n),
            storage_init(ctx, "unfused argmax", &no_argmax),
            nan_buffer(ctx, "unfused d", n),
        );
        let mut chain = k.forward(ctx, p, &xb, &wb, &bb, &ab);
        chain.extend(pool.maxpool_forward(ctx, &pp, &ab, &pub_, &amub));
        if let Some(q) = &dp {
            chain.extend(act.dropout_forward(ctx, q, &state, &pub_, &dub));
        }
        run_once(ctx, &chain)?;
        run_once(ctx, &fused)?;
        let with_dropout = dp.is_some();
        let outs = async |pb: &wgpu::Buffer, amb: &wgpu::Buffer, db: &wgpu::Buffer| {
            let dv: Vec<f32> = if with_dropout {
                read_async(ctx, db, n).await?
            } else {
                Vec::new()
            };
            let pv: Vec<f32> = read_async(ctx, pb, n).await?;
            let av: Vec<u32> = read_async(ctx, amb, n).await?;
            Result::Ok((pv, av, dv))
        };
        let (pg, amg, dg) = outs(&pb, &amb, &db).await?;
        let (pu, amu, du) = outs(&pub_, &amub, &dub).await?;

        let tol = if grid { Tol::Exact } else { REDUCTION };
        let (want_am, near_ties) = if grid {
            (amc.clone(), 0)
        } else {
            near_tie_argmax(&pp, &a, &amg, &amc, 2.0)
        };
        let am_name = if near_ties > 0 {
            format!("argmax ({near_ties} near-ties)")
        } else {
            "argmax".to_string()
        };
        let mut rows = Vec::new();
        let mut cp = Check::new(case, "p", tol);
        cp.floats(None, &pg, &pc);
        let mut ca = Check::new(case, &am_name, Tol::Exact);
        ca.ints(None, &amg, &want_am);
        let mut up = Check::new(case, "p = unfused GPU", Tol::Exact);
        up.floats(None, &pg, &pu);
        let mut ua = Check::new(case, "argmax = unfused GPU", Tol::Exact);
        ua.ints(None, &amg, &amu);
        rows.extend([cp.finish(), ca.finish(), up.finish(), ua.finish()]);
        if dp.is_some() {
            let mut cd = Check::new(case, "d", tol);
            cd.floats(None, &dg, &dc);
            let mut ud = Check::new(case, "d = unfused GPU", Tol::Exact);
            ud.floats(None, &dg, &du);
            rows.extend([cd.finish(), ud.finish()]);
        }

        refill_nan(ctx, &pb, n);
        refill_nan(ctx, &db, n);
        ctx.queue
            .write_buffer(&amb, 0, bytemuck::cast_slice(&no_argmax));
        run_once(ctx, &fused)?;
        let (pg2, amg2, dg2) = outs(&pb, &amb, &db).await?;
        let mut rp = Check::new(case, "p rerun", Tol::Exact);
        rp.floats(None, &pg2, &pg);
        let mut ra = Check::new(case, "argmax rerun", Tol::Exact);
        ra.ints(None, &amg2, &amg);
        rows.extend([rp.finish(), ra.finish()]);
        if dp.is_some() {
            let mut rd = Check::new(case, "d rerun", Tol::Exact);
            rd.floats(None, &dg2, &dg);
            rows.push(rd.finish());
        }
        if tile != Tile::DEFAULT {
            refill_nan(ctx, &pb, n);
            refill_nan(ctx, &db, n);
            ctx.queue
                .write_buffer(&amb, 0, bytemuck::cast_slice(&no_argmax));
            run_once(ctx, &fused_with(Tile::DEFAULT)?)?;
            let (pd, amd, dd) = outs(&pb, &amb, &db).await?;
            let name = |o: &str| format!("{o} = tile {}", Tile::DEFAULT.name());
            let mut vp = Check::new(case, &name("p"), Tol::Exact);
            vp.floats(None, &pg, &pd);
            let mut va = Check::new(case, &name("argmax"), Tol::Exact);
            va.ints(None, &amg, &amd);
            rows.extend([vp.finish(), va.finish()]);
            if dp.is_some() {
                let mut vd = Check::new(case, &name("d"), Tol::Exact);
                vd.floats(None, &dg, &dd);
                rows.push(vd.finish());
            }
        }
        Ok(rows)
    }

    /// The fused backward against its CPU twin on the outputs of a real forward (conv, ReLU,
    /// pool), every output compared, then rerun from NaN-filled outputs for bit identity.
    async fn conv_grad_case(
        &self,
        case: &Case,
        mode: ConvGradMode,
        p: &ConvGradParams,
        tile: Tile,
        t: u32,
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.conv_grad, || ConvGradKernels::new(ctx))?;
        let d = conv_grad_inputs(p, seed);
        let buf = |label: &str, v: &[f32]| storage_init(ctx, label, v);
        let state = storage_init(
            ctx,
            "state",
            &[StepState {
                epoch_step: 1,
                t,
                n: 0,
                batch: p.batch,
            }],
        );
        let (amb, qb, ddb) = (
            storage_init(ctx, "argmax", &d.argmax),
            buf("q", &d.q),
            buf("dd", &d.dd),
        );
        let (a, q, g) = (View::whole(&amb), View::whole(&qb), View::whole(&ddb));
        let c = p.conv();
        if mode == ConvGradMode::Both {
            return self
                .conv_grad_both(case, k, p, tile, t, &d, &state, (a, q, g))
                .await;
        }
        if mode == ConvGradMode::Input {
            let mut dx = vec![0.0f32; c.x_len()];
            cpu::conv_grad::backward_input(p, t, &d.argmax, &d.q, &d.dd, &d.w, &mut dx);
            let out = nan_buffer(ctx, "dx", dx.len());
            let wb = buf("w", &d.w);
            let with = |tile: Tile| {
                k.backward_input(
                    ctx,
                    p,
                    tile,
                    Some(&state),
                    a,
                    q,
                    g,
                    View::whole(&wb),
                    View::whole(&out),
                )
            };
            return run_variant(ctx, case, tile, with, &[(&out, "dx", &dx, REDUCTION)], &[]).await;
        }
        let mut dw = vec![0.0f32; c.w_len()];
        let mut db = vec![0.0f32; p.c_out as usize];
        cpu::conv_grad::backward_weight(p, t, &d.x, &d.argmax, &d.q, &d.dd, &mut dw, &mut db);
        let (dwb, dbb) = (
            nan_buffer(ctx, "dw", dw.len()),
            nan_buffer(ctx, "db", db.len()),
        );
        let xb = buf("x", &d.x);
        let with = |tile: Tile| {
            k.backward_weight(ctx, p, tile, Some(&state), &amb, &qb, &ddb, &xb, &dwb, &dbb)
        };
        run_variant(
            ctx,
            case,
            tile,
            with,
            &[(&dwb, "dw", &dw, REDUCTION), (&dbb, "db", &db, REDUCTION)],
            &[],
        )
        .await
    }

    /// conv_grad.backward against `cpu::conv_grad::backward`: the weight and bias partials
    /// summed by `sum_partials` (as the weight case does) and dx, every output NaN-filled first.
    #[allow(clippy::too_many_arguments)]
    async fn conv_grad_both(
        &self,
        case: &Case,
        k: &ConvGradKernels,
        p: &ConvGradParams,
        tile: Tile,
        t: u32,
        d: &ConvGradInputs,
        state: &wgpu::Buffer,
        (a, q, g): (View<'_>, View<'_>, View<'_>),
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let c = p.conv();
        let (mut dw, mut db, mut dx) = (
            vec![0.0f32; c.w_len()],
            vec![0.0f32; p.c_out as usize],
            vec![0.0f32; c.x_len()],
        );
        cpu::conv_grad::backward(
            p, t, &d.x, &d.argmax, &d.q, &d.dd, &d.w, &mut dw, &mut db, &mut dx,
        );
        let (wl, bl) = crate::ops::conv_grad::partial_lens(p);
        let (wpart, bpart) = (
            nan_buffer(ctx, "dw partials", wl),
            nan_buffer(ctx, "db partials", bl),
        );
        let (dwb, dbb, dxb) = (
            nan_buffer(ctx, "dw", dw.len()),
            nan_buffer(ctx, "db", db.len()),
            nan_buffer(ctx, "dx", dx.len()),
        );
        let (xb, wb) = (storage_init(ctx, "x", &d.x), storage_init(ctx, "w", &d.w));
        let v = View::whole;
        let conv = lazy(&self.conv, || ConvKernels::new(ctx))?;
        let sum = |n: usize| ReduceParams {
            n: n as u32,
            parts: p.parts,
            _pad: [0; 2],
        };
        let with = |tile: Tile| -> Result<Vec<Dispatch>> {
            let mut ds = k.backward(
                ctx,
                p,
                tile,
                Some(state),
                a,
                q,
                g,
                v(&xb),
                v(&wb),
                v(&wpart),
                v(&bpart),
                v(&dxb),
            )?;
            ds.extend(conv.reduce.sum_partials(ctx, &sum(c.w_len()), &wpart, &dwb));
            ds.extend(
                conv.reduce
                    .sum_partials(ctx, &sum(p.c_out as usize), &bpart, &dbb),
            );
            Ok(ds)
        };
        // The partials too: a variant may only change which workgroup computes what.
        run_variant(
            ctx,
            case,
            tile,
            with,
            &[
                (&dwb, "dw", &dw, REDUCTION),
                (&dbb, "db", &db, REDUCTION),
                (&dxb, "dx", &dx, REDUCTION),
            ],
            &[(&wpart, "dw partials", wl), (&bpart, "db partials", bl)],
        )
        .await
    }

    /// Compared bit for bit: GPU and CPU add the parts in the same order with IEEE adds.
    async fn sum_partials(
        &self,
        case: &Case,
        n: u32,
        parts: u32,
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.conv, || ConvKernels::new(ctx))?;
        let rp = ReduceParams {
            n,
            parts,
            _pad: [0; 2],
        };
        let partials = uniform(&mut rng(seed), (n * parts) as usize, -1.0, 1.0);
        let mut want = vec![0.0f32; n as usize];
        cpu::reduce::sum_partials(&rp, &partials, &mut want);
        let out = nan_buffer(ctx, "out", n as usize);
        let ds = k
            .reduce
            .sum_partials(ctx, &rp, &storage_init(ctx, "partials", &partials), &out);
        run_with_rerun(ctx, case, &ds, &out, "out", &want, Tol::Exact).await
    }

    async fn pool_case(
        &self,
        case: &Case,
        backward: bool,
        p: &PoolParams,
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.pool, || PoolKernels::new(ctx))?;
        let mut r = rng(seed);
        // A coarse grid: windows hold ties (the first maximum must win) and negatives (the
        // fused ReLU mask of the backward must zero them).
        let x: Vec<f32> = (0..p.x_len())
            .map(|_| (r.random_range(0..9u32) as f32 - 3.0) * 0.25)
            .collect();
        let dy = uniform(&mut r, p.y_len(), -1.0, 1.0);
        let (mut y, mut am) = (vec![0.0; p.y_len()], vec![0u32; p.y_len()]);
        cpu::pool::maxpool_forward(p, &x, &mut y, &mut am);
        let xb = storage_init(ctx, "x", &x);
        if !backward {
            let yb = nan_buffer(ctx, "y", p.y_len());
            let amb = storage_init(ctx, "argmax", &vec![u32::MAX; p.y_len()]);
            run_once(ctx, &k.maxpool_forward(ctx, p, &xb, &yb, &amb))?;
            let mut cy = Check::new(case, "y", ELEMENTWISE);
            cy.floats(None, &read_async::<f32>(ctx, &yb, p.y_len()).await?, &y);
            let mut ca = Check::new(case, "argmax", Tol::Exact);
            ca.ints(None, &read_async::<u32>(ctx, &amb, p.y_len()).await?, &am);
            return Ok(vec![cy.finish(), ca.finish()]);
        }
        // From the CPU's argmax, so the backward is checked on its own.
        let mut dx = vec![0.0; p.x_len()];
        cpu::pool::maxpool_backward(p, &dy, &am, &x, &mut dx);
        let dxb = nan_buffer(ctx, "dx", p.x_len());
        let ds = k.maxpool_backward(
            ctx,
            p,
            &storage_init(ctx, "dy", &dy),
            &storage_init(ctx, "argmax", &am),
            &xb,
            &dxb,
        );
        run_once(ctx, &ds)?;
        let mut c = Check::new(case, "dx", ELEMENTWISE);
        c.floats(None, &read_async::<f32>(ctx, &dxb, p.x_len()).await?, &dx);
        Ok(vec![c.finish()])
    }

    async fn dense_case(
        &self,
        case: &Case,
        pass: Pass,
        p: &DenseParams,
        tile: Tile,
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.dense, || DenseKernels::new(ctx))?;
        let (b, ni, no) = (p.batch as usize, p.n_in as usize, p.n_out as usize);
        let mut r = rng(seed);
        let x = uniform(&mut r, b * ni, -1.0, 1.0);
        let w = uniform(&mut r, no * ni, -0.5, 0.5);
        let bias = uniform(&mut r, no, -0.5, 0.5);
        let dy = uniform(&mut r, b * no, -1.0, 1.0);
        let buf = |label: &str, v: &[f32]| storage_init(ctx, label, v);
        let (want, ds, out, name) = match pass {
            Pass::Forward => {
                let mut y = vec![0.0; b * no];
                cpu::dense::forward(p, &x, &w, &bias, &mut y);
                let out = nan_buffer(ctx, "y", y.len());
                let (xb, wb, bb) = (buf("x", &x), buf("w", &w), buf("bias", &bias));
                let with = |tile: Tile| k.forward(ctx, p, tile, &xb, &wb, &bb, &out);
                return run_variant(ctx, case, tile, with, &[(&out, "y", &y, REDUCTION)], &[])
                    .await;
            }
            Pass::BackwardInput => {
                let mut dx = vec![0.0; b * ni];
                cpu::dense::backward_input(p, &dy, &w, &mut dx);
                let out = nan_buffer(ctx, "dx", dx.len());
                let ds = k.backward_input(ctx, p, &buf("dy", &dy), &buf("w", &w), &out)?;
                (dx, ds, out, "dx")
            }
            Pass::BackwardWeight => {
                let mut dw = vec![0.0; no * ni];
                cpu::dense::backward_weight(p, &x, &dy, &mut dw);
                let out = nan_buffer(ctx, "dw", dw.len());
                let ds = k.backward_weight(ctx, p, &buf("x", &x), &buf("dy", &dy), &out)?;
                (dw, ds, out, "dw")
            }
            Pass::BackwardBias => {
                let mut db = vec![0.0; no];
                cpu::dense::backward_bias(p, &dy, &mut db);
                let out = nan_buffer(ctx, "db", db.len());
                let ds = k.backward_bias(ctx, p, &buf("dy", &dy), &out)?;
                (db, ds, out, "db")
            }
        };
        run_with_rerun(ctx, case, &ds, &out, name, &want, REDUCTION).await
    }

    async fn dense_fused_case(
        &self,
        case: &Case,
        p: &DenseParams,
        tile: Tile,
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.dense, || DenseKernels::new(ctx))?;
        let (b, ni, no) = (p.batch as usize, p.n_in as usize, p.n_out as usize);
        let mut r = rng(seed);
        let x = uniform(&mut r, b * ni, -1.0, 1.0);
        let w = uniform(&mut r, no * ni, -0.5, 0.5);
        let dy = uniform(&mut r, b * no, -1.0, 1.0);
        let (mut dw, mut db, mut dx) = (vec![0.0; no * ni], vec![0.0; no], vec![0.0; b * ni]);
        cpu::dense::backward_fused(p, &x, &dy, &w, &mut dw, &mut db, &mut dx);
        let (dwb, dbb, dxb) = (
            nan_buffer(ctx, "dw", dw.len()),
            nan_buffer(ctx, "db", db.len()),
            nan_buffer(ctx, "dx", dx.len()),
        );
        let buf = |label: &str, v: &[f32]| storage_init(ctx, label, v);
        let (xb, dyb, wb) = (buf("x", &x), buf("dy", &dy), buf("w", &w));
        let with = |tile: Tile| k.backward_fused(ctx, p, tile, &xb, &dyb, &wb, &dwb, &dbb, &dxb);
        run_variant(
            ctx,
            case,
            tile,
            with,
            &[
                (&dwb, "dw", &dw, REDUCTION),
                (&dbb, "db", &db, REDUCTION),
                (&dxb, "dx", &dx, REDUCTION),
            ],
            &[],
        )
        .await
    }

    /// h is a ReLU output (about a third exact zeros, so dh's mask matters) with an all-zero
    /// row 0 whose logits are the bias, which holds a tied maximum (the first must win). The
    /// kernel runs twice from non-zero metrics (they must accumulate); every other output is
    /// compared after the first run and bit for bit between the runs.
    async fn head_case(
        &self,
        case: &Case,
        backward: bool,
        (batch, hidden, valid): (u32, u32, u32),
        label_smoothing: f32,
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.head, || HeadKernels::new(ctx))?;
        let p = HeadParams::new(batch, hidden, label_smoothing);
        let (bu, hu, cu) = (batch as usize, hidden as usize, HEAD_CLASSES as usize);
        let mut r = rng(seed);
        let mut h: Vec<f32> = uniform(&mut r, bu * hu, -0.5, 1.0)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        h[..hu].fill(0.0);
        let l = (6.0 / (hidden as f32 + cu as f32)).sqrt();
        let w = uniform(&mut r, cu * hu, -l, l);
        let mut bias = uniform(&mut r, cu, -0.5, 0.5);
        bias[cu - 3] = bias.iter().fold(f32::MIN, |a, &v| a.max(v));
        let labels: Vec<u32> = (0..bu).map(|_| r.random_range(0..HEAD_CLASSES)).collect();
        let state = StepState {
            epoch_step: 2,
            t: 9,
            n: 2 * batch + valid,
            batch,
        };
        debug_assert_eq!(state.valid(), valid);
        let mut logits = vec![0.0; bu * cu];
        let mut m = cpu::loss::Metrics {
            loss_sum: 1.5,
            correct: 3,
            seen: 11,
        };
        let (mut dl, mut dw, mut db, mut dh) = (
            vec![0.0; bu * cu],
            vec![0.0; cu * hu],
            vec![0.0; cu],
            vec![0.0; bu * hu],
        );
        let inputs = cpu::head::HeadInputs {
            h: &h,
            w: &w,
            bias: &bias,
            labels: &labels,
        };
        for _ in 0..2 {
            let grads = backward.then(|| cpu::head::HeadGrads {
                dlogits: &mut dl,
                dw: &mut dw,
                db: &mut db,
                dh: &mut dh,
            });
            cpu::head::head(&p, valid, &inputs, &mut logits, &mut m, grads);
        }
        let buf = |label: &str, v: &[f32]| storage_init(ctx, label, v);
        let (hb, wb, biasb) = (buf("h", &h), buf("w", &w), buf("bias", &bias));
        let lab = storage_init(ctx, "labels", &labels);
        let st = storage_init(ctx, "state", &[state]);
        let metrics = storage_init(ctx, "metrics", &[1.5f32.to_bits(), 3, 11, 0]);
        let logits_b = nan_buffer(ctx, "logits", logits.len());
        let (dwb, dbb, dhb) = (
            nan_buffer(ctx, "dw", dw.len()),
            nan_buffer(ctx, "db", db.len()),
            nan_buffer(ctx, "dh", dh.len()),
        );
        let ds = k.head(
            ctx,
            &p,
            &st,
            HeadInputs {
                h: (&hb).into(),
                w: (&wb).into(),
                bias: (&biasb).into(),
                labels: (&lab).into(),
            },
            &logits_b,
            &metrics,
            backward.then_some(HeadGrads {
                dw: (&dwb).into(),
                db: (&dbb).into(),
                dh: (&dhb).into(),
            }),
        )?;
        let mut outs: Vec<(&wgpu::Buffer, &str, &[f32], Tol)> =
            vec![(&logits_b, "logits", &logits, REDUCTION)];
        if backward {
            outs.extend([
                (&dwb, "dw", &dw[..], REDUCTION),
                (&dbb, "db", &db[..], REDUCTION),
                (&dhb, "dh", &dh[..], REDUCTION),
            ]);
        }
        let mut rows = run_outputs_with_rerun(ctx, case, &ds, &outs).await?;
        if backward && valid > 1 {
            // The gradients carry the mean's 1/valid, which puts most of them under atol: the
            // same outputs again at the scale of a summed loss, where the tolerance bites.
            let s = valid as f32;
            let scaled = |v: &[f32]| v.iter().map(|x| x * s).collect::<Vec<f32>>();
            for (buf, name, want) in [(&dwb, "dw", &dw), (&dbb, "db", &db), (&dhb, "dh", &dh)] {
                let got: Vec<f32> = read_async(ctx, buf, want.len()).await?;
                let mut c = Check::new(case, &format!("{name} x valid"), REDUCTION);
                c.floats(None, &scaled(&got), &scaled(want));
                rows.push(c.finish());
            }
        }
        let gm: Vec<u32> = read_async(ctx, &metrics, 4).await?;
        let mut cl = Check::new(case, "metrics loss_sum", REDUCTION);
        cl.floats(None, &[f32::from_bits(gm[0])], &[m.loss_sum]);
        let mut cc = Check::new(case, "metrics correct,seen", Tol::Exact);
        cc.ints(None, &gm[1..3], &[m.correct, m.seen]);
        rows.extend([cl.finish(), cc.finish()]);
        Ok(rows)
    }

    async fn relu_case(
        &self,
        case: &Case,
        backward: bool,
        n: u32,
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.act, || ActKernels::new(ctx))?;
        let p = relu_params(n);
        let nu = n as usize;
        let mut r = rng(seed);
        let x = uniform(&mut r, nu, -1.0, 1.0);
        let dy = uniform(&mut r, nu, -1.0, 1.0);
        let mut y = vec![0.0; nu];
        cpu::act::relu_forward(&p, &x, &mut y);
        let out = nan_buffer(ctx, "out", nu);
        let (want, ds, name) = if backward {
            let mut dx = vec![0.0; nu];
            cpu::act::relu_backward(&p, &y, &dy, &mut dx);
            let ds = k.relu_backward(
                ctx,
                &p,
                &storage_init(ctx, "y", &y),
                &storage_init(ctx, "dy", &dy),
                &out,
            );
            (dx, ds, "dx")
        } else {
            (
                y,
                k.relu_forward(ctx, &p, &storage_init(ctx, "x", &x), &out),
                "y",
            )
        };
        run_once(ctx, &ds)?;
        let mut c = Check::new(case, name, ELEMENTWISE);
        c.floats(None, &read_async::<f32>(ctx, &out, nu).await?, &want);
        Ok(vec![c.finish()])
    }

    /// Inputs are bounded away from 0, so "kept" is `value != 0` and the mask is compared
    /// exactly besides the values.
    async fn dropout_case(
        &self,
        case: &Case,
        backward: bool,
        n: u32,
        prob: f32,
        t: u32,
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.act, || ActKernels::new(ctx))?;
        let p = dropout_params(n, prob, seed as u32);
        let nu = n as usize;
        let mut r = rng(seed ^ ((t as u64) << 32) ^ n as u64);
        let away = |v: f32| if v < 0.0 { v - 0.25 } else { v + 0.25 };
        let input: Vec<f32> = uniform(&mut r, nu, -1.0, 1.0)
            .into_iter()
            .map(away)
            .collect();
        let mut want = vec![0.0; nu];
        let state = storage_init(
            ctx,
            "state",
            &[StepState {
                epoch_step: 3,
                t,
                n: 0,
                batch: 0,
            }],
        );
        let inb = storage_init(ctx, "in", &input);
        let out = nan_buffer(ctx, "out", nu);
        let (ds, name) = if backward {
            cpu::act::dropout_backward(&p, t, &input, &mut want);
            (k.dropout_backward(ctx, &p, &state, &inb, &out), "dx")
        } else {
            cpu::act::dropout_forward(&p, t, &input, &mut want);
            (k.dropout_forward(ctx, &p, &state, &inb, &out), "y")
        };
        run_once(ctx, &ds)?;
        let got: Vec<f32> = read_async(ctx, &out, nu).await?;
        let mask = |v: &[f32]| v.iter().map(|&f| (f != 0.0) as u32).collect::<Vec<u32>>();
        let mut cv = Check::new(case, name, ELEMENTWISE);
        cv.floats(None, &got, &want);
        let mut cm = Check::new(case, "mask", Tol::Exact);
        cm.ints(None, &mask(&got), &mask(&want));
        Ok(vec![cv.finish(), cm.finish()])
    }

    /// The forward runs twice from non-zero metrics: they must accumulate, not overwrite. The
    /// backward starts from the CPU's probabilities, so it is checked on its own.
    async fn loss_case(
        &self,
        case: &Case,
        backward: bool,
        (batch, classes, valid): (u32, u32, u32),
        label_smoothing: f32,
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.loss, || LossKernels::new(ctx))?;
        let p = LossParams::new(batch, classes, label_smoothing);
        let (bu, cu) = (batch as usize, classes as usize);
        let mut r = rng(seed);
        let mut logits = uniform(&mut r, bu * cu, -6.0, 6.0);
        // Rows with a tied maximum: the first one must count as the prediction.
        for row in (0..bu).step_by(5) {
            let m = logits[row * cu..][..cu]
                .iter()
                .fold(f32::MIN, |a, &v| a.max(v));
            logits[row * cu + cu - 1] = m;
        }
        let labels: Vec<u32> = (0..bu).map(|_| r.random_range(0..classes)).collect();
        let state = StepState {
            epoch_step: 2,
            t: 9,
            n: 2 * batch + valid,
            batch,
        };
        debug_assert_eq!(state.valid(), valid);
        let mut probs = vec![0.0; bu * cu];
        let mut m = cpu::loss::Metrics {
            loss_sum: 1.5,
            correct: 3,
            seen: 11,
        };
        for _ in 0..2 {
            cpu::loss::softmax_xent_forward(&p, valid, &logits, &labels, &mut probs, &mut m);
        }
        let st = storage_init(ctx, "state", &[state]);
        let lab = storage_init(ctx, "labels", &labels);
        if !backward {
            let pb = nan_buffer(ctx, "probs", bu * cu);
            let metrics = storage_init(ctx, "metrics", &[1.5f32.to_bits(), 3, 11, 0]);
            let logits_b = storage_init(ctx, "logits", &logits);
            let fwd = k.softmax_xent_forward(ctx, &p, &st, &logits_b, &lab, &pb, &metrics);
            run_once(ctx, &fwd)?;
            run_once(ctx, &fwd)?;
            let gm: Vec<u32> = read_async(ctx, &metrics, 4).await?;
            let mut cp = Check::new(case, "probs", ELEMENTWISE);
            cp.floats(None, &read_async::<f32>(ctx, &pb, bu * cu).await?, &probs);
            let mut cl = Check::new(case, "metrics loss_sum", REDUCTION);
            cl.floats(None, &[f32::from_bits(gm[0])], &[m.loss_sum]);
            let mut cc = Check::new(case, "metrics correct,seen", Tol::Exact);
            cc.ints(None, &gm[1..3], &[m.correct, m.seen]);
            return Ok(vec![cp.finish(), cl.finish(), cc.finish()]);
        }
        let mut dl = vec![0.0; bu * cu];
        cpu::loss::softmax_xent_backward(&p, valid, &probs, &labels, &mut dl);
        let db = nan_buffer(ctx, "dlogits", bu * cu);
        let ds =
            k.softmax_xent_backward(ctx, &p, &st, &storage_init(ctx, "probs", &probs), &lab, &db);
        run_once(ctx, &ds)?;
        let mut c = Check::new(case, "dlogits", ELEMENTWISE);
        c.floats(None, &read_async::<f32>(ctx, &db, bu * cu).await?, &dl);
        Ok(vec![c.finish()])
    }

    /// `steps` updates, each followed by `advance` (so the step count the kernel reads is the
    /// GPU's own), weights and state compared after every step.
    async fn optim_case(
        &self,
        case: &Case,
        opt: Opt,
        (n, steps, start_t): (u32, u32, u32),
        (warmup, weight_decay): (u32, f32),
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.optim, || OptimKernels::new(ctx))?;
        let data = lazy(&self.data, || DataKernels::new(ctx))?;
        let nu = n as usize;
        let mut r = rng(seed);
        let mut w = uniform(&mut r, nu, -1.0, 1.0);
        let per = opt_width(opt);
        let mut st = opt_initial_state(opt, nu);
        let wb = storage_init(ctx, "w", &w);
        let gb = nan_buffer(ctx, "g", nu);
        let sb = storage_init(ctx, "opt state", &st);
        let first = StepState {
            t: start_t - 1,
            ..StepState::default()
        };
        let step = storage_init(ctx, "step", &[first]);
        let set = OptSet::new(opt, n, warmup, weight_decay);
        let mut ds = match opt {
            Opt::Wame { .. } => k.wame(ctx, &set.wame, &step, &wb, &gb, &sb),
            Opt::Adam => k.adam(ctx, &set.adam, &step, &wb, &gb, &sb),
            Opt::Rmsprop => k.rmsprop(ctx, &set.rmsprop, &step, &wb, &gb, &sb),
            Opt::Sgd => k.sgd(ctx, &set.sgd, &step, &wb, &gb, &sb),
        };
        ds.extend(data.advance(ctx, &step));
        let mut cw = Check::new(case, "w", ELEMENTWISE);
        let mut cs = Check::new(case, "state", ELEMENTWISE);
        let mut cw64 = Check::new(case, "w vs f64", ELEMENTWISE);
        let mut cs64 = Check::new(case, "state vs f64", ELEMENTWISE);
        let mut prev: Vec<f32> = vec![0.0; nu];
        for t in start_t..start_t + steps {
            let grad = optim_grads(&mut r, &prev);
            ctx.queue.write_buffer(&gb, 0, bytemuck::cast_slice(&grad));
            run_once(ctx, &ds)?;
            // The f64 evaluation of this step from the same f32 inputs, rounded once.
            let (mut w64, mut st64) = (to_t::<f64>(&w), to_t::<f64>(&st));
            cpu_opt_step(opt, &set, t, &mut w64, &to_t::<f64>(&grad), &mut st64);
            cpu_opt_step(opt, &set, t, &mut w, &grad, &mut st);
            let (gw, gs) = (
                read_async::<f32>(ctx, &wb, nu).await?,
                read_async::<f32>(ctx, &sb, nu * per).await?,
            );
            cw.floats(Some(t), &gw, &w);
            cs.floats(Some(t), &gs, &st);
            cw64.floats(Some(t), &gw, &to_f32(&w64));
            cs64.floats(Some(t), &gs, &to_f32(&st64));
            prev = grad;
        }
        let got: Vec<StepState> = read_async(ctx, &step, 1).await?;
        let mut ct = Check::new(case, "step t", Tol::Exact);
        ct.ints(None, &[got[0].t], &[start_t - 1 + steps]);
        Ok(vec![
            cw.finish(),
            cs.finish(),
            cw64.finish(),
            cs64.finish(),
            ct.finish(),
        ])
    }

    async fn update_case(
        &self,
        case: &Case,
        opt: Opt,
        tensors: &[(u32, u32)],
        (steps, start_t): (u32, u32),
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.optim, || OptimKernels::new(ctx))?;
        let data = lazy(&self.data, || DataKernels::new(ctx))?;
        let mut r = rng(seed);
        let per = opt_width(opt);
        let ws: Vec<Vec<f32>> = tensors
            .iter()
            .map(|&(n, _)| uniform(&mut r, n as usize, -1.0, 1.0))
            .collect();
        let states: Vec<Vec<f32>> = tensors
            .iter()
            .map(|&(n, _)| opt_initial_state(opt, n as usize))
            .collect();
        let glens: Vec<usize> = tensors.iter().map(|&(n, p)| (n * p) as usize).collect();
        let params = Arena::init(ctx, "update params", &ws);
        let state = Arena::init(ctx, "update state", &states);
        let grads = Arena::zeroed(ctx, "update grads", &glens);
        let parts: Vec<u32> = tensors.iter().map(|&(_, p)| p).collect();
        let (table, workgroups) = update_table(&params, &grads, &state, &parts);
        let table_buf = storage_init(ctx, "update table", &table);
        let step = storage_init(
            ctx,
            "step",
            &[StepState {
                t: start_t - 1,
                ..StepState::default()
            }],
        );
        let set = OptSet::new(opt, 0, 0, 0.0);
        let rule = match opt {
            Opt::Wame { .. } => UpdateRule::Wame(set.wame),
            Opt::Adam => UpdateRule::Adam(set.adam),
            Opt::Rmsprop => UpdateRule::Rmsprop(set.rmsprop),
            Opt::Sgd => UpdateRule::Sgd(set.sgd),
        };
        assert_eq!(rule.state_width() as usize, per);
        let mut ds = k.update(
            ctx,
            &rule,
            &step,
            &table_buf,
            workgroups,
            &params.buffer,
            &grads.buffer,
            &state.buffer,
        );
        ds.extend(data.advance(ctx, &step));
        // Host mirrors of the whole arenas, padding included: the comparison covers every
        // element, so a write outside a tensor's range shows up too.
        let flat = |a: &Arena, ts: &[Vec<f32>]| {
            let lens: Vec<usize> = a.lens.iter().map(|&n| n as usize).collect();
            let mut v = vec![0f32; Arena::layout(&lens).1 as usize];
            for (t, &o) in ts.iter().zip(&a.offsets) {
                v[o as usize..o as usize + t.len()].copy_from_slice(t);
            }
            v
        };
        let mut w = flat(&params, &ws);
        let mut st = flat(&state, &states);
        let zero_grads: Vec<Vec<f32>> = glens.iter().map(|&n| vec![0.0; n]).collect();
        let mut g = flat(&grads, &zero_grads);
        let mut cw = Check::new(case, "params arena", ELEMENTWISE);
        let mut cs = Check::new(case, "state arena", ELEMENTWISE);
        for t in start_t..start_t + steps {
            for (i, &(n, p)) in tensors.iter().enumerate() {
                let o = grads.offsets[i] as usize;
                let part = uniform(&mut r, (n * p) as usize, -1.0, 1.0);
                g[o..o + part.len()].copy_from_slice(&part);
            }
            ctx.queue
                .write_buffer(&grads.buffer, 0, bytemuck::cast_slice(&g));
            run_once(ctx, &ds)?;
            match rule {
                UpdateRule::Wame(p) => cpu::optim::update_wame(&p, t, &table, &mut w, &g, &mut st),
                UpdateRule::Adam(p) => cpu::optim::update_adam(&p, t, &table, &mut w, &g, &mut st),
                UpdateRule::Rmsprop(p) => {
                    cpu::optim::update_rmsprop(&p, t, &table, &mut w, &g, &mut st)
                }
                UpdateRule::Sgd(p) => cpu::optim::update_sgd(&p, t, &table, &mut w, &g, &mut st),
            }
            cw.floats(
                Some(t),
                &read_async::<f32>(ctx, &params.buffer, w.len()).await?,
                &w,
            );
            cs.floats(
                Some(t),
                &read_async::<f32>(ctx, &state.buffer, st.len()).await?,
                &st,
            );
        }
        let got: Vec<StepState> = read_async(ctx, &step, 1).await?;
        let mut ct = Check::new(case, "step t", Tol::Exact);
        ct.ints(None, &[got[0].t], &[start_t - 1 + steps]);
        Ok(vec![cw.finish(), cs.finish(), ct.finish()])
    }

    async fn stats_case(
        &self,
        case: &Case,
        opt: Opt,
        tensors: &[(u32, u32)],
        t: u32,
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.optim, || OptimKernels::new(ctx))?;
        let mut r = rng(seed);
        let set = OptSet::new(opt, 0, 0, 0.0);
        let edges = zeta_edges(set.wame.zeta_min, set.wame.zeta_max);
        let ws: Vec<Vec<f32>> = tensors
            .iter()
            .map(|&(n, _)| uniform(&mut r, n as usize, -1.0, 1.0))
            .collect();
        let states: Vec<Vec<f32>> = tensors
            .iter()
            .map(|&(n, _)| stats_state(opt, &set.wame, &edges, &mut r, n as usize))
            .collect();
        // Partials of either sign, a tenth of them exactly 0 (no sign, no zeta change).
        let gs: Vec<Vec<f32>> = tensors
            .iter()
            .map(|&(n, p)| {
                (0..n * p)
                    .map(|_| {
                        if r.random_range(0..10) == 0 {
                            0.0
                        } else {
                            r.random_range(-1.0f32..1.0)
                        }
                    })
                    .collect()
            })
            .collect();
        let params = Arena::init(ctx, "stats params", &ws);
        let state = Arena::init(ctx, "stats state", &states);
        let grads = Arena::init(ctx, "stats grads", &gs);
        let parts: Vec<u32> = tensors.iter().map(|&(_, p)| p).collect();
        let (table, workgroups) = update_table(&params, &grads, &state, &parts);
        let step = storage_init(
            ctx,
            "step",
            &[StepState {
                t: t - 1,
                ..StepState::default()
            }],
        );
        let rule = match opt {
            Opt::Wame { .. } => UpdateRule::Wame(set.wame),
            Opt::Adam => UpdateRule::Adam(set.adam),
            Opt::Rmsprop => UpdateRule::Rmsprop(set.rmsprop),
            Opt::Sgd => UpdateRule::Sgd(set.sgd),
        };
        // Unwritten partials read as u32::MAX / NaN and fail.
        let words = workgroups as usize * std::mem::size_of::<StatsPartial>() / 4;
        let out = storage_init(ctx, "stats out", &vec![u32::MAX; words]);
        let d = k.stats(
            ctx,
            &rule,
            &step,
            &storage_init(ctx, "update table", &table),
            workgroups,
            &params.buffer,
            &grads.buffer,
            &state.buffer,
            &out,
            &storage_init(ctx, "edges", &edges),
        );
        run_once(ctx, &[d])?;
        let got: Vec<StatsPartial> = read_async(ctx, &out, workgroups as usize).await?;
        let mut want = Vec::with_capacity(got.len());
        for (i, &(n, p)) in tensors.iter().enumerate() {
            // The gradient as the shader's `grad_sum` adds it, from this tensor's partials.
            let rec = crate::params::UpdateRecord {
                n,
                parts: p,
                ..Default::default()
            };
            let g = cpu::optim::grad_sum(&rec, &gs[i]);
            let (w, st) = (&ws[i], &states[i]);
            want.extend(match rule {
                UpdateRule::Wame(q) => cpu::optim::stats_wame(
                    &WameParams { n, ..q },
                    t,
                    &edges,
                    w,
                    &g,
                    bytemuck::cast_slice(st),
                ),
                UpdateRule::Adam(q) => cpu::optim::stats_adam(
                    &OptParams { n, ..q },
                    t,
                    w,
                    &g,
                    bytemuck::cast_slice(st),
                ),
                UpdateRule::Rmsprop(q) => {
                    cpu::optim::stats_rmsprop(&OptParams { n, ..q }, t, w, &g, st)
                }
                UpdateRule::Sgd(q) => cpu::optim::stats_sgd(&OptParams { n, ..q }, t, w, &g, st),
            });
        }
        let counts = |v: &[StatsPartial]| -> Vec<u32> {
            v.iter()
                .flat_map(|p| {
                    p.bins
                        .iter()
                        .copied()
                        .chain([p.at_min, p.at_max, p.flips, p.count])
                })
                .collect()
        };
        let sums = |v: &[StatsPartial]| -> Vec<f32> {
            v.iter()
                .flat_map(|p| [p.mult, p.step, p.dw2, p.w2])
                .collect()
        };
        let mut cc = Check::new(case, "partial counts", Tol::Exact);
        cc.ints(None, &counts(&got), &counts(&want));
        let mut cs = Check::new(case, "partial sums", REDUCTION);
        cs.floats(None, &sums(&got), &sums(&want));
        // It describes the update; it must not make it.
        let bits = |v: Vec<f32>| -> Vec<u32> { v.iter().map(|x| x.to_bits()).collect() };
        let mut cw = Check::new(case, "params untouched", Tol::Exact);
        let mut cst = Check::new(case, "state untouched", Tol::Exact);
        for i in 0..tensors.len() {
            cw.ints(
                None,
                &bits(params.read_async(ctx, i).await?[..ws[i].len()].to_vec()),
                &bits(ws[i].clone()),
            );
            cst.ints(
                None,
                &bits(state.read_async(ctx, i).await?[..states[i].len()].to_vec()),
                &bits(states[i].clone()),
            );
        }
        Ok(vec![cc.finish(), cs.finish(), cw.finish(), cst.finish()])
    }

    async fn gather_case(
        &self,
        case: &Case,
        batch: u32,
        augment: bool,
        seed: u64,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.data, || DataKernels::new(ctx))?;
        let g = gather_inputs(seed);
        let labels_u32: Vec<u32> = g.labels.iter().map(|&l| l as u32).collect();
        let p = GatherParams {
            batch,
            pixels: PIXELS as u32,
            augment: augment as u32,
            seed: 42,
        };
        let b = batch as usize;
        let mut st = StepState {
            epoch_step: 0,
            t: 1000 + batch,
            n: GATHER_N,
            batch,
        };
        let st_b = storage_init(ctx, "state", &[st]);
        let xb = nan_buffer(ctx, "x", b * PIXELS);
        let yb = storage_init(ctx, "y", &vec![u32::MAX; b]);
        let gather = k.gather(
            ctx,
            &p,
            &st_b,
            &storage_init(ctx, "index", &g.index),
            &storage_init(ctx, "images", &pack_u8(&g.images)),
            &storage_init(ctx, "labels", &labels_u32),
            &xb,
            &yb,
        );
        let advance = k.advance(ctx, &st_b);
        let (first, count) = gather_steps(batch);
        for _ in 0..first {
            run_once(ctx, &advance)?;
            cpu::data::advance(&mut st);
        }
        let (mut cx, mut cy, mut cs) = (
            Check::new(case, "x", ELEMENTWISE),
            Check::new(case, "y", Tol::Exact),
            Check::new(case, "state", Tol::Exact),
        );
        for _ in 0..count {
            let (mut x, mut y) = (vec![0.0f32; b * PIXELS], vec![0u32; b]);
            cpu::data::gather(&p, &st, &g.index, &g.images, &g.labels, &mut x, &mut y);
            // Rows past n must be written as zeros, not left alone.
            refill_nan(ctx, &xb, b * PIXELS);
            ctx.queue
                .write_buffer(&yb, 0, bytemuck::cast_slice(&vec![u32::MAX; b]));
            run_once(ctx, &gather)?;
            let at = Some(st.epoch_step);
            cx.floats(at, &read_async::<f32>(ctx, &xb, b * PIXELS).await?, &x);
            cy.ints(at, &read_async::<u32>(ctx, &yb, b).await?, &y);
            run_once(ctx, &advance)?;
            cpu::data::advance(&mut st);
            let gs: Vec<u32> = read_async(ctx, &st_b, 4).await?;
            cs.ints(at, &gs, bytemuck::cast_slice(&[st]));
        }
        Ok(vec![cx.finish(), cy.finish(), cs.finish()])
    }

    async fn advance_case(
        &self,
        case: &Case,
        start: StepState,
        steps: u32,
    ) -> Result<Vec<KernelRow>> {
        let ctx = self.ctx;
        let k = lazy(&self.data, || DataKernels::new(ctx))?;
        let mut st = start;
        let b = storage_init(ctx, "state", &[st]);
        let ds = k.advance(ctx, &b);
        let mut c = Check::new(case, "state", Tol::Exact);
        for i in 1..=steps {
            run_once(ctx, &ds)?;
            cpu::data::advance(&mut st);
            c.ints(
                Some(i),
                &read_async::<u32>(ctx, &b, 4).await?,
                bytemuck::cast_slice(&[st]),
            );
        }
        Ok(vec![c.finish()])
    }
}

/// Runs one case on `ctx` (building the pipelines of its family); [`Runner`] reuses them.
pub fn run_case(ctx: &GpuContext, case: &Case) -> Result<Vec<KernelRow>> {
    Runner::new(ctx).run(case)
}

/// Runs `cases` in order, building each family's pipelines once.
pub fn run_cases(ctx: &GpuContext, cases: &[Case]) -> Result<Vec<KernelRow>> {
    let runner = Runner::new(ctx);
    let mut rows = Vec::new();
    for c in cases {
        rows.extend(runner.run(c)?);
    }
    Ok(rows)
}

struct ConvData {
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
    dy: Vec<f32>,
}

/// Inputs at training scale (activations in [0, 1), Glorot-range weights, gradients of order
/// 1e-2): the tolerances are absolute plus relative, and at these scales they measure the
/// kernels' rounding, not the size of arbitrary test data.
fn conv_data(p: &ConvParams, seed: u64) -> ConvData {
    let mut r = rng(seed);
    let kk = (p.k * p.k) as f32;
    let l = (6.0 / ((p.c_in as f32 + p.c_out as f32) * kk)).sqrt();
    ConvData {
        x: uniform(&mut r, p.x_len(), 0.0, 1.0),
        w: uniform(&mut r, p.w_len(), -l, l),
        bias: uniform(&mut r, p.c_out as usize, -0.1, 0.1),
        dy: uniform(&mut r, p.y_len(), -0.01, 0.01),
    }
}

fn conv_reference<T: Real>(pass: Pass, p: &ConvParams, d: &ConvData) -> Vec<f32> {
    let out = match pass {
        Pass::Forward => {
            let mut y = vec![T::ZERO; p.y_len()];
            cpu::conv::forward(p, &to_t(&d.x), &to_t(&d.w), &to_t(&d.bias), &mut y);
            y
        }
        Pass::BackwardInput => {
            let mut dx = vec![T::ZERO; p.x_len()];
            cpu::conv::backward_input(p, &to_t(&d.dy), &to_t(&d.w), &mut dx);
            dx
        }
        Pass::BackwardWeight => {
            let mut dw = vec![T::ZERO; p.w_len()];
            cpu::conv::backward_weight(p, &to_t(&d.x), &to_t(&d.dy), &mut dw);
            dw
        }
        Pass::BackwardBias => {
            let mut db = vec![T::ZERO; p.c_out as usize];
            cpu::conv::backward_bias(p, &to_t(&d.dy), &mut db);
            db
        }
    };
    to_f32(&out)
}

/// Inputs on a coarse binary grid: x in {0, 1/4, 1/2, 3/4} (half of them 0), w in k/8 for
/// |k| <= 3, bias in k/8 for |k| <= 2. Every product is a multiple of 1/32 and every conv sum of
/// the table's shapes stays far below 2^24 / 32, so sums are exact in any order and GPU and CPU
/// agree bit for bit. Output channel 0 has zero weights and bias 1/4: its windows are all tied
/// (the first position must win); ReLU zeros and the few distinct values tie the others often.
fn conv_grid_data(p: &ConvParams, seed: u64) -> ConvData {
    let mut r = rng(seed);
    let ckk = (p.c_in * p.k * p.k) as usize;
    let x = (0..p.x_len())
        .map(|_| {
            let v = r.random_range(0..8u32);
            if v < 4 { 0.0 } else { (v - 4) as f32 * 0.25 }
        })
        .collect();
    let w = (0..p.w_len())
        .map(|i| {
            let v = r.random_range(-3..=3i32) as f32 * 0.125;
            if i < ckk { 0.0 } else { v }
        })
        .collect();
    let mut bias: Vec<f32> = (0..p.c_out)
        .map(|_| r.random_range(-2..=2i32) as f32 * 0.125)
        .collect();
    bias[0] = 0.25;
    let dy = vec![0.0; p.y_len()];
    ConvData { x, w, bias, dy }
}

/// The argmax the GPU must match: the CPU's, except where the GPU picked another position of the
/// same window whose CPU value is within `slack` times the conv tolerance of the CPU's maximum
/// (a near-tie that rounding may break either way; `slack` 2 covers both runs' errors). `a` is
/// the CPU's pooled input [B,C,H,W]; returns the expected argmax and the near-ties accepted.
fn near_tie_argmax(
    pp: &PoolParams,
    a: &[f32],
    gpu: &[u32],
    cpu: &[u32],
    slack: f64,
) -> (Vec<u32>, usize) {
    let Tol::Close { atol, rtol } = REDUCTION else {
        unreachable!("REDUCTION is a Close tolerance")
    };
    let (hw, ohw, w) = (
        (pp.h * pp.w) as usize,
        (pp.oh * pp.ow) as usize,
        pp.w as usize,
    );
    let mut accepted = 0;
    let want = (0..cpu.len())
        .map(|i| {
            let (g, c) = (gpu[i] as usize, cpu[i] as usize);
            let (plane, pix) = (i / ohw, i % ohw);
            let (py, px) = (pix / pp.ow as usize, pix % pp.ow as usize);
            let in_window = g < hw && (g / w) / 2 == py && (g % w) / 2 == px;
            if g == c || !in_window {
                return cpu[i];
            }
            let (vg, vc) = (a[plane * hw + g] as f64, a[plane * hw + c] as f64);
            if (vg - vc).abs() <= slack * (atol as f64 + rtol as f64 * vc.abs()) {
                accepted += 1;
                gpu[i]
            } else {
                cpu[i]
            }
        })
        .collect();
    (want, accepted)
}

/// Inputs of a conv_grad case: the conv input `x` and weights `w` at training scale, and what
/// the fused forward keeps of `relu(conv(x, w) + bias)`: the pooled map `q` and its `argmax`;
/// `dd` is the gradient arriving at the pool (or dropout) output.
pub struct ConvGradInputs {
    pub x: Vec<f32>,
    pub w: Vec<f32>,
    pub q: Vec<f32>,
    pub argmax: Vec<u32>,
    pub dd: Vec<f32>,
}

pub fn conv_grad_inputs(p: &ConvGradParams, seed: u64) -> ConvGradInputs {
    let c = p.conv();
    let d = conv_data(&c, seed);
    let mut a = vec![0.0f32; c.y_len()];
    cpu::conv::forward(&c, &d.x, &d.w, &d.bias, &mut a);
    let pool = p.pool();
    let (mut q, mut argmax) = (vec![0.0f32; pool.y_len()], vec![0u32; pool.y_len()]);
    cpu::pool::maxpool_forward(&pool, &a, &mut q, &mut argmax);
    let dd = uniform(&mut rng(seed ^ 0x5eed), pool.y_len(), -0.01, 0.01);
    ConvGradInputs {
        x: d.x,
        w: d.w,
        q,
        argmax,
        dd,
    }
}

/// The data set of a gather case: [`GATHER_SAMPLES`] images, labels and a permutation of them.
pub struct GatherInputs {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub index: Vec<u32>,
}

/// Mostly smooth images (so a shift or flip changes them) with a few saturated pixels.
pub fn gather_inputs(seed: u64) -> GatherInputs {
    let mut r = rng(seed);
    let images: Vec<u8> = (0..GATHER_SAMPLES * PIXELS)
        .map(|i| {
            let (row, col) = ((i % PIXELS) / 28, i % 28);
            if r.random_range(0..16u32) == 0 {
                255
            } else {
                ((row * 9 + col * 5 + i / PIXELS) % 256) as u8
            }
        })
        .collect();
    let labels: Vec<u8> = (0..GATHER_SAMPLES)
        .map(|_| r.random_range(0..10u8))
        .collect();
    let mut index: Vec<u32> = (0..GATHER_SAMPLES as u32).collect();
    for i in (1..index.len()).rev() {
        index.swap(i, r.random_range(0..=i));
    }
    GatherInputs {
        images,
        labels,
        index,
    }
}

/// SPEC 5 defaults with `lr = 1e-3`.
pub fn wame_params(n: u32, variant: u32) -> WameParams {
    WameParams {
        n,
        variant,
        lr: 1e-3,
        alpha: 0.9,
        eta_plus: 1.2,
        eta_minus: 0.1,
        zeta_min: 0.01,
        zeta_max: 100.0,
        eps: 1e-12,
        warmup: 0,
        weight_decay: 0.0,
        _pad: 0,
    }
}

fn opt_params(n: u32, lr: f32, b1: f32, b2: f32, eps: f32, warmup: u32) -> OptParams {
    OptParams::new(n, lr, b1, b2, eps, warmup, 0.0)
}

/// Every optimizer's hyper-parameters as the table uses them.
#[derive(Clone, Copy)]
struct OptSet {
    wame: WameParams,
    adam: OptParams,
    rmsprop: OptParams,
    sgd: OptParams,
}

impl OptSet {
    fn new(opt: Opt, n: u32, warmup: u32, weight_decay: f32) -> Self {
        let variant = if let Opt::Wame { variant } = opt {
            variant
        } else {
            0
        };
        let with_wd = |p: OptParams| OptParams { weight_decay, ..p };
        OptSet {
            wame: WameParams {
                warmup,
                weight_decay,
                ..wame_params(n, variant)
            },
            adam: with_wd(opt_params(n, 1e-3, 0.9, 0.999, 1e-8, warmup)),
            rmsprop: with_wd(opt_params(n, 1e-3, 0.0, 0.9, 1e-8, warmup)),
            sgd: with_wd(opt_params(n, 1e-2, 0.9, 0.0, 0.0, warmup)),
        }
    }
}

fn opt_width(opt: Opt) -> usize {
    match opt {
        Opt::Wame { .. } => 4,
        Opt::Adam => 2,
        Opt::Rmsprop | Opt::Sgd => 1,
    }
}

/// Fresh state of `n` weights; SGD's momentum buffer starts as garbage, since step 1 must
/// overwrite it with g.
fn opt_initial_state(opt: Opt, n: usize) -> Vec<f32> {
    let init: &[f32] = match opt {
        Opt::Wame { .. } => &WAME_INIT,
        Opt::Adam => &[0.0, 0.0],
        Opt::Rmsprop => &[0.0],
        Opt::Sgd => &[3.0],
    };
    init.iter().copied().cycle().take(n * init.len()).collect()
}

/// Mid-run optimizer state of `n` weights for [`Case::Stats`]: WAME's zeta at `zeta_min`, at
/// `zeta_max`, one step below `zeta_max`, exactly on a bin edge, or log-uniform between the
/// bounds, with Z and theta positive and g_prev of either sign or 0; the baselines' moments in
/// their reachable ranges (v >= 0).
fn stats_state(
    opt: Opt,
    p: &WameParams,
    edges: &[f32; crate::params::STATS_BINS],
    r: &mut ChaCha8Rng,
    n: usize,
) -> Vec<f32> {
    let mut v = Vec::with_capacity(n * opt_width(opt));
    for _ in 0..n {
        match opt {
            Opt::Wame { .. } => {
                let zeta = match r.random_range(0..5) {
                    0 => p.zeta_min,
                    1 => p.zeta_max,
                    2 => p.zeta_max / p.eta_plus,
                    3 => edges[r.random_range(0..edges.len())],
                    _ => (r.random_range(p.zeta_min.ln()..p.zeta_max.ln())).exp(),
                };
                let g_prev = [-1.0f32, 0.0, 1.0][r.random_range(0..3)] * r.random_range(0.1..1.0);
                v.extend([
                    zeta,
                    r.random_range(0.01..100.0),
                    r.random_range(1e-6..1.0),
                    g_prev,
                ]);
            }
            Opt::Adam => v.extend([r.random_range(-0.1..0.1), r.random_range(0.0..0.01)]),
            Opt::Rmsprop => v.push(r.random_range(0.0..0.01)),
            Opt::Sgd => v.push(r.random_range(-1.0..1.0)),
        }
    }
    v
}

/// Gradients that keep, flip or zero their sign from the previous step, so every branch of
/// WAME's zeta update and of the momentum start is taken.
fn optim_grads(r: &mut ChaCha8Rng, prev: &[f32]) -> Vec<f32> {
    prev.iter()
        .map(|&p| match r.random_range(0..4u32) {
            0 => 0.0,
            1 => -p * 0.7 + 1e-3,
            _ => r.random_range(-1.0f32..1.0),
        })
        .collect()
}

/// One step of the CPU twin of `opt` at step number `t`, state flat (`opt_width` per weight).
fn cpu_opt_step<T: Real>(opt: Opt, s: &OptSet, t: u32, w: &mut [T], g: &[T], st: &mut [T]) {
    match opt {
        Opt::Wame { .. } => as_arrays::<T, 4>(st, |a| cpu::optim::wame(&s.wame, t, w, g, a)),
        Opt::Adam => as_arrays::<T, 2>(st, |a| cpu::optim::adam(&s.adam, t, w, g, a)),
        Opt::Rmsprop => cpu::optim::rmsprop(&s.rmsprop, t, w, g, st),
        Opt::Sgd => cpu::optim::sgd(&s.sgd, t, w, g, st),
    }
}

/// `f` on `flat` seen as `[[T; N]]` (copied out and back: `as_chunks_mut` is newer than the MSRV).
fn as_arrays<T: Copy + Default, const N: usize>(flat: &mut [T], f: impl FnOnce(&mut [[T; N]])) {
    let mut a: Vec<[T; N]> = flat
        .chunks_exact(N)
        .map(|c| std::array::from_fn(|k| c[k]))
        .collect();
    f(&mut a);
    for (c, v) in flat.chunks_exact_mut(N).zip(&a) {
        c.copy_from_slice(v);
    }
}

fn fmt_err(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else {
        format!("{v:.2e}")
    }
}

/// The worst entries of every failing row, or `None` when all rows pass.
pub fn failure_report(rows: &[KernelRow]) -> Option<String> {
    let failed: Vec<&KernelRow> = rows.iter().filter(|r| !r.ok).collect();
    if failed.is_empty() {
        return None;
    }
    let mut s = format!("{} output(s) out of tolerance:\n", failed.len());
    for r in failed {
        s.push_str(&format!(
            "{} [{}] {}: {} of {} values out of tolerance ({}); worst:\n",
            r.kernel, r.shape, r.output, r.failures, r.values, r.tol
        ));
        for e in &r.worst {
            let at = match e.step {
                Some(t) => format!("step {t} [{}]", e.index),
                None => format!("[{}]", e.index),
            };
            s.push_str(&format!(
                "    {at:<16} gpu {:<14e} cpu {:<14e} |diff| {:e}\n",
                e.gpu,
                e.cpu,
                (e.gpu - e.cpu).abs()
            ));
        }
    }
    Some(s)
}

/// The rows as a text table, one line per output buffer.
pub fn format_rows(rows: &[KernelRow]) -> String {
    let mut s = format!(
        "{:<26} {:<30} {:<22} {:>9} {:>9} {:>8} {:>15}  result\n",
        "kernel", "shape", "output", "max|err|", "max rel", "err/tol", "tolerance"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<26} {:<30} {:<22} {:>9} {:>9} {:>8} {:>15}  {}\n",
            r.kernel,
            r.shape,
            r.output,
            fmt_err(r.worst_abs),
            fmt_err(r.worst_rel),
            r.worst_err_over_tol
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "-".into()),
            r.tol.to_string(),
            if r.ok { "ok" } else { "FAIL" }
        ));
    }
    s
}

/// Per-kernel summary of a table run (JSON `kernels`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KernelSummary {
    pub kernel: &'static str,
    pub cases: usize,
    pub outputs: usize,
    pub worst_abs: f64,
    pub worst_rel: f64,
    pub ok: bool,
}

pub fn summarize(cases: &[Case], rows: &[KernelRow]) -> Vec<KernelSummary> {
    KERNELS
        .iter()
        .map(|&k| {
            let rs: Vec<&KernelRow> = rows.iter().filter(|r| r.kernel == k).collect();
            KernelSummary {
                kernel: k,
                cases: cases.iter().filter(|c| c.kernel() == k).count(),
                outputs: rs.len(),
                // Rerun rows compare GPU with GPU: they say nothing about the error vs the CPU.
                worst_abs: rs
                    .iter()
                    .filter(|r| !r.output.ends_with("rerun"))
                    .fold(0.0, |a, r| a.max(r.worst_abs)),
                worst_rel: rs
                    .iter()
                    .filter(|r| !r.output.ends_with("rerun"))
                    .fold(0.0, |a, r| a.max(r.worst_rel)),
                ok: !rs.is_empty() && rs.iter().all(|r| r.ok),
            }
        })
        .collect()
}

/// `fmnist-gpu parity` without `--fixture`: opens the GPU, runs [`cases`], prints the table (or
/// one JSON document) and fails with [`Error::Runtime`] when any output is out of tolerance.
pub fn run_table(device: &DeviceArgs, json: bool) -> Result<()> {
    let ctx = match crate::gpu::select::open(device)? {
        Selected::Gpu(ctx) => ctx,
        Selected::Cpu { reason } => {
            return Err(Error::NoAdapter(format!(
                "the kernel table compares the GPU kernels against the CPU reference and needs a \
                 GPU adapter, but the device resolved to the CPU ({reason}); pass --adapter \
                 software to run it on a software adapter such as lavapipe, or --fixture FILE to \
                 check the CPU backend against PyTorch"
            )));
        }
    };
    let cases = cases();
    log::info!(
        "kernel table: {} cases of {} entry points on {} ({}, {})",
        cases.len(),
        KERNELS.len(),
        ctx.adapter.name,
        ctx.adapter.backend,
        ctx.adapter.driver
    );
    let start = Instant::now();
    let runner = Runner::new(&ctx);
    let mut rows = Vec::new();
    for case in &cases {
        log::debug!("{} {}", case.kernel(), case.shape());
        rows.extend(runner.run(case)?);
    }
    let seconds = start.elapsed().as_secs_f64();
    let summary = summarize(&cases, &rows);
    let failed = rows.iter().filter(|r| !r.ok).count();
    let report = failure_report(&rows);
    if json {
        let doc = serde_json::json!({
            "adapter": ctx.adapter,
            "passed": failed == 0,
            "seconds": seconds,
            "cases": cases.len(),
            "failed_outputs": failed,
            "kernels": summary,
            "rows": rows,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("plain data")
        );
    } else {
        println!(
            "kernel table on {} ({}, {}, {})",
            ctx.adapter.name, ctx.adapter.device_type, ctx.adapter.backend, ctx.adapter.driver
        );
        print!("{}", format_rows(&rows));
        println!();
        println!(
            "{:<26} {:>5} {:>7} {:>9} {:>9}  result",
            "kernel", "cases", "outputs", "max|err|", "max rel"
        );
        for s in &summary {
            println!(
                "{:<26} {:>5} {:>7} {:>9} {:>9}  {}",
                s.kernel,
                s.cases,
                s.outputs,
                fmt_err(s.worst_abs),
                fmt_err(s.worst_rel),
                if s.ok { "ok" } else { "FAIL" }
            );
        }
        println!(
            "{} of {} outputs within tolerance ({} cases, {:.1} s)",
            rows.len() - failed,
            rows.len(),
            cases.len(),
            seconds
        );
    }
    if let Some(r) = &report {
        // The worst entries go to stderr in JSON mode: stdout holds the one document.
        if json {
            eprint!("{r}");
        } else {
            print!("{r}");
        }
    }
    if failed > 0 || summary.iter().any(|s| !s.ok) {
        return Err(Error::Runtime(format!(
            "kernel table: {failed} of {} outputs out of tolerance on {}",
            rows.len(),
            ctx.adapter.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_has_several_cases() {
        let all = cases();
        for k in KERNELS {
            let n = all.iter().filter(|c| c.kernel() == k).count();
            assert!(n >= 2, "{k}: {n} cases");
        }
        assert!(all.iter().all(|c| KERNELS.contains(&c.kernel())));
    }

    #[test]
    fn cases_are_distinct() {
        let all = cases();
        let mut labels: Vec<(&str, String)> = all.iter().map(|c| (c.kernel(), c.shape())).collect();
        labels.sort();
        let n = labels.len();
        labels.dedup();
        assert_eq!(labels.len(), n, "two cases share a kernel and shape label");
    }

    #[test]
    fn check_catches_nan_and_out_of_tolerance() {
        let case = Case::Relu {
            backward: false,
            n: 4,
            seed: 0,
        };
        let mut c = Check::new(&case, "y", ELEMENTWISE);
        c.floats(
            None,
            &[1.0, 2.0, f32::NAN, 4.0],
            &[1.0, 2.0 + 1e-4, 3.0, 4.0 + 1e-7],
        );
        let r = c.finish();
        assert!(!r.ok);
        assert_eq!(r.failures, 2);
        assert_eq!(r.worst[0].index, 2, "NaN is the worst");
        assert_eq!(r.worst[1].index, 1);
        assert_eq!(r.worst_abs, f64::INFINITY);

        let mut c = Check::new(&case, "y", REDUCTION);
        c.floats(None, &[1.0, 0.0], &[1.0 + 5e-5, 9e-6]);
        let r = c.finish();
        assert!(r.ok, "{r:?}");
        assert!(r.worst_err_over_tol.unwrap() < 1.0);

        let mut c = Check::new(&case, "bits", Tol::Exact);
        c.floats(None, &[0.0], &[-0.0]);
        assert!(!c.finish().ok, "exact float comparison is bitwise");

        let mut c = Check::new(&case, "argmax", Tol::Exact);
        c.ints(Some(3), &[1, 2, 3], &[1, 2, 4]);
        let r = c.finish();
        assert_eq!((r.failures, r.worst[0].step), (1, Some(3)));
        assert!(failure_report(&[r]).unwrap().contains("step 3 [2]"));
    }

    #[test]
    fn near_ties_only_inside_the_window_and_tolerance() {
        // One plane of 4x4 pooled to 2x2; window 0 holds a near-tie at [1], a clear loser at
        // [4] (row 1), and [2] lies in the next window.
        let pp = PoolParams::new(1, 1, 4, 4);
        let mut a = vec![0.0f32; 16];
        a[0] = 1.0;
        a[1] = 1.0 + 1e-6;
        a[4] = 0.9;
        a[2] = 1.0;
        let cpu = [1u32, 2, 8, 10];
        for (gpu0, want0, n) in [(0u32, 0u32, 1usize), (4, 1, 0), (2, 1, 0), (1, 1, 0)] {
            let gpu = [gpu0, 2, 8, 10];
            let (want, accepted) = near_tie_argmax(&pp, &a, &gpu, &cpu, 2.0);
            assert_eq!((want[0], accepted), (want0, n), "gpu picked {gpu0}");
            assert_eq!(&want[1..], &cpu[1..]);
        }
    }

    #[test]
    fn grid_inputs_tie_and_sum_exactly() {
        let p = ConvParams::new(2, 64, 12, 12, 64, 5, true);
        let d = conv_grid_data(&p, 3);
        let on_grid = |v: &[f32], q: f32| v.iter().all(|&x| (x / q).fract() == 0.0);
        assert!(on_grid(&d.x, 0.25) && on_grid(&d.w, 0.125) && on_grid(&d.bias, 0.125));
        // Exact sums: the f32 twin equals the f64 one bit for bit.
        let mut y32 = vec![0.0f32; p.y_len()];
        cpu::conv::forward(&p, &d.x, &d.w, &d.bias, &mut y32);
        let y64 = conv_reference::<f64>(Pass::Forward, &p, &d);
        assert!(
            y32.iter()
                .zip(&y64)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        // Ties at a non-first position exist besides channel 0's all-equal windows.
        let pp = cpu::conv::relu_pool_params(&p);
        let (mut out, mut am) = (vec![0.0; pp.y_len()], vec![0u32; pp.y_len()]);
        cpu::pool::maxpool_forward(&pp, &y32, &mut out, &mut am);
        let ohw = (pp.oh * pp.ow) as usize;
        let ties = (0..out.len())
            .filter(|&i| {
                let (plane, pix) = (i / ohw, i % ohw);
                let (py, px) = (pix / pp.ow as usize, pix % pp.ow as usize);
                let at = |dy: usize, dx: usize| {
                    let j = (2 * py + dy) * pp.w as usize + 2 * px + dx;
                    (j, y32[plane * (pp.h * pp.w) as usize + j])
                };
                let win = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                win.iter().filter(|w| w.1 == out[i]).count() > 1 && am[i] != win[0].0 as u32
            })
            .count();
        assert!(ties > 0, "no tie after the first position");
    }

    #[test]
    fn gather_steps_reach_past_the_epoch() {
        for b in [1u32, 3, 7, 16, 128] {
            let (first, count) = gather_steps(b);
            let last = StepState {
                epoch_step: first + count - 1,
                t: 0,
                n: GATHER_N,
                batch: b,
            };
            assert_eq!(last.valid(), 0, "batch {b}");
            let short = StepState {
                epoch_step: first + count - 2,
                ..last
            };
            assert!(short.valid() > 0);
        }
    }
}
