//! The `fmnist-gpu` command line: parses flags with clap and maps errors to exit codes
//! (0 success, 1 runtime failure, 2 bad arguments or input).

use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Adapters(a) => cmd::adapters::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Parity(a) => cmd::parity::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
