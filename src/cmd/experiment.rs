//! What `search` and `compare` share: list flags, the devices trials run on (several at once with
//! `--adapter all`), a job runner with one thread per device, statistics and the run directory.

use crate::data::DataSet;
use crate::gpu::select::{AdapterKind, DeviceKind, adapters_found, list_adapters, open};
use crate::gpu::{AdapterSummary, DeviceArgs, GpuContext, Selected};
use crate::model::Params;
use crate::net::{Net, NetConfig, NetData, cpu::CpuNet, gpu::GpuNet};
use crate::{Error, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Parses a comma-separated flag value such as `128,256`: no empty list, no empty item, no value
/// twice (a repeated value would only repeat work).
pub fn parse_list<T>(flag: &str, text: &str) -> Result<Vec<T>>
where
    T: FromStr + PartialEq + std::fmt::Display,
{
    if text.trim().is_empty() {
        return Err(Error::BadArg(format!(
            "{flag} is an empty list; give one or more comma-separated values"
        )));
    }
    let mut out: Vec<T> = Vec::new();
    for item in text.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(Error::BadArg(format!(
                "{flag} {text:?} has an empty item; give comma-separated values without gaps"
            )));
        }
        let v: T = item
            .parse()
            .map_err(|_| Error::BadArg(format!("{flag}: {item:?} is not a valid value")))?;
        if out.contains(&v) {
            return Err(Error::BadArg(format!("{flag} lists {v} twice")));
        }
        out.push(v);
    }
    Ok(out)
}

/// A learning rate as people write it: `1e-3`, `3e-2`, `0.5`.
pub fn show_lr(lr: f32) -> String {
    let e = format!("{lr:e}");
    // `{:e}` gives the shortest round-trip mantissa; plain decimals read better for 0.1 .. 10.
    if (0.1..10.0).contains(&lr) {
        format!("{lr}")
    } else {
        e
    }
}

/// One device trials run on: the CPU backend or one GPU adapter.
// A handful exist per command, each opened once: boxing the context would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Place {
    Cpu,
    Gpu(GpuContext),
}

impl Place {
    pub fn device(&self) -> &'static str {
        match self {
            Place::Cpu => "cpu",
            Place::Gpu(_) => "gpu",
        }
    }

    pub fn adapter(&self) -> Option<AdapterSummary> {
        match self {
            Place::Cpu => None,
            Place::Gpu(c) => Some(c.adapter.clone()),
        }
    }

    /// A short name for logs and tables.
    pub fn name(&self) -> String {
        match self {
            Place::Cpu => "CPU".to_string(),
            Place::Gpu(c) => c.adapter.name.clone(),
        }
    }

    /// A fresh net here (each fold and each optimizer run starts from its own).
    pub fn net(&self, cfg: NetConfig, data: &NetData, params: Params) -> Result<Box<dyn Net>> {
        Ok(match self {
            Place::Cpu => Box::new(CpuNet::new(cfg, data.clone(), params)),
            Place::Gpu(ctx) => Box::new(GpuNet::new(ctx.clone(), cfg, data.clone(), params)?),
        })
    }
}

/// The devices the flags ask for. `--adapter all` opens every usable hardware adapter (software
/// ones only when there is no hardware one, since a software adapter would hold up the last
/// trials), one per physical device; anything else is SPEC 7's single choice.
pub fn places(args: &DeviceArgs) -> Result<Vec<Place>> {
    if !args
        .adapter
        .as_deref()
        .is_some_and(|a| a.trim().eq_ignore_ascii_case("all"))
    {
        return Ok(vec![match open(args)? {
            Selected::Cpu { .. } => Place::Cpu,
            Selected::Gpu(ctx) => Place::Gpu(ctx),
        }]);
    }
    if args.device == DeviceKind::Cpu {
        return Err(Error::BadArg(
            "--adapter all asks for GPUs but --device cpu asks for the CPU; drop one of them"
                .to_string(),
        ));
    }
    let list = list_adapters(args.backend);
    let usable: Vec<usize> = (0..list.entries.len())
        .filter(|&i| list.entries[i].missing_limits.is_empty())
        .collect();
    let hardware: Vec<usize> = usable
        .iter()
        .copied()
        .filter(|&i| list.entries[i].kind != AdapterKind::Software)
        .collect();
    let pick = if hardware.is_empty() {
        usable
    } else {
        hardware
    };
    // The same GPU can be listed once per backend (Vulkan and DX12 on Windows): keep the first.
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for i in pick {
        let e = &list.entries[i];
        let id = (e.vendor, e.device_id, e.name.clone());
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        log::info!(
            "device: GPU adapter {} \"{}\" ({}, {})",
            e.index,
            e.name,
            e.kind.name(),
            e.backend
        );
        out.push(Place::Gpu(GpuContext::from_adapter(&list.adapters[i])?));
    }
    if out.is_empty() {
        return Err(Error::NoAdapter(format!(
            "--adapter all: no usable adapter; {}",
            adapters_found(&list.entries)
        )));
    }
    Ok(out)
}

