//! Uniform parameter structs shared by every WGSL entry point and its CPU twin.
//!
//! Each struct is `#[repr(C)]`, made of 4-byte scalars and padded to a multiple of 16 bytes so the
//! same bytes are a valid WGSL uniform. The WGSL twin of `FooParams` is `struct FooParams` in the
//! shader of that family, with the same field names (padding fields are `_p0`, `_p1`, ...);
//! `tests/shaders.rs` checks with naga that each WGSL struct has the size of its Rust twin.

use bytemuck::{Pod, Zeroable};

/// Valid (no padding), stride-1 convolution, NCHW activations and OIHW weights.
///
/// `y[b,o,oy,ox] = bias[o] + sum_{c,ky,kx} x[b,c,oy+ky,ox+kx] * w[o,c,ky,kx]`, then ReLU when
/// `relu != 0`. `oh = h - k + 1`, `ow = w - k + 1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ConvParams {
    pub batch: u32,
    pub c_in: u32,
    pub h: u32,
    pub w: u32,
    pub c_out: u32,
    pub k: u32,
    pub oh: u32,
    pub ow: u32,
    pub relu: u32,
    pub _pad: [u32; 3],
}

impl ConvParams {
    pub fn new(batch: u32, c_in: u32, h: u32, w: u32, c_out: u32, k: u32, relu: bool) -> Self {
        Self {
            batch,
            c_in,
            h,
            w,
            c_out,
            k,
            oh: h - k + 1,
            ow: w - k + 1,
            relu: relu as u32,
            _pad: [0; 3],
        }
    }
    pub fn x_len(&self) -> usize {
        (self.batch * self.c_in * self.h * self.w) as usize
    }
    pub fn y_len(&self) -> usize {
        (self.batch * self.c_out * self.oh * self.ow) as usize
    }
    pub fn w_len(&self) -> usize {
        (self.c_out * self.c_in * self.k * self.k) as usize
    }
}

/// The fused conv backward of `conv_grad.wgsl`: conv (valid, stride 1, NCHW/OIHW as
/// [`ConvParams`]) followed by ReLU, a 2x2 stride-2 floor-mode max pool to `ph x pw` and,
/// when `dropout != 0`, inverted dropout on the pooled map.
///
/// The gradient of the conv output is rebuilt from the pooled map `q`, its argmax and the
/// gradient `dd` arriving at the pool (or dropout) output:
/// `dy[b,o,y,x] = (y/2 < ph && x/2 < pw && am[i] == y*ow + x && q[i] > 0) ? g[i] : 0` with
/// `i = ((b*c_out + o)*ph + y/2)*pw + x/2` and `g[i] = dd[i]`, or with dropout
/// `keep(i) ? dd[i]*scale : 0` (the mask of [`ActParams`] `threshold`, `scale`, `seed` at step
/// `StepState.t`). `chunk` and `parts` are the split-K chunking of the weight gradient (positions
/// `batch*oh*ow` per chunk and their number, as `ops::conv::weight_chunk`). Build it with
/// [`ConvGradParams::new`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct ConvGradParams {
    pub batch: u32,
    pub c_in: u32,
    pub h: u32,
    pub w: u32,
    pub c_out: u32,
    pub k: u32,
    pub oh: u32,
    pub ow: u32,
    pub ph: u32,
    pub pw: u32,
    pub chunk: u32,
    pub parts: u32,
    pub dropout: u32,
    pub threshold: u32,
    pub scale: f32,
    pub seed: u32,
}

impl ConvGradParams {
    /// The backward of `conv` (its `relu` flag is implied: the pool follows a ReLU), pooled
    /// 2x2, then dropout with `drop`'s mask when given (`drop.n` is ignored: the mask index is
    /// the flat index into the pooled map).
    pub fn new(conv: &ConvParams, drop: Option<&ActParams>) -> Self {
        let q_len = conv.batch * conv.oh * conv.ow;
        let chunk = crate::ops::conv::weight_chunk(q_len);
        let (dropout, threshold, scale, seed) = match drop {
            Some(d) => (1, d.threshold, d.scale, d.seed),
            None => (0, 0, 1.0, 0),
        };
        Self {
            batch: conv.batch,
            c_in: conv.c_in,
            h: conv.h,
            w: conv.w,
            c_out: conv.c_out,
            k: conv.k,
            oh: conv.oh,
            ow: conv.ow,
            ph: conv.oh / 2,
            pw: conv.ow / 2,
            chunk,
            parts: q_len.div_ceil(chunk).max(1),
            dropout,
            threshold,
            scale,
            seed,
        }
    }

