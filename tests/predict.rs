//! `predict`: image conversion to the network's input, the sample images in assets/samples, and
//! predictions of a trained tiny model (deterministic, well-formed, equal to the eval path).

mod common;

use fmnist_gpu::checkpoint::load_model;
use fmnist_gpu::cmd::predict::load_image;
use fmnist_gpu::data::{self, CLASSES};
use fmnist_gpu::net::{Net, NetConfig, Which, cpu::CpuNet};
use fmnist_gpu::optim::{OptimConfig, OptimizerKind};
use image::{Rgba, RgbaImage};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn samples() -> Vec<(usize, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples");
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            let idx = stem.split('-').next().unwrap().parse().unwrap();
            (idx, p)
        })
        .collect();
    v.sort();
    assert_eq!(v.len(), 10, "one sample per class in {}", dir.display());
    v
}

#[test]
fn samples_are_the_test_images_they_name() {
    let Some(dir) = common::real_data() else {
        return;
    };
    let test = data::load(&dir).unwrap().test;
    let mut classes = Vec::new();
    for (idx, path) in samples() {
        let img = image::open(&path).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (28, 28), "{}", path.display());
        assert_eq!(
            img.as_raw().as_slice(),
            test.image(idx),
            "{}",
            path.display()
        );
        let class = test.labels[idx] as usize;
        let slug = CLASSES[class].to_lowercase().replace(['/', ' '], "-");
        assert!(
            path.to_str()
                .unwrap()
                .ends_with(&format!("{idx}-{slug}.png")),
            "{} is test image {idx} of class {}",
            path.display(),
            CLASSES[class]
        );
        classes.push(class);
    }
    classes.sort();
    assert_eq!(classes, (0..10).collect::<Vec<_>>());
}

fn save_rgba(dir: &Path, name: &str, img: &RgbaImage) -> PathBuf {
    let p = dir.join(name);
    img.save(&p).unwrap();
    p
}

#[test]
fn images_become_28x28_grey_light_on_black() {
    let tmp = tempfile::tempdir().unwrap();
    // A 28x28 grey image is taken as it is.
    for (_, path) in samples() {
        let raw = image::open(&path).unwrap().to_luma8().into_raw();
        assert_eq!(load_image(&path, false).unwrap(), raw, "{}", path.display());
    }
    // A wide image keeps its aspect ratio: 56x28 becomes 28x14, centred in rows 7..21. A
    // constant image stays exactly constant through the resampling (its weights sum to 1).
    let band = |img: &[u8], rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
        for y in 0..28 {
            for x in 0..28 {
                let want = if rows.contains(&y) && cols.contains(&x) {
                    255
                } else {
                    0
                };
                assert_eq!(img[y * 28 + x], want, "pixel ({y}, {x})");
            }
        }
    };
    let white = save_rgba(
        tmp.path(),
        "wide-white.png",
        &RgbaImage::from_pixel(56, 28, Rgba([255, 255, 255, 255])),
    );
    band(&load_image(&white, false).unwrap(), 7..21, 0..28);
    // Dark on light with --invert gives the same input as light on dark without it.
    let black = save_rgba(
        tmp.path(),
        "wide-black.png",
        &RgbaImage::from_pixel(56, 28, Rgba([0, 0, 0, 255])),
    );
    band(&load_image(&black, true).unwrap(), 7..21, 0..28);
    // A tall one: 10x40 becomes 7x28 in columns 10..17.
    let tall = save_rgba(
        tmp.path(),
        "tall.png",
        &RgbaImage::from_pixel(10, 40, Rgba([255, 255, 255, 255])),
    );
    band(&load_image(&tall, false).unwrap(), 0..28, 10..17);
    // Transparent areas are background in both conventions.
    let clear = save_rgba(
        tmp.path(),
        "clear.png",
        &RgbaImage::from_pixel(30, 30, Rgba([255, 255, 255, 0])),
    );
    for invert in [false, true] {
        assert!(load_image(&clear, invert).unwrap().iter().all(|&v| v == 0));
    }
    // Colour is converted to grey levels.
    let red = save_rgba(
        tmp.path(),
        "red.bmp",
        &RgbaImage::from_pixel(28, 28, Rgba([255, 0, 0, 255])),
    );
    let v = load_image(&red, false).unwrap();
    assert!(
        v.iter().all(|&p| p == v[0]) && v[0] > 30 && v[0] < 100,
        "{}",
        v[0]
    );
}

fn predict_json(args: &[&str], files: &[PathBuf]) -> (Value, Vec<u8>) {
    let o = common::bin()
        .args(["predict", "--json"])
        .args(args)
        .args(files)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (serde_json::from_slice(&o.stdout).unwrap(), o.stdout)
}

