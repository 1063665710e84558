//! The library's error type.
//!
//! Every variant carries the path, id or object that failed so that the one line a user sees names
//! it. Corruption (`Corrupt`) is kept apart from I/O failure (`Io`): the first means the vault's
//! bytes are wrong, the second that the machine refused an operation. `anyhow` lives only in
//! `main.rs`.

use std::path::PathBuf;

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library.
///
/// Variants with a `source` leave it out of their own message; print the chain (`{:#}` through
/// `anyhow`) to show both.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory holds no vault (no `config.json`).
    #[error("no vault at {}: run `vault init` first or pass --vault DIR", path.display())]
    NoVault { path: PathBuf },

    /// A remote holds no vault (no `config.json`): nothing was pushed there.
    #[error("no vault on remote {remote}: nothing has been pushed there (no config.json)")]
    NoRemoteVault { remote: String },

    /// `vault init` on a directory that holds something else.
    #[error("{} is not empty and is not a vault; refusing to initialise it", path.display())]
    NotEmpty { path: PathBuf },

    /// Another process holds the vault lock.
    #[error("vault is locked by {holder}")]
    Locked { holder: String },

    /// An operating-system I/O error on a named path.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Stored bytes are not what they claim to be.
    #[error("corrupt {object}: {reason}")]
    Corrupt { object: String, reason: String },

    /// A stored object that should exist does not.
    #[error("missing {object}")]
    Missing { object: String },

    /// `config.json` is unreadable or holds values this version cannot use.
    #[error("invalid vault config {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },

    /// The SQLite index failed.
    #[error("index {}", path.display())]
    Index {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// A snapshot reference (id, prefix or `latest`) did not resolve.
    #[error("snapshot {reference}: {reason}")]
    SnapshotRef { reference: String, reason: String },

    /// A tree entry that restore refuses to write.
    #[error("unsafe tree entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: String },

    /// The user asked for something that cannot be done as asked.
    #[error("{0}")]
    Invalid(String),

    /// The command line lacks something it needs (exit code 2, like clap's own usage errors).
    #[error("{0}")]
    Usage(String),

    /// A key or secret problem: a wrong password, no password given, an unreadable key file.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),

    /// A remote failed (after its retries); the message names the remote and the object.
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),

    /// `vault.toml` is unreadable or invalid (the message names file, line and column).
    #[error(transparent)]
    VaultFile(#[from] crate::vaultfile::ConfigError),
}

impl Error {
    /// Wraps an `io::Error` with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds a `Corrupt` error.
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// The message with its sources, `a: b: c`, for reports that collect errors as text.
    pub fn full(&self) -> String {
        let mut s = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(e) = src {
            s.push_str(": ");
            s.push_str(&e.to_string());
            src = e.source();
        }
        s
    }
}

/// Adds a path to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
