//! Per-adapter autotuning of the GEMM tile variants, with a persistent cache.
//!
//! Each GEMM role of the training step (conv1/conv2 forward, their fused backward, the dense
//! layers) has tile variants ([`Tile`]) that compute bit-identical results. `tune` times every
//! variant of every role on the present adapter (timestamp queries where the device has them,
//! wall clock otherwise), checks each against the default variant bit for bit, and keeps the
//! fastest. The choice is stored in the user cache directory, one file per adapter identity
//! (name, vendor and device id, driver, backend) and shader-source hash, with an entry per
//! (batch, hidden) shape. A file that is corrupt, truncated or written for another adapter or
//! other shaders is ignored with one warning and measured again: never a crash, never a tile
//! the device cannot run.

use crate::gpu::GpuContext;
use crate::gpu::buffers::{Dispatch, read};
use crate::gpu::tile::Tile;
use crate::gpu::timers::{Clock, GpuTimer};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};

/// Every shader source: a change to any of them invalidates the cache.
const SHADERS: &[(&str, &str)] = &[
    ("act.wgsl", include_str!("../shaders/act.wgsl")),
    ("conv.wgsl", include_str!("../shaders/conv.wgsl")),
    ("conv_grad.wgsl", include_str!("../shaders/conv_grad.wgsl")),
    ("data.wgsl", include_str!("../shaders/data.wgsl")),
    ("dense.wgsl", include_str!("../shaders/dense.wgsl")),
    ("head.wgsl", include_str!("../shaders/head.wgsl")),
    ("loss.wgsl", include_str!("../shaders/loss.wgsl")),
    ("optim.wgsl", include_str!("../shaders/optim.wgsl")),
    ("pool.wgsl", include_str!("../shaders/pool.wgsl")),
    ("reduce.wgsl", include_str!("../shaders/reduce.wgsl")),
];

const FORMAT: &str = "fmnist-gpu tune cache v1";

/// The names of the shader files hashed into the cache key (tests check none is missing).
pub fn hashed_shader_files() -> Vec<&'static str> {
    SHADERS.iter().map(|(n, _)| *n).collect()
}

/// 64-bit FNV-1a: stable across Rust versions and machines, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

pub fn shader_hash() -> String {
    let mut h = FNV_OFFSET;
    for (name, src) in SHADERS {
        h = fnv1a(name.as_bytes(), h);
        h = fnv1a(&[0], h);
        h = fnv1a(src.as_bytes(), h);
        h = fnv1a(&[0], h);
    }
    format!("{h:016x}")
}

/// What a cache entry is valid for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    pub adapter: String,
    pub vendor: u32,
    pub device_id: u32,
    pub driver: String,
    pub driver_info: String,
    pub backend: String,
    pub wgpu: String,
    pub shaders: String,
    /// Whether the modules were built with naga's runtime checks: a different build of the same
    /// kernels, timed separately.
    pub trusted: bool,
}

impl CacheKey {
    pub fn of(ctx: &GpuContext) -> Self {
        Self {
            adapter: ctx.info.name.clone(),
            vendor: ctx.info.vendor,
            device_id: ctx.info.device,
            driver: ctx.info.driver.clone(),
            driver_info: ctx.info.driver_info.clone(),
            backend: format!("{:?}", ctx.info.backend).to_lowercase(),
            wgpu: "30.0.2".into(),
            shaders: shader_hash(),
            trusted: ctx.trusted,
        }
    }

    fn file_name(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        let slug: String = self
            .adapter
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        format!("{slug}-{:016x}.json", fnv1a(text.as_bytes(), FNV_OFFSET))
    }
}

/// The tile chosen for each role of one (batch, hidden) shape, by role name.
pub type Choice = BTreeMap<String, Tile>;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CacheFile {
    format: String,
    key: CacheKey,
    /// `"b{batch}_h{hidden}"` -> role -> tile name.
    entries: BTreeMap<String, BTreeMap<String, String>>,
}

