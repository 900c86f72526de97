//! The one module of pare with `unsafe` code: where the kernel's FUSE
//! interfaces need it and no safe wrapper exists.
//!
//! - FUSE over io_uring: the ring (128-byte submission entries) and the two
//!   ring commands, `FUSE_IO_URING_CMD_REGISTER` (hand the kernel an entry's
//!   header and payload buffers) and `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`
//!   (the reply is in the buffers; fetch the next request into them). The
//!   kernel writes requests into those buffers while a command is pending,
//!   so they live in a [`Slot`] whose memory never moves and is never freed
//!   while a command may be outstanding.
//! - FUSE passthrough: unregistering a backing file
//!   (`FUSE_DEV_IOC_BACKING_CLOSE`), and answering an OPEN through fuser
//!   with a backing file registered by the view.
//!
//! Every `unsafe` block says why it is sound. Nothing else in the view
//! touches raw pointers.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use fuser::{FileHandle, FopenFlags, ReplyOpen};
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

/// `FUSE_IO_URING_CMD_REGISTER`.
const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`.
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// Buffers per entry the kernel expects (header, payload).
const IOV_SEGS: u32 = 2;
/// Offset of `len` in a submission entry (`struct io_uring_sqe`).
const SQE_LEN_OFFSET: usize = 24;

/// Size of `struct fuse_uring_req_header`: the in/out header (128 bytes),
/// the per-opcode header (128) and `struct fuse_uring_ent_in_out` (32).
pub(crate) const HEADER_LEN: usize = 288;

/// `FUSE_DEV_IOC_BACKING_CLOSE`: `_IOW(229, 2, uint32_t)`.
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

/// The buffers of one ring entry: what the kernel reads replies from and
/// writes requests into. Heap memory that stays put when the slot moves.
pub(crate) struct Slot {
    header: Box<[u8; HEADER_LEN]>,
    payload: Box<[u8]>,
    /// The two buffers as the kernel takes them at registration.
    iov: Box<[libc::iovec; 2]>,
}

// The iovecs only point into the slot's own boxes.
// SAFETY: a Slot owns all memory its raw pointers refer to; moving it to
// another thread moves that ownership, nothing is shared.
unsafe impl Send for Slot {}

impl Slot {
    /// A slot whose payload buffer holds `payload_len` bytes.
    pub fn new(payload_len: usize) -> Slot {
        let mut header = Box::new([0u8; HEADER_LEN]);
        let mut payload = vec![0u8; payload_len].into_boxed_slice();
        let iov = Box::new([
            libc::iovec {
                iov_base: header.as_mut_ptr().cast(),
                iov_len: HEADER_LEN,
            },
            libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload_len,
            },
        ]);
        Slot {
            header,
            payload,
            iov,
        }
    }

    /// The header buffer (read a request, write a reply): only between the
    /// completion that delivered a request and the commit of its reply,
    /// when the kernel does not touch it.
    pub fn buffers(&mut self) -> (&mut [u8; HEADER_LEN], &mut [u8]) {
        (&mut self.header, &mut self.payload)
    }
}

/// An io_uring instance with 128-byte submission entries, as FUSE's ring
/// commands need.
pub(crate) struct Ring {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
}

impl Ring {
    /// A ring with room for `entries` submissions.
    pub fn new(entries: u32) -> io::Result<Ring> {
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(entries)?;
        Ok(Ring { ring })
    }

    /// Queues the registration of `slot` with queue `qid` of the connection
    /// `device`; `user_data` comes back with its completion.
    ///
    /// The caller keeps `slot` alive and unmoved-in-memory (its boxes) until
    /// the command ends: a completion with an error, or the process exits.
    pub fn register(
        &mut self,
        device: BorrowedFd<'_>,
        slot: &Slot,
        qid: u16,
        user_data: u64,
    ) -> io::Result<()> {
        let entry = command(device, CMD_REGISTER, 0, qid)
            .addr(Some(slot.iov.as_ptr() as u64))
            .build();
        let entry = with_len(entry, IOV_SEGS).user_data(user_data);
        self.push(&entry)
    }

    /// Queues the commit of the reply in the slot registered under
    /// `user_data` for the request `commit_id`, which also fetches the next
    /// request into it.
    pub fn commit_and_fetch(
        &mut self,
        device: BorrowedFd<'_>,
        qid: u16,
        commit_id: u64,
        user_data: u64,
    ) -> io::Result<()> {
        let entry = command(device, CMD_COMMIT_AND_FETCH, commit_id, qid)
            .build()
            .user_data(user_data);
        self.push(&entry)
    }

    fn push(&mut self, entry: &squeue::Entry128) -> io::Result<()> {
        // SAFETY: the entry is a FUSE ring command on a /dev/fuse descriptor.
        // A registration points at a Slot's iovec array, whose buffers the
        // caller keeps alive and in place until the command ends (see
        // `register`); the kernel copies the iovecs at submission. A commit
        // carries no pointer: the kernel uses the buffers registered before.
        unsafe { self.ring.submission().push(entry) }
            .map_err(|_| io::Error::other("the io_uring submission queue is full"))
    }

    /// Submits what was queued and waits up to `timeout` for at least one
    /// completion.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits what was queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        self.ring.submit().map(|_| ())
    }

    /// Takes the completions that arrived: (user data, result).
    pub fn completions(&mut self, into: &mut Vec<(u64, i32)>) {
        into.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
    }
}

/// A FUSE ring command: `struct fuse_uring_cmd_req` in the entry's command
/// area (flags, commit id, queue id).
fn command(device: BorrowedFd<'_>, op: u32, commit_id: u64, qid: u16) -> opcode::UringCmd80 {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    opcode::UringCmd80::new(Fd(device.as_raw_fd()), op).cmd(cmd)
}

/// `entry` with its `len` field set: a FUSE registration gives the number of
/// iovecs there, which io-uring's `UringCmd80` has no setter for.
fn with_len(entry: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // SAFETY: `Entry128` is `#[repr(C)]` around the kernel's 128-byte
    // `struct io_uring_sqe` (64 bytes) and its 64-byte command tail, both
    // plain integers, so it has the size and layout of [u8; 128] and every
    // byte pattern is a valid value of either type.
    let mut bytes: [u8; 128] = unsafe { std::mem::transmute(entry) };
    bytes[SQE_LEN_OFFSET..SQE_LEN_OFFSET + 4].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: as above; only the `len` field changed.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(bytes) }
}

