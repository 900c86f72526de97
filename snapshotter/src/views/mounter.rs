//! What the view table needs of whatever serves views: mount one, adopt one
//! an earlier run left serving, tell whether it still serves, stop it; and
//! why each of those can fail.

use std::path::PathBuf;
use std::time::Duration;

use super::ViewKey;
use crate::viewproc::StateFileError;

/// What a view serves and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewSpec {
    /// Which view: the image chain, the mode and the allowed set.
    pub key: ViewKey,
    /// Layer directories, topmost first.
    pub layers: Vec<PathBuf>,
    /// The mountpoint.
    pub mountpoint: PathBuf,
    /// The profile journal, when accesses are recorded (learn).
    pub profile: Option<PathBuf>,
    /// The allowed-set file judged by (audit, enforce): the view's own copy
    /// (`<mountpoint>.allowed`), whose digest is `key.allowed`.
    pub allowed: Option<PathBuf>,
    /// Where misses go (audit, enforce).
    pub misses: Option<PathBuf>,
}

/// Why a view could not be started, adopted or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mountpoint directory could not be made.
    #[error("cannot create the mountpoint {path}: {source}")]
    Mountpoint {
        /// The mountpoint.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The allowed set a judged view is to serve by could not be provided.
    #[error("allowed set {path}: {reason}")]
    Allowed {
        /// The file read or written.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The server process could not be started.
    #[error("cannot start the view server {program}: {source}")]
    Spawn {
        /// The program run.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server's answer could not be read from its pipe.
    #[error("cannot read the view server's answer: {0}")]
    Answer(#[source] std::io::Error),
    /// The server did not report ready in time (it was killed).
    #[error("the view server did not report ready within {0:?}")]
    Timeout(Duration),
    /// The server refused and said why on its pipe (`error <reason>`): it
    /// could not read the layers, open the profile or mount. The reason
    /// crosses a process boundary as text.
    #[error("{0}")]
    Refused(String),
    /// The server exited without a word.
    #[error("the view server exited before serving")]
    Exited,
    /// The server reported ready but no live server left its state file.
    #[error("the view server reported ready but left no state file for {0}")]
    NoState(PathBuf),
    /// A server's state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateFileError),
    /// A view's mount could not be detached.
    #[error("cannot detach the view mounted at {path}: {source}")]
    Detach {
        /// The mountpoint.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How a view was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Unmounted, profile flushed, server gone.
    Stopped,
    /// Still used outside this mount namespace: detached here, its server
    /// serves those users until they go.
    Detached,
    /// The server hung: its connection was aborted and it was killed.
    Aborted,
}

/// Starts and stops views; the real one runs a server process per view,
/// tests use fakes.
pub trait ViewMounter: Send + Sync + 'static {
    /// What it takes to check on and stop the view later.
    type Handle: Send + Sync;
    /// Mounts `spec`, within a bounded time.
    fn mount(&self, spec: &ViewSpec) -> Result<Self::Handle, MountError>;
    /// The view of `spec` left serving by an earlier run of the daemon;
    /// `None` when there is none, an error when that cannot be told (the
    /// view is then mounted anew).
    fn adopt(&self, spec: &ViewSpec) -> Result<Option<Self::Handle>, MountError>;
    /// True while the view serves. Reads the system (processes, mounts):
    /// never called with the view table locked.
    fn is_serving(&self, handle: &Self::Handle) -> bool;
    /// Stops a view, within a bounded time. An error means its mount could
    /// not be taken away: the view is kept and the stop may be tried again.
    fn stop(&self, handle: &Self::Handle) -> Result<StopOutcome, MountError>;
}
