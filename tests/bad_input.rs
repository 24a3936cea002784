//! Issue 13 part 2: every reproducer of the bad-input report (D1-D17) through the binary on the
//! CPU device, each a clean exit-2 error (or a correct result) instead of a panic, a hang, a
//! memory blow-up or a silent wrong answer; and property tests that mutate valid files of each
//! parser at random (IDX, safetensors, images, config.json, metrics.jsonl), asserting no panic,
//! exit-2 errors only, and bounded allocation (a counting allocator below).

mod common;

use fmnist_gpu::checkpoint::{Named, load_all, save_model, serialize_f32, write_atomic};
use fmnist_gpu::model::Params;
use fmnist_gpu::{Error, limits};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Allocation accounting per thread: the property tests run parsers on one thread each, so the
// peak of that thread's live bytes bounds what a parser allocated.

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // try_with: no accounting while a thread's locals are being torn down.
    let _ = LIVE.try_with(|l| {
        let v = l.get() + delta;
        l.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new) };
        if !p.is_null() {
            note(new as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the most bytes it had allocated at once (this thread).
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get) - base;
    (r, peak.max(0) as usize)
}

// ---------------------------------------------------------------------------------------------
// Running the binary.

fn bin() -> Command {
    let mut c = common::bin();
    c.env("RUST_BACKTRACE", "0");
    c
}

/// Runs `c` with a deadline (a FIFO must never block the program); a run past it is killed and
/// fails the test.
fn run_for(mut c: impl std::borrow::BorrowMut<Command>, secs: u64) -> Output {
    let c = c.borrow_mut();
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the binary");
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "{c:?} still running after {secs} s (a hang): {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2, no panic, and stderr holds every one of `needles`.
#[track_caller]
fn refused(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "expected exit 2: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
}

fn args<I, S>(items: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = bin();
    c.args(items);
    c
}

/// One finished run (1 epoch, hidden 16, 300 images) that tests copy from; `None` without data.
/// A constant rate (`--preset seed`), so resuming it may raise `--epochs`.
fn base_run() -> Option<&'static Path> {
    static RUN: OnceLock<Option<PathBuf>> = OnceLock::new();
    RUN.get_or_init(|| {
        common::real_data()?;
        let dir = tempfile::tempdir().unwrap().keep();
        let run = dir.join("run");
        let o = run_for(
            args([
                "train",
                "--device",
                "cpu",
                "--limit",
                "300",
                "--epochs",
                "1",
                "--hidden",
                "16",
                "--batch-size",
                "64",
                "--preset",
                "seed",
                "--out",
            ])
            .arg(&run),
            300,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        Some(run)
    })
    .as_deref()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Rewrites safetensors file `src` into `dst` with `edit` applied to its tensors and metadata.
fn rewrite(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<f32>)>, &mut BTreeMap<String, String>),
) {
    let (tensors, mut meta) = load_all(src).unwrap();
    let mut t: BTreeMap<String, (Vec<usize>, Vec<f32>)> = tensors
        .into_iter()
        .map(|(k, l)| {
            let v = l.f32(src, &k).unwrap();
            (k, (l.shape, v))
        })
        .collect();
    edit(&mut t, &mut meta);
    let named: Vec<Named> = t
        .iter()
        .map(|(k, (s, v))| Named {
            name: k.clone(),
            shape: s.clone(),
            data: v,
        })
        .collect();
    std::fs::write(dst, serialize_f32(&named, &meta).unwrap()).unwrap();
}

/// Sets key `key` of the run config JSON `text` (top level, or under "optimizer").
fn set_config_key(text: &str, key: &str, v: serde_json::Value) -> String {
    let mut c: serde_json::Value = serde_json::from_str(text).unwrap();
    if c.get(key).is_some() {
        c[key] = v;
    } else {
        c["optimizer"][key] = v;
    }
    c.to_string()
}

// ---------------------------------------------------------------------------------------------
// D1, D15: config.json of a resumed run goes through the flags' checks.

