//! Fashion-MNIST IDX files: discovery, strict reading, and the seeded train/validation split.

mod idx;

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;

use crate::limits::Origin;
use crate::rng::{Stream, stream};
use crate::{Error, Result};

pub use idx::{
    Expect, MAGIC_IMAGES, MAGIC_LABELS, read_images, read_images_expecting, read_labels, resolve,
};

/// Class names of SPEC 3; the index is the label.
pub const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Where the Debian/Ubuntu package `dataset-fashion-mnist` installs the four `.gz` files.
pub const SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The side of a Fashion-MNIST image; the network of SPEC 1 takes exactly this.
pub const SIDE: usize = 28;

/// Images (row-major u8, image after image) with their labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSet {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
}

impl DataSet {
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// Pixels of image `i`; panics when `i >= n`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let p = self.pixels();
        &self.images[i * p..(i + 1) * p]
    }
}

/// Reads an images file and its labels file; their counts must agree and be non-zero.
pub fn read_pair(images: &Path, labels: &Path) -> Result<DataSet> {
    read_pair_sized(images, labels, None)
}

/// [`read_pair`] with images of `side` (rows, columns) required. The labels are read first (at
/// most [`MAX_IDX_ITEMS`](crate::limits::MAX_IDX_ITEMS) bytes), and the images header is checked
/// against their count and `side` before its payload is read, so no header can make the reader
/// buffer more than the real data set needs.
pub fn read_pair_sized(
    images: &Path,
    labels: &Path,
    side: Option<(usize, usize)>,
) -> Result<DataSet> {
    let lab = read_labels(labels)?;
    let lab_path = resolve(labels).unwrap_or_else(|_| labels.to_path_buf());
    let images_path = resolve(images).unwrap_or_else(|_| images.to_path_buf());
    pair(
        lab,
        &lab_path,
        &images_path,
        |e| read_images_expecting(images, e),
        side,
    )
}

/// One images file and its labels file already in memory (the browser page's files), checked as
/// [`read_pair_sized`] checks files on disk with 28x28 images required; the names appear in
/// errors.
pub fn pair_from_bytes(images: (&Path, Vec<u8>), labels: (&Path, Vec<u8>)) -> Result<DataSet> {
    let lab = idx::labels_from_bytes(labels.0, labels.1)?;
    let (name, bytes) = images;
    let read = |e: Expect<'_>| idx::images_from_bytes(name, bytes, e);
    pair(lab, labels.0, name, read, Some((SIDE, SIDE)))
}

/// The data set of `labels` and the images `read` returns once told what to expect of them.
fn pair(
    labels: Vec<u8>,
    labels_path: &Path,
    images_path: &Path,
    read: impl FnOnce(Expect) -> Result<(usize, usize, usize, Vec<u8>)>,
    side: Option<(usize, usize)>,
) -> Result<DataSet> {
    let (n, rows, cols, pix) = read(Expect {
        count: Some((labels.len(), labels_path)),
        side,
    })?;
    if n == 0 {
        return Err(Error::bad_file(images_path, "holds no images"));
    }
    Ok(DataSet {
        images: pix,
        labels,
        n,
        rows,
        cols,
    })
}

/// The training and test sets, and the directory they came from.
#[derive(Clone, Debug)]
pub struct FashionMnist {
    pub dir: PathBuf,
    pub train: DataSet,
    pub test: DataSet,
}

/// Loads the four files from `dir`, each raw or `.gz`; images must be 28x28 (SPEC 1's input).
pub fn load(dir: &Path) -> Result<FashionMnist> {
    if !dir.is_dir() {
        let what = if dir.exists() {
            "is not a directory (the data directory must hold the four IDX files)"
        } else {
            "data directory does not exist"
        };
        return Err(Error::bad_file(dir, what));
    }
    let side = Some((SIDE, SIDE));
    let train = read_pair_sized(&dir.join(TRAIN_IMAGES), &dir.join(TRAIN_LABELS), side)?;
    let test = read_pair_sized(&dir.join(TEST_IMAGES), &dir.join(TEST_LABELS), side)?;
    Ok(FashionMnist {
        dir: dir.to_path_buf(),
        train,
        test,
    })
}

/// True when `dir` holds the training images, raw or gzip: the mark of a data directory.
pub fn has_data(dir: &Path) -> bool {
    let f = dir.join(TRAIN_IMAGES);
    f.is_file() || idx::with_gz(&f).is_file()
}

/// The places searched after `--data`, in order (SPEC 3). Split out of the environment so the
/// search order can be tested without touching process-wide variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Places {
    /// `$FMNIST_DATA`, when set and non-empty.
    pub env: Option<PathBuf>,
    /// `/usr/share/datasets/fashion-mnist`.
    pub system: PathBuf,
    /// `$XDG_CACHE_HOME/fmnist-gpu` or `$HOME/.cache/fmnist-gpu`, when either is known.
    pub cache: Option<PathBuf>,
}

