//! Subcommand implementations; `main.rs` parses the command line and dispatches here.

pub mod adapters;
pub mod bench;
pub mod compare;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod parity;
pub mod predict;
pub mod search;
pub mod train;
pub mod tune;

pub use crate::gpu::DeviceArgs;

use crate::Result;
use crate::gpu::Selected;
use crate::model::Params;
use crate::net::{Net, NetConfig, NetData, cpu::CpuNet, gpu::GpuNet};

/// Opens the device `args` asks for (SPEC 7) and builds the net there.
pub fn open_net(
    args: &DeviceArgs,
    cfg: NetConfig,
    data: NetData,
    params: Params,
) -> Result<Box<dyn Net>> {
    Ok(match crate::gpu::select::open(args)? {
        Selected::Cpu { reason } => {
            log::info!("device: CPU reference backend ({reason})");
            Box::new(CpuNet::new(cfg, data, params))
        }
        Selected::Gpu(ctx) => Box::new(GpuNet::new(ctx, cfg, data, params)?),
    })
}

/// `--flag` must be at least 1 (batch sizes, epochs, widths, counts).
pub fn at_least_one(flag: &str, v: u64) -> crate::Result<()> {
    if v == 0 {
        return Err(crate::Error::BadArg(format!("{flag} must be at least 1")));
    }
    Ok(())
}

/// `--flag` must be a probability-like fraction in [0, 1) (dropout, validation share, alpha).
pub fn fraction<T: Into<f64> + std::fmt::Display + Copy>(flag: &str, v: T) -> crate::Result<()> {
    if !(0.0..1.0).contains(&v.into()) {
        return Err(crate::Error::BadArg(format!(
            "{flag} must be in [0, 1), got {v}"
        )));
    }
    Ok(())
}

/// Value parser of every path flag: clap hands it only UTF-8 text (anything else is clap's own
/// exit-2 error), because the paths end up in JSON documents (config.json, summaries, `--json`
/// output), which cannot hold other bytes.
pub fn utf8_path(s: &str) -> std::result::Result<std::path::PathBuf, String> {
    if s.is_empty() {
        return Err("a path must not be empty".into());
    }
    Ok(std::path::PathBuf::from(s))
}