#[test]
fn d01_d15_resume_validates_config_json_naming_file_and_key() {
    let Some(base) = base_run() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, serde_json::Value, &str); 14] = [
        ("batch_size", 0.into(), "must be at least 1"),
        ("hidden", 0.into(), "must be at least 1"),
        ("dropout", 5.0.into(), "[0, 1)"),
        ("lr", (-1.0).into(), "positive number"),
        ("label_smoothing", 5.0.into(), "[0, 1)"),
        ("alpha", 2.0.into(), "[0, 1)"),
        ("batch_size", 4294967295u64.into(), "at most"),
        ("hidden", 1000000000u64.into(), "at most"),
        ("limit", 0.into(), "at least 1"),
        ("limit", 1000000000000u64.into(), "at most"),
        ("val_fraction", 1.into(), "[0, 1)"),
        ("epochs", 0.into(), "at least 1"),
        ("beta2", 1.5.into(), "[0, 1)"),
        ("eps", 0.into(), "positive"),
    ];
    for (i, (key, v, what)) in cases.into_iter().enumerate() {
        let run = tmp.path().join(format!("r{i}"));
        copy_dir(base, &run);
        // A run killed in its first epoch leaves no optimizer state: config.json alone.
        if i % 2 == 0 {
            std::fs::remove_file(run.join("optimizer.safetensors")).unwrap();
        }
        let cfg = run.join("config.json");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, set_config_key(&text, key, v.clone())).unwrap();
        let o = run_for(args(["train", "--device", "cpu", "--resume"]).arg(&run), 60);
        let key_name = if ["lr", "alpha", "beta2", "eps"].contains(&key) {
            format!("\"optimizer.{key}\"")
        } else {
            format!("\"{key}\"")
        };
        refused(&o, &[&cfg.display().to_string(), &key_name, what]);
        assert!(
            !stderr(&o).contains("--"),
            "{key}={v}: blames a flag: {}",
            stderr(&o)
        );
    }
    // A limit that parses but exceeds the data names the file too, not --limit.
    let run = tmp.path().join("rlim");
    copy_dir(base, &run);
    std::fs::remove_file(run.join("optimizer.safetensors")).unwrap();
    let cfg = run.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, set_config_key(&text, "val_fraction", 0.9999.into())).unwrap();
    let o = run_for(args(["train", "--device", "cpu", "--resume"]).arg(&run), 60);
    refused(
        &o,
        &[
            &cfg.display().to_string(),
            "\"val_fraction\"",
            "no training images",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// D2: non-UTF-8 paths give exit 2 at the command line, never a panic after the work.

#[test]
fn d02_non_utf8_paths_are_exit_2() {
    let bad = |s: &str| PathBuf::from(OsStr::from_bytes(&[s.as_bytes(), b"\xff"].concat()));
    let p = |s: &str| PathBuf::from(s);
    let cases: Vec<Vec<PathBuf>> = vec![
        vec![p("train"), p("--data"), bad("/tmp/d")],
        vec![p("train"), p("--out"), bad("/tmp/r")],
        vec![p("train"), p("--resume"), bad("/tmp/r")],
        vec![
            p("eval"),
            p("--json"),
            p("--model"),
            bad("/tmp/m.safetensors"),
        ],
        vec![
            p("predict"),
            p("--model"),
            bad("/tmp/m.safetensors"),
            p("x.png"),
        ],
        vec![p("predict"), p("--model"), p("m"), bad("x.png")],
        vec![p("search"), p("--out"), bad("/tmp/s")],
        vec![p("compare"), p("--out"), bad("/tmp/c")],
        vec![p("parity"), p("--fixture"), bad("/tmp/m.safetensors")],
    ];
    for c in cases {
        let o = run_for(
            args(
                c.iter()
                    .map(|a| a.as_os_str())
                    .chain(["--device".as_ref(), "cpu".as_ref()]),
            ),
            30,
        );
        refused(&o, &["UTF-8"]);
    }
}

// ---------------------------------------------------------------------------------------------
// D3, D4, D5: every count and size has an upper bound, checked before anything is allocated.

#[test]
fn d03_d04_d05_counts_and_sizes_are_bounded() {
    let m = "18446744073709551615";
    let cases: Vec<Vec<&str>> = vec![
        vec!["search", "--epochs", m, "--iters", "1"],
        vec!["search", "--iters", m],
        vec!["search", "--iters", "1000000000000"],
        vec!["search", "--folds", m],
        vec!["search", "--hidden-units", "1000000000"],
        vec!["search", "--batch-size", "100000"],
        vec!["compare", "--epochs", m, "--optimizers", "adam"],
        vec![
            "compare",
            "--epochs",
            "1000000000000",
            "--optimizers",
            "adam",
        ],
        vec![
            "compare",
            "--seeds",
            "1000000000000",
            "--optimizers",
            "adam",
        ],
        vec!["compare", "--hidden", "1000000000", "--optimizers", "adam"],
        vec!["compare", "--batch-size", "100000", "--optimizers", "adam"],
        vec![
            "bench",
            "--batch-sizes",
            "1",
            "--steps",
            "1",
            "--windows",
            m,
        ],
        vec![
            "bench",
            "--batch-sizes",
            "1",
            "--steps",
            m,
            "--windows",
            "1",
        ],
        vec!["bench", "--batch-sizes", "1", "--warmup", m],
        vec!["bench", "--hidden", "1000000000", "--batch-sizes", "1"],
        vec![
            "bench",
            "--batch-sizes",
            "20000",
            "--steps",
            "1",
            "--windows",
            "1",
        ],
        vec!["train", "--hidden", "1000000000"],
        vec!["train", "--hidden", "4294967295"],
        vec!["train", "--batch-size", "4294967295"],
        vec!["train", "--batch-size", "100000"],
        vec!["train", "--epochs", m],
        vec!["train", "--limit", m],
        vec![
            "eval",
            "--batch-size",
            "4294967295",
            "--model",
            "m.safetensors",
        ],
        vec!["eval", "--batch-size", "100000", "--model", "m.safetensors"],
    ];
    for c in cases {
        // No data directory is needed to refuse: the checks come before the data is loaded.
        let data: &[&str] = if c[0] == "bench" {
            &[]
        } else {
            &["--data", "/nonexistent"]
        };
        let o = run_for(
            args(
                c.iter()
                    .copied()
                    .chain(["--device", "cpu"])
                    .chain(data.iter().copied()),
            ),
            30,
        );
        refused(&o, &["at most"]);
    }
}

#[test]
fn d04_d05_d09_checkpoint_metadata_batch_is_checked() {
    let Some(base) = base_run() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (v, what) in [
        (serde_json::json!(4294967295u64), "at most"),
        (serde_json::json!(100000), "at most"),
        (serde_json::json!(0), "at least 1"),
    ] {
        let p = tmp.path().join("m.safetensors");
        rewrite(&base.join("model.safetensors"), &p, |_, meta| {
            let c = set_config_key(&meta["config"], "batch_size", v);
            meta.insert("config".into(), c);
        });
        let o = run_for(args(["eval", "--device", "cpu", "--model"]).arg(&p), 60);
        refused(&o, &[&p.display().to_string(), "\"batch_size\"", what]);
    }
}

#[test]
fn d15_eval_split_errors_name_the_model_file_and_key() {
    let Some(base) = base_run() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("m.safetensors");
    for (key, v, what) in [
        (
            "limit",
            serde_json::json!(0),
            "\"limit\" must be at least 1",
        ),
        (
            "limit",
            serde_json::json!(1000000000000u64),
            "\"limit\" must be at most 60000",
        ),
        (
            "val_fraction",
            serde_json::json!(2),
            "\"val_fraction\" must be in [0, 1)",
        ),
        (
            "val_fraction",
            serde_json::json!(0.9999),
            "leaves no training images",
        ),
        (
            "batch_size",
            serde_json::json!(-1),
            "not a fmnist-gpu run config",
        ),
    ] {
        rewrite(&base.join("model.safetensors"), &p, |_, meta| {
            let c = set_config_key(&meta["config"], key, v);
            meta.insert("config".into(), c);
        });
        let o = run_for(
            args(["eval", "--device", "cpu", "--split", "val", "--model"]).arg(&p),
            60,
        );
        refused(&o, &[&p.display().to_string(), what]);
        assert!(!stderr(&o).contains("--limit"), "{}", stderr(&o));
        assert!(!stderr(&o).contains("--val-fraction"), "{}", stderr(&o));
    }
}

#[test]
fn d05_a_batch_larger_than_the_data_is_clamped() {
    if common::real_data().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = run_for(
        args([
            "train",
            "--device",
            "cpu",
            "--limit",
            "100",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--batch-size",
            "4096",
            "--json",
            "--out",
        ])
        .arg(&out),
        120,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["train_images"], 90);
}

// ---------------------------------------------------------------------------------------------
// D6: gzip bombs and lying IDX headers.

fn gz(parts: &[&[u8]]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for p in parts {
        e.write_all(p).unwrap();
    }
    e.finish().unwrap()
}

fn idx_header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v
}

#[test]
fn d06_lying_idx_headers_cost_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let zeros = vec![0u8; 1 << 20];
    let labels = {
        let mut v = idx_header(0x801, &[3]);
        v.extend_from_slice(&[1, 2, 3]);
        v
    };
    std::fs::write(tmp.path().join("lab"), &labels).unwrap();
    let cases: [(&[u32], &str); 4] = [
        (&[1 << 31, 28, 28], "more than the 60000"),
        (&[1 << 31, 1, 1], "more than the 60000"),
        (&[60000, 28, 28], "holds 3 labels but"),
        (&[3, 1000, 1000], "images are 1000x1000"),
    ];
    for (dims, what) in cases {
        let hdr = idx_header(0x803, dims);
        // 64 MiB of zeros behind the header, a few tens of kB compressed.
        let mut parts: Vec<&[u8]> = vec![&hdr];
        parts.extend(std::iter::repeat_n(&zeros[..], 64));
        let p = tmp.path().join("img.gz");
        std::fs::write(&p, gz(&parts)).unwrap();
        let (r, peak) = peak_of(|| {
            fmnist_gpu::data::read_pair_sized(&p, &tmp.path().join("lab"), Some((28, 28)))
        });
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains(what), "{dims:?}: {e}");
        assert!(peak < 4 << 20, "{dims:?}: {peak} bytes allocated");
    }
    // A consistent header with a multi-gigabyte tail: refused after a bounded look at the tail.
    let mut lab = idx_header(0x801, &[2]);
    lab.extend_from_slice(&[1, 2]);
    std::fs::write(tmp.path().join("lab2"), &lab).unwrap();
    let hdr = idx_header(0x803, &[2, 28, 28]);
    let mut parts: Vec<&[u8]> = vec![&hdr];
    parts.extend(std::iter::repeat_n(&zeros[..], 64));
    let p = tmp.path().join("tail.gz");
    std::fs::write(&p, gz(&parts)).unwrap();
    let t0 = Instant::now();
    let (r, peak) =
        peak_of(|| fmnist_gpu::data::read_pair_sized(&p, &tmp.path().join("lab2"), Some((28, 28))));
    assert!(r.unwrap_err().to_string().contains("trailing data"));
    assert!(peak < 4 << 20, "{peak} bytes allocated");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn d06_train_on_a_bomb_directory_is_exit_2() {
    let Some(real) = common::real_data() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("bomb");
    std::fs::create_dir(&d).unwrap();
    for f in [
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        let name = format!("{f}.gz");
        std::os::unix::fs::symlink(real.join(&name), d.join(&name)).unwrap();
    }
    let hdr = idx_header(0x803, &[1 << 31, 28, 28]);
    let zeros = vec![0u8; 1 << 20];
    let mut parts: Vec<&[u8]> = vec![&hdr];
    parts.extend(std::iter::repeat_n(&zeros[..], 32));
    std::fs::write(d.join("train-images-idx3-ubyte.gz"), gz(&parts)).unwrap();
    let o = run_for(
        args([
            "train", "--device", "cpu", "--limit", "100", "--epochs", "1", "--data",
        ])
        .arg(&d)
        .arg("--out")
        .arg(tmp.path().join("out")),
        30,
    );
    refused(&o, &["train-images-idx3-ubyte.gz", "more than the 60000"]);
}

