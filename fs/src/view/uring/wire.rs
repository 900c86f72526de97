//! The bytes of FUSE over io_uring: a request as the kernel lays it out in
//! an entry's buffers, and the reply written back into them.
//!
//! The header buffer is `struct fuse_uring_req_header`: `fuse_in_header`
//! (the reply's `fuse_out_header` goes in the same place), the opcode's
//! first argument (`op_in`), and `struct fuse_uring_ent_in_out`, whose
//! `payload_sz` gives the bytes of the other arguments in the payload buffer
//! on the way in and the reply's bytes on the way out. Everything is
//! native-endian, as the kernel writes it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType};

use crate::view::ops::Statfs;
use crate::view::sys::HEADER_LEN;

const OP_IN: usize = 128;
const OP_IN_LEN: usize = 128;
const ENT_IN_OUT: usize = 256;
const PAYLOAD_SZ: usize = ENT_IN_OUT + 16;
const OUT_HEADER_LEN: usize = 16;

/// FUSE opcodes the view answers.
pub(crate) mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const GETATTR: u32 = 3;
    pub const READLINK: u32 = 5;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const FLUSH: u32 = 25;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const ACCESS: u32 = 34;
    pub const IOCTL: u32 = 39;
}

/// `FOPEN_KEEP_CACHE`.
pub(crate) const FOPEN_KEEP_CACHE: u32 = 1 << 1;
/// `FOPEN_NOFLUSH`.
pub(crate) const FOPEN_NOFLUSH: u32 = 1 << 5;
/// `FOPEN_PASSTHROUGH`.
pub(crate) const FOPEN_PASSTHROUGH: u32 = 1 << 7;

/// A request read from an entry's buffers.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub pid: u32,
    /// The opcode's first argument (`op_in`), 128 bytes of room.
    op_in: &'a [u8],
    /// The other arguments.
    pub payload: &'a [u8],
}

/// Why a request could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub &'static str);

impl<'a> Request<'a> {
    /// Reads the request the kernel put in `header` and `payload`.
    pub fn parse(
        header: &'a [u8; HEADER_LEN],
        payload: &'a [u8],
    ) -> Result<Request<'a>, Malformed> {
        let payload_sz = u32_at(header, PAYLOAD_SZ) as usize;
        if payload_sz > payload.len() {
            return Err(Malformed("payload size beyond the payload buffer"));
        }
        Ok(Request {
            opcode: u32_at(header, 4),
            unique: u64_at(header, 8),
            nodeid: u64_at(header, 16),
            pid: u32_at(header, 32),
            op_in: &header[OP_IN..OP_IN + OP_IN_LEN],
            payload: &payload[..payload_sz],
        })
    }

    /// The `u32` at `offset` of the opcode's first argument.
    pub fn arg_u32(&self, offset: usize) -> u32 {
        u32_at(self.op_in, offset)
    }

    /// The `u64` at `offset` of the opcode's first argument.
    pub fn arg_u64(&self, offset: usize) -> u64 {
        u64_at(self.op_in, offset)
    }

    /// The NUL-terminated name at the start of the payload.
    pub fn name(&self) -> Result<&'a OsStr, Malformed> {
        let end = self
            .payload
            .iter()
            .position(|b| *b == 0)
            .ok_or(Malformed("a name without its NUL"))?;
        Ok(OsStr::from_bytes(&self.payload[..end]))
    }
}

/// The request id in `header`, read without the rest (for a malformed one).
pub(crate) fn unique(header: &[u8; HEADER_LEN]) -> u64 {
    u64_at(header, 8)
}

/// A reply being written into an entry's buffers.
pub(crate) struct Reply<'a> {
    header: &'a mut [u8; HEADER_LEN],
    payload: &'a mut [u8],
    len: usize,
}