impl Places {
    pub fn from_env() -> Self {
        // Paths end up in JSON documents, which hold only UTF-8: other values are skipped.
        let var = |k: &str| {
            let v = std::env::var_os(k).filter(|v| !v.is_empty())?;
            if v.to_str().is_none() {
                log::warn!("${k} is not valid UTF-8; ignoring it");
                return None;
            }
            Some(PathBuf::from(v))
        };
        // The XDG spec says relative values are invalid and must be ignored.
        let cache = var("XDG_CACHE_HOME")
            .filter(|p| p.is_absolute())
            .or_else(|| var("HOME").map(|h| h.join(".cache")))
            .map(|c| c.join("fmnist-gpu"));
        Places {
            env: var("FMNIST_DATA"),
            system: PathBuf::from(SYSTEM_DIR),
            cache,
        }
    }
}

/// Finds the data directory in SPEC 3's order, from the real environment.
pub fn locate(flag: Option<&Path>) -> Result<PathBuf> {
    locate_in(flag, &Places::from_env())
}

/// Finds the data directory: `flag` (no fall-through when given), then `places` in order.
pub fn locate_in(flag: Option<&Path>, places: &Places) -> Result<PathBuf> {
    if let Some(dir) = flag {
        if has_data(dir) {
            return Ok(dir.to_path_buf());
        }
        let msg = if dir.is_dir() {
            // A train-images entry that is there but unusable (a directory, a FIFO, a symlink
            // loop) gets the reader's own words rather than "has no".
            if let Err(e) = resolve(&dir.join(TRAIN_IMAGES))
                && !e.to_string().contains("file not found")
            {
                return Err(e);
            }
            format!("--data directory has no {TRAIN_IMAGES} (or {TRAIN_IMAGES}.gz)")
        } else if dir.exists() {
            "--data is not a directory (it must name the directory holding the four IDX files)"
                .to_string()
        } else {
            "--data directory does not exist".to_string()
        };
        return Err(Error::bad_file(dir, msg));
    }
    if let Some(env) = &places.env {
        if has_data(env) {
            return Ok(env.clone());
        }
        log::warn!(
            "FMNIST_DATA={} has no {TRAIN_IMAGES}[.gz]; searching further",
            env.display()
        );
    }
    if has_data(&places.system) {
        return Ok(places.system.clone());
    }
    if let Some(cache) = &places.cache
        && has_data(cache)
    {
        return Ok(cache.clone());
    }
    let show = |p: &Option<PathBuf>, unset: &str| match p {
        Some(p) => p.display().to_string(),
        None => unset.to_string(),
    };
    Err(Error::BadArg(format!(
        "Fashion-MNIST not found: no {TRAIN_IMAGES}[.gz] in any of\n  \
         --data DIR            (not given)\n  \
         $FMNIST_DATA          {}\n  \
         system package        {}\n  \
         user cache            {}\n\
         Install it with `sudo apt-get install dataset-fashion-mnist`, or pass --data DIR \
         (or set FMNIST_DATA) naming a directory with the four IDX files, raw or .gz.",
        show(&places.env, "(not set)"),
        places.system.display(),
        show(&places.cache, "(neither XDG_CACHE_HOME nor HOME is set)"),
    )))
}

/// Indices into the training set, in the seeded order (neither list is sorted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
}

/// Shuffles `0..n_total` with the split stream, keeps the first `limit`, and takes the first
/// `round(kept * val_fraction)` of those for validation (SPEC 3).
pub fn split(n_total: usize, val_fraction: f64, limit: Option<usize>, seed: u64) -> Result<Split> {
    split_from(&Origin::Flags, n_total, val_fraction, limit, seed)
}

/// [`split`] of a run whose settings come from `o` (the flags, or a file read back), so its
/// errors name the flag, or the file and key.
pub fn split_from(
    o: &Origin,
    n_total: usize,
    val_fraction: f64,
    limit: Option<usize>,
    seed: u64,
) -> Result<Split> {
    crate::limits::fraction(o, "--val-fraction", "val_fraction", val_fraction)?;
    let n32 = u32::try_from(n_total)
        .map_err(|_| Error::BadArg(format!("{n_total} training images is more than supported")))?;
    let kept = match limit {
        Some(0) => return Err(o.err("--limit", "limit", "must be at least 1")),
        Some(l) if l > n_total => {
            return Err(o.err(
                "--limit",
                "limit",
                format!("{l} is larger than the {n_total} training images"),
            ));
        }
        Some(l) => l,
        None => n_total,
    };
    let mut idx: Vec<u32> = (0..n32).collect();
    idx.shuffle(&mut stream(seed, Stream::Split));
    idx.truncate(kept);
    let n_val = ((kept as f64) * val_fraction).round() as usize;
    if n_val >= kept {
        return Err(o.err(
            "--val-fraction",
            "val_fraction",
            format!("{val_fraction} of {kept} images leaves no training images"),
        ));
    }
    let train = idx.split_off(n_val);
    Ok(Split { train, val: idx })
}
