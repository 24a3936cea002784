//! Subcommand implementations; `main.rs` parses the command line and dispatches here.

pub mod adapters;
pub mod bench;
pub mod compare;
pub mod eval;
pub mod experiment;
pub mod parity;
pub mod predict;
pub mod search;
pub mod train;

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