impl<'a> Reply<'a> {
    /// An empty reply in `header` and `payload`.
    pub fn new(header: &'a mut [u8; HEADER_LEN], payload: &'a mut [u8]) -> Reply<'a> {
        Reply {
            header,
            payload,
            len: 0,
        }
    }

    /// Appends `bytes`; false (nothing written) when they do not fit.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let Some(to) = self.payload.get_mut(self.len..self.len + bytes.len()) else {
            return false;
        };
        to.copy_from_slice(bytes);
        self.len += bytes.len();
        true
    }

    /// Finishes the reply to `unique`: an error, or the bytes pushed.
    pub fn finish(self, unique: u64, error: Option<Errno>) {
        let len = if error.is_some() { 0 } else { self.len };
        let errno = error.map_or(0, |e| -i32::from(e));
        self.header[0..4].copy_from_slice(&((OUT_HEADER_LEN + len) as u32).to_ne_bytes());
        self.header[4..8].copy_from_slice(&errno.to_ne_bytes());
        self.header[8..16].copy_from_slice(&unique.to_ne_bytes());
        self.header[PAYLOAD_SZ..PAYLOAD_SZ + 4].copy_from_slice(&(len as u32).to_ne_bytes());
    }
}

/// `struct fuse_attr` (88 bytes).
pub(crate) fn attr(attr: &FileAttr) -> [u8; 88] {
    let mut b = [0u8; 88];
    let (atime, atime_ns) = time(attr.atime);
    let (mtime, mtime_ns) = time(attr.mtime);
    let (ctime, ctime_ns) = time(attr.ctime);
    let mut w = Writer(&mut b, 0);
    w.u64(attr.ino.0);
    w.u64(attr.size);
    w.u64(attr.blocks);
    w.u64(atime as u64);
    w.u64(mtime as u64);
    w.u64(ctime as u64);
    w.u32(atime_ns);
    w.u32(mtime_ns);
    w.u32(ctime_ns);
    w.u32(mode(attr.kind) | u32::from(attr.perm));
    w.u32(attr.nlink);
    w.u32(attr.uid);
    w.u32(attr.gid);
    w.u32(attr.rdev);
    w.u32(attr.blksize);
    w.u32(0);
    b
}

/// `struct fuse_entry_out` (128 bytes): node, generation 0, both TTLs `ttl`.
pub(crate) fn entry_out(a: &FileAttr, ttl: Duration) -> [u8; 128] {
    let mut b = [0u8; 128];
    let mut w = Writer(&mut b, 0);
    w.u64(a.ino.0);
    w.u64(0);
    w.u64(ttl.as_secs());
    w.u64(ttl.as_secs());
    w.u32(ttl.subsec_nanos());
    w.u32(ttl.subsec_nanos());
    b[40..].copy_from_slice(&attr(a));
    b
}

/// `struct fuse_attr_out` (104 bytes).
pub(crate) fn attr_out(a: &FileAttr, ttl: Duration) -> [u8; 104] {
    let mut b = [0u8; 104];
    let mut w = Writer(&mut b, 0);
    w.u64(ttl.as_secs());
    w.u32(ttl.subsec_nanos());
    w.u32(0);
    b[16..].copy_from_slice(&attr(a));
    b
}

/// `struct fuse_open_out` (16 bytes).
pub(crate) fn open_out(fh: u64, flags: u32, backing_id: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    let mut w = Writer(&mut b, 0);
    w.u64(fh);
    w.u32(flags);
    w.u32(backing_id);
    b
}

/// `struct fuse_getxattr_out` (8 bytes): the size only.
pub(crate) fn xattr_size(size: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&size.to_ne_bytes());
    b
}

/// `struct fuse_statfs_out` (80 bytes).
pub(crate) fn statfs_out(st: &Statfs) -> [u8; 80] {
    let mut b = [0u8; 80];
    let mut w = Writer(&mut b, 0);
    for v in [st.blocks, st.bfree, st.bavail, st.files, st.ffree] {
        w.u64(v);
    }
    for v in [st.bsize, st.namelen, st.frsize] {
        w.u32(v);
    }
    b
}

/// Appends `struct fuse_dirent` and the name, padded to 8 bytes, to `out`
/// when `out` stays within `limit` bytes; true when it would not (the
/// listing is full), as fuser's `ReplyDirectory::add` answers.
pub(crate) fn push_dirent(
    out: &mut Vec<u8>,
    limit: usize,
    ino: u64,
    next: u64,
    kind: FileType,
    name: &OsStr,
) -> bool {
    let name = name.as_bytes();
    let size = (24 + name.len()).next_multiple_of(8);
    if out.len() + size > limit {
        return true;
    }
    let mut head = [0u8; 24];
    let mut w = Writer(&mut head, 0);
    w.u64(ino);
    w.u64(next);
    w.u32(name.len() as u32);
    w.u32(mode(kind) >> 12);
    out.extend_from_slice(&head);
    out.extend_from_slice(name);
    out.resize(out.len() + size - 24 - name.len(), 0);
    false
}

