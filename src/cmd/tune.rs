//! `fmnist-gpu tune`: times every tile variant of the training step's conv and fc1 GEMMs on the
//! chosen adapter for each batch size, stores the fastest in the tuning cache, and reports them.

use crate::gpu::Selected;
use crate::gpu::context::AdapterSummary;
use crate::gpu::timers::Clock;
use crate::model::Layers;
use crate::tune::{
    CacheKey, Candidate, MAX_TUNE_BATCH, ROLES, StepTiles, TuneMode, cache_path, lookup, shape_key,
    step_fits, tune_step,
};
use crate::{Error, Result};
use serde::Serialize;

#[derive(clap::Args, Clone, Debug)]
pub struct TuneArgs {
    /// Batch sizes to tune, comma separated (each one a separate cache entry).
    #[arg(long, value_delimiter = ',', default_values_t = vec![128u32, 512])]
    pub batch_sizes: Vec<u32>,
    /// Units of the hidden dense layer (part of the cache entry's shape, as in `train`).
    #[arg(long, default_value_t = 128)]
    pub hidden: u32,
    /// Measure again even when every shape is already cached.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub device: super::DeviceArgs,
    /// Print one JSON document on stdout (logs stay on stderr).
    #[arg(long)]
    pub json: bool,
}

impl TuneArgs {
    pub fn validate(&self) -> Result<()> {
        if self.batch_sizes.is_empty() {
            return Err(Error::BadArg(
                "--batch-sizes needs at least one size".into(),
            ));
        }
        if let Some(b) = self
            .batch_sizes
            .iter()
            .find(|&&b| b == 0 || b > MAX_TUNE_BATCH)
        {
            return Err(Error::BadArg(format!(
                "--batch-sizes: {b} is not in 1..={MAX_TUNE_BATCH}"
            )));
        }
        let mut seen = self.batch_sizes.clone();
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::BadArg(
                "--batch-sizes: a batch size is given twice".into(),
            ));
        }
        super::at_least_one("--hidden", self.hidden as u64)?;
        if self.device.tune == TuneMode::Off {
            return Err(Error::BadArg(
                "--tune off uses the default tiles; it makes no sense with `tune`".into(),
            ));
        }
        Ok(())
    }
}

/// One role of one shape: measured now, or read from the cache (`candidates` empty).
#[derive(Clone, Debug, Serialize)]
pub struct RoleReport {
    pub role: String,
    pub choice: String,
    /// How the candidates were timed; `None` for a cached entry.
    pub clock: Option<Clock>,
    pub candidates: Vec<Candidate>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BatchReport {
    pub batch: u32,
    pub hidden: u32,
    /// Read from the cache rather than measured.
    pub cached: bool,
    pub roles: Vec<RoleReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TuneReport {
    pub adapter: AdapterSummary,
    /// `"hit"` when every asked shape was cached (and `--force` not given), else `"miss"`.
    pub cache: &'static str,
    /// The cache file; `None` when no cache directory is known (nothing stored).
    pub path: Option<String>,
    pub results: Vec<BatchReport>,
}

fn cached(tiles: &StepTiles) -> Vec<RoleReport> {
    let choice = tiles.to_choice();
    ROLES
        .iter()
        .map(|r| RoleReport {
            role: r.to_string(),
            choice: choice[*r].name(),
            clock: None,
            candidates: Vec::new(),
        })
        .collect()
}

pub fn run(args: &TuneArgs) -> Result<()> {
    args.validate()?;
    let ctx = match crate::gpu::select::open(&args.device)? {
        Selected::Gpu(ctx) => ctx,
        Selected::Cpu { reason } => {
            return Err(Error::NoAdapter(format!(
                "tune measures GPU kernels, but the CPU backend was chosen ({reason}); pick an \
                 adapter with --adapter (software for lavapipe)"
            )));
        }
    };
    let layers: Vec<Layers> = args
        .batch_sizes
        .iter()
        .map(|&b| Layers::new(b, args.hidden, 0.4, 0))
        .collect();
    if let Some(l) = layers.iter().find(|l| !step_fits(&ctx, l)) {
        return Err(Error::BadArg(format!(
            "--batch-sizes: batch {} needs buffers larger than {} allows",
            l.batch, ctx.adapter.name
        )));
    }
    let hits: Vec<Option<StepTiles>> = layers
        .iter()
        .map(|l| {
            if args.force {
                None
            } else {
                lookup(&ctx, &shape_key(l.batch, l.hidden), &ROLES)
                    .and_then(|c| StepTiles::from_choice(&c))
            }
        })
        .collect();
    let all_hit = hits.iter().all(Option::is_some);
    let mut path = cache_path(&CacheKey::of(&ctx)).map(|p| p.display().to_string());
    let mut results = Vec::new();
    for (l, hit) in layers.iter().zip(hits) {
        let roles = match hit {
            Some(t) => {
                results.push(BatchReport {
                    batch: l.batch,
                    hidden: l.hidden,
                    cached: true,
                    roles: cached(&t),
                });
                continue;
            }
            None => {
                log::info!("tune: measuring batch {} on {}", l.batch, ctx.adapter.name);
                let (_, measured, stored) = tune_step(&ctx, l)?;
                if let Some(p) = stored {
                    path = Some(p.display().to_string());
                }
                measured
                    .into_iter()
                    .map(|r| RoleReport {
                        role: r.role,
                        choice: r.choice,
                        clock: Some(r.clock),
                        candidates: r.candidates,
                    })
                    .collect()
            }
        };
        results.push(BatchReport {
            batch: l.batch,
            hidden: l.hidden,
            cached: false,
            roles,
        });
    }
    let report = TuneReport {
        adapter: ctx.adapter.clone(),
        cache: if all_hit { "hit" } else { "miss" },
        path,
        results,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Runtime(format!("encoding the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The human-readable report: one table per batch size.
pub fn render(r: &TuneReport) -> String {
    let mut s = format!(
        "fmnist-gpu tune: {} ({}, {}); cache {} ({})\n",
        r.adapter.name,
        r.adapter.device_type,
        r.adapter.backend,
        r.cache,
        r.path
            .as_deref()
            .unwrap_or("no cache directory: nothing stored"),
    );
    for b in &r.results {
        s.push_str(&format!(
            "\nbatch {}, hidden {}{}\n",
            b.batch,
            b.hidden,
            if b.cached { " (cached)" } else { "" }
        ));
        s.push_str(&format!(
            "  {:<16} {:>9} {:>12} {:>9} {:>6}\n",
            "role", "candidate", "seconds", "identical", "chosen"
        ));
        for role in &b.roles {
            if role.candidates.is_empty() {
                s.push_str(&format!(
                    "  {:<16} {:>9} {:>12} {:>9} {:>6}\n",
                    role.role, role.choice, "-", "-", "*"
                ));
            }
            for c in &role.candidates {
                s.push_str(&format!(
                    "  {:<16} {:>9} {:>12.6e} {:>9} {:>6}\n",
                    role.role,
                    c.tile,
                    c.seconds,
                    if c.identical { "yes" } else { "NO" },
                    if c.tile == role.choice { "*" } else { "" }
                ));
            }
        }
    }
    s
}
