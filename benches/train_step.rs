//! Criterion benchmarks (SPEC 12): the CPU training step, and where a GPU adapter exists the GPU
//! training step and the conv2 kernels, timed by GPU timestamp queries when the adapter has them.
//!
//! `cargo bench --bench train_step` measures; `cargo bench --bench train_step -- --test` (CI) runs
//! each benchmark once without timing. The GPU is the best hardware adapter, else a software one
//! (lavapipe); `WGPU_ADAPTER_NAME` picks another. Without any adapter the GPU groups print SKIPPED
//! (and fail when `FMNIST_REQUIRE_GPU=1`). Data is synthetic, as in `fmnist-gpu bench`.

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use fmnist_gpu::bench::{BenchConfig, StepFeeder, synthetic};
use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::gpu::buffers::{self, Dispatch};
use fmnist_gpu::gpu::select::{self, DeviceArgs, DeviceKind, Selected};
use fmnist_gpu::gpu::timers::GpuTimer;
use fmnist_gpu::model::Params;
use fmnist_gpu::net::NetConfig;
use fmnist_gpu::net::cpu::CpuNet;
use fmnist_gpu::net::gpu::GpuNet;
use fmnist_gpu::ops::conv::{ConvKernels, conv_flops};
use fmnist_gpu::params::ConvParams;
use std::time::{Duration, Instant};

fn net_config(batch: u32) -> NetConfig {
    let c = BenchConfig::default();
    NetConfig {
        batch,
        hidden: c.hidden,
        dropout: c.dropout,
        augment: false,
        label_smoothing: 0.0,
        optim: c.optim,
        seed: c.seed,
    }
}

fn cpu_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_step");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    for batch in [64u32, 128] {
        let (data, order) = synthetic(batch, 16, 0);
        let params = Params::glorot(128, 0);
        let mut net = CpuNet::new(net_config(batch), data, params);
        let mut feeder = StepFeeder::new(order, batch, net_config(batch).optim.lr);
        feeder.restart(&mut net).expect("begin epoch");
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter(|| feeder.step(&mut net).expect("CPU step"))
        });
    }
    g.finish();
}

/// The benchmark GPU, or `None` after saying why (a failure under `FMNIST_REQUIRE_GPU=1`).
fn gpu() -> Option<GpuContext> {
    let args = DeviceArgs {
        device: DeviceKind::Gpu,
        adapter: None,
        backend: None,
        tune: fmnist_gpu::tune::TuneMode::Auto,
    };
    let why = match select::open(&args) {
        Ok(Selected::Gpu(ctx)) => {
            let a = &ctx.adapter;
            eprintln!(
                "GPU benchmarks on {} ({}, {}, driver {})",
                a.name, a.device_type, a.backend, a.driver
            );
            return Some(ctx);
        }
        Ok(Selected::Cpu { reason }) => reason,
        Err(e) => e.to_string(),
    };
    if std::env::var("FMNIST_REQUIRE_GPU").as_deref() == Ok("1") {
        panic!("FMNIST_REQUIRE_GPU=1 but no GPU adapter is usable: {why}");
    }
    eprintln!("SKIPPED: GPU benchmarks, no GPU adapter ({why})");
    None
}

/// Small batches on a software adapter (lavapipe runs a batch-128 step in seconds).
fn gpu_batches(ctx: &GpuContext) -> &'static [u32] {
    if ctx.adapter.device_type == "Cpu" {
        &[8]
    } else {
        &[128, 512]
    }
}

fn gpu_step(c: &mut Criterion) {
    let Some(ctx) = gpu() else { return };
    let mut g = c.benchmark_group("gpu_step");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    for &batch in gpu_batches(&ctx) {
        let (data, order) = synthetic(batch, 64, 0);
        let params = Params::glorot(128, 0);
        let mut net = GpuNet::new(ctx.clone(), net_config(batch), data, params).expect("GPU net");
        let mut feeder = StepFeeder::new(order, batch, net_config(batch).optim.lr);
        feeder.restart(&mut net).expect("begin epoch");
        g.throughput(Throughput::Elements(batch as u64));
        // Wall clock from an idle GPU to the end of the last step: the real submit pattern.
        g.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter_custom(|iters| {
                net.wait_idle().expect("GPU idle");
                let start = Instant::now();
                for _ in 0..iters {
                    feeder.step(&mut net).expect("GPU step");
                }
                net.wait_idle().expect("GPU step");
                start.elapsed()
            })
        });
    }
    g.finish();
}

fn random(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            fmnist_gpu::params::pcg(i ^ seed.wrapping_mul(0x9e37_79b9)) as f32 / u32::MAX as f32
                - 0.5
        })
        .collect()
}

fn conv2_kernels(c: &mut Criterion) {
    let Some(ctx) = gpu() else { return };
    let kernels = ConvKernels::new(&ctx).expect("conv pipelines");
    let mut g = c.benchmark_group("conv2");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    for &batch in gpu_batches(&ctx) {
        let p = ConvParams::new(batch, 64, 12, 12, 64, 5, true);
        let x = buffers::storage_init(&ctx, "x", &random(p.x_len(), 1));
        let w = buffers::storage_init(&ctx, "w", &random(p.w_len(), 2));
        let bias = buffers::storage_init(&ctx, "bias", &random(64, 3));
        let y = buffers::storage(&ctx, "y", 4 * p.y_len() as u64);
        let dy = buffers::storage_init(&ctx, "dy", &random(p.y_len(), 4));
        let dx = buffers::storage(&ctx, "dx", 4 * p.x_len() as u64);
        let dw = buffers::storage(&ctx, "dw", 4 * p.w_len() as u64);
        let lists: [(&str, Vec<Dispatch>); 3] = [
            ("forward", kernels.forward(&ctx, &p, &x, &w, &bias, &y)),
            (
                "backward_input",
                kernels.backward_input(&ctx, &p, &dy, &w, &dx),
            ),
            // With its split-K reduction when the shape has more than one chunk.
            (
                "backward_weight",
                kernels.backward_weight(&ctx, &p, &x, &dy, &dw),
            ),
        ];
        let timer = GpuTimer::new(&ctx, 256);
        eprintln!(
            "conv2 on {}: timed by {}",
            ctx.adapter.name,
            timer.clock().describe()
        );
        // Elements are FLOPs here: criterion's "elem/s" reads as FLOP/s.
        g.throughput(Throughput::Elements(conv_flops(&p) as u64));
        for (name, list) in &lists {
            g.bench_function(BenchmarkId::new(*name, batch), |b| {
                b.iter_custom(|iters| {
                    let groups: Vec<&[Dispatch]> = (0..iters).map(|_| list.as_slice()).collect();
                    let t = timer.time_passes(&groups).expect("timed conv2 kernel");
                    Duration::from_secs_f64(t.seconds.iter().sum())
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, cpu_step, gpu_step, conv2_kernels);
criterion_main!(benches);
