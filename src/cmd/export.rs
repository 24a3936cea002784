//! `fmnist-gpu export`: writes a model file's inference network as ONNX (`crate::onnx`).

use crate::Result;
use crate::checkpoint::{load_model, write_atomic};
use crate::onnx::{IR_VERSION, OPSET, model_bytes};
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct ExportArgs {
    /// A model checkpoint (safetensors with PyTorch names), e.g. a run's model.safetensors.
    #[arg(value_parser = super::utf8_path, long)]
    pub model: PathBuf,
    /// The ONNX file to write (opset 17; input `image` [N,1,28,28] = pixels / 255, outputs
    /// `logits` and `probabilities` [N,10]); its directory must exist.
    #[arg(value_parser = super::utf8_path, long, value_name = "OUT.onnx")]
    pub onnx: PathBuf,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    onnx: &'a std::path::Path,
    bytes: usize,
    opset: i64,
    ir_version: i64,
    hidden: usize,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let (params, metadata) = load_model(&args.model)?;
    super::experiment::prepare_out_file("--onnx", &args.onnx)?;
    let bytes = model_bytes(&params, &metadata)?;
    write_atomic(&args.onnx, &bytes)?;
    let report = Report {
        onnx: &args.onnx,
        bytes: bytes.len(),
        opset: OPSET,
        ir_version: IR_VERSION,
        hidden: params.hidden,
    };
    if args.json {
        print!(
            "{}",
            String::from_utf8_lossy(&super::experiment::json_bytes(&report))
        );
    } else {
        println!(
            "wrote {} ({} bytes, ONNX opset {OPSET}, IR version {IR_VERSION}, hidden {})",
            args.onnx.display(),
            report.bytes,
            report.hidden
        );
    }
    Ok(())
}
