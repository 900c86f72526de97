//! The profiling view: a read-only FUSE file system serving the merged tree
//! of a [`LayerStack`] and reporting first accesses to a [`RecorderHandle`].
//!
//! With a [`Policy`] (audit or enforce mode) it also judges accesses against
//! the image's allowed set: in audit every access outside it is a miss; in
//! enforce names outside it do not exist (lookup answers `ENOENT`, uncached,
//! and counts a miss; listings leave them out). The profile is recorded in
//! every mode.

mod fuse;
mod inodes;
mod mount;
mod ops;
mod passthrough;
mod pread;
mod stats;
mod sys;
mod transport;
mod uring;
mod viewfs;

use std::sync::Arc;
use std::time::Duration;

pub use mount::{MountedView, Stopped, ViewError, is_mountpoint, mount, mountpoints};
pub use stats::{LATENCY_BOUNDS_SECONDS, OpCounts, Opcode, RequestCounts, RequestStats};
pub use transport::{AUTO_USES_IO_URING, ENABLE_URING, Transport, uring_offered};

use crate::layers::LayerStack;
use crate::policy::Policy;
use crate::profile::RecorderHandle;

/// How reads of regular files are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// FUSE passthrough when the kernel offers it, `pread` otherwise.
    Auto,
    /// Always `pread` through the FUSE daemon.
    Pread,
}

/// Serving threads a view gets unless told otherwise: one per CPU the process
/// may use, clamped to 2..=8. At least 2, so one slow request does not hold up
/// the others; at most 8, since a host serves many views at once. 2 when the
/// CPU count cannot be read.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().clamp(2, 8))
        .unwrap_or(2)
}

/// Settings of one view.
#[derive(Clone, Debug)]
pub struct ViewOptions {
    /// Serving threads (each with its own cloned `/dev/fuse` descriptor, or
    /// its own io_uring queues); [`default_threads`] unless set.
    pub threads: usize,
    /// How file reads are served.
    pub read_mode: ReadMode,
    /// How long the kernel may cache entries and attributes. The image never
    /// changes under a view, so this is long.
    pub ttl: Duration,
    /// Name shown as the mount source.
    pub fsname: String,
    /// Audit or enforce: the allowed set accesses are judged by and where
    /// misses go. `None` in learn mode.
    pub policy: Option<Policy>,
    /// How requests travel between the kernel and the view.
    pub transport: Transport,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions {
            threads: default_threads(),
            read_mode: ReadMode::Auto,
            ttl: Duration::from_secs(365 * 24 * 3600),
            fsname: "pare".into(),
            policy: None,
            transport: Transport::Auto,
        }
    }
}

/// A view ready to mount: the layers, and where accesses go.
pub struct View {
    pub(crate) stack: LayerStack,
    pub(crate) recorder: Option<RecorderHandle>,
    pub(crate) requests: Arc<RequestStats>,
}

impl View {
    /// A view of `stack`; accesses go to `recorder` when there is one.
    pub fn new(stack: LayerStack, recorder: Option<RecorderHandle>) -> View {
        View {
            stack,
            recorder,
            requests: Arc::default(),
        }
    }

    /// The counters of the requests this view will serve (readable while it
    /// serves).
    pub fn requests(&self) -> Arc<RequestStats> {
        self.requests.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::{ViewOptions, default_threads};

    #[test]
    fn views_default_to_the_documented_thread_count() {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
        assert_eq!(default_threads(), cpus);
        assert!((2..=8).contains(&default_threads()));
        assert_eq!(ViewOptions::default().threads, default_threads());
    }
}
