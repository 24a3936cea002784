//! Host side of `shaders/conv_grad.wgsl`: the conv backward whose loaders apply the pool, ReLU
//! and dropout backward, so no full-resolution conv-output gradient is written.
//!
//! The shader is specialised per layer shape and tile variant through `override` constants, so
//! pipelines are compiled on first use of a (entry point, tile, shape) and kept. For a layer,
//! [`ConvGradKernels::backward_weight_partials`] is one dispatch writing the split-K weight and
//! bias partials (what the fused optimizer update will sum), [`ConvGradKernels::backward_weight`]
//! adds the fixed-order `sum_partials` passes, and [`ConvGradKernels::backward_input`] is one
//! dispatch. [`ConvGradKernels::backward`] is both in one dispatch (weight and bias partials
//! plus dx, workgroups taking roles by id), for a layer whose input gradient is needed too.

use crate::gpu::GpuContext;
use crate::gpu::buffers::{self, Dispatch, View, bind_views_at, uniform};
use crate::gpu::tile::Tile;
use crate::ops::prepare_views;
use crate::ops::reduce::ReduceKernels;
use crate::params::{ConvGradParams, ReduceParams, StepState};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;

const WGSL: &str = include_str!("../../shaders/conv_grad.wgsl");

/// Storage buffers `backward` binds (state, argmax, q, dd, x, weight and bias partials, w, dx):
/// more than the 8 a device must have (gpu::context), so `backward` checks it.
pub const BACKWARD_STORAGE_BINDINGS: u32 = 9;

/// Bindings of backward_input's `w` and `dx` in the shader (after backward_weight's 5..=7, so
/// `backward` can bind both sets).
const INPUT_BINDINGS: [u32; 2] = [8, 9];

/// Largest kernel side: the shader's tap-row division by a reciprocal is exact up to here.
pub const MAX_K: u32 = 32;

