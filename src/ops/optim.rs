//! Host side of `shaders/optim.wgsl`: one dispatch per parameter tensor for WAME, Adam, RMSprop
//! and SGD with momentum.

use super::{compile, groups_1d, prepare};
use crate::Result;
use crate::gpu::GpuContext;
use crate::gpu::buffers::Dispatch;
use crate::params::{OptParams, WameParams};

const WG: u32 = 256;

/// Fresh WAME state of one element: (zeta, Z, theta, g_prev) = (1, 0, 0, 0).
pub const WAME_INIT: [f32; 4] = [1.0, 0.0, 0.0, 0.0];

pub struct OptimKernels {
    wame: wgpu::ComputePipeline,
    adam: wgpu::ComputePipeline,
    rmsprop: wgpu::ComputePipeline,
    sgd: wgpu::ComputePipeline,
}

impl OptimKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let [wame, adam, rmsprop, sgd] = compile(
            ctx,
            "optim.wgsl",
            include_str!("../../shaders/optim.wgsl"),
            ["wame", "adam", "rmsprop", "sgd"],
        )?;
        Ok(Self {
            wame,
            adam,
            rmsprop,
            sgd,
        })
    }

    /// Updates `w` in place from `g`; `state` is `[n]` of vec4 (zeta, Z, theta, g_prev), start
    /// [`WAME_INIT`]; `step` gives the warm-up its step number.
    pub fn wame(
        &self,
        ctx: &GpuContext,
        p: &WameParams,
        step: &wgpu::Buffer,
        w: &wgpu::Buffer,
        g: &wgpu::Buffer,
        state: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        vec![prepare(
            ctx,
            "wame",
            &self.wame,
            p,
            &[w, g, state, step],
            groups_1d(p.n, WG),
        )]
    }

    /// Adam with `t = StepState.t + 1` read from `step`; `state` is `[n]` of vec2 (m, v), start 0.
    pub fn adam(
        &self,
        ctx: &GpuContext,
        p: &OptParams,
        step: &wgpu::Buffer,
        w: &wgpu::Buffer,
        g: &wgpu::Buffer,
        state: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        vec![prepare(
            ctx,
            "adam",
            &self.adam,
            p,
            &[step, w, g, state],
            groups_1d(p.n, WG),
        )]
    }

    /// RMSprop; `v` is `[n]`, start 0; `step` gives the warm-up its step number.
    pub fn rmsprop(
        &self,
        ctx: &GpuContext,
        p: &OptParams,
        step: &wgpu::Buffer,
        w: &wgpu::Buffer,
        g: &wgpu::Buffer,
        v: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        vec![prepare(
            ctx,
            "rmsprop",
            &self.rmsprop,
            p,
            &[w, g, v, step],
            groups_1d(p.n, WG),
        )]
    }

    /// SGD with momentum, `t = StepState.t + 1` read from `step`; `b` is `[n]` (overwritten
    /// with `g` on the first step).
    pub fn sgd(
        &self,
        ctx: &GpuContext,
        p: &OptParams,
        step: &wgpu::Buffer,
        w: &wgpu::Buffer,
        g: &wgpu::Buffer,
        b: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        vec![prepare(
            ctx,
            "sgd",
            &self.sgd,
            p,
            &[step, w, g, b],
            groups_1d(p.n, WG),
        )]
    }
}
