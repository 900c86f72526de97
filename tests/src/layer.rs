//! Writing one overlay-style layer directory: files, directories, links,
//! special nodes, whiteouts (char device 0:0), opaque markers
//! (`trusted.overlay.opaque=y`), owners, modes, xattrs and explicit times.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, CWD, FileType, Mode, Timestamps, XattrFlags};

/// A layer directory being written. Paths are relative to its root; missing
/// parent directories are created (mode 0755).
#[derive(Debug)]
pub struct Layer {
    root: PathBuf,
}

/// Kind of a device node.
#[derive(Clone, Copy, Debug)]
pub enum Device {
    /// A character device.
    Char,
    /// A block device.
    Block,
}

impl Layer {
    /// Creates the layer directory `root`.
    pub fn new(root: &Path) -> Result<Layer> {
        fs::create_dir_all(root)?;
        Ok(Layer {
            root: root.to_path_buf(),
        })
    }

    /// The layer directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Host path of `rel`, with its parent directories created.
    fn at(&self, rel: &str) -> Result<PathBuf> {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("mkdir -p {}", parent.display()))?;
        }
        Ok(path)
    }

    /// A directory (and its parents).
    pub fn dir(&self, rel: &str) -> Result<&Self> {
        fs::create_dir_all(self.root.join(rel))?;
        Ok(self)
    }

    /// A regular file holding `content`.
    pub fn file(&self, rel: &str, content: &[u8]) -> Result<&Self> {
        fs::write(self.at(rel)?, content).with_context(|| format!("write {rel}"))?;
        Ok(self)
    }

    /// A sparse file of `len` bytes with `chunks` written at their offsets.
    pub fn sparse(&self, rel: &str, len: u64, chunks: &[(u64, &[u8])]) -> Result<&Self> {
        let mut file = File::create(self.at(rel)?)?;
        file.set_len(len)?;
        for (offset, data) in chunks {
            file.seek(SeekFrom::Start(*offset))?;
            file.write_all(data)?;
        }
        Ok(self)
    }

    /// A symlink `rel` -> `target`.
    pub fn symlink(&self, rel: &str, target: &str) -> Result<&Self> {
        std::os::unix::fs::symlink(target, self.at(rel)?)
            .with_context(|| format!("symlink {rel}"))?;
        Ok(self)
    }

    /// A new name `rel` for the existing file `existing` of this layer.
    pub fn hardlink(&self, rel: &str, existing: &str) -> Result<&Self> {
        fs::hard_link(self.root.join(existing), self.at(rel)?)
            .with_context(|| format!("link {rel}"))?;
        Ok(self)
    }

    /// A named pipe.
    pub fn fifo(&self, rel: &str) -> Result<&Self> {
        self.mknod(rel, FileType::Fifo, 0o644, 0, 0)
    }

    /// A unix socket file (bound, then the listener is dropped).
    pub fn socket(&self, rel: &str) -> Result<&Self> {
        drop(
            std::os::unix::net::UnixListener::bind(self.at(rel)?)
                .with_context(|| format!("bind {rel}"))?,
        );
        Ok(self)
    }

    /// A device node `major:minor`.
    pub fn device(&self, rel: &str, kind: Device, major: u32, minor: u32) -> Result<&Self> {
        let kind = match kind {
            Device::Char => FileType::CharacterDevice,
            Device::Block => FileType::BlockDevice,
        };
        self.mknod(rel, kind, 0o660, major, minor)
    }

    /// A whiteout: `rel` and everything below it in lower layers are hidden.
    pub fn whiteout(&self, rel: &str) -> Result<&Self> {
        self.mknod(rel, FileType::CharacterDevice, 0o000, 0, 0)
    }

    /// Makes directory `rel` (created if missing) opaque: lower layers' content is hidden.
    pub fn opaque(&self, rel: &str) -> Result<&Self> {
        self.dir(rel)?.xattr(rel, "trusted.overlay.opaque", b"y")
    }

    fn mknod(&self, rel: &str, kind: FileType, mode: u32, major: u32, minor: u32) -> Result<&Self> {
        let dev = rustix::fs::makedev(major, minor);
        rustix::fs::mknodat(CWD, self.at(rel)?, kind, Mode::from_raw_mode(mode), dev)
            .with_context(|| format!("mknod {rel}"))?;
        Ok(self)
    }

    /// Sets xattr `name` on `rel` (not following a symlink).
    pub fn xattr(&self, rel: &str, name: &str, value: &[u8]) -> Result<&Self> {
        rustix::fs::lsetxattr(self.root.join(rel), name, value, XattrFlags::empty())
            .with_context(|| format!("setxattr {name} on {rel}"))?;
        Ok(self)
    }

    /// Sets the full mode (permission, setuid, setgid, sticky bits) of a non-symlink.
    pub fn chmod(&self, rel: &str, mode: u32) -> Result<&Self> {
        fs::set_permissions(self.root.join(rel), fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {rel}"))?;
        Ok(self)
    }

    /// Sets the owner of `rel` (not following a symlink). Clears setuid and
    /// capabilities, so call it before [`Layer::chmod`] and [`Layer::xattr`].
    pub fn chown(&self, rel: &str, uid: u32, gid: u32) -> Result<&Self> {
        lchown(self.root.join(rel), Some(uid), Some(gid))
            .with_context(|| format!("chown {rel}"))?;
        Ok(self)
    }

    /// Gives every entry of the layer (root included) its own atime and mtime,
    /// with non-zero nanoseconds, drawn from `clock`. Children are set before
    /// their directory; call it when the layer is complete.
    pub fn set_times(&self, clock: &mut u64) -> Result<()> {
        set_times_below(&self.root, clock)
    }
}

fn set_times_below(path: &Path, clock: &mut u64) -> Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        let mut children: Vec<PathBuf> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        children.sort();
        for child in children {
            set_times_below(&child, clock)?;
        }
    }
    *clock += 1;
    let n = *clock as i64;
    let times = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_600_000_000 + 3 * n,
            tv_nsec: 1 + (n * 7_919) % 999_999_998,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_500_000_000 + 5 * n,
            tv_nsec: 999_999_999 - (n * 104_729) % 999_999_998,
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("utimensat {}", path.display()))?;
    Ok(())
}
