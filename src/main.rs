//! The `fmnist-gpu` command line: parses flags with clap and maps errors to exit codes
//! (0 success, 1 runtime failure, 2 bad arguments or input).

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use fmnist_gpu::cmd;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fmnist-gpu",
    version,
    about = "Train a Fashion-MNIST CNN with the WAME optimizer in WGSL compute shaders (wgpu), with a CPU reference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU adapters wgpu finds and what --device auto would pick.
    Adapters(cmd::adapters::AdaptersArgs),
    /// Train the network (SPEC 8) and write a run directory.
    Train(cmd::train::TrainArgs),
    /// Check a device against a PyTorch fixture, or the GPU kernels against the CPU reference.
    Parity(cmd::parity::ParityArgs),
    /// Evaluate a model file: accuracy, per-class precision/recall/F1, confusion matrix.
    Eval(cmd::eval::EvalArgs),
    /// Classify image files (PNG, JPEG, GIF, BMP, WebP) with a model file (on the CPU unless
    /// --device gpu or --adapter says otherwise).
    Predict(cmd::predict::PredictArgs),
    /// Random search over hidden units, dropout and learning rate (--lrs; --lr does not apply),
    /// each configuration scored by k-fold cross-validation on the training set (the test set is
    /// never used); --adapter all runs trials concurrently, one thread per GPU adapter.
    Search(cmd::search::SearchArgs),
    /// WAME's variants against Adam, RMSprop and SGD with momentum under equal conditions:
    /// per-epoch curves, a table and compare.png; --adapter all runs concurrently, one thread per
    /// GPU adapter.
    Compare(cmd::compare::CompareArgs),
    /// Measure images per second and per-kernel GPU (or CPU) time on synthetic data (SPEC 12).
    Bench(cmd::bench::BenchArgs),
    /// Time every GEMM tile variant of the training step's convs and fc1 on an adapter for each
    /// batch size and cache the fastest (bit-identical results either way).
    Tune(cmd::tune::TuneArgs),
    /// Write a model file's inference network as ONNX (opset 17, dynamic batch, logits and probabilities).
    Export(cmd::export::ExportArgs),
}

/// Ids of the arguments given on the command line (not defaults) of subcommand `name`; argument
/// groups (clap makes one per flattened struct) are not arguments and are left out.
fn explicit_ids(m: &ArgMatches, name: &str) -> Vec<String> {
    let cli = Cli::command();
    let (Some(def), Some(sub)) = (cli.find_subcommand(name), m.subcommand_matches(name)) else {
        return Vec::new();
    };
    def.get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| sub.value_source(id) == Some(ValueSource::CommandLine))
        .map(String::from)
        .collect()
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp(None)
        .init();
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Train(a) = &mut cli.command {
        a.explicit = explicit_ids(&matches, "train");
    }
    let result = match &cli.command {
        Command::Adapters(a) => cmd::adapters::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Parity(a) => cmd::parity::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Predict(a) => cmd::predict::run(a),
        Command::Search(a) => cmd::search::run(a),
        Command::Compare(a) => cmd::compare::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Tune(a) => cmd::tune::run(a),
        Command::Export(a) => cmd::export::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
