//! TensorBoard event files (`events.out.tfevents.*`, SPEC 9): scalar summaries as TFRecord-framed
//! `Event` protobufs of the vendored TensorBoard schema (`proto/tensorboard/`, compiled by build.rs).
//!
//! A file is a sequence of records, each `u64 LE length`, `u32 LE masked CRC-32C of the length
//! bytes`, the data, `u32 LE masked CRC-32C of the data`; the first record's event carries
//! `file_version: "brain.Event:2"`, every later one a `Summary` of scalar values. `tensorboard
//! --logdir runs` reads every file under `runs/`, one TensorBoard run per directory.
//!
//! Tags: per epoch (step = epoch number, [`epoch_scalars`]) `epoch/train_loss`,
//! `epoch/train_accuracy`, `epoch/val_loss`, `epoch/val_accuracy`, `epoch/lr`,
//! `epoch/images_per_second`; per progress-bar update of `train` (step = optimizer step)
//! [`STEP_TRAIN_LOSS`], the mean loss since the previous one.

use crate::optim::stats::TensorStats;
use crate::train::EpochRecord;
use crate::{Error, Result};
use prost::Message;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The TensorBoard messages generated from the vendored schema.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/tensorboard.rs"));
}

use proto::{Event, Summary, event, summary};

/// Every event file's name starts with this; TensorBoard finds files by the `tfevents` in it.
pub const FILE_PREFIX: &str = "events.out.tfevents.";
/// The first record's `file_version`: the current TensorFlow event format.
pub const FILE_VERSION: &str = "brain.Event:2";
/// `search` and `compare` write one sub-directory of this per run (`<out>/tb/<run>/`).
pub const TB_DIR: &str = "tb";
/// Per-step training loss of `train` (step = optimizer step).
pub const STEP_TRAIN_LOSS: &str = "step/train_loss";

const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TFRecord's masked CRC-32C of `data`: the rotated checksum plus a constant, so that a CRC of
/// data that itself contains CRCs is not degenerate.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = CASTAGNOLI.checksum(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// `data` framed as one TFRecord.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The scalars of one epoch record, as (tag, value); values that are not finite (an epoch that
/// was not validated has NaN validation numbers) are left out. Every per-epoch tag comes from
/// here, so `train`, `compare` and `search` write the same ones.
pub fn epoch_scalars(rec: &EpochRecord) -> Vec<(String, f32)> {
    [
        ("epoch/train_loss", rec.train_loss),
        ("epoch/train_accuracy", rec.train_accuracy),
        ("epoch/val_loss", rec.val_loss),
        ("epoch/val_accuracy", rec.val_accuracy),
        ("epoch/lr", rec.lr),
        ("epoch/images_per_second", rec.images_per_second),
    ]
    .into_iter()
    .map(|(tag, v)| (tag.to_string(), v))
    .chain(rec.optim.iter().flat_map(optim_scalars))
    .map(|(tag, v)| (tag, v as f32))
    .filter(|(_, v)| v.is_finite())
    .collect()
}

/// One tensor's optimizer statistics as `optim/<tensor>/<name>` tags: `mean_step` and
/// `update_ratio` for every optimizer; WAME adds `mean_multiplier`, `sign_flips`,
/// `zeta_at_min` and `zeta_at_max`.
fn optim_scalars(t: &TensorStats) -> Vec<(String, f64)> {
    let tag = |name: &str| format!("optim/{}/{name}", t.tensor);
    let mut v = vec![(tag("mean_step"), t.mean_step)];
    if let Some(u) = t.update_ratio {
        v.push((tag("update_ratio"), u));
    }
    if let Some(z) = &t.zeta {
        v.extend([
            (tag("mean_multiplier"), z.mean_multiplier),
            (tag("sign_flips"), z.sign_flips),
            (tag("zeta_at_min"), z.at_min),
            (tag("zeta_at_max"), z.at_max),
        ]);
    }
    v
}

/// Whether `name` is the name of an event file.
pub fn is_event_file(name: &str) -> bool {
    name.starts_with(FILE_PREFIX)
}

