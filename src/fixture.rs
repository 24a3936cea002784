//! PyTorch reference fixtures (SPEC 10): loading any fixture of the shared form, and checking a
//! net's activations, loss, gradients and three optimizer steps against it.

use crate::checkpoint::{Loaded, load_all, params_from};
use crate::model::{CLASSES, PARAM_NAMES, Params};
use crate::net::{Net, NetConfig};
use crate::optim::{OptimConfig, OptimizerKind};
use crate::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Relative L2 error allowed for activations, loss and gradients, and after three optimizer steps.
pub const TOL: f64 = 1e-5;
pub const TOL_STEPS: f64 = 1e-4;

pub const OPTIMIZERS: [(&str, OptimizerKind); 3] = [
    ("adam", OptimizerKind::Adam),
    ("rmsprop", OptimizerKind::Rmsprop),
    ("sgd", OptimizerKind::Sgd),
];

pub struct Fixture {
    pub path: PathBuf,
    pub batch: usize,
    pub hidden: usize,
    pub x: Vec<f32>,
    pub labels: Vec<u32>,
    pub params: Params,
    tensors: BTreeMap<String, Loaded>,
}

impl Fixture {
    pub fn load(path: &Path) -> Result<Self> {
        let (tensors, _) = load_all(path)?;
        let bad = |msg: String| {
            Error::bad_file(path, format!("not a fixture of the SPEC 10 form: {msg}"))
        };
        let x = tensors
            .get("x")
            .ok_or_else(|| bad("missing tensor x".into()))?;
        if x.shape.len() != 4 || x.shape[1..] != [1, 28, 28] || x.shape[0] == 0 {
            return Err(bad(format!(
                "x has shape {:?}, expected [B,1,28,28]",
                x.shape
            )));
        }
        let batch = x.shape[0];
        if batch as u64 > crate::limits::MAX_BATCH {
            return Err(bad(format!(
                "x holds a batch of {batch}, more than the {} a batch can be",
                crate::limits::MAX_BATCH
            )));
        }
        let xv = x.f32(path, "x")?;
        let y = tensors
            .get("y")
            .ok_or_else(|| bad("missing tensor y".into()))?;
        if y.shape != [batch] || y.dtype != safetensors::Dtype::I64 {
            return Err(bad(format!(
                "y is {:?} {:?}, expected I64 [{batch}]",
                y.dtype, y.shape
            )));
        }
        let labels = y
            .bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .map(|v| {
                u32::try_from(v)
                    .ok()
                    .filter(|&l| (l as usize) < CLASSES)
                    .ok_or_else(|| bad(format!("label {v} in y is not a class 0..9")))
            })
            .collect::<Result<Vec<u32>>>()?;
        let params = params_from(path, &tensors, "")?;
        let hidden = params.hidden;
        let f = Self {
            path: path.to_path_buf(),
            batch,
            hidden,
            x: xv,
            labels,
            params,
            tensors,
        };
        // Check the whole form up front so a malformed fixture is a bad input (exit 2), not a
        // parity failure (exit 1).
        let b = batch;
        let mut want: Vec<(String, Vec<usize>)> = vec![
            ("act.conv1".into(), vec![b, 64, 24, 24]),
            ("act.pool1".into(), vec![b, 64, 12, 12]),
            ("act.conv2".into(), vec![b, 64, 8, 8]),
            ("act.pool2".into(), vec![b, 64, 4, 4]),
            ("act.fc1".into(), vec![b, hidden]),
            ("logits".into(), vec![b, CLASSES]),
            ("loss".into(), vec![1]),
        ];
        let shapes = crate::model::param_shapes(hidden);
        for (n, s) in PARAM_NAMES.iter().zip(&shapes) {
            want.push((format!("grad.{n}"), s.clone()));
        }
        for (o, _) in OPTIMIZERS {
            want.push((format!("{o}.losses"), vec![3]));
            for (n, s) in PARAM_NAMES.iter().zip(&shapes) {
                want.push((format!("{o}.step3.{n}"), s.clone()));
            }
        }
        for (name, shape) in want {
            let t = f
                .tensors
                .get(&name)
                .ok_or_else(|| bad(format!("missing tensor {name}")))?;
            if t.shape != shape {
                return Err(bad(format!(
                    "{name} has shape {:?}, expected {shape:?}",
                    t.shape
                )));
            }
            t.f32(path, &name)?;
        }
        Ok(f)
    }

    fn get(&self, name: &str) -> Vec<f32> {
        self.tensors[name]
            .f32(&self.path, name)
            .expect("checked in load")
    }

    /// The net config a fixture asks for: its batch and hidden width, no dropout.
    pub fn net_config(&self, optim: OptimConfig) -> NetConfig {
        NetConfig {
            batch: self.batch as u32,
            hidden: self.hidden as u32,
            dropout: 0.0,
            augment: false,
            label_smoothing: 0.0,
            optim,
            seed: 0,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub tensor: String,
    pub rel_l2: f64,
    pub max_abs: f64,
    pub tol: f64,
    pub ok: bool,
}

/// `||a - b|| / ||b||` (or `||a - b||` when `b` is zero), in f64, and the largest `|a - b|`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut d2, mut b2, mut max) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let d = *x as f64 - *y as f64;
        d2 += d * d;
        b2 += (*y as f64) * (*y as f64);
        max = max.max(d.abs());
    }
    let rel = if b2 > 0.0 {
        (d2 / b2).sqrt()
    } else {
        d2.sqrt()
    };
    (
        if a.len() == b.len() {
            rel
        } else {
            f64::INFINITY
        },
        max,
    )
}

fn row(name: &str, got: &[f32], want: &[f32], tol: f64) -> Row {
    let (rel, max_abs) = rel_l2(got, want);
    Row {
        tensor: name.to_string(),
        rel_l2: rel,
        max_abs,
        tol,
        ok: rel <= tol,
    }
}

/// Runs every check of SPEC 10 with nets made by `make` (called once per optimizer, each
/// starting from the fixture's parameters).
pub fn check(
    f: &Fixture,
    make: &mut dyn FnMut(NetConfig) -> Result<Box<dyn Net>>,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut net = make(f.net_config(OptimConfig::defaults(OptimizerKind::Adam)))?;
    net.set_params(&f.params)?;
    let probe = net.probe(&f.x, &f.labels)?;
    for (name, got) in &probe.tensors {
        rows.push(row(name, got, &f.get(name), TOL));
    }
    rows.push(row("loss", &[probe.loss], &f.get("loss"), TOL));
    for (n, g) in PARAM_NAMES.iter().zip(&probe.grads) {
        let name = format!("grad.{n}");
        rows.push(row(&name, g, &f.get(&name), TOL));
    }
    drop(net);
    for (o, kind) in OPTIMIZERS {
        let mut net = make(f.net_config(OptimConfig::defaults(kind)))?;
        net.set_params(&f.params)?;
        let mut losses = Vec::new();
        for _ in 0..3 {
            losses.push(net.probe_step(&f.x, &f.labels)?);
        }
        rows.push(row(
            &format!("{o}.losses"),
            &losses,
            &f.get(&format!("{o}.losses")),
            TOL_STEPS,
        ));
        let p = net.params()?;
        for (n, t) in PARAM_NAMES.iter().zip(&p.tensors) {
            let name = format!("{o}.step3.{n}");
            rows.push(row(&name, t, &f.get(&name), TOL_STEPS));
        }
    }
    Ok(rows)
}
