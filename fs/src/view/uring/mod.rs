//! FUSE over io_uring (Linux 6.14+): the view's requests arrive in ring
//! entries instead of `read(2)` on `/dev/fuse`, and a reply goes back in the
//! same submission that fetches the next request, one system call per round
//! trip instead of two.
//!
//! The kernel keeps one queue per possible CPU and hands a request to the
//! queue of the CPU its caller runs on; it switches a connection over only
//! when every queue has an entry registered, and until then holds requests
//! back. So the rings and their buffers are made before the mount (no INIT
//! promise the view cannot keep), each queue thread registers its own
//! entries (completions run in the submitter's context) and reports, and
//! [`start`] waits for every report, bounded: any failure forces the
//! connection back to `/dev/fuse` with a registration the kernel must
//! refuse. FORGET and INTERRUPT still come through `/dev/fuse`, where
//! fuser's session keeps one thread.

mod wire;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};
use fuser::{Errno, FileHandle, INodeNo};

use super::ops::{Opened, Xattr};
use super::sys::{Ring, Slot};
use super::viewfs::ViewFs;
use wire::{Reply, Request, opcode};

/// Largest write the view announces when it serves over io_uring (a
/// read-only view takes none): it sets, with the read size, how large each
/// entry's payload buffer must be.
pub(crate) const MAX_WRITE: u32 = 1 << 20;
/// Payload buffer of an entry: the kernel wants at least the larger of
/// `max_write` and `max_pages` pages (256 at most by default).
const PAYLOAD_LEN: usize = 1 << 20;
/// Entries per queue: requests a queue holds ready for its thread.
const DEPTH: usize = 4;
/// How long [`start`] waits for the queue threads to register.
const REGISTER_WAIT: Duration = Duration::from_secs(5);
/// How often a queue thread looks up from waiting (to see a stop).
const TICK: Duration = Duration::from_millis(500);

/// Rings and buffers made before the mount, one set per queue thread.
pub(crate) struct Prepared {
    sets: Vec<QueueSet>,
    queues: usize,
}

struct QueueSet {
    ring: Ring,
    /// (queue id, buffers) per entry; the index is the entry's user data.
    slots: Vec<(u16, Slot)>,
    /// The CPUs this set's queues belong to.
    cpus: Vec<usize>,
}

impl Prepared {
    /// Queues (one per possible CPU) and the threads serving them.
    pub fn describe(&self) -> String {
        format!(
            "{} queues on {} threads, {DEPTH} entries each",
            self.queues,
            self.sets.len()
        )
    }
}

/// Makes the rings for up to `threads` queue threads: one thread per queue
/// when there are that many, else each thread serves several.
pub(crate) fn prepare(threads: usize) -> io::Result<Prepared> {
    let queues = possible_cpus()?;
    let threads = threads.clamp(1, queues);
    let mut sets = Vec::with_capacity(threads);
    for t in 0..threads {
        let qids: Vec<usize> = (t..queues).step_by(threads).collect();
        let entries = (qids.len() * DEPTH) as u32;
        let ring = Ring::new(entries.next_power_of_two())?;
        let slots = qids
            .iter()
            .flat_map(|q| (0..DEPTH).map(move |_| *q as u16))
            .map(|q| (q, Slot::new(PAYLOAD_LEN)))
            .collect();
        sets.push(QueueSet {
            ring,
            slots,
            cpus: qids,
        });
    }
    Ok(Prepared { sets, queues })
}

/// The queue threads of a serving view.
pub(crate) struct Running {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Running {
    /// Waits up to `wait` for the queue threads, which end when the kernel
    /// ends every entry (unmount, abort); then tells the rest to stop.
    pub fn join(self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            // A thread that is still waiting looks up within a tick.
            let _ = t.join();
        }
    }
}

/// Starts the queue threads on the connection `device` (INIT is done) and
/// waits until every entry is registered. On failure the connection is
/// forced back to `/dev/fuse` and the error says why.
pub(crate) fn start(
    prepared: Prepared,
    device: Arc<OwnedFd>,
    fs: Arc<ViewFs>,
) -> Result<Running, io::Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = bounded(prepared.sets.len());
    let mut threads = Vec::new();
    for (i, set) in prepared.sets.into_iter().enumerate() {
        let (dev, fs, stopped, tx) = (device.clone(), fs.clone(), stop.clone(), tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("pare-ring-{i}"))
            .spawn(move || serve_queues(set, dev, fs, stopped, tx));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                refuse(&device);
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    drop(tx);
    let running = Running { threads, stop };
    match registered(&rx, running.threads.len()) {
        Ok(()) => Ok(running),
        Err(e) => {
            refuse(&device);
            running.stop.store(true, Ordering::Relaxed);
            Err(e)
        }
    }
}

