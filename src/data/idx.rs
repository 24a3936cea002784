//! Strict reader for the IDX u8 files of Fashion-MNIST, raw or gzip, with every defect a `BadFile`.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::{Error, Result};

/// IDX magic for unsigned-byte data: `0x0000_08DD` where `DD` is the number of dimensions.
pub const MAGIC_IMAGES: u32 = 0x0000_0803;
pub const MAGIC_LABELS: u32 = 0x0000_0801;

/// Allocation made up front for the payload; beyond it the buffer grows only as data arrives, so
/// a header that lies about its sizes cannot make us reserve gigabytes.
const INITIAL_CAPACITY_CAP: usize = 64 << 20;

/// Resolves `path` as given, then with `.gz` appended (SPEC 3: each file raw or gzip).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    // symlink_metadata: a broken or looping symlink exists too, it just is not a file.
    let not_regular = |p: &Path| {
        p.symlink_metadata().is_ok().then(|| {
            Error::bad_file(
                p,
                "exists but is not a regular file (a directory, FIFO, device, or a broken or \
                 looping symlink)",
            )
        })
    };
    if is_gz(path) {
        return Err(not_regular(path).unwrap_or_else(|| Error::bad_file(path, "file not found")));
    }
    let gz = with_gz(path);
    if gz.is_file() {
        return Ok(gz);
    }
    if let Some(e) = not_regular(path).or_else(|| not_regular(&gz)) {
        return Err(e);
    }
    Err(Error::bad_file(
        path,
        format!(
            "file not found (also looked for {})",
            gz.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
    ))
}

pub(crate) fn with_gz(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".gz");
    PathBuf::from(s)
}

fn is_gz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// What the other file of a pair, or the network, demands of an images file's header; checked
/// before the payload is read, so a lying header costs nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Expect<'a> {
    /// The image count, and the labels file that holds that many labels.
    pub count: Option<(usize, &'a Path)>,
    /// Rows and columns.
    pub side: Option<(usize, usize)>,
}

/// Reads an IDX images file (magic 2051, u8, 3 dims): `(n, rows, cols, pixels)`.
pub fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    read_images_expecting(path, Expect::default())
}

/// [`read_images`] with the header checked against `expect` before the payload is read.
pub fn read_images_expecting(
    path: &Path,
    expect: Expect,
) -> Result<(usize, usize, usize, Vec<u8>)> {
    images_from(Source::open(path)?, expect)
}

/// [`read_images_expecting`] of a file's bytes (`name` names it in errors).
pub fn images_from_bytes(
    name: &Path,
    bytes: Vec<u8>,
    expect: Expect,
) -> Result<(usize, usize, usize, Vec<u8>)> {
    images_from(Source::from_bytes(name, bytes), expect)
}

fn images_from(src: Source, expect: Expect) -> Result<(usize, usize, usize, Vec<u8>)> {
    let check = |path: &Path, dims: &[u64]| -> Option<Error> {
        let (n, rows, cols) = (dims[0], dims[1], dims[2]);
        if let Some((want, labels)) = expect.count
            && n != want as u64
        {
            // The mismatch belongs to the pair: name both files.
            return Some(Error::bad_file(
                labels,
                format!(
                    "holds {want} labels but {} holds {n} images",
                    path.display()
                ),
            ));
        }
        if let Some((r, c)) = expect.side
            && (rows, cols) != (r as u64, c as u64)
        {
            return Some(Error::bad_file(
                path,
                format!("images are {rows}x{cols}; Fashion-MNIST images are {r}x{c}"),
            ));
        }
        None
    };
    let (path, dims, data) = read_idx(src, MAGIC_IMAGES, "IDX u8 images", &check)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(Error::bad_file(
            &path,
            format!(
                "header declares images of {rows}x{cols} pixels; both sides must be at least 1"
            ),
        ));
    }
    Ok((n, rows, cols, data))
}

/// Reads an IDX labels file (magic 2049, u8, 1 dim) and rejects any label above 9.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    labels_from(Source::open(path)?)
}

