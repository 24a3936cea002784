//! Device and adapter choice (SPEC 7): the `--device/--adapter/--backend` flags, adapter
//! enumeration, and the pure rule [`choose`] that maps flags and an adapter list to a decision.

use super::context::{AdapterSummary, GpuContext, missing_limits};
use crate::{Error, Result};

/// `--device`: where the model runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The best hardware GPU; the CPU backend when only a software adapter (or none) exists.
    #[default]
    Auto,
    /// A GPU adapter, software ones (lavapipe, WARP) included when there is no hardware one.
    Gpu,
    /// The pure-Rust CPU backend.
    Cpu,
}

/// `--backend`: which graphics API to search for adapters.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendArg {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl BackendArg {
    pub fn backends(self) -> wgpu::Backends {
        match self {
            BackendArg::Vulkan => wgpu::Backends::VULKAN,
            BackendArg::Metal => wgpu::Backends::METAL,
            BackendArg::Dx12 => wgpu::Backends::DX12,
            BackendArg::Gl => wgpu::Backends::GL,
        }
    }
}

/// The device flags every subcommand that computes shares (`#[command(flatten)]`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DeviceArgs {
    /// Where to run: the best hardware GPU or else the CPU (auto), a GPU adapter (gpu), the CPU (cpu)
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    pub device: DeviceKind,
    /// Adapter to use: a kind (discrete, integrated, virtual, software, any), a name substring,
    /// or an index from `fmnist-gpu adapters`; implies --device gpu
    #[arg(long, value_name = "KIND|NAME|INDEX")]
    pub adapter: Option<String>,
    /// Search adapters of this graphics API only (default: $WGPU_BACKEND, else vulkan, metal, dx12)
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// GEMM tile variants: the adapter's cached `fmnist-gpu tune` choice, tuning on first use on
    /// hardware adapters (auto), or the default tiles (off); results are identical either way
    #[arg(long, value_enum, default_value_t = crate::tune::TuneMode::Auto)]
    pub tune: crate::tune::TuneMode,
}

/// The `KIND` vocabulary of `--adapter`, one per wgpu `DeviceType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    Discrete,
    Integrated,
    Virtual,
    /// wgpu's `DeviceType::Other`: not selectable by kind, but still hardware for `auto`.
    Other,
    /// wgpu's `DeviceType::Cpu`: lavapipe/llvmpipe, SwiftShader, WARP.
    Software,
}

impl AdapterKind {
    pub fn from_device_type(t: wgpu::DeviceType) -> Self {
        match t {
            wgpu::DeviceType::DiscreteGpu => AdapterKind::Discrete,
            wgpu::DeviceType::IntegratedGpu => AdapterKind::Integrated,
            wgpu::DeviceType::VirtualGpu => AdapterKind::Virtual,
            wgpu::DeviceType::Cpu => AdapterKind::Software,
            wgpu::DeviceType::Other => AdapterKind::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AdapterKind::Discrete => "discrete",
            AdapterKind::Integrated => "integrated",
            AdapterKind::Virtual => "virtual",
            AdapterKind::Other => "other",
            AdapterKind::Software => "software",
        }
    }

    /// Preference order: discrete, integrated, virtual, other, then software last.
    fn rank(self) -> u8 {
        match self {
            AdapterKind::Discrete => 0,
            AdapterKind::Integrated => 1,
            AdapterKind::Virtual => 2,
            AdapterKind::Other => 3,
            AdapterKind::Software => 4,
        }
    }
}

/// One enumerated adapter as `fmnist-gpu adapters` shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AdapterEntry {
    /// Position in the enumeration: the `INDEX` of `--adapter`.
    pub index: usize,
    pub name: String,
    /// Lower-case wgpu backend name: vulkan, metal, dx12, gl.
    pub backend: String,
    /// wgpu's device type name, as in a run's `adapter.device_type` (DiscreteGpu, Cpu, ...).
    pub device_type: String,
    /// The same type in `--adapter KIND` words.
    pub kind: AdapterKind,
    pub driver: String,
    pub vendor: u32,
    pub device_id: u32,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub timestamp_query: bool,
    /// Limits this adapter lacks for our kernels (empty when usable), e.g.
    /// `max_storage_buffers_per_shader_stage 4 < 8`.
    pub missing_limits: Vec<String>,
}

