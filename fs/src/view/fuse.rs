//! The FUSE operations of the view. Everything is read-only; every answer the
//! kernel may cache is given the view's long TTL, except names an enforced
//! view hides: those get an error, which the kernel does not cache, so every
//! attempt reaches the view and counts as a miss.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyXattr,
    Request,
};

use super::ReadMode;
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

impl Filesystem for ViewFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // No READDIRPLUS: attributes handed over with a listing would let the
        // kernel answer a later stat of a child without a LOOKUP, and that
        // access would be missing from the profile (Python stats a module's
        // source next to its cached bytecode, and needs it kept).
        for flag in [
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_SPLICE_READ,
        ] {
            let _ = config.add_capabilities(flag);
        }
        let _ = config.set_max_background(64);
        let offered = config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH);
        if self.read_mode == ReadMode::Auto
            && offered
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.enable();
        }
        if self.passthrough.is_on() {
            tracing::info!("file reads use FUSE passthrough");
        } else if self.read_mode == ReadMode::Pread {
            tracing::info!("file reads use pread (passthrough turned off)");
        } else {
            tracing::info!("kernel offers no FUSE passthrough; file reads use pread");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _timed = self.requests.time(Opcode::Lookup);
        let parent_node = match self.node(parent) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let Resolved::Dir { layers, .. } = &parent_node.resolved else {
            return reply.error(Errno::ENOTDIR);
        };
        match self.stack.lookup(&parent_node.rel, layers, name) {
            Ok(Some(resolved)) => {
                if self.judge_lookup(&parent_node, name, req.pid()) {
                    // An error, not a negative entry: the kernel caches
                    // nothing, so the next attempt is seen and counted too.
                    tracing::trace!(parent = %parent_node.rel.display(), ?name, "hidden");
                    return reply.error(Errno::ENOENT);
                }
                // Counted as one lookup the kernel holds until it forgets it.
                let child = self.inodes.lookup(&parent_node, name, resolved);
                self.record_lookup(&parent_node, name, &child);
                tracing::trace!(path = %child.rel.display(), "lookup");
                reply.entry(&self.ttl, &child.attr, Generation(0));
            }
            Ok(None) => {
                self.record_absent(&parent_node, name);
                // Node id 0 with a TTL: the kernel caches the negative entry.
                let negative = FileAttr {
                    ino: INodeNo(0),
                    ..parent_node.attr
                };
                reply.entry(&self.ttl, &negative, Generation(0));
            }
            Err(e) => reply.error(io_errno(e)),
        }
    }

    // fuser 0.18 does not export `ForgetOne`, so `batch_forget` keeps its
    // default, which calls this once per inode.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _timed = self.requests.time(Opcode::Forget);
        let Some(node) = self.inodes.forget(ino, nlookup) else {
            return;
        };
        tracing::trace!(path = %node.rel.display(), "forgotten");
        self.passthrough.forget(&node);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _timed = self.requests.time(Opcode::Getattr);
        match self.node(ino) {
            Ok(node) => reply.attr(&self.ttl, &node.attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _timed = self.requests.time(Opcode::Readlink);
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let Resolved::Other { layer, .. } = node.resolved else {
            return reply.error(Errno::EINVAL);
        };
        match self.stack.read_link(layer, &node.rel) {
            Ok(target) => {
                self.record(&node, AccessKind::Readlink);
                self.judge(&node, AccessKind::Readlink, req.pid());
                reply.data(target.as_os_str().as_bytes());
            }
            Err(e) => reply.error(io_errno(e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _timed = self.requests.time(Opcode::Open);
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        let kind = if flags.0 & FMODE_EXEC != 0 {
            AccessKind::Exec
        } else {
            AccessKind::Read
        };
        self.record(&node, kind);
        self.judge(&node, kind, req.pid());
        tracing::trace!(path = %node.rel.display(), %kind, "open");
        let reply = if self.passthrough.is_on() {
            let open = || pread::open_layer_file(&self.host_path(&node));
            match self.passthrough.open(&node, open, reply) {
                Ok(()) => return,
                Err(Refused::UsePread(reply)) => reply,
                Err(Refused::Failed(reply, e)) => return reply.error(io_errno(e)),
            }
        } else {
            reply
        };
        self.pread.open(&self.host_path(&node), reply);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _timed = self.requests.time(Opcode::Read);
        let Some(file) = self.pread.get(fh) else {
            return reply.error(Errno::EBADF);
        };
        match pread::read_at(&file, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(io_errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _timed = self.requests.time(Opcode::Flush);
        // Nothing to flush in a read-only view; ENOSYS makes the kernel stop
        // sending FLUSH on every close.
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        let _timed = self.requests.time(Opcode::Ioctl);
        // What overlayfs answers for regular files (isatty() and the like).
        reply.error(Errno::ENOTTY);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _timed = self.requests.time(Opcode::Release);
        if fh.0 == 0 {
            if let Ok(node) = self.node(ino) {
                self.passthrough.release(&node);
            }
        } else {
            self.pread.remove(fh);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _timed = self.requests.time(Opcode::Opendir);
        // ENOSYS makes the kernel stop sending OPENDIR and RELEASEDIR: two
        // round trips less per directory. Listings are recorded in readdir.
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _timed = self.requests.time(Opcode::Readdir);
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let listing = match self.listing(&node, ino) {
            Ok(listing) => listing,
            Err(e) => return reply.error(e),
        };
        self.record(&node, AccessKind::Readdir);
        self.judge(&node, AccessKind::Readdir, req.pid());
        let dots = [(".", ino), ("..", node.parent)];
        for (i, (name, dot_ino)) in dots.iter().enumerate().skip(offset as usize) {
            if reply.add(*dot_ino, i as u64 + 1, FileType::Directory, name) {
                return reply.ok();
            }
        }
        let skip = offset.saturating_sub(FIRST_ENTRY_OFFSET) as usize;
        for (i, entry) in listing.iter().enumerate().skip(skip) {
            // Offsets stay positions in the whole listing, hidden names included.
            if self.hidden(&node, &entry.name) {
                continue;
            }
            let next = FIRST_ENTRY_OFFSET + i as u64 + 1;
            if reply.add(entry.ino, next, entry.kind, &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _timed = self.requests.time(Opcode::Statfs);
        match rustix::fs::statfs(self.stack.root(LayerIdx(0))) {
            Ok(st) => reply.statfs(
                st.f_blocks,
                st.f_bfree,
                st.f_bavail,
                st.f_files,
                st.f_ffree,
                st.f_bsize as u32,
                self.namelen as u32,
                st.f_frsize as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _timed = self.requests.time(Opcode::Getxattr);
        if xattr::is_overlay_private(name) {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let xattrs = match self.xattrs(&node) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        match xattrs.iter().find(|(n, _)| n == name) {
            Some((_, value)) => reply_sized(reply, size, value),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _timed = self.requests.time(Opcode::Listxattr);
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let xattrs = match self.xattrs(&node) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let mut names = Vec::new();
        for (name, _) in xattrs {
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        reply_sized(reply, size, &names);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let _timed = self.requests.time(Opcode::Access);
        if mask.contains(AccessFlags::W_OK) {
            reply.error(Errno::EROFS);
        } else {
            reply.ok();
        }
    }
}

/// Answers an xattr request of `size` bytes (0: only the size) with `data`.
fn reply_sized(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if (size as usize) < data.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}
