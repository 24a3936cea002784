//! Helpers shared by the integration tests: synthetic data and the GPU-or-skip context.
#![allow(dead_code)]

use fmnist_gpu::data::DataSet;
use fmnist_gpu::net::NetData;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// `n` random 28x28 images with random labels; blobs of brightness so convs see structure.
pub fn synthetic(n: usize, seed: u64) -> DataSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let labels: Vec<u8> = (0..n).map(|_| rng.random_range(0..10u8)).collect();
    let mut images = vec![0u8; n * 784];
    for (i, img) in images.chunks_mut(784).enumerate() {
        let (cy, cx) = (4 + labels[i] as usize * 2, 6 + labels[i] as usize);
        for (p, v) in img.iter_mut().enumerate() {
            let (y, x) = (p / 28, p % 28);
            let d = y.abs_diff(cy) + x.abs_diff(cx);
            let base = if d < 6 { 200 } else { 20 };
            *v = (base + rng.random_range(0..50u32)) as u8;
        }
    }
    DataSet {
        images,
        labels,
        n,
        rows: 28,
        cols: 28,
    }
}

pub fn net_data(train: DataSet, test: DataSet) -> NetData {
    NetData {
        train: Arc::new(train),
        test: Arc::new(test),
    }
}

/// Where the real data is, if installed.
pub fn real_data() -> Option<std::path::PathBuf> {
    let d = std::path::PathBuf::from(fmnist_gpu::data::SYSTEM_DIR);
    if fmnist_gpu::data::has_data(&d) {
        Some(d)
    } else {
        eprintln!(
            "SKIPPED: Fashion-MNIST is not installed at {} (apt-get install dataset-fashion-mnist)",
            d.display()
        );
        None
    }
}

/// The binary, with the Vulkan backend chosen as CI does.
pub fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fmnist-gpu"));
    c.env("WGPU_BACKEND", "vulkan");
    c
}

/// True when a GPU adapter exists; else prints a skip line, or panics under FMNIST_REQUIRE_GPU=1.
pub fn have_gpu() -> bool {
    fmnist_gpu::gpu::GpuContext::for_tests().is_some()
}
