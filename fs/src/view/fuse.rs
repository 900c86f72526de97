//! The FUSE operations of the view. Everything is read-only; every answer the
//! kernel may cache is given the view's long TTL.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};

use super::inodes::{DirEntry, Inodes, Node, file_type};
use super::{ReadMode, View, ViewOptions};
use crate::layers::{LayerIdx, LayerStack, Resolved, xattr};
use crate::profile::{AccessKind, RecorderHandle};

/// `__FMODE_EXEC`: the kernel sets it in the open flags of `execve(2)`.
const FMODE_EXEC: i32 = 0x20;

/// Offsets of `.` and `..` in a listing; real entries follow.
const FIRST_ENTRY_OFFSET: u64 = 2;

pub(crate) struct ViewFs {
    stack: LayerStack,
    recorder: Option<RecorderHandle>,
    inodes: Inodes,
    handles: RwLock<HashMap<u64, Arc<File>>>,
    next_fh: AtomicU64,
    ttl: Duration,
    read_mode: ReadMode,
    passthrough: bool,
    passthrough_failed: AtomicBool,
    idle_backings: AtomicUsize,
    namelen: u64,
}

/// Most idle passthrough backing files kept registered with the kernel.
const MAX_IDLE_BACKINGS: usize = 4096;

impl ViewFs {
    pub(crate) fn new(view: View, opts: &ViewOptions) -> std::io::Result<ViewFs> {
        let inodes = Inodes::new(view.stack.resolve_root()?);
        let mut namelen = 255;
        for i in 0..view.stack.len() {
            let st = rustix::fs::statfs(view.stack.root(LayerIdx(i as u16)))?;
            namelen = namelen.max(st.f_namelen as u64);
        }
        Ok(ViewFs {
            stack: view.stack,
            recorder: view.recorder,
            inodes,
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            ttl: opts.ttl,
            read_mode: opts.read_mode,
            passthrough: false,
            passthrough_failed: AtomicBool::new(false),
            idle_backings: AtomicUsize::new(0),
            namelen,
        })
    }

    /// The count of live nodes, kept up to date while the view serves.
    pub(crate) fn live_nodes(&self) -> Arc<AtomicUsize> {
        self.inodes.live()
    }

    fn node(&self, ino: INodeNo) -> Result<Arc<Node>, Errno> {
        self.inodes.get(ino).ok_or(Errno::ESTALE)
    }

    fn record(&self, node: &Node, kind: AccessKind) {
        if let Some(recorder) = &self.recorder {
            if node.claim(kind) {
                recorder.record(&node.rel, kind);
            }
        }
    }