// ---------------------------------------------------------------------------------------------
// D7: FIFOs and devices are refused, never opened.

fn mkfifo(p: &Path) {
    let s = Command::new("mkfifo").arg(p).status().expect("mkfifo");
    assert!(s.success());
}

#[test]
fn d07_fifos_and_devices_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("f.safetensors");
    let fpng = tmp.path().join("f.png");
    mkfifo(&fifo);
    mkfifo(&fpng);
    let good = tmp.path().join("good.safetensors");
    save_model(&good, &Params::glorot(8, 1), BTreeMap::new()).unwrap();
    let png = tmp.path().join("a.png");
    image::GrayImage::new(5, 5).save(&png).unwrap();
    let fifo_s = fifo.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["eval", "--model", fifo_s], fifo_s),
        (
            vec!["predict", "--model", fifo_s, png.to_str().unwrap()],
            fifo_s,
        ),
        (
            vec![
                "predict",
                "--model",
                good.to_str().unwrap(),
                fpng.to_str().unwrap(),
            ],
            fpng.to_str().unwrap(),
        ),
        (vec!["parity", "--fixture", fifo_s], fifo_s),
        (vec!["eval", "--model", "/dev/zero"], "/dev/zero"),
        (
            vec!["predict", "--model", "/dev/zero", png.to_str().unwrap()],
            "/dev/zero",
        ),
        (vec!["parity", "--fixture", "/dev/zero"], "/dev/zero"),
        (
            vec!["predict", "--model", good.to_str().unwrap(), "/dev/zero"],
            "/dev/zero",
        ),
    ];
    for (c, file) in cases {
        let o = run_for(args(c.iter().copied().chain(["--device", "cpu"])), 20);
        refused(&o, &[file, "not a regular file"]);
    }
}

