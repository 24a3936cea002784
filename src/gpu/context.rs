//! The device context: one adapter, its device and queue, and the limits we asked for.

use crate::{Error, Result};

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
            name: info.name.clone(),
            backend: format!("{:?}", info.backend).to_lowercase(),
            device_type: format!("{:?}", info.device_type),
            driver,
        }
    }
}

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
}

impl GpuContext {
    /// Opens a device on `adapter`, asking only for the limits our kernels need and the adapter has.
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let summary = AdapterSummary::from_info(&info);
        let al = adapter.limits();
        let mut limits = wgpu::Limits::defaults();
        limits.max_storage_buffer_binding_size = al.max_storage_buffer_binding_size;
        limits.max_buffer_size = al.max_buffer_size;
        limits.max_storage_buffers_per_shader_stage =
            al.max_storage_buffers_per_shader_stage.min(16);
        limits.max_compute_workgroup_storage_size =
            al.max_compute_workgroup_storage_size.min(32 * 1024);
        let features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("fmnist-gpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Gpu(format!("{}: cannot open device: {e}", summary.name)))?;
        let name = summary.name.clone();
        device.on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
            // Uncaptured errors mean a bug in our encoding; report the adapter and stop cleanly.
            eprintln!("error: GPU error on {name}: {e}");
            std::process::exit(1);
        }));
        Ok(Self {
            device,
            queue,
            adapter: summary,
            limits,
            features,
        })
    }

    /// The context GPU tests run on: the first adapter wgpu finds (lavapipe in CI).
    ///
    /// Returns `None` with a visible message when there is none, unless `FMNIST_REQUIRE_GPU=1`,
    /// where a missing adapter fails the test.
    pub fn for_tests() -> Option<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapters =
            pollster::block_on(instance.enumerate_adapters(
                wgpu::Backends::from_env().unwrap_or(
                    wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12,
                ),
            ));
        let adapter = adapters.into_iter().next();
        match adapter {
            Some(a) => Some(Self::from_adapter(&a).expect("device for tests")),
            None => {
                if std::env::var("FMNIST_REQUIRE_GPU").as_deref() == Ok("1") {
                    panic!("FMNIST_REQUIRE_GPU=1 but no GPU adapter was found");
                }
                eprintln!(
                    "SKIPPED: no GPU adapter found; set FMNIST_REQUIRE_GPU=1 to make this a failure"
                );
                None
            }
        }
    }
}
