//! Safetensors files: atomic writes, strict reads, and the model checkpoint with PyTorch names.

use crate::model::{PARAM_NAMES, Params, param_shapes};
use crate::optim::OptimizerKind;
use crate::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader (or a run killed mid-write) only ever sees the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let werr = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A half-written temp file (disk full, say) is of no use to anyone.
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e));
    }
    Ok(())
}

/// One f32 tensor to write.
pub struct Named<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

/// Safetensors bytes for f32 tensors, with a deterministic header: tensors in name order, data
/// in the same order, metadata keys sorted. The same tensors and metadata always give the same
/// bytes (the `safetensors` crate's serializer keeps metadata in a `HashMap`, whose order varies
/// from run to run), so checkpoints of identical runs compare equal byte for byte.
pub fn serialize_f32(tensors: &[Named], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut order: Vec<&Named> = tensors.iter().collect();
    order.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).expect("string map"),
        );
    }
    let mut offset = 0usize;
    for t in &order {
        if t.shape.iter().product::<usize>() != t.data.len() {
            return Err(Error::Runtime(format!(
                "tensor {}: shape {:?} does not hold {} values",
                t.name,
                t.shape,
                t.data.len()
            )));
        }
        let end = offset + 4 * t.data.len();
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut h = serde_json::to_vec(&header).expect("plain data");
    // The format pads the header with spaces so the data starts 8-byte aligned.
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + h.len() + offset);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for t in &order {
        out.extend_from_slice(bytemuck::cast_slice(t.data));
    }
    Ok(out)
}

