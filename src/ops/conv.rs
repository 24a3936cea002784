//! Conv family on the GPU: the pipelines of `shaders/conv.wgsl` (and the split-K reduction of
//! `shaders/reduce.wgsl`) and the prepared dispatches of each entry point.
//!
//! Forward, backward_input and backward_weight are implicit GEMMs over 64 x 64 output tiles (see
//! the shader header). backward_weight is two dispatches: per-chunk partials, then a fixed-order
//! sum of the chunks into `dw` (one dispatch when the shape needs a single chunk).
//! forward_relu_pool fuses bias, ReLU, the 2x2 max-pool and (optionally) dropout into the forward
//! GEMM's epilogue; its pipelines are specialised per tile, layer shape and dropout and built on
//! first use.

use crate::gpu::GpuContext;
use crate::gpu::buffers::{self, Dispatch, View};
use crate::gpu::tile::{BK, Tile};
use crate::ops::reduce::ReduceKernels;
use crate::params::{ActParams, ConvParams, ReduceParams, StepState};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;

const CONV_WGSL: &str = include_str!("../../shaders/conv.wgsl");

/// GEMM tile of the conv kernels (`BM`, `BN` in conv.wgsl).
const TILE: u32 = 64;
/// Twins of `WCHUNK_MIN` and `WCHUNK_MAX_PARTS` in conv.wgsl.
const WCHUNK_MIN: u32 = 512;
const WCHUNK_MAX_PARTS: u32 = 256;

/// Positions (`batch*oh*ow`) per backward_weight chunk: at least 512 so each workgroup has real
/// work, at most 256 chunks so the partials stay small, a multiple of 64 so chunks hold whole K
/// steps. Twin of `weight_chunk` in conv.wgsl: the partials layout depends on both agreeing.
pub fn weight_chunk(q_len: u32) -> u32 {
    q_len
        .div_ceil(WCHUNK_MAX_PARTS)
        .max(WCHUNK_MIN)
        .div_ceil(64)
        * 64
}

/// Number of backward_weight chunks (partial `dw` buffers) for `p`.
pub fn weight_parts(p: &ConvParams) -> u32 {
    let q_len = p.batch * p.oh * p.ow;
    q_len.div_ceil(weight_chunk(q_len)).max(1)
}

/// Multiply-adds times two of the forward GEMM, `2 * (B*OH*OW) * C_out * (C_in*K*K)`; the
/// backward_input and backward_weight GEMMs do the same useful work.
pub fn conv_flops(p: &ConvParams) -> f64 {
    2.0 * (p.batch as f64 * p.oh as f64 * p.ow as f64)
        * p.c_out as f64
        * (p.c_in as f64 * p.k as f64 * p.k as f64)
}

fn groups(workgroups: u32) -> (u32, u32, u32) {
    let (x, y) = buffers::split_dispatch(workgroups);
    (x, y, 1)
}

/// What a `forward_relu_pool` pipeline is specialised for: tile, layer shape
/// `[c_in, h, w, c_out, k]`, dropout on/off.
type ReluPoolKey = (Tile, [u32; 5], bool);

/// Dropout fused into [`ConvKernels::forward_relu_pool`]: the mask of `act.dropout_forward` over
/// the pooled map (`params.seed`, `params.threshold`, `params.scale`; the step is `state.t`, a
/// [`StepState`] buffer), written to `d`.
#[derive(Clone, Copy, Debug)]
pub struct PoolDropout<'a> {
    pub params: &'a ActParams,
    pub state: View<'a>,
    pub d: View<'a>,
}

/// Whether `forward_relu_pool`'s loaders split evenly for `tile`: `BK` a multiple of `tm` and
/// `tn`, `tm * tn` a multiple of `BK` (every [`Tile::CANDIDATES`] entry qualifies).
pub fn relu_pool_tile_ok(tile: Tile) -> bool {
    tile.tm > 0
        && tile.tn > 0
        && BK.is_multiple_of(tile.tm)
        && BK.is_multiple_of(tile.tn)
        && (tile.tm * tile.tn).is_multiple_of(BK)
}

/// Workgroups of `forward_relu_pool` for `p` and `tile`: `ceil(windows / tm) * ceil(c_out / 4tn)`.
pub fn relu_pool_tiles(p: &ConvParams, tile: Tile) -> u32 {
    let windows = p.batch * (p.oh / 2) * (p.ow / 2);
    windows.div_ceil(tile.tm) * p.c_out.div_ceil(tile.bn())
}

/// The conv pipelines, compiled once (`forward_relu_pool`'s once per specialisation).
pub struct ConvKernels {
    module: wgpu::ShaderModule,
    forward: wgpu::ComputePipeline,
    backward_input: wgpu::ComputePipeline,
    backward_weight: wgpu::ComputePipeline,
    backward_bias: wgpu::ComputePipeline,
    /// The split-K reduction of backward_weight (reduce.wgsl), also used by other families.
    pub reduce: ReduceKernels,
    relu_pool: Mutex<HashMap<ReluPoolKey, wgpu::ComputePipeline>>,
}

