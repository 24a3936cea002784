//! Host side of `shaders/dense.wgsl`: fully connected forward and the backward GEMMs.
//!
//! The shader is specialised per layer shape (`IN`, `OUT`) and tile variant (`TM`, `TN`, see
//! [`Tile`]) through `override` constants, so pipelines are compiled on first use of an
//! (entry point, tile, shape) and kept. [`DenseKernels::forward`] and
//! [`DenseKernels::backward_fused`] (the two the training step runs) take a tile; the unfused
//! backward kernels run with [`Tile::DEFAULT`]. Every tile gives the same bits.

use crate::gpu::GpuContext;
use crate::gpu::buffers::{self, Dispatch, View, bind_views_at, split_dispatch, uniform};
use crate::gpu::tile::Tile;
use crate::params::DenseParams;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;

const WGSL: &str = include_str!("../../shaders/dense.wgsl");

/// Tile of the unfused backward GEMMs (backward_input, backward_weight).
pub const UNFUSED_TILE: Tile = Tile::DEFAULT;

/// Bindings of the backward kernels' tensors (shared by the fused and unfused entry points).
const X: u32 = 1;
const DY: u32 = 2;
const W: u32 = 3;
const DW: u32 = 4;
const DB: u32 = 5;
const DX: u32 = 6;