#[test]
fn d07_d14_resume_refuses_fifos_and_directories_in_the_run() {
    let Some(base) = base_run() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (i, f) in [
        "config.json",
        "optimizer.safetensors",
        "metrics.jsonl",
        "model.safetensors",
    ]
    .into_iter()
    .enumerate()
    {
        let run = tmp.path().join(format!("r{i}"));
        copy_dir(base, &run);
        std::fs::remove_file(run.join(f)).unwrap();
        if i == 3 {
            std::fs::create_dir(run.join(f)).unwrap();
        } else {
            mkfifo(&run.join(f));
        }
        let o = run_for(args(["train", "--device", "cpu", "--resume"]).arg(&run), 30);
        refused(&o, &[f, "not a regular file"]);
    }
}

// ---------------------------------------------------------------------------------------------
// D8, D16: images.

/// A grey PNG header of `w` x `h` with `rows` rows of black pixels (all of them for a valid file;
/// fewer suffices where only the header is read).
fn big_png(w: u32, h: u32, rows: u32) -> Vec<u8> {
    use std::io::Write;
    fn chunk(out: &mut Vec<u8>, t: &[u8], d: &[u8]) {
        out.extend_from_slice(&(d.len() as u32).to_be_bytes());
        out.extend_from_slice(t);
        out.extend_from_slice(d);
        let mut c = flate2::Crc::new();
        c.update(t);
        c.update(d);
        out.extend_from_slice(&c.sum().to_be_bytes());
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let row = vec![0u8; w as usize + 1];
    for _ in 0..rows {
        z.write_all(&row).unwrap();
    }
    let idat = z.finish().unwrap();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn noise_jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut s = 12345u32;
    let img = image::RgbImage::from_fn(w, h, |_, _| {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        let b = s.to_be_bytes();
        image::Rgb([b[0], b[1], b[2]])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

#[test]
fn d08_huge_images_are_refused_before_decoding() {
    let p = Path::new("big.png");
    let bytes = big_png(20000, 20000, 1);
    let (r, peak) = peak_of(|| fmnist_gpu::cmd::predict::load_image_bytes(p, &bytes, false));
    let e = r.unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("pixels"), "{e}");
    assert!(peak < 16 << 20, "{peak} bytes allocated");
    // A large image that is allowed decodes within a few hundred MB.
    let bytes = big_png(6000, 6000, 6000);
    let (r, peak) = peak_of(|| fmnist_gpu::cmd::predict::load_image_bytes(p, &bytes, true));
    assert_eq!(r.unwrap().len(), 28 * 28);
    assert!(
        peak < 300 << 20,
        "{peak} bytes allocated for a 36-Mpixel grey image"
    );
}

#[test]
fn d16_truncated_jpeg_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let jpeg = noise_jpeg(200, 200);
    let p = tmp.path().join("whole.jpg");
    std::fs::write(&p, &jpeg).unwrap();
    assert!(fmnist_gpu::cmd::predict::load_image(&p, false).is_ok());
    // Zero padding after the end-of-image marker is fine.
    let mut padded = jpeg.clone();
    padded.extend_from_slice(&[0; 16]);
    assert!(fmnist_gpu::cmd::predict::load_image_bytes(&p, &padded, false).is_ok());
    let cut = tmp.path().join("t.jpg");
    std::fs::write(&cut, &jpeg[..jpeg.len() / 2]).unwrap();
    let model = tmp.path().join("m.safetensors");
    save_model(&model, &Params::glorot(8, 1), BTreeMap::new()).unwrap();
    let o = run_for(
        args(["predict", "--device", "cpu", "--model"])
            .arg(&model)
            .arg(&cut),
        30,
    );
    refused(&o, &["t.jpg", "truncated JPEG"]);
}

// ---------------------------------------------------------------------------------------------
// D10, D11: non-finite checkpoints and optimizer metadata.

#[test]
fn d10_non_finite_weights_are_exit_2_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.safetensors");
    save_model(&good, &Params::glorot(8, 1), BTreeMap::new()).unwrap();
    let png = tmp.path().join("a.png");
    image::GrayImage::new(5, 5).save(&png).unwrap();
    for (tensor, v) in [
        ("conv1.weight", f32::NAN),
        ("fc2.bias", f32::INFINITY),
        ("fc1.weight", f32::NEG_INFINITY),
    ] {
        let p = tmp.path().join("bad.safetensors");
        rewrite(&good, &p, |t, _| t.get_mut(tensor).unwrap().1[3] = v);
        for cmd in [vec!["eval", "--model"], vec!["predict", "--model"]] {
            let mut c = args([cmd[0], "--device", "cpu", cmd[1]]);
            c.arg(&p);
            if cmd[0] == "predict" {
                c.arg(&png);
            } else {
                c.args(["--data", "/nonexistent"]);
            }
            let o = run_for(c, 30);
            refused(&o, &[&p.display().to_string(), tensor, "non-finite"]);
        }
    }
}

#[test]
fn d11_optimizer_state_metadata_and_tensors_are_checked() {
    let Some(base) = base_run() else { return };
    let tmp = tempfile::tempdir().unwrap();
    type Edit =
        Box<dyn Fn(&mut BTreeMap<String, (Vec<usize>, Vec<f32>)>, &mut BTreeMap<String, String>)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|_, m| {
                m.insert("best_val_accuracy".into(), "NaN".into());
            }),
            "best_val_accuracy",
        ),
        (
            Box::new(|_, m| {
                m.insert("best_val_accuracy".into(), "1.5".into());
            }),
            "best_val_accuracy",
        ),
        (
            Box::new(|_, m| {
                m.insert("t".into(), "4294967295".into());
            }),
            "metadata t",
        ),
        (
            Box::new(|_, m| {
                m.insert("t".into(), "3".into());
            }),
            "metadata t",
        ),
        (
            Box::new(|t, _| t.get_mut("fc1.weight.zeta").unwrap().1[0] = f32::NAN),
            "fc1.weight.zeta",
        ),
        (
            Box::new(|t, _| t.get_mut("best.conv2.bias").unwrap().1[0] = f32::INFINITY),
            "best.conv2.bias",
        ),
    ];
    for (i, (edit, what)) in cases.into_iter().enumerate() {
        let run = tmp.path().join(format!("r{i}"));
        copy_dir(base, &run);
        let state = run.join("optimizer.safetensors");
        let last_before = std::fs::read(run.join("last.safetensors")).unwrap();
        rewrite(&state.clone(), &state, |t, m| edit(t, m));
        let o = run_for(
            args(["train", "--device", "cpu", "--epochs", "2", "--resume"]).arg(&run),
            60,
        );
        refused(&o, &[&state.display().to_string(), what]);
        // Nothing was rewritten from the bad state.
        assert_eq!(
            std::fs::read(run.join("last.safetensors")).unwrap(),
            last_before
        );
    }
}

