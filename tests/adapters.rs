//! Adapter choice (SPEC 7): the pure `choose` rule on fake adapter lists, the `--device` flags,
//! and on the real machine (lavapipe in CI) opening adapters, GPU error capture and `adapters`.

use clap::Parser;
use fmnist_gpu::Error;
use fmnist_gpu::cmd::adapters::{AdaptersArgs, render};
use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::gpu::buffers;
use fmnist_gpu::gpu::context::missing_limits;
use fmnist_gpu::gpu::select::{
    AdapterEntry, AdapterKind, AdapterList, BackendArg, Choice, DeviceArgs, DeviceKind, Selected,
    choose, list_adapters, open_with,
};

// ---------------------------------------------------------------- fake lists

fn e(index: usize, name: &str, kind: AdapterKind) -> AdapterEntry {
    AdapterEntry::synthetic(index, name, kind, "vulkan")
}

fn llvmpipe() -> AdapterEntry {
    e(0, "llvmpipe (LLVM 15.0.6, 256 bits)", AdapterKind::Software)
}

/// software, integrated, discrete, virtual: deliberately not in preference order.
fn mixed() -> Vec<AdapterEntry> {
    vec![
        llvmpipe(),
        e(1, "Intel(R) UHD Graphics 770", AdapterKind::Integrated),
        e(2, "NVIDIA H100 80GB HBM3", AdapterKind::Discrete),
        e(3, "Virtio GPU", AdapterKind::Virtual),
    ]
}

fn args(device: DeviceKind, adapter: Option<&str>) -> DeviceArgs {
    DeviceArgs {
        device,
        adapter: adapter.map(str::to_string),
        ..DeviceArgs::default()
    }
}

fn adapter(a: &str) -> DeviceArgs {
    args(DeviceKind::Auto, Some(a))
}

fn pick(entries: &[AdapterEntry], a: &DeviceArgs) -> Choice {
    choose(entries, a, None).unwrap_or_else(|err| panic!("{a:?} should choose, got {err}"))
}

/// Asserts `NoAdapter`, exit code 2, and that the message lists every adapter by index, name,
/// type and backend (or says none exists and how to get one).
fn no_adapter(entries: &[AdapterEntry], a: &DeviceArgs, env: Option<&str>) -> String {
    let err = match choose(entries, a, env) {
        Err(err) => err,
        Ok(c) => panic!("{a:?} with env {env:?} should fail, chose {c:?}"),
    };
    assert!(matches!(err, Error::NoAdapter(_)), "{err:?}");
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    if entries.is_empty() {
        assert!(msg.contains("no GPU adapter was found"), "{msg}");
        assert!(msg.contains("mesa-vulkan-drivers"), "{msg}");
    }
    for x in entries {
        let line = format!(
            "{}  {}  ({}, {})",
            x.index,
            x.name,
            x.kind.name(),
            x.backend
        );
        assert!(msg.contains(&line), "message lacks `{line}`:\n{msg}");
    }
    msg
}

#[test]
fn device_cpu_is_cpu_without_looking_at_adapters() {
    for list in [vec![], mixed()] {
        let c = pick(&list, &args(DeviceKind::Cpu, None));
        assert!(matches!(c, Choice::Cpu { .. }), "{c:?}");
        // WGPU_ADAPTER_NAME does not override an explicit --device cpu.
        let c = choose(&list, &args(DeviceKind::Cpu, None), Some("NVIDIA")).unwrap();
        assert!(matches!(c, Choice::Cpu { .. }), "{c:?}");
    }
}

#[test]
fn device_cpu_with_adapter_is_a_bad_argument() {
    let err = choose(&mixed(), &args(DeviceKind::Cpu, Some("discrete")), None).unwrap_err();
    assert!(matches!(err, Error::BadArg(_)), "{err:?}");
    assert_eq!(err.exit_code(), 2);
    let err = choose(&mixed(), &adapter("  "), None).unwrap_err();
    assert!(matches!(err, Error::BadArg(_)), "{err:?}");
}

#[test]
fn auto_prefers_discrete_then_integrated_then_virtual_then_other() {
    let auto = args(DeviceKind::Auto, None);
    assert_eq!(pick(&mixed(), &auto), Choice::Gpu(2));
    let no_discrete: Vec<_> = mixed().into_iter().filter(|x| x.index != 2).collect();
    assert_eq!(pick(&no_discrete, &auto), Choice::Gpu(1));
    let virt = vec![llvmpipe(), e(1, "Virtio GPU", AdapterKind::Virtual)];
    assert_eq!(pick(&virt, &auto), Choice::Gpu(1));
    let other = vec![
        llvmpipe(),
        e(1, "Mystery", AdapterKind::Other),
        e(2, "Virtio", AdapterKind::Virtual),
    ];
    assert_eq!(pick(&other, &auto), Choice::Gpu(2));
    // Two of the same kind: enumeration order decides.
    let two = vec![
        e(0, "GPU A", AdapterKind::Discrete),
        e(1, "GPU B", AdapterKind::Discrete),
    ];
    assert_eq!(pick(&two, &auto), Choice::Gpu(0));
}