/// Removes the event files directly in `dir` (a fresh run's stale ones); best effort, like the
/// other stale outputs a fresh run removes.
pub fn remove_event_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if is_event_file(&e.file_name().to_string_lossy())
            && e.file_type().is_ok_and(|t| t.is_file())
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Seconds since the Unix epoch, as TensorBoard's `wall_time`.
fn wall_time(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name for the file name: the kernel's hostname, else `$HOSTNAME`, else
/// `localhost`, with anything but letters, digits, `-` and `_` replaced by `_` (so the name's
/// dot-separated fields can be split back apart, and no path separator gets in).
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    raw.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One event file being written. Records go through a buffer; [`EventWriter::flush`] (which
/// [`EventWriter::epoch`] calls) pushes them to the file, so a killed run loses at most the
/// records since the last epoch. Every I/O failure is an [`Error::Write`] naming the file.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Starts a new event file `<dir>/events.out.tfevents.<unix secs>.<hostname>.<pid>` (with
    /// `.1`, `.2`, ... appended should that name exist) and writes its version record. `dir`
    /// is created if missing. Existing event files are left alone: TensorBoard reads them all.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let base = format!("{FILE_PREFIX}{secs}.{}.{}", hostname(), std::process::id());
        let mut n = 0u32;
        let (path, file) = loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let path = dir.join(name);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(source) => return Err(Error::Write { path, source }),
            }
        };
        let mut w = Self {
            path,
            file: BufWriter::new(file),
        };
        w.write_event(&Event {
            wall_time: wall_time(now),
            step: 0,
            what: Some(event::What::FileVersion(FILE_VERSION.to_string())),
        })?;
        w.flush()?;
        Ok(w)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_event(&mut self, e: &Event) -> Result<()> {
        let rec = frame(&e.encode_to_vec());
        self.file.write_all(&rec).map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// One event at `wall_time` (Unix seconds) and `step` holding every scalar of `values`.
    pub fn scalars_at(
        &mut self,
        wall_time: f64,
        step: i64,
        values: &[(String, f32)],
    ) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let value = values
            .iter()
            .map(|(tag, v)| summary::Value {
                tag: tag.clone(),
                value: Some(summary::value::Value::SimpleValue(*v)),
            })
            .collect();
        self.write_event(&Event {
            wall_time,
            step,
            what: Some(event::What::Summary(Summary { value })),
        })
    }

    /// One scalar `value` of series `tag` at `step`, stamped now.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> Result<()> {
        self.scalars_at(
            wall_time(SystemTime::now()),
            step,
            &[(tag.to_string(), value)],
        )
    }

    /// The [`epoch_scalars`] of `rec` at step `rec.epoch`, stamped now, then a flush.
    pub fn epoch(&mut self, rec: &EpochRecord) -> Result<()> {
        self.scalars_at(
            wall_time(SystemTime::now()),
            rec.epoch as i64,
            &epoch_scalars(rec),
        )?;
        self.flush()
    }

    /// Pushes the buffered records to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// A finished run's records as a new event file in `dir` (created if missing): each epoch's
/// scalars stamped `started` plus the seconds of the epochs up to and including it, so
/// TensorBoard's relative time axis shows when each epoch ended. `compare` and `search` write
/// their runs this way once each run is done. Returns the file's path.
pub fn write_run(dir: &Path, records: &[EpochRecord], started: SystemTime) -> Result<PathBuf> {
    let mut w = EventWriter::create(dir)?;
    let t0 = wall_time(started);
    let mut elapsed = 0.0;
    for r in records {
        if r.seconds.is_finite() && r.seconds > 0.0 {
            elapsed += r.seconds;
        }
        w.scalars_at(t0 + elapsed, r.epoch as i64, &epoch_scalars(r))?;
    }
    w.flush()?;
    Ok(w.path)
}

/// When a run that took `seconds` and ended now began (for [`write_run`]).
pub fn started_before(seconds: f64) -> SystemTime {
    let ago = Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::ZERO);
    SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_of_the_check_string() {
        // CRC-32C's standard check value, and TFRecord's mask of it worked out by hand:
        // ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xa282ead8 mod 2^32.
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xE306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
        // The empty string's CRC-32C is 0, so its mask is the constant alone.
        assert_eq!(masked_crc(b""), 0xa282_ead8);
    }

    #[test]
    fn frames_carry_length_and_both_checksums() {
        let f = frame(b"abc");
        assert_eq!(f.len(), 8 + 4 + 3 + 4);
        assert_eq!(&f[..8], &3u64.to_le_bytes());
        assert_eq!(&f[8..12], &masked_crc(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&f[12..15], b"abc");
        assert_eq!(&f[15..], &masked_crc(b"abc").to_le_bytes());
    }

    #[test]
    fn epoch_scalars_skip_non_finite_values() {
        let rec = EpochRecord {
            epoch: 3,
            train_loss: 0.5,
            train_accuracy: 0.8,
            val_loss: f64::NAN,
            val_accuracy: f64::NAN,
            seconds: 1.0,
            images_per_second: 100.0,
            lr: 1e-3,
            optim: Vec::new(),
        };
        let tags: Vec<String> = epoch_scalars(&rec).into_iter().map(|(t, _)| t).collect();
        assert_eq!(
            tags,
            [
                "epoch/train_loss",
                "epoch/train_accuracy",
                "epoch/lr",
                "epoch/images_per_second"
            ]
        );
    }

    #[test]
    fn writer_starts_with_the_version_and_decodes_with_prost() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(tmp.path()).unwrap();
        w.scalar(STEP_TRAIN_LOSS, 7, 1.25).unwrap();
        w.flush().unwrap();
        let name = w.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(is_event_file(&name), "{name}");
        let bytes = std::fs::read(w.path()).unwrap();
        let mut events = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            events.push(Event::decode(&bytes[at + 12..at + 12 + len]).unwrap());
            at += 16 + len;
        }
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].what,
            Some(event::What::FileVersion(FILE_VERSION.into()))
        );
        assert_eq!(events[1].step, 7);
        // A second writer in the same second and process gets its own file.
        let w2 = EventWriter::create(tmp.path()).unwrap();
        assert_ne!(w2.path(), w.path());
        remove_event_files(tmp.path());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_unwritable_dir_is_a_write_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let e = EventWriter::create(&file.join("sub")).err().unwrap();
        assert!(matches!(e, Error::Write { .. }), "{e}");
        assert_eq!(e.exit_code(), 1);
    }
}
