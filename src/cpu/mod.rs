//! The CPU reference backend: one function per WGSL entry point, same names, same params structs.
//!
//! Ops are generic over [`Real`] so the same code runs in f32 (training, GPU parity) and in f64
//! (central-difference gradient checks).

pub mod act;
pub mod conv;
pub mod conv_grad;
pub mod data;
pub mod dense;
pub mod head;
pub mod loss;
pub mod optim;
pub mod pool;
pub mod real;
pub mod reduce;

pub use real::Real;
