//! Tests of the data module: IDX reading (raw and gzip), every bad-file case of SPEC 11, the
//! discovery order of SPEC 3, the seeded split, and the installed data set when present.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use fmnist_gpu::Error;
use fmnist_gpu::data::{self, CLASSES, Places};

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn images(n: u32, rows: u32, cols: u32, seed: u8) -> (Vec<u8>, Vec<u8>) {
    let pix: Vec<u8> = (0..n * rows * cols)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    (idx(2051, &[n, rows, cols], &pix), pix)
}

fn labels(n: u32) -> (Vec<u8>, Vec<u8>) {
    let lab: Vec<u8> = (0..n).map(|i| ((i * 7 + 3) % 10) as u8).collect();
    (idx(2049, &[n], &lab), lab)
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Asserts a BadFile that names `name` (in its path and its message) and says `needle`.
#[track_caller]
fn assert_bad(r: Result<impl std::fmt::Debug, Error>, name: &str, needle: &str) {
    let e = r.expect_err("expected a BadFile error");
    let msg = e.to_string();
    match &e {
        Error::BadFile { path, .. } => assert!(
            path.to_string_lossy().contains(name),
            "path {} does not name {name}",
            path.display()
        ),
        other => panic!("expected BadFile, got {other:?}"),
    }
    assert!(msg.contains(name), "message does not name {name}: {msg}");
    assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn classes_match_spec() {
    assert_eq!(CLASSES[0], "T-shirt/top");
    assert_eq!(CLASSES[5], "Sandal");
    assert_eq!(CLASSES[9], "Ankle boot");
    assert_eq!(
        CLASSES.join(","),
        "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
    );
}

#[test]
fn raw_and_gzip_read_exactly() {
    let t = tempfile::tempdir().unwrap();
    let (ib, pix) = images(5, 3, 4, 7);
    let (lb, lab) = labels(5);
    for zipped in [false, true] {
        let sub = t.path().join(if zipped { "gz" } else { "raw" });
        std::fs::create_dir(&sub).unwrap();
        let (iname, lname) = if zipped {
            put(&sub, "img.gz", &gz(&ib));
            put(&sub, "lab.gz", &gz(&lb));
            ("img", "lab")
        } else {
            put(&sub, "img", &ib);
            put(&sub, "lab", &lb);
            ("img", "lab")
        };
        // The bare name finds `X.gz` when only that exists.
        let (n, r, c, p) = data::read_images(&sub.join(iname)).unwrap();
        assert_eq!((n, r, c), (5, 3, 4));
        assert_eq!(p, pix);
        assert_eq!(data::read_labels(&sub.join(lname)).unwrap(), lab);
        let ds = data::read_pair(&sub.join(iname), &sub.join(lname)).unwrap();
        assert_eq!((ds.n, ds.rows, ds.cols, ds.pixels()), (5, 3, 4, 12));
        assert_eq!(ds.images, pix);
        assert_eq!(ds.labels, lab);
        assert_eq!(ds.image(0), &pix[..12]);
        assert_eq!(ds.image(4), &pix[48..60]);
    }
    // An explicit `.gz` name reads too.
    let (n, _, _, p) = data::read_images(&t.path().join("gz/img.gz")).unwrap();
    assert_eq!((n, p), (5, pix));
}

#[test]
fn raw_name_wins_over_gz() {
    let t = tempfile::tempdir().unwrap();
    let (raw, raw_pix) = images(2, 2, 2, 1);
    let (other, other_pix) = images(2, 2, 2, 99);
    assert_ne!(raw_pix, other_pix);
    put(t.path(), "img", &raw);
    put(t.path(), "img.gz", &gz(&other));
    assert_eq!(data::read_images(&t.path().join("img")).unwrap().3, raw_pix);
    assert_eq!(
        data::read_images(&t.path().join("img.gz")).unwrap().3,
        other_pix
    );
}

#[test]
fn multi_member_gzip_reads_whole() {
    let t = tempfile::tempdir().unwrap();
    let (ib, pix) = images(4, 2, 3, 5);
    let mut two = gz(&ib[..10]);
    two.extend_from_slice(&gz(&ib[10..]));
    put(t.path(), "img.gz", &two);
    assert_eq!(data::read_images(&t.path().join("img")).unwrap().3, pix);
}

#[test]
fn missing_file() {
    let t = tempfile::tempdir().unwrap();
    let r = data::read_images(&t.path().join("train-images-idx3-ubyte"));
    assert_bad(r, "train-images-idx3-ubyte", "not found");
    let r = data::read_labels(&t.path().join("lab.gz"));
    assert_bad(r, "lab.gz", "not found");
}

#[test]
fn directory_is_not_a_file() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("img")).unwrap();
    assert_bad(
        data::read_images(&t.path().join("img")),
        "img",
        "not a regular file",
    );
}

