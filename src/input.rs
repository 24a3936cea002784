//! Opening input files the user names: only regular files (a FIFO would block `open` forever and
//! a device such as /dev/zero never ends), with a size cap checked before anything is read.

use crate::{Error, Result};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Opens `path` for reading if it is a regular file (symlinks followed); its length comes back
/// with it. Anything else is a `BadFile` error naming the path.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    // stat first: open() itself blocks on a FIFO until a writer appears.
    let meta = std::fs::metadata(path).map_err(|e| Error::unreadable(path, &e))?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "is a directory"
        } else {
            "is not a regular file (a FIFO, socket or device)"
        };
        return Err(Error::bad_file(
            path,
            format!("{what}; give a regular file"),
        ));
    }
    let f = File::open(path).map_err(|e| Error::unreadable(path, &e))?;
    // The same check on the opened file, in case the path was swapped in between.
    let meta = f.metadata().map_err(|e| Error::unreadable(path, &e))?;
    if !meta.is_file() {
        return Err(Error::bad_file(
            path,
            "is not a regular file; give a regular file",
        ));
    }
    Ok((f, meta.len()))
}

/// The whole of regular file `path`, refused when longer than `max` bytes (`what` names the kind
/// of file in that message).
pub fn read_regular(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    let (f, len) = open_regular(path)?;
    if len > max {
        return Err(Error::bad_file(
            path,
            format!("is {len} bytes, more than the {max} bytes {what} can be"),
        ));
    }
    let mut out = Vec::with_capacity(len as usize);
    // take(): the file may grow after the stat.
    f.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::unreadable(path, &e))?;
    if out.len() as u64 > max {
        return Err(Error::bad_file(
            path,
            format!("grew past the {max} bytes {what} can be while being read"),
        ));
    }
    Ok(out)
}

/// [`read_regular`] for text files: UTF-8 or a `BadFile` error.
pub fn read_text(path: &Path, max: u64, what: &str) -> Result<String> {
    String::from_utf8(read_regular(path, max, what)?)
        .map_err(|e| Error::bad_file(path, format!("is not UTF-8 text: {e}")))
}