fn mode(kind: FileType) -> u32 {
    match kind {
        FileType::NamedPipe => libc::S_IFIFO,
        FileType::CharDevice => libc::S_IFCHR,
        FileType::BlockDevice => libc::S_IFBLK,
        FileType::Directory => libc::S_IFDIR,
        FileType::RegularFile => libc::S_IFREG,
        FileType::Symlink => libc::S_IFLNK,
        FileType::Socket => libc::S_IFSOCK,
    }
}

/// Seconds and nanoseconds since the epoch, negative before it (the
/// nanoseconds always count forward), as fuser encodes times.
fn time(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(before) => {
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-secs, 0),
                ns => (-secs - 1, 1_000_000_000 - ns),
            }
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

struct Writer<'a>(&'a mut [u8], usize);

impl Writer<'_> {
    fn u64(&mut self, v: u64) {
        self.0[self.1..self.1 + 8].copy_from_slice(&v.to_ne_bytes());
        self.1 += 8;
    }
    fn u32(&mut self, v: u32) {
        self.0[self.1..self.1 + 4].copy_from_slice(&v.to_ne_bytes());
        self.1 += 4;
    }
}

/// Length of `fuse_in_header`, for tests that build requests.
#[cfg(test)]
const IN_HEADER: usize = 40;

#[cfg(test)]
mod tests {
    use fuser::INodeNo;

    use super::*;

