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
    super::block_on(read_async(ctx, buf, len))
}

/// [`read`] for hosts that cannot block: natively the map callback has run once the device is
/// polled; in the browser the future resolves when the page's event loop delivers the mapping.
pub async fn read_async<T: Pod>(
    ctx: &GpuContext,
    buf: &wgpu::Buffer,
    len: usize,
) -> Result<Vec<T>> {
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
    let mapped = Mapped::default();
    let done = mapped.clone();
    enc.map_buffer_on_submit(&staging, wgpu::MapMode::Read, .., move |r| done.finish(r));
    let idx = ctx.queue.submit([enc.finish()]);
    ctx.wait(idx, "waiting for readback")?;
    let mapping = mapped.await;
    ctx.check()?;
    mapping.map_err(|e| Error::Gpu(format!("{}: mapping readback: {e}", ctx.adapter.name)))?;
    let out = {
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(format!("{}: mapping readback: {e}", ctx.adapter.name)))?;
        bytemuck::cast_slice::<u8, T>(&view).to_vec()
    };
    staging.unmap();
    Ok(out)
}

type MapResult = std::result::Result<(), wgpu::BufferAsyncError>;

/// The outcome of one buffer mapping, as a future: the map callback stores it and wakes the
/// reader (in the browser the callback comes from a promise, natively from `poll`).
#[derive(Clone, Default)]
struct Mapped(std::sync::Arc<std::sync::Mutex<(Option<MapResult>, Option<std::task::Waker>)>>);

impl Mapped {
    fn finish(&self, r: MapResult) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = Some(r);
        if let Some(w) = s.1.take() {
            w.wake();
        }
    }
}

impl std::future::Future for Mapped {
    type Output = MapResult;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<MapResult> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match s.0.take() {
            Some(r) => std::task::Poll::Ready(r),
            None => {
                s.1 = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
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

/// Builds a shader module: trusted (without naga's runtime checks) when `ctx.trusted`, else
/// checked (see [`super::context::ShaderChecks`]).
pub fn shader(ctx: &GpuContext, label: &str, src: &str) -> wgpu::ShaderModule {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(src.into()),
    };
    if ctx.trusted {
        // SAFETY: every kernel does its own bounds handling (index selects and explicit range
        // tests, loops with finite trip counts, no division by a possibly-zero value); the
        // kernel table and the training tests run the same sources with the checks on.
        unsafe {
            ctx.device
                .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
        }
    } else {
        ctx.device.create_shader_module(desc)
    }
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

/// A storage binding: a whole buffer or a range of one (a tensor inside an arena buffer).
///
/// Ranges start at a multiple of the device's `min_storage_buffer_offset_alignment` (256 bytes
/// on WebGPU defaults): [`Arena`] lays its tensors out that way.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    /// Bytes; `None` to the end of the buffer.
    pub size: Option<u64>,
}

impl<'a> View<'a> {
    pub fn whole(buffer: &'a wgpu::Buffer) -> Self {
        Self {
            buffer,
            offset: 0,
            size: None,
        }
    }

    fn resource(&self) -> wgpu::BindingResource<'a> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self.buffer,
            offset: self.offset,
            size: self.size.and_then(wgpu::BufferSize::new),
        })
    }
}

impl<'a> From<&'a wgpu::Buffer> for View<'a> {
    fn from(buffer: &'a wgpu::Buffer) -> Self {
        Self::whole(buffer)
    }
}

/// Several f32 tensors in one storage buffer, each starting on a 256-byte boundary, so that one
/// dispatch (the optimizer update) can reach all of them through one binding while every other
/// kernel binds its own tensor as a [`View`].
pub struct Arena {
    pub buffer: wgpu::Buffer,
    /// Start of each tensor, in f32 elements.
    pub offsets: Vec<u32>,
    /// Length of each tensor, in f32 elements.
    pub lens: Vec<u32>,
}

/// f32 elements per alignment step of [`Arena`] offsets (256 bytes).
pub const ARENA_ALIGN: u32 = 64;