pub fn save_f32(path: &Path, tensors: &[Named], metadata: BTreeMap<String, String>) -> Result<()> {
    let bytes = serialize_f32(tensors, &metadata)
        .map_err(|e| Error::Runtime(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// A tensor read from a file, any dtype, bytes as stored (little-endian).
#[derive(Clone, Debug)]
pub struct Loaded {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Loaded {
    /// The values as f32; an error naming `file` and `name` if the dtype is not F32.
    pub fn f32(&self, file: &Path, name: &str) -> Result<Vec<f32>> {
        if self.dtype != Dtype::F32 {
            return Err(Error::bad_file(
                file,
                format!("tensor {name} has dtype {:?}, expected F32", self.dtype),
            ));
        }
        Ok(self
            .bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// Why `bytes` (read from `path`) is not a whole safetensors file, in words a user can act on:
/// empty, truncated (the header or the tensor data ends early), or not safetensors at all.
fn container_problem(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return Some("empty file (not a safetensors file)".into());
    }
    if bytes.len() < 8 {
        return Some(format!(
            "{} bytes: truncated or not a safetensors file (it starts with an 8-byte header length)",
            bytes.len()
        ));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
    let n = n as usize;
    // The header is JSON right after its length; the format caps it at 100 MB.
    if bytes.get(8).is_some_and(|&b| b != b'{') || n > 100_000_000 {
        return Some("not a safetensors file (no JSON header after the 8-byte length)".into());
    }
    if n + 8 > bytes.len() {
        return Some(format!(
            "truncated: the 8-byte length and the {n}-byte header need {} bytes but the file has \
             only {} bytes",
            n + 8,
            bytes.len()
        ));
    }
    let header: serde_json::Value = match serde_json::from_slice(&bytes[8..8 + n]) {
        Ok(v) => v,
        Err(e) => return Some(format!("not a safetensors file (header is not JSON: {e})")),
    };
    let end = header
        .as_object()?
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let have = (bytes.len() - 8 - n) as u64;
    if end > have {
        return Some(format!(
            "truncated: the tensors need {end} bytes of data but the file has {have}"
        ));
    }
    None
}

/// Every tensor of a safetensors file, and its metadata. Missing, truncated or non-safetensors
/// files are `BadFile` errors naming the file.
pub fn load_all(path: &Path) -> Result<(BTreeMap<String, Loaded>, BTreeMap<String, String>)> {
    let bytes = crate::input::read_regular(
        path,
        crate::limits::MAX_CHECKPOINT_BYTES,
        "a safetensors file",
    )?;
    load_all_bytes(path, &bytes)
}

/// [`load_all`] of a file's bytes (`path` names it in errors).
pub fn load_all_bytes(
    path: &Path,
    bytes: &[u8],
) -> Result<(BTreeMap<String, Loaded>, BTreeMap<String, String>)> {
    if let Some(problem) = container_problem(bytes) {
        return Err(Error::bad_file(path, problem));
    }
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::bad_file(path, format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::bad_file(path, format!("not a valid safetensors file: {e}")))?;
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            (
                name,
                Loaded {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    bytes: v.data().to_vec(),
                },
            )
        })
        .collect();
    Ok((tensors, metadata))
}

/// Reads the eight parameters by their PyTorch names from `tensors` (found under `prefix`),
/// checking names, dtypes and shapes; the hidden width comes from `fc1.weight`.
pub fn params_from(
    path: &Path,
    tensors: &BTreeMap<String, Loaded>,
    prefix: &str,
) -> Result<Params> {
    let get = |name: &str| {
        tensors
            .get(&format!("{prefix}{name}"))
            .ok_or_else(|| Error::bad_file(path, format!("missing tensor {prefix}{name}")))
    };
    let fc1 = get("fc1.weight")?;
    if fc1.shape.len() != 2 || fc1.shape[0] == 0 {
        return Err(Error::bad_file(
            path,
            format!(
                "tensor {prefix}fc1.weight has shape {:?}, expected [hidden, 1024]",
                fc1.shape
            ),
        ));
    }
    let hidden = fc1.shape[0];
    if hidden as u64 > crate::limits::MAX_HIDDEN {
        return Err(Error::bad_file(
            path,
            format!(
                "tensor {prefix}fc1.weight has {hidden} hidden units, more than the {} a model \
                 can have",
                crate::limits::MAX_HIDDEN
            ),
        ));
    }
    let mut p = Params::zeros(hidden);
    for ((name, shape), t) in PARAM_NAMES
        .iter()
        .zip(param_shapes(hidden))
        .zip(&mut p.tensors)
    {
        let l = get(name)?;
        if l.shape != shape {
            return Err(Error::bad_file(
                path,
                format!(
                    "tensor {prefix}{name} has shape {:?}, expected {shape:?}",
                    l.shape
                ),
            ));
        }
        *t = finite(
            path,
            &format!("{prefix}{name}"),
            l.f32(path, &format!("{prefix}{name}"))?,
        )?;
    }
    Ok(p)
}

/// `v` (tensor `name` of `path`) when every value is finite: `train` never writes NaN or
/// infinite weights or state, so such a file is corrupt, and would only yield NaN predictions.
fn finite(path: &Path, name: &str, v: Vec<f32>) -> Result<Vec<f32>> {
    if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        let bad = v.iter().filter(|x| !x.is_finite()).count();
        return Err(Error::bad_file(
            path,
            format!(
                "tensor {name} holds {bad} non-finite values (the first, {x}, at index {i}): a \
                 corrupt or diverged checkpoint"
            ),
        ));
    }
    Ok(v)
}

/// Writes `model.safetensors`-style files: PyTorch names, `metadata` (the run config) alongside.
pub fn save_model(path: &Path, p: &Params, metadata: BTreeMap<String, String>) -> Result<()> {
    let bytes = model_bytes(p, &metadata)
        .map_err(|e| Error::Runtime(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// The bytes [`save_model`] writes (the browser page offers them as a download).
pub fn model_bytes(p: &Params, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let named: Vec<Named> = PARAM_NAMES
        .iter()
        .zip(param_shapes(p.hidden))
        .zip(&p.tensors)
        .map(|((n, s), t)| Named {
            name: n.to_string(),
            shape: s,
            data: t,
        })
        .collect();
    serialize_f32(&named, metadata)
}

/// Loads a model checkpoint; extra tensors are an error (a file of another network).
pub fn load_model(path: &Path) -> Result<(Params, BTreeMap<String, String>)> {
    model_from(path, load_all(path)?)
}

/// [`load_model`] of a file's bytes (`path` names it in errors).
pub fn load_model_bytes(path: &Path, bytes: &[u8]) -> Result<(Params, BTreeMap<String, String>)> {
    model_from(path, load_all_bytes(path, bytes)?)
}

fn model_from(
    path: &Path,
    (tensors, meta): (BTreeMap<String, Loaded>, BTreeMap<String, String>),
) -> Result<(Params, BTreeMap<String, String>)> {
    if let Some(extra) = tensors.keys().find(|k| !PARAM_NAMES.contains(&k.as_str())) {
        return Err(Error::bad_file(
            path,
            format!(
                "unexpected tensor {extra}: not a fmnist-gpu model (expected exactly {})",
                PARAM_NAMES.join(", ")
            ),
        ));
    }
    Ok((params_from(path, &tensors, "")?, meta))
}

/// Names of the optimizer state components, in their interleaved order per weight
/// (`OptimConfig::state_width` floats per weight).
pub fn state_components(kind: OptimizerKind) -> &'static [&'static str] {
    match kind {
        OptimizerKind::Wame => &["zeta", "Z", "theta", "g_prev"],
        OptimizerKind::Adam => &["m", "v"],
        OptimizerKind::Rmsprop => &["v"],
        OptimizerKind::Sgd => &["momentum"],
    }
}

/// Prefix of the best-validation parameters inside `optimizer.safetensors`.
pub const BEST_PREFIX: &str = "best.";

/// Everything `--resume` needs, as of the end of epoch `epoch` (1-based count of completed
/// epochs): `optimizer.safetensors` holds it all, so one atomic rename commits an epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Parameters after `epoch` epochs (what `last.safetensors` holds).
    pub params: Params,
    /// Parameters of the best validation epoch so far (what `model.safetensors` holds).
    pub best: Params,
    /// Optimizer state per parameter tensor, interleaved as the nets keep it.
    pub optim: Vec<Vec<f32>>,
    /// Completed optimizer steps: the dropout and augmentation hashes key on it.
    pub t: u32,
    pub epoch: usize,
    pub best_epoch: usize,
    pub best_val_accuracy: f64,
}

/// Writes `optimizer.safetensors`: the parameters as `<name>`, the best ones as `best.<name>`,
/// each optimizer state component as `<name>.<component>` (e.g. `conv1.weight.zeta`), and the
/// counters in the metadata (with `extra`, e.g. the run config).
pub fn save_state(
    path: &Path,
    kind: OptimizerKind,
    s: &TrainState,
    extra: BTreeMap<String, String>,
) -> Result<()> {
    let comps = state_components(kind);
    let w = comps.len();
    let shapes = param_shapes(s.params.hidden);
    let split: Vec<Vec<Vec<f32>>> = s
        .optim
        .iter()
        .map(|st| {
            (0..w)
                .map(|j| st.iter().skip(j).step_by(w).copied().collect())
                .collect()
        })
        .collect();
    let mut named = Vec::new();
    for (i, (name, shape)) in PARAM_NAMES.iter().zip(&shapes).enumerate() {
        named.push(Named {
            name: name.to_string(),
            shape: shape.clone(),
            data: &s.params.tensors[i],
        });
        named.push(Named {
            name: format!("{BEST_PREFIX}{name}"),
            shape: shape.clone(),
            data: &s.best.tensors[i],
        });
        for (j, c) in comps.iter().enumerate() {
            named.push(Named {
                name: format!("{name}.{c}"),
                shape: shape.clone(),
                data: &split[i][j],
            });
        }
    }
    let mut meta = extra;
    meta.insert("format".into(), "fmnist-gpu training state".into());
    meta.insert("optimizer".into(), format!("{kind:?}").to_lowercase());
    meta.insert("t".into(), s.t.to_string());
    meta.insert("epoch".into(), s.epoch.to_string());
    meta.insert("best_epoch".into(), s.best_epoch.to_string());
    // `{:?}` of an f64 round-trips exactly.
    meta.insert(
        "best_val_accuracy".into(),
        format!("{:?}", s.best_val_accuracy),
    );
    save_f32(path, &named, meta)
}

/// Reads `optimizer.safetensors` for a run of `kind`: exactly the tensors [`save_state`] writes,
/// with the parameters' shapes and F32; anything else is a `BadFile` error naming the file.
pub fn load_state(
    path: &Path,
    kind: OptimizerKind,
) -> Result<(TrainState, BTreeMap<String, String>)> {
    state_from(path, load_all(path)?, kind)
}

/// [`load_state`] of a file's bytes (`path` names it in errors).
pub fn load_state_bytes(
    path: &Path,
    bytes: &[u8],
    kind: OptimizerKind,
) -> Result<(TrainState, BTreeMap<String, String>)> {
    state_from(path, load_all_bytes(path, bytes)?, kind)
}

fn state_from(
    path: &Path,
    (tensors, meta): (BTreeMap<String, Loaded>, BTreeMap<String, String>),
    kind: OptimizerKind,
) -> Result<(TrainState, BTreeMap<String, String>)> {
    let params = params_from(path, &tensors, "")?;
    let best = params_from(path, &tensors, BEST_PREFIX)?;
    if best.hidden != params.hidden {
        return Err(Error::bad_file(
            path,
            format!(
                "best.fc1.weight has hidden width {}, fc1.weight {}",
                best.hidden, params.hidden
            ),
        ));
    }
    let comps = state_components(kind);
    let w = comps.len();
    let mut expected: Vec<String> = Vec::new();
    let mut optim = Vec::new();
    for (name, shape) in PARAM_NAMES.iter().zip(param_shapes(params.hidden)) {
        expected.push(name.to_string());
        expected.push(format!("{BEST_PREFIX}{name}"));
        let n: usize = shape.iter().product();
        let mut st = vec![0.0f32; n * w];
        for (j, c) in comps.iter().enumerate() {
            let key = format!("{name}.{c}");
            let l = tensors.get(&key).ok_or_else(|| {
                Error::bad_file(
                    path,
                    format!(
                        "missing tensor {key} (the run's optimizer is {kind:?}; its state is {})",
                        comps.join(", ")
                    ),
                )
            })?;
            if l.shape != shape {
                return Err(Error::bad_file(
                    path,
                    format!("tensor {key} has shape {:?}, expected {shape:?}", l.shape),
                ));
            }
            for (i, v) in finite(path, &key, l.f32(path, &key)?)?
                .into_iter()
                .enumerate()
            {
                st[i * w + j] = v;
            }
            expected.push(key);
        }
        optim.push(st);
    }
    if let Some(extra) = tensors.keys().find(|k| !expected.contains(k)) {
        return Err(Error::bad_file(
            path,
            format!("unexpected tensor {extra}: not the training state of a {kind:?} run"),
        ));
    }
    let num = |key: &str| -> Result<u64> {
        meta.get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::bad_file(path, format!("metadata {key} missing or not a number")))
    };
    let t = u32::try_from(num("t")?)
        .map_err(|_| Error::bad_file(path, "metadata t is out of range"))?;
    let epoch = num("epoch")? as usize;
    let best_epoch = num("best_epoch")? as usize;
    let best_val_accuracy: f64 = meta
        .get("best_val_accuracy")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            Error::bad_file(path, "metadata best_val_accuracy missing or not a number")
        })?;
    if !(0.0..=1.0).contains(&best_val_accuracy) {
        return Err(Error::bad_file(
            path,
            format!("metadata best_val_accuracy {best_val_accuracy} is not an accuracy in [0, 1]"),
        ));
    }
    if epoch as u64 > crate::limits::MAX_EPOCHS {
        return Err(Error::bad_file(
            path,
            format!(
                "metadata epoch {epoch} is more than the {} epochs a run can have",
                crate::limits::MAX_EPOCHS
            ),
        ));
    }
    if epoch == 0 || best_epoch == 0 || best_epoch > epoch {
        return Err(Error::bad_file(
            path,
            format!("metadata epoch {epoch} / best_epoch {best_epoch} are inconsistent"),
        ));
    }
    Ok((
        TrainState {
            params,
            best,
            optim,
            t,
            epoch,
            best_epoch,
            best_val_accuracy,
        },
        meta,
    ))
}
