//! The device context: one adapter, its device and queue, the limits we asked for, and the slot
//! where asynchronous GPU errors wait for the next [`GpuContext::check`].

use crate::{Error, Result};
use std::sync::{Arc, Mutex};

/// What a run reports about its adapter (SPEC 8 `adapter` object).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
}

impl AdapterSummary {
    pub fn from_info(info: &wgpu::AdapterInfo) -> Self {
        let driver = if info.driver_info.is_empty() {
            info.driver.clone()
        } else if info.driver.is_empty() {
            info.driver_info.clone()
        } else {
            format!("{} {}", info.driver, info.driver_info)
        };
        Self {
            // A browser's adapter has no name (WebGPU does not expose one).
            name: match (info.name.is_empty(), info.backend) {
                (false, _) => info.name.clone(),
                (true, wgpu::Backend::BrowserWebGpu) => "browser WebGPU adapter".to_string(),
                (true, _) => "unnamed adapter".to_string(),
            },
            backend: format!("{:?}", info.backend).to_lowercase(),
            device_type: format!("{:?}", info.device_type),
            driver,
        }
    }
}

/// Limits our kernels rely on (SPEC 6), checked before a device is opened:
/// `(name, needed, what the adapter has)`.
fn required_limits(al: &wgpu::Limits) -> [(&'static str, u64, u64); 6] {
    [
        (
            "max_storage_buffers_per_shader_stage",
            8,
            al.max_storage_buffers_per_shader_stage as u64,
        ),
        (
            "max_compute_workgroup_storage_size",
            16 * 1024,
            al.max_compute_workgroup_storage_size as u64,
        ),
        (
            "max_compute_invocations_per_workgroup",
            256,
            al.max_compute_invocations_per_workgroup as u64,
        ),
        (
            "max_compute_workgroup_size_x",
            256,
            al.max_compute_workgroup_size_x as u64,
        ),
        // split_dispatch assumes this value.
        (
            "max_compute_workgroups_per_dimension",
            65535,
            al.max_compute_workgroups_per_dimension as u64,
        ),
        // The resident training images (47 MB) and the largest activations are bound whole.
        (
            "max_storage_buffer_binding_size",
            128 << 20,
            al.max_storage_buffer_binding_size,
        ),
    ]
}

/// The required limits `al` falls short of, as `"<limit> <has> < <needs>"`; empty when usable.
pub fn missing_limits(al: &wgpu::Limits) -> Vec<String> {
    required_limits(al)
        .iter()
        .filter(|(_, need, have)| have < need)
        .map(|(name, need, have)| format!("{name} {have} < {need}"))
        .collect()
}

/// The first GPU error seen on a device (uncaptured validation error, out of memory, device
/// lost). Later errors are usually consequences of the first, so only it is kept.
type ErrorSlot = Arc<Mutex<Option<String>>>;

fn record(slot: &ErrorSlot, adapter: &str, what: String) {
    let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
    if s.is_none() {
        log::error!("GPU error on {adapter}: {what}");
        *s = Some(what);
    } else {
        log::debug!("further GPU error on {adapter}: {what}");
    }
}

/// Cheap to clone: wgpu handles and the error slot are shared, so clones are one device.
#[derive(Clone)]
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    /// The adapter's full identity (vendor and device ids, driver): the tuning cache's key.
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// Shader modules are built without naga's runtime checks (see [`ShaderChecks`]).
    pub trusted: bool,
    errors: ErrorSlot,
    /// The browser's instance, held as long as its device: wgpu's web backend makes no promise
    /// that a device outlives the JS objects it came from. Native devices keep what they need.
    _instance: Option<wgpu::Instance>,
}

/// Whether shader modules keep naga's runtime checks (index clamps on workgroup and function
/// arrays, a bounded counter in every loop, guarded integer division).
///
/// `FMNIST_SHADER_CHECKS=on` keeps them everywhere, `off` drops them everywhere; unset, they are
/// kept on software adapters (lavapipe in CI exercises the checked build) and dropped on hardware
/// adapters, where every kernel's own bounds handling has been tested on the checked build first.
/// Storage-buffer accesses stay checked by the driver's robust buffer access either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShaderChecks {
    On,
    Off,
    Auto,
}

