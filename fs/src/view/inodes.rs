//! The view's inode table: one FUSE inode per merged directory path and one per
//! underlying non-directory inode, so hardlink groups share an inode number.
//!
//! Numbers are stable for the life of the mount; nodes are not. Every reply
//! that hands a node to the kernel counts one lookup, the kernel's FORGET
//! gives them back, and a node nobody holds is dropped. What stays is a
//! compact map from identity to number, so a name looked up again gets its
//! old number, and a listing can report numbers without creating nodes.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use fuser::{FileAttr, FileType, INodeNo};

use super::passthrough::Backing;
use crate::layers::{Kind, Resolved};
use crate::profile::AccessKind;

/// Identity of a node: merged directories by path (their parent directory's
/// number and their name), everything else by the underlying inode (which is
/// what makes hardlinks one node).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum NodeKey {
    Dir { parent: u64, name: Box<[u8]> },
    Inode { layer: u16, dev: u64, ino: u64 },
}

impl NodeKey {
    /// The identity of `resolved`, found as `name` in directory `parent`.
    fn of(parent: INodeNo, name: &OsStr, resolved: &Resolved) -> NodeKey {
        match resolved {
            Resolved::Dir { .. } => NodeKey::Dir {
                parent: parent.0,
                name: name.as_bytes().into(),
            },
            Resolved::Other { layer, meta } => NodeKey::Inode {
                layer: layer.0,
                dev: meta.dev,
                ino: meta.ino,
            },
        }
    }

    /// The identity of the root directory.
    fn root() -> NodeKey {
        NodeKey::Dir {
            parent: 0,
            name: Box::default(),
        }
    }
}

/// A cached directory listing entry: a name, its type and its number; the
/// child's node is only made when the kernel looks the name up.
#[derive(Clone, Debug)]
pub(crate) struct DirEntry {
    pub name: OsString,
    pub ino: INodeNo,
    pub kind: FileType,
}

/// One inode of the view, live while the kernel holds it.
pub(crate) struct Node {
    /// Path relative to the image root of the name this node was found by.
    pub rel: Arc<Path>,
    /// Parent directory inode (of that name).
    pub parent: INodeNo,
    /// Where the node lives in the layer stack.
    pub resolved: Resolved,
    /// Attributes as reported to the kernel.
    pub attr: FileAttr,
    /// Lookups the kernel holds (replies that handed it this node, minus the
    /// ones it gave back with FORGET).
    lookups: AtomicU64,
    /// Kinds of access already reported for `rel`. They start empty again
    /// when a dropped node is made anew, so its accesses are reported again:
    /// that is fine, the profile writer drops repeats.
    recorded: AtomicU8,
    /// Absent names reported in this directory.
    absent: AtomicUsize,
    /// Directory listing, built on first readdir.
    pub listing: OnceLock<Arc<Vec<DirEntry>>>,
    /// Visible xattrs, read on first use.
    pub xattrs: OnceLock<Vec<(OsString, Vec<u8>)>>,
    /// Whether `rel` is outside the view's allowed set (audit and enforce
    /// modes), found on first use.
    pub outside: OnceLock<bool>,
    /// FUSE passthrough backing file and the number of open handles using it.
    pub backing: Mutex<Option<(Backing, u32)>>,
}

impl Node {
    fn new(ino: INodeNo, rel: Arc<Path>, parent: INodeNo, resolved: Resolved) -> Node {
        Node {
            rel,
            parent,
            attr: attr_of(ino, &resolved),
            resolved,
            lookups: AtomicU64::new(1),
            recorded: AtomicU8::new(0),
            absent: AtomicUsize::new(0),
            listing: OnceLock::new(),
            xattrs: OnceLock::new(),
            outside: OnceLock::new(),
            backing: Mutex::new(None),
        }
    }

    /// True the first time `kind` is claimed for this node's path.
    pub fn claim(&self, kind: AccessKind) -> bool {
        let bit = kind.bit();
        self.recorded.load(Ordering::Relaxed) & bit == 0
            && self.recorded.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    /// Claims one of `limit` absent names this directory node may report;
    /// false when they are used up.
    pub fn claim_absent(&self, limit: usize) -> bool {
        self.absent.load(Ordering::Relaxed) < limit
            && self.absent.fetch_add(1, Ordering::Relaxed) < limit
    }

    /// True when the node is a non-directory with several names (a hardlink
    /// group), whose lookups must be recorded per name, not per node.
    pub fn has_several_names(&self) -> bool {
        !matches!(self.resolved, Resolved::Dir { .. }) && self.resolved.meta().nlink > 1
    }
}

struct Table {
    /// Live nodes, indexed by inode number - 1 (`None`: numbered, not live).
    nodes: Vec<Option<Arc<Node>>>,
    /// The number of every identity seen so far; numbers are never reused.
    numbers: HashMap<NodeKey, INodeNo>,
}

impl Table {
    fn slot(&mut self, ino: INodeNo) -> Option<&mut Option<Arc<Node>>> {
        let idx = usize::try_from(ino.0.checked_sub(1)?).ok()?;
        self.nodes.get_mut(idx)
    }