pub fn shape_key(batch: u32, hidden: u32) -> String {
    format!("b{batch}_h{hidden}")
}

/// Where tuning results live: `$FMNIST_TUNE_CACHE`, else `$XDG_CACHE_HOME/fmnist-gpu/tune`, else
/// `$HOME/.cache/fmnist-gpu/tune`; `None` when none is known (nothing is stored then).
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("FMNIST_TUNE_CACHE") {
        return Some(d);
    }
    crate::data::Places::from_env()
        .cache
        .map(|c| c.join("tune"))
}

/// The cache file for `key`, when there is a cache directory.
pub fn cache_path(key: &CacheKey) -> Option<PathBuf> {
    cache_dir().map(|d| d.join(key.file_name()))
}

/// Reads the entry for `shape` from the cache; `None` (with one warning for a bad file) when
/// there is none or it cannot be trusted. Tiles the device cannot run count as a bad entry.
pub fn lookup(ctx: &GpuContext, shape: &str, roles: &[&str]) -> Option<Choice> {
    let key = CacheKey::of(ctx);
    let path = cache_path(&key)?;
    let file = read_file(&path, &key)?;
    let entry = file.entries.get(shape)?;
    let allowed = Tile::candidates(&ctx.limits);
    let mut out = Choice::new();
    for role in roles {
        let Some(name) = entry.get(*role) else {
            log::warn!("{}: no entry for {role}; tuning again", path.display());
            return None;
        };
        match name.parse::<Tile>() {
            Ok(t) if allowed.contains(&t) => {
                out.insert(role.to_string(), t);
            }
            _ => {
                log::warn!(
                    "{}: {role} = {name:?} is not a tile this adapter can run; tuning again",
                    path.display()
                );
                return None;
            }
        }
    }
    Some(out)
}

/// The cache file at `path` if it is whole, ours and for `key` (else one warning and `None`).
fn read_file(path: &std::path::Path, key: &CacheKey) -> Option<CacheFile> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > 1 << 20 {
        log::warn!(
            "{}: not a regular file of at most 1 MiB; ignoring the tuning cache",
            path.display()
        );
        return None;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            log::warn!(
                "{}: unreadable ({e}); ignoring the tuning cache",
                path.display()
            );
            return None;
        }
    };
    match serde_json::from_str::<CacheFile>(&text) {
        Ok(f) if f.format == FORMAT && f.key == *key => Some(f),
        Ok(_) => {
            log::warn!(
                "{}: written for another adapter, driver or shader build; measuring again",
                path.display()
            );
            None
        }
        Err(e) => {
            log::warn!(
                "{}: corrupt tuning cache ({e}); measuring again",
                path.display()
            );
            None
        }
    }
}

/// Stores `choice` for `shape`, keeping the file's other shapes; atomic (temp file + rename).
pub fn store(ctx: &GpuContext, shape: &str, choice: &Choice) -> Result<Option<PathBuf>> {
    let key = CacheKey::of(ctx);
    let Some(path) = cache_path(&key) else {
        return Ok(None);
    };
    let mut file = read_file(&path, &key).unwrap_or(CacheFile {
        format: FORMAT.into(),
        key,
        entries: BTreeMap::new(),
    });
    file.entries.insert(
        shape.to_string(),
        choice.iter().map(|(r, t)| (r.clone(), t.name())).collect(),
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let text = serde_json::to_string_pretty(&file)
        .map_err(|e| Error::Runtime(format!("encoding the tuning cache: {e}")))?;
    crate::checkpoint::write_atomic(&path, text.as_bytes())?;
    Ok(Some(path))
}

/// Whether nets look up (and on hardware adapters fill) the cache, or use the default tiles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TuneMode {
    #[default]
    /// Use the cached choice; with none, tune on first use on hardware adapters (one log line)
    /// and use the defaults on software adapters (run `fmnist-gpu tune` to tune those).
    Auto,
    /// Default tiles, no cache.
    Off,
}

