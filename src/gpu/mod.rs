//! wgpu plumbing: device context and adapter choice, buffer helpers, pipeline creation.

pub mod buffers;
pub mod context;
pub mod select;
pub mod tile;
pub mod timers;

pub use context::{AdapterSummary, GpuContext, ShaderChecks};
pub use select::{Choice, DeviceArgs, DeviceKind, Selected};
