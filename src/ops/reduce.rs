//! Host side of `shaders/reduce.wgsl`: the fixed-order sum of split-K partials, shared by the
//! conv and conv_grad families (CPU twin: src/cpu/reduce.rs).

use super::compile;
use crate::Result;
use crate::gpu::GpuContext;
use crate::gpu::buffers::{self, Dispatch, View};
use crate::params::ReduceParams;

/// Workgroup width of `sum_partials`.
const WG: u32 = 256;

pub struct ReduceKernels {
    sum_partials: wgpu::ComputePipeline,
}

impl ReduceKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let [sum_partials] = compile(
            ctx,
            "reduce.wgsl",
            include_str!("../../shaders/reduce.wgsl"),
            ["sum_partials"],
        )?;
        Ok(Self { sum_partials })
    }

    /// `out[i] = sum over s in 0..parts of partials[s*n + i]`, in increasing `s`: one invocation
    /// per output.
    pub fn sum_partials<'a>(
        &self,
        ctx: &GpuContext,
        rp: &ReduceParams,
        partials: &wgpu::Buffer,
        out: impl Into<View<'a>>,
    ) -> Vec<Dispatch> {
        let u = buffers::uniform(ctx, "reduce.sum_partials params", rp);
        let (x, y) = buffers::split_dispatch(rp.n.div_ceil(WG));
        vec![Dispatch {
            label: "reduce.sum_partials",
            pipeline: self.sum_partials.clone(),
            bind_group: buffers::bind_views(
                ctx,
                &self.sum_partials,
                &[View::whole(&u), View::whole(partials), out.into()],
            ),
            groups: (x, y, 1),
        }]
    }
}