    fn live(&self, ino: INodeNo) -> Option<&Arc<Node>> {
        let idx = usize::try_from(ino.0.checked_sub(1)?).ok()?;
        self.nodes.get(idx)?.as_ref()
    }

    /// The number of `key`, given on first sight.
    fn number(&mut self, key: NodeKey) -> INodeNo {
        *self.numbers.entry(key).or_insert_with(|| {
            self.nodes.push(None);
            INodeNo(self.nodes.len() as u64)
        })
    }
}

/// Directory entries numbered per write lock, so that listing a huge
/// directory does not hold up the other serving threads.
const NUMBERS_PER_LOCK: usize = 1024;

/// The nodes the kernel holds, and the numbers of all identities seen.
pub(crate) struct Inodes {
    table: RwLock<Table>,
    /// How many nodes are live (shared with [`super::MountedView`]).
    live: Arc<AtomicUsize>,
}

impl Inodes {
    /// A table holding the root directory, which is never dropped.
    pub fn new(root: Resolved) -> Inodes {
        let mut table = Table {
            nodes: Vec::new(),
            numbers: HashMap::new(),
        };
        let ino = table.number(NodeKey::root());
        debug_assert_eq!(ino, INodeNo::ROOT);
        let node = Node::new(ino, Arc::from(Path::new("")), ino, root);
        table.nodes[0] = Some(Arc::new(node));
        Inodes {
            table: RwLock::new(table),
            live: Arc::new(AtomicUsize::new(1)),
        }
    }

    /// The count of live nodes, kept up to date.
    pub fn live(&self) -> Arc<AtomicUsize> {
        self.live.clone()
    }

    /// The live node numbered `ino`.
    pub fn get(&self, ino: INodeNo) -> Option<Arc<Node>> {
        let table = self.table.read().expect("inode table lock");
        table.live(ino).cloned()
    }

    /// The node for `resolved`, found as `name` in the directory `parent`,
    /// made when it is not live, with one more lookup counted: call it only
    /// for a reply that hands the node to the kernel.
    pub fn lookup(&self, parent: &Node, name: &OsStr, resolved: Resolved) -> Arc<Node> {
        let key = NodeKey::of(parent.attr.ino, name, &resolved);
        {
            // Counting under the read lock: removal takes the write lock and
            // looks at the count again, so a node counted here stays.
            let table = self.table.read().expect("inode table lock");
            if let Some(node) = table.numbers.get(&key).and_then(|ino| table.live(*ino)) {
                node.lookups.fetch_add(1, Ordering::AcqRel);
                return node.clone();
            }
        }
        let rel = Arc::from(parent.rel.join(name));
        let mut table = self.table.write().expect("inode table lock");
        let ino = table.number(key);
        let slot = table.slot(ino).expect("a numbered slot");
        if let Some(node) = slot {
            node.lookups.fetch_add(1, Ordering::AcqRel);
            return node.clone();
        }
        let node = Arc::new(Node::new(ino, rel, parent.attr.ino, resolved));
        *slot = Some(node.clone());
        self.live.fetch_add(1, Ordering::Relaxed);
        node
    }

    /// The numbers of the entries of the directory `parent`, in order,
    /// without making nodes for them.
    pub fn numbers(&self, parent: INodeNo, entries: &[(OsString, Resolved)]) -> Vec<INodeNo> {
        let mut numbers = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(NUMBERS_PER_LOCK) {
            let keys: Vec<NodeKey> = chunk
                .iter()
                .map(|(name, resolved)| NodeKey::of(parent, name, resolved))
                .collect();
            let mut table = self.table.write().expect("inode table lock");
            numbers.extend(keys.into_iter().map(|key| table.number(key)));
        }
        numbers
    }

    /// Gives back `nlookup` lookups of `ino` (the kernel's FORGET). Returns
    /// the node when that dropped it: no lookup is left. The root stays.
    pub fn forget(&self, ino: INodeNo, nlookup: u64) -> Option<Arc<Node>> {
        if ino == INodeNo::ROOT {
            return None;
        }
        let node = self.get(ino)?;
        let before = node
            .lookups
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(nlookup))
            })
            .unwrap_or_else(|n| n);
        if before > nlookup {
            return None;
        }
        drop(node);
        let mut table = self.table.write().expect("inode table lock");
        let slot = table.slot(ino)?;
        // Look again under the write lock: a lookup may have counted the node
        // since, or made it anew. A node without lookups may always go.
        if slot
            .as_ref()
            .is_some_and(|node| node.lookups.load(Ordering::Acquire) == 0)
        {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return slot.take();
        }
        None
    }
}