#[test]
fn auto_with_only_software_or_nothing_uses_the_cpu_and_says_why() {
    let auto = args(DeviceKind::Auto, None);
    match pick(&[llvmpipe()], &auto) {
        Choice::Cpu { reason } => {
            assert!(reason.contains("only a software adapter"), "{reason}");
            assert!(reason.contains("llvmpipe"), "{reason}");
            assert!(reason.contains("CPU backend"), "{reason}");
        }
        c => panic!("{c:?}"),
    }
    match pick(&[], &auto) {
        Choice::Cpu { reason } => assert!(reason.contains("no GPU adapter"), "{reason}"),
        c => panic!("{c:?}"),
    }
}

#[test]
fn auto_skips_hardware_that_lacks_the_limits() {
    let mut weak = e(0, "Old GPU", AdapterKind::Discrete);
    weak.missing_limits = vec!["max_storage_buffers_per_shader_stage 4 < 8".into()];
    let list = vec![weak.clone(), e(1, "iGPU", AdapterKind::Integrated)];
    assert_eq!(pick(&list, &args(DeviceKind::Auto, None)), Choice::Gpu(1));
    let list = vec![weak.clone(), e(1, "llvmpipe", AdapterKind::Software)];
    match pick(&list, &args(DeviceKind::Auto, None)) {
        Choice::Cpu { reason } => {
            assert!(
                reason.contains("Old GPU lacks max_storage_buffers_per_shader_stage"),
                "{reason}"
            )
        }
        c => panic!("{c:?}"),
    }
    // --device gpu prefers a usable software adapter to unusable hardware ...
    assert_eq!(pick(&list, &args(DeviceKind::Gpu, None)), Choice::Gpu(1));
    // ... and naming the weak one still picks it (opening it then fails with the limits).
    assert_eq!(pick(&list, &adapter("discrete")), Choice::Gpu(0));
}

#[test]
fn device_gpu_takes_hardware_else_software() {
    let gpu = args(DeviceKind::Gpu, None);
    assert_eq!(pick(&mixed(), &gpu), Choice::Gpu(2));
    assert_eq!(pick(&[llvmpipe()], &gpu), Choice::Gpu(0));
    let msg = no_adapter(&[], &gpu, None);
    assert!(msg.contains("--device cpu"), "{msg}");
}

#[test]
fn adapter_kind_selects_by_type_and_implies_gpu() {
    let list = mixed();
    assert_eq!(pick(&list, &adapter("discrete")), Choice::Gpu(2));
    assert_eq!(pick(&list, &adapter("integrated")), Choice::Gpu(1));
    assert_eq!(pick(&list, &adapter("virtual")), Choice::Gpu(3));
    assert_eq!(pick(&list, &adapter("software")), Choice::Gpu(0));
    assert_eq!(pick(&list, &adapter("Software")), Choice::Gpu(0));
    assert_eq!(pick(&list, &adapter("any")), Choice::Gpu(2));
    // `--adapter software` under the default --device auto runs on the GPU path, not the CPU.
    assert_eq!(pick(&[llvmpipe()], &adapter("software")), Choice::Gpu(0));
    assert_eq!(pick(&[llvmpipe()], &adapter("any")), Choice::Gpu(0));
    assert_eq!(
        pick(&[llvmpipe()], &args(DeviceKind::Gpu, Some("software"))),
        Choice::Gpu(0)
    );
}

#[test]
fn adapter_kind_missing_lists_what_exists() {
    let msg = no_adapter(&[llvmpipe()], &adapter("discrete"), None);
    assert!(msg.contains("--adapter discrete"), "{msg}");
    assert!(msg.contains("no discrete adapter"), "{msg}");
    no_adapter(&[llvmpipe()], &adapter("integrated"), None);
    no_adapter(&mixed()[1..], &adapter("software"), None);
    no_adapter(&[], &adapter("any"), None);
    no_adapter(&[], &adapter("discrete"), None);
}