/// [`read_labels`] of a file's bytes (`name` names it in errors).
pub fn labels_from_bytes(name: &Path, bytes: Vec<u8>) -> Result<Vec<u8>> {
    labels_from(Source::from_bytes(name, bytes))
}

fn labels_from(src: Source) -> Result<Vec<u8>> {
    let (path, _dims, data) = read_idx(src, MAGIC_LABELS, "IDX u8 labels", &|_, _| None)?;
    if let Some((i, &l)) = data.iter().enumerate().find(|&(_, &l)| l > 9) {
        return Err(Error::bad_file(
            &path,
            format!("label {l} at index {i} is above 9 (Fashion-MNIST has 10 classes, 0..=9)"),
        ));
    }
    Ok(data)
}

/// The opened source: which stream we read and how to word its failures.
struct Source {
    path: PathBuf,
    gz: bool,
    reader: Box<dyn Read>,
    /// The length of raw (not gzip) bytes held in memory; a file's is asked of the file system.
    raw_len: Option<u64>,
}

impl Source {
    /// A file's bytes already in memory (the browser's file picker or `fetch`): gzip when they
    /// start with its magic, whatever `name` says.
    fn from_bytes(name: &Path, bytes: Vec<u8>) -> Self {
        let gz = bytes.starts_with(&[0x1f, 0x8b]);
        let raw_len = (!gz).then_some(bytes.len() as u64);
        let cursor = io::Cursor::new(bytes);
        let reader: Box<dyn Read> = if gz {
            Box::new(MultiGzDecoder::new(cursor))
        } else {
            Box::new(cursor)
        };
        Source {
            path: name.to_path_buf(),
            gz,
            reader,
            raw_len,
        }
    }

    fn open(path: &Path) -> Result<Self> {
        let path = resolve(path)?;
        let file =
            File::open(&path).map_err(|e| Error::bad_file(&path, format!("cannot open: {e}")))?;
        let gz = is_gz(&path);
        let reader: Box<dyn Read> = if gz {
            // Multi-member so that files written by pigz or concatenated gzips read whole.
            Box::new(MultiGzDecoder::new(BufReader::new(file)))
        } else {
            Box::new(BufReader::new(file))
        };
        Ok(Source {
            path,
            gz,
            reader,
            raw_len: None,
        })
    }

    fn io_err(&self, e: io::Error) -> Error {
        if self.gz {
            Error::bad_file(&self.path, format!("truncated or corrupt gzip data: {e}"))
        } else {
            Error::bad_file(&self.path, format!("read error: {e}"))
        }
    }

    /// Fills as much of `buf` as the stream holds; a short count means a clean end of data,
    /// while a decoder failure (truncated or damaged gzip) is an error.
    fn read_upto(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.reader.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        Ok(got)
    }

    fn what(&self) -> &'static str {
        if self.gz { "decompressed data" } else { "file" }
    }
}