    /// A request header as the kernel writes it.
    fn header(
        opcode: u32,
        unique: u64,
        nodeid: u64,
        pid: u32,
        op_in: &[u8],
        payload_sz: u32,
    ) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&(IN_HEADER as u32).to_ne_bytes());
        h[4..8].copy_from_slice(&opcode.to_ne_bytes());
        h[8..16].copy_from_slice(&unique.to_ne_bytes());
        h[16..24].copy_from_slice(&nodeid.to_ne_bytes());
        h[32..36].copy_from_slice(&pid.to_ne_bytes());
        h[OP_IN..OP_IN + op_in.len()].copy_from_slice(op_in);
        h[PAYLOAD_SZ..PAYLOAD_SZ + 4].copy_from_slice(&payload_sz.to_ne_bytes());
        h
    }

    #[test]
    fn a_lookup_is_read_with_its_name() {
        let h = header(opcode::LOOKUP, 77, 1, 4242, &[], 6);
        let mut payload = vec![0u8; 8192];
        payload[..6].copy_from_slice(b"hello\0");
        let req = Request::parse(&h, &payload).expect("parsed");
        assert_eq!(
            (req.opcode, req.unique, req.nodeid, req.pid),
            (opcode::LOOKUP, 77, 1, 4242)
        );
        assert_eq!(req.name(), Ok(OsStr::new("hello")));
    }

    #[test]
    fn a_read_takes_its_arguments_from_op_in() {
        let mut op_in = [0u8; 40];
        op_in[0..8].copy_from_slice(&9u64.to_ne_bytes());
        op_in[8..16].copy_from_slice(&4096u64.to_ne_bytes());
        op_in[16..20].copy_from_slice(&131072u32.to_ne_bytes());
        let h = header(opcode::READ, 5, 3, 1, &op_in, 0);
        let req = Request::parse(&h, &[0u8; 16]).expect("parsed");
        assert_eq!(req.arg_u64(0), 9);
        assert_eq!(req.arg_u64(8), 4096);
        assert_eq!(req.arg_u32(16), 131072);
        assert!(req.payload.is_empty());
    }

    #[test]
    fn a_payload_size_beyond_the_buffer_is_refused_and_a_name_needs_its_nul() {
        let h = header(opcode::LOOKUP, 1, 1, 1, &[], 100);
        assert!(Request::parse(&h, &[0u8; 64]).is_err());
        let h = header(opcode::LOOKUP, 1, 1, 1, &[], 4);
        let req = Request::parse(&h, b"abcd").expect("parsed");
        assert_eq!(req.name(), Err(Malformed("a name without its NUL")));
    }

    #[test]
    fn replies_carry_the_out_header_and_their_size() {
        let mut h = [0u8; HEADER_LEN];
        let mut p = [0u8; 64];
        let mut reply = Reply::new(&mut h, &mut p);
        assert!(reply.push(b"0123456789"));
        assert!(!reply.push(&[0u8; 60]), "beyond the buffer");
        reply.finish(99, None);
        assert_eq!(u32_at(&h, 0), 26);
        assert_eq!(u32_at(&h, 4), 0);
        assert_eq!(u64_at(&h, 8), 99);
        assert_eq!(u32_at(&h, PAYLOAD_SZ), 10);
        assert_eq!(&p[..10], b"0123456789");

        let mut reply = Reply::new(&mut h, &mut p);
        assert!(reply.push(b"ignored"));
        reply.finish(100, Some(Errno::ENOENT));
        assert_eq!(u32_at(&h, 0), 16);
        assert_eq!(u32_at(&h, 4) as i32, -libc::ENOENT);
        assert_eq!(u64_at(&h, 8), 100);
        assert_eq!(u32_at(&h, PAYLOAD_SZ), 0, "an error carries no payload");
    }

    #[test]
    fn an_entry_encodes_node_ttls_and_attributes_in_the_kernel_layout() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        let a = FileAttr {
            ino: INodeNo(12),
            size: 3,
            blocks: 8,
            atime: t,
            mtime: t,
            ctime: UNIX_EPOCH - Duration::new(1, 1),
            crtime: t,
            kind: FileType::Symlink,
            perm: 0o777,
            nlink: 2,
            uid: 1000,
            gid: 100,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        let b = entry_out(&a, Duration::new(7, 9));
        assert_eq!(u64_at(&b, 0), 12);
        assert_eq!(u64_at(&b, 16), 7);
        assert_eq!(u64_at(&b, 24), 7);
        assert_eq!(u32_at(&b, 32), 9);
        assert_eq!(u32_at(&b, 36), 9);
        let attr = &b[40..];
        assert_eq!(u64_at(attr, 0), 12);
        assert_eq!(u64_at(attr, 8), 3);
        assert_eq!(u64_at(attr, 24), 1_700_000_000);
        assert_eq!(
            u64_at(attr, 40) as i64,
            -2,
            "one second and a nanosecond before the epoch"
        );
        assert_eq!(u32_at(attr, 48), 5);
        assert_eq!(u32_at(attr, 56), 999_999_999);
        assert_eq!(u32_at(attr, 60), libc::S_IFLNK | 0o777);
        assert_eq!(
            (u32_at(attr, 64), u32_at(attr, 68), u32_at(attr, 72)),
            (2, 1000, 100)
        );
        assert_eq!(u32_at(attr, 80), 4096);
        let out = attr_out(&a, Duration::new(7, 9));
        assert_eq!(&out[16..], attr);
    }

    #[test]
    fn directory_entries_are_padded_to_eight_bytes_and_stop_when_full() {
        let mut p = Vec::new();
        assert!(!push_dirent(
            &mut p,
            64,
            5,
            1,
            FileType::Directory,
            OsStr::new(".")
        ));
        assert_eq!(p.len(), 32);
        assert!(!push_dirent(
            &mut p,
            64,
            9,
            2,
            FileType::RegularFile,
            OsStr::new("abcdefgh")
        ));
        assert_eq!(p.len(), 64);
        assert!(
            push_dirent(&mut p, 64, 10, 3, FileType::RegularFile, OsStr::new("x")),
            "full"
        );
        assert_eq!(p.len(), 64, "nothing written when full");
        assert_eq!(u64_at(&p, 0), 5);
        assert_eq!(u64_at(&p, 8), 1);
        assert_eq!(u32_at(&p, 16), 1);
        assert_eq!(u32_at(&p, 20), libc::DT_DIR as u32);
        assert_eq!(p[24], b'.');
        assert_eq!(u32_at(&p, 32 + 20), libc::DT_REG as u32);
        assert_eq!(&p[32 + 24..64], b"abcdefgh");
    }
}
