//! `export --onnx` and `fmnist_gpu::onnx`: the exported file, run by an independent ONNX runtime
//! (tract) on real test images, gives the CPU backend's logits; its protobuf says what it should.
//!
//! Set FMNIST_ONNX_DUMP=DIR to also leave a trained model's `model.onnx` and the CPU backend's
//! logits of the first 1,000 test images (`cpu_logits.f32`, little-endian [1000,10]) there, for
//! `scripts/onnxruntime-check.py`.

mod common;

use fmnist_gpu::model::{CLASSES, PARAM_NAMES, Params, param_shapes};
use fmnist_gpu::net::cpu::CpuNet;
use fmnist_gpu::net::{Net, NetConfig, NetData};
use fmnist_gpu::onnx::proto::tensor_shape_proto::dimension::Value as Dim;
use fmnist_gpu::onnx::proto::{ModelProto, type_proto};
use fmnist_gpu::onnx::{self, BATCH_DIM, INPUT, LOGITS, PROBABILITIES};
use prost::Message;
use std::collections::BTreeMap;
use std::path::Path;
use tract_onnx::prelude::*;

const PX: usize = 28 * 28;

/// Logit tolerance, relative to the row's largest |logit| (floored at 1e-3): a logit is a sum
/// over the whole network, so its rounding error scales with the row's size, and a logit near
/// zero through cancellation would make a per-value relative bound meaningless.
const REL: f32 = 1e-5;

fn test_images(n: usize) -> Option<(Vec<f32>, Vec<u8>)> {
    let dir = common::real_data()?;
    let d = fmnist_gpu::data::load(&dir).unwrap();
    assert!(d.test.n >= n);
    let x = d.test.images[..n * PX]
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect();
    Some((x, d.test.labels[..n].to_vec()))
}

/// The CPU backend's logits of `x` (whole batches of `batch`), as `predict` gets them.
fn cpu_logits(params: &Params, x: &[f32], batch: usize) -> Vec<f32> {
    let cfg = NetConfig::inference(batch as u32, params.hidden as u32);
    let mut net = CpuNet::new(cfg, NetData::empty(), params.clone());
    let mut out = Vec::new();
    for chunk in x.chunks(batch * PX) {
        assert_eq!(chunk.len(), batch * PX);
        let p = net.probe(chunk, &vec![0; batch]).unwrap();
        let (_, l) = p.tensors.into_iter().find(|(n, _)| n == LOGITS).unwrap();
        out.extend(l);
    }
    out
}

type Plan = SimplePlan<TypedFact, Box<dyn TypedOp>, Graph<TypedFact, Box<dyn TypedOp>>>;

/// The exported bytes, loaded and optimised by tract with the batch dimension left symbolic.
fn tract_plan(bytes: &[u8]) -> Plan {
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap()
}

/// tract's (logits, probabilities) of `x` in batches of `batch` through one plan.
fn tract_run(plan: &Plan, x: &[f32], batch: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut logits, mut probs) = (Vec::new(), Vec::new());
    for chunk in x.chunks(batch * PX) {
        let n = chunk.len() / PX;
        let input = Tensor::from_shape(&[n, 1, 28, 28], chunk).unwrap();
        let out = plan.run(tvec!(input.into())).unwrap();
        assert_eq!(out.len(), 2);
        for (o, dst) in out.iter().zip([&mut logits, &mut probs]) {
            assert_eq!(o.shape(), &[n, CLASSES]);
            dst.extend(o.as_slice::<f32>().unwrap());
        }
    }
    (logits, probs)
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b })
}