    fn record_lookup(&self, parent: &Node, name: &OsStr, child: &Node) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        if child.has_several_names() {
            // Other names of a hardlink group are paths of their own; the
            // writer drops repeats.
            let rel: Arc<Path> = Arc::from(parent.rel.join(name));
            recorder.record(&rel, AccessKind::Lookup);
        } else if child.claim(AccessKind::Lookup) {
            recorder.record(&child.rel, AccessKind::Lookup);
        }
    }

    fn listing(&self, dir: &Node, ino: INodeNo) -> Result<Arc<Vec<DirEntry>>, Errno> {
        if let Some(listing) = dir.listing.get() {
            return Ok(listing.clone());
        }
        let Resolved::Dir { layers, .. } = &dir.resolved else {
            return Err(Errno::ENOTDIR);
        };
        let children = self.stack.read_dir(&dir.rel, layers).map_err(io_errno)?;
        // Numbers only: a child's node is made when the kernel looks it up,
        // and dropped when the kernel forgets it.
        let numbers = self.inodes.numbers(ino, &children);
        let entries = children
            .into_iter()
            .zip(numbers)
            .map(|((name, resolved), ino)| DirEntry {
                name,
                ino,
                kind: file_type(resolved.meta().kind),
            })
            .collect();
        Ok(dir.listing.get_or_init(|| Arc::new(entries)).clone())
    }

    fn open_layer_file(&self, node: &Node) -> std::io::Result<File> {
        let path = self.stack.host_path(node.resolved.top_layer(), &node.rel);
        let open = |flags| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(&path)
        };
        // O_NOATIME keeps the layer's atimes as the image has them.
        match open(libc::O_NOATIME | libc::O_NOFOLLOW) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(libc::O_NOFOLLOW),
            other => other,
        }
    }

    fn open_passthrough(&self, node: &Node, reply: ReplyOpen) -> Result<(), (ReplyOpen, Errno)> {
        let mut backing = node.backing.lock().expect("backing lock");
        if let Some((id, count)) = backing.as_mut() {
            if *count == 0 {
                self.idle_backings.fetch_sub(1, Ordering::Relaxed);
            }
            *count += 1;
            reply.opened_passthrough(FileHandle(0), FopenFlags::FOPEN_NOFLUSH, id);
            return Ok(());
        }
        let file = match self.open_layer_file(node) {
            Ok(file) => file,
            Err(e) => return Err((reply, io_errno(e))),
        };
        match reply.open_backing(&file) {
            Ok(id) => {
                reply.opened_passthrough(FileHandle(0), FopenFlags::FOPEN_NOFLUSH, &id);
                *backing = Some((id, 1));
                Ok(())
            }
            Err(e) => {
                if !self.passthrough_failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        path = %node.rel.display(),
                        error = %e,
                        "FUSE passthrough refused for a backing file; serving such files with pread"
                    );
                }
                Err((reply, Errno::EAGAIN))
            }
        }
    }

    /// Claims a slot for one more idle backing file; false when all are taken.
    fn keep_idle_backing(&self) -> bool {
        self.idle_backings
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_IDLE_BACKINGS).then_some(n + 1)
            })
            .is_ok()
    }

    fn open_pread(&self, node: &Node, reply: ReplyOpen) {
        match self.open_layer_file(node) {
            Ok(file) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.handles
                    .write()
                    .expect("handles lock")
                    .insert(fh, Arc::new(file));
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
                );
            }
            Err(e) => reply.error(io_errno(e)),
        }
    }
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

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
            self.passthrough = true;
        }
        if self.passthrough {
            tracing::info!("file reads use FUSE passthrough");
        } else if self.read_mode == ReadMode::Pread {
            tracing::info!("file reads use pread (passthrough turned off)");
        } else {
            tracing::info!("kernel offers no FUSE passthrough; file reads use pread");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent_node = match self.node(parent) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let Resolved::Dir { layers, .. } = &parent_node.resolved else {
            return reply.error(Errno::ENOTDIR);
        };
        match self.stack.lookup(&parent_node.rel, layers, name) {
            Ok(Some(resolved)) => {
                // Counted as one lookup the kernel holds until it forgets it.
                let child = self.inodes.lookup(&parent_node, name, resolved);
                self.record_lookup(&parent_node, name, &child);
                tracing::trace!(path = %child.rel.display(), "lookup");
                reply.entry(&self.ttl, &child.attr, Generation(0));
            }
            Ok(None) => {
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
        let Some(node) = self.inodes.forget(ino, nlookup) else {
            return;
        };
        tracing::trace!(path = %node.rel.display(), "forgotten");
        // The kernel sends RELEASE before it forgets an inode, so a backing
        // file still registered is an idle one: close it outside the table lock.
        let backing = node.backing.lock().expect("backing lock").take();
        if let Some((_, 0)) = backing {
            self.idle_backings.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Ok(node) => reply.attr(&self.ttl, &node.attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
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
                reply.data(target.as_os_str().as_bytes());
            }
            Err(e) => reply.error(io_errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
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
        tracing::trace!(path = %node.rel.display(), %kind, "open");
        let reply = if self.passthrough && !self.passthrough_failed.load(Ordering::Relaxed) {
            match self.open_passthrough(&node, reply) {
                Ok(()) => return,
                Err((reply, Errno::EAGAIN)) => reply,
                Err((reply, e)) => return reply.error(e),
            }
        } else {
            reply
        };
        self.open_pread(&node, reply);
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
        let file = self
            .handles
            .read()
            .expect("handles lock")
            .get(&fh.0)
            .cloned();
        let Some(file) = file else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return reply.error(io_errno(e)),
            }
        }
        reply.data(&buf[..filled]);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
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
        if fh.0 == 0 {
            if let Ok(node) = self.node(ino) {
                let mut backing = node.backing.lock().expect("backing lock");
                if let Some((_, count)) = backing.as_mut() {
                    *count -= 1;
                    // Keep a bounded number of idle backing files registered, so
                    // that reopening a file costs no open(2) and no ioctls.
                    if *count == 0 && !self.keep_idle_backing() {
                        *backing = None;
                    }
                }
            }
        } else {
            self.handles.write().expect("handles lock").remove(&fh.0);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // ENOSYS makes the kernel stop sending OPENDIR and RELEASEDIR: two
        // round trips less per directory. Listings are recorded in readdir.
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let listing = match self.listing(&node, ino) {
            Ok(listing) => listing,
            Err(e) => return reply.error(e),
        };
        self.record(&node, AccessKind::Readdir);
        let dots = [(".", ino), ("..", node.parent)];
        for (i, (name, dot_ino)) in dots.iter().enumerate().skip(offset as usize) {
            if reply.add(*dot_ino, i as u64 + 1, FileType::Directory, name) {
                return reply.ok();
            }
        }
        let skip = offset.saturating_sub(FIRST_ENTRY_OFFSET) as usize;
        for (i, entry) in listing.iter().enumerate().skip(skip) {
            let next = FIRST_ENTRY_OFFSET + i as u64 + 1;
            if reply.add(entry.ino, next, entry.kind, &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
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
        if mask.contains(AccessFlags::W_OK) {
            reply.error(Errno::EROFS);
        } else {
            reply.ok();
        }
    }
}

impl ViewFs {
    fn xattrs<'a>(&self, node: &'a Node) -> Result<&'a [(std::ffi::OsString, Vec<u8>)], Errno> {
        if let Some(x) = node.xattrs.get() {
            return Ok(x);
        }
        let path = self.stack.host_path(node.resolved.top_layer(), &node.rel);
        let x = xattr::visible(&path).map_err(io_errno)?;
        Ok(node.xattrs.get_or_init(|| x))
    }
}

fn reply_sized(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if (size as usize) < data.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}
