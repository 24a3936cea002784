//! `fmnist-gpu adapters`: lists the adapters wgpu finds, with the index `--adapter` takes and
//! what `--device auto` would pick.

use crate::gpu::select::{
    AdapterEntry, BackendArg, Choice, DeviceArgs, backend_names, choose, list_adapters,
};
use crate::{Error, Result};
use std::io::Write;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct AdaptersArgs {
    /// Print one JSON document on stdout: {"adapters": [...], "auto": {...}}
    #[arg(long)]
    pub json: bool,
    /// List adapters of this graphics API only (default: $WGPU_BACKEND, else vulkan, metal, dx12)
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// With --json: add each adapter's cooperative-matrix configurations (M, N, K, A/B and C
    /// types) as wgpu reports them, for a future tensor-core path
    #[arg(long)]
    pub cooperative_matrix: bool,
}

/// What `--device auto` would do with these adapters (and `WGPU_ADAPTER_NAME`).
fn auto_pick(entries: &[AdapterEntry], backend: Option<BackendArg>) -> serde_json::Value {
    let args = DeviceArgs {
        backend,
        ..DeviceArgs::default()
    };
    let env_name = std::env::var("WGPU_ADAPTER_NAME").ok();
    match choose(entries, &args, env_name.as_deref()) {
        Ok(Choice::Gpu(i)) => serde_json::json!({
            "device": "gpu",
            "index": entries[i].index,
            "name": entries[i].name,
        }),
        Ok(Choice::Cpu { reason }) => serde_json::json!({ "device": "cpu", "reason": reason }),
        // Still list the adapters: that is what the user needs to fix the request.
        Err(e) => serde_json::json!({ "device": null, "error": e.to_string() }),
    }
}

fn table(entries: &[AdapterEntry], auto: &serde_json::Value, searched: &str) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str(&format!(
            "no GPU adapter found (backends searched: {searched})\n"
        ));
    } else {
        let header = ["", "INDEX", "NAME", "TYPE", "BACKEND", "DRIVER"];
        let auto_index = auto.get("index").and_then(|v| v.as_u64());
        let rows: Vec<[String; 6]> = entries
            .iter()
            .map(|e| {
                let usable = if e.missing_limits.is_empty() {
                    String::new()
                } else {
                    format!(" (unusable: lacks {})", e.missing_limits.join(", "))
                };
                [
                    if auto_index == Some(e.index as u64) {
                        "*"
                    } else {
                        ""
                    }
                    .to_string(),
                    e.index.to_string(),
                    e.name.clone(),
                    e.kind.name().to_string(),
                    e.backend.clone(),
                    format!("{}{usable}", e.driver),
                ]
            })
            .collect();
        // The marker column keeps its width when no row is marked, so the layout is fixed.
        let mut width = header.map(|h| h.len().max(1));
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: [&str; 6]| {
            let mut l = String::new();
            for (i, (c, w)) in cells.iter().zip(width).enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(c);
                } else {
                    l.push_str(&format!("{c:<w$}  "));
                }
            }
            l.trim_end().to_string() + "\n"
        };
        out.push_str(&line(header));
        for r in &rows {
            out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
        }
    }
    let auto_line = match auto.get("device").and_then(|v| v.as_str()) {
        Some("gpu") => format!(
            "--device auto picks adapter {} ({}) [*]",
            auto["index"],
            auto["name"].as_str().unwrap_or("")
        ),
        Some(_) => format!(
            "--device auto uses the CPU backend: {}",
            auto["reason"].as_str().unwrap_or("")
        ),
        None => format!(
            "--device auto fails: {}",
            auto["error"].as_str().unwrap_or("")
        ),
    };
    out.push_str(&auto_line);
    out.push('\n');
    out
}

/// The text table or JSON document `run` prints.
pub fn render(args: &AdaptersArgs) -> Result<String> {
    let list = list_adapters(args.backend);
    let auto = auto_pick(&list.entries, args.backend);
    Ok(if args.json {
        let mut doc = serde_json::json!({
            "backends": backend_names(list.backends),
            "adapters": list.entries,
            "auto": auto,
        });
        if args.cooperative_matrix {
            let coop: Vec<serde_json::Value> = list
                .adapters
                .iter()
                .map(|a| {
                    let props: Vec<String> = a
                        .cooperative_matrix_properties()
                        .iter()
                        .map(|p| {
                            format!(
                                "{}x{}x{} {:?}->{:?}{}",
                                p.m_size,
                                p.n_size,
                                p.k_size,
                                p.ab_type,
                                p.cr_type,
                                if p.saturating_accumulation {
                                    " sat"
                                } else {
                                    ""
                                }
                            )
                        })
                        .collect();
                    serde_json::json!({ "name": a.get_info().name, "configurations": props })
                })
                .collect();
            doc["cooperative_matrix"] = serde_json::Value::Array(coop);
        }
        serde_json::to_string_pretty(&doc)
            .map_err(|e| Error::Runtime(format!("encoding the adapter list: {e}")))?
            + "\n"
    } else {
        table(&list.entries, &auto, &backend_names(list.backends))
    })
}

pub fn run(args: &AdaptersArgs) -> Result<()> {
    let text = render(args)?;
    // Not println!: a closed stdout (`| head`) must be an error, not a panic.
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| Error::Runtime(format!("writing to stdout: {e}")))
}
