//! The library's one error type. Every error carries the HRESULT WUA would return for it.

use std::io;
use std::path::{Path, PathBuf};

use crate::hresult::{HResult, WU_E_INVALID_FILE, WU_E_UNEXPECTED};

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the wua library.
///
/// The message says what failed, on which input, and what to do; [`Error::hresult`] gives the
/// WUA code it maps to, and `Display` ends with that code's name, value and meaning.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A WUA-defined failure: the code and what it was about.
    #[error("{context} [{hresult}]")]
    Code {
        /// The WUA code.
        hresult: HResult,
        /// What failed, on which input, and what to do.
        context: String,
    },
    /// A file-system operation failed.
    // The cause is part of the message, and deliberately not a `#[source]`: reporters that
    // print the chain would otherwise print it twice.
    #[error("{action} {path}: {cause} [{hresult}]", path = path.display())]
    Io {
        /// What was being done ("cannot read", "cannot create directory", …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
        /// The WUA code this failure maps to.
        hresult: HResult,
    },
    /// The agent's SQLite store failed.
    #[error("the agent database {path} failed: {cause}; check the file system it is on, and if the file is damaged restore it from a backup [{hresult}]", path = path.display())]
    Store {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        cause: rusqlite::Error,
        /// The WUA code this failure maps to.
        hresult: HResult,
    },
}

impl Error {
    /// A WUA-defined failure with its context.
    pub fn code(hresult: HResult, context: impl Into<String>) -> Self {
        Error::Code {
            hresult,
            context: context.into(),
        }
    }

    /// An IO failure on `path`, mapped to `WU_E_UNEXPECTED` unless given another code.
    pub fn io(action: &'static str, path: impl AsRef<Path>, cause: io::Error) -> Self {
        Error::Io {
            action,
            path: path.as_ref().to_path_buf(),
            cause,
            hresult: WU_E_UNEXPECTED,
        }
    }

    /// A file that exists but is not in the expected format.
    pub fn invalid_file(path: impl AsRef<Path>, what: impl std::fmt::Display) -> Self {
        Error::code(
            WU_E_INVALID_FILE,
            format!("{}: {what}", path.as_ref().display()),
        )
    }

    /// The HRESULT this error maps to.
    pub fn hresult(&self) -> HResult {
        match self {
            Error::Code { hresult, .. }
            | Error::Io { hresult, .. }
            | Error::Store { hresult, .. } => *hresult,
        }
    }

    /// The same error reported under another HRESULT (for example an IO failure inside a
    /// handler, reported as `WU_E_UH_*`).
    pub fn with_hresult(mut self, code: HResult) -> Self {
        match &mut self {
            Error::Code { hresult, .. }
            | Error::Io { hresult, .. }
            | Error::Store { hresult, .. } => *hresult = code,
        }
        self
    }
}

/// Adds the path to `fs_err`-less IO results.
pub(crate) trait IoContext<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hresult::WU_E_NO_UPDATE;

    #[test]
    fn display_names_input_and_code() {
        let e = Error::code(WU_E_NO_UPDATE, "cannot install: no updates were given");
        assert_eq!(e.hresult(), WU_E_NO_UPDATE);
        assert_eq!(
            e.to_string(),
            "cannot install: no updates were given [WU_E_NO_UPDATE (0x80240024): There are no updates.]"
        );
        let io = Error::io(
            "cannot read",
            "/x/y",
            io::Error::from(io::ErrorKind::NotFound),
        );
        assert!(io.to_string().starts_with("cannot read /x/y: "), "{io}");
        assert_eq!(io.with_hresult(WU_E_NO_UPDATE).hresult(), WU_E_NO_UPDATE);
    }
}