impl AdapterEntry {
    pub fn from_adapter(index: usize, adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let summary = AdapterSummary::from_info(&info);
        Self {
            index,
            name: summary.name,
            backend: summary.backend,
            device_type: summary.device_type,
            kind: AdapterKind::from_device_type(info.device_type),
            driver: summary.driver,
            vendor: info.vendor,
            device_id: info.device,
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            timestamp_query: adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY),
            missing_limits: missing_limits(&adapter.limits()),
        }
    }

    /// An entry with only the fields [`choose`] looks at filled in (fake lists in tests).
    pub fn synthetic(index: usize, name: &str, kind: AdapterKind, backend: &str) -> Self {
        let device_type = match kind {
            AdapterKind::Discrete => "DiscreteGpu",
            AdapterKind::Integrated => "IntegratedGpu",
            AdapterKind::Virtual => "VirtualGpu",
            AdapterKind::Other => "Other",
            AdapterKind::Software => "Cpu",
        };
        Self {
            index,
            name: name.to_string(),
            backend: backend.to_string(),
            device_type: device_type.to_string(),
            kind,
            driver: String::new(),
            vendor: 0,
            device_id: 0,
            subgroup_min_size: 0,
            subgroup_max_size: 0,
            timestamp_query: false,
            missing_limits: Vec::new(),
        }
    }

    fn describe(&self) -> String {
        format!("{} on {}", self.name, self.backend)
    }

    /// Sort key for "best": usable before lacking limits, then by kind, then enumeration order.
    fn key(&self) -> (bool, u8, usize) {
        (
            !self.missing_limits.is_empty(),
            self.kind.rank(),
            self.index,
        )
    }
}

/// The enumerated adapters; `entries[i]` describes `adapters[i]`.
pub struct AdapterList {
    pub entries: Vec<AdapterEntry>,
    pub adapters: Vec<wgpu::Adapter>,
    /// The backends that were searched.
    pub backends: wgpu::Backends,
}

/// `--backend` if given, else `WGPU_BACKEND`, else Vulkan, Metal and DX12. GL only on request:
/// probing it prints EGL noise and offers a second, non-compliant llvmpipe.
pub fn backends_to_search(backend: Option<BackendArg>) -> wgpu::Backends {
    match backend {
        Some(b) => b.backends(),
        None => wgpu::Backends::from_env()
            .filter(|b| !b.is_empty())
            .unwrap_or(wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12),
    }
}

/// Enumerates adapters of the searched backends. The order (wgpu's fixed backend order, then the
/// driver's order) is what `INDEX` refers to.
pub fn list_adapters(backend: Option<BackendArg>) -> AdapterList {
    let backends = backends_to_search(backend);
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    // Only the searched backends are initialised, so an unwanted GL probe never runs.
    desc.backends = backends;
    let instance = wgpu::Instance::new(desc);
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    let entries = adapters
        .iter()
        .enumerate()
        .map(|(i, a)| AdapterEntry::from_adapter(i, a))
        .collect();
    AdapterList {
        entries,
        adapters,
        backends,
    }
}

/// Lower-case names of the backends in `b`, for messages.
pub fn backend_names(b: wgpu::Backends) -> String {
    let mut names = Vec::new();
    for (flag, name) in [
        (wgpu::Backends::VULKAN, "vulkan"),
        (wgpu::Backends::METAL, "metal"),
        (wgpu::Backends::DX12, "dx12"),
        (wgpu::Backends::GL, "gl"),
        (wgpu::Backends::BROWSER_WEBGPU, "webgpu"),
        (wgpu::Backends::NOOP, "noop"),
    ] {
        if b.contains(flag) {
            names.push(name);
        }
    }
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// What [`choose`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Run on the CPU backend; `reason` is said in the log line.
    Cpu { reason: String },
    /// Run on `entries[i]` (a position in the slice given to [`choose`]).
    Gpu(usize),
}