/// Every logit within [`REL`], the same argmax per image, probabilities that sum to 1 and match
/// the softmax of the CPU logits; returns the worst |difference| of the logits.
#[track_caller]
fn assert_agree(what: &str, onnx: &(Vec<f32>, Vec<f32>), cpu: &[f32]) -> f32 {
    let (logits, probs) = onnx;
    assert_eq!(logits.len(), cpu.len(), "{what}");
    let mut worst = 0f32;
    for (i, ((a, b), p)) in logits
        .chunks(CLASSES)
        .zip(cpu.chunks(CLASSES))
        .zip(probs.chunks(CLASSES))
        .enumerate()
    {
        let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (c, (x, y)) in a.iter().zip(b).enumerate() {
            let d = (x - y).abs();
            worst = worst.max(d);
            assert!(
                d <= REL * scale,
                "{what}: image {i} class {c}: onnx {x} vs cpu {y} (|d| {d}, row scale {scale})"
            );
        }
        assert_eq!(argmax(a), argmax(b), "{what}: image {i}: {a:?} vs {b:?}");
        let sum: f32 = p.iter().sum();
        assert!((sum - 1.0).abs() <= 1e-5, "{what}: image {i}: sum {sum}");
        let m = b.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64;
        let z: f64 = b.iter().map(|&v| (v as f64 - m).exp()).sum();
        for (q, &y) in p.iter().zip(b) {
            let want = ((y as f64 - m).exp() / z) as f32;
            assert!(
                (q - want).abs() <= 1e-5,
                "{what}: image {i}: p {q} vs {want}"
            );
        }
    }
    eprintln!(
        "{what}: {} images, worst |logit difference| {worst:e}",
        cpu.len() / CLASSES
    );
    worst
}

/// Exports `params`, runs the file in tract on `n` test images in batches of 100 and of 1 (the
/// first 50), and checks both against the CPU backend. None when the data is not installed.
fn check_against_cpu(what: &str, params: &Params, n: usize) -> Option<()> {
    let (x, _) = test_images(n)?;
    let bytes = onnx::model_bytes(params, &BTreeMap::new()).unwrap();
    let plan = tract_plan(&bytes);
    let cpu = cpu_logits(params, &x, 100);
    assert_agree(
        &format!("{what}, batch 100"),
        &tract_run(&plan, &x, 100),
        &cpu,
    );
    let few = 50;
    assert_agree(
        &format!("{what}, batch 1"),
        &tract_run(&plan, &x[..few * PX], 1),
        &cpu[..few * CLASSES],
    );
    Some(())
}

#[test]
fn glorot_network_matches_the_cpu_backend_on_real_images() {
    check_against_cpu("glorot hidden 128", &Params::glorot(128, 3), 300);
}

#[test]
fn odd_hidden_size_matches_the_cpu_backend() {
    check_against_cpu("glorot hidden 37", &Params::glorot(37, 11), 200);
}

fn decode(bytes: &[u8]) -> ModelProto {
    ModelProto::decode(bytes).unwrap()
}

/// `[dim_param or dim_value...]` of a graph input or output, as strings.
fn dims(m: &ModelProto, name: &str) -> Vec<String> {
    let g = m.graph.as_ref().unwrap();
    let v = g
        .input
        .iter()
        .chain(&g.output)
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no graph input or output {name}"));
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().unwrap().value.as_ref() else {
        panic!("{name} is not a tensor");
    };
    assert_eq!(t.elem_type, 1, "{name} is f32");
    t.shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            Dim::DimParam(p) => p.clone(),
            Dim::DimValue(v) => v.to_string(),
        })
        .collect()
}