// ---------------------------------------------------------------------------------------------
// D12, D14: output locations.

#[test]
fn d12_train_out_never_overwrites_a_run() {
    let Some(base) = base_run() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("x");
    copy_dir(base, &run);
    let before: Vec<_> = [
        "model.safetensors",
        "optimizer.safetensors",
        "metrics.jsonl",
    ]
    .iter()
    .map(|f| std::fs::read(run.join(f)).unwrap())
    .collect();
    let o = run_for(
        args([
            "train", "--device", "cpu", "--limit", "100", "--epochs", "1", "--lr", "1e6",
        ])
        .arg("--out")
        .arg(&run),
        30,
    );
    refused(&o, &["already holds a run", "--resume"]);
    for (f, b) in [
        "model.safetensors",
        "optimizer.safetensors",
        "metrics.jsonl",
    ]
    .iter()
    .zip(before)
    {
        assert_eq!(std::fs::read(run.join(f)).unwrap(), b, "{f} changed");
    }
    // A directory with only config.json (a run killed in epoch 1) is a run too.
    let half = tmp.path().join("half");
    std::fs::create_dir(&half).unwrap();
    std::fs::copy(base.join("config.json"), half.join("config.json")).unwrap();
    let o = run_for(args(["train", "--device", "cpu", "--out"]).arg(&half), 30);
    refused(&o, &["already holds a run"]);
}

