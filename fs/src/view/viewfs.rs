//! The state of a serving view and the helpers its FUSE operations share:
//! nodes by number, access recording, policy checks, listings and xattrs
//! read once.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fuser::{Errno, INodeNo, InitFlags, KernelConfig};

use super::inodes::{DirEntry, Inodes, Node, file_type};
use super::passthrough::Passthrough;
use super::pread::PreadFiles;
use super::stats::RequestStats;
use super::{ReadMode, View, ViewOptions};
use crate::layers::{LayerIdx, LayerStack, Resolved, xattr};
use crate::policy::Policy;
use crate::profile::{ABSENT_PER_DIRECTORY, AccessKind, RecorderHandle};

/// A view as its request handlers serve it ([`super::ops`] has them).
pub(crate) struct ViewFs {
    pub(super) stack: LayerStack,
    recorder: Option<RecorderHandle>,
    /// Audit or enforce mode: what accesses are judged by.
    policy: Option<Policy>,
    pub(super) inodes: Inodes,
    /// Files opened for `pread`.
    pub(super) pread: PreadFiles,
    /// Backing files of passthrough opens.
    pub(super) passthrough: Passthrough,
    pub(super) ttl: Duration,
    pub(super) read_mode: ReadMode,
    /// Longest name any layer's file system takes (reported by statfs).
    pub(super) namelen: u64,
    /// Requests served, by opcode.
    pub(super) requests: Arc<RequestStats>,
    /// Whether to ask for FUSE over io_uring at INIT: `Some(required)` when
    /// its rings are ready.
    ring_wanted: Option<bool>,
    /// The kernel agreed to FUSE over io_uring.
    ring_agreed: AtomicBool,
}

impl ViewFs {
    /// A view of `view`; `ring_wanted` is `Some(required)` when rings for
    /// FUSE over io_uring are ready.
    pub(crate) fn new(
        view: View,
        opts: &ViewOptions,
        ring_wanted: Option<bool>,
    ) -> std::io::Result<ViewFs> {
        let inodes = Inodes::new(view.stack.resolve_root()?);
        let mut namelen = 255;
        for i in 0..view.stack.len() {
            let st = rustix::fs::statfs(view.stack.root(LayerIdx(i as u16)))?;
            namelen = namelen.max(st.f_namelen as u64);
        }
        Ok(ViewFs {
            stack: view.stack,
            recorder: view.recorder,
            policy: opts.policy.clone(),
            inodes,
            pread: PreadFiles::new(),
            passthrough: Passthrough::new(),
            ttl: opts.ttl,
            read_mode: opts.read_mode,
            namelen,
            requests: view.requests,
            ring_wanted,
            ring_agreed: AtomicBool::new(false),
        })
    }

    /// Settles the connection at INIT: capabilities, passthrough, and FUSE
    /// over io_uring when wanted (an error when required and not offered).
    pub(crate) fn negotiate(&self, config: &mut KernelConfig) -> std::io::Result<()> {
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
        if let Some(required) = self.ring_wanted {
            let agreed = config
                .capabilities()
                .contains(InitFlags::FUSE_OVER_IO_URING)
                && config
                    .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                    .is_ok()
                && config.set_max_write(super::uring::MAX_WRITE).is_ok();
            if agreed {
                self.ring_agreed.store(true, Ordering::Relaxed);
            } else if required {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    super::transport::NOT_OFFERED,
                ));
            }
        }
        Ok(())
    }

    /// True when the kernel agreed to FUSE over io_uring at INIT.
    pub(crate) fn ring_agreed(&self) -> bool {
        self.ring_agreed.load(Ordering::Relaxed)
    }

    /// The count of live nodes, kept up to date while the view serves.
    pub(crate) fn live_nodes(&self) -> Arc<AtomicUsize> {
        self.inodes.live()
    }

    /// The live node numbered `ino`; `ESTALE` for a number the kernel gave back.
    pub(super) fn node(&self, ino: INodeNo) -> Result<Arc<Node>, Errno> {
        self.inodes.get(ino).ok_or(Errno::ESTALE)
    }

    /// Reports a `kind` access of `node`, the first time only.
    pub(super) fn record(&self, node: &Node, kind: AccessKind) {
        if let Some(recorder) = &self.recorder {
            if node.claim(kind) {
                recorder.record(&node.rel, kind);
            }
        }
    }

    /// Reports the lookup of `child` as `name` in `parent`.
    pub(super) fn record_lookup(&self, parent: &Node, name: &OsStr, child: &Node) {
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

    /// Reports that `name` was looked up in `parent` and does not exist. The
    /// kernel caches the negative answer, so a name comes back only after
    /// the cache dropped it; a directory sends at most
    /// [`ABSENT_PER_DIRECTORY`] names per node (the writer bounds the journal).
    pub(super) fn record_absent(&self, parent: &Node, name: &OsStr) {
        if let Some(recorder) = &self.recorder {
            if parent.claim_absent(ABSENT_PER_DIRECTORY) {
                let rel: Arc<Path> = Arc::from(parent.rel.join(name));
                recorder.record(&rel, AccessKind::Absent);
            }
        }
    }

    /// Judges the lookup of the existing `name` in `parent` by `pid`: outside
    /// the allowed set it is a miss. True when the name is to be hidden
    /// (enforce mode).
    pub(super) fn judge_lookup(&self, parent: &Node, name: &OsStr, pid: u32) -> bool {
        let Some(policy) = &self.policy else {
            return false;
        };
        if policy.allowed().contains_child(&parent.rel, name) {
            return false;
        }
        policy
            .misses()
            .record(&parent.rel.join(name), AccessKind::Lookup, pid);
        policy.hides()
    }

    /// Judges a `kind` access of `node` by `pid`: outside the allowed set it
    /// is a miss. Every access the view sees counts, not only the first.
    pub(super) fn judge(&self, node: &Node, kind: AccessKind, pid: u32) {
        let Some(policy) = &self.policy else {
            return;
        };
        let outside = *node
            .outside
            .get_or_init(|| !policy.allowed().contains_rel(&node.rel));
        if outside {
            policy.misses().record(&node.rel, kind, pid);
        }
    }

    /// True when `name` in `dir` is left out of listings (enforce mode,
    /// outside the allowed set).
    pub(super) fn hidden(&self, dir: &Node, name: &OsStr) -> bool {
        self.policy
            .as_ref()
            .is_some_and(|p| p.hides() && !p.allowed().contains_child(&dir.rel, name))
    }

    /// The merged listing of the directory `dir` (numbered `ino`), read once.
    pub(super) fn listing(&self, dir: &Node, ino: INodeNo) -> Result<Arc<Vec<DirEntry>>, Errno> {
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

    /// The xattrs of `node` the view shows, read once.
    pub(super) fn xattrs<'a>(&self, node: &'a Node) -> Result<&'a [(OsString, Vec<u8>)], Errno> {
        if let Some(x) = node.xattrs.get() {
            return Ok(x);
        }
        let x = xattr::visible(&self.host_path(node)).map_err(io_errno)?;
        Ok(node.xattrs.get_or_init(|| x))
    }

    /// Where the content of `node` lives on the host.
    pub(super) fn host_path(&self, node: &Node) -> std::path::PathBuf {
        self.stack.host_path(node.resolved.top_layer(), &node.rel)
    }
}

/// The FUSE error for an I/O error (`EIO` when it has no OS code).
pub(super) fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}