#[test]
fn protobuf_has_the_names_shapes_opset_and_metadata() {
    let hidden = 37;
    let params = Params::glorot(hidden, 5);
    let meta: BTreeMap<String, String> = [
        ("config", r#"{"hidden":37,"lr":0.001}"#),
        ("format", "pt"),
        ("empty", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let m = decode(&onnx::model_bytes(&params, &meta).unwrap());
    assert_eq!(m.ir_version, 8);
    assert_eq!(m.producer_name, "fmnist-gpu");
    assert_eq!(m.producer_version, env!("CARGO_PKG_VERSION"));
    assert!(m.doc_string.contains("pixels / 255"), "{}", m.doc_string);
    assert_eq!(m.opset_import.len(), 1);
    assert_eq!(
        (m.opset_import[0].domain.as_str(), m.opset_import[0].version),
        ("", 17)
    );
    let back: BTreeMap<String, String> = m
        .metadata_props
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    assert_eq!(back, meta);

    let g = m.graph.as_ref().unwrap();
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name, INPUT);
    assert_eq!(dims(&m, INPUT), [BATCH_DIM, "1", "28", "28"]);
    let outs: Vec<&str> = g.output.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(outs, [LOGITS, PROBABILITIES]);
    for o in outs {
        assert_eq!(dims(&m, o), [BATCH_DIM, "10"]);
    }
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
        [
            "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu",
            "Gemm", "Softmax"
        ]
    );
    assert!(!ops.contains(&"Dropout"));
    assert_eq!(g.initializer.len(), PARAM_NAMES.len());
    for ((t, name), shape) in g
        .initializer
        .iter()
        .zip(PARAM_NAMES)
        .zip(param_shapes(hidden))
    {
        assert_eq!(t.name, name);
        let want: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        assert_eq!(t.dims, want, "{name}");
        assert_eq!(t.data_type, 1, "{name} is f32");
        assert_eq!(
            t.raw_data.len(),
            4 * shape.iter().product::<usize>(),
            "{name}"
        );
    }
    // The weights are the model's, bit for bit.
    let fc2: Vec<f32> = g.initializer[6]
        .raw_data
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(fc2, params.tensors[6]);
}

fn export(model: &Path, out: &Path) -> std::process::Output {
    common::bin()
        .args(["export", "--model"])
        .arg(model)
        .arg("--onnx")
        .arg(out)
        .output()
        .unwrap()
}

#[track_caller]
fn exit_2_naming(o: &std::process::Output, name: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(name), "stderr does not name {name}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn cli_refuses_a_missing_model_and_unusable_out_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.onnx");
    let missing = tmp.path().join("no-such-model.safetensors");
    exit_2_naming(&export(&missing, &out), "no-such-model.safetensors");
    assert!(!out.exists());

    let model = tmp.path().join("model.safetensors");
    fmnist_gpu::checkpoint::save_model(&model, &Params::glorot(16, 1), BTreeMap::new()).unwrap();
    let o = export(&model, &tmp.path().join("no-such-dir").join("m.onnx"));
    exit_2_naming(&o, "no-such-dir");
    exit_2_naming(&export(&model, tmp.path()), tmp.path().to_str().unwrap());
    let not_dir = tmp.path().join("a-file");
    std::fs::write(&not_dir, b"x").unwrap();
    exit_2_naming(&export(&model, &not_dir.join("m.onnx")), "a-file");
    // Not a model: the loader's own error.
    exit_2_naming(&export(&not_dir, &out), "a-file");
    assert!(!out.exists());
}

/// A briefly trained model, exported by the binary, agrees with the CPU backend on 1,000 test
/// images, and the file keeps the run's config.
#[test]
fn cli_exports_a_trained_model() {
    let Some((x, labels)) = test_images(1000) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let o = common::bin()
        .args([
            "train", "--device", "cpu", "--limit", "600", "--epochs", "1", "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = run.join("model.safetensors");
    let out = tmp.path().join("model.onnx");
    let o = export(&model, &out);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("model.onnx") && stdout.contains("opset 17"),
        "{stdout}"
    );
    let bytes = std::fs::read(&out).unwrap();
    assert!(stdout.contains(&bytes.len().to_string()), "{stdout}");

    let (params, meta) = fmnist_gpu::checkpoint::load_model(&model).unwrap();
    assert!(!meta.is_empty());
    let m = decode(&bytes);
    let back: BTreeMap<String, String> = m
        .metadata_props
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect();
    assert_eq!(back, meta);

    let cpu = cpu_logits(&params, &x, 100);
    let ran = tract_run(&tract_plan(&bytes), &x, 100);
    assert_agree("trained, batch 100", &ran, &cpu);
    let right = ran
        .0
        .chunks(CLASSES)
        .zip(&labels)
        .filter(|(r, l)| argmax(r) == **l as usize)
        .count();
    eprintln!("trained model: tract accuracy {right}/1000");
    // One epoch on 600 images is only a few steps (25% when written), but above chance (10%):
    // the exported weights are trained ones, not a fresh init.
    assert!(right > 150, "{right}");

    if let Some(dir) = std::env::var_os("FMNIST_ONNX_DUMP") {
        let dir = Path::new(&dir);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("model.onnx"), &bytes).unwrap();
        let raw: Vec<u8> = cpu.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join("cpu_logits.f32"), raw).unwrap();
        eprintln!("dumped model.onnx and cpu_logits.f32 to {}", dir.display());
    }
}