#[test]
fn adapter_index_selects_by_listed_index() {
    let list = mixed();
    for i in 0..list.len() {
        assert_eq!(pick(&list, &adapter(&i.to_string())), Choice::Gpu(i));
    }
    assert_eq!(pick(&list, &adapter("02")), Choice::Gpu(2));
    // INDEX is the listed number, not a position in a (filtered) slice.
    let sparse = vec![
        e(3, "GPU three", AdapterKind::Discrete),
        e(5, "GPU five", AdapterKind::Integrated),
    ];
    assert_eq!(pick(&sparse, &adapter("5")), Choice::Gpu(1));
    let msg = no_adapter(&sparse, &adapter("0"), None);
    assert!(msg.contains("no adapter has index 0"), "{msg}");
}

#[test]
fn adapter_index_out_of_range_is_no_adapter() {
    let msg = no_adapter(&mixed(), &adapter("4"), None);
    assert!(msg.contains("index 4"), "{msg}");
    no_adapter(&mixed(), &adapter("99999999999999999999999999"), None);
    no_adapter(&[], &adapter("0"), None);
}

#[test]
fn adapter_name_is_a_case_insensitive_substring() {
    let list = mixed();
    assert_eq!(pick(&list, &adapter("nvidia")), Choice::Gpu(2));
    assert_eq!(pick(&list, &adapter("H100")), Choice::Gpu(2));
    assert_eq!(pick(&list, &adapter("LLVMPIPE")), Choice::Gpu(0));
    assert_eq!(pick(&list, &adapter("uhd graphics")), Choice::Gpu(1));
    // "GPU" is only in Virtio's name; "i" is in all four, and then the best kind wins.
    assert_eq!(pick(&list, &adapter("gpu")), Choice::Gpu(3));
    assert_eq!(pick(&list, &adapter("i")), Choice::Gpu(2));
    let msg = no_adapter(&list, &adapter("Radeon"), None);
    assert!(msg.contains("\"Radeon\""), "{msg}");
}

#[test]
fn wgpu_adapter_name_acts_as_a_name() {
    let list = mixed();
    let auto = args(DeviceKind::Auto, None);
    // Picks even a software adapter: the user named it.
    assert_eq!(
        choose(&list, &auto, Some("llvmpipe")).unwrap(),
        Choice::Gpu(0)
    );
    assert_eq!(choose(&list, &auto, Some("intel")).unwrap(), Choice::Gpu(1));
    assert_eq!(
        choose(&list, &args(DeviceKind::Gpu, None), Some("virtio")).unwrap(),
        Choice::Gpu(3)
    );
    // --adapter wins over the variable.
    assert_eq!(
        choose(&list, &adapter("discrete"), Some("llvmpipe")).unwrap(),
        Choice::Gpu(2)
    );
    // Empty means unset.
    assert_eq!(choose(&list, &auto, Some("")).unwrap(), Choice::Gpu(2));
    // No match is an error that says where the name came from (wgpu's helper would panic).
    let msg = no_adapter(&list, &auto, Some("Radeon"));
    assert!(msg.contains("WGPU_ADAPTER_NAME=Radeon"), "{msg}");
    no_adapter(&[], &auto, Some("llvmpipe"));
}

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    device: DeviceArgs,
}

#[test]
fn device_flags_parse() {
    let cli = Cli::try_parse_from(["x"]).unwrap();
    assert_eq!(cli.device.device, DeviceKind::Auto);
    assert_eq!(cli.device.adapter, None);
    assert_eq!(cli.device.backend, None);
    let cli = Cli::try_parse_from([
        "x",
        "--device",
        "gpu",
        "--adapter",
        "NVIDIA H100",
        "--backend",
        "dx12",
    ])
    .unwrap();
    assert_eq!(cli.device.device, DeviceKind::Gpu);
    assert_eq!(cli.device.adapter.as_deref(), Some("NVIDIA H100"));
    assert_eq!(cli.device.backend, Some(BackendArg::Dx12));
    for b in ["vulkan", "metal", "gl"] {
        assert!(Cli::try_parse_from(["x", "--backend", b]).is_ok(), "{b}");
    }
    assert!(Cli::try_parse_from(["x", "--device", "tpu"]).is_err());
    assert!(Cli::try_parse_from(["x", "--backend", "cuda"]).is_err());
}