/// `search --out` and `compare --out` refuse a directory that already holds a search, a
/// comparison or a training run, leaving its files as they were.
#[test]
fn d12_search_and_compare_out_never_overwrite_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    for (cmd, marker) in [
        ("search", "search.json"),
        ("compare", "compare.json"),
        ("search", "config.json"),
        ("compare", "model.safetensors"),
        ("compare", "search.json"),
        ("search", "tb"),
    ] {
        let dir = tmp.path().join(format!("{cmd}-{marker}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(marker), b"{\"earlier\": true}\n").unwrap();
        let o = run_for(args([cmd, "--device", "cpu", "--out"]).arg(&dir), 30);
        refused(&o, &["already holds a run", marker, "--out"]);
        assert_eq!(
            std::fs::read(dir.join(marker)).unwrap(),
            b"{\"earlier\": true}\n",
            "{cmd}: {marker} changed"
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "{cmd} wrote files"
        );
    }
}

#[test]
fn d14_unusable_out_is_exit_2_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let under = file.join("sub");
    let cases: Vec<(&str, &Path, &str)> = vec![
        ("train", &file, "exists and is not a directory"),
        (
            "train",
            Path::new("/dev/null"),
            "exists and is not a directory",
        ),
        ("train", &under, "cannot create"),
        ("train", Path::new("/proc/fmnist-gpu-test"), "cannot create"),
        ("search", &file, "exists and is not a directory"),
        ("compare", &file, "exists and is not a directory"),
    ];
    for (cmd, out, what) in cases {
        // --data that does not exist: the --out error must come first.
        let o = run_for(
            args([cmd, "--device", "cpu", "--data", "/nonexistent", "--out"]).arg(out),
            30,
        );
        refused(&o, &["--out", what]);
    }
}

// ---------------------------------------------------------------------------------------------
// D13: a failed write leaves no temp file.

#[test]
fn d13_failed_atomic_write_removes_its_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    // Renaming onto a non-empty directory fails after the temp file was written in full.
    let target = tmp.path().join("model.safetensors");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let e = write_atomic(&target, &[7u8; 4096]).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("model.safetensors")]);
}

// ---------------------------------------------------------------------------------------------
// D17: messages.

#[test]
fn d17_messages_say_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.safetensors");
    save_model(&good, &Params::glorot(8, 1), BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let cut = tmp.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..n]).unwrap();
    let o = run_for(args(["eval", "--device", "cpu", "--model"]).arg(&cut), 30);
    refused(
        &o,
        &[&format!(
            "need {} bytes but the file has only {n} bytes",
            n + 8
        )],
    );

    // train-images (raw or .gz) that is a directory, a symlink to /dev/zero, a loop or a FIFO.
    for (i, kind) in ["dir", "zero", "loop", "fifo-gz"].into_iter().enumerate() {
        let d = tmp.path().join(format!("d{i}"));
        std::fs::create_dir(&d).unwrap();
        let f = d.join("train-images-idx3-ubyte");
        match kind {
            "dir" => std::fs::create_dir(&f).unwrap(),
            "zero" => std::os::unix::fs::symlink("/dev/zero", &f).unwrap(),
            "loop" => std::os::unix::fs::symlink(&f, &f).unwrap(),
            _ => mkfifo(&d.join("train-images-idx3-ubyte.gz")),
        }
        let o = run_for(args(["train", "--device", "cpu", "--data"]).arg(&d), 30);
        refused(&o, &["train-images-idx3-ubyte", "not a regular file"]);
    }
    let o = run_for(args(["train", "--device", "cpu", "--data"]).arg(&good), 30);
    refused(&o, &["is not a directory"]);
    let o = run_for(args(["train", "--device", "cpu", "--dropout", "-0.1"]), 30);
    refused(&o, &["--dropout must be in [0, 1), got -0.1"]);
}

// ---------------------------------------------------------------------------------------------
// Property tests: random mutations of valid files, for every parser.

