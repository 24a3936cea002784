//! Safetensors files: atomic writes, strict reads, and the model checkpoint with PyTorch names.

use crate::model::{PARAM_NAMES, Params, param_shapes};
use crate::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
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
    let mut f = std::fs::File::create(&tmp).map_err(werr)?;
    f.write_all(bytes).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(werr)?;
    Ok(())
}

/// One f32 tensor to write.
pub struct Named<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

pub fn save_f32(path: &Path, tensors: &[Named], metadata: BTreeMap<String, String>) -> Result<()> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|t| {
            let v = TensorView::new(Dtype::F32, t.shape.clone(), bytemuck::cast_slice(t.data))
                .map_err(|e| {
                    Error::Runtime(format!("{}: tensor {}: {e}", path.display(), t.name))
                })?;
            Ok((t.name.clone(), v))
        })
        .collect::<Result<_>>()?;
    let meta: HashMap<String, String> = metadata.into_iter().collect();
    let bytes = safetensors::serialize(views, Some(meta))
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

/// Every tensor of a safetensors file, and its metadata. Missing, truncated or non-safetensors
/// files are `BadFile` errors naming the file.
pub fn load_all(path: &Path) -> Result<(BTreeMap<String, Loaded>, BTreeMap<String, String>)> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::bad_file(path, format!("cannot read: {e}")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::bad_file(path, format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
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
        *t = l.f32(path, &format!("{prefix}{name}"))?;
    }
    Ok(p)
}

/// Writes `model.safetensors`-style files: PyTorch names, `metadata` (the run config) alongside.
pub fn save_model(path: &Path, p: &Params, metadata: BTreeMap<String, String>) -> Result<()> {
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
    save_f32(path, &named, metadata)
}

/// Loads a model checkpoint; extra tensors are an error (a file of another network).
pub fn load_model(path: &Path) -> Result<(Params, BTreeMap<String, String>)> {
    let (tensors, meta) = load_all(path)?;
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
