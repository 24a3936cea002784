//! Host side of `shaders/act.wgsl`: ReLU and inverted dropout over `n` values.

use super::{compile, groups_1d, prepare};
use crate::Result;
use crate::gpu::GpuContext;
use crate::gpu::buffers::Dispatch;
use crate::params::{ActParams, dropout_threshold};

const WG: u32 = 256;

/// Params for ReLU over `n` values (threshold, scale and seed unused).
pub fn relu_params(n: u32) -> ActParams {
    ActParams {
        n,
        threshold: 0,
        scale: 1.0,
        seed: 0,
    }
}

/// Params for inverted dropout over `n` values with drop probability `p` in [0, 1): keep iff
/// hash >= `p * 2^32`, kept values scaled by `1 / (1 - p)`.
pub fn dropout_params(n: u32, p: f32, seed: u32) -> ActParams {
    ActParams {
        n,
        threshold: dropout_threshold(p),
        scale: 1.0 / (1.0 - p),
        seed,
    }
}

pub struct ActKernels {
    relu_forward: wgpu::ComputePipeline,
    relu_backward: wgpu::ComputePipeline,
    dropout_forward: wgpu::ComputePipeline,
    dropout_backward: wgpu::ComputePipeline,
}

impl ActKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let [
            relu_forward,
            relu_backward,
            dropout_forward,
            dropout_backward,
        ] = compile(
            ctx,
            "act.wgsl",
            include_str!("../../shaders/act.wgsl"),
            [
                "relu_forward",
                "relu_backward",
                "dropout_forward",
                "dropout_backward",
            ],
        )?;
        Ok(Self {
            relu_forward,
            relu_backward,
            dropout_forward,
            dropout_backward,
        })
    }

    /// `y = max(x, 0)`.
    pub fn relu_forward(
        &self,
        ctx: &GpuContext,
        p: &ActParams,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        vec![prepare(
            ctx,
            "relu_forward",
            &self.relu_forward,
            p,
            &[x, y],
            groups_1d(p.n, WG),
        )]
    }

    /// `dx = dy * (y > 0)`, `y` the ReLU output.
    pub fn relu_backward(
        &self,
        ctx: &GpuContext,
        p: &ActParams,
        y: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let groups = groups_1d(p.n, WG);
        vec![prepare(
            ctx,
            "relu_backward",
            &self.relu_backward,
            p,
            &[y, dy, dx],
            groups,
        )]
    }

    /// `y = keep ? x * scale : 0` with the mask of step `StepState.t` (read from `state`).
    pub fn dropout_forward(
        &self,
        ctx: &GpuContext,
        p: &ActParams,
        state: &wgpu::Buffer,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let groups = groups_1d(p.n, WG);
        vec![prepare(
            ctx,
            "dropout_forward",
            &self.dropout_forward,
            p,
            &[state, x, y],
            groups,
        )]
    }

    /// `dx = keep ? dy * scale : 0`, the same mask as the forward of the same step.
    pub fn dropout_backward(
        &self,
        ctx: &GpuContext,
        p: &ActParams,
        state: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let groups = groups_1d(p.n, WG);
        vec![prepare(
            ctx,
            "dropout_backward",
            &self.dropout_backward,
            p,
            &[state, dy, dx],
            groups,
        )]
    }
}