#[test]
fn wrong_magic() {
    let t = tempfile::tempdir().unwrap();
    let (lb, _) = labels(3);
    let (ib, _) = images(3, 2, 2, 0);
    let p = put(t.path(), "labels-as-images", &lb);
    assert_bad(
        data::read_images(&p),
        "labels-as-images",
        "expected magic 2051 (IDX u8 images), found 2049",
    );
    let p = put(t.path(), "images-as-labels.gz", &gz(&ib));
    assert_bad(
        data::read_labels(&p),
        "images-as-labels.gz",
        "expected magic 2049 (IDX u8 labels), found 2051",
    );
    // Float IDX (type 0x0D) is named as such.
    let p = put(t.path(), "float", &idx(0x0D03, &[1, 1, 1], &[0, 0, 0, 0]));
    assert_bad(data::read_images(&p), "float", "element type 0x0d");
    // Gzip bytes under a raw name get a hint.
    let p = put(t.path(), "zipped-no-suffix", &gz(&ib));
    assert_bad(data::read_images(&p), "zipped-no-suffix", "looks like gzip");
}

#[test]
fn wrong_dimension_count() {
    let t = tempfile::tempdir().unwrap();
    let p = put(t.path(), "img4d", &idx(2052, &[1, 2, 2, 1], &[0; 4]));
    assert_bad(
        data::read_images(&p),
        "img4d",
        "4 dimensions where 3 are expected",
    );
    let p = put(t.path(), "lab2d.gz", &gz(&idx(2050, &[2, 1], &[0; 2])));
    assert_bad(
        data::read_labels(&p),
        "lab2d.gz",
        "2 dimensions where 1 are expected",
    );
}

#[test]
fn header_says_more_than_the_file_holds() {
    let t = tempfile::tempdir().unwrap();
    let (mut ib, _) = images(4, 3, 3, 0);
    ib.truncate(ib.len() - 5);
    let p = put(t.path(), "short-img", &ib);
    assert_bad(data::read_images(&p), "short-img", "holds only 31");
    let p = put(t.path(), "short-img.gz", &gz(&ib));
    assert_bad(data::read_images(&p), "short-img.gz", "holds only 31");
    let (mut lb, _) = labels(6);
    lb.pop();
    let p = put(t.path(), "short-lab", &lb);
    assert_bad(data::read_labels(&p), "short-lab", "holds only 5");
}

#[test]
fn trailing_garbage() {
    let t = tempfile::tempdir().unwrap();
    let (mut ib, _) = images(2, 2, 2, 0);
    ib.extend_from_slice(b"junk");
    let p = put(t.path(), "long-img", &ib);
    assert_bad(
        data::read_images(&p),
        "long-img",
        "4 bytes of trailing data",
    );
    let p = put(t.path(), "long-img.gz", &gz(&ib));
    assert_bad(
        data::read_images(&p),
        "long-img.gz",
        "4 bytes of trailing data",
    );
    let (mut lb, _) = labels(3);
    lb.push(1);
    let p = put(t.path(), "long-lab.gz", &gz(&lb));
    assert_bad(
        data::read_labels(&p),
        "long-lab.gz",
        "1 bytes of trailing data",
    );
}