#[test]
fn limits_check() {
    assert!(missing_limits(&wgpu::Limits::defaults()).is_empty());
    let m = missing_limits(&wgpu::Limits::downlevel_defaults());
    assert!(
        m.iter()
            .any(|s| s == "max_storage_buffers_per_shader_stage 4 < 8"),
        "{m:?}"
    );
    let mut l = wgpu::Limits::defaults();
    l.max_storage_buffer_binding_size = 64 << 20;
    l.max_compute_invocations_per_workgroup = 128;
    let m = missing_limits(&l);
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(
        m[0].starts_with("max_compute_invocations_per_workgroup 128 < 256"),
        "{m:?}"
    );
    assert!(
        m[1].starts_with("max_storage_buffer_binding_size 67108864 < 134217728"),
        "{m:?}"
    );
}

// ---------------------------------------------------------------- the real machine

/// The adapters of this machine (`WGPU_BACKEND` honoured), or `None` with a visible message when
/// there is none, unless `FMNIST_REQUIRE_GPU=1`.
fn real_adapters(test: &str) -> Option<AdapterList> {
    let list = list_adapters(None);
    if list.entries.is_empty() {
        if std::env::var("FMNIST_REQUIRE_GPU").as_deref() == Ok("1") {
            panic!("FMNIST_REQUIRE_GPU=1 but no GPU adapter was found");
        }
        eprintln!(
            "SKIPPED {test}: no GPU adapter found; set FMNIST_REQUIRE_GPU=1 to make this a failure"
        );
        return None;
    }
    Some(list)
}

fn opened(sel: Selected) -> GpuContext {
    match sel {
        Selected::Gpu(ctx) => ctx,
        Selected::Cpu { reason } => panic!("expected a GPU, got the CPU: {reason}"),
    }
}

#[test]
fn real_listing_is_indexed_in_order() {
    let Some(list) = real_adapters("real_listing_is_indexed_in_order") else {
        return;
    };
    assert_eq!(list.entries.len(), list.adapters.len());
    for (i, x) in list.entries.iter().enumerate() {
        assert_eq!(x.index, i);
        assert!(!x.name.is_empty());
        assert_eq!(x.name, list.adapters[i].get_info().name);
        eprintln!(
            "adapter {i}: {} ({}, {}) {}",
            x.name,
            x.kind.name(),
            x.backend,
            x.driver
        );
    }
    // A second enumeration gives the same order: INDEX is stable.
    let again = list_adapters(None);
    let names = |l: &AdapterList| l.entries.iter().map(|x| x.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&list), names(&again));
}

#[test]
fn real_software_discrete_and_auto() {
    let Some(list) = real_adapters("real_software_discrete_and_auto") else {
        return;
    };
    let has = |k: AdapterKind| {
        list.entries
            .iter()
            .any(|x| x.kind == k && x.missing_limits.is_empty())
    };
    for (kind, device_type) in [
        (AdapterKind::Software, "Cpu"),
        (AdapterKind::Discrete, "DiscreteGpu"),
    ] {
        let r = open_with(&adapter(kind.name()), None);
        if has(kind) {
            let ctx = opened(r.unwrap());
            assert_eq!(ctx.adapter.device_type, device_type);
            ctx.check().unwrap();
        } else {
            // On CI (lavapipe only) this is `discrete`: the error names llvmpipe.
            let err = r.unwrap_err();
            assert!(matches!(err, Error::NoAdapter(_)), "{err:?}");
            assert_eq!(err.exit_code(), 2);
            for x in &list.entries {
                assert!(err.to_string().contains(&x.name), "{err}");
            }
        }
    }
    let hardware = list
        .entries
        .iter()
        .any(|x| x.kind != AdapterKind::Software && x.missing_limits.is_empty());
    match open_with(&args(DeviceKind::Auto, None), None).unwrap() {
        Selected::Gpu(ctx) => {
            assert!(
                hardware,
                "auto opened {:?} though no hardware adapter exists",
                ctx.adapter
            );
            assert_ne!(ctx.adapter.device_type, "Cpu");
        }
        Selected::Cpu { reason } => {
            assert!(
                !hardware,
                "auto chose the CPU though hardware exists: {reason}"
            );
            if has(AdapterKind::Software) {
                assert!(reason.contains("only a software adapter"), "{reason}");
            }
        }
    }
    let err = open_with(&adapter(&list.entries.len().to_string()), None).unwrap_err();
    assert!(matches!(err, Error::NoAdapter(_)), "{err:?}");
    match open_with(&args(DeviceKind::Cpu, None), None).unwrap() {
        Selected::Cpu { reason } => assert_eq!(reason, "--device cpu"),
        s => panic!("{s:?}"),
    }
}

