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
use crate::gpu::buffers::{Dispatch, View, read};
use crate::gpu::tile::Tile;
use crate::gpu::timers::{Clock, GpuTimer};
use crate::model::Layers;
use crate::ops::conv::{ConvKernels, PoolDropout};
use crate::ops::conv_grad::{ConvGradKernels, partial_lens};
use crate::ops::dense::DenseKernels;
use crate::params::{ActParams, ConvGradParams, StepState, dropout_threshold};
use crate::{Error, Result};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
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
    // No entry yet: a miss, not a warning.
    std::fs::symlink_metadata(path).ok()?;
    // Regular files only (a FIFO would block), bounded, UTF-8: the project's input rules.
    let text = match crate::input::read_text(path, 1 << 20, "a tuning cache") {
        Ok(t) => t,
        Err(e) => {
            log::warn!("{e}; ignoring the tuning cache");
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

/// The GEMM roles of the training step, as cache entries name them.
pub const ROLES: [&str; 6] = [
    "conv1.forward",
    "conv2.forward",
    "conv2.backward",
    "conv1.backward",
    "fc1.forward",
    "fc1.backward",
];

/// The tile each GEMM of the training step runs with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StepTiles {
    /// conv.forward_relu_pool of conv1 (no dropout).
    pub conv1_forward: Tile,
    /// conv.forward_relu_pool of conv2, dropout fused.
    pub conv2_forward: Tile,
    /// conv_grad.backward of conv2: weight and bias partials and the input gradient, one dispatch.
    pub conv2_backward: Tile,
    /// conv_grad.backward_weight (partials) of conv1 (its input is the image: no dx).
    pub conv1_backward: Tile,
    /// dense.forward of fc1 (+ReLU).
    pub fc1_forward: Tile,
    /// dense.backward_fused of fc1: dw, db and dx in one dispatch.
    pub fc1_backward: Tile,
}

impl StepTiles {
    /// The tiles of a cache entry or a tuning run; `None` when a role is missing.
    pub fn from_choice(c: &Choice) -> Option<Self> {
        let get = |r: &str| c.get(r).copied();
        Some(Self {
            conv1_forward: get(ROLES[0])?,
            conv2_forward: get(ROLES[1])?,
            conv2_backward: get(ROLES[2])?,
            conv1_backward: get(ROLES[3])?,
            fc1_forward: get(ROLES[4])?,
            fc1_backward: get(ROLES[5])?,
        })
    }

    pub fn to_choice(&self) -> Choice {
        [
            self.conv1_forward,
            self.conv2_forward,
            self.conv2_backward,
            self.conv1_backward,
            self.fc1_forward,
            self.fc1_backward,
        ]
        .into_iter()
        .zip(ROLES)
        .map(|(t, r)| (r.to_string(), t))
        .collect()
    }
}

/// Where [`step_tiles`] got its tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStatus {
    /// `--tune off`: the defaults, cache not read.
    Off,
    /// The cached choice for this adapter, shaders and shape.
    Hit,
    /// Not cached: measured now (hardware adapter) and stored when there is a cache directory.
    Tuned,
    /// Not cached and not measured: the defaults (software adapter, or a shape whose synthetic
    /// buffers exceed the device's limits).
    Defaults,
}

/// Largest batch `fmnist-gpu tune` accepts: its synthetic conv1 map (36 KiB per image) stays
/// well inside the 128 MiB storage binding every adapter we run on offers.
pub const MAX_TUNE_BATCH: u32 = 2048;

