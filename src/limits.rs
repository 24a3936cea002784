//! Upper bounds on every size and count the program accepts (USAGE.md, "Limits"), the checks that
//! enforce them, and where a checked value came from, so a value read back from a file fails with
//! the same rule as its flag but names the file and the key.

use crate::{Error, Result};
use std::fmt::Display;
use std::path::Path;

/// Epochs of a run (`train`, `search`, `compare`): a real run uses 15 to 100.
pub const MAX_EPOCHS: u64 = 1_000;
/// Units of the hidden dense layer: fc1 alone holds 1,024 weights per unit.
pub const MAX_HIDDEN: u64 = 4_096;
/// Images per batch. The CPU backend holds about 250 KB of activations per batch slot, so this
/// caps a batch at about 1 GB; a batch larger than the images it runs over is clamped to them.
pub const MAX_BATCH: u64 = 4_096;
/// `search --iters`, `search --folds` and `compare --seeds`.
pub const MAX_ITERS: u64 = 1_000;
pub const MAX_FOLDS: u64 = 100;
pub const MAX_SEEDS: u64 = 100;
/// `bench --steps`, `--warmup` and `--windows`.
pub const MAX_STEPS: u64 = 100_000;
pub const MAX_WINDOWS: u64 = 1_000;
/// Images (and labels) per IDX file: Fashion-MNIST's training set has 60,000.
pub const MAX_IDX_ITEMS: u64 = 60_000;
/// Bytes of a safetensors file read whole (a model or state of the widest net is about 100 MB).
pub const MAX_CHECKPOINT_BYTES: u64 = 1 << 30;
/// Bytes of config.json and of one metrics.jsonl.
pub const MAX_TEXT_BYTES: u64 = 64 << 20;
/// `predict`: bytes of an image file, pixels of one image, and the decoder's allocation cap.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;
pub const MAX_IMAGE_PIXELS: u64 = 64 << 20;
pub const MAX_IMAGE_SIDE: u32 = 65_535;
pub const MAX_DECODE_BYTES: u64 = 256 << 20;

/// Where a checked value came from, which decides how its error reads and which exit-2 variant
/// it is: a flag (`--batch-size`) or a key of a file the program read back.
#[derive(Clone, Copy, Debug)]
pub enum Origin<'a> {
    Flags,
    /// A run's config.json (or another JSON file holding a run config at its top level).
    File(&'a Path),
    /// The `config` metadata of a safetensors checkpoint.
    Meta(&'a Path),
}

impl Origin<'_> {
    /// The error for a value that breaks a rule: `msg` reads after the flag or the key.
    pub fn err(&self, flag: &str, key: &str, msg: impl Display) -> Error {
        match self {
            Origin::Flags => Error::BadArg(format!("{flag} {msg}")),
            Origin::File(p) => Error::bad_file(p, format!("key \"{key}\" {msg}")),
            Origin::Meta(p) => Error::bad_file(p, format!("metadata config key \"{key}\" {msg}")),
        }
    }
}

/// A count in `1..=max`.
pub fn count(o: &Origin, flag: &str, key: &str, v: u64, max: u64) -> Result<()> {
    if v == 0 {
        return Err(o.err(flag, key, "must be at least 1"));
    }
    if v > max {
        return Err(o.err(flag, key, format!("must be at most {max}, got {v}")));
    }
    Ok(())
}

/// A probability-like fraction in [0, 1) (dropout, validation share, label smoothing, alpha).
pub fn fraction<T: Into<f64> + Display + Copy>(
    o: &Origin,
    flag: &str,
    key: &str,
    v: T,
) -> Result<()> {
    if !(0.0..1.0).contains(&v.into()) {
        return Err(o.err(flag, key, format!("must be in [0, 1), got {v}")));
    }
    Ok(())
}

/// A finite number above 0 (learning rates, eps, WAME's factors and clip bounds).
pub fn positive(o: &Origin, flag: &str, key: &str, v: f32) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(o.err(flag, key, format!("must be a positive number, got {v}")));
    }
    Ok(())
}

/// `--limit` before the data is known: at least 1 and at most [`MAX_IDX_ITEMS`].
pub fn limit(o: &Origin, v: Option<usize>) -> Result<()> {
    match v {
        Some(l) => count(o, "--limit", "limit", l as u64, MAX_IDX_ITEMS),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_flag_or_the_file_and_key() {
        let e = count(&Origin::Flags, "--hidden", "hidden", 0, 10).unwrap_err();
        assert_eq!(e.to_string(), "--hidden must be at least 1");
        assert_eq!(e.exit_code(), 2);
        let p = Path::new("/r/config.json");
        let e = count(&Origin::File(p), "--hidden", "hidden", 11, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/r/config.json: key \"hidden\" must be at most 10, got 11"
        );
        assert_eq!(e.exit_code(), 2);
        let e = fraction(&Origin::Meta(p), "--dropout", "dropout", 5.0).unwrap_err();
        assert!(
            e.to_string().contains("metadata config key \"dropout\""),
            "{e}"
        );
        assert!(positive(&Origin::Flags, "--lr", "lr", f32::NAN).is_err());
        assert!(positive(&Origin::Flags, "--lr", "lr", -1.0).is_err());
        assert!(positive(&Origin::Flags, "--lr", "lr", 1e-3).is_ok());
    }
}