/// Runs jobs `0..n` on `places`, one thread per place, each taking the next job as it finishes
/// one; `done(i, result)` runs on the calling thread as results arrive. Results do not depend on
/// the schedule (each job builds its own net from its own seeds), only which device ran which job
/// does. The first error stops the hand-out of jobs and is returned.
pub fn run_jobs<R, J, D>(places: &[Place], n: usize, job: J, mut done: D) -> Result<()>
where
    R: Send,
    J: Fn(&Place, usize) -> Result<R> + Sync,
    D: FnMut(usize, R) -> Result<()>,
{
    if places.len() <= 1 || n <= 1 {
        let Some(place) = places.first() else {
            return Err(Error::Runtime("internal: no device to run on".into()));
        };
        for i in 0..n {
            let r = job(place, i)?;
            done(i, r)?;
        }
        return Ok(());
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<R>)>();
    std::thread::scope(|s| {
        for place in places {
            let (tx, next, stop, job) = (tx.clone(), &next, &stop, &job);
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let r = job(place, i);
                    let failed = r.is_err();
                    if tx.send((i, r)).is_err() || failed {
                        stop.store(true, Ordering::SeqCst);
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut first_err = None;
        for (i, r) in rx {
            if first_err.is_some() {
                continue;
            }
            match r.and_then(|r| done(i, r)) {
                Ok(()) => {}
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    first_err = Some(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    })
}

/// The training images trials may use: the seeded split's first `limit` (all without one).
pub fn kept_indices(n_total: usize, limit: Option<usize>, seed: u64) -> Result<Vec<u32>> {
    Ok(crate::data::split(n_total, 0.0, limit, seed)?.train)
}

/// Resident data for experiments: the training set, and a single blank image in the test set's
/// place, so the test set cannot be touched (and a GPU does not hold it).
pub fn train_only(train: DataSet) -> NetData {
    let blank = DataSet {
        images: vec![0; 28 * 28],
        labels: vec![0],
        n: 1,
        rows: 28,
        cols: 28,
    };
    NetData {
        train: Arc::new(train),
        test: Arc::new(blank),
    }
}

/// Mean, spread and range of a few numbers (folds or seeds). `std` is the population standard
/// deviation (numpy's default, what `cross_val_score(...).std()` reports).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Stats {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(v: &[f64]) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        Self {
            mean,
            std: var.sqrt(),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// `runs/<prefix>-<UTC timestamp>` for a command without `--out`.
pub fn default_dir(prefix: &str) -> PathBuf {
    let d = crate::train::default_run_dir();
    let stamp = d
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    d.with_file_name(format!("{prefix}-{stamp}"))
}

/// Creates the run directory (see [`prepare_out`], which has already checked it).
pub fn make_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// The files (and the `tb` directory) whose presence marks a directory as holding the output of a
/// `train`, `search` or `compare` run, which a new search or comparison must not overwrite.
pub const RUN_MARKERS: &[&str] = &[
    super::search::SEARCH_FILE,
    super::compare::COMPARE_FILE,
    super::compare::PLOT_FILE,
    crate::train::CONFIG_FILE,
    crate::train::MODEL_FILE,
    // The TensorBoard runs of a search or comparison.
    crate::tensorboard::TB_DIR,
];

/// [`prepare_out`] for a new `search` or `compare`: also refuses (exit 2) a directory that
/// already holds a run's output ([`RUN_MARKERS`]), as `train --out` does.
pub fn prepare_fresh_out(flag: &str, dir: &std::path::Path) -> Result<()> {
    if let Some(f) = RUN_MARKERS
        .iter()
        .find(|f| dir.join(f).symlink_metadata().is_ok())
    {
        return Err(Error::BadArg(format!(
            "{flag} {} already holds a run (it has {f}); give {flag} a new directory",
            dir.display()
        )));
    }
    prepare_out(flag, dir)
}

/// Makes sure output directory `dir` (given with `flag`, or the default) is usable before any
/// work starts: it is created if missing, and a file is written to it and removed. An unusable
/// location is bad input (exit 2) rather than a failure after the training it would lose.
pub fn prepare_out(flag: &str, dir: &std::path::Path) -> Result<()> {
    let bad = |what: String| Error::BadArg(format!("{flag} {}: {what}", dir.display()));
    if dir.exists() && !dir.is_dir() {
        return Err(bad("exists and is not a directory".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create the directory: {e}")))?;
    probe_write(dir).map_err(|e| bad(format!("cannot write files there: {e}")))
}

/// [`prepare_out`] for an output file (`export --onnx`): `path` must not be a directory, and its
/// parent must be an existing directory that takes a file. Nothing is created: a mistyped
/// directory is reported (exit 2) rather than made.
pub fn prepare_out_file(flag: &str, path: &std::path::Path) -> Result<()> {
    let bad = |what: String| Error::BadArg(format!("{flag} {}: {what}", path.display()));
    if path.is_dir() {
        return Err(bad(
            "is a directory; give the name of the file to write".into()
        ));
    }
    if path.file_name().is_none() {
        return Err(bad("does not name a file".into()));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        let what = if dir.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        return Err(bad(format!("its directory {} {what}", dir.display())));
    }
    probe_write(dir).map_err(|e| bad(format!("cannot write files in {}: {e}", dir.display())))
}

/// Writes a probe file into `dir` and removes it: whether outputs can be written there at all.
fn probe_write(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".fmnist-gpu-probe.tmp{}", std::process::id()));
    let wrote = std::fs::write(&probe, b"probe");
    let _ = std::fs::remove_file(&probe);
    wrote
}

/// Pretty JSON with a final newline.
pub fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).expect("serialising plain data");
    s.push(b'\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_reject_gaps_and_repeats() {
        assert_eq!(
            parse_list::<u32>("--h", "128, 256").unwrap(),
            vec![128, 256]
        );
        for bad in ["", " ", "128,,256", "128,", "x", "128,128"] {
            let e = parse_list::<u32>("--h", bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            assert!(e.to_string().contains("--h"), "{e}");
        }
    }

    #[test]
    fn stats_are_population_statistics() {
        let s = Stats::of(&[0.8, 0.9]);
        assert!((s.mean - 0.85).abs() < 1e-12);
        assert!((s.std - 0.05).abs() < 1e-12);
        assert_eq!((s.min, s.max), (0.8, 0.9));
    }

    #[test]
    fn jobs_on_several_devices_all_arrive_once() {
        // Three places take the multi-thread path that `--adapter all` uses with three GPUs.
        let places = vec![Place::Cpu, Place::Cpu, Place::Cpu];
        let mut got = vec![None; 20];
        run_jobs(
            &places,
            20,
            |_, i| {
                std::thread::sleep(std::time::Duration::from_millis((i % 3) as u64));
                Ok(i * i)
            },
            |i, r| {
                assert!(got[i].is_none(), "job {i} delivered twice");
                got[i] = Some(r);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, (0..20).map(|i| Some(i * i)).collect::<Vec<_>>());
        // An error stops the hand-out of jobs and is what comes back: the other threads finish
        // the job in hand (5 ms each) and take no more.
        let mut delivered = 0;
        let e = run_jobs(
            &places,
            50,
            |_, i| {
                if i == 4 {
                    Err(Error::Runtime("job 4 failed".into()))
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    Ok(i)
                }
            },
            |_, _| {
                delivered += 1;
                Ok(())
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("job 4 failed"), "{e}");
        assert!(
            delivered < 20,
            "{delivered} of 50 jobs ran after the failure"
        );
    }

    #[test]
    fn rates_print_as_typed() {
        assert_eq!(show_lr(1e-3), "1e-3");
        assert_eq!(show_lr(3e-2), "3e-2");
        assert_eq!(show_lr(1e-4), "1e-4");
        assert_eq!(show_lr(0.5), "0.5");
    }
}