#[test]
fn shorter_than_a_header() {
    let t = tempfile::tempdir().unwrap();
    let p = put(t.path(), "empty", &[]);
    assert_bad(
        data::read_images(&p),
        "empty",
        "too short for an IDX header",
    );
    let p = put(t.path(), "empty.gz", &gz(&[]));
    assert_bad(
        data::read_labels(&p),
        "empty.gz",
        "too short for an IDX header",
    );
    let p = put(t.path(), "half-header", &idx(2051, &[1], &[]));
    assert_bad(
        data::read_images(&p),
        "half-header",
        "ends inside the IDX header",
    );
}

#[test]
fn lying_header_does_not_allocate() {
    // 2^32-1 images of 65535x65535: a reader that trusts the header would ask for ~2^64 bytes.
    let t = tempfile::tempdir().unwrap();
    let big = idx(2051, &[u32::MAX, 65535, 65535], &[1, 2, 3]);
    let p = put(t.path(), "liar", &big);
    // The item count is capped before anything else is looked at.
    assert_bad(data::read_images(&p), "liar", "more than the 60000");
    let p = put(t.path(), "liar.gz", &gz(&big));
    assert_bad(data::read_images(&p), "liar.gz", "more than the 60000");
    let p = put(t.path(), "liar-lab.gz", &gz(&idx(2049, &[u32::MAX], &[1])));
    assert_bad(data::read_labels(&p), "liar-lab.gz", "more than the 60000");
    // Within the cap, the size is still checked against the data.
    let p = put(
        t.path(),
        "short.gz",
        &gz(&idx(2051, &[60000, 65535, 65535], &[1, 2, 3])),
    );
    assert_bad(data::read_images(&p), "short.gz", "holds only 3");
    let p = put(t.path(), "short-lab.gz", &gz(&idx(2049, &[60000], &[1])));
    assert_bad(data::read_labels(&p), "short-lab.gz", "holds only 1");
}

#[test]
fn truncated_gzip() {
    let t = tempfile::tempdir().unwrap();
    let (ib, _) = images(20, 5, 5, 3);
    let z = gz(&ib);
    let p = put(t.path(), "cut.gz", &z[..z.len() / 2]);
    assert_bad(data::read_images(&p), "cut.gz", "truncated or corrupt gzip");
    // Missing only the CRC/size trailer: all data decodes, the check must still fail.
    let p = put(t.path(), "no-trailer.gz", &z[..z.len() - 8]);
    assert_bad(
        data::read_images(&p),
        "no-trailer.gz",
        "truncated or corrupt gzip",
    );
}

#[test]
fn corrupt_gzip() {
    let t = tempfile::tempdir().unwrap();
    let (ib, _) = images(20, 5, 5, 3);
    let z = gz(&ib);
    // A wrong CRC32 in the trailer.
    let mut bad_crc = z.clone();
    let k = bad_crc.len() - 8;
    bad_crc[k] ^= 0xff;
    let p = put(t.path(), "bad-crc.gz", &bad_crc);
    assert_bad(
        data::read_images(&p),
        "bad-crc.gz",
        "truncated or corrupt gzip",
    );
    // Not gzip at all under a .gz name.
    let p = put(t.path(), "raw-named.gz", &ib);
    assert_bad(
        data::read_images(&p),
        "raw-named.gz",
        "truncated or corrupt gzip",
    );
    // Junk after the gzip member.
    let mut junk = z.clone();
    junk.extend_from_slice(b"not another member");
    let p = put(t.path(), "junk-after.gz", &junk);
    assert_bad(
        data::read_images(&p),
        "junk-after.gz",
        "truncated or corrupt gzip",
    );
}

#[test]
fn label_above_nine() {
    let t = tempfile::tempdir().unwrap();
    let p = put(t.path(), "lab10", &idx(2049, &[4], &[0, 9, 10, 3]));
    assert_bad(
        data::read_labels(&p),
        "lab10",
        "label 10 at index 2 is above 9",
    );
    let p = put(t.path(), "lab255.gz", &gz(&idx(2049, &[2], &[1, 255])));
    assert_bad(data::read_labels(&p), "lab255.gz", "label 255 at index 1");
}