/// Waits for one report per thread.
fn registered(rx: &Receiver<io::Result<()>>, threads: usize) -> io::Result<()> {
    let deadline = Instant::now() + REGISTER_WAIT;
    for _ in 0..threads {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the io_uring queues did not register in time",
                ));
            }
        }
    }
    Ok(())
}

/// Sends a registration the kernel must refuse (queue id out of range), which
/// turns io_uring off for the connection and releases requests held back
/// for it to `/dev/fuse`.
fn refuse(device: &OwnedFd) {
    let Ok(mut ring) = Ring::new(1) else {
        tracing::error!("cannot make a ring to turn io_uring off; requests may wait");
        return;
    };
    let slot = Slot::new(0);
    let refused = ring
        .register(device.as_fd(), &slot, u16::MAX, 0)
        .and_then(|()| ring.submit_and_wait(Duration::from_secs(1)));
    let mut done = Vec::new();
    ring.completions(&mut done);
    if refused.is_err() || done.first().is_none_or(|(_, r)| *r >= 0) {
        tracing::error!(
            ?done,
            "the kernel did not refuse the registration; requests may wait"
        );
    }
    // The kernel completed (or never took) the command: the slot may go.
}

/// One queue thread: registers its entries, reports, then answers requests
/// until the kernel has ended every entry.
fn serve_queues(
    mut set: QueueSet,
    device: Arc<OwnedFd>,
    fs: Arc<ViewFs>,
    stop: Arc<AtomicBool>,
    report: crossbeam_channel::Sender<io::Result<()>>,
) {
    pin(&set.cpus);
    let mut done = Vec::new();
    let registered = register(&mut set, &device, &mut done);
    let failed = registered.is_err();
    let _ = report.send(registered);
    if failed {
        // Commands that were taken stay pending until the connection ends:
        // their buffers must outlive them.
        std::mem::forget(set);
        return;
    }
    let mut out = Vec::new();
    let mut ended = vec![false; set.slots.len()];
    let mut left = set.slots.len();
    let mut clean = true;
    // Completions that arrived with the registrations come first.
    loop {
        for (user_data, result) in done.drain(..) {
            let i = user_data as usize;
            if result < 0 {
                // The kernel ended the entry (unmount, abort, cancel).
                if !std::mem::replace(&mut ended[i], true) {
                    left -= 1;
                }
                continue;
            }
            let (qid, slot) = &mut set.slots[i];
            let commit_id = answer(&fs, slot, &mut out);
            if let Err(e) = set
                .ring
                .commit_and_fetch(device.as_fd(), *qid, commit_id, user_data)
            {
                tracing::error!(error = %e, "cannot queue a ring commit");
            }
        }
        if left == 0 {
            break;
        }
        if stop.load(Ordering::Relaxed) {
            clean = false;
            break;
        }
        if let Err(e) = set.ring.submit_and_wait(TICK) {
            tracing::error!(error = %e, "io_uring wait failed; the queue stops");
            clean = false;
            break;
        }
        set.ring.completions(&mut done);
    }
    if !clean {
        // Commands may still be pending: their buffers must outlive them.
        std::mem::forget(set);
    }
}

/// Registers every entry of `set`; completions that arrived meanwhile (a
/// refusal, or requests already) go to `done`.
fn register(set: &mut QueueSet, device: &OwnedFd, done: &mut Vec<(u64, i32)>) -> io::Result<()> {
    for (i, (qid, slot)) in set.slots.iter().enumerate() {
        set.ring.register(device.as_fd(), slot, *qid, i as u64)?;
    }
    set.ring.submit()?;
    set.ring.completions(done);
    // A refused registration completes at once; a taken one stays pending
    // until a request arrives (result 0).
    if let Some((_, e)) = done.iter().find(|(_, r)| *r < 0) {
        return Err(io::Error::from_raw_os_error(-e));
    }
    Ok(())
}

/// Pins the calling thread to `cpus`, where the requests of its queues come
/// from. Best effort: without it requests are served all the same.
fn pin(cpus: &[usize]) {
    let mut set = rustix::thread::CpuSet::new();
    for cpu in cpus {
        set.set(*cpu);
    }
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        tracing::debug!(error = %e, ?cpus, "cannot pin a ring thread");
    }
}

