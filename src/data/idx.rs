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
    if is_gz(path) {
        return Err(Error::bad_file(path, "file not found"));
    }
    let gz = with_gz(path);
    if gz.is_file() {
        return Ok(gz);
    }
    if path.exists() {
        return Err(Error::bad_file(path, "exists but is not a regular file"));
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

/// Reads an IDX images file (magic 2051, u8, 3 dims): `(n, rows, cols, pixels)`.
pub fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let (path, dims, data) = read_idx(path, MAGIC_IMAGES, "IDX u8 images")?;
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
    let (path, _dims, data) = read_idx(path, MAGIC_LABELS, "IDX u8 labels")?;
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
}

impl Source {
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
        Ok(Source { path, gz, reader })
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
fn read_idx(path: &Path, magic: u32, desc: &str) -> Result<(PathBuf, Vec<usize>, Vec<u8>)> {
    let mut src = Source::open(path)?;
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
        let len = std::fs::metadata(&src.path)
            .map_err(|e| Error::bad_file(&src.path, format!("cannot stat: {e}")))?
            .len();
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
    // Drain the rest: it must be empty, and for gzip this also verifies the trailing CRC.
    let extra = io::copy(&mut src.reader, &mut io::sink()).map_err(|e| src.io_err(e))?;
    if extra > 0 {
        return Err(Error::bad_file(
            &src.path,
            size_msg(format!(
                "{} ({extra} bytes of trailing data)",
                expected as u64 + extra
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