impl ConvKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let conv = buffers::shader(ctx, "conv.wgsl", CONV_WGSL);
        let kernels = Self {
            module: conv.clone(),
            forward: buffers::pipeline(ctx, &conv, "forward", &[]),
            backward_input: buffers::pipeline(ctx, &conv, "backward_input", &[]),
            backward_weight: buffers::pipeline(ctx, &conv, "backward_weight", &[]),
            backward_bias: buffers::pipeline(ctx, &conv, "backward_bias", &[]),
            reduce: ReduceKernels::new(ctx)?,
            relu_pool: Mutex::new(HashMap::new()),
        };
        ctx.settle(scope, "building the conv pipelines")?;
        Ok(kernels)
    }

    /// `y = relu?(conv(x, w) + bias)`: one dispatch over `ceil(B*OH*OW/64) * ceil(C_out/64)` tiles.
    pub fn forward<'a>(
        &self,
        ctx: &GpuContext,
        p: &ConvParams,
        x: impl Into<View<'a>>,
        w: impl Into<View<'a>>,
        bias: impl Into<View<'a>>,
        y: impl Into<View<'a>>,
    ) -> Vec<Dispatch> {
        let u = buffers::uniform(ctx, "conv.forward params", p);
        let tiles = (p.batch * p.oh * p.ow).div_ceil(TILE) * p.c_out.div_ceil(TILE);
        vec![Dispatch {
            label: "conv.forward",
            pipeline: self.forward.clone(),
            bind_group: buffers::bind_views(
                ctx,
                &self.forward,
                &[View::whole(&u), x.into(), w.into(), bias.into(), y.into()],
            ),
            groups: groups(tiles),
        }]
    }

    /// The `forward_relu_pool` pipeline for `key`, built on first use.
    fn relu_pool_pipeline(
        &self,
        ctx: &GpuContext,
        key: ReluPoolKey,
    ) -> Result<wgpu::ComputePipeline> {
        let mut cache = self.relu_pool.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let (tile, [c_in, h, w, c_out, k], dropout) = key;
        let constants = [
            ("TM", tile.tm as f64),
            ("TN", tile.tn as f64),
            ("C_IN", c_in as f64),
            ("H", h as f64),
            ("W", w as f64),
            ("C_OUT", c_out as f64),
            ("KS", k as f64),
            ("DROPOUT", if dropout { 1.0 } else { 0.0 }),
        ];
        let pipe = buffers::pipeline_checked(ctx, &self.module, "forward_relu_pool", &constants)?;
        cache.insert(key, pipe.clone());
        Ok(pipe)
    }

    /// `pooled = maxpool2x2(relu?(conv(x, w) + bias))` with `argmax` (pool.maxpool_forward's
    /// encoding and tie rule) and, with `dropout`, `d = keep ? pooled * scale : 0`
    /// (act.dropout_forward on `pooled`): one dispatch of [`relu_pool_tiles`] workgroups, the
    /// full-resolution conv output never written. Every `tile` gives the same bits, and the same
    /// bits as conv.forward -> pool.maxpool_forward (-> act.dropout_forward).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_relu_pool<'a>(
        &self,
        ctx: &GpuContext,
        p: &ConvParams,
        tile: Tile,
        dropout: Option<PoolDropout<'a>>,
        x: impl Into<View<'a>>,
        w: impl Into<View<'a>>,
        bias: impl Into<View<'a>>,
        pooled: impl Into<View<'a>>,
        argmax: impl Into<View<'a>>,
    ) -> Result<Vec<Dispatch>> {
        if !relu_pool_tile_ok(tile) || !tile.fits(&ctx.limits) {
            return Err(Error::Gpu(format!(
                "{}: conv.forward_relu_pool cannot run tile {}",
                ctx.adapter.name,
                tile.name()
            )));
        }
        if p.batch == 0
            || p.c_in == 0
            || p.c_out == 0
            || p.k == 0
            || p.k > p.h
            || p.k > p.w
            || p.oh != p.h - p.k + 1
            || p.ow != p.w - p.k + 1
        {
            return Err(Error::Gpu(format!(
                "{}: conv.forward_relu_pool: unsupported shape {p:?}",
                ctx.adapter.name
            )));
        }
        let shape = [p.c_in, p.h, p.w, p.c_out, p.k];
        let pipe = self.relu_pool_pipeline(ctx, (tile, shape, dropout.is_some()))?;
        let u = buffers::uniform(ctx, "conv.forward_relu_pool params", p);
        let du = buffers::uniform(
            ctx,
            "conv.forward_relu_pool dropout",
            dropout.map_or(&ActParams::default(), |dr| dr.params),
        );
        // Without dropout the shader never touches bindings 6-8, but the layout still has them.
        let (unused_state, unused_d);
        let (state, d) = match dropout {
            Some(dr) => (dr.state, dr.d),
            None => {
                unused_state = buffers::storage_init(ctx, "unused state", &[StepState::default()]);
                unused_d = buffers::storage(ctx, "unused d", 4);
                (View::whole(&unused_state), View::whole(&unused_d))
            }
        };
        let views = [
            View::whole(&u),
            x.into(),
            w.into(),
            bias.into(),
            pooled.into(),
            argmax.into(),
            View::whole(&du),
            state,
            d,
        ];
        Ok(vec![Dispatch {
            label: "conv.forward_relu_pool",
            bind_group: buffers::bind_views(ctx, &pipe, &views),
            pipeline: pipe,
            groups: groups(relu_pool_tiles(p, tile)),
        }])
    }

    /// `dx` from `dy` and `w`: one dispatch over `ceil(B*H*W/64) * ceil(C_in/64)` tiles.
    pub fn backward_input<'a>(
        &self,
        ctx: &GpuContext,
        p: &ConvParams,
        dy: impl Into<View<'a>>,
        w: impl Into<View<'a>>,
        dx: impl Into<View<'a>>,
    ) -> Vec<Dispatch> {
        let u = buffers::uniform(ctx, "conv.backward_input params", p);
        let tiles = (p.h * p.w * p.batch).div_ceil(TILE) * p.c_in.div_ceil(TILE);
        vec![Dispatch {
            label: "conv.backward_input",
            pipeline: self.backward_input.clone(),
            bind_group: buffers::bind_views(
                ctx,
                &self.backward_input,
                &[View::whole(&u), dy.into(), w.into(), dx.into()],
            ),
            groups: groups(tiles),
        }]
    }

    /// `dw` (overwritten) from `x` and `dy`: per-chunk partials into a scratch buffer owned by the
    /// bind groups, then `sum_partials` into `dw`. With a single chunk the GEMM writes `dw` itself.
    pub fn backward_weight<'a>(
        &self,
        ctx: &GpuContext,
        p: &ConvParams,
        x: impl Into<View<'a>>,
        dy: impl Into<View<'a>>,
        dw: impl Into<View<'a>>,
    ) -> Vec<Dispatch> {
        let parts = weight_parts(p);
        if parts == 1 {
            return self.backward_weight_partials(ctx, p, x, dy, dw);
        }
        let n = p.w_len() as u32;
        let partials = buffers::storage(
            ctx,
            "conv.backward_weight partials",
            parts as u64 * n as u64 * 4,
        );
        let rp = ReduceParams {
            n,
            parts,
            _pad: [0; 2],
        };
        let (x, dy): (View, View) = (x.into(), dy.into());
        let mut ds = self.backward_weight_partials(ctx, p, x, dy, &partials);
        ds.extend(self.reduce.sum_partials(ctx, &rp, &partials, dw));
        ds
    }

    /// The GEMM of [`Self::backward_weight`] alone: [`weight_parts`] partial `dw`s, partial `s`
    /// at `s * w_len`, left for a consumer that sums them in ascending order (the fused update).
    pub fn backward_weight_partials<'a>(
        &self,
        ctx: &GpuContext,
        p: &ConvParams,
        x: impl Into<View<'a>>,
        dy: impl Into<View<'a>>,
        partials: impl Into<View<'a>>,
    ) -> Vec<Dispatch> {
        let parts = weight_parts(p);
        let tiles = (p.c_in * p.k * p.k).div_ceil(TILE) * p.c_out.div_ceil(TILE) * parts;
        let u = buffers::uniform(ctx, "conv.backward_weight params", p);
        vec![Dispatch {
            label: "conv.backward_weight",
            pipeline: self.backward_weight.clone(),
            bind_group: buffers::bind_views(
                ctx,
                &self.backward_weight,
                &[View::whole(&u), x.into(), dy.into(), partials.into()],
            ),
            groups: groups(tiles),
        }]
    }

    /// `db[o] = sum of dy over batch and space`: one workgroup per output channel.
    pub fn backward_bias<'a>(
        &self,
        ctx: &GpuContext,
        p: &ConvParams,
        dy: impl Into<View<'a>>,
        db: impl Into<View<'a>>,
    ) -> Vec<Dispatch> {
        let u = buffers::uniform(ctx, "conv.backward_bias params", p);
        vec![Dispatch {
            label: "conv.backward_bias",
            pipeline: self.backward_bias.clone(),
            bind_group: buffers::bind_views(
                ctx,
                &self.backward_bias,
                &[View::whole(&u), dy.into(), db.into()],
            ),
            groups: groups(p.c_out),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_positions() {
        for q in [1u32, 63, 64, 511, 512, 513, 8192, 73728, 131072, 1 << 20] {
            let c = weight_chunk(q);
            assert_eq!(c % 64, 0);
            assert!(c >= WCHUNK_MIN);
            let parts = q.div_ceil(c);
            assert!(parts <= WCHUNK_MAX_PARTS, "q {q}: {parts} parts");
            assert!(parts * c >= q && (parts - 1) * c < q);
        }
    }

    #[test]
    fn conv2_flops() {
        let p = ConvParams::new(1, 64, 12, 12, 64, 5, true);
        assert_eq!(conv_flops(&p), 2.0 * 64.0 * 64.0 * 1600.0);
    }
}