/// Synthetic inputs of one step's shapes and the outputs the roles write, with the kernels.
///
/// The forward roles read random images and weights; the backward roles read the pooled maps
/// and argmaxes a real forward produced (random ones would not be valid argmax encodings) and
/// random gradients. Every role writes its own output buffers, so roles can be measured in any
/// order without feeding each other.
pub struct StepBuffers {
    layers: Layers,
    drop: ActParams,
    conv: ConvKernels,
    grad: ConvGradKernels,
    dense: DenseKernels,
    x: wgpu::Buffer,
    w1: wgpu::Buffer,
    b1: wgpu::Buffer,
    w2: wgpu::Buffer,
    b2: wgpu::Buffer,
    state: wgpu::Buffer,
    p1: wgpu::Buffer,
    am1: wgpu::Buffer,
    p2: wgpu::Buffer,
    am2: wgpu::Buffer,
    dd1: wgpu::Buffer,
    dd2: wgpu::Buffer,
    out_p1: wgpu::Buffer,
    out_am1: wgpu::Buffer,
    out_p2: wgpu::Buffer,
    out_am2: wgpu::Buffer,
    out_d2: wgpu::Buffer,
    out_dw2: wgpu::Buffer,
    out_db2: wgpu::Buffer,
    out_dx2: wgpu::Buffer,
    out_dw1: wgpu::Buffer,
    out_db1: wgpu::Buffer,
    /// fc1: its weights and bias, the gradient at its (ReLU) output, and the outputs.
    wf: wgpu::Buffer,
    bf: wgpu::Buffer,
    dh: wgpu::Buffer,
    out_h: wgpu::Buffer,
    out_dwf: wgpu::Buffer,
    out_dbf: wgpu::Buffer,
    out_dxf: wgpu::Buffer,
}

/// The dropout the conv2 roles run with: the net's when it has one, else p = 0.4 (the shape
/// key has no dropout, and a step with dropout is the one that runs in training).
fn tuning_dropout(l: &Layers) -> ActParams {
    let mut d = l.drop;
    if d.threshold == 0 {
        d.threshold = dropout_threshold(0.4);
        d.scale = 1.0 / 0.6;
    }
    d.n = l.pool2.y_len() as u32;
    d
}

/// The largest buffer [`StepBuffers`] makes for `l`, in bytes.
fn largest_buffer(l: &Layers) -> u64 {
    let g2 = ConvGradParams::new(&l.conv2, Some(&l.drop));
    let g1 = ConvGradParams::new(&l.conv1, None);
    [
        l.conv1.x_len(),
        l.pool1.y_len(),
        l.conv2.x_len(),
        partial_lens(&g2).0,
        partial_lens(&g1).0,
        l.fc1.n_out as usize * l.fc1.n_in as usize,
        l.fc1.batch as usize * l.fc1.n_in as usize,
    ]
    .into_iter()
    .max()
    .unwrap_or(0) as u64
        * 4
}

/// Whether the device can hold the synthetic buffers of `l` (and so run its step at all).
pub fn step_fits(ctx: &GpuContext, l: &Layers) -> bool {
    let b = largest_buffer(l);
    b <= ctx.limits.max_storage_buffer_binding_size && b <= ctx.limits.max_buffer_size
}

