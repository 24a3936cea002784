//! Host side of `shaders/head.wgsl`: the fused dense tail (fc2, softmax cross-entropy with the
//! GPU-side metrics, and optionally the backward through fc2 and fc1's ReLU) in one dispatch.
//!
//! The shader is specialised per hidden width (`HIDDEN`) and direction (`BACKWARD`) through
//! `override` constants; pipelines are compiled on first use and kept.

use crate::gpu::GpuContext;
use crate::gpu::buffers::{Dispatch, View, pipeline_checked, shader_checked, storage};
use crate::params::HeadParams;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;

/// Storage bindings of the `head` entry point (state, h, w, bias, labels, logits, metrics, dw,
/// db, dh): more than WebGPU's default of 8, so [`HeadKernels::new`] checks the device.
pub const HEAD_STORAGE_BINDINGS: u32 = 10;

pub struct HeadKernels {
    module: wgpu::ShaderModule,
    /// By (`BACKWARD`, `HIDDEN`): `BACKWARD = false` writes logits and metrics only
    /// (evaluation), `true` also dw, db and dh (training).
    pipelines: Mutex<HashMap<(bool, u32), wgpu::ComputePipeline>>,
    /// Bound in place of dw, db, dh by the forward-only pipeline, which never touches them
    /// (its layout still has the bindings); one each so no writable binding aliases another.
    unused: [wgpu::Buffer; 3],
}

/// The head's read-only inputs: `h [B,hidden]` (fc1's ReLU output), fc2's `w [10,hidden]` and
/// `bias [10]`, and `labels [B]` (u32).
#[derive(Clone, Copy)]
pub struct HeadInputs<'a> {
    pub h: View<'a>,
    pub w: View<'a>,
    pub bias: View<'a>,
    pub labels: View<'a>,
}

/// The backward's outputs: `dw [10,hidden]`, `db [10]`, `dh [B,hidden]`.
#[derive(Clone, Copy)]
pub struct HeadGrads<'a> {
    pub dw: View<'a>,
    pub db: View<'a>,
    pub dh: View<'a>,
}

impl HeadKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let have = ctx.device.limits().max_storage_buffers_per_shader_stage;
        if have < HEAD_STORAGE_BINDINGS {
            return Err(Error::Gpu(format!(
                "{}: the fused head kernel needs {HEAD_STORAGE_BINDINGS} storage buffers per \
                 shader stage, the device has {have}",
                ctx.adapter.name
            )));
        }
        let module = shader_checked(ctx, "head.wgsl", include_str!("../../shaders/head.wgsl"))?;
        let unused =
            ["head unused dw", "head unused db", "head unused dh"].map(|l| storage(ctx, l, 16));
        Ok(Self {
            module,
            pipelines: Mutex::new(HashMap::new()),
            unused,
        })
    }

    fn pipeline(
        &self,
        ctx: &GpuContext,
        backward: bool,
        hidden: u32,
    ) -> Result<wgpu::ComputePipeline> {
        if hidden == 0 {
            return Err(Error::Gpu(format!(
                "{}: head: hidden width 0",
                ctx.adapter.name
            )));
        }
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| Error::Runtime("head pipeline cache poisoned".into()))?;
        if let Some(pipe) = cache.get(&(backward, hidden)) {
            return Ok(pipe.clone());
        }
        let constants = [
            ("BACKWARD", if backward { 1.0 } else { 0.0 }),
            ("HIDDEN", hidden as f64),
        ];
        let pipe = pipeline_checked(ctx, &self.module, "head", &constants)?;
        cache.insert((backward, hidden), pipe.clone());
        Ok(pipe)
    }

    /// `logits [B,10] = h w^T + bias`, and this batch's loss sum, correct count and valid rows
    /// (valid from `state`, as `loss.softmax_xent_forward`) added to `metrics`; with `grads`
    /// also the backward of the mean loss over the valid rows: `dw`, `db` and
    /// `dh = (dlogits w) * (h > 0)`. One workgroup, one dispatch (its pipeline built for
    /// `p.hidden` on first use).
    #[allow(clippy::too_many_arguments)]
    pub fn head(
        &self,
        ctx: &GpuContext,
        p: &HeadParams,
        state: &wgpu::Buffer,
        x: HeadInputs,
        logits: &wgpu::Buffer,
        metrics: &wgpu::Buffer,
        grads: Option<HeadGrads>,
    ) -> Result<Vec<Dispatch>> {
        let pipe = self.pipeline(ctx, grads.is_some(), p.hidden)?;
        let (label, [dw, db, dh]) = match &grads {
            Some(g) => ("head_backward", [g.dw, g.db, g.dh]),
            None => ("head_forward", self.unused.each_ref().map(View::whole)),
        };
        Ok(vec![super::prepare_views(
            ctx,
            label,
            &pipe,
            p,
            &[
                View::whole(state),
                x.h,
                x.w,
                x.bias,
                x.labels,
                View::whole(logits),
                View::whole(metrics),
                dw,
                db,
                dh,
            ],
            (1, 1, 1),
        )])
    }
}
