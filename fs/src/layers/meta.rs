//! Metadata of one entry in one layer directory, as `lstat(2)` reports it.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The type of an entry, from the `S_IFMT` bits of its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix domain socket.
    Socket,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
}

/// A point in time with nanosecond precision, as stored in an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timespec {
    /// Seconds since the epoch (may be negative).
    pub sec: i64,
    /// Nanoseconds within the second.
    pub nsec: u32,
}

impl Timespec {
    /// The same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        let nanos = Duration::from_nanos(u64::from(self.nsec));
        if self.sec >= 0 {
            UNIX_EPOCH + Duration::from_secs(self.sec.unsigned_abs()) + nanos
        } else {
            UNIX_EPOCH - Duration::from_secs(self.sec.unsigned_abs()) + nanos
        }
    }
}

/// Everything `lstat(2)` says about an entry that the view passes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Entry type.
    pub kind: Kind,
    /// Full `st_mode` (type and permission bits, including suid, sgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count of the underlying inode.
    pub nlink: u64,
    /// Size in bytes.
    pub size: u64,
    /// Allocated 512-byte blocks.
    pub blocks: u64,
    /// Preferred I/O block size.
    pub blksize: u64,
    /// Device number for device nodes.
    pub rdev: u64,
    /// Device of the layer file system holding the inode.
    pub dev: u64,
    /// Inode number within `dev`.
    pub ino: u64,
    /// Last access.
    pub atime: Timespec,
    /// Last modification.
    pub mtime: Timespec,
    /// Last status change.
    pub ctime: Timespec,
}

impl Meta {
    /// `lstat(2)` of `path`.
    pub fn lstat(path: &Path) -> std::io::Result<Meta> {
        std::fs::symlink_metadata(path).map(|m| Meta::from_metadata(&m))
    }

    /// Converts std's metadata.
    pub fn from_metadata(m: &Metadata) -> Meta {
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else if ft.is_char_device() {
            Kind::CharDevice
        } else if ft.is_block_device() {
            Kind::BlockDevice
        } else {
            Kind::File
        };
        let ts = |sec: i64, nsec: i64| Timespec {
            sec,
            nsec: u32::try_from(nsec).unwrap_or(0),
        };
        Meta {
            kind,
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            nlink: m.nlink(),
            size: m.size(),
            blocks: m.blocks(),
            blksize: m.blksize(),
            rdev: m.rdev(),
            dev: m.dev(),
            ino: m.ino(),
            atime: ts(m.atime(), m.atime_nsec()),
            mtime: ts(m.mtime(), m.mtime_nsec()),
            ctime: ts(m.ctime(), m.ctime_nsec()),
        }
    }

    /// True for an overlay whiteout: a character device with device number 0:0.
    pub fn is_whiteout(&self) -> bool {
        self.kind == Kind::CharDevice && self.rdev == 0
    }

    /// Permission bits including suid, sgid and sticky (`mode & 0o7777`).
    pub fn perm(&self) -> u16 {
        (self.mode & 0o7777) as u16
    }
}

#[cfg(test)]
impl Meta {
    /// A root-owned entry of `kind` with inode `ino` and `nlink` links, all
    /// times zero: for unit tests.
    pub(crate) fn for_test(kind: Kind, mode: u32, ino: u64, nlink: u64) -> Meta {
        let t = Timespec { sec: 0, nsec: 0 };
        Meta {
            kind,
            mode,
            uid: 0,
            gid: 0,
            nlink,
            size: 0,
            blocks: 0,
            blksize: 4096,
            rdev: 0,
            dev: 1,
            ino,
            atime: t,
            mtime: t,
            ctime: t,
        }
    }
}
