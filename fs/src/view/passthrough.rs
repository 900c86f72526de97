//! FUSE passthrough reads: one backing file per open regular file, registered
//! with the kernel, shared by the file's open handles and kept registered for
//! a while after the last handle closes.
//!
//! Reopening a file whose backing file is still registered costs no open(2)
//! and no ioctl. The files kept so are the most recently idled ones, at most
//! [`MAX_IDLE_BACKINGS`]; when one more goes idle, the least recently idled
//! one is closed.

use std::fs::File;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use lru::LruCache;

use super::inodes::Node;
use super::sys;

/// Most idle passthrough backing files kept registered with the kernel.
pub(crate) const MAX_IDLE_BACKINGS: usize = 4096;

/// Why a passthrough open did not happen.
pub(crate) enum Refused {
    /// The kernel refused the backing file: serve this open (and the next
    /// ones) with `pread`.
    UsePread,
    /// The layer file could not be opened.
    Failed(std::io::Error),
}

/// A layer file registered with the kernel as a passthrough backing file;
/// unregistered when dropped.
pub(crate) struct Backing {
    id: u32,
    device: Arc<OwnedFd>,
}

impl Drop for Backing {
    fn drop(&mut self) {
        // Fails harmlessly once the connection is gone (the kernel dropped
        // its backing files with it).
        if let Err(e) = sys::close_backing(self.device.as_fd(), self.id) {
            tracing::debug!(id = self.id, error = %e, "closing a backing file");
        }
    }
}

/// The passthrough state of a view.
pub(crate) struct Passthrough {
    /// The kernel agreed to passthrough at init.
    enabled: AtomicBool,
    /// The connection's `/dev/fuse` descriptor, which backing files are
    /// registered with (set once the session is up).
    device: OnceLock<Arc<OwnedFd>>,
    /// The kernel refused a backing file once: every open uses `pread` since.
    refused: AtomicBool,
    /// Files without open handles whose backing file stays registered.
    idle: IdleSet<u64, Weak<Node>>,
}

impl Passthrough {
    /// Off until [`Passthrough::enable`].
    pub fn new() -> Passthrough {
        let cap = NonZeroUsize::new(MAX_IDLE_BACKINGS).expect("a positive cap");
        Passthrough {
            enabled: AtomicBool::new(false),
            device: OnceLock::new(),
            refused: AtomicBool::new(false),
            idle: IdleSet::new(cap),
        }
    }

    /// Turns passthrough on (the kernel agreed to it at init).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Backing files are registered with `device`, the connection's
    /// `/dev/fuse` descriptor. Until it is set, opens use `pread`.
    pub fn set_device(&self, device: Arc<OwnedFd>) {
        let _ = self.device.set(device);
    }

    /// True while opens should try passthrough.
    pub fn is_on(&self) -> bool {
        self.enabled.load(Ordering::Relaxed) && !self.refused.load(Ordering::Relaxed)
    }

    /// Opens `node` with its backing file, registering one (opened by `open`)
    /// when it has none; the backing file's id for the reply.
    pub fn open(
        &self,
        node: &Node,
        open: impl FnOnce() -> std::io::Result<File>,
    ) -> Result<u32, Refused> {
        let Some(device) = self.device.get() else {
            return Err(Refused::UsePread);
        };
        let mut backing = node.backing.lock().expect("backing lock");
        if let Some((registered, count)) = backing.as_mut() {
            if *count == 0 {
                self.idle.busy(&node.attr.ino.0);
            }
            *count += 1;
            return Ok(registered.id);
        }
        let file = open().map_err(Refused::Failed)?;
        match fuser::BackingId::create_raw(device.as_fd(), &file) {
            Ok(id) => {
                let device = device.clone();
                *backing = Some((Backing { id, device }, 1));
                Ok(id)
            }
            Err(e) => {
                if !self.refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        path = %node.rel.display(),
                        error = %e,
                        "FUSE passthrough refused for a backing file; serving such files with pread"
                    );
                }
                Err(Refused::UsePread)
            }
        }
    }

    /// One handle of `node` opened with passthrough is closed. The last one
    /// leaves the backing file registered, as the most recently idled; the
    /// least recently idled one is closed when that makes one too many.
    pub fn release(&self, node: &Arc<Node>) {
        let evicted = {
            let mut backing = node.backing.lock().expect("backing lock");
            match backing.as_mut() {
                Some((_, count)) if *count > 1 => {
                    *count -= 1;
                    None
                }
                Some((_, count)) if *count == 1 => {
                    *count = 0;
                    self.idle.idle(node.attr.ino.0, Arc::downgrade(node))
                }
                _ => None,
            }
        };
        if let Some((ino, node)) = evicted {
            self.close_idle(ino, &node);
        }
    }

    /// `node` is forgotten by the kernel, which releases every handle first:
    /// a backing file still registered is an idle one, closed now.
    pub fn forget(&self, node: &Node) {
        let backing = node.backing.lock().expect("backing lock").take();
        if let Some((_, 0)) = backing {
            self.idle.busy(&node.attr.ino.0);
        }
        // The backing file is closed here, outside the lock.
        drop(backing);
    }

    /// Closes the backing file of a node pushed out of the idle set, unless
    /// it was opened (or opened and idled again) since.
    fn close_idle(&self, ino: u64, node: &Weak<Node>) {
        let Some(node) = node.upgrade() else {
            return;
        };
        let closed = {
            let mut backing = node.backing.lock().expect("backing lock");
            match *backing {
                Some((_, 0)) if !self.idle.contains(&ino) => backing.take(),
                _ => None,
            }
        };
        // The backing file is closed here, outside the lock.
        drop(closed);
    }
}

