//! The library's error type and its mapping to the exit codes of SPEC 8 (2 bad input, 1 runtime).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file from outside (data, checkpoint, fixture, image) is missing or malformed. Exit 2.
    #[error("{}: {msg}", path.display())]
    BadFile { path: PathBuf, msg: String },
    /// A flag or combination of flags is invalid. Exit 2.
    #[error("{0}")]
    BadArg(String),
    /// No adapter matches what was asked for. Exit 2: the request was bad, the machine is fine.
    #[error("{0}")]
    NoAdapter(String),
    /// The GPU failed at run time: validation error, device lost, out of memory. Exit 1.
    #[error("{0}")]
    Gpu(String),
    /// Training diverged or another run-time failure. Exit 1.
    #[error("{0}")]
    Runtime(String),
    /// Writing an output failed. Exit 1.
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub fn bad_file(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
    /// A file that could not be read: "no such file" or the I/O error, naming the file.
    pub fn unreadable(path: impl AsRef<Path>, e: &std::io::Error) -> Self {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "no such file".to_string()
        } else {
            format!("cannot read: {e}")
        };
        Self::bad_file(path, what)
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::BadFile { .. } | Error::BadArg(_) | Error::NoAdapter(_) => 2,
            Error::Gpu(_) | Error::Runtime(_) | Error::Write { .. } => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