/// Answers the request in `slot` and writes the reply there; the request's
/// id, which the commit names.
fn answer(fs: &ViewFs, slot: &mut Slot, out: &mut Vec<u8>) -> u64 {
    let (header, payload) = slot.buffers();
    out.clear();
    // The request's arguments and the reply share the buffers: the answer
    // is made first, then written.
    let (unique, result) = match Request::parse(header, payload) {
        Ok(req) => (req.unique, dispatch(fs, &req, out)),
        Err(e) => {
            tracing::error!(reason = e.0, "a malformed io_uring request");
            (wire::unique(header), Err(Errno::EIO))
        }
    };
    let mut reply = Reply::new(header, payload);
    let error = match result {
        Ok(()) if reply.push(out) => None,
        Ok(()) => {
            tracing::error!(len = out.len(), "an io_uring reply larger than its buffer");
            Some(Errno::EIO)
        }
        Err(e) => Some(e),
    };
    reply.finish(unique, error);
    unique
}

/// Calls the view's handler for `req`; the reply's bytes go to `out`.
fn dispatch(fs: &ViewFs, req: &Request<'_>, out: &mut Vec<u8>) -> Result<(), Errno> {
    let ino = INodeNo(req.nodeid);
    let bad = |e: wire::Malformed| {
        tracing::error!(
            reason = e.0,
            opcode = req.opcode,
            "a malformed io_uring request"
        );
        Errno::EIO
    };
    match req.opcode {
        opcode::LOOKUP => {
            let name = req.name().map_err(bad)?;
            let attr = fs.lookup(ino, name, req.pid)?;
            out.extend_from_slice(&wire::entry_out(&attr, fs.ttl));
        }
        opcode::GETATTR => {
            let attr = fs.getattr(ino)?;
            out.extend_from_slice(&wire::attr_out(&attr, fs.ttl));
        }
        opcode::READLINK => out.extend_from_slice(&fs.readlink(ino, req.pid)?),
        opcode::OPEN => {
            let flags = req.arg_u32(0) as i32;
            let open_out = match fs.open(ino, flags, req.pid)? {
                Opened::Passthrough(id) => {
                    wire::open_out(0, wire::FOPEN_PASSTHROUGH | wire::FOPEN_NOFLUSH, id)
                }
                Opened::Handle(fh) => {
                    wire::open_out(fh.0, wire::FOPEN_KEEP_CACHE | wire::FOPEN_NOFLUSH, 0)
                }
            };
            out.extend_from_slice(&open_out);
        }
        opcode::READ => {
            let (fh, offset, size) = (req.arg_u64(0), req.arg_u64(8), req.arg_u32(16));
            let size = size.min(PAYLOAD_LEN as u32);
            *out = fs.read(FileHandle(fh), offset, size)?;
        }
        opcode::RELEASE => fs.release(ino, FileHandle(req.arg_u64(0))),
        opcode::FLUSH => return Err(fs.flush()),
        opcode::IOCTL => return Err(fs.ioctl()),
        opcode::OPENDIR => return Err(fs.opendir()),
        opcode::READDIR => {
            let (offset, size) = (req.arg_u64(8), req.arg_u32(16));
            let limit = (size as usize).min(PAYLOAD_LEN);
            fs.readdir(ino, offset, req.pid, |ino, next, kind, name| {
                wire::push_dirent(out, limit, ino.0, next, kind, name)
            })?;
        }
        opcode::STATFS => out.extend_from_slice(&wire::statfs_out(&fs.statfs()?)),
        opcode::GETXATTR => {
            let size = req.arg_u32(0);
            let name = req.name().map_err(bad)?;
            xattr(fs.getxattr(ino, name, size)?, out);
        }
        opcode::LISTXATTR => xattr(fs.listxattr(ino, req.arg_u32(0))?, out),
        opcode::ACCESS => fs.access(req.arg_u32(0) as i32)?,
        other => {
            tracing::debug!(
                opcode = other,
                "an io_uring request the view does not answer"
            );
            return Err(Errno::ENOSYS);
        }
    }
    Ok(())
}

fn xattr(answer: Xattr, out: &mut Vec<u8>) {
    match answer {
        Xattr::Size(size) => out.extend_from_slice(&wire::xattr_size(size)),
        Xattr::Data(data) => *out = data,
    }
}

/// The kernel's `num_possible_cpus()`: its io_uring queues, one per possible
/// CPU (`/sys/devices/system/cpu/possible`, e.g. `0-3` or `0,2-5`).
fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    count_cpus(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unreadable CPU list {:?}", text.trim()),
        )
    })
}

fn count_cpus(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.trim().split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::count_cpus;

    #[test]
    fn cpu_lists_count_as_the_kernel_counts_possible_cpus() {
        assert_eq!(count_cpus("0-1\n"), Some(2));
        assert_eq!(count_cpus("0"), Some(1));
        assert_eq!(count_cpus("0,2-5,7"), Some(6));
        assert_eq!(count_cpus("0-63"), Some(64));
        assert_eq!(count_cpus(""), None);
        assert_eq!(count_cpus("3-1"), None);
        assert_eq!(count_cpus("a-b"), None);
    }
}