    /// The conv these gradients belong to (ReLU on).
    pub fn conv(&self) -> ConvParams {
        ConvParams::new(
            self.batch, self.c_in, self.h, self.w, self.c_out, self.k, true,
        )
    }

    /// The pool after the conv.
    pub fn pool(&self) -> PoolParams {
        PoolParams::new(self.batch, self.c_out, self.oh, self.ow)
    }

    /// The dropout on the pooled map, over all of it (`None` without dropout).
    pub fn drop(&self) -> Option<ActParams> {
        (self.dropout != 0).then_some(ActParams {
            n: self.pooled_len() as u32,
            threshold: self.threshold,
            scale: self.scale,
            seed: self.seed,
        })
    }

    /// Elements of `q`, `argmax` and `dd`: `batch * c_out * ph * pw`.
    pub fn pooled_len(&self) -> usize {
        (self.batch * self.c_out * self.ph * self.pw) as usize
    }
}

/// Second pass of a split reduction: `out[i] = sum_{s in 0..parts} partials[s*n + i]`, summed in
/// increasing `s` (conv backward_weight's split-K partials).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ReduceParams {
    pub n: u32,
    pub parts: u32,
    pub _pad: [u32; 2],
}

/// Max pool, 2x2 window, stride 2, floor mode: `oh = h / 2`, `ow = w / 2`.
///
/// Forward writes `y` and `argmax` (the flat index `iy*w + ix` of the winner inside the input plane;
/// ties go to the first maximum in row-major window order). Backward scatters `dy` to the winner and
/// multiplies by the ReLU mask `x > 0` of the pooled input (the fused ReLU backward of the conv).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PoolParams {
    pub batch: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub oh: u32,
    pub ow: u32,
    pub _pad: [u32; 2],
}

impl PoolParams {
    pub fn new(batch: u32, c: u32, h: u32, w: u32) -> Self {
        Self {
            batch,
            c,
            h,
            w,
            oh: h / 2,
            ow: w / 2,
            _pad: [0; 2],
        }
    }
    pub fn x_len(&self) -> usize {
        (self.batch * self.c * self.h * self.w) as usize
    }
    pub fn y_len(&self) -> usize {
        (self.batch * self.c * self.oh * self.ow) as usize
    }
}

/// Fully connected layer, weights `[n_out, n_in]` (PyTorch's `nn.Linear`).
///
/// `y[b,o] = bias[o] + sum_i x[b,i] * w[o,i]`, then ReLU when `relu != 0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DenseParams {
    pub batch: u32,
    pub n_in: u32,
    pub n_out: u32,
    pub relu: u32,
}

impl DenseParams {
    pub fn new(batch: u32, n_in: u32, n_out: u32, relu: bool) -> Self {
        Self {
            batch,
            n_in,
            n_out,
            relu: relu as u32,
        }
    }
}

/// Element-wise activation ops over `n` values.
///
/// Dropout is inverted: a unit is kept iff `dropout_hash(seed, step, i) >= threshold`
/// (`threshold = p * 2^32`, see [`dropout_threshold`]) and kept values are multiplied by `scale = 1/(1-p)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct ActParams {
    pub n: u32,
    pub threshold: u32,
    pub scale: f32,
    pub seed: u32,
}

/// Softmax cross-entropy over `batch` rows of `classes` logits.
///
/// Only the first `valid` rows (read from [`StepState`] on the GPU: the last batch of an epoch can
/// be short) count: rows past it get zero gradient and add nothing to the sums.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct LossParams {
    pub batch: u32,
    pub classes: u32,
    /// PyTorch's `label_smoothing`: the target is `(1 - ls) * onehot + ls / classes`
    /// (0: plain cross-entropy, bit for bit).
    pub label_smoothing: f32,
    pub _pad: u32,
}

impl LossParams {
    pub fn new(batch: u32, classes: u32, label_smoothing: f32) -> Self {
        Self {
            batch,
            classes,
            label_smoothing,
            _pad: 0,
        }
    }
}

/// The fused dense tail (`head.head`): fc2 (`[classes, hidden]`, classes fixed at
/// [`HEAD_CLASSES`]) then softmax cross-entropy, with the loss semantics of [`LossParams`] (the
/// valid rows come from [`StepState`] on the GPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct HeadParams {
    pub batch: u32,
    pub hidden: u32,
    /// As [`LossParams::label_smoothing`].
    pub label_smoothing: f32,
    pub _pad: u32,
}

/// The classes the head kernel is built for (the model's, `model::CLASSES`).
pub const HEAD_CLASSES: u32 = 10;

