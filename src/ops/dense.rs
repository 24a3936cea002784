//! Host side of `shaders/dense.wgsl`: fully connected forward and the three backward GEMMs.

use super::{compile, prepare_views};
use crate::Result;
use crate::gpu::GpuContext;
use crate::gpu::buffers::{Dispatch, View, split_dispatch};
use crate::params::DenseParams;

/// Output tile edge of the GEMM kernels (a 32x32 tile of C per 8x8 workgroup).
const TILE: u32 = 32;

pub struct DenseKernels {
    forward: wgpu::ComputePipeline,
    backward_input: wgpu::ComputePipeline,
    backward_weight: wgpu::ComputePipeline,
    backward_bias: wgpu::ComputePipeline,
    backward_fused: wgpu::ComputePipeline,
}

fn tiles(m: u32, n: u32) -> (u32, u32, u32) {
    (n.div_ceil(TILE).max(1), m.div_ceil(TILE).max(1), 1)
}

impl DenseKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let [
            forward,
            backward_input,
            backward_weight,
            backward_bias,
            backward_fused,
        ] = compile(
            ctx,
            "dense.wgsl",
            include_str!("../../shaders/dense.wgsl"),
            [
                "forward",
                "backward_input",
                "backward_weight",
                "backward_bias",
                "backward_fused",
            ],
        )?;
        Ok(Self {
            forward,
            backward_input,
            backward_weight,
            backward_bias,
            backward_fused,
        })
    }

    /// `x [B,In]`, `w [Out,In]`, `bias [Out]` `-> y [B,Out]` (+ReLU when `p.relu != 0`).
    pub fn forward<'a>(
        &self,
        ctx: &GpuContext,
        p: &DenseParams,
        x: impl Into<View<'a>>,
        w: impl Into<View<'a>>,
        bias: impl Into<View<'a>>,
        y: impl Into<View<'a>>,
    ) -> Vec<Dispatch> {
        let groups = tiles(p.batch, p.n_out);
        vec![prepare_views(
            ctx,
            "dense_forward",
            &self.forward,
            p,
            &[x.into(), w.into(), bias.into(), y.into()],
            groups,
        )]
    }

    /// `dy [B,Out]`, `w [Out,In]` `-> dx [B,In]`.
    pub fn backward_input<'a>(
        &self,
        ctx: &GpuContext,
        p: &DenseParams,
        dy: impl Into<View<'a>>,
        w: impl Into<View<'a>>,
        dx: impl Into<View<'a>>,
    ) -> Vec<Dispatch> {
        let groups = tiles(p.batch, p.n_in);
        vec![prepare_views(
            ctx,
            "dense_backward_input",
            &self.backward_input,
            p,
            &[dy.into(), w.into(), dx.into()],
            groups,
        )]
    }

    /// `x [B,In]`, `dy [B,Out]` `-> dw [Out,In]`, summed over the batch in ascending order.
    pub fn backward_weight<'a>(
        &self,
        ctx: &GpuContext,
        p: &DenseParams,
        x: impl Into<View<'a>>,
        dy: impl Into<View<'a>>,
        dw: impl Into<View<'a>>,
    ) -> Vec<Dispatch> {
        let groups = tiles(p.n_out, p.n_in);
        vec![prepare_views(
            ctx,
            "dense_backward_weight",
            &self.backward_weight,
            p,
            &[x.into(), dy.into(), dw.into()],
            groups,
        )]
    }

    /// `dy [B,Out]` `-> db [Out]`, one workgroup per output.
    pub fn backward_bias<'a>(
        &self,
        ctx: &GpuContext,
        p: &DenseParams,
        dy: impl Into<View<'a>>,
        db: impl Into<View<'a>>,
    ) -> Vec<Dispatch> {
        let (gx, gy) = split_dispatch(p.n_out);
        vec![prepare_views(
            ctx,
            "dense_backward_bias",
            &self.backward_bias,
            p,
            &[dy.into(), db.into()],
            (gx, gy, 1),
        )]
    }

    /// `x [B,In]`, `dy [B,Out]`, `w [Out,In]` `-> dw [Out,In]`, `db [Out]`, `dx [B,In]`: the
    /// three backward kernels above as workgroup roles of one dispatch, each value computed in
    /// the same order as by its unfused kernel.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_fused<'a>(
        &self,
        ctx: &GpuContext,
        p: &DenseParams,
        x: impl Into<View<'a>>,
        dy: impl Into<View<'a>>,
        w: impl Into<View<'a>>,
        dw: impl Into<View<'a>>,
        db: impl Into<View<'a>>,
        dx: impl Into<View<'a>>,
    ) -> Vec<Dispatch> {
        let (gx, gy) = split_dispatch(fused_workgroups(p));
        vec![prepare_views(
            ctx,
            "dense_backward_fused",
            &self.backward_fused,
            p,
            &[
                x.into(),
                dy.into(),
                w.into(),
                dw.into(),
                db.into(),
                dx.into(),
            ],
            (gx, gy, 1),
        )]
    }
}

/// Workgroups of `backward_fused`: dx tiles, dw tiles, then one per bias output.
pub fn fused_workgroups(p: &DenseParams) -> u32 {
    let nx = p.n_in.div_ceil(TILE);
    nx * p.batch.div_ceil(TILE) + nx * p.n_out.div_ceil(TILE) + p.n_out
}
