//! Mounting a view: preflight checks with clear errors, the FUSE session on
//! its serving threads, and unmounting.

use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};

use super::fuse::ViewFs;
use super::{View, ViewOptions};

/// Why a view could not be mounted or served.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// Not running as root.
    #[error("mounting a view needs root (it mounts FUSE with allow_other, suid and dev)")]
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
}

/// Mounts `view` read-only on `mountpoint` and serves it on background threads.
pub fn mount(view: View, mountpoint: &Path, opts: &ViewOptions) -> Result<MountedView, ViewError> {
    preflight(mountpoint)?;
    let mountpoint = std::fs::canonicalize(mountpoint).map_err(|source| ViewError::Mountpoint {
        path: mountpoint.to_path_buf(),
        source,
    })?;
    let fs = ViewFs::new(view, opts).map_err(ViewError::Layers)?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(opts.fsname.clone()),
        MountOption::Subtype("pare".into()),
        // fuser's direct mount(2) drops Subtype; the kernel option keeps it
        // (the mount shows as fuse.pare).
        MountOption::CUSTOM("subtype=pare".into()),
        MountOption::RO,
        MountOption::Dev,
        MountOption::Suid,
        MountOption::DefaultPermissions,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let mut session =
        Session::new(fs, &mountpoint, &config).map_err(|source| ViewError::Mount {
            path: mountpoint.clone(),
            source,
        })?;
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new()
        .name("pare-view".into())
        .spawn(move || session.run())
        .map_err(|source| ViewError::Serve {
            path: mountpoint.clone(),
            source,
        })?;
    tracing::info!(mountpoint = %mountpoint.display(), threads = opts.threads, "view mounted");
    Ok(MountedView {
        mountpoint,
        unmounter,
        thread,
    })
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

    /// Unmounts (if still mounted) and waits for the serving threads to stop.
    pub fn unmount(mut self) -> Result<(), ViewError> {
        if let Err(source) = self.unmounter.unmount() {
            // Already unmounted from outside is fine; anything else is reported.
            if source.raw_os_error() != Some(libc::EINVAL) {
                tracing::warn!(mountpoint = %self.mountpoint.display(), error = %source, "unmount failed; detaching");
                let _ =
                    rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
            }
        }
        self.wait()
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

/// Mount points of this mount namespace, from `/proc/self/mountinfo`, with
/// its octal escapes (`\040` for a space) undone.
pub fn mountpoints() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .collect()
}

/// True when `path` (canonical) is the mount point of some mount.
pub fn is_mountpoint(path: &Path) -> bool {
    mountpoints().iter().any(|m| m == path)
}

/// Undoes the octal escapes (`\040` for space) of mountinfo fields.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            super::unescape_mountinfo(r"/mnt/a\040b\134c"),
            "/mnt/a b\\c"
        );
        assert_eq!(super::unescape_mountinfo("/plain"), "/plain");
    }
}