impl ShaderChecks {
    pub fn from_env() -> Self {
        match std::env::var("FMNIST_SHADER_CHECKS")
            .as_deref()
            .map(str::trim)
        {
            Ok("on") | Ok("1") => Self::On,
            Ok("off") | Ok("0") => Self::Off,
            _ => Self::Auto,
        }
    }

    /// Trusted (unchecked) modules for this adapter type?
    pub fn trusted(self, device_type: wgpu::DeviceType) -> bool {
        match self {
            Self::On => false,
            Self::Off => true,
            Self::Auto => device_type != wgpu::DeviceType::Cpu,
        }
    }
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.adapter)
            .finish_non_exhaustive()
    }
}

impl GpuContext {
    /// Opens a device on `adapter`, asking only for the limits our kernels need and the adapter has.
    ///
    /// Fails with [`Error::Gpu`] naming the adapter when it lacks a limit the kernels rely on.
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self> {
        super::block_on(Self::from_adapter_async(adapter))
    }

    /// [`from_adapter`](Self::from_adapter) for hosts that cannot block (the browser).
    pub async fn from_adapter_async(adapter: &wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let summary = AdapterSummary::from_info(&info);
        let al = adapter.limits();
        let missing = missing_limits(&al);
        if !missing.is_empty() {
            return Err(Error::Gpu(format!(
                "{} ({}, {}) lacks limits the kernels need: {}",
                summary.name,
                summary.device_type,
                summary.backend,
                missing.join(", ")
            )));
        }
        // WebGPU defaults, lowered where the adapter is below them in a limit we do not rely on
        // (asking for more than the adapter has fails the whole request).
        let mut limits = wgpu::Limits::defaults().or_worse_values_from(&al);
        limits.max_storage_buffer_binding_size = al.max_storage_buffer_binding_size;
        limits.max_buffer_size = al.max_buffer_size;
        limits.max_storage_buffers_per_shader_stage =
            al.max_storage_buffers_per_shader_stage.min(16);
        // Larger tile variants (gpu::tile) use up to 1,024 invocations and 48 KiB of workgroup
        // memory where the adapter has them; each variant checks these limits before it is built.
        limits.max_compute_workgroup_storage_size =
            al.max_compute_workgroup_storage_size.min(48 * 1024);
        limits.max_compute_invocations_per_workgroup =
            al.max_compute_invocations_per_workgroup.min(1024);
        limits.max_compute_workgroup_size_x = al.max_compute_workgroup_size_x.min(1024);
        limits.max_compute_workgroup_size_y = al.max_compute_workgroup_size_y.min(1024);
        let features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("fmnist-gpu"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("{}: cannot open device: {e}", summary.name)))?;
        let errors: ErrorSlot = Arc::new(Mutex::new(None));
        // Uncaptured errors (wgpu's default is a panic) and device loss land in the slot;
        // `check` turns them into an `Error::Gpu` at the next synchronisation point.
        let (slot, name) = (errors.clone(), summary.name.clone());
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            record(&slot, &name, e.to_string().trim_end().to_string());
        }));
        let (slot, name) = (errors.clone(), summary.name.clone());
        device.set_device_lost_callback(move |reason, msg| {
            let what = match reason {
                wgpu::DeviceLostReason::Destroyed => format!("device destroyed: {msg}"),
                wgpu::DeviceLostReason::Unknown => format!("device lost: {msg}"),
            };
            record(&slot, &name, what);
        });
        let trusted = ShaderChecks::from_env().trusted(info.device_type);
        log::debug!(
            "{}: shader modules {}",
            summary.name,
            if trusted {
                "trusted (no naga runtime checks)"
            } else {
                "with naga runtime checks"
            }
        );
        Ok(Self {
            device,
            queue,
            adapter: summary,
            info,
            limits,
            features,
            trusted,
            errors,
            _instance: None,
        })
    }

    /// The browser's WebGPU adapter (high-performance preference), opened as
    /// [`from_adapter_async`](Self::from_adapter_async) opens any other: the web has no adapter
    /// list to choose from, and its adapter has no name, so the summary says what it is.
    pub async fn browser() -> Result<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::BROWSER_WEBGPU;
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter(format!("this browser offers no WebGPU adapter: {e}")))?;
        let mut ctx = Self::from_adapter_async(&adapter).await?;
        ctx._instance = Some(instance);
        Ok(ctx)
    }

    /// `Err(Error::Gpu("<adapter>: <first error>"))` once any uncaptured GPU error or device loss
    /// has happened on this device. Sticky: results computed after an error cannot be trusted.
    pub fn check(&self) -> Result<()> {
        let s = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        match &*s {
            None => Ok(()),
            Some(what) => Err(Error::Gpu(format!("{}: {what}", self.adapter.name))),
        }
    }

    /// Blocks until `submission` is done, then [`check`](Self::check)s. A recorded error wins over
    /// the poll's own: an invalid submit leaves its index unknown to `poll`, which would otherwise
    /// hide the cause.
    pub fn wait(&self, submission: wgpu::SubmissionIndex, what: &str) -> Result<()> {
        let polled = self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(submission),
            timeout: None,
        });
        self.check()?;
        polled.map_err(|e| Error::Gpu(format!("{}: {what}: {e}", self.adapter.name)))?;
        Ok(())
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes and turns what they
    /// catch into `Error::Gpu("<adapter>: <what>: <error>")` instead of the uncaptured path.
    /// Scopes are thread-local: `f` must do its wgpu calls on this thread.
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        // Popped innermost first.
        let v = self.settle(validation, what);
        let o = self.settle(oom, what);
        let i = self.settle(internal, what);
        v.and(o).and(i).map(|()| out)
    }

    /// Pops `scope` and turns what it caught into `Error::Gpu("<adapter>: <what>: <error>")`.
    ///
    /// Natively the pop is ready at once. In the browser it resolves only after control returns
    /// to the event loop, so it is spawned and what it catches goes to the error slot, where the
    /// next [`check`](Self::check) after an await (every readback) reports it.
    pub fn settle(&self, scope: wgpu::ErrorScopeGuard, what: &str) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            match super::block_on(scope.pop()) {
                None => Ok(()),
                Some(e) => Err(Error::Gpu(format!(
                    "{}: {what}: {}",
                    self.adapter.name,
                    e.to_string().trim_end()
                ))),
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let (slot, name, what) = (
                self.errors.clone(),
                self.adapter.name.clone(),
                what.to_string(),
            );
            let popped = scope.pop();
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(e) = popped.await {
                    record(
                        &slot,
                        &name,
                        format!("{what}: {}", e.to_string().trim_end()),
                    );
                }
            });
            Ok(())
        }
    }

    /// The context GPU tests run on. Prefers a software adapter (lavapipe in CI) so results do not
    /// depend on which GPU a machine has; `WGPU_ADAPTER_NAME` picks another, `WGPU_BACKEND`
    /// restricts the search.
    ///
    /// Returns `None` with a visible message when there is none, unless `FMNIST_REQUIRE_GPU=1`,
    /// where a missing adapter fails the test.
    pub fn for_tests() -> Option<Self> {
        use super::select::{AdapterKind, Choice, DeviceArgs, DeviceKind, choose, list_adapters};
        let list = list_adapters(None);
        let env_name = std::env::var("WGPU_ADAPTER_NAME").ok();
        let args = DeviceArgs {
            device: DeviceKind::Gpu,
            adapter: if env_name.as_deref().is_some_and(|n| !n.trim().is_empty()) {
                None
            } else {
                Some(AdapterKind::Software.name().to_string())
            },
            ..DeviceArgs::default()
        };
        let picked = choose(&list.entries, &args, env_name.as_deref()).or_else(|e| {
            if args.adapter.is_some() {
                // No software adapter: any GPU will do.
                let any = DeviceArgs {
                    adapter: None,
                    ..args.clone()
                };
                choose(&list.entries, &any, None)
            } else {
                Err(e)
            }
        });
        let why = match picked {
            Ok(Choice::Gpu(i)) => {
                return match Self::from_adapter(&list.adapters[i]) {
                    Ok(ctx) => Some(ctx),
                    Err(e) => panic!("cannot open the test adapter: {e}"),
                };
            }
            Ok(Choice::Cpu { .. }) => "no GPU adapter was found".to_string(),
            Err(e) => e.to_string(),
        };
        if std::env::var("FMNIST_REQUIRE_GPU").as_deref() == Ok("1") {
            panic!("FMNIST_REQUIRE_GPU=1 but no GPU adapter is usable: {why}");
        }
        eprintln!(
            "SKIPPED: no GPU adapter for tests ({why}); set FMNIST_REQUIRE_GPU=1 to make this a failure"
        );
        None
    }
}