/// A bounded set of idle entries, least recently idled out first. A small
/// lock of its own; callers close what it pushes out after letting go of it.
pub(crate) struct IdleSet<K, V> {
    lru: Mutex<LruCache<K, V>>,
}

impl<K: Hash + Eq, V> IdleSet<K, V> {
    /// An empty set holding at most `cap` entries.
    pub fn new(cap: NonZeroUsize) -> IdleSet<K, V> {
        IdleSet {
            // Sparse: memory grows with the entries, not with the cap.
            lru: Mutex::new(LruCache::sparse(cap)),
        }
    }

    /// Adds `key` as the most recently idled; returns the least recently
    /// idled entry when that pushed it out.
    pub fn idle(&self, key: K, value: V) -> Option<(K, V)> {
        let mut lru = self.lru.lock().expect("idle set lock");
        // Already idle (the open counts prevent it): only more recent then.
        lru.pop(&key);
        lru.push(key, value)
    }

    /// `key` is in use again: it leaves the set. True when it was in it.
    pub fn busy(&self, key: &K) -> bool {
        self.lru.lock().expect("idle set lock").pop(key).is_some()
    }

    /// True while `key` is in the set.
    pub fn contains(&self, key: &K) -> bool {
        self.lru.lock().expect("idle set lock").contains(key)
    }

    /// How many entries are in the set.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lru.lock().expect("idle set lock").len()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::IdleSet;

    fn set(cap: usize) -> IdleSet<u32, &'static str> {
        IdleSet::new(NonZeroUsize::new(cap).expect("a positive cap"))
    }

    #[test]
    fn the_most_recently_idled_stay_and_the_oldest_is_pushed_out() {
        let idle = set(3);
        for key in 1..=3 {
            assert_eq!(idle.idle(key, "x"), None, "room for {key}");
        }
        assert_eq!(idle.idle(4, "x"), Some((1, "x")), "the oldest goes first");
        assert_eq!(idle.idle(5, "x"), Some((2, "x")));
        assert_eq!(idle.len(), 3);
        let kept: Vec<bool> = (1..=5).map(|key| idle.contains(&key)).collect();
        assert_eq!(kept, [false, false, true, true, true]);
    }

    #[test]
    fn a_reopened_entry_leaves_the_set_and_frees_its_slot() {
        let idle = set(2);
        idle.idle(1, "a");
        idle.idle(2, "b");
        assert!(idle.busy(&1), "1 was idle");
        assert!(!idle.contains(&1));
        assert!(!idle.busy(&1), "1 is no longer idle");
        assert_eq!(idle.idle(3, "c"), None, "1's slot is free");
        assert_eq!(idle.idle(1, "a"), Some((2, "b")), "idled again: newest");
        assert!(idle.contains(&1) && idle.contains(&3));
    }

    #[test]
    fn idling_again_makes_an_entry_the_most_recent() {
        let idle = set(2);
        idle.idle(1, "a");
        idle.idle(2, "b");
        assert_eq!(idle.idle(1, "a2"), None, "1 was already there");
        assert_eq!(idle.idle(3, "c"), Some((2, "b")), "2 is now the oldest");
    }

    #[test]
    fn checking_an_entry_does_not_make_it_recent() {
        let idle = set(2);
        idle.idle(1, "a");
        idle.idle(2, "b");
        assert!(idle.contains(&1));
        assert_eq!(idle.idle(3, "c"), Some((1, "a")));
    }
}