mod props {
    use super::*;
    use fmnist_gpu::checkpoint::{load_model, load_state};
    use fmnist_gpu::optim::OptimizerKind;
    use proptest::prelude::*;

    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// A mutation: at `pos` (a fraction of the length) overwrite, insert or truncate.
    #[derive(Clone, Debug)]
    enum Edit {
        Set(f64, u8),
        Insert(f64, Vec<u8>),
        Cut(f64),
        /// Overwrite a 4-byte big- or little-endian word with a value (lying sizes).
        Word(f64, u32),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            4 => (0.0..1.0f64, any::<u8>()).prop_map(|(p, b)| Edit::Set(p, b)),
            1 => (0.0..1.0f64, proptest::collection::vec(any::<u8>(), 1..8))
                .prop_map(|(p, v)| Edit::Insert(p, v)),
            1 => (0.0..1.0f64).prop_map(Edit::Cut),
            2 => (0.0..1.0f64, prop_oneof![Just(u32::MAX), Just(1 << 31), Just(60001),
                Just(0), any::<u32>()]).prop_map(|(p, w)| Edit::Word(p, w)),
        ]
    }

    /// `head` (a fraction of edits) lands in the first 64 bytes, where the headers are.
    fn apply(mut b: Vec<u8>, edits: &[(bool, Edit)]) -> Vec<u8> {
        for (head, e) in edits {
            let len = if *head { b.len().min(64) } else { b.len() };
            let at = |p: f64| ((p * len as f64) as usize).min(b.len().saturating_sub(1));
            match e {
                Edit::Set(p, v) if !b.is_empty() => {
                    let i = at(*p);
                    b[i] = *v;
                }
                Edit::Insert(p, v) => {
                    let i = at(*p).min(b.len());
                    b.splice(i..i, v.iter().copied());
                }
                Edit::Cut(p) => {
                    let i = at(*p);
                    b.truncate(i);
                }
                Edit::Word(p, w) if b.len() >= 4 => {
                    let i = at(*p).min(b.len() - 4);
                    let bytes = if i % 2 == 0 {
                        w.to_be_bytes()
                    } else {
                        w.to_le_bytes()
                    };
                    b[i..i + 4].copy_from_slice(&bytes);
                }
                _ => {}
            }
        }
        b
    }

    fn edits() -> impl Strategy<Value = Vec<(bool, Edit)>> {
        proptest::collection::vec((any::<bool>(), edit()), 1..5)
    }

    const MB: usize = 1 << 20;

    proptest! {
        #![proptest_config(config(96))]

        #[test]
        fn idx_pairs(e_img in edits(), e_lab in edits(), zip in any::<(bool, bool)>()) {
            let tmp = tempfile::tempdir().unwrap();
            let n = 4u32;
            let mut img = idx_header(0x803, &[n, 28, 28]);
            img.extend((0..n * 784).map(|i| (i * 7) as u8));
            let mut lab = idx_header(0x801, &[n]);
            lab.extend([1, 5, 9, 0]);
            let (img, lab) = (apply(img, &e_img), apply(lab, &e_lab));
            let (ip, lp) = (tmp.path().join("img"), tmp.path().join("lab"));
            let write = |p: &Path, b: &[u8], z: bool| {
                if z {
                    std::fs::write(p.with_extension("gz"), gz(&[b])).unwrap();
                } else {
                    std::fs::write(p, b).unwrap();
                }
            };
            write(&ip, &img, zip.0);
            write(&lp, &lab, zip.1);
            let ip = if zip.0 { ip.with_extension("gz") } else { ip };
            let lp = if zip.1 { lp.with_extension("gz") } else { lp };
            let (r, peak) = peak_of(|| fmnist_gpu::data::read_pair_sized(&ip, &lp, Some((28, 28))));
            prop_assert!(peak < 8 * MB, "{} bytes allocated", peak);
            match r {
                Ok(d) => prop_assert!(d.n == d.labels.len() && d.images.len() == d.n * 784),
                Err(e) => prop_assert_eq!(e.exit_code(), 2, "{}", e),
            }
        }

        #[test]
        fn safetensors_checkpoints(e in edits(), state in any::<bool>()) {
            let tmp = tempfile::tempdir().unwrap();
            let p = tmp.path().join("c.safetensors");
            let params = Params::glorot(4, 2);
            if state {
                let st = fmnist_gpu::checkpoint::TrainState {
                    params: params.clone(),
                    best: params.clone(),
                    optim: params.tensors.iter().map(|t| vec![0.5; t.len() * 2]).collect(),
                    t: 7,
                    epoch: 1,
                    best_epoch: 1,
                    best_val_accuracy: 0.5,
                };
                fmnist_gpu::checkpoint::save_state(&p, OptimizerKind::Adam, &st, BTreeMap::new())
                    .unwrap();
            } else {
                save_model(&p, &params, BTreeMap::from([("config".into(), "{}".into())])).unwrap();
            }
            let bytes = apply(std::fs::read(&p).unwrap(), &e);
            std::fs::write(&p, &bytes).unwrap();
            let (r, peak) = peak_of(|| {
                if state {
                    load_state(&p, OptimizerKind::Adam).map(|(s, _)| s.params)
                } else {
                    load_model(&p).map(|(m, _)| m)
                }
            });
            prop_assert!(peak < 8 * MB + 4 * bytes.len(), "{} bytes allocated", peak);
            match r {
                Ok(m) => prop_assert!(m.all_finite()),
                Err(e) => prop_assert_eq!(e.exit_code(), 2, "{}", e),
            }
        }

        #[test]
        fn config_json(e in edits(), key in 0usize..12, v in prop_oneof![
            any::<f64>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            Just(serde_json::Value::from("x")),
        ], mutate_bytes in any::<bool>()) {
            let cfg = fmnist_gpu::train::RunConfig {
                data: PathBuf::from("/d"),
                epochs: 3,
                batch_size: 64,
                optimizer: fmnist_gpu::optim::OptimConfig::defaults(OptimizerKind::Wame),
                lr_schedule: Default::default(),
                hidden: 16,
                dropout: 0.4,
                val_fraction: 0.1,
                limit: Some(100),
                augment: false,
                label_smoothing: 0.0,
                seed: 1,
            };
            let keys = ["epochs", "batch_size", "hidden", "dropout", "val_fraction", "limit",
                "label_smoothing", "lr", "alpha", "eps", "zeta_max", "beta1"];
            let text = serde_json::to_string(&cfg).unwrap();
            let text = set_config_key(&text, keys[key], v);
            let text = if mutate_bytes {
                String::from_utf8_lossy(&apply(text.into_bytes(), &e)).into_owned()
            } else {
                text
            };
            let path = Path::new("/r/config.json");
            let r = fmnist_gpu::train::RunConfig::from_json_str(path, &text).and_then(|c| {
                fmnist_gpu::cmd::train::check_run(&c, &limits::Origin::File(path)).map(|_| c)
            });
            match r {
                Ok(c) => {
                    prop_assert!(c.batch_size >= 1 && c.batch_size as u64 <= limits::MAX_BATCH);
                    prop_assert!(c.hidden >= 1 && c.hidden as u64 <= limits::MAX_HIDDEN);
                    prop_assert!(c.epochs >= 1 && c.epochs as u64 <= limits::MAX_EPOCHS);
                    prop_assert!((0.0..1.0).contains(&c.dropout));
                    prop_assert!(c.optimizer.lr.is_finite() && c.optimizer.lr > 0.0);
                }
                Err(e) => {
                    prop_assert_eq!(e.exit_code(), 2);
                    prop_assert!(e.to_string().contains("/r/config.json"), "{}", e);
                }
            }
        }

        #[test]
        fn metrics_jsonl(e in edits(), n in 0usize..5) {
            let tmp = tempfile::tempdir().unwrap();
            let p = tmp.path().join("metrics.jsonl");
            let rec = fmnist_gpu::train::EpochRecord {
                epoch: 1,
                train_loss: 0.5,
                train_accuracy: 0.8,
                val_loss: 0.6,
                val_accuracy: 0.7,
                seconds: 1.0,
                images_per_second: 100.0,
                lr: 1e-3,
                optim: Vec::new(),
            };
            let line = serde_json::to_string(&rec).unwrap();
            let text = format!("{line}\n{line}\n{line}\n");
            std::fs::write(&p, apply(text.into_bytes(), &e)).unwrap();
            let (r, peak) = peak_of(|| fmnist_gpu::train::read_records(&p, n));
            prop_assert!(peak < MB, "{} bytes allocated", peak);
            match r {
                Ok(v) => prop_assert_eq!(v.len(), n),
                Err(e) => prop_assert_eq!(e.exit_code(), 2, "{}", e),
            }
        }
    }

    proptest! {
        #![proptest_config(config(64))]

        #[test]
        fn images(e in edits(), which in 0usize..5) {
            let bytes = match which {
                0 => noise_jpeg(40, 30),
                1 => {
                    let mut out = std::io::Cursor::new(Vec::new());
                    image::DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_fn(33, 17, |x, y| {
                        image::LumaA([(x * 7) as u8, (y * 15) as u8])
                    }))
                    .write_to(&mut out, image::ImageFormat::Png)
                    .unwrap();
                    out.into_inner()
                }
                k => {
                    let f = [image::ImageFormat::Bmp, image::ImageFormat::Gif,
                        image::ImageFormat::WebP][k - 2];
                    let mut out = std::io::Cursor::new(Vec::new());
                    image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(20, 20, |x, y| {
                        image::Rgba([x as u8 * 10, y as u8 * 10, 7, 200])
                    }))
                    .write_to(&mut out, f)
                    .unwrap();
                    out.into_inner()
                }
            };
            let bytes = apply(bytes, &e);
            let t0 = Instant::now();
            let (r, peak) = peak_of(|| {
                fmnist_gpu::cmd::predict::load_image_bytes(Path::new("x"), &bytes, false)
            });
            prop_assert!(peak < 600 * MB, "{} bytes allocated", peak);
            prop_assert!(t0.elapsed() < Duration::from_secs(20));
            match r {
                Ok(px) => prop_assert_eq!(px.len(), 784),
                Err(e) => prop_assert_eq!(e.exit_code(), 2, "{}", e),
            }
        }
    }

    #[test]
    fn mutations_apply() {
        let b = apply(vec![0; 10], &[(false, Edit::Word(0.0, 0x01020304))]);
        assert_eq!(&b[..4], &[1, 2, 3, 4]);
        assert_eq!(Error::BadArg("x".into()).exit_code(), 2);
    }
}
