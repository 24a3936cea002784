//! Host side of `shaders/loss.wgsl`: softmax cross-entropy forward (metrics accumulated on the
//! GPU) and backward.

use super::{compile, groups_1d, prepare};
use crate::Result;
use crate::gpu::GpuContext;
use crate::gpu::buffers::Dispatch;
use crate::params::LossParams;

const WG: u32 = 256;

/// Size of the metrics buffer: `array<u32, 4>` = (loss sum as f32 bits, correct, seen, unused).
pub const METRICS_BYTES: u64 = 16;

pub struct LossKernels {
    forward: wgpu::ComputePipeline,
    backward: wgpu::ComputePipeline,
}

impl LossKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let [forward, backward] = compile(
            ctx,
            "loss.wgsl",
            include_str!("../../shaders/loss.wgsl"),
            ["softmax_xent_forward", "softmax_xent_backward"],
        )?;
        Ok(Self { forward, backward })
    }

    /// `logits [B,classes]`, `labels [B]` (u32) `-> probs [B,classes]`, and adds this batch's
    /// loss sum, correct count and valid rows (valid from `state`) to `metrics`. One workgroup.
    #[allow(clippy::too_many_arguments)]
    pub fn softmax_xent_forward(
        &self,
        ctx: &GpuContext,
        p: &LossParams,
        state: &wgpu::Buffer,
        logits: &wgpu::Buffer,
        labels: &wgpu::Buffer,
        probs: &wgpu::Buffer,
        metrics: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        vec![prepare(
            ctx,
            "softmax_xent_forward",
            &self.forward,
            p,
            &[state, logits, labels, probs, metrics],
            (1, 1, 1),
        )]
    }

    /// `probs`, `labels` `-> dlogits = (probs - onehot) / valid` on valid rows, 0 elsewhere.
    pub fn softmax_xent_backward(
        &self,
        ctx: &GpuContext,
        p: &LossParams,
        state: &wgpu::Buffer,
        probs: &wgpu::Buffer,
        labels: &wgpu::Buffer,
        dlogits: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let groups = groups_1d(p.batch * p.classes, WG);
        vec![prepare(
            ctx,
            "softmax_xent_backward",
            &self.backward,
            p,
            &[state, probs, labels, dlogits],
            groups,
        )]
    }
}