/// What a pipeline is specialised for: entry point, tile, `(n_in, n_out)`.
type Key = (&'static str, Tile, [u32; 2]);

pub struct DenseKernels {
    module: wgpu::ShaderModule,
    pipelines: Mutex<HashMap<Key, wgpu::ComputePipeline>>,
}

/// Whether the shader can run `tile` on `ctx`: both sides powers of two dividing 128 (whole
/// loader rounds), at least 64 invocations (the fused bias role), and within the device's limits.
pub fn tile_ok(ctx: &GpuContext, tile: Tile) -> bool {
    tile_supported(tile) && tile.fits(&ctx.limits)
}

/// The kernel-side half of [`tile_ok`] (no device limits).
pub fn tile_supported(tile: Tile) -> bool {
    let side = |s: u32| s > 0 && 128 % s == 0;
    side(tile.tm) && side(tile.tn) && tile.invocations() >= 64
}

fn check(ctx: &GpuContext, p: &DenseParams, tile: Tile) -> Result<()> {
    if !tile_ok(ctx, tile) {
        return Err(Error::Gpu(format!(
            "{}: dense: tile {} is not supported here",
            ctx.adapter.name,
            tile.name()
        )));
    }
    if p.n_in == 0 || p.n_out == 0 {
        return Err(Error::Gpu(format!(
            "{}: dense: unsupported shape {p:?}",
            ctx.adapter.name
        )));
    }
    Ok(())
}

fn tiles(m: u32, n: u32, tile: Tile) -> (u32, u32, u32) {
    (
        n.div_ceil(tile.bn()).max(1),
        m.div_ceil(tile.bm()).max(1),
        1,
    )
}

impl DenseKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            module: buffers::shader_checked(ctx, "dense.wgsl", WGSL)?,
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    fn pipeline(
        &self,
        ctx: &GpuContext,
        entry: &'static str,
        tile: Tile,
        p: &DenseParams,
    ) -> Result<wgpu::ComputePipeline> {
        check(ctx, p, tile)?;
        let key = (entry, tile, [p.n_in, p.n_out]);
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| Error::Runtime("dense pipeline cache poisoned".into()))?;
        if let Some(pipe) = cache.get(&key) {
            return Ok(pipe.clone());
        }
        let mut constants: Vec<(&str, f64)> = tile.constants().to_vec();
        constants.push(("IN", p.n_in as f64));
        constants.push(("OUT", p.n_out as f64));
        let pipe = buffers::pipeline_checked(ctx, &self.module, entry, &constants)?;
        cache.insert(key, pipe.clone());
        Ok(pipe)
    }

    /// A dispatch with the uniform `p` at binding 0 and `views` at their bindings.
    fn dispatch(
        ctx: &GpuContext,
        label: &'static str,
        pipe: wgpu::ComputePipeline,
        p: &DenseParams,
        views: &[(u32, View)],
        groups: (u32, u32, u32),
    ) -> Vec<Dispatch> {
        let u = uniform(ctx, label, p);
        let mut all = vec![(0, View::whole(&u))];
        all.extend_from_slice(views);
        vec![Dispatch {
            label,
            bind_group: bind_views_at(ctx, &pipe, &all),
            pipeline: pipe,
            groups,
        }]
    }

    /// `x [B,In]`, `w [Out,In]`, `bias [Out]` `-> y [B,Out]` (+ReLU when `p.relu != 0`), with
    /// `tile`. One dispatch.
    #[allow(clippy::too_many_arguments)]
    pub fn forward<'a>(
        &self,
        ctx: &GpuContext,
        p: &DenseParams,
        tile: Tile,
        x: impl Into<View<'a>>,
        w: impl Into<View<'a>>,
        bias: impl Into<View<'a>>,
        y: impl Into<View<'a>>,
    ) -> Result<Vec<Dispatch>> {
        let pipe = self.pipeline(ctx, "forward", tile, p)?;
        Ok(Self::dispatch(
            ctx,
            "dense_forward",
            pipe,
            p,
            &[
                (1, x.into()),
                (2, w.into()),
                (3, bias.into()),
                (4, y.into()),
            ],
            tiles(p.batch, p.n_out, tile),
        ))
    }

    /// `dy [B,Out]`, `w [Out,In]` `-> dx [B,In]` ([`UNFUSED_TILE`]).
    pub fn backward_input<'a>(
        &self,
        ctx: &GpuContext,
        p: &DenseParams,
        dy: impl Into<View<'a>>,
        w: impl Into<View<'a>>,
        dx: impl Into<View<'a>>,
    ) -> Result<Vec<Dispatch>> {
        let pipe = self.pipeline(ctx, "backward_input", UNFUSED_TILE, p)?;
        Ok(Self::dispatch(
            ctx,
            "dense_backward_input",
            pipe,
            p,
            &[(DY, dy.into()), (W, w.into()), (DX, dx.into())],
            tiles(p.batch, p.n_in, UNFUSED_TILE),
        ))
    }

    /// `x [B,In]`, `dy [B,Out]` `-> dw [Out,In]`, summed over the batch in ascending order
    /// ([`UNFUSED_TILE`]).
    pub fn backward_weight<'a>(
        &self,
        ctx: &GpuContext,
        p: &DenseParams,
        x: impl Into<View<'a>>,
        dy: impl Into<View<'a>>,
        dw: impl Into<View<'a>>,
    ) -> Result<Vec<Dispatch>> {
        let pipe = self.pipeline(ctx, "backward_weight", UNFUSED_TILE, p)?;
        Ok(Self::dispatch(
            ctx,
            "dense_backward_weight",
            pipe,
            p,
            &[(X, x.into()), (DY, dy.into()), (DW, dw.into())],
            tiles(p.n_out, p.n_in, UNFUSED_TILE),
        ))
    }

    /// `dy [B,Out]` `-> db [Out]`, one workgroup of 64 per output.
    pub fn backward_bias<'a>(
        &self,
        ctx: &GpuContext,
        p: &DenseParams,
        dy: impl Into<View<'a>>,
        db: impl Into<View<'a>>,
    ) -> Result<Vec<Dispatch>> {
        let pipe = self.pipeline(ctx, "backward_bias", UNFUSED_TILE, p)?;
        let (gx, gy) = split_dispatch(p.n_out);
        Ok(Self::dispatch(
            ctx,
            "dense_backward_bias",
            pipe,
            p,
            &[(DY, dy.into()), (DB, db.into())],
            (gx, gy, 1),
        ))
    }

    /// `x [B,In]`, `dy [B,Out]`, `w [Out,In]` `-> dw [Out,In]`, `db [Out]`, `dx [B,In]`: the
    /// three backward kernels above as workgroup roles of one dispatch with `tile`, each value
    /// computed in the same order as by its unfused kernel (so the same bits with any tile).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_fused<'a>(
        &self,
        ctx: &GpuContext,
        p: &DenseParams,
        tile: Tile,
        x: impl Into<View<'a>>,
        dy: impl Into<View<'a>>,
        w: impl Into<View<'a>>,
        dw: impl Into<View<'a>>,
        db: impl Into<View<'a>>,
        dx: impl Into<View<'a>>,
    ) -> Result<Vec<Dispatch>> {
        let pipe = self.pipeline(ctx, "backward_fused", tile, p)?;
        let (gx, gy) = split_dispatch(fused_workgroups(p, tile));
        Ok(Self::dispatch(
            ctx,
            "dense_backward_fused",
            pipe,
            p,
            &[
                (X, x.into()),
                (DY, dy.into()),
                (W, w.into()),
                (DW, dw.into()),
                (DB, db.into()),
                (DX, dx.into()),
            ],
            (gx, gy, 1),
        ))
    }
}

/// Workgroups of `backward_fused` with `tile`: dx tiles, dw tiles, then one per bias output.
pub fn fused_workgroups(p: &DenseParams, tile: Tile) -> u32 {
    let nx = p.n_in.div_ceil(tile.bn());
    nx * p.batch.div_ceil(tile.bm()) + nx * p.n_out.div_ceil(tile.bm()) + p.n_out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candidates_are_supported() {
        for t in Tile::CANDIDATES {
            assert!(tile_supported(t), "{}", t.name());
        }
        assert!(!tile_supported(Tile { tm: 4, tn: 8 }), "32 invocations");
        assert!(
            !tile_supported(Tile { tm: 12, tn: 16 }),
            "12 does not divide 128"
        );
    }

    #[test]
    fn fused_workgroups_count_every_role() {
        let p = DenseParams::new(37, 70, 19, false);
        // 32x32: nx = 3, my = 2, mo = 1.
        assert_eq!(fused_workgroups(&p, Tile { tm: 8, tn: 8 }), 3 * 2 + 3 + 19);
        // 64x64: nx = 2, my = 1, mo = 1.
        assert_eq!(fused_workgroups(&p, Tile::DEFAULT), 2 + 2 + 19);
    }
}
