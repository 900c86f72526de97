//! The view's request handlers, apart from any transport: each takes the
//! request's arguments and returns the answer, which the `/dev/fuse`
//! adapter ([`super::fuse`]) and the io_uring transport ([`super::uring`])
//! encode for the kernel. Everything is read-only; every answer the kernel
//! may cache is given the view's long TTL, except names an enforced view
//! hides: those get an error, which the kernel does not cache, so every
//! attempt reaches the view and counts as a miss.

use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use fuser::{Errno, FileAttr, FileHandle, FileType, INodeNo};

use super::passthrough::Refused;
use super::pread;
use super::stats::Opcode;
use super::viewfs::{ViewFs, io_errno};
use crate::layers::{LayerIdx, Resolved, xattr};
use crate::profile::AccessKind;

/// `__FMODE_EXEC`: the kernel sets it in the open flags of `execve(2)`.
const FMODE_EXEC: i32 = 0x20;

/// Offsets of `.` and `..` in a listing; real entries follow.
const FIRST_ENTRY_OFFSET: u64 = 2;

/// How an open was answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// Reads go to this registered backing file (FUSE passthrough), handle 0.
    Passthrough(u32),
    /// Reads come to the view under this handle (`pread`).
    Handle(FileHandle),
}

/// The answer to an xattr request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Xattr {
    /// The caller asked for the size only (size 0).
    Size(u32),
    /// The value or the list of names.
    Data(Vec<u8>),
}

/// What `statfs` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Statfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

impl ViewFs {
    /// LOOKUP of `name` in `parent` by `pid`: the child's attributes, or
    /// attributes numbered 0 for a name the image does not have (a negative
    /// entry the kernel caches for the TTL).
    pub(crate) fn lookup(
        &self,
        parent: INodeNo,
        name: &OsStr,
        pid: u32,
    ) -> Result<FileAttr, Errno> {
        let _timed = self.requests.time(Opcode::Lookup);
        let parent_node = self.node(parent)?;
        let Resolved::Dir { layers, .. } = &parent_node.resolved else {
            return Err(Errno::ENOTDIR);
        };
        match self.stack.lookup(&parent_node.rel, layers, name) {
            Ok(Some(resolved)) => {
                if self.judge_lookup(&parent_node, name, pid) {
                    // An error, not a negative entry: the kernel caches
                    // nothing, so the next attempt is seen and counted too.
                    tracing::trace!(parent = %parent_node.rel.display(), ?name, "hidden");
                    return Err(Errno::ENOENT);
                }
                // Counted as one lookup the kernel holds until it forgets it.
                let child = self.inodes.lookup(&parent_node, name, resolved);
                self.record_lookup(&parent_node, name, &child);
                tracing::trace!(path = %child.rel.display(), "lookup");
                Ok(child.attr)
            }
            Ok(None) => {
                self.record_absent(&parent_node, name);
                Ok(FileAttr {
                    ino: INodeNo(0),
                    ..parent_node.attr
                })
            }
            Err(e) => Err(io_errno(e)),
        }
    }

    /// FORGET: the kernel dropped `nlookup` lookups of `ino`.
    pub(crate) fn forget(&self, ino: INodeNo, nlookup: u64) {
        let _timed = self.requests.time(Opcode::Forget);
        let Some(node) = self.inodes.forget(ino, nlookup) else {
            return;
        };
        tracing::trace!(path = %node.rel.display(), "forgotten");
        self.passthrough.forget(&node);
    }

    /// GETATTR.
    pub(crate) fn getattr(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        let _timed = self.requests.time(Opcode::Getattr);
        Ok(self.node(ino)?.attr)
    }

    /// READLINK by `pid`: the link's target.
    pub(crate) fn readlink(&self, ino: INodeNo, pid: u32) -> Result<Vec<u8>, Errno> {
        let _timed = self.requests.time(Opcode::Readlink);
        let node = self.node(ino)?;
        let Resolved::Other { layer, .. } = node.resolved else {
            return Err(Errno::EINVAL);
        };
        let target = self.stack.read_link(layer, &node.rel).map_err(io_errno)?;
        self.record(&node, AccessKind::Readlink);
        self.judge(&node, AccessKind::Readlink, pid);
        Ok(target.into_os_string().into_vec())
    }