impl HeadParams {
    pub fn new(batch: u32, hidden: u32, label_smoothing: f32) -> Self {
        Self {
            batch,
            hidden,
            label_smoothing,
            _pad: 0,
        }
    }

    /// The head of fc2 and its loss (`fc2.n_out` and `loss.classes` must be [`HEAD_CLASSES`]).
    pub fn from_layers(fc2: &DenseParams, loss: &LossParams) -> Self {
        debug_assert_eq!(fc2.n_out, HEAD_CLASSES);
        debug_assert_eq!(loss.classes, HEAD_CLASSES);
        debug_assert_eq!(fc2.batch, loss.batch);
        Self::new(fc2.batch, fc2.n_in, loss.label_smoothing)
    }

    /// fc2 as a dense layer.
    pub fn fc2(&self) -> DenseParams {
        DenseParams::new(self.batch, self.hidden, HEAD_CLASSES, false)
    }

    /// The loss over fc2's logits.
    pub fn loss(&self) -> LossParams {
        LossParams::new(self.batch, HEAD_CLASSES, self.label_smoothing)
    }
}

/// Batch gather from the resident packed-u8 data set.
///
/// Row `b` of the batch is sample `index[epoch_step * batch + b]` when that position is below `n`
/// (from [`StepState`]), else zeros with label 0 (and [`LossParams`] ignores it).
/// `augment != 0` applies a random horizontal flip and a shift of up to 2 pixels with zero padding:
/// with `r_j = dropout_hash(seed, t, 4*b + j)` (`t` from [`StepState`]), flip iff `r_0 & 1 == 1`,
/// `dx = r_1 % 5 - 2`, `dy = r_2 % 5 - 2`, and output pixel `(y, x)` reads source row `y - dy`,
/// column `x - dx` (mirrored as `cols-1-(x - dx)` when flipped), zero when outside the image.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GatherParams {
    pub batch: u32,
    pub pixels: u32,
    pub augment: u32,
    pub seed: u32,
}

/// WAME hyper-parameters (SPEC 5). `variant`: 0 `seed` (m = zeta/Z), 1 `paper` (m = Z),
/// 2 `inverse` (m = 1/Z).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct WameParams {
    pub n: u32,
    pub variant: u32,
    pub lr: f32,
    pub alpha: f32,
    pub eta_plus: f32,
    pub eta_minus: f32,
    pub zeta_min: f32,
    pub zeta_max: f32,
    pub eps: f32,
    /// Linear warm-up length in steps (0: none); see [`crate::cpu::optim::warm_lr`].
    pub warmup: u32,
    /// Decoupled weight decay: each step scales the weights by `1 - lr_t * weight_decay` first.
    pub weight_decay: f32,
    pub _pad: u32,
}

/// Adam (`b1`, `b2`, `eps`), RMSprop (`b2` is its `alpha`, `eps`) and SGD with momentum
/// (`b1` is `mu`) share one struct; the step count `t` comes from [`StepState`] (`t + 1`).
///
/// `ln_b1`, `ln_b2` are `ln(b1)`, `ln(b2)` evaluated on the host in f64 and rounded once
/// ([`ln_beta`]): the shader forms Adam's bias corrections `1 - b^t = -expm1(t ln b)` from them
/// without a device `pow` or `log` (SPEC 5). Build the struct with [`OptParams::new`] (or call
/// [`OptParams::with_logs`] after changing a beta) so they never go stale; the CPU twin ignores
/// them and uses `b1`, `b2` exactly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct OptParams {
    pub n: u32,
    pub lr: f32,
    pub b1: f32,
    pub b2: f32,
    pub eps: f32,
    /// Linear warm-up length in steps (0: none); see [`crate::cpu::optim::warm_lr`].
    pub warmup: u32,
    /// Decoupled weight decay: each step scales the weights by `1 - lr_t * weight_decay` first.
    pub weight_decay: f32,
    pub ln_b1: f32,
    pub ln_b2: f32,
    pub _pad: [u32; 3],
}

/// `ln(b)` of an f32 beta in f64, rounded once to f32 (`-inf` for `b = 0`): the shader's input
/// for the bias corrections of [`OptParams`].
pub fn ln_beta(b: f32) -> f32 {
    (b as f64).ln() as f32
}

impl OptParams {
    pub fn new(
        n: u32,
        lr: f32,
        b1: f32,
        b2: f32,
        eps: f32,
        warmup: u32,
        weight_decay: f32,
    ) -> Self {
        Self {
            n,
            lr,
            b1,
            b2,
            eps,
            warmup,
            weight_decay,
            ln_b1: 0.0,
            ln_b2: 0.0,
            _pad: [0; 3],
        }
        .with_logs()
    }