/// What a pipeline is specialised for: entry point, tile, and the shape overrides
/// `(c_in, h, w, c_out, k)` (the rest derive from them).
type Key = (&'static str, Tile, [u32; 5]);

/// The conv_grad pipelines (compiled per shape and tile on first use) and the reduction pass.
pub struct ConvGradKernels {
    module: wgpu::ShaderModule,
    pipelines: Mutex<HashMap<Key, wgpu::ComputePipeline>>,
    reduce: ReduceKernels,
    /// Bound as the step state when a call has no dropout (the shader still declares it).
    no_state: wgpu::Buffer,
}

/// Split-K partials of one layer's weight and bias gradients: partial `s` of weight element `j`
/// at `s * w_len + j` of `dw`, of bias element `o` at `s * c_out + o` of `db`.
pub fn partial_lens(p: &ConvGradParams) -> (usize, usize) {
    let parts = p.parts as usize;
    (parts * p.conv().w_len(), parts * p.c_out as usize)
}

/// Whether the shader can run `tile` on `ctx`: both sides in {8, 16, 32} invocations (the
/// loaders are unrolled for 1, 2 or 4 rounds) and within the device's limits.
pub fn tile_ok(ctx: &GpuContext, tile: Tile) -> bool {
    [8, 16, 32].contains(&tile.tm) && [8, 16, 32].contains(&tile.tn) && tile.fits(&ctx.limits)
}

fn check(
    ctx: &GpuContext,
    p: &ConvGradParams,
    tile: Tile,
    state: Option<&wgpu::Buffer>,
) -> Result<()> {
    let bad = |what: String| {
        Err(Error::Gpu(format!(
            "{}: conv_grad: {what}",
            ctx.adapter.name
        )))
    };
    if !tile_ok(ctx, tile) {
        return bad(format!("tile {} is not supported here", tile.name()));
    }
    if p.k == 0 || p.k > MAX_K || p.k > p.h || p.k > p.w || p.batch == 0 {
        return bad(format!("unsupported shape {p:?}"));
    }
    if p.dropout != 0 && state.is_none() {
        return bad("dropout needs the step state buffer".into());
    }
    let c = p.conv();
    if p.oh != c.oh || p.ow != c.ow || p.ph != p.oh / 2 || p.pw != p.ow / 2 {
        return bad(format!("inconsistent dims in {p:?}"));
    }
    let q_len = p.batch * p.oh * p.ow;
    if p.chunk == 0 || p.parts != q_len.div_ceil(p.chunk).max(1) {
        return bad(format!("inconsistent chunking in {p:?}"));
    }
    Ok(())
}

/// backward_weight's workgroups: m tiles x n tiles x split-K parts.
fn weight_tiles(p: &ConvGradParams, tile: Tile) -> u32 {
    (p.c_in * p.k * p.k).div_ceil(tile.bm()) * p.c_out.div_ceil(tile.bn()) * p.parts
}

/// backward_input's workgroups: (pixel, sample) tiles x input-channel tiles.
fn input_tiles(p: &ConvGradParams, tile: Tile) -> u32 {
    (p.h * p.w * p.batch).div_ceil(tile.bm()) * p.c_in.div_ceil(tile.bn())
}

/// A dispatch with the uniform `p` at binding 0 and `views` at their bindings.
fn dispatch_at(
    ctx: &GpuContext,
    label: &'static str,
    pipe: &wgpu::ComputePipeline,
    p: &ConvGradParams,
    views: &[(u32, View)],
    workgroups: u32,
) -> Dispatch {
    let u = uniform(ctx, label, p);
    let mut all = vec![(0, View::whole(&u))];
    all.extend_from_slice(views);
    Dispatch {
        label,
        pipeline: pipe.clone(),
        bind_group: bind_views_at(ctx, pipe, &all),
        groups: groups(workgroups),
    }
}

fn groups(workgroups: u32) -> (u32, u32, u32) {
    let (x, y) = buffers::split_dispatch(workgroups);
    (x, y, 1)
}

impl ConvGradKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let module = buffers::shader_checked(ctx, "conv_grad.wgsl", WGSL)?;
        Ok(Self {
            module,
            pipelines: Mutex::new(HashMap::new()),
            reduce: ReduceKernels::new(ctx)?,
            no_state: buffers::storage_init(ctx, "conv_grad no state", &[StepState::default()]),
        })
    }

    fn pipeline(
        &self,
        ctx: &GpuContext,
        entry: &'static str,
        tile: Tile,
        p: &ConvGradParams,
    ) -> Result<wgpu::ComputePipeline> {
        let key = (entry, tile, [p.c_in, p.h, p.w, p.c_out, p.k]);
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| Error::Runtime("conv_grad pipeline cache poisoned".into()))?;
        if let Some(pipe) = cache.get(&key) {
            return Ok(pipe.clone());
        }
        let mut constants: Vec<(&str, f64)> = tile.constants().to_vec();
        for (name, v) in [
            ("C_IN", p.c_in),
            ("H", p.h),
            ("W", p.w),
            ("C_OUT", p.c_out),
            ("K", p.k),
            ("OH", p.oh),
            ("OW", p.ow),
            ("PH", p.ph),
            ("PW", p.pw),
        ] {
            constants.push((name, v as f64));
        }
        let pipe = buffers::pipeline_checked(ctx, &self.module, entry, &constants)?;
        cache.insert(key, pipe.clone());
        Ok(pipe)
    }

    /// One dispatch: `dw_part` (`parts` x `[C_out, C_in, K, K]`) and `db_part` (`parts` x
    /// `[C_out]`) from the conv input `x`, the pooled map `q`, its `argmax` and the gradient `dd`
    /// at the pool output (before dropout's backward when `p.dropout != 0`; `state` then holds
    /// the step, else it may be `None`). Chunk `s` covers positions `s*chunk..` of `B*OH*OW`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_weight_partials(
        &self,
        ctx: &GpuContext,
        p: &ConvGradParams,
        tile: Tile,
        state: Option<&wgpu::Buffer>,
        argmax: View,
        q: View,
        dd: View,
        x: View,
        dw_part: View,
        db_part: View,
    ) -> Result<Vec<Dispatch>> {
        check(ctx, p, tile, state)?;
        let pipe = self.pipeline(ctx, "backward_weight", tile, p)?;
        let state = View::whole(state.unwrap_or(&self.no_state));
        Ok(vec![prepare_views(
            ctx,
            "conv_grad.backward_weight",
            &pipe,
            p,
            &[state, argmax, q, dd, x, dw_part, db_part],
            groups(weight_tiles(p, tile)),
        )])
    }

    /// `dw` and `db` (overwritten): [`Self::backward_weight_partials`] into scratch buffers owned
    /// by the bind groups, then `sum_partials` for each in ascending part order. With a single
    /// part the GEMM writes `dw` and `db` itself (one dispatch).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_weight(
        &self,
        ctx: &GpuContext,
        p: &ConvGradParams,
        tile: Tile,
        state: Option<&wgpu::Buffer>,
        argmax: &wgpu::Buffer,
        q: &wgpu::Buffer,
        dd: &wgpu::Buffer,
        x: &wgpu::Buffer,
        dw: &wgpu::Buffer,
        db: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let w = View::whole;
        if p.parts == 1 {
            return self.backward_weight_partials(
                ctx,
                p,
                tile,
                state,
                w(argmax),
                w(q),
                w(dd),
                w(x),
                w(dw),
                w(db),
            );
        }
        let (wl, bl) = partial_lens(p);
        let wpart = buffers::storage(ctx, "conv_grad dw partials", wl as u64 * 4);
        let bpart = buffers::storage(ctx, "conv_grad db partials", bl as u64 * 4);
        let mut ds = self.backward_weight_partials(
            ctx,
            p,
            tile,
            state,
            w(argmax),
            w(q),
            w(dd),
            w(x),
            w(&wpart),
            w(&bpart),
        )?;
        let sum = |n: usize| ReduceParams {
            n: n as u32,
            parts: p.parts,
            _pad: [0; 2],
        };
        ds.extend(
            self.reduce
                .sum_partials(ctx, &sum(p.conv().w_len()), &wpart, dw),
        );
        ds.extend(
            self.reduce
                .sum_partials(ctx, &sum(p.c_out as usize), &bpart, db),
        );
        Ok(ds)
    }

    /// One dispatch: `dx [B, C_in, H, W]` (every element written) from the weights `w` and the
    /// fused conv-output gradient of (`argmax`, `q`, `dd`, dropout as in
    /// [`Self::backward_weight_partials`]).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_input(
        &self,
        ctx: &GpuContext,
        p: &ConvGradParams,
        tile: Tile,
        state: Option<&wgpu::Buffer>,
        argmax: View,
        q: View,
        dd: View,
        w: View,
        dx: View,
    ) -> Result<Vec<Dispatch>> {
        check(ctx, p, tile, state)?;
        let pipe = self.pipeline(ctx, "backward_input", tile, p)?;
        let state = View::whole(state.unwrap_or(&self.no_state));
        let [wi, dxi] = INPUT_BINDINGS;
        Ok(vec![dispatch_at(
            ctx,
            "conv_grad.backward_input",
            &pipe,
            p,
            &[(1, state), (2, argmax), (3, q), (4, dd), (wi, w), (dxi, dx)],
            input_tiles(p, tile),
        )])
    }

    /// One dispatch: what [`Self::backward_weight_partials`] writes (`dw_part`, `db_part` from
    /// `x`) and what [`Self::backward_input`] writes (`dx` from `w`), bit for bit, from the same
    /// (`argmax`, `q`, `dd`, dropout). Needs [`BACKWARD_STORAGE_BINDINGS`] storage buffers per
    /// shader stage; a device with fewer gets an error.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        ctx: &GpuContext,
        p: &ConvGradParams,
        tile: Tile,
        state: Option<&wgpu::Buffer>,
        argmax: View,
        q: View,
        dd: View,
        x: View,
        w: View,
        dw_part: View,
        db_part: View,
        dx: View,
    ) -> Result<Vec<Dispatch>> {
        let have = ctx.device.limits().max_storage_buffers_per_shader_stage;
        if have < BACKWARD_STORAGE_BINDINGS {
            return Err(Error::Gpu(format!(
                "{}: conv_grad.backward needs {BACKWARD_STORAGE_BINDINGS} storage buffers per \
                 shader stage, the device has {have}",
                ctx.adapter.name
            )));
        }
        check(ctx, p, tile, state)?;
        let pipe = self.pipeline(ctx, "backward", tile, p)?;
        let state = View::whole(state.unwrap_or(&self.no_state));
        let [wi, dxi] = INPUT_BINDINGS;
        Ok(vec![dispatch_at(
            ctx,
            "conv_grad.backward",
            &pipe,
            p,
            &[
                (1, state),
                (2, argmax),
                (3, q),
                (4, dd),
                (5, x),
                (6, dw_part),
                (7, db_part),
                (wi, w),
                (dxi, dx),
            ],
            weight_tiles(p, tile) + input_tiles(p, tile),
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{ActParams, ConvParams};

    /// The fused kernel's split-K chunking is conv.backward_weight's, so its partials line up
    /// with what the unfused path (and the fused update's records) expect.
    #[test]
    fn chunking_and_dims_follow_the_conv() {
        let drop = ActParams {
            n: 0,
            threshold: 7,
            scale: 2.0,
            seed: 3,
        };
        for &s in crate::parity::CONV_GRAD_SHAPES {
            let c = ConvParams::new(s.0, s.1, s.2, s.3, s.4, s.5, true);
            let p = ConvGradParams::new(&c, s.6.then_some(&drop));
            assert_eq!(p.conv(), c);
            assert_eq!(p.parts, crate::ops::conv::weight_parts(&c), "{s:?}");
            assert_eq!((p.ph, p.pw), (c.oh / 2, c.ow / 2));
            assert_eq!(p.pool().y_len(), p.pooled_len());
            assert_eq!(partial_lens(&p).0, p.parts as usize * c.w_len());
            assert_eq!(p.drop().is_some(), s.6);
            if let Some(d) = p.drop() {
                assert_eq!((d.threshold, d.scale, d.seed), (7, 2.0, 3));
                assert_eq!(d.n as usize, p.pooled_len());
            }
        }
    }
}