impl StepBuffers {
    /// Random inputs (fixed seed) and one default-tile forward for the pooled maps.
    pub fn new(ctx: &GpuContext, layers: &Layers) -> Result<Self> {
        use crate::gpu::buffers::{run_once, storage, storage_init};
        let l = *layers;
        if !step_fits(ctx, &l) {
            return Err(Error::BadArg(format!(
                "batch {}: the tuning buffers need {} MiB, more than {} allows",
                l.batch,
                largest_buffer(&l) >> 20,
                ctx.adapter.name
            )));
        }
        let drop = tuning_dropout(&l);
        let mut rng = ChaCha8Rng::seed_from_u64(0x7475_6e65);
        let mut rand =
            |n: usize, r: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(-r..r)).collect() };
        let f = |label: &str, v: &[f32]| storage_init(ctx, label, v);
        let zeros = |label: &str, n: usize| storage(ctx, label, n as u64 * 4);
        let (n1, n2) = (l.pool1.y_len(), l.pool2.y_len());
        let g2 = ConvGradParams::new(&l.conv2, Some(&drop));
        let g1 = ConvGradParams::new(&l.conv1, None);
        let (w2l, b2l) = partial_lens(&g2);
        let (w1l, b1l) = partial_lens(&g1);
        let fc = l.fc1;
        let (fw, fh, fx) = (
            (fc.n_out * fc.n_in) as usize,
            (fc.batch * fc.n_out) as usize,
            (fc.batch * fc.n_in) as usize,
        );
        let bufs = Self {
            conv: ConvKernels::new(ctx)?,
            grad: ConvGradKernels::new(ctx)?,
            dense: DenseKernels::new(ctx)?,
            x: f("tune x", &rand(l.conv1.x_len(), 1.0)),
            w1: f("tune w1", &rand(l.conv1.w_len(), 0.2)),
            b1: f("tune b1", &rand(l.conv1.c_out as usize, 0.1)),
            w2: f("tune w2", &rand(l.conv2.w_len(), 0.05)),
            b2: f("tune b2", &rand(l.conv2.c_out as usize, 0.1)),
            state: storage_init(
                ctx,
                "tune state",
                &[StepState {
                    epoch_step: 1,
                    t: 5,
                    n: 0,
                    batch: l.batch,
                }],
            ),
            p1: zeros("tune p1", n1),
            am1: zeros("tune argmax1", n1),
            p2: zeros("tune p2", n2),
            am2: zeros("tune argmax2", n2),
            dd1: f("tune dd1", &rand(n1, 1.0)),
            dd2: f("tune dd2", &rand(n2, 1.0)),
            out_p1: zeros("tune out p1", n1),
            out_am1: zeros("tune out argmax1", n1),
            out_p2: zeros("tune out p2", n2),
            out_am2: zeros("tune out argmax2", n2),
            out_d2: zeros("tune out d2", n2),
            out_dw2: zeros("tune out dw2", w2l),
            out_db2: zeros("tune out db2", b2l),
            out_dx2: zeros("tune out dx2", l.conv2.x_len()),
            out_dw1: zeros("tune out dw1", w1l),
            out_db1: zeros("tune out db1", b1l),
            wf: f("tune wf", &rand(fw, 0.05)),
            bf: f("tune bf", &rand(l.fc1.n_out as usize, 0.1)),
            dh: f("tune dh", &rand(fh, 1.0)),
            out_h: zeros("tune out h", fh),
            out_dwf: zeros("tune out dwf", fw),
            out_dbf: zeros("tune out dbf", l.fc1.n_out as usize),
            out_dxf: zeros("tune out dxf", fx),
            layers: l,
            drop,
        };
        let scratch_d = zeros("tune scratch d2", n2);
        let b = &bufs;
        let mut ds = b.conv.forward_relu_pool(
            ctx,
            &l.conv1,
            Tile::DEFAULT,
            None,
            &b.x,
            &b.w1,
            &b.b1,
            &b.p1,
            &b.am1,
        )?;
        ds.extend(b.conv.forward_relu_pool(
            ctx,
            &l.conv2,
            Tile::DEFAULT,
            Some(PoolDropout {
                params: &b.drop,
                state: View::whole(&b.state),
                d: View::whole(&scratch_d),
            }),
            &b.p1,
            &b.w2,
            &b.b2,
            &b.p2,
            &b.am2,
        )?);
        run_once(ctx, &ds)?;
        Ok(bufs)
    }

    pub fn layers(&self) -> &Layers {
        &self.layers
    }
}

