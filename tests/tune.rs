//! `fmnist-gpu tune` and `tune::step_tiles` on lavapipe with tiny batches: miss then hit, bad
//! cache files ignored with a warning and measured again, `--tune off`, flag validation.

mod common;

use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::gpu::tile::Tile;
use fmnist_gpu::model::Layers;
use fmnist_gpu::tune::{
    self, CacheKey, CacheStatus, ROLES, StepTiles, TuneMode, cache_path, lookup, shape_key,
};
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;

/// Held while this process's environment is read or written: `set_var` is only sound while no
/// other thread reads the environment (spawning a child does).
static ENV: Mutex<()> = Mutex::new(());

fn env_lock() -> std::sync::MutexGuard<'static, ()> {
    ENV.lock().unwrap_or_else(|e| e.into_inner())
}

/// `fmnist-gpu tune --adapter software --json ARGS` with the cache in `dir`: (exit code, the
/// report when it printed one, stderr).
fn tune_cli(dir: &Path, args: &[&str]) -> (i32, Option<Value>, String) {
    let out = {
        let _g = env_lock();
        common::bin()
            .args(["tune", "--adapter", "software", "--json"])
            .args(args)
            .env("FMNIST_TUNE_CACHE", dir)
            .env("XDG_RUNTIME_DIR", "/tmp")
            .output()
            .expect("run fmnist-gpu")
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).ok();
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// Every role of every batch measured, every candidate identical, the choice among them.
fn assert_measured(report: &Value, batches: &[u64]) {
    let results = report["results"].as_array().expect("results");
    assert_eq!(
        results
            .iter()
            .map(|r| r["batch"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        batches
    );
    for r in results {
        assert_eq!(r["cached"], false, "{r}");
        let roles: Vec<&str> = r["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ROLES);
        for role in r["roles"].as_array().unwrap() {
            let cands = role["candidates"].as_array().unwrap();
            assert!(cands.len() >= 2, "{role}");
            assert!(
                cands.iter().all(|c| c["identical"] == true),
                "a candidate differs: {role}"
            );
            assert!(cands.iter().all(|c| c["seconds"].as_f64().unwrap() > 0.0));
            assert!(cands.iter().any(|c| c["tile"] == role["choice"]), "{role}");
        }
    }
}

#[test]
fn tune_twice_is_a_miss_then_a_hit() {
    if !{
        let _g = env_lock();
        common::have_gpu()
    } {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, report, err) = tune_cli(dir.path(), &["--batch-sizes", "2"]);
    assert_eq!(code, 0, "{err}");
    let report = report.expect("a JSON report");
    assert_eq!(report["cache"], "miss");
    assert_measured(&report, &[2]);
    let path = report["path"].as_str().expect("a cache path");
    assert!(Path::new(path).starts_with(dir.path()) && Path::new(path).is_file());

    let (code, again, err) = tune_cli(dir.path(), &["--batch-sizes", "2"]);
    assert_eq!(code, 0, "{err}");
    let again = again.unwrap();
    assert_eq!(again["cache"], "hit", "{again}");
    assert_eq!(again["path"].as_str(), Some(path));
    let r = &again["results"][0];
    assert_eq!(r["cached"], true);
    for (i, role) in r["roles"].as_array().unwrap().iter().enumerate() {
        assert!(role["candidates"].as_array().unwrap().is_empty());
        assert_eq!(role["choice"], report["results"][0]["roles"][i]["choice"]);
    }
    assert!(!err.contains("measuring"), "{err}");
}

/// Truncated, corrupt and foreign files at the cache path: `lookup` ignores each (the command
/// then measures again, exit 0 and "miss"), and `step_tiles` uses the stored choice once a
/// valid file is back, or the defaults when off.
#[test]
fn bad_cache_files_are_ignored_and_measured_again() {
    let Some(ctx) = ({
        let _g = env_lock();
        common::ctx()
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (code, report, err) = tune_cli(dir.path(), &["--batch-sizes", "3"]);
    assert_eq!(code, 0, "{err}");
    let report = report.unwrap();
    assert_eq!(report["cache"], "miss");
    let path = std::path::PathBuf::from(report["path"].as_str().unwrap());
    let good = std::fs::read_to_string(&path).unwrap();
    let shape = shape_key(3, 128);

    let l = Layers::new(3, 128, 0.4, 1);
    let looked_up = |ctx: &GpuContext| {
        let _g = env_lock();
        // SAFETY: every environment access of this process holds ENV.
        unsafe { std::env::set_var("FMNIST_TUNE_CACHE", dir.path()) };
        assert_eq!(cache_path(&CacheKey::of(ctx)).as_ref(), Some(&path));
        (
            lookup(ctx, &shape, &ROLES),
            tune::step_tiles(ctx, &l).unwrap(),
        )
    };
    tune::set_mode(TuneMode::Auto);
    let (hit, (tiles, status)) = looked_up(&ctx);
    let hit = hit.expect("the valid file is read");
    assert_eq!(status, CacheStatus::Hit);
    assert_eq!(Some(tiles), StepTiles::from_choice(&hit));
    for r in report["results"][0]["roles"].as_array().unwrap() {
        let t: Tile = r["choice"].as_str().unwrap().parse().unwrap();
        assert_eq!(hit[r["role"].as_str().unwrap()], t);
    }

    let foreign = good.replacen("\"shaders\": \"", "\"shaders\": \"0", 1);
    assert_ne!(foreign, good);
    let mut bad_tile = serde_json::from_str::<Value>(&good).unwrap();
    bad_tile["entries"][&shape]["conv1.forward"] = "256x256".into();
    for (what, text) in [
        ("truncated", good[..good.len() / 2].to_string()),
        ("corrupt", "{\"format\": 7, ]".to_string()),
        ("foreign", foreign),
        ("unrunnable tile", bad_tile.to_string()),
    ] {
        std::fs::write(&path, &text).unwrap();
        let (hit, (tiles, status)) = looked_up(&ctx);
        assert!(hit.is_none(), "{what} file was used");
        // lavapipe is a software adapter: a miss there means the defaults, untuned.
        assert_eq!(
            (tiles, status),
            (StepTiles::default(), CacheStatus::Defaults),
            "{what}"
        );
    }

    // The last bad file through the command: a warning, measured again, stored whole.
    std::fs::write(&path, &good[..good.len() / 3]).unwrap();
    let (code, report, err) = tune_cli(dir.path(), &["--batch-sizes", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("corrupt tuning cache"), "{err}");
    let report = report.unwrap();
    assert_eq!(report["cache"], "miss");
    assert_measured(&report, &[3]);
    assert!(looked_up(&ctx).0.is_some(), "the rewritten file is valid");

    tune::set_mode(TuneMode::Off);
    let (_, (tiles, status)) = looked_up(&ctx);
    tune::set_mode(TuneMode::Auto);
    assert_eq!((tiles, status), (StepTiles::default(), CacheStatus::Off));
    assert_eq!(tiles.conv2_backward, Tile::DEFAULT);
}

#[test]
fn bad_flags_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--batch-sizes", "0"][..], "--batch-sizes"),
        (&["--batch-sizes", "100000"][..], "--batch-sizes"),
        (&["--batch-sizes", "2,2"][..], "twice"),
        (&["--batch-sizes", "x"][..], "batch-sizes"),
        (&["--hidden", "0"][..], "--hidden"),
        (&["--tune", "off"][..], "--tune off"),
    ] {
        let (code, report, err) = tune_cli(dir.path(), args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(report.is_none(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // The CPU backend has no tiles to tune.
    let out = {
        let _g = env_lock();
        common::bin()
            .args(["tune", "--device", "cpu"])
            .env("FMNIST_TUNE_CACHE", dir.path())
            .output()
            .unwrap()
    };
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tune measures GPU kernels"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
