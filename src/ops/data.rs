//! Host side of `shaders/data.wgsl`: the batch gather from the resident packed-u8 data set and
//! the end-of-step counter advance.

use super::{compile, groups_1d, prepare};
use crate::Result;
use crate::gpu::GpuContext;
use crate::gpu::buffers::{Dispatch, bind};
use crate::params::GatherParams;

const WG: u32 = 256;

/// Packs u8 pixels 4 per u32, pixel `i` in byte `i % 4` of word `i / 4` (little-endian), the
/// layout `gather` reads; the tail word is zero-padded.
pub fn pack_u8(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect()
}

pub struct DataKernels {
    gather: wgpu::ComputePipeline,
    advance: wgpu::ComputePipeline,
}

impl DataKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let [gather, advance] = compile(
            ctx,
            "data.wgsl",
            include_str!("../../shaders/data.wgsl"),
            ["gather", "advance"],
        )?;
        Ok(Self { gather, advance })
    }

    /// Batch `StepState.epoch_step` of `index` -> `x [B,pixels]` (f32 in [0,1]) and `y [B]` (u32);
    /// `images` packed by [`pack_u8`], `labels` one u32 per sample.
    #[allow(clippy::too_many_arguments)]
    pub fn gather(
        &self,
        ctx: &GpuContext,
        p: &GatherParams,
        state: &wgpu::Buffer,
        index: &wgpu::Buffer,
        images: &wgpu::Buffer,
        labels: &wgpu::Buffer,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let groups = groups_1d(p.batch * p.pixels, WG);
        vec![prepare(
            ctx,
            "gather",
            &self.gather,
            p,
            &[state, index, images, labels, x, y],
            groups,
        )]
    }

    /// `epoch_step += 1; t += 1` on `state`: the last dispatch of a training step. It has no
    /// params, so `state` is binding 0.
    pub fn advance(&self, ctx: &GpuContext, state: &wgpu::Buffer) -> Vec<Dispatch> {
        vec![Dispatch {
            label: "advance",
            pipeline: self.advance.clone(),
            bind_group: bind(ctx, &self.advance, &[state]),
            groups: (1, 1, 1),
        }]
    }
}