impl Arena {
    /// Offsets for tensors of `lens` elements, each rounded up to [`ARENA_ALIGN`]; and the total.
    pub fn layout(lens: &[usize]) -> (Vec<u32>, u32) {
        let mut offsets = Vec::with_capacity(lens.len());
        let mut at = 0u32;
        for &n in lens {
            offsets.push(at);
            at += (n as u32).div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
        }
        (offsets, at)
    }

    /// A zeroed arena for tensors of `lens` elements.
    pub fn zeroed(ctx: &GpuContext, label: &str, lens: &[usize]) -> Self {
        let (offsets, total) = Self::layout(lens);
        Self {
            buffer: storage(ctx, label, total as u64 * 4),
            offsets,
            lens: lens.iter().map(|&n| n as u32).collect(),
        }
    }

    /// An arena holding `tensors` (each laid out as [`Arena::layout`] says).
    pub fn init(ctx: &GpuContext, label: &str, tensors: &[Vec<f32>]) -> Self {
        let lens: Vec<usize> = tensors.iter().map(|t| t.len()).collect();
        let (offsets, total) = Self::layout(&lens);
        let mut flat = vec![0f32; total as usize];
        for (t, &o) in tensors.iter().zip(&offsets) {
            flat[o as usize..o as usize + t.len()].copy_from_slice(t);
        }
        Self {
            buffer: storage_init(ctx, label, &flat),
            offsets,
            lens: lens.iter().map(|&n| n as u32).collect(),
        }
    }

    /// Tensor `i` as a binding.
    pub fn view(&self, i: usize) -> View<'_> {
        View {
            buffer: &self.buffer,
            offset: self.offsets[i] as u64 * 4,
            size: Some(self.lens[i].max(1) as u64 * 4),
        }
    }

    /// Tensor `i` read back to the host.
    pub fn read(&self, ctx: &GpuContext, i: usize) -> Result<Vec<f32>> {
        super::block_on(self.read_async(ctx, i))
    }

    /// [`read`](Self::read) for hosts that cannot block.
    pub async fn read_async(&self, ctx: &GpuContext, i: usize) -> Result<Vec<f32>> {
        let len = (self.offsets[i] + self.lens[i]) as usize;
        let all: Vec<f32> = read_async(ctx, &self.buffer, len).await?;
        Ok(all[self.offsets[i] as usize..].to_vec())
    }

    /// Overwrites tensor `i` (queued; lands before the next submit).
    pub fn write(&self, ctx: &GpuContext, i: usize, data: &[f32]) {
        debug_assert_eq!(data.len(), self.lens[i] as usize);
        ctx.queue.write_buffer(
            &self.buffer,
            self.offsets[i] as u64 * 4,
            bytemuck::cast_slice(data),
        );
    }
}

/// Bind group 0 of `pipeline` with `buffers[i]` at binding `i`.
pub fn bind(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let views: Vec<View> = buffers.iter().map(|b| View::whole(b)).collect();
    bind_views(ctx, pipeline, &views)
}

/// Bind group 0 of `pipeline` with `views[i]` at binding `i`.
pub fn bind_views(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    views: &[View],
) -> wgpu::BindGroup {
    let layout = pipeline.get_bind_group_layout(0);
    let entries: Vec<wgpu::BindGroupEntry> = views
        .iter()
        .enumerate()
        .map(|(i, v)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: v.resource(),
        })
        .collect();
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &layout,
        entries: &entries,
    })
}

/// Bind group 0 of `pipeline` with each view at its given binding, for entry points whose
/// bindings are not `0..n` (a shader whose entry points bind different subsets).
pub fn bind_views_at(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    views: &[(u32, View)],
) -> wgpu::BindGroup {
    let layout = pipeline.get_bind_group_layout(0);
    let entries: Vec<wgpu::BindGroupEntry> = views
        .iter()
        .map(|(binding, v)| wgpu::BindGroupEntry {
            binding: *binding,
            resource: v.resource(),
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
