//! Host side of `shaders/optim.wgsl`: one dispatch per parameter tensor for WAME, Adam, RMSprop
//! and SGD with momentum, the fused `update_*` dispatch for every tensor at once, and the
//! `stats_*` dispatch that describes that update (once per epoch).

use super::{compile, groups_1d, prepare, prepare_views};
use crate::Result;
use crate::gpu::GpuContext;
use crate::gpu::buffers::{Arena, Dispatch, View, split_dispatch};
use crate::params::{OptParams, UpdateRecord, WameParams};

const WG: u32 = 256;

/// Fresh WAME state of one element: (zeta, Z, theta, g_prev) = (1, 0, 0, 0).
pub const WAME_INIT: [f32; 4] = [1.0, 0.0, 0.0, 0.0];

pub struct OptimKernels {
    wame: wgpu::ComputePipeline,
    adam: wgpu::ComputePipeline,
    rmsprop: wgpu::ComputePipeline,
    sgd: wgpu::ComputePipeline,
    update_wame: wgpu::ComputePipeline,
    update_adam: wgpu::ComputePipeline,
    update_rmsprop: wgpu::ComputePipeline,
    update_sgd: wgpu::ComputePipeline,
    stats_wame: wgpu::ComputePipeline,
    stats_adam: wgpu::ComputePipeline,
    stats_rmsprop: wgpu::ComputePipeline,
    stats_sgd: wgpu::ComputePipeline,
}

/// The rule and hyper-parameters of a fused update (`n` of the params is unused: each table
/// record has its own).
#[derive(Clone, Copy, Debug)]
pub enum UpdateRule {
    Wame(WameParams),
    Adam(OptParams),
    Rmsprop(OptParams),
    Sgd(OptParams),
}

impl UpdateRule {
    /// State values per weight: (zeta, Z, theta, g_prev), (m, v), v, momentum.
    pub fn state_width(&self) -> u32 {
        match self {
            UpdateRule::Wame(_) => 4,
            UpdateRule::Adam(_) => 2,
            UpdateRule::Rmsprop(_) | UpdateRule::Sgd(_) => 1,
        }
    }
}

/// The fused update's tensor table: tensor `i` has `params.lens[i]` weights, `parts[i]` partial
/// gradients laid out consecutively at `grads.offsets[i]` (so `grads.lens[i]` must be
/// `parts[i] * n`), and its state at `state.offsets[i]`. Workgroup ranges are consecutive in
/// tensor order; the second value is the total workgroup count.
pub fn update_table(
    params: &Arena,
    grads: &Arena,
    state: &Arena,
    parts: &[u32],
) -> (Vec<UpdateRecord>, u32) {
    let mut wg = 0u32;
    let mut table = Vec::with_capacity(params.lens.len());
    for (i, &n) in params.lens.iter().enumerate() {
        assert_eq!(grads.lens[i], n * parts[i], "grads arena tensor {i}");
        let groups = n.div_ceil(WG);
        table.push(UpdateRecord {
            wg_begin: wg,
            wg_end: wg + groups,
            n,
            parts: parts[i],
            param_off: params.offsets[i],
            grad_off: grads.offsets[i],
            state_off: state.offsets[i],
            _pad: 0,
        });
        wg += groups;
    }
    (table, wg)
}

impl OptimKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let [
            wame,
            adam,
            rmsprop,
            sgd,
            update_wame,
            update_adam,
            update_rmsprop,
            update_sgd,
            stats_wame,
            stats_adam,
            stats_rmsprop,
            stats_sgd,
        ] = compile(
            ctx,
            "optim.wgsl",
            include_str!("../../shaders/optim.wgsl"),
            [
                "wame",
                "adam",
                "rmsprop",
                "sgd",
                "update_wame",
                "update_adam",
                "update_rmsprop",
                "update_sgd",
                "stats_wame",
                "stats_adam",
                "stats_rmsprop",
                "stats_sgd",
            ],
        )?;
        Ok(Self {
            wame,
            adam,
            rmsprop,
            sgd,
            update_wame,
            update_adam,
            update_rmsprop,
            update_sgd,
            stats_wame,
            stats_adam,
            stats_rmsprop,
            stats_sgd,
        })
    }

    /// The statistics of the fused update [`OptimKernels::update`] would make with the same
    /// arguments (nothing but `out` is written): one [`crate::params::StatsPartial`] per workgroup
    /// into `out` (`workgroups` of them), `edges` the 16 zeta bin edges (WAME only, see
    /// [`crate::optim::stats::zeta_edges`]). Record it before the update it describes.
    #[allow(clippy::too_many_arguments)]
    pub fn stats(
        &self,
        ctx: &GpuContext,
        rule: &UpdateRule,
        step: &wgpu::Buffer,
        table_buf: &wgpu::Buffer,
        workgroups: u32,
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        state: &wgpu::Buffer,
        out: &wgpu::Buffer,
        edges: &wgpu::Buffer,
    ) -> Dispatch {
        let (x, y) = split_dispatch(workgroups.max(1));
        let views = [step, table_buf, params, grads, state, out, edges].map(View::whole);
        // Only stats_wame reads the edges: the others' layouts end at binding 6.
        let base = &views[..6];
        match rule {
            UpdateRule::Wame(p) => {
                prepare_views(ctx, "stats_wame", &self.stats_wame, p, &views, (x, y, 1))
            }
            UpdateRule::Adam(p) => {
                prepare_views(ctx, "stats_adam", &self.stats_adam, p, base, (x, y, 1))
            }
            UpdateRule::Rmsprop(p) => prepare_views(
                ctx,
                "stats_rmsprop",
                &self.stats_rmsprop,
                p,
                base,
                (x, y, 1),
            ),
            UpdateRule::Sgd(p) => {
                prepare_views(ctx, "stats_sgd", &self.stats_sgd, p, base, (x, y, 1))
            }
        }
    }

    /// Every tensor of `table` (from [`update_table`], uploaded as `table_buf`) updated in one
    /// dispatch of `workgroups` workgroups: gradients summed from their partials in ascending
    /// order, then the rule; `step` gives `t`. `params`, `grads` and `state` are whole arenas.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &self,
        ctx: &GpuContext,
        rule: &UpdateRule,
        step: &wgpu::Buffer,
        table_buf: &wgpu::Buffer,
        workgroups: u32,
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        state: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let (x, y) = split_dispatch(workgroups.max(1));
        let views = [step, table_buf, params, grads, state].map(View::whole);
        let d = match rule {
            UpdateRule::Wame(p) => {
                prepare_views(ctx, "update_wame", &self.update_wame, p, &views, (x, y, 1))
            }
            UpdateRule::Adam(p) => {
                prepare_views(ctx, "update_adam", &self.update_adam, p, &views, (x, y, 1))
            }
            UpdateRule::Rmsprop(p) => prepare_views(
                ctx,
                "update_rmsprop",
                &self.update_rmsprop,
                p,
                &views,
                (x, y, 1),
            ),
            UpdateRule::Sgd(p) => {
                prepare_views(ctx, "update_sgd", &self.update_sgd, p, &views, (x, y, 1))
            }
        };
        vec![d]
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
