//! `fmnist-gpu parity`: the PyTorch fixture through a chosen device (SPEC 10), or the GPU kernel
//! table against the CPU reference.

use crate::fixture::{Fixture, Row, check};
use crate::net::{NetData, cpu::CpuNet, gpu::GpuNet};
use crate::{Error, Result};
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct ParityArgs {
    /// A PyTorch reference of the SPEC 10 form (safetensors). Without it, runs the kernel table:
    /// every GPU kernel against its CPU twin (needs a GPU adapter, e.g. --adapter software)
    #[arg(value_parser = super::utf8_path, long)]
    pub fixture: Option<PathBuf>,
    #[command(flatten)]
    pub device: super::DeviceArgs,
    /// Print one JSON document on stdout (logs go to stderr)
    #[arg(long)]
    pub json: bool,
}

pub fn print_rows(title: &str, rows: &[Row], json: bool) {
    if json {
        return;
    }
    println!("{title}");
    println!(
        "{:<28} {:>12} {:>12} {:>9}  result",
        "tensor", "rel L2 err", "max |err|", "tol"
    );
    for r in rows {
        println!(
            "{:<28} {:>12.3e} {:>12.3e} {:>9.0e}  {}",
            r.tensor,
            r.rel_l2,
            r.max_abs,
            r.tol,
            if r.ok { "ok" } else { "FAIL" }
        );
    }
}

pub fn run(args: &ParityArgs) -> Result<()> {
    let Some(path) = &args.fixture else {
        return crate::parity::run_table(&args.device, args.json);
    };
    let f = Fixture::load(path)?;
    let selected = crate::gpu::select::open(&args.device)?;
    let (device, adapter, rows) = match selected {
        crate::gpu::Selected::Cpu { reason } => {
            log::info!("device: CPU reference backend ({reason})");
            let rows = check(&f, &mut |cfg| {
                Ok(Box::new(CpuNet::new(
                    cfg,
                    NetData::empty(),
                    f.params.clone(),
                )))
            })?;
            ("cpu", None, rows)
        }
        crate::gpu::Selected::Gpu(ctx) => {
            let adapter = ctx.adapter.clone();
            let rows = check(&f, &mut |cfg| {
                Ok(Box::new(GpuNet::new(
                    ctx.clone(),
                    cfg,
                    NetData::empty(),
                    f.params.clone(),
                )?))
            })?;
            ("gpu", Some(adapter), rows)
        }
    };
    let failed = rows.iter().filter(|r| !r.ok).count();
    if args.json {
        let doc = serde_json::json!({
            "fixture": path, "device": device, "adapter": adapter,
            "batch": f.batch, "hidden": f.hidden,
            "passed": failed == 0, "rows": rows,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("plain data")
        );
    } else {
        print_rows(
            &format!(
                "fixture {} (batch {}, hidden {}) on {}{}",
                path.display(),
                f.batch,
                f.hidden,
                device,
                adapter
                    .as_ref()
                    .map(|a| format!(" ({})", a.name))
                    .unwrap_or_default()
            ),
            &rows,
            false,
        );
        println!(
            "{} of {} tensors within tolerance",
            rows.len() - failed,
            rows.len()
        );
    }
    if failed > 0 {
        return Err(Error::Runtime(format!(
            "parity failed: {failed} tensor(s) out of tolerance against {}",
            path.display()
        )));
    }
    Ok(())
}