/// What `--adapter` (or `WGPU_ADAPTER_NAME`) asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Request {
    Kind(AdapterKind),
    Any,
    Index(String),
    Name(String),
}

fn parse_request(s: &str) -> Request {
    match s.to_ascii_lowercase().as_str() {
        "discrete" => Request::Kind(AdapterKind::Discrete),
        "integrated" => Request::Kind(AdapterKind::Integrated),
        "virtual" => Request::Kind(AdapterKind::Virtual),
        "software" => Request::Kind(AdapterKind::Software),
        "any" => Request::Any,
        _ if s.bytes().all(|c| c.is_ascii_digit()) => Request::Index(s.to_string()),
        _ => Request::Name(s.to_string()),
    }
}

fn best<'a>(it: impl Iterator<Item = (usize, &'a AdapterEntry)>) -> Option<usize> {
    it.min_by_key(|(_, e)| e.key()).map(|(i, _)| i)
}

/// The adapter list for an error message, one per line, or how to get one when there is none.
pub fn adapters_found(entries: &[AdapterEntry]) -> String {
    if entries.is_empty() {
        return "no GPU adapter was found at all. Install a Vulkan driver (your GPU vendor's, or \
                on Debian/Ubuntu `apt-get install mesa-vulkan-drivers libvulkan1` for the lavapipe \
                software adapter), try another --backend, or use --device cpu"
            .to_string();
    }
    let mut s = String::from("the adapters found are:");
    for e in entries {
        s.push_str(&format!(
            "\n  {}  {}  ({}, {})",
            e.index,
            e.name,
            e.kind.name(),
            e.backend
        ));
    }
    s.push_str("\nchoose one with --adapter INDEX, NAME or KIND, or use --device cpu");
    s
}

/// Applies SPEC 7 to an adapter list. `env_adapter_name` is `WGPU_ADAPTER_NAME`, which acts as a
/// `--adapter NAME` when `--adapter` is absent (matched here: wgpu's own helper panics on no match).
pub fn choose(
    entries: &[AdapterEntry],
    args: &DeviceArgs,
    env_adapter_name: Option<&str>,
) -> Result<Choice> {
    if args.device == DeviceKind::Cpu {
        if let Some(a) = &args.adapter {
            return Err(Error::BadArg(format!(
                "--adapter {a} asks for a GPU but --device cpu asks for the CPU; drop one of them"
            )));
        }
        return Ok(Choice::Cpu {
            reason: "--device cpu".to_string(),
        });
    }
    let (request, source) = match (&args.adapter, env_adapter_name.map(str::trim)) {
        (Some(a), _) => {
            let a = a.trim();
            if a.is_empty() {
                return Err(Error::BadArg(
                    "--adapter needs a KIND, NAME or INDEX, got an empty value".to_string(),
                ));
            }
            (Some(parse_request(a)), format!("--adapter {a}"))
        }
        (None, Some(n)) if !n.is_empty() => (
            Some(Request::Name(n.to_string())),
            format!("WGPU_ADAPTER_NAME={n}"),
        ),
        _ => (None, String::new()),
    };
    let all = || entries.iter().enumerate();
    if let Some(request) = request {
        let picked = match &request {
            Request::Kind(k) => best(all().filter(|(_, e)| e.kind == *k)),
            Request::Any => best(all()),
            Request::Index(s) => s
                .parse::<usize>()
                .ok()
                .and_then(|want| all().find(|(_, e)| e.index == want).map(|(i, _)| i)),
            Request::Name(n) => {
                let n = n.to_lowercase();
                best(all().filter(|(_, e)| e.name.to_lowercase().contains(&n)))
            }
        };
        return picked.map(Choice::Gpu).ok_or_else(|| {
            let what = match &request {
                Request::Kind(k) => format!("no {} adapter", k.name()),
                Request::Any => "no adapter".to_string(),
                Request::Index(s) => format!("no adapter has index {s}"),
                Request::Name(n) => format!("no adapter name contains \"{n}\""),
            };
            Error::NoAdapter(format!("{source}: {what}; {}", adapters_found(entries)))
        });
    }
    if args.device == DeviceKind::Gpu {
        return best(all())
            .map(Choice::Gpu)
            .ok_or_else(|| Error::NoAdapter(format!("--device gpu: {}", adapters_found(entries))));
    }
    // auto: hardware only, and only one that has the limits we need.
    let hardware = || all().filter(|(_, e)| e.kind != AdapterKind::Software);
    if let Some(i) = best(hardware().filter(|(_, e)| e.missing_limits.is_empty())) {
        return Ok(Choice::Gpu(i));
    }
    let listed = |it: &mut dyn Iterator<Item = (usize, &AdapterEntry)>| {
        it.map(|(_, e)| e.describe()).collect::<Vec<_>>().join("; ")
    };
    let reason = if entries.is_empty() {
        "no GPU adapter was found; using the CPU backend".to_string()
    } else if hardware().next().is_none() {
        format!(
            "only a software adapter ({}) is present; using the CPU backend \
             (--adapter software runs the shaders on it)",
            listed(&mut all())
        )
    } else {
        let lacking: Vec<String> = hardware()
            .map(|(_, e)| format!("{} lacks {}", e.name, e.missing_limits.join(", ")))
            .collect();
        format!(
            "no hardware adapter has the limits the kernels need ({}); using the CPU backend",
            lacking.join("; ")
        )
    };
    Ok(Choice::Cpu { reason })
}

