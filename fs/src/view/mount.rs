//! Mounting a view: preflight checks with clear errors, the FUSE session on
//! its serving threads, and unmounting.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};

use super::fuse::FuseView;
use super::transport::{AUTO_USES_IO_URING, Transport, uring_offered};
use super::uring;
use super::viewfs::ViewFs;
use super::{View, ViewOptions};

/// How long a stopping view waits for its io_uring queue threads after the
/// session ended (the kernel ends their entries when the connection goes).
const RING_JOIN: Duration = Duration::from_secs(5);

/// Why a view could not be mounted or served.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// Not running as root.
    #[error("mounting a view needs root (it mounts FUSE with allow_other)")]
    NotRoot,
    /// `/dev/fuse` is missing.
    #[error(
        "/dev/fuse is missing: load the fuse module (modprobe fuse) or give the container the device"
    )]
    NoFuseDevice,
    /// The mountpoint is missing or not a directory.
    #[error("mountpoint {path}: {source}")]
    Mountpoint {
        /// The mountpoint.
        path: PathBuf,
        /// What is wrong with it.
        source: io::Error,
    },
    /// The mountpoint is not a directory.
    #[error("mountpoint {0} is not a directory")]
    MountpointNotDir(PathBuf),
    /// Something is already mounted there.
    #[error("mountpoint {0} is busy: something is already mounted there")]
    Busy(PathBuf),
    /// The layer stack could not be read.
    #[error("cannot read the layer stack: {0}")]
    Layers(#[source] io::Error),
    /// The kernel refused the mount.
    #[error("mounting FUSE on {path} failed: {source}")]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The transport asked for is not available.
    #[error("--transport io-uring: {0}")]
    Transport(String),
    /// Serving ended with an error.
    #[error("serving the view on {path} failed: {source}")]
    Serve {
        /// The mountpoint.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

/// A mounted, serving view.
pub struct MountedView {
    mountpoint: PathBuf,
    unmounter: SessionUnmounter,
    thread: JoinHandle<io::Result<()>>,
    live_nodes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Mounts `view` read-only on `mountpoint` and serves it on background threads.
pub fn mount(view: View, mountpoint: &Path, opts: &ViewOptions) -> Result<MountedView, ViewError> {
    preflight(mountpoint)?;
    let mountpoint = std::fs::canonicalize(mountpoint).map_err(|source| ViewError::Mountpoint {
        path: mountpoint.to_path_buf(),
        source,
    })?;
    let rings = prepare_rings(opts)?;
    let ring_wanted = rings.as_ref().map(|_| opts.transport == Transport::IoUring);
    let fs = Arc::new(ViewFs::new(view, opts, ring_wanted).map_err(ViewError::Layers)?);
    let live_nodes = fs.live_nodes();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(opts.fsname.clone()),
        MountOption::Subtype("pare".into()),
        // fuser's direct mount(2) drops Subtype; the kernel option keeps it
        // (the mount shows as fuse.pare).
        MountOption::CUSTOM("subtype=pare".into()),
        MountOption::RO,
        // The view is a lower layer: a container's overlay on top decides
        // whether setuid bits and device nodes work (they do: overlayfs checks
        // its own mount's flags), so nothing on the host can use them here.
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    config.acl = SessionACL::All;
    // Over io_uring only FORGET and INTERRUPT come through /dev/fuse.
    config.n_threads = Some(if rings.is_some() {
        1
    } else {
        opts.threads.max(1)
    });
    config.clone_fd = true;
    let mut session =
        Session::new(FuseView(fs.clone()), &mountpoint, &config).map_err(|source| {
            if source.kind() == io::ErrorKind::Unsupported {
                ViewError::Transport(source.to_string())
            } else {
                ViewError::Mount {
                    path: mountpoint.clone(),
                    source,
                }
            }
        })?;
    let device = session
        .as_fd()
        .try_clone_to_owned()
        .map(Arc::new)
        .map_err(|source| ViewError::Serve {
            path: mountpoint.clone(),
            source,
        })?;
    fs.passthrough.set_device(device.clone());
    let queues = match rings {
        Some(rings) if fs.ring_agreed() => {
            let described = rings.describe();
            match uring::start(rings, device, fs.clone()) {
                Ok(running) => {
                    tracing::info!(queues = %described, "view serves requests over io_uring");
                    Some(running)
                }
                Err(e) if opts.transport == Transport::IoUring => {
                    drop(session);
                    return Err(ViewError::Transport(format!(
                        "the io_uring queues did not start: {e}"
                    )));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the io_uring queues did not start; the view serves requests over /dev/fuse with one thread");
                    None
                }
            }
        }
        _ => {
            tracing::info!("view serves requests over /dev/fuse");
            None
        }
    };
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new()
        .name("pare-view".into())
        .spawn(move || {
            let served = session.run();
            if let Some(queues) = queues {
                queues.join(RING_JOIN);
            }
            served
        })
        .map_err(|source| ViewError::Serve {
            path: mountpoint.clone(),
            source,
        })?;
    tracing::info!(mountpoint = %mountpoint.display(), threads = opts.threads, "view mounted");
    Ok(MountedView {
        mountpoint,
        unmounter,
        thread,
        live_nodes,
    })
}

/// How [`MountedView::stop`] ended.
pub enum Stopped {
    /// Unmounted and no longer served; the result of serving.
    Unmounted(Result<(), ViewError>),
    /// Something outside this mount namespace still uses the view (an
    /// overlay that leaked into another namespace): the mount point is
    /// detached here, and the view keeps serving those users until they go.
    StillServing(MountedView),
}

impl MountedView {
    /// Where the view is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// True once serving has stopped (the mount went away).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// How many inodes the view holds now: the root and those the kernel
    /// has looked up and not yet forgotten.
    pub fn live_nodes(&self) -> usize {
        self.live_nodes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The FUSE connection number (`/sys/fs/fuse/connections/<n>`), read
    /// from the mount table.
    pub fn connection(&self) -> Option<u32> {
        crate::mountinfo::mount_at(&self.mountpoint)
            .filter(|m| m.major == 0)
            .map(|m| m.minor)
    }

    /// Unmounts (if still mounted) and waits for the serving threads to stop.
    pub fn unmount(self) -> Result<(), ViewError> {
        match self.stop(Duration::MAX) {
            Stopped::Unmounted(result) => result,
            Stopped::StillServing(view) => view.wait(),
        }
    }

    /// Unmounts, detaching the mount point when it is busy, and waits at most
    /// `wait` for serving to end. An overlay using the view keeps a private
    /// clone of its mount, so the unmount may succeed while serving goes on:
    /// [`Stopped::StillServing`] says so.
    pub fn stop(mut self, mut wait: Duration) -> Stopped {
        if let Err(source) = self.unmounter.unmount() {
            // Already unmounted from outside is fine; a busy mount is detached.
            if source.raw_os_error() != Some(libc::EINVAL) {
                tracing::info!(mountpoint = %self.mountpoint.display(), error = %source, "view busy; detaching it");
                let _ =
                    rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
                // Busy means used: serving goes on until that user is gone.
                wait = wait.min(Duration::from_millis(50));
            }
        }
        let deadline = Instant::now().checked_add(wait);
        while !self.thread.is_finished() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Stopped::StillServing(self);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Stopped::Unmounted(self.wait())
    }

    /// Waits until the view is unmounted from outside (`umount`, `fusermount3 -u`).
    pub fn wait(self) -> Result<(), ViewError> {
        let path = self.mountpoint.clone();
        match self.thread.join() {
            Ok(result) => result.map_err(|source| ViewError::Serve { path, source }),
            Err(_) => Err(ViewError::Serve {
                path,
                source: io::Error::other("a serving thread panicked"),
            }),
        }
    }
}

/// The io_uring rings when the transport asks for them and the kernel
/// offers them; an error only when io_uring is required.
fn prepare_rings(opts: &ViewOptions) -> Result<Option<uring::Prepared>, ViewError> {
    match opts.transport {
        Transport::DevFuse => Ok(None),
        Transport::Auto if !AUTO_USES_IO_URING => Ok(None),
        Transport::Auto => match uring_offered() {
            Ok(()) => match uring::prepare(opts.threads) {
                Ok(rings) => Ok(Some(rings)),
                Err(e) => {
                    tracing::info!(error = %e, "cannot make io_uring rings; serving over /dev/fuse");
                    Ok(None)
                }
            },
            Err(why) => {
                tracing::debug!(%why, "no FUSE over io_uring");
                Ok(None)
            }
        },
        Transport::IoUring => {
            uring_offered().map_err(ViewError::Transport)?;
            uring::prepare(opts.threads)
                .map(Some)
                .map_err(|e| ViewError::Transport(format!("cannot make io_uring rings: {e}")))
        }
    }
}

fn preflight(mountpoint: &Path) -> Result<(), ViewError> {
    if !rustix::process::geteuid().is_root() {
        return Err(ViewError::NotRoot);
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(ViewError::NoFuseDevice);
    }
    let meta = std::fs::metadata(mountpoint).map_err(|source| ViewError::Mountpoint {
        path: mountpoint.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ViewError::MountpointNotDir(mountpoint.to_path_buf()));
    }
    let canonical = std::fs::canonicalize(mountpoint).map_err(|source| ViewError::Mountpoint {
        path: mountpoint.to_path_buf(),
        source,
    })?;
    if is_mountpoint(&canonical) {
        return Err(ViewError::Busy(mountpoint.to_path_buf()));
    }
    Ok(())
}

/// Mount points of this mount namespace, from `/proc/self/mountinfo`.
pub fn mountpoints() -> Vec<PathBuf> {
    crate::mountinfo::mount_points()
}

/// True when `path` (canonical) is the mount point of some mount.
pub fn is_mountpoint(path: &Path) -> bool {
    crate::mountinfo::mount_at(path).is_some()
}