#[test]
fn count_mismatch() {
    let t = tempfile::tempdir().unwrap();
    let (ib, _) = images(5, 2, 2, 0);
    let (lb, _) = labels(6);
    let i = put(t.path(), "imgs5", &ib);
    let l = put(t.path(), "labs6.gz", &gz(&lb));
    let r = data::read_pair(&i, &t.path().join("labs6"));
    assert_bad(r, "labs6.gz", "holds 6 labels but");
    let e = data::read_pair(&i, &l).unwrap_err().to_string();
    assert!(e.contains("imgs5") && e.contains("5 images"), "{e}");
}

#[test]
fn empty_set_is_rejected() {
    let t = tempfile::tempdir().unwrap();
    let i = put(t.path(), "img0", &idx(2051, &[0, 28, 28], &[]));
    let l = put(t.path(), "lab0", &idx(2049, &[0], &[]));
    // A zero-length IDX file is well formed on its own...
    assert_eq!(data::read_labels(&l).unwrap(), Vec::<u8>::new());
    // ...but a data set needs images.
    assert_bad(data::read_pair(&i, &l), "img0", "no images");
    let z = put(t.path(), "zero-side", &idx(2051, &[3, 0, 28], &[]));
    assert_bad(data::read_images(&z), "zero-side", "0x28");
}

fn write_set(dir: &Path, n_train: u32, n_test: u32, side: u32, zip: [bool; 4]) {
    let files = [
        (data::TRAIN_IMAGES, images(n_train, side, side, 1).0),
        (data::TRAIN_LABELS, labels(n_train).0),
        (data::TEST_IMAGES, images(n_test, side, side, 2).0),
        (data::TEST_LABELS, labels(n_test).0),
    ];
    for ((name, bytes), z) in files.into_iter().zip(zip) {
        if z {
            put(dir, &format!("{name}.gz"), &gz(&bytes));
        } else {
            put(dir, name, &bytes);
        }
    }
}

#[test]
fn load_mixed_raw_and_gz() {
    let t = tempfile::tempdir().unwrap();
    write_set(t.path(), 7, 3, 28, [true, false, false, true]);
    let fm = data::load(t.path()).unwrap();
    assert_eq!(fm.dir, t.path());
    assert_eq!((fm.train.n, fm.train.rows, fm.train.cols), (7, 28, 28));
    assert_eq!((fm.test.n, fm.test.rows, fm.test.cols), (3, 28, 28));
    assert_eq!(fm.train.images, images(7, 28, 28, 1).1);
    assert_eq!(fm.test.images, images(3, 28, 28, 2).1);
    assert_eq!(fm.train.labels, labels(7).1);
    assert_eq!(fm.test.labels, labels(3).1);
}

#[test]
fn load_errors_name_the_file() {
    let t = tempfile::tempdir().unwrap();
    write_set(t.path(), 4, 2, 28, [false; 4]);
    std::fs::remove_file(t.path().join(data::TEST_LABELS)).unwrap();
    assert_bad(data::load(t.path()), data::TEST_LABELS, "not found");

    let t = tempfile::tempdir().unwrap();
    write_set(t.path(), 4, 2, 14, [true; 4]);
    assert_bad(data::load(t.path()), data::TRAIN_IMAGES, "14x14");

    let t = tempfile::tempdir().unwrap();
    assert_bad(
        data::load(&t.path().join("nowhere")),
        "nowhere",
        "does not exist",
    );
}

fn data_dir(root: &Path, name: &str, zipped: bool) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let f = format!("{}{}", data::TRAIN_IMAGES, if zipped { ".gz" } else { "" });
    put(&d, &f, b"presence is what counts here");
    d
}

