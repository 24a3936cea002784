//! SPEC 11 for model files and images: every bad checkpoint or image given to `eval`, `predict`
//! or `train --resume` ends with exit code 2 and a message naming the file and the problem.

mod common;

use fmnist_gpu::checkpoint::{Named, save_model, serialize_f32};
use fmnist_gpu::model::{PARAM_NAMES, Params, param_shapes};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const HIDDEN: usize = 16;

fn good_params() -> Params {
    Params::glorot(HIDDEN, 5)
}

/// A tensor to write: name, shape, values.
type Owned = (String, Vec<usize>, Vec<f32>);

/// The eight tensors of a good model, for editing.
fn tensors() -> Vec<Owned> {
    let p = good_params();
    PARAM_NAMES
        .iter()
        .zip(param_shapes(HIDDEN))
        .zip(p.tensors)
        .map(|((n, s), t)| (n.to_string(), s, t))
        .collect()
}

/// Runs the binary and checks exit code 2 and that stderr names `file` and says `what`.
fn fails_with(args: &[&str], file: &Path, what: &str) {
    let o = common::bin().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.contains(&file.display().to_string()),
        "{args:?}: message does not name {}: {err}",
        file.display()
    );
    assert!(err.contains(what), "{args:?}: expected {what:?} in: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

/// Bad model files, each with the words its message must contain.
fn bad_models(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let mut out = Vec::new();
    let mut case = |name: &str, what: &'static str, bytes: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        out.push((p, what));
    };
    let good = {
        let p = dir.join("good.safetensors");
        save_model(&p, &good_params(), BTreeMap::new()).unwrap();
        std::fs::read(&p).unwrap()
    };
    case("empty.safetensors", "empty file", Vec::new());
    case("five-bytes.safetensors", "truncated", good[..5].to_vec());
    case("cut-header.safetensors", "truncated", good[..60].to_vec());
    case(
        "cut-data.safetensors",
        "truncated",
        good[..good.len() / 2].to_vec(),
    );
    case(
        "text.safetensors",
        "not a safetensors file",
        b"conv1.weight = [0.1, 0.2, 0.3]\nthis is a text file, not tensors\n".to_vec(),
    );
    let png = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples/0-ankle-boot.png"),
    )
    .unwrap();
    case("image.safetensors", "not a safetensors file", png);
    case(
        "json-garbage.safetensors",
        "not a safetensors file",
        [&16u64.to_le_bytes()[..], b"{not json at all}"].concat(),
    );

    let edit = |f: &dyn Fn(&mut Vec<Owned>)| {
        let mut t = tensors();
        f(&mut t);
        let named: Vec<Named> = t
            .iter()
            .map(|(n, s, v)| Named {
                name: n.clone(),
                shape: s.clone(),
                data: v,
            })
            .collect();
        serialize_f32(&named, &BTreeMap::new()).unwrap()
    };
    case(
        "missing.safetensors",
        "missing tensor fc2.bias",
        edit(&|t| t.retain(|x| x.0 != "fc2.bias")),
    );
    case(
        "extra.safetensors",
        "unexpected tensor fc3.weight",
        edit(&|t| t.push(("fc3.weight".into(), vec![2, 2], vec![0.0; 4]))),
    );
    case(
        "conv-shape.safetensors",
        "tensor conv1.weight has shape [64, 1, 3, 3], expected [64, 1, 5, 5]",
        edit(&|t| {
            t[0].1 = vec![64, 1, 3, 3];
            t[0].2.truncate(64 * 9);
        }),
    );
    case(
        "fc-shape.safetensors",
        "tensor fc1.weight has shape [16, 1000], expected [16, 1024]",
        edit(&|t| {
            t[4].1 = vec![HIDDEN, 1000];
            t[4].2.truncate(HIDDEN * 1000);
        }),
    );
    case(
        "fc1-rank.safetensors",
        "tensor fc1.weight has shape [16384]",
        edit(&|t| t[4].1 = vec![HIDDEN * 1024]),
    );
    // The same tensors stored as float64: a PyTorch model saved without .float().
    let f64s: Vec<(String, Vec<usize>, Vec<u8>)> = tensors()
        .into_iter()
        .map(|(n, s, v)| {
            let b: Vec<u8> = v.iter().flat_map(|x| (*x as f64).to_le_bytes()).collect();
            (n, s, b)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = f64s
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F64, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    case(
        "float64.safetensors",
        "has dtype F64, expected F32",
        safetensors::serialize(views, None).unwrap(),
    );
    out
}

#[test]
fn bad_checkpoints_are_exit_2_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples/0-ankle-boot.png");
    let missing = tmp.path().join("no-such.safetensors");
    let mut cases = bad_models(tmp.path());
    cases.push((missing, "no such file"));
    for (file, what) in &cases {
        let f = file.to_str().unwrap();
        fails_with(&["eval", "--device", "cpu", "--model", f], file, what);
        fails_with(
            &["predict", "--model", f, sample.to_str().unwrap()],
            file,
            what,
        );
    }
    // The good file is accepted by predict (so the cases above fail for their own reasons).
    let good = tmp.path().join("good.safetensors");
    let o = common::bin()
        .args(["predict", "--model", good.to_str().unwrap()])
        .arg(&sample)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn bad_images_are_exit_2_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.safetensors");
    save_model(&model, &good_params(), BTreeMap::new()).unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples/0-ankle-boot.png");
    let png = std::fs::read(&sample).unwrap();
    let mut cases: Vec<(PathBuf, &str)> = Vec::new();
    let mut case = |name: &str, what: &'static str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        cases.push((p, what));
    };
    case(
        "notes.png",
        "not an image",
        b"just some text, not a picture",
    );
    case("empty.jpg", "not an image", b"");
    case("cut.png", "not an image", &png[..png.len() / 2]);
    case(
        "data.bin",
        "not an image",
        &[0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    cases.push((tmp.path().join("absent.png"), "no such file"));
    for (file, what) in &cases {
        // A good image first: the bad one is named even when it is not the first argument.
        fails_with(
            &[
                "predict",
                "--model",
                model.to_str().unwrap(),
                sample.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
            file,
            what,
        );
    }
}

#[test]
fn bad_training_state_is_exit_2_naming_the_file() {
    if common::real_data().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let o = common::bin()
        .args([
            "train", "--device", "cpu", "--limit", "200", "--epochs", "1",
        ])
        .args(["--hidden", "16", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let state = run.join("optimizer.safetensors");
    let good = std::fs::read(&state).unwrap();
    let resume = |what: &str| {
        fails_with(
            &[
                "train",
                "--device",
                "cpu",
                "--resume",
                run.to_str().unwrap(),
            ],
            &state,
            what,
        )
    };
    std::fs::write(&state, &good[..good.len() - 100]).unwrap();
    resume("truncated");
    std::fs::write(&state, b"garbage").unwrap();
    resume("truncated or not a safetensors file");
    // A model file where the state should be: the optimizer's tensors are missing.
    std::fs::copy(run.join("model.safetensors"), &state).unwrap();
    resume("missing tensor best.");
}
