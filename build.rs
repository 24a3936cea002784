//! Compiles the vendored ONNX schema (proto/onnx.proto3) to Rust for `src/onnx.rs`.
//!
//! protox parses the .proto in pure Rust, so neither developers nor CI need a protoc binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/onnx.proto3";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