/// The outcome of [`open`].
// Built once per run and matched right away: boxing the context would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Selected {
    Cpu { reason: String },
    Gpu(GpuContext),
}

/// Enumerates adapters, applies [`choose`] (with `WGPU_ADAPTER_NAME`) and opens the device,
/// logging the decision in one line.
pub fn open(args: &DeviceArgs) -> Result<Selected> {
    let env_name = std::env::var("WGPU_ADAPTER_NAME").ok();
    open_with(args, env_name.as_deref())
}

/// [`open`] with `WGPU_ADAPTER_NAME` given explicitly (tests).
pub fn open_with(args: &DeviceArgs, env_adapter_name: Option<&str>) -> Result<Selected> {
    crate::tune::set_mode(args.tune);
    if args.device == DeviceKind::Cpu {
        // No enumeration: a CPU run should not touch (or wait on) any graphics driver.
        return match choose(&[], args, None)? {
            Choice::Cpu { reason } => {
                log::info!("device: CPU backend ({reason})");
                Ok(Selected::Cpu { reason })
            }
            Choice::Gpu(_) => Err(Error::Runtime(
                "internal: --device cpu chose a GPU".to_string(),
            )),
        };
    }
    let list = list_adapters(args.backend);
    match choose(&list.entries, args, env_adapter_name).map_err(|e| match e {
        Error::NoAdapter(m) if list.entries.is_empty() => Error::NoAdapter(format!(
            "{m} (backends searched: {})",
            backend_names(list.backends)
        )),
        e => e,
    })? {
        Choice::Cpu { reason } => {
            log::info!("device: CPU backend ({reason})");
            Ok(Selected::Cpu { reason })
        }
        Choice::Gpu(i) => {
            let e = &list.entries[i];
            log::info!(
                "device: GPU adapter {} \"{}\" ({}, {}, driver {})",
                e.index,
                e.name,
                e.kind.name(),
                e.backend,
                if e.driver.is_empty() {
                    "unknown"
                } else {
                    &e.driver
                }
            );
            Ok(Selected::Gpu(GpuContext::from_adapter(&list.adapters[i])?))
        }
    }
}
