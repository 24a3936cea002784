//! fmnist-gpu: a Fashion-MNIST CNN trained with WAME, every op in WGSL on wgpu, with a pure-Rust
//! CPU reference that each shader is checked against. `../shared/SPEC.md` is the contract.

pub mod cmd;
pub mod cpu;
pub mod data;
pub mod error;
pub mod gpu;
pub mod input;
pub mod limits;
pub mod ops;
pub mod params;
pub mod rng;

pub use error::{Error, Result};
pub mod bench;
pub mod checkpoint;
pub mod fixture;
pub mod metrics;
pub mod model;
pub mod net;
pub mod onnx;
pub mod optim;
pub mod paired;
pub mod parity;
pub mod plot;
pub mod tensorboard;
pub mod train;
pub mod tune;