    /// OPEN of `ino` with the open(2) `flags` by `pid`: passthrough when the
    /// kernel agreed to it, else a handle for `pread`.
    pub(crate) fn open(&self, ino: INodeNo, flags: i32, pid: u32) -> Result<Opened, Errno> {
        let _timed = self.requests.time(Opcode::Open);
        let node = self.node(ino)?;
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(Errno::EROFS);
        }
        let kind = if flags & FMODE_EXEC != 0 {
            AccessKind::Exec
        } else {
            AccessKind::Read
        };
        self.record(&node, kind);
        self.judge(&node, kind, pid);
        tracing::trace!(path = %node.rel.display(), %kind, "open");
        if self.passthrough.is_on() {
            let open = || pread::open_layer_file(&self.host_path(&node));
            match self.passthrough.open(&node, open) {
                Ok(id) => return Ok(Opened::Passthrough(id)),
                Err(Refused::UsePread) => {}
                Err(Refused::Failed(e)) => return Err(io_errno(e)),
            }
        }
        self.pread
            .open(&self.host_path(&node))
            .map(Opened::Handle)
            .map_err(io_errno)
    }

    /// READ of `size` bytes at `offset` through the handle `fh`.
    pub(crate) fn read(&self, fh: FileHandle, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let _timed = self.requests.time(Opcode::Read);
        let file = self.pread.get(fh).ok_or(Errno::EBADF)?;
        pread::read_at(&file, offset, size).map_err(io_errno)
    }

    /// FLUSH: nothing to flush in a read-only view; `ENOSYS` makes the
    /// kernel stop sending it on every close.
    pub(crate) fn flush(&self) -> Errno {
        let _timed = self.requests.time(Opcode::Flush);
        Errno::ENOSYS
    }

    /// IOCTL: what overlayfs answers for regular files (`isatty()` and the
    /// like).
    pub(crate) fn ioctl(&self) -> Errno {
        let _timed = self.requests.time(Opcode::Ioctl);
        Errno::ENOTTY
    }

    /// RELEASE of the handle `fh` of `ino`.
    pub(crate) fn release(&self, ino: INodeNo, fh: FileHandle) {
        let _timed = self.requests.time(Opcode::Release);
        if fh.0 == 0 {
            if let Ok(node) = self.node(ino) {
                self.passthrough.release(&node);
            }
        } else {
            self.pread.remove(fh);
        }
    }

    /// OPENDIR: `ENOSYS` makes the kernel stop sending OPENDIR and
    /// RELEASEDIR, two round trips less per directory. Listings are recorded
    /// in readdir.
    pub(crate) fn opendir(&self) -> Errno {
        let _timed = self.requests.time(Opcode::Opendir);
        Errno::ENOSYS
    }

    /// READDIR of `ino` from `offset` by `pid`: hands entries to `add` (node,
    /// offset of the next entry, type, name) until it answers true (full).
    pub(crate) fn readdir(
        &self,
        ino: INodeNo,
        offset: u64,
        pid: u32,
        mut add: impl FnMut(INodeNo, u64, FileType, &OsStr) -> bool,
    ) -> Result<(), Errno> {
        let _timed = self.requests.time(Opcode::Readdir);
        let node = self.node(ino)?;
        let listing = self.listing(&node, ino)?;
        self.record(&node, AccessKind::Readdir);
        self.judge(&node, AccessKind::Readdir, pid);
        let dots = [(".", ino), ("..", node.parent)];
        for (i, (name, dot_ino)) in dots.iter().enumerate().skip(offset as usize) {
            if add(
                *dot_ino,
                i as u64 + 1,
                FileType::Directory,
                OsStr::new(name),
            ) {
                return Ok(());
            }
        }
        let skip = offset.saturating_sub(FIRST_ENTRY_OFFSET) as usize;
        for (i, entry) in listing.iter().enumerate().skip(skip) {
            // Offsets stay positions in the whole listing, hidden names included.
            if self.hidden(&node, &entry.name) {
                continue;
            }
            let next = FIRST_ENTRY_OFFSET + i as u64 + 1;
            if add(entry.ino, next, entry.kind, &entry.name) {
                break;
            }
        }
        Ok(())
    }

    /// STATFS: the lowest layer's file system, with the longest name any
    /// layer takes.
    pub(crate) fn statfs(&self) -> Result<Statfs, Errno> {
        let _timed = self.requests.time(Opcode::Statfs);
        let st = rustix::fs::statfs(self.stack.root(LayerIdx(0)))
            .map_err(|e| Errno::from_i32(e.raw_os_error()))?;
        Ok(Statfs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: self.namelen as u32,
            frsize: st.f_frsize as u32,
        })
    }

    /// GETXATTR of `name` with a buffer of `size` bytes (0: the size only).
    pub(crate) fn getxattr(&self, ino: INodeNo, name: &OsStr, size: u32) -> Result<Xattr, Errno> {
        let _timed = self.requests.time(Opcode::Getxattr);
        if xattr::is_overlay_private(name) {
            return Err(Errno::EOPNOTSUPP);
        }
        let node = self.node(ino)?;
        let xattrs = self.xattrs(&node)?;
        match xattrs.iter().find(|(n, _)| n == name) {
            Some((_, value)) => sized(size, value),
            None => Err(Errno::NO_XATTR),
        }
    }

    /// LISTXATTR with a buffer of `size` bytes (0: the size only).
    pub(crate) fn listxattr(&self, ino: INodeNo, size: u32) -> Result<Xattr, Errno> {
        let _timed = self.requests.time(Opcode::Listxattr);
        let node = self.node(ino)?;
        let xattrs = self.xattrs(&node)?;
        let mut names = Vec::new();
        for (name, _) in xattrs {
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        sized(size, &names)
    }

    /// ACCESS with the access(2) `mask`.
    pub(crate) fn access(&self, mask: i32) -> Result<(), Errno> {
        let _timed = self.requests.time(Opcode::Access);
        if mask & libc::W_OK != 0 {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }
}

/// Answers an xattr request of `size` bytes (0: only the size) with `data`.
fn sized(size: u32, data: &[u8]) -> Result<Xattr, Errno> {
    if size == 0 {
        Ok(Xattr::Size(data.len() as u32))
    } else if (size as usize) < data.len() {
        Err(Errno::ERANGE)
    } else {
        Ok(Xattr::Data(data.to_vec()))
    }
}
