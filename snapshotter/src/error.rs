//! Errors of the snapshotter and the gRPC codes containerd expects for them.

use std::path::PathBuf;

use containerd_snapshots::tonic::{Code, Status};
use pare_fs::id::ChainId;

use crate::views::ViewError;

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No snapshot has that key.
    #[error("snapshot {0} does not exist")]
    NotFound(String),
    /// A snapshot with that key exists already.
    #[error("snapshot {0} already exists")]
    AlreadyExists(String),
    /// The snapshot is not in the state the operation needs.
    #[error("snapshot {key}: {why}")]
    FailedPrecondition {
        /// The snapshot.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// The request itself is invalid.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// A `~=` filter's regular expression does not parse.
    #[error("invalid request: filter {filter:?}: {source}")]
    FilterRegex {
        /// The filter clause.
        filter: String,
        /// Why the expression is invalid.
        #[source]
        source: regex::Error,
    },
    /// The metadata store failed.
    #[error("metadata store: {0}")]
    Store(#[source] Box<redb::Error>),
    /// A stored record could not be encoded or decoded.
    #[error("metadata record: {0}")]
    Record(#[from] serde_json::Error),
    /// A blocking task of the service died.
    #[error("{0} panicked")]
    Panicked(&'static str),
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// No free temporary directory name was found.
    #[error("{0}: cannot pick a temporary directory name")]
    NoTempName(PathBuf),
    /// A view could not be started or stopped.
    #[error("view for {chain}: {source}")]
    View {
        /// The image chain.
        chain: ChainId,
        /// What went wrong.
        #[source]
        source: ViewError,
    },
}

impl Error {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// A failed precondition on `key`.
    pub fn precondition(key: &str, why: impl Into<String>) -> Error {
        Error::FailedPrecondition {
            key: key.to_string(),
            why: why.into(),
        }
    }

    /// The gRPC code containerd maps back to its errdefs.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition { .. } => Code::FailedPrecondition,
            Error::InvalidArgument(_) | Error::FilterRegex { .. } => Code::InvalidArgument,
            Error::Store(_)
            | Error::Record(_)
            | Error::Panicked(_)
            | Error::Io { .. }
            | Error::NoTempName(_)
            | Error::View { .. } => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

impl Error {
    /// True when the store hit an I/O error and must be reopened before it
    /// works again (redb refuses every later transaction until then).
    pub fn needs_reopen(&self) -> bool {
        match self {
            Error::Store(e) => matches!(
                **e,
                redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
            ),
            _ => false,
        }
    }
}

macro_rules! store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Store(Box::new(e.into()))
            }
        }
    )*};
}
store_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Result of snapshot operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