/// Unregisters the passthrough backing file `id` of the connection `device`.
pub(crate) fn close_backing(device: BorrowedFd<'_>, id: u32) -> io::Result<()> {
    // SAFETY: FUSE_DEV_IOC_BACKING_CLOSE reads one u32 from the pointer,
    // which points at a live local; the descriptor is borrowed, so open.
    let rc = unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            FUSE_DEV_IOC_BACKING_CLOSE as _,
            &id as *const u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Answers a fuser OPEN with passthrough to the backing file `id`, which
/// the view registered with this connection and keeps registered.
pub(crate) fn reply_passthrough(reply: ReplyOpen, fh: FileHandle, flags: FopenFlags, id: u32) {
    // SAFETY: `id` was registered with this session's /dev/fuse descriptor
    // (`fuser::BackingId::create_raw`) and is held open by the node's
    // `Backing`, which the caller keeps alive across this call; ownership
    // is handed back with `into_raw` below, so fuser never closes it.
    let backing = unsafe { reply.wrap_backing(id) };
    reply.opened_passthrough(fh, flags, &backing);
    let _ = backing.into_raw();
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn the_length_lands_in_the_sqe_len_field_and_nothing_else_changes() {
        let dev = std::fs::File::open("/dev/null").expect("/dev/null");
        let entry = command(dev.as_fd(), CMD_REGISTER, 0x0102_0304_0506_0708, 3)
            .addr(Some(0xdead_beef))
            .build()
            .user_data(42);
        // SAFETY (test): the same layout argument as in `with_len`.
        let before: [u8; 128] = unsafe { std::mem::transmute(entry.clone()) };
        let after: [u8; 128] = unsafe { std::mem::transmute(with_len(entry, 2)) };
        assert_eq!(&after[24..28], &2u32.to_ne_bytes());
        for i in (0..128).filter(|i| !(24..28).contains(i)) {
            assert_eq!(before[i], after[i], "byte {i}");
        }
        // The fields the kernel reads: opcode, fd, cmd_op, addr, user data,
        // and the command area (commit id at 8, qid at 16 of it).
        assert_eq!(after[0], io_uring::opcode::UringCmd80::CODE);
        assert_eq!(&after[4..8], &dev.as_raw_fd().to_ne_bytes());
        assert_eq!(&after[8..12], &CMD_REGISTER.to_ne_bytes());
        assert_eq!(&after[16..24], &0xdead_beefu64.to_ne_bytes());
        assert_eq!(&after[32..40], &42u64.to_ne_bytes());
        assert_eq!(&after[56..64], &0x0102_0304_0506_0708u64.to_ne_bytes());
        assert_eq!(&after[64..66], &3u16.to_ne_bytes());
    }

    #[test]
    fn a_slot_hands_the_kernel_its_own_buffers() {
        let slot = Slot::new(8192);
        let (h, p) = (
            slot.header.as_ptr() as usize,
            slot.payload.as_ptr() as usize,
        );
        assert_eq!(slot.iov[0].iov_base as usize, h);
        assert_eq!(slot.iov[0].iov_len, HEADER_LEN);
        assert_eq!(slot.iov[1].iov_base as usize, p);
        assert_eq!(slot.iov[1].iov_len, 8192);
        // Moving the slot moves no buffer.
        let moved = vec![slot];
        let mut slot = moved.into_iter().next().expect("one slot");
        assert_eq!(slot.iov[1].iov_base as usize, p);
        let (header, payload) = slot.buffers();
        assert_eq!(header.as_ptr() as usize, h);
        assert_eq!(payload.len(), 8192);
    }

    #[test]
    fn a_registration_on_a_file_that_is_no_fuse_device_completes_with_an_error() {
        // io_uring may be unavailable (kernel.io_uring_disabled): then there
        // is nothing to test here, and the transport reports that itself.
        let Ok(mut ring) = Ring::new(4) else {
            return;
        };
        // (Not /dev/null: it takes every ring command, as a test target.)
        let dev = tempfile::tempfile().expect("a temporary file");
        let slot = Slot::new(8192);
        ring.register(dev.as_fd(), &slot, 0, 7).expect("queued");
        ring.submit_and_wait(Duration::from_secs(5))
            .expect("submitted");
        let mut done = Vec::new();
        ring.completions(&mut done);
        assert_eq!(done.len(), 1, "{done:?}");
        let (user_data, result) = done[0];
        assert_eq!(user_data, 7);
        assert_eq!(
            result,
            -libc::EOPNOTSUPP,
            "a regular file takes no ring command"
        );
    }

    #[test]
    fn closing_a_backing_file_on_a_file_that_is_no_fuse_device_is_an_error() {
        let dev = std::fs::File::open("/dev/null").expect("/dev/null");
        let err = close_backing(dev.as_fd(), 1).expect_err("not a FUSE device");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY), "{err}");
    }
}
