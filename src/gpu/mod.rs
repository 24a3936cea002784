//! wgpu plumbing: device context and adapter choice, buffer helpers, pipeline creation.
//!
//! The host is async where the browser needs it (device creation, buffer mapping, error scopes);
//! natively [`block_on`] drives those futures with `pollster`, so the CLI and tests stay blocking.

pub mod buffers;
pub mod context;
pub mod select;
pub mod tile;
pub mod timers;

pub use context::{AdapterSummary, GpuContext, ShaderChecks};
pub use select::{Choice, DeviceArgs, DeviceKind, Selected};

/// Runs a host future to completion on this thread: natively the futures of [`GpuContext`] and
/// [`buffers::read_async`] are ready once the device is polled, so this never parks for long.
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

/// In the browser nothing may block the page's one thread: the promises behind these futures
/// resolve only once control returns to the event loop. Reaching this is a host bug (a blocking
/// wrapper called from the web build), reported as such rather than hanging the tab.
#[cfg(target_arch = "wasm32")]
pub fn block_on<F: std::future::Future>(_f: F) -> F::Output {
    panic!("a blocking GPU call was made in the browser; the web host must use the *_async form")
}
