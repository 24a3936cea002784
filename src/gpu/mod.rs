//! wgpu plumbing: device context and adapter choice, buffer helpers, pipeline creation.

pub mod buffers;
pub mod context;

pub use context::{AdapterSummary, GpuContext};