fn well_formed(v: &Value, files: &[PathBuf], top: usize) {
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), files.len());
    for (p, f) in preds.iter().zip(files) {
        assert_eq!(p["file"].as_str().unwrap(), f.to_str().unwrap());
        let t = p["top"].as_array().unwrap();
        assert_eq!(t.len(), top);
        let mut seen = std::collections::HashSet::new();
        let mut last = f64::INFINITY;
        let mut sum = 0.0;
        for r in t {
            let c = r["class"].as_u64().unwrap() as usize;
            assert!(c < 10 && seen.insert(c), "{t:?}");
            assert_eq!(r["name"], CLASSES[c]);
            let pr = r["probability"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&pr) && pr <= last, "{t:?}");
            last = pr;
            sum += pr;
        }
        // Softmax in f64 over ten classes: the sum is 1 up to a few ulps.
        if top == 10 {
            assert!((sum - 1.0).abs() < 1e-12, "{sum}");
        } else {
            assert!(sum <= 1.0 + 1e-12, "{sum}");
        }
    }
}

#[test]
fn predictions_are_deterministic_well_formed_and_match_eval() {
    let Some(dir) = common::real_data() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let o = common::bin()
        .args([
            "train", "--device", "cpu", "--limit", "600", "--epochs", "1",
        ])
        .args(["--hidden", "32", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = run.join("model.safetensors");
    let m = model.to_str().unwrap();
    let (idx, files): (Vec<usize>, Vec<PathBuf>) = samples().into_iter().unzip();

    let (a, a_bytes) = predict_json(&["--model", m], &files);
    let (_, b_bytes) = predict_json(&["--model", m], &files);
    assert_eq!(a_bytes, b_bytes, "predict is not deterministic");
    assert_eq!(a["device"], "cpu");
    well_formed(&a, &files, 3);
    let (all, _) = predict_json(&["--model", m, "--top", "10"], &files);
    well_formed(&all, &files, 10);

    // The top class is the eval path's prediction for the same test images.
    let (params, _) = load_model(&model).unwrap();
    let set = data::load(&dir).unwrap();
    let cfg = NetConfig {
        batch: files.len() as u32,
        hidden: 32,
        dropout: 0.0,
        augment: false,
        label_smoothing: 0.0,
        optim: OptimConfig::defaults(OptimizerKind::Wame),
        seed: 0,
    };
    let mut net = CpuNet::new(cfg, common::net_data(set.train, set.test), params);
    let mut preds = Vec::new();
    let idx32: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    net.evaluate(Which::Test, &idx32, Some(&mut preds)).unwrap();
    for (p, want) in a["predictions"].as_array().unwrap().iter().zip(&preds) {
        assert_eq!(p["top"][0]["class"].as_u64().unwrap(), *want as u64, "{p}");
    }

    // On a GPU (lavapipe in CI) the same classes come out, with probabilities within float
    // rounding of the CPU's (SPEC 10's tolerance for reductions, on probabilities below 1).
    if common::have_gpu() {
        let (g, _) = predict_json(
            &["--model", m, "--top", "10", "--adapter", "software"],
            &files,
        );
        assert_eq!(g["device"], "gpu");
        well_formed(&g, &files, 10);
        for (pg, pc) in g["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .zip(all["predictions"].as_array().unwrap())
        {
            assert_eq!(pg["top"][0]["class"], pc["top"][0]["class"], "{pg} vs {pc}");
            for (rg, rc) in pg["top"]
                .as_array()
                .unwrap()
                .iter()
                .zip(pc["top"].as_array().unwrap())
            {
                let (a, b) = (
                    rg["probability"].as_f64().unwrap(),
                    rc["probability"].as_f64().unwrap(),
                );
                if rg["class"] == rc["class"] {
                    assert!((a - b).abs() <= 1e-5 + 1e-4 * b, "{pg} vs {pc}");
                }
            }
        }
    }

    // A large dark-on-light colour photo: upscaled 10x, inverted, on a white 400x300 canvas.
    let src = image::open(&files[0]).unwrap().to_luma8();
    let big = image::imageops::resize(&src, 280, 280, image::imageops::FilterType::Nearest);
    let mut photo = image::RgbImage::from_pixel(400, 300, image::Rgb([255, 255, 255]));
    for (x, y, p) in big.enumerate_pixels() {
        let v = 255 - p.0[0];
        photo.put_pixel(x + 60, y + 10, image::Rgb([v, v, v.saturating_sub(10)]));
    }
    let jpg = tmp.path().join("photo.jpg");
    photo.save(&jpg).unwrap();
    let (p1, b1) = predict_json(&["--model", m, "--invert"], std::slice::from_ref(&jpg));
    let (_, b2) = predict_json(&["--model", m, "--invert"], std::slice::from_ref(&jpg));
    assert_eq!(b1, b2);
    well_formed(&p1, std::slice::from_ref(&jpg), 3);
}
