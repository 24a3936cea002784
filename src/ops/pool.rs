//! Host side of `shaders/pool.wgsl`: 2x2 stride-2 max pool with argmax, and its backward.

use super::{compile, groups_1d, prepare};
use crate::Result;
use crate::gpu::GpuContext;
use crate::gpu::buffers::Dispatch;
use crate::params::PoolParams;

const WG: u32 = 256;

pub struct PoolKernels {
    forward: wgpu::ComputePipeline,
    backward: wgpu::ComputePipeline,
}

impl PoolKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let [forward, backward] = compile(
            ctx,
            "pool.wgsl",
            include_str!("../../shaders/pool.wgsl"),
            ["maxpool_forward", "maxpool_backward"],
        )?;
        Ok(Self { forward, backward })
    }

    /// `x [B,C,H,W] -> y [B,C,OH,OW]`, `argmax` (u32, same shape as `y`).
    pub fn maxpool_forward(
        &self,
        ctx: &GpuContext,
        p: &PoolParams,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        argmax: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let groups = groups_1d(p.y_len() as u32, WG);
        vec![prepare(
            ctx,
            "maxpool_forward",
            &self.forward,
            p,
            &[x, y, argmax],
            groups,
        )]
    }

    /// `dy`, `argmax` (both `[B,C,OH,OW]`), `x` (post-ReLU input of the pool) `-> dx [B,C,H,W]`,
    /// every element written.
    pub fn maxpool_backward(
        &self,
        ctx: &GpuContext,
        p: &PoolParams,
        dy: &wgpu::Buffer,
        argmax: &wgpu::Buffer,
        x: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let groups = groups_1d(p.x_len() as u32, WG);
        vec![prepare(
            ctx,
            "maxpool_backward",
            &self.backward,
            p,
            &[dy, argmax, x, dx],
            groups,
        )]
    }
}