#[test]
fn locate_order() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let flag = data_dir(root, "flag", false);
    let env = data_dir(root, "env", true);
    let sys = data_dir(root, "sys", true);
    let cache = data_dir(root, "cache", false);
    let empty = root.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let all = Places {
        env: Some(env.clone()),
        system: sys.clone(),
        cache: Some(cache.clone()),
    };
    assert_eq!(data::locate_in(Some(&flag), &all).unwrap(), flag);
    assert_eq!(data::locate_in(None, &all).unwrap(), env);
    let no_env = Places {
        env: Some(empty.clone()),
        ..all.clone()
    };
    assert_eq!(data::locate_in(None, &no_env).unwrap(), sys);
    let only_cache = Places {
        env: None,
        system: empty.clone(),
        cache: Some(cache.clone()),
    };
    assert_eq!(data::locate_in(None, &only_cache).unwrap(), cache);
}

#[test]
fn locate_flag_does_not_fall_through() {
    let t = tempfile::tempdir().unwrap();
    let env = data_dir(t.path(), "env", false);
    let empty = t.path().join("flag-empty");
    std::fs::create_dir(&empty).unwrap();
    let places = Places {
        env: Some(env.clone()),
        system: env.clone(),
        cache: Some(env),
    };
    assert_bad(
        data::locate_in(Some(&empty), &places),
        "flag-empty",
        "has no train-images-idx3-ubyte",
    );
    assert_bad(
        data::locate_in(Some(&t.path().join("flag-missing")), &places),
        "flag-missing",
        "does not exist",
    );
}

#[test]
fn locate_none_lists_the_places() {
    let t = tempfile::tempdir().unwrap();
    let places = Places {
        env: Some(t.path().join("env-dir")),
        system: t.path().join("sys-dir"),
        cache: Some(t.path().join("cache-dir")),
    };
    let e = data::locate_in(None, &places).unwrap_err();
    assert!(matches!(e, Error::BadArg(_)), "{e:?}");
    assert_eq!(e.exit_code(), 2);
    let m = e.to_string();
    for needle in [
        "--data",
        "$FMNIST_DATA",
        "env-dir",
        "sys-dir",
        "cache-dir",
        "sudo apt-get install dataset-fashion-mnist",
    ] {
        assert!(m.contains(needle), "message lacks {needle:?}:\n{m}");
    }
    let unset = Places {
        env: None,
        system: t.path().join("sys-dir"),
        cache: None,
    };
    let m = data::locate_in(None, &unset).unwrap_err().to_string();
    assert!(m.contains("(not set)"), "{m}");
}

#[test]
fn places_from_env_has_the_system_dir() {
    let p = Places::from_env();
    assert_eq!(p.system, Path::new("/usr/share/datasets/fashion-mnist"));
    if let Some(c) = &p.cache {
        assert!(c.ends_with("fmnist-gpu"), "{}", c.display());
    }
}

#[test]
fn split_sizes_disjoint_and_complete() {
    let s = data::split(1000, 0.1, None, 42).unwrap();
    assert_eq!((s.train.len(), s.val.len()), (900, 100));
    let mut all: Vec<u32> = s.train.iter().chain(&s.val).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<u32>>());
    // Shuffled, not sorted.
    assert!(s.train.windows(2).any(|w| w[0] > w[1]));

    let s = data::split(60000, 0.1, Some(1000), 0).unwrap();
    assert_eq!((s.train.len(), s.val.len()), (900, 100));
    let mut all: Vec<u32> = s.train.iter().chain(&s.val).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 1000);
    assert!(all.iter().all(|&i| i < 60000));
    // The limit keeps a random subset, not the first 1000 images.
    assert!(*all.last().unwrap() >= 1000);

    // round(kept * f): 0.25 * 10 = 2.5 rounds to 3.
    let s = data::split(10, 0.25, None, 1).unwrap();
    assert_eq!((s.train.len(), s.val.len()), (7, 3));
    let s = data::split(10, 0.0, None, 1).unwrap();
    assert_eq!((s.train.len(), s.val.len()), (10, 0));
    let s = data::split(50, 0.1, Some(50), 1).unwrap();
    assert_eq!((s.train.len(), s.val.len()), (45, 5));
}

