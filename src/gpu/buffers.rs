//! Buffer and pipeline helpers: creation, upload, readback, bind groups in binding order.

use super::GpuContext;
use crate::{Error, Result};
use bytemuck::Pod;
use wgpu::util::DeviceExt;

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A zeroed storage buffer of `bytes` (rounded up to 4; at least 4 so it can be bound).
pub fn storage(ctx: &GpuContext, label: &str, bytes: u64) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4).div_ceil(4) * 4,
        usage: STORAGE,
        mapped_at_creation: false,
    })
}

pub fn storage_init<T: Pod>(ctx: &GpuContext, label: &str, data: &[T]) -> wgpu::Buffer {
    if data.is_empty() {
        return storage(ctx, label, 4);
    }
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(data),
            usage: STORAGE,
        })
}

pub fn uniform<T: Pod>(ctx: &GpuContext, label: &str, v: &T) -> wgpu::Buffer {
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(v),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
}

/// Copies `len` elements of `buf` back to the host (a blocking round trip: never inside a step).
pub fn read<T: Pod>(ctx: &GpuContext, buf: &wgpu::Buffer, len: usize) -> Result<Vec<T>> {
    let bytes = (len * std::mem::size_of::<T>()) as u64;
    if bytes == 0 {
        return Ok(Vec::new());
    }
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buf, 0, &staging, 0, bytes);
    enc.map_buffer_on_submit(&staging, wgpu::MapMode::Read, .., |r| {
        if let Err(e) = r {
            log::error!("readback map failed: {e}");
        }
    });
    let idx = ctx.queue.submit([enc.finish()]);
    ctx.wait(idx, "waiting for readback")?;
    let out = {
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(format!("{}: mapping readback: {e}", ctx.adapter.name)))?;
        bytemuck::cast_slice::<u8, T>(&view).to_vec()
    };
    staging.unmap();
    Ok(out)
}

/// Compiles one entry point of a WGSL source with an implicit layout.
pub fn pipeline(
    ctx: &GpuContext,
    module: &wgpu::ShaderModule,
    entry: &str,
    constants: &[(&str, f64)],
) -> wgpu::ComputePipeline {
    ctx.device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: true,
            },
            cache: None,
        })
}

pub fn shader(ctx: &GpuContext, label: &str, src: &str) -> wgpu::ShaderModule {
    ctx.device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        })
}

/// [`shader`] inside an error scope: a WGSL error becomes `Error::Gpu` naming the adapter and
/// the shader instead of an uncaptured error.
pub fn shader_checked(ctx: &GpuContext, label: &str, src: &str) -> Result<wgpu::ShaderModule> {
    ctx.scoped(&format!("shader {label}"), || shader(ctx, label, src))
}

/// [`pipeline`] inside an error scope: a bad entry point, override or layout becomes `Error::Gpu`
/// naming the adapter and the entry point.
pub fn pipeline_checked(
    ctx: &GpuContext,
    module: &wgpu::ShaderModule,
    entry: &str,
    constants: &[(&str, f64)],
) -> Result<wgpu::ComputePipeline> {
    ctx.scoped(&format!("pipeline {entry}"), || {
        pipeline(ctx, module, entry, constants)
    })
}

/// Bind group 0 of `pipeline` with `buffers[i]` at binding `i`.
pub fn bind(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let layout = pipeline.get_bind_group_layout(0);
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &layout,
        entries: &entries,
    })
}

/// Splits a 1-D workgroup count into `(x, y)` with `x <= 65535` (SPEC 6); shaders rebuild the
/// linear id as `wid.y * nwg.x + wid.x` and bounds-check it.
pub fn split_dispatch(groups: u32) -> (u32, u32) {
    if groups <= 65535 {
        (groups.max(1), 1)
    } else {
        (65535, groups.div_ceil(65535))
    }
}

/// One prepared dispatch: pipeline, bind group (its uniforms already written) and workgroup
/// counts. Built once at setup; a training step only records them, so it allocates nothing.
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub label: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    pub groups: (u32, u32, u32),
}

impl Dispatch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups.0, self.groups.1, self.groups.2);
    }
}

/// Records `dispatches` into one pass, submits once and waits (tests and one-off work).
pub fn run_once(ctx: &GpuContext, dispatches: &[Dispatch]) -> Result<()> {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("run_once"),
            timestamp_writes: None,
        });
        for d in dispatches {
            d.record(&mut pass);
        }
    }
    let idx = ctx.queue.submit([enc.finish()]);
    ctx.wait(idx, "waiting for work")
}