/// Reads and checks one IDX file; returns the path actually read, the dims, and the payload.
/// `check` sees the dims before the payload is read and may refuse them; the first dim (the item
/// count) is capped at [`MAX_IDX_ITEMS`](crate::limits::MAX_IDX_ITEMS) first.
fn read_idx(
    mut src: Source,
    magic: u32,
    desc: &str,
    check: &dyn Fn(&Path, &[u64]) -> Option<Error>,
) -> Result<(PathBuf, Vec<usize>, Vec<u8>)> {
    let mut word = [0u8; 4];
    let got = src.read_upto(&mut word)?;
    if got < 4 {
        return Err(Error::bad_file(
            &src.path,
            format!(
                "{} is {got} bytes long, too short for an IDX header",
                src.what()
            ),
        ));
    }
    let found = u32::from_be_bytes(word);
    if found != magic {
        return Err(Error::bad_file(
            &src.path,
            magic_msg(magic, found, desc, src.gz),
        ));
    }
    let ndims = (magic & 0xff) as usize;
    let mut header = vec![0u8; 4 * ndims];
    let got = src.read_upto(&mut header)?;
    if got < header.len() {
        return Err(Error::bad_file(
            &src.path,
            format!(
                "{} ends inside the IDX header ({} of {} header bytes)",
                src.what(),
                4 + got,
                4 + header.len()
            ),
        ));
    }
    let dims: Vec<u64> = header
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64)
        .collect();
    let shape = dims
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("x");
    let max = crate::limits::MAX_IDX_ITEMS;
    if dims[0] > max {
        return Err(Error::bad_file(
            &src.path,
            format!(
                "header declares shape {shape}: {} items, more than the {max} an IDX file may \
                 hold here (Fashion-MNIST's training set has 60000)",
                dims[0]
            ),
        ));
    }
    if let Some(e) = check(&src.path, &dims) {
        return Err(e);
    }
    let header_len = 4 + header.len() as u64;
    let expected = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let expected = match expected.and_then(|e| usize::try_from(e).ok()) {
        Some(e) => e,
        None => {
            return Err(Error::bad_file(
                &src.path,
                format!("header declares shape {shape}, too large to be real"),
            ));
        }
    };
    let what = src.what();
    let size_msg = |actual: String| {
        format!(
            "header declares shape {shape} ({expected} bytes after the {header_len}-byte header) \
             but the {what} holds {actual}"
        )
    };
    if !src.gz {
        // The file length settles the question before anything large is allocated.
        let len = match src.raw_len {
            Some(len) => len,
            None => std::fs::metadata(&src.path)
                .map_err(|e| Error::bad_file(&src.path, format!("cannot stat: {e}")))?
                .len(),
        };
        let after = len.saturating_sub(header_len);
        if after != expected as u64 {
            let actual = if after < expected as u64 {
                format!("only {after} (file truncated?)")
            } else {
                format!(
                    "{after} ({} bytes of trailing data)",
                    after - expected as u64
                )
            };
            return Err(Error::bad_file(&src.path, size_msg(actual)));
        }
    }
    let mut data = Vec::with_capacity(expected.min(INITIAL_CAPACITY_CAP));
    (&mut src.reader)
        .take(expected as u64)
        .read_to_end(&mut data)
        .map_err(|e| src.io_err(e))?;
    if data.len() < expected {
        return Err(Error::bad_file(
            &src.path,
            size_msg(format!("only {} (truncated?)", data.len())),
        ));
    }
    // The rest must be empty; reading to the end also verifies gzip's trailing CRC. Only the
    // first MiB of a tail is counted: draining a multi-gigabyte gzip tail would only cost time.
    const TAIL: u64 = 1 << 20;
    let extra = io::copy(&mut (&mut src.reader).take(TAIL + 1), &mut io::sink())
        .map_err(|e| src.io_err(e))?;
    if extra > 0 {
        let tail = if extra > TAIL {
            format!("more than {TAIL} bytes")
        } else {
            format!("{extra} bytes")
        };
        return Err(Error::bad_file(
            &src.path,
            size_msg(format!(
                "{} ({tail} of trailing data)",
                expected as u64 + extra.min(TAIL)
            )),
        ));
    }
    let dims = dims.into_iter().map(|d| d as usize).collect();
    Ok((src.path, dims, data))
}

fn magic_msg(want: u32, found: u32, desc: &str, gz: bool) -> String {
    let base = format!("expected magic {want} ({desc}), found {found}");
    if found >> 8 == want >> 8 {
        // Same type byte, other dimension count.
        format!(
            "{base}: {} dimensions where {} are expected",
            found & 0xff,
            want & 0xff
        )
    } else if found >> 16 == 0 && found >> 8 != 0x08 {
        format!(
            "{base}: IDX element type 0x{:02x}, only unsigned bytes (0x08) are supported",
            (found >> 8) & 0xff
        )
    } else if found >> 16 == 0x1f8b && !gz {
        format!("{base}: this looks like gzip data; give the file a .gz name")
    } else {
        base
    }
}
