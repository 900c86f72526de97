//! The `/dev/fuse` transport: fuser's session calls these, and each hands
//! the request to the view's handlers ([`super::ops`]) and the answer back
//! in fuser's reply types. It also negotiates the connection at INIT, for
//! both transports.

use std::ffi::OsStr;
use std::sync::Arc;

use fuser::{
    AccessFlags, Errno, FileHandle, FopenFlags, Generation, INodeNo, IoctlFlags, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use super::ops::{Opened, Xattr};
use super::sys;
use super::viewfs::ViewFs;

/// The view as fuser's session serves it.
pub(crate) struct FuseView(pub Arc<ViewFs>);

impl fuser::Filesystem for FuseView {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        self.0.negotiate(config)
    }

    // fuser 0.18 does not export `ForgetOne`, so `batch_forget` keeps its
    // default, which calls this once per inode.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.0.forget(ino, nlookup);
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.0.lookup(parent, name, req.pid()) {
            Ok(attr) => reply.entry(&self.0.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.getattr(ino) {
            Ok(attr) => reply.attr(&self.0.ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.0.readlink(ino, req.pid()) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.0.open(ino, flags.0, req.pid()) {
            Ok(Opened::Passthrough(id)) => {
                sys::reply_passthrough(reply, FileHandle(0), FopenFlags::FOPEN_NOFLUSH, id);
            }
            Ok(Opened::Handle(fh)) => {
                reply.opened(fh, FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH)
            }
            Err(e) => reply.error(e),
        }
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
        match self.0.read(fh, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
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
        reply.error(self.0.flush());
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
        reply.error(self.0.ioctl());
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
        self.0.release(ino, fh);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(self.0.opendir());
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self
            .0
            .readdir(ino, offset, req.pid(), |ino, next, kind, name| {
                reply.add(ino, next, kind, name)
            });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.0.statfs() {
            Ok(st) => reply.statfs(
                st.blocks, st.bfree, st.bavail, st.files, st.ffree, st.bsize, st.namelen, st.frsize,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, self.0.getxattr(ino, name, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, self.0.listxattr(ino, size));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.0.access(mask.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

fn reply_xattr(reply: ReplyXattr, answer: Result<Xattr, Errno>) {
    match answer {
        Ok(Xattr::Size(size)) => reply.size(size),
        Ok(Xattr::Data(data)) => reply.data(&data),
        Err(e) => reply.error(e),
    }
}