static MODE: AtomicU8 = AtomicU8::new(0);

/// Sets the process-wide tuning mode (commands call this from their `--tune` flag).
pub fn set_mode(m: TuneMode) {
    MODE.store(m as u8, Ordering::Relaxed);
}

pub fn mode() -> TuneMode {
    if MODE.load(Ordering::Relaxed) == TuneMode::Off as u8 {
        TuneMode::Off
    } else {
        TuneMode::Auto
    }
}

/// One GEMM role to tune: builds its dispatches for a tile, and names the buffers it writes.
pub struct Role<'a> {
    pub name: &'static str,
    pub build: Box<dyn Fn(Tile) -> Result<Vec<Dispatch>> + 'a>,
    /// Output buffers and their length in 4-byte words (compared bit for bit).
    pub outputs: Vec<(&'a wgpu::Buffer, usize)>,
}

/// What `tune` measured for one candidate of one role.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub tile: String,
    pub seconds: f64,
    /// Output equal to the default variant's, bit for bit.
    pub identical: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RoleResult {
    pub role: String,
    pub choice: String,
    pub clock: Clock,
    pub candidates: Vec<Candidate>,
}

/// Dispatches per timed pass (amortises the pass boundary) and timed repetitions (best kept).
const REPEAT: usize = 8;
const REPS: usize = 3;

/// Times every candidate of `role` and picks the fastest bit-identical one; a candidate within
/// 2 % of a faster one that comes earlier in [`Tile::CANDIDATES`] wins the tie (timing noise).
pub fn measure(ctx: &GpuContext, role: &Role) -> Result<RoleResult> {
    let outputs = |d: &[Dispatch]| -> Result<Vec<Vec<u32>>> {
        crate::gpu::buffers::run_once(ctx, d)?;
        role.outputs
            .iter()
            .map(|(b, n)| read::<u32>(ctx, b, *n))
            .collect()
    };
    let reference = outputs(&(role.build)(Tile::DEFAULT)?)?;
    let timer = GpuTimer::new(ctx, 1);
    let mut clock = timer.clock();
    let mut cands = Vec::new();
    for tile in Tile::candidates(&ctx.limits) {
        let list = (role.build)(tile)?;
        let identical = outputs(&list)? == reference;
        let repeated: Vec<Dispatch> = (0..REPEAT).flat_map(|_| list.iter().cloned()).collect();
        let mut best = f64::INFINITY;
        for _ in 0..REPS {
            let t = timer.time_passes(&[&repeated])?;
            if t.clock == Clock::WallClock {
                clock = Clock::WallClock;
            }
            best = best.min(t.seconds[0] / REPEAT as f64);
        }
        cands.push(Candidate {
            tile: tile.name(),
            seconds: best,
            identical,
        });
    }
    if let Some(bad) = cands.iter().find(|c| !c.identical) {
        // Every variant must compute the same numbers; one that does not is a kernel bug.
        return Err(Error::Gpu(format!(
            "{}: {} tile {} differs from the default tile's output",
            ctx.adapter.name, role.name, bad.tile
        )));
    }
    let mut pick = 0;
    for (i, c) in cands.iter().enumerate() {
        if c.seconds < cands[pick].seconds * 0.98 {
            pick = i;
        }
    }
    Ok(RoleResult {
        role: role.name.to_string(),
        choice: cands[pick].tile.clone(),
        clock,
        candidates: cands,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shader_file_is_hashed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".wgsl"))
            .collect();
        files.sort();
        let mut hashed: Vec<String> = hashed_shader_files()
            .iter()
            .map(|s| s.to_string())
            .collect();
        hashed.sort();
        assert_eq!(files, hashed);
    }

    #[test]
    fn fnv_is_the_published_function() {
        // FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b"", FNV_OFFSET), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a", FNV_OFFSET), 0xaf63dc4c8601ec8c);
    }
}