/// The FUSE type of a layer entry kind.
pub(crate) fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
    }
}

fn attr_of(ino: INodeNo, resolved: &Resolved) -> FileAttr {
    let meta = resolved.meta();
    FileAttr {
        ino,
        size: meta.size,
        blocks: meta.blocks,
        atime: meta.atime.to_system_time(),
        mtime: meta.mtime.to_system_time(),
        ctime: meta.ctime.to_system_time(),
        crtime: SystemTime::UNIX_EPOCH,
        kind: file_type(meta.kind),
        perm: meta.perm(),
        nlink: u32::try_from(resolved.nlink()).unwrap_or(u32::MAX),
        uid: meta.uid,
        gid: meta.gid,
        rdev: fuse_rdev(meta.rdev),
        blksize: u32::try_from(meta.blksize).unwrap_or(4096),
        flags: 0,
    }
}

/// Re-encodes a glibc `dev_t` the way the FUSE protocol carries it (the kernel's
/// 32-bit `new_encode_dev`).
fn fuse_rdev(dev: u64) -> u32 {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as u32
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use fuser::INodeNo;

    use super::{Inodes, Node};
    use crate::layers::{Kind, LayerIdx, Meta, Resolved};

    fn meta(kind: Kind, ino: u64, nlink: u64) -> Meta {
        let mode = if kind == Kind::Dir {
            0o040755
        } else {
            0o100644
        };
        Meta::for_test(kind, mode, ino, nlink)
    }

    fn dir(ino: u64) -> Resolved {
        Resolved::Dir {
            layers: vec![LayerIdx(0)],
            meta: meta(Kind::Dir, ino, 2),
        }
    }

    fn file(ino: u64) -> Resolved {
        Resolved::Other {
            layer: LayerIdx(0),
            meta: meta(Kind::File, ino, 1),
        }
    }

    fn table() -> (Inodes, Arc<Node>) {
        let inodes = Inodes::new(dir(1));
        let root = inodes.get(INodeNo::ROOT).expect("the root is live");
        (inodes, root)
    }

    fn live(inodes: &Inodes) -> usize {
        inodes.live().load(Ordering::Relaxed)
    }

    #[test]
    fn each_lookup_counts_and_the_last_forget_drops_the_node() {
        let (inodes, root) = table();
        assert_eq!(live(&inodes), 1, "the root alone");
        let a = inodes.lookup(&root, OsStr::new("a"), file(10));
        let again = inodes.lookup(&root, OsStr::new("a"), file(10));
        assert!(Arc::ptr_eq(&a, &again), "one node per identity");
        assert_eq!(live(&inodes), 2);
        let ino = a.attr.ino;
        drop((a, again));

        assert!(inodes.forget(ino, 1).is_none(), "one lookup is left");
        assert!(inodes.get(ino).is_some());
        let dropped = inodes.forget(ino, 1).expect("the last lookup drops it");
        assert_eq!(dropped.rel.as_ref(), std::path::Path::new("a"));
        assert!(inodes.get(ino).is_none());
        assert_eq!(live(&inodes), 1);
    }

    #[test]
    fn one_forget_gives_back_several_lookups() {
        let (inodes, root) = table();
        let ino = (0..3)
            .map(|_| inodes.lookup(&root, OsStr::new("d"), dir(20)).attr.ino)
            .last()
            .expect("three lookups");
        assert!(inodes.forget(ino, 2).is_none());
        assert!(inodes.forget(ino, 1).is_some());
        assert_eq!(live(&inodes), 1);
    }

    #[test]
    fn forgetting_more_than_was_looked_up_or_an_unknown_number_is_harmless() {
        let (inodes, root) = table();
        let ino = inodes.lookup(&root, OsStr::new("a"), file(10)).attr.ino;
        assert!(inodes.forget(ino, 5).is_some());
        assert!(inodes.forget(ino, 1).is_none(), "already dropped");
        assert!(inodes.forget(INodeNo(999), 1).is_none(), "never numbered");
        assert!(inodes.forget(INodeNo(0), 1).is_none());
        assert_eq!(live(&inodes), 1);
    }

    #[test]
    fn the_root_is_never_dropped() {
        let (inodes, _root) = table();
        assert!(inodes.forget(INodeNo::ROOT, u64::MAX).is_none());
        assert!(inodes.get(INodeNo::ROOT).is_some());
        assert_eq!(live(&inodes), 1);
    }

    #[test]
    fn a_name_looked_up_again_after_a_forget_keeps_its_number() {
        let (inodes, root) = table();
        let sub = inodes.lookup(&root, OsStr::new("sub"), dir(20));
        // Cases: (directory, name, entry); names of one inode share its number.
        let cases = [
            (&root, "file", file(10)),
            (&root, "dir", dir(11)),
            (&sub, "nested", dir(12)),
            (&sub, "hardlink", file(10)),
        ];
        let first: Vec<INodeNo> = cases
            .iter()
            .map(|(parent, name, r)| inodes.lookup(parent, OsStr::new(name), r.clone()))
            .map(|node| node.attr.ino)
            .collect();
        assert_eq!(first[0], first[3], "a hardlink group is one inode");
        for ino in [first[0], first[1], first[2]] {
            let lookups = if ino == first[0] { 2 } else { 1 };
            assert!(inodes.forget(ino, lookups).is_some(), "{ino:?} dropped");
        }
        assert_eq!(live(&inodes), 2, "the root and sub/");
        for ((parent, name, r), ino) in cases.iter().zip(&first) {
            let node = inodes.lookup(parent, OsStr::new(name), r.clone());
            assert_eq!(node.attr.ino, *ino, "{name} looked up again");
        }
    }

    #[test]
    fn listing_numbers_make_no_nodes_and_equal_the_numbers_of_lookups() {
        let (inodes, root) = table();
        let entries: Vec<_> = (0..3000u64)
            .map(|i| {
                let r = if i % 3 == 0 {
                    dir(100 + i)
                } else {
                    file(100 + i)
                };
                (format!("e{i}").into(), r)
            })
            .collect();
        let numbers = inodes.numbers(INodeNo::ROOT, &entries);
        assert_eq!(live(&inodes), 1, "a listing makes no nodes");
        assert_eq!(numbers, inodes.numbers(INodeNo::ROOT, &entries));
        for ((name, r), ino) in entries.iter().zip(&numbers) {
            assert_eq!(inodes.lookup(&root, name, r.clone()).attr.ino, *ino);
        }
        assert_eq!(live(&inodes), 1 + entries.len());
    }

    #[test]
    fn concurrent_lookups_and_forgets_never_lose_a_held_node() {
        let (inodes, root) = table();
        let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
        let entry = |i: usize| {
            if i % 2 == 0 {
                dir(50 + i as u64)
            } else {
                file(50 + i as u64)
            }
        };
        // Held for the whole test: it must survive all the forgets around it.
        let held = inodes.lookup(&root, OsStr::new(&names[0]), entry(0));
        let numbers: Vec<Vec<INodeNo>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    let (inodes, root, names) = (&inodes, &root, &names);
                    s.spawn(move || {
                        let mut seen = vec![INodeNo(0); names.len()];
                        for round in 0..20_000 {
                            let i = (round * 7 + t * 3) % names.len();
                            let node = inodes.lookup(root, OsStr::new(&names[i]), entry(i));
                            let ino = node.attr.ino;
                            let live = inodes.get(ino).expect("a held node is live");
                            assert!(Arc::ptr_eq(&node, &live), "a held node is not replaced");
                            assert!(seen[i] == INodeNo(0) || seen[i] == ino, "stable number");
                            seen[i] = ino;
                            inodes.forget(ino, 1);
                        }
                        seen
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("worker"))
                .collect()
        });
        for seen in &numbers[1..] {
            assert_eq!(seen, &numbers[0], "every thread saw the same numbers");
        }
        assert!(Arc::ptr_eq(
            &held,
            &inodes.get(held.attr.ino).expect("held")
        ));
        assert_eq!(live(&inodes), 2, "the root and the held node");
        assert!(inodes.forget(held.attr.ino, 1).is_some());
        assert_eq!(live(&inodes), 1);
    }

    #[test]
    fn device_numbers_survive_the_fuse_encoding() {
        // (major, minor) pairs, including minors above 255 as for /dev/loop and nvme.
        for (major, minor) in [(1u64, 3u64), (8, 17), (259, 1), (7, 300), (0, 0)] {
            let glibc = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12);
            let fuse = super::fuse_rdev(glibc);
            let back_major = (fuse >> 8) & 0xfff;
            let back_minor = (fuse & 0xff) | ((fuse >> 12) & 0xfff00);
            assert_eq!(
                (u64::from(back_major), u64::from(back_minor)),
                (major, minor)
            );
        }
    }
}