#[test]
fn split_is_seeded() {
    let a = data::split(5000, 0.2, None, 7).unwrap();
    let b = data::split(5000, 0.2, None, 7).unwrap();
    let c = data::split(5000, 0.2, None, 8).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.val, c.val);
    assert_ne!(a.train, c.train);
    // The limit takes a prefix of the same shuffle: validation is its first part.
    let l = data::split(5000, 0.2, Some(500), 7).unwrap();
    let full: Vec<u32> = a.val.iter().chain(&a.train).copied().collect();
    let lim: Vec<u32> = l.val.iter().chain(&l.train).copied().collect();
    assert_eq!(lim, full[..500]);
}

#[test]
fn split_bad_arguments() {
    for f in [-0.1, 1.0, 1.5, f64::NAN, f64::INFINITY] {
        let e = data::split(100, f, None, 0).unwrap_err();
        assert!(matches!(e, Error::BadArg(_)), "{f}: {e:?}");
        assert!(e.to_string().contains("--val-fraction"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
    for (lim, needle) in [(0, "at least 1"), (101, "larger than the 100")] {
        let e = data::split(100, 0.1, Some(lim), 0).unwrap_err();
        assert!(matches!(e, Error::BadArg(_)), "{e:?}");
        assert!(e.to_string().contains("--limit"), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
    // A validation share that swallows every kept image leaves nothing to train on.
    let e = data::split(100, 0.5, Some(1), 0).unwrap_err();
    assert!(matches!(e, Error::BadArg(_)), "{e:?}");
    assert!(e.to_string().contains("no training images"), "{e}");
}

#[test]
fn installed_fashion_mnist() {
    let dir = Path::new(data::SYSTEM_DIR);
    if !data::has_data(dir) {
        println!(
            "SKIPPED installed_fashion_mnist: {} not present (sudo apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    assert_eq!(
        data::locate_in(Some(dir), &Places::from_env()).unwrap(),
        dir
    );
    let fm = data::load(dir).unwrap();
    for (set, n, per) in [(&fm.train, 60000, 6000), (&fm.test, 10000, 1000)] {
        assert_eq!((set.n, set.rows, set.cols), (n, 28, 28));
        assert_eq!(set.images.len(), n * 784);
        assert_eq!(set.labels.len(), n);
        let mut counts = [0usize; 10];
        for &l in &set.labels {
            counts[l as usize] += 1;
        }
        assert_eq!(counts, [per; 10]);
        // Real images, not zeros: light garments on black.
        assert!(set.images.contains(&255));
        assert!(set.image(0).iter().filter(|&&p| p > 0).count() > 100);
    }
    let s = data::split(fm.train.n, 0.1, None, 0).unwrap();
    assert_eq!((s.train.len(), s.val.len()), (54000, 6000));
}

/// The page's reader of in-memory files gives what the file reader gives, raw or gzip, and
/// refuses a bad pair with the same kind of error, naming the file it was given as.
#[test]
fn pair_from_bytes_reads_as_files_do() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = images(5, 28, 28, 3);
    let (lab, _) = labels(5);
    let want = data::read_pair_sized(
        &put(dir.path(), "i", &img),
        &put(dir.path(), "l", &lab),
        Some((28, 28)),
    )
    .unwrap();
    for (i, l) in [(img.clone(), lab.clone()), (gz(&img), gz(&lab))] {
        let got = data::pair_from_bytes((Path::new("i.gz"), i), (Path::new("l.gz"), l)).unwrap();
        assert_eq!((got.n, got.rows, got.cols), (want.n, want.rows, want.cols));
        assert_eq!((&got.images, &got.labels), (&want.images, &want.labels));
    }
    let (short, _) = labels(4);
    let r = data::pair_from_bytes((Path::new("imgs"), img), (Path::new("labs"), short));
    assert_bad(r, "labs", "holds 4 labels");
    let (small, _) = images(5, 27, 28, 1);
    let r = data::pair_from_bytes((Path::new("imgs"), small), (Path::new("labs"), lab));
    assert_bad(r, "imgs", "27x28");
}
