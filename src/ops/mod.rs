//! Host side of the WGSL kernels: pipelines built once per family, prepared dispatches per call.

pub mod act;
pub mod conv;
pub mod conv_grad;
pub mod data;
pub mod dense;
pub mod head;
pub mod loss;
pub mod optim;
pub mod pool;
pub mod reduce;

use crate::Result;
use crate::gpu::GpuContext;
use crate::gpu::buffers::{Dispatch, View, bind_views, pipeline, shader, split_dispatch, uniform};
use bytemuck::Pod;

/// Compiles the named entry points of one WGSL source. Shader and pipeline validation errors are
/// caught in an error scope and returned as [`Error::Gpu`] naming the adapter, instead of reaching
/// the device's uncaptured-error handler.
pub(crate) fn compile<const N: usize>(
    ctx: &GpuContext,
    label: &str,
    src: &str,
    entries: [&str; N],
) -> Result<[wgpu::ComputePipeline; N]> {
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = shader(ctx, label, src);
    let pipes = entries.map(|e| pipeline(ctx, &module, e, &[]));
    ctx.settle(scope, &format!("building {label} kernels"))?;
    Ok(pipes)
}

/// Workgroup counts for `threads` invocations in 1-D workgroups of `wg`, split over y so that x
/// stays within 65535 (the shaders rebuild the flat id from `num_workgroups`).
pub fn groups_1d(threads: u32, wg: u32) -> (u32, u32, u32) {
    let (x, y) = split_dispatch(threads.div_ceil(wg));
    (x, y, 1)
}

/// A dispatch of `pipe` with `params` written to a fresh uniform at binding 0 and `buffers` at
/// bindings 1, 2, ... (the binding convention of every kernel family).
pub(crate) fn prepare<P: Pod>(
    ctx: &GpuContext,
    label: &'static str,
    pipe: &wgpu::ComputePipeline,
    params: &P,
    buffers: &[&wgpu::Buffer],
    groups: (u32, u32, u32),
) -> Dispatch {
    let views: Vec<View> = buffers.iter().map(|b| View::whole(b)).collect();
    prepare_views(ctx, label, pipe, params, &views, groups)
}

/// [`prepare`] with buffer ranges: tensors inside an arena ([`crate::gpu::buffers::Arena`]).
pub(crate) fn prepare_views<P: Pod>(
    ctx: &GpuContext,
    label: &'static str,
    pipe: &wgpu::ComputePipeline,
    params: &P,
    views: &[View],
    groups: (u32, u32, u32),
) -> Dispatch {
    let u = uniform(ctx, label, params);
    let mut all: Vec<View> = Vec::with_capacity(views.len() + 1);
    all.push(View::whole(&u));
    all.extend_from_slice(views);
    Dispatch {
        label,
        pipeline: pipe.clone(),
        bind_group: bind_views(ctx, pipe, &all),
        groups,
    }
}