#[test]
fn adapters_command_json_and_table() {
    let Some(list) = real_adapters("adapters_command_json_and_table") else {
        return;
    };
    let json = render(&AdaptersArgs {
        json: true,
        backend: None,
        cooperative_matrix: true,
    })
    .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let arr = doc["adapters"].as_array().unwrap();
    assert_eq!(arr.len(), list.entries.len());
    // One cooperative-matrix record per adapter (lavapipe lists no configurations).
    assert_eq!(
        doc["cooperative_matrix"].as_array().map(Vec::len),
        Some(list.entries.len())
    );
    for (j, x) in arr.iter().zip(&list.entries) {
        assert_eq!(j["index"].as_u64(), Some(x.index as u64));
        assert_eq!(j["name"].as_str(), Some(x.name.as_str()));
        assert_eq!(j["kind"].as_str(), Some(x.kind.name()));
        for k in ["backend", "device_type", "driver"] {
            assert!(j[k].is_string(), "{k} missing in {j}");
        }
    }
    let env = std::env::var("WGPU_ADAPTER_NAME").ok();
    match choose(&list.entries, &args(DeviceKind::Auto, None), env.as_deref()) {
        Ok(Choice::Gpu(i)) => {
            assert_eq!(doc["auto"]["device"], "gpu");
            assert_eq!(doc["auto"]["index"].as_u64(), Some(i as u64));
        }
        Ok(Choice::Cpu { reason }) => {
            assert_eq!(doc["auto"]["device"], "cpu");
            assert_eq!(doc["auto"]["reason"].as_str(), Some(reason.as_str()));
        }
        Err(err) => assert_eq!(
            doc["auto"]["error"].as_str(),
            Some(err.to_string().as_str())
        ),
    }
    let text = render(&AdaptersArgs::default()).unwrap();
    assert!(text.starts_with("   INDEX  NAME"), "{text}");
    for x in &list.entries {
        assert!(text.contains(&x.name), "{text}");
    }
    assert!(text.contains("--device auto"), "{text}");
    let vk = render(&AdaptersArgs {
        json: true,
        backend: Some(BackendArg::Vulkan),
        cooperative_matrix: false,
    })
    .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&vk).unwrap();
    assert_eq!(doc["backends"], "vulkan");
    for j in doc["adapters"].as_array().unwrap() {
        assert_eq!(j["backend"], "vulkan");
    }
}

#[test]
fn gpu_errors_become_errors_naming_the_adapter() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    let name = ctx.adapter.name.clone();
    // A WGSL error and a missing entry point are caught by the scope, not the uncaptured path.
    let err = buffers::shader_checked(&ctx, "bad", "fn main( {").unwrap_err();
    assert!(matches!(err, Error::Gpu(_)), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!("{name}: shader bad")),
        "{err}"
    );
    let src = "@group(0) @binding(0) var<storage, read_write> a: array<u32>;\n\
               @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {\n\
               if g.x < arrayLength(&a) { a[g.x] = g.x; } }";
    let module = buffers::shader_checked(&ctx, "ok", src).unwrap();
    let err = buffers::pipeline_checked(&ctx, &module, "nope", &[]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{name}: pipeline nope")),
        "{err}"
    );
    ctx.check().unwrap();
    // A good one works, then an over-sized dispatch (SPEC 6 limit) fails at the next wait.
    let pipe = buffers::pipeline_checked(&ctx, &module, "main", &[]).unwrap();
    let buf = buffers::storage(&ctx, "a", 4 * 64);
    let bind_group = buffers::bind(&ctx, &pipe, &[&buf]);
    let mut d = buffers::Dispatch {
        label: "ok",
        pipeline: pipe,
        bind_group,
        groups: (1, 1, 1),
    };
    buffers::run_once(&ctx, std::slice::from_ref(&d)).unwrap();
    assert_eq!(
        buffers::read::<u32>(&ctx, &buf, 64).unwrap(),
        (0..64).collect::<Vec<u32>>()
    );
    d.groups = (70000, 1, 1);
    let err = buffers::run_once(&ctx, &[d]).unwrap_err();
    assert!(matches!(err, Error::Gpu(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{name}: ")), "{msg}");
    assert!(msg.contains("65535"), "{msg}");
    // Sticky: later work on this device reports the same first error.
    assert_eq!(ctx.check().unwrap_err().to_string(), msg);
    assert!(buffers::read::<u32>(&ctx, &buf, 1).is_err());
}

#[test]
fn device_loss_is_reported_by_check() {
    let Some(ctx) = GpuContext::for_tests() else {
        return;
    };
    ctx.check().unwrap();
    ctx.device.destroy();
    let _ = ctx.device.poll(wgpu::PollType::Poll);
    let err = ctx.check().unwrap_err();
    assert!(matches!(err, Error::Gpu(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}: device", ctx.adapter.name)),
        "{msg}"
    );
}