    /// `self` with `ln_b1`, `ln_b2` recomputed from `b1`, `b2`.
    pub fn with_logs(self) -> Self {
        Self {
            ln_b1: ln_beta(self.b1),
            ln_b2: ln_beta(self.b2),
            ..self
        }
    }
}

/// One tensor of the fused optimizer update (`update_*` in `shaders/optim.wgsl`), a record of its
/// storage-buffer table: workgroups `wg_begin..wg_end` (256 elements each) update its `n`
/// elements. Its parameters start at `param_off` of the params arena, its `parts` partial
/// gradients at `grad_off` of the grads arena (partial `s` of element `j` at
/// `grad_off + s * n + j`; the gradient is their sum in ascending `s` from partial 0), and its
/// optimizer state at `state_off` of the state arena (a multiple of the state width). Offsets are
/// f32 elements from the start of each binding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct UpdateRecord {
    pub wg_begin: u32,
    pub wg_end: u32,
    pub n: u32,
    pub parts: u32,
    pub param_off: u32,
    pub grad_off: u32,
    pub state_off: u32,
    pub _pad: u32,
}

/// Step counters kept on the GPU in a small storage buffer so that a training step needs no host
/// write: the last dispatch of a step increments `epoch_step` and `t`.
/// `t` counts completed optimizer steps over the whole run (the optimizer uses `t + 1`);
/// `n` is the number of samples in this epoch's index list; `batch` its batch size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct StepState {
    pub epoch_step: u32,
    pub t: u32,
    pub n: u32,
    pub batch: u32,
}

impl StepState {
    /// Rows of the current batch that hold real samples.
    pub fn valid(&self) -> u32 {
        let start = self.epoch_step * self.batch;
        self.n.saturating_sub(start).min(self.batch)
    }
}

/// `p * 2^32` rounded down and clamped, so `hash >= threshold` keeps a unit with probability `1 - p`.
pub fn dropout_threshold(p: f32) -> u32 {
    ((p as f64) * 4294967296.0)
        .floor()
        .clamp(0.0, u32::MAX as f64) as u32
}

/// PCG hash (SPEC 4), u32 arithmetic only; identical to `pcg` in the shaders.
#[inline]
pub fn pcg(x: u32) -> u32 {
    let h = x.wrapping_mul(747796405).wrapping_add(2891336453);
    let w = ((h >> ((h >> 28) + 4)) ^ h).wrapping_mul(277803737);
    (w >> 22) ^ w
}

/// Counter-based randomness for dropout and augmentation: `pcg(pcg(pcg(seed) ^ step) ^ i)`.
#[inline]
pub fn dropout_hash(seed: u32, step: u32, i: u32) -> u32 {
    pcg(pcg(pcg(seed) ^ step) ^ i)
}

/// Log-spaced bins of WAME's acceleration factor zeta in the optimizer statistics
/// (`stats_*` in `shaders/optim.wgsl`).
pub const STATS_BINS: usize = 16;

/// One workgroup's optimizer statistics (`stats_*` in `shaders/optim.wgsl`, CPU twins
/// `cpu::optim::stats_*`): integer counts over its (up to) 256 elements and four f32 sums added
/// in the shader's fixed tree order. Summed over a tensor's workgroups on the host, in f64 and
/// ascending workgroup order ([`crate::optim::stats`]).
///
/// WAME fills every field; Adam, RMSprop and SGD only `count`, `step`, `dw2` and `w2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct StatsPartial {
    /// Elements whose new zeta lies in bin `k`: `edges[k] <= zeta < edges[k + 1]` (bin 0 from
    /// below, bin 15 upwards without bound).
    pub bins: [u32; 16],
    /// Elements whose new zeta is at `zeta_min` (resp. `zeta_max`) or beyond.
    pub at_min: u32,
    pub at_max: u32,
    /// Elements whose gradient has the opposite sign of the previous one (zeta was cut).
    pub flips: u32,
    /// Elements counted (256 for full workgroups).
    pub count: u32,
    /// Sum of `zeta / Z` (the multiplier of the `seed` variant), after the update.
    pub mult: f32,
    /// Sum of the step before the rate: `|dw| / lr` without weight decay (WAME
    /// `|m g| / sqrt(theta + eps)`, Adam `|m^ / (sqrt(v^) + eps)|`, RMSprop `|g| / (sqrt(v) +
    /// eps)`, SGD the momentum buffer `|b|`).
    pub step: f32,
    /// Sum of the squared weight change `(w_new - w)^2` and of the squared weight `w^2`.
    pub dw2: f32,
    pub w2: f32,
}