/// The [`ROLES`] of the step whose buffers are `b`, each building its dispatches for a tile
/// and naming every buffer it writes.
pub fn step_roles<'a>(ctx: &'a GpuContext, b: &'a StepBuffers) -> Vec<Role<'a>> {
    let l = b.layers;
    let w = View::whole;
    let words = |buf: &wgpu::Buffer| (buf.size() / 4) as usize;
    let g2 = ConvGradParams::new(&l.conv2, Some(&b.drop));
    let g1 = ConvGradParams::new(&l.conv1, None);
    vec![
        Role {
            name: ROLES[0],
            build: Box::new(move |tile| {
                b.conv.forward_relu_pool(
                    ctx, &l.conv1, tile, None, &b.x, &b.w1, &b.b1, &b.out_p1, &b.out_am1,
                )
            }),
            outputs: vec![
                (&b.out_p1, words(&b.out_p1)),
                (&b.out_am1, words(&b.out_am1)),
            ],
        },
        Role {
            name: ROLES[1],
            build: Box::new(move |tile| {
                b.conv.forward_relu_pool(
                    ctx,
                    &l.conv2,
                    tile,
                    Some(PoolDropout {
                        params: &b.drop,
                        state: w(&b.state),
                        d: w(&b.out_d2),
                    }),
                    &b.p1,
                    &b.w2,
                    &b.b2,
                    &b.out_p2,
                    &b.out_am2,
                )
            }),
            outputs: vec![
                (&b.out_p2, words(&b.out_p2)),
                (&b.out_am2, words(&b.out_am2)),
                (&b.out_d2, words(&b.out_d2)),
            ],
        },
        Role {
            name: ROLES[2],
            build: Box::new(move |tile| {
                b.grad.backward(
                    ctx,
                    &g2,
                    tile,
                    Some(&b.state),
                    w(&b.am2),
                    w(&b.p2),
                    w(&b.dd2),
                    w(&b.p1),
                    w(&b.w2),
                    w(&b.out_dw2),
                    w(&b.out_db2),
                    w(&b.out_dx2),
                )
            }),
            outputs: vec![
                (&b.out_dw2, words(&b.out_dw2)),
                (&b.out_db2, words(&b.out_db2)),
                (&b.out_dx2, words(&b.out_dx2)),
            ],
        },
        Role {
            name: ROLES[3],
            build: Box::new(move |tile| {
                b.grad.backward_weight_partials(
                    ctx,
                    &g1,
                    tile,
                    None,
                    w(&b.am1),
                    w(&b.p1),
                    w(&b.dd1),
                    w(&b.x),
                    w(&b.out_dw1),
                    w(&b.out_db1),
                )
            }),
            outputs: vec![
                (&b.out_dw1, words(&b.out_dw1)),
                (&b.out_db1, words(&b.out_db1)),
            ],
        },
        // fc1 reads pool2's output (the real forward's), as in the step without dropout.
        Role {
            name: ROLES[4],
            build: Box::new(move |tile| {
                b.dense
                    .forward(ctx, &l.fc1, tile, &b.p2, &b.wf, &b.bf, &b.out_h)
            }),
            outputs: vec![(&b.out_h, words(&b.out_h))],
        },
        Role {
            name: ROLES[5],
            build: Box::new(move |tile| {
                b.dense.backward_fused(
                    ctx, &l.fc1, tile, &b.p2, &b.dh, &b.wf, &b.out_dwf, &b.out_dbf, &b.out_dxf,
                )
            }),
            outputs: vec![
                (&b.out_dwf, words(&b.out_dwf)),
                (&b.out_dbf, words(&b.out_dbf)),
                (&b.out_dxf, words(&b.out_dxf)),
            ],
        },
    ]
}

/// Measures every role of `layers`' step on `ctx` and stores the choice; returns the tiles, the
/// measurements and the cache file (`None` when there is no cache directory).
pub fn tune_step(
    ctx: &GpuContext,
    layers: &Layers,
) -> Result<(StepTiles, Vec<RoleResult>, Option<PathBuf>)> {
    let bufs = StepBuffers::new(ctx, layers)?;
    let results = step_roles(ctx, &bufs)
        .iter()
        .map(|r| measure(ctx, r))
        .collect::<Result<Vec<_>>>()?;
    let mut choice = Choice::new();
    for r in &results {
        let t = r
            .choice
            .parse::<Tile>()
            .map_err(|e| Error::Runtime(format!("internal: tuned tile: {e}")))?;
        choice.insert(r.role.clone(), t);
    }
    let tiles = StepTiles::from_choice(&choice)
        .ok_or_else(|| Error::Runtime("internal: a step role was not measured".into()))?;
    let path = store(ctx, &shape_key(layers.batch, layers.hidden), &choice)?;
    Ok((tiles, results, path))
}

