//! Compiles the vendored protobuf schemas to Rust: ONNX (proto/onnx.proto3) for `src/onnx.rs`
//! and the TensorBoard event subset (proto/tensorboard/) for `src/tensorboard.rs`.
//!
//! protox parses the .proto files in pure Rust, so neither developers nor CI need a protoc binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/onnx.proto3",
        "proto/tensorboard/event.proto",
        "proto/tensorboard/summary.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