/// The tiles the training step of `layers` should use on `ctx` (see [`TuneMode`]).
pub fn step_tiles(ctx: &GpuContext, layers: &Layers) -> Result<(StepTiles, CacheStatus)> {
    if mode() == TuneMode::Off {
        return Ok((StepTiles::default(), CacheStatus::Off));
    }
    if cfg!(target_arch = "wasm32") {
        // A page has no cache directory to keep a choice in and no clock fine enough to time
        // kernels; the defaults are the tiles every device's kernel table checks.
        return Ok((StepTiles::default(), CacheStatus::Defaults));
    }
    let shape = shape_key(layers.batch, layers.hidden);
    if let Some(tiles) = lookup(ctx, &shape, &ROLES).and_then(|c| StepTiles::from_choice(&c)) {
        return Ok((tiles, CacheStatus::Hit));
    }
    if ctx.info.device_type == wgpu::DeviceType::Cpu {
        // Timing on a software rasteriser says little and takes long; `fmnist-gpu tune
        // --adapter software` does it on request.
        log::debug!(
            "tune: no cached tiles for {shape} on {}; software adapter, using the defaults",
            ctx.adapter.name
        );
        return Ok((StepTiles::default(), CacheStatus::Defaults));
    }
    if !step_fits(ctx, layers) {
        log::debug!(
            "tune: {shape} exceeds {}'s buffer limits; using the default tiles",
            ctx.adapter.name
        );
        return Ok((StepTiles::default(), CacheStatus::Defaults));
    }
    let (tiles, _, path) = tune_step(ctx, layers)?;
    log::info!(
        "tune: tuned the GEMM tiles for {shape} on {} (conv1 {} / {}, conv2 {} / {}, fc1 {} / {} \
         forward / backward); {}",
        ctx.adapter.name,
        tiles.conv1_forward.name(),
        tiles.conv1_backward.name(),
        tiles.conv2_forward.name(),
        tiles.conv2_backward.name(),
        tiles.fc1_forward.name(),
        tiles.fc1_backward.name(),
        match &path {
            Some(p) => format!("stored in {}", p.display()),
            None => "not stored (no cache directory: set FMNIST_TUNE_CACHE)".to_string(),
        }
    );
    Ok((tiles, CacheStatus::Tuned))
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
    fn step_tiles_round_trip_through_a_choice() {
        let t = StepTiles {
            conv1_forward: Tile::CANDIDATES[1],
            conv2_forward: Tile::CANDIDATES[2],
            conv2_backward: Tile::CANDIDATES[3],
            conv1_backward: Tile::CANDIDATES[4],
            fc1_forward: Tile::CANDIDATES[3],
            fc1_backward: Tile::CANDIDATES[1],
        };
        let c = t.to_choice();
        assert_eq!(c.keys().count(), ROLES.len());
        assert_eq!(StepTiles::from_choice(&c), Some(t));
        let mut partial = c.clone();
        partial.remove(ROLES[2]);
        assert_eq!(StepTiles::from_choice(&partial), None);
        assert_eq!(StepTiles::default().conv1_forward, Tile::DEFAULT);
    }

    /// The synthetic buffers of the default batch sizes fit WebGPU's default 128 MiB binding;
    /// the largest batch `tune` accepts needs at most that.
    #[test]
    fn tuning_buffers_fit_the_default_binding() {
        let limit = wgpu::Limits::defaults().max_storage_buffer_binding_size;
        for b in [1, 128, 512, MAX_TUNE_BATCH] {
            let l = Layers::new(b, 128, 0.4, 0);
            assert!(
                largest_buffer(&l) <= limit,
                "batch {b}: {}",
                largest_buffer(&l)
            );
        }
    }

    #[test]
    fn fnv_is_the_published_function() {
        // FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b"", FNV_OFFSET), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a", FNV_OFFSET), 0xaf63dc4c8601ec8c);
    }
}
